"""Comparison 5: cost per image and peak memory as the corpus grows (1x, 4x, 16x).

The same pipeline over ``base``, ``4 * base`` and ``16 * base`` images. What must stay flat:
seconds per image (the marginal cost, fixed start-up costs taken out), the driver's peak RSS
(nothing held per image on the driver beyond the listing), and the largest worker's peak RSS
(streaming: blocks flow through, nothing accumulates). Reported ratios are 16x over 1x.

Run: ``python -m bench.run growth [--runs N]``; ``--num-images`` sets ``base`` (default 8 here).
"""

from __future__ import annotations

import dataclasses

from bench.common import BenchParams, median, ratio, run_side, side_main
from bench.pipeline_side import vlmbatch_side

SIDES = {"vlmbatch": vlmbatch_side}
SCALES = (1, 4, 16)
# Memory that must stay flat as the corpus grows: its 16x-over-1x ratio is reported ("<name>_mib" medians).
FLAT = ("driver_peak_rss", "worker_peak_rss", "cpu_worker_peak_rss", "cpu_worker_peak_anon", "driver_peak_anon",
        "driver_heap_in_use", "engine_peak_anon")
MEMORY_FIELDS = ("driver_peak_rss_mib", "worker_peak_rss_mib", "cpu_worker_peak_rss_mib", "cpu_worker_peak_anon_mib",
                 "cpu_worker_peak_shmem_mib", "descendants_peak_total_rss_mib", "driver_peak_anon_mib",
                 "driver_peak_shmem_mib", "worker_peak_anon_mib", "worker_peak_shmem_mib", "engine_peak_anon_mib",
                 "driver_heap_in_use_mib", "driver_heap_free_kept_mib")


def _base(params: BenchParams) -> int:
    return int(params.extra.get("growth_base", min(params.num_images, 8)))


def compare(params: BenchParams, runs: int) -> dict:
    base = _base(params)
    scales = tuple(params.extra.get("growth_scales", SCALES))
    results: dict[str, list[dict]] = {f"{k}x": [] for k in scales}
    for _ in range(runs):
        for k in scales:
            results[f"{k}x"].append(run_side(__name__, "vlmbatch", dataclasses.replace(params, num_images=base * k)))
    med: dict[str, dict] = {}
    for k in scales:
        rs = results[f"{k}x"]
        med[f"{k}x"] = {
            "images": base * k,
            "wall_s": median([r["wall_s"] for r in rs]),
            "s_per_image": median([r["wall_s"] / r["images"] for r in rs]),
            # engine ready to last batch, per image: the cost per image without the fixed start-up
            "steady_s_per_image": median(steady) if (steady := [r["steady_s"] / r["images"] for r in rs
                                                                 if r.get("steady_s")]) else None,
            # Memory peaks (MiB); RSS split into private anonymous memory and touched pages of Ray's
            # shared object store. The C heap is None off glibc: counted as 0.
            **{f: median([r[f] or 0.0 for r in rs]) for f in MEMORY_FIELDS},
        }
    lo, hi = med[f"{scales[0]}x"], med[f"{scales[-1]}x"]
    lo_n, hi_n = lo["images"], hi["images"]
    marginal = {}
    for k in scales[1:]:
        m = med[f"{k}x"]
        marginal[f"{scales[0]}x_to_{k}x"] = round((m["wall_s"] - lo["wall_s"]) / (m["images"] - lo_n), 4)
    span = f"{scales[-1]}x_over_{scales[0]}x"
    ratios = {
        f"s_per_image_{span}": ratio(hi["s_per_image"], lo["s_per_image"]),
        f"steady_s_per_image_{span}": ratio(hi["steady_s_per_image"], lo["steady_s_per_image"]),
        # A memory the run has no process for (the engine's own processes under the transformers engine,
        # which runs in the actor), or that the once-a-second sampler never caught (a CPU worker of a
        # run of seconds), is left out, not reported as a ratio of nothing.
        **{f"{name}_{span}": ratio(hi[f"{name}_mib"], lo[f"{name}_mib"]) for name in FLAT
           if hi.get(f"{name}_mib") and lo.get(f"{name}_mib")},
    }
    if len(scales) > 2:
        # Flat marginal cost: seconds per extra image from 1x to the largest over 1x to the next.
        ratios["marginal_s_per_image_last_over_first"] = ratio(marginal[f"{scales[0]}x_to_{scales[-1]}x"],
                                                              marginal[f"{scales[0]}x_to_{scales[1]}x"])
    return {
        "params": {**params.__dict__, "base": base, "scales": list(scales)}, "runs": results, "medians": med,
        "marginal_s_per_image": marginal, "ratios": ratios,
        "targets": {f"steady_s_per_image_{span}": "<= 1 (flat or falling)",
                    **{f"{name}_{span}": "~1 (flat)" for name in FLAT}},
        "images_range": [lo_n, hi_n],
    }


if __name__ == "__main__":
    side_main(SIDES)

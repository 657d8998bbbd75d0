"""Comparison 1: the full vlmbatch pipeline vs the bare engine over the same pre-decoded images.

The bare side is ``vllm.LLM.generate`` in one process with every image already decoded (and, for
a family with a CPU preparer, prepared) exactly as the pipeline hands them to its engine (no
listing, fetch, decode, Ray or commit). Target: ``ratio >= 0.95`` (vlmbatch images/s over bare
images/s) in steady state: bare = images / ``generate`` seconds after the engine is built; vlmbatch
= images / seconds from its engine being ready (stamped in the actor) to its last batch done.
``end_to_end`` counts each side's own clock from its start (before ``ray.init``; before ``LLM()``)
to its last output; ``process`` the whole side process, interpreter start to exit, timed by the
parent. Both sides also report the engine processes' CPU seconds per image over the steady window.

Run: ``python -m bench.run overhead [--runs N]``.
"""

from __future__ import annotations

from bench.common import BenchParams, engine_cpu_medians, interleaved, ratio, side_main, summarise
from bench.peers import bare_vllm_side
from bench.pipeline_side import vlmbatch_side

SIDES = {"vlmbatch": vlmbatch_side, "bare_vllm": bare_vllm_side}
TARGET = 0.95


def compare(params: BenchParams, runs: int) -> dict:
    return summarise_runs(params, interleaved(__name__, list(SIDES), params, runs))


def summarise_runs(params: BenchParams, res: dict[str, list[dict]]) -> dict:
    """Medians and ratios from every side's runs."""
    keys = ["wall_s", "process_wall_s", "images_per_s", "ray_init_s", "load_s", "generate_s", "steady_s",
            "steady_images_per_s", "prompt_tokens_per_image", "max_num_batched_tokens", "driver_peak_rss_mib",
            "worker_peak_rss_mib", "descendants_peak_total_rss_mib"]
    med = {side: {**summarise(r, keys), **engine_cpu_medians(r)} for side, r in res.items()}
    v, b = med["vlmbatch"], med["bare_vllm"]
    steady = ratio(v.get("steady_images_per_s"), b.get("steady_images_per_s"))
    return {
        "params": params.__dict__, "runs": res, "medians": med,
        "ratios": {"steady": steady, "end_to_end": ratio(v["images_per_s"], b["images_per_s"]),
                   "process": ratio(b.get("process_wall_s"), v.get("process_wall_s"))},
        "targets": {"steady": TARGET, "end_to_end": TARGET, "process": TARGET},
    }


if __name__ == "__main__":
    side_main(SIDES)

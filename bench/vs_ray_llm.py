"""Comparison 2: vlmbatch vs Ray Data's own LLM processor (``ray.data.llm.build_processor``, vLLM engine).

Both read the same JPEG files, run the same model with the same engine arguments, prompt and
fixed-length greedy sampling, and write Parquet. Ray's processor is fed as its docs show:
chat messages with the image as a base64 data URL. Target: ``ratio >= 1.0`` (vlmbatch
images/s over ray.data.llm images/s), end to end (Ray and engine start included) and over the
span from the first to the last batch out of the engine (``span``: start-up excluded, the
first batch's rows not counted; stamped in vlmbatch's caption actor and in Ray's postprocess).

Run: ``python -m bench.run vs_ray_llm [--runs N]``.
"""

from __future__ import annotations

from bench.common import BenchParams, interleaved, ratio, side_main, summarise
from bench.peers import ray_llm_side
from bench.pipeline_side import vlmbatch_side

SIDES = {"vlmbatch": vlmbatch_side, "ray_data_llm": ray_llm_side}
TARGET = 1.0


def compare(params: BenchParams, runs: int) -> dict:
    return summarise_runs(params, interleaved(__name__, list(SIDES), params, runs))


def summarise_runs(params: BenchParams, res: dict[str, list[dict]]) -> dict:
    """Medians and ratios from every side's runs."""
    keys = ["wall_s", "images_per_s", "span_images_per_s", "prompt_tokens_per_image", "driver_peak_rss_mib"]
    med = {side: summarise(r, keys) for side, r in res.items()}
    v, r = med["vlmbatch"], med["ray_data_llm"]
    return {
        "params": params.__dict__, "runs": res, "medians": med,
        "ratios": {"end_to_end": ratio(v["images_per_s"], r["images_per_s"]),
                   "span": ratio(v.get("span_images_per_s"), r.get("span_images_per_s"))},
        "targets": {"end_to_end": TARGET, "span": TARGET},
    }


if __name__ == "__main__":
    side_main(SIDES)

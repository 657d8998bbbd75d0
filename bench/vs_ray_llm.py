"""Comparison 2: vlmbatch vs Ray Data's own LLM processor (``ray.data.llm.build_processor``, vLLM engine).

Both read the same JPEG files, run the same model with the same engine arguments (including the
``max_num_batched_tokens`` vlmbatch's engine resolves), prompt and fixed-length greedy sampling,
and write Parquet. One difference stays, stated: Ray's engine makes a cumulative output per token
(its row API cannot pass vLLM's final-only enum), vlmbatch's engine final outputs only. Ray's
processor is fed as its docs show: chat messages with the image as a base64 data URL. Target:
``ratio >= 1.0`` (vlmbatch images/s over ray.data.llm images/s).

Two windows, both from outside each side's code, so neither depends on where a side can be stamped
(the earlier "span", first to last batch out, was stamped in vlmbatch's actor but after Ray's
detokenise stage, and is gone):

* ``end_to_end``: each side's own clock, from before ``ray.init`` to its output written
  (vlmbatch: the manifest committed; Ray: ``write_parquet`` returned);
* ``process``: the whole side process, interpreter start to exit (imports, corpus listing and the
  read-back of the output included), timed by the parent.

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
    keys = ["wall_s", "process_wall_s", "images_per_s", "prompt_tokens_per_image", "max_num_batched_tokens",
            "driver_peak_rss_mib", "descendants_peak_total_rss_mib", "worker_peak_rss_mib"]
    med = {side: summarise(r, keys) for side, r in res.items()}
    v, r = med["vlmbatch"], med["ray_data_llm"]
    return {
        "params": params.__dict__, "runs": res, "medians": med,
        "ratios": {"end_to_end": ratio(v["images_per_s"], r["images_per_s"]),
                   "process": ratio(r.get("process_wall_s"), v.get("process_wall_s"))},
        "targets": {"end_to_end": TARGET, "process": TARGET},
    }


if __name__ == "__main__":
    side_main(SIDES)

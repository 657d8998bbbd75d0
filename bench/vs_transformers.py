"""Comparison 3: vlmbatch (vLLM engine) vs the model cards' per-image transformers ``generate`` loop.

The loop side does what the model cards show: load processor and model, then for each image
open it, run the processor and ``model.generate`` (greedy, exactly ``max_tokens`` new tokens).
No target in the issue; the ratio (vlmbatch images/s over the loop's) is reported end to end
and in steady state (vlmbatch from engine ready to last batch; the loop without its model load).

Run: ``python -m bench.run vs_transformers [--runs N]``.
"""

from __future__ import annotations

from bench.common import BenchParams, interleaved, ratio, side_main, summarise
from bench.peers import transformers_loop_side
from bench.pipeline_side import vlmbatch_side

SIDES = {"vlmbatch": vlmbatch_side, "transformers_loop": transformers_loop_side}


def compare(params: BenchParams, runs: int) -> dict:
    return summarise_runs(params, interleaved(__name__, list(SIDES), params, runs))


def summarise_runs(params: BenchParams, res: dict[str, list[dict]]) -> dict:
    """Medians and ratios from every side's runs."""
    keys = ["wall_s", "images_per_s", "load_s", "steady_images_per_s", "prompt_tokens_per_image",
            "driver_peak_rss_mib"]
    med = {side: summarise(r, keys) for side, r in res.items()}
    v, t = med["vlmbatch"], med["transformers_loop"]
    return {
        "params": params.__dict__, "runs": res, "medians": med,
        "ratios": {"end_to_end": ratio(v["images_per_s"], t["images_per_s"]),
                   "steady": ratio(v.get("steady_images_per_s"), t.get("steady_images_per_s"))},
        "targets": {},
    }


if __name__ == "__main__":
    side_main(SIDES)

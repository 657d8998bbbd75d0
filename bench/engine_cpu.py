"""Comparison: the engine's processes' CPU per image with images prepared on the CPU stage vs by the engine.

Both sides run the full pipeline on the same images (:mod:`bench.pipeline_side`); they differ only
in ``engine.cpu_prepare``. ``vlmbatch`` (true, the default): the ``prepare`` stage resizes, tiles
and normalises each image into the model's input array on CPU tasks, and vLLM's front end passes
it through. ``vlmbatch_raw`` (false, how it was before): decoded pixels reach the engine and the
plugin's processor does that work inside the caption actor's process. The window is the engine's
steady state (engine ready to last batch out, stamped in the actor); CPU seconds per process role
(``front_end`` = the caption actor's process, which runs vLLM's front end; ``engine_core`` and
any ``worker`` below it) from ``/proc/<pid>/stat`` at its two ends (:mod:`bench.procstat`).

A third side, ``internvl``, is the same pipeline with the tiny InternVL (vLLM's own processor,
transformers' GotOcr2 image processor, which takes no prepared input: see bench/README.md): what
that processor costs the engine's process per image. For a family with no CPU preparer only
``vlmbatch`` runs.

Run: ``python -m bench.run engine_cpu --family xcomposer2-vl``.
"""

from __future__ import annotations

import dataclasses

from bench.common import BenchParams, engine_cpu_medians, interleaved, ratio, side_main, summarise
from bench.pipeline_side import vlmbatch_raw_side, vlmbatch_side


def internvl_side(p: BenchParams) -> dict:
    """The pipeline with the tiny InternVL: vLLM's own processor in the engine's process."""
    return {**vlmbatch_side(dataclasses.replace(p, family="internvl", model_id=None)), "side": "internvl"}


SIDES = {"vlmbatch": vlmbatch_side, "vlmbatch_raw": vlmbatch_raw_side, "internvl": internvl_side}


def compare(params: BenchParams, runs: int) -> dict:
    from operators.vlm.registry import get_family

    sides = list(SIDES) if get_family(params.family).cpu_prepare is not None else ["vlmbatch"]
    if params.family == "internvl" or params.extra.get("engine_cpu_internvl") is False:
        sides = [s for s in sides if s != "internvl"]
    return summarise_runs(params, interleaved(__name__, sides, params, runs))


def summarise_runs(params: BenchParams, res: dict[str, list[dict]]) -> dict:
    """Medians and ratios from every side's runs."""
    keys = ["steady_s", "steady_images_per_s", "images_per_s", "prompt_tokens_per_image"]
    med = {side: {**summarise(r, keys), **engine_cpu_medians(r)} for side, r in res.items()}
    cpu = {side: m.get("engine_cpu_ms_per_image", {}) for side, m in med.items()}
    ratios = {"front_end_ms_per_image": cpu["vlmbatch"].get("front_end")}
    if "internvl" in cpu:
        ratios["internvl_front_end_ms_per_image"] = cpu["internvl"].get("front_end")
    if "vlmbatch_raw" in med:
        prepared, raw = cpu["vlmbatch"], cpu["vlmbatch_raw"]
        ratios = {"front_end_cpu_prepared_over_raw": ratio(prepared.get("front_end"), raw.get("front_end")),
                  "engine_total_cpu_prepared_over_raw": ratio(prepared.get("total"), raw.get("total")),
                  "steady_prepared_over_raw": ratio(med["vlmbatch"].get("steady_images_per_s"),
                                                    med["vlmbatch_raw"].get("steady_images_per_s")),
                  **({"internvl_front_end_ms_per_image": cpu["internvl"].get("front_end")} if "internvl" in cpu
                     else {})}
    return {"params": params.__dict__, "runs": res, "medians": med, "ratios": ratios, "targets": {}}


if __name__ == "__main__":
    side_main(SIDES)

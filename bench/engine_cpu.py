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


def processor_costs(p: BenchParams, images: int = 48) -> dict:
    """Milliseconds per image, one thread, of the image work alone at the published sizes, on the bench corpus:
    InternVL2-8B's image processor (transformers' GotOcr2 at 448 px, what vLLM's InternVL processor calls)
    and XComposer2's CPU preparers (VL 490 px; 4KHD hd_num 25), medians over ``images`` images."""
    import statistics
    import time

    from PIL import Image
    from transformers import AutoProcessor

    from bench.common import CACHE, corpus_files, make_corpus
    from bench.shapes import shape_dir
    from operators.vlm.xcomposer2.cpu import hd_preparer, vl_preparer

    files = corpus_files(make_corpus(p.num_images, p.image_side))[:images]
    photos = [Image.open(f).convert("RGB") for f in files]
    internvl = AutoProcessor.from_pretrained(str(shape_dir("internvl2-8b", CACHE))).image_processor
    fns = {"internvl2_8b_hf_image_processor": lambda im: internvl(images=[im], return_tensors="pt"),
           "xcomposer2_vl_cpu_prepare": vl_preparer("internlm/internlm-xcomposer2-vl-7b"),
           "xcomposer2_4khd_cpu_prepare": hd_preparer("internlm/internlm-xcomposer2-4khd-7b")}
    out = {}
    for name, fn in fns.items():
        fn(photos[0])
        times = []
        for im in photos:
            t0 = time.perf_counter()
            fn(im)
            times.append(1000 * (time.perf_counter() - t0))
        out[name] = round(statistics.median(times), 2)
    return out


def compare(params: BenchParams, runs: int) -> dict:
    import torch

    from operators.vlm.registry import get_family

    sides = list(SIDES) if get_family(params.family).cpu_prepare is not None else ["vlmbatch"]
    if params.family == "internvl" or params.extra.get("engine_cpu_internvl") is False:
        sides = [s for s in sides if s != "internvl"]
    body = summarise_runs(params, interleaved(__name__, sides, params, runs))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        body["processor_ms_per_image"] = processor_costs(params)
    except Exception as exc:  # noqa: BLE001 - the sides' figures are kept whatever happens here
        body["processor_ms_per_image"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        torch.set_num_threads(threads)
    return body


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

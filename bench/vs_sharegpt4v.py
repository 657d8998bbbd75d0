"""Comparison 6: Share-Captioner on vlmbatch (vLLM plugin) vs ShareGPT4V's own captioning loop.

The peer is what built ShareGPT4V-PT (``projects/ShareGPT4V/tools/share-cap_batch_infer.py``): batches of 4
images, ``vis_processor``, ``encode_img``, the script's segments around the image embeddings, and the
Hugging Face generate loop with ``num_beams=3, do_sample=True, repetition_penalty=1.5`` (beam sampling),
here over vlmbatch's plain PyTorch reference with a KV cache (:mod:`operators.vlm.xcomposer.generate`),
with exactly ``max_tokens`` new tokens per beam (EOS masked) so both sides generate equal lengths. Sides:

* ``vlmbatch``: the full pipeline (list, fetch, decode, caption, commit) with the Share-Captioner family and
  its instruction; one greedy sequence per image (the recipe's decoding, ``jobs/specs/sharegpt4v-pt.yaml``);
* ``vllm_beams``: bare ``vllm.LLM.beam_search`` with 3 beams on the same pre-decoded images (the script's
  beam width on vLLM; vLLM's beam search has no repetition penalty);
* ``sharegpt4v_loop``: the script's loop.

Ratios (images/s over the loop's): ``end_to_end`` (vlmbatch), ``beams`` (vLLM beams). ``a100_days`` puts
each side's images/s next to the original build: 1,246,901 captions (ShareGPT4V-PT) in 44 A100-days is
0.328 images/s per GPU; on CPU with the tiny model only the ratios carry over.

Run: ``python -m bench.run vs_sharegpt4v --family share-captioner [--runs N]``; on a GPU add
``--model-id shape:share-captioner-7b --load-format dummy --dtype bfloat16 --gpus-per-engine 1``.
"""

from __future__ import annotations

import dataclasses
import time

from bench.common import (
    BenchParams,
    corpus_files,
    interleaved,
    loadavg,
    make_corpus,
    peak_rss_mib,
    ratio,
    side_main,
    summarise,
)
from bench.peers import _predecoded
from bench.pipeline_side import vlmbatch_side

ORIGINAL_IMAGES, ORIGINAL_GPU_DAYS = 1_246_901, 44
ORIGINAL_PER_GPU = ORIGINAL_IMAGES / (ORIGINAL_GPU_DAYS * 86400)
SCRIPT_BATCH, SCRIPT_BEAMS = 4, 3


def _params(p: BenchParams) -> BenchParams:
    from operators.vlm.families.xcomposer import SHARE_CAPTIONER_INSTRUCTION

    return dataclasses.replace(p, family="share-captioner", prompt=SHARE_CAPTIONER_INSTRUCTION)


def sharegpt4v_loop_side(p: BenchParams) -> dict:
    """ShareGPT4V's batched beam-sampling loop over the reference (``share-cap_batch_infer.py``)."""
    import torch
    from PIL import Image
    from transformers import AutoTokenizer

    from operators.vlm.xcomposer.generate import generate
    from operators.vlm.xcomposer.image import pixel_values
    from operators.vlm.xcomposer.reference import XComposerReference

    p = _params(p)
    files = corpus_files(make_corpus(p.num_images, p.image_side))
    load_before, t0 = loadavg(), time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, p.dtype)
    if p.load_format == "dummy":
        from operators.vlm.xcomposer.config import InternLMXComposerConfig

        config = InternLMXComposerConfig.from_pretrained(p.resolved_model())
        with torch.device(device):
            model = XComposerReference(config).to(dtype).eval()
    else:
        model = XComposerReference.from_pretrained(p.resolved_model(), dtype=dtype).to(device)
    tok = AutoTokenizer.from_pretrained(p.resolved_model())
    embed = model.internlm_model.model.embed_tokens
    segs = [torch.tensor([tok(s, add_special_tokens=b)["input_ids"]], device=device)
            for s, b in (("<|User|>:", True), (p.prompt + "<TOKENS_UNUSED_0>\n<|Bot|>:", False))]
    t_load = time.perf_counter() - t0
    gen, prompt_tokens = 0, []
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.inference_mode():
        for start in range(0, len(files), SCRIPT_BATCH):
            batch = files[start:start + SCRIPT_BATCH]
            pixels = torch.stack([pixel_values(Image.open(f).convert("RGB"), model.image_size) for f in batch])
            image = model.encode_pixels(pixels.to(device, dtype))
            n = len(batch)
            x = torch.cat([embed(segs[0]).expand(n, -1, -1), image, embed(segs[1]).expand(n, -1, -1)], 1)
            out = generate(model.internlm_model, x, max_new_tokens=p.max_tokens, min_new_tokens=p.max_tokens,
                           eos_token_id=tok.eos_token_id, num_beams=SCRIPT_BEAMS, do_sample=True, temperature=1.0,
                           repetition_penalty=1.5, length_penalty=1.0, generator=generator)
            gen += sum(len(o) for o in out)
            prompt_tokens += [x.shape[1]] * len(batch)
    wall = time.perf_counter() - t0
    return {"side": "sharegpt4v_loop", "images": len(files), "wall_s": round(wall, 3), "load_s": round(t_load, 3),
            "images_per_s": round(len(files) / wall, 4), "steady_images_per_s": round(len(files) / (wall - t_load), 4),
            "generated_tokens": gen, "prompt_tokens_per_image": round(sum(prompt_tokens) / len(prompt_tokens), 1),
            "beams": SCRIPT_BEAMS, "driver_peak_rss_mib": peak_rss_mib(), "load_before": load_before,
            "load_after": loadavg()}


def vllm_beams_side(p: BenchParams) -> dict:
    """``vllm.LLM.beam_search`` with the script's 3 beams, exactly ``max_tokens`` per beam."""
    from vllm import LLM
    from vllm.sampling_params import BeamSearchParams

    from operators.vlm.registry import get_family
    from operators.vlm.vllm_engine import engine_args
    from schemas.spec import ModelConfig

    p = _params(p)
    family = get_family(p.family)
    images = _predecoded(p)
    prompt = family.build_prompt(p.prompt)
    load_before, t0 = loadavg(), time.perf_counter()
    engine = {"dtype": p.dtype, "max_model_len": p.max_model_len, "max_num_seqs": p.max_num_seqs,
              "load_format": p.load_format}
    model = ModelConfig.model_validate({"family": p.family, "model_id": p.resolved_model(), "engine": engine})
    llm = LLM(**engine_args(model, family))
    t_load = time.perf_counter() - t0
    outs = llm.beam_search([{"prompt": prompt, "multi_modal_data": {"image": im}} for im in images],
                           BeamSearchParams(beam_width=SCRIPT_BEAMS, max_tokens=p.max_tokens, ignore_eos=True))
    wall = time.perf_counter() - t0
    return {"side": "vllm_beams", "images": len(images), "wall_s": round(wall, 3), "load_s": round(t_load, 3),
            "images_per_s": round(len(images) / wall, 4),
            "steady_images_per_s": round(len(images) / (wall - t_load), 4),
            # A beam's tokens hold its prompt too; every beam runs to max_tokens (EOS ignored).
            "generated_tokens": p.max_tokens * len(outs),
            "prompt_tokens_per_image": round(sum(len(o.sequences[0].tokens) for o in outs) / len(outs)
                                             - p.max_tokens, 1),
            "beams": SCRIPT_BEAMS,
            "driver_peak_rss_mib": peak_rss_mib(), "load_before": load_before, "load_after": loadavg()}


def _vlmbatch(p: BenchParams) -> dict:
    return vlmbatch_side(_params(p))


SIDES = {"vlmbatch": _vlmbatch, "vllm_beams": vllm_beams_side, "sharegpt4v_loop": sharegpt4v_loop_side}


def compare(params: BenchParams, runs: int) -> dict:
    return summarise_runs(_params(params), interleaved(__name__, list(SIDES), _params(params), runs))


def summarise_runs(params: BenchParams, res: dict[str, list[dict]]) -> dict:
    """Medians, ratios over the ShareGPT4V loop, and each side's images/s next to the original build's."""
    keys = ["wall_s", "images_per_s", "load_s", "steady_images_per_s", "prompt_tokens_per_image",
            "driver_peak_rss_mib"]
    med = {side: summarise(r, keys) for side, r in res.items()}
    loop = med["sharegpt4v_loop"]
    gpus = max(params.gpus_per_engine, 1)
    return {
        "params": params.__dict__, "runs": res, "medians": med,
        "ratios": {"end_to_end": ratio(med["vlmbatch"]["images_per_s"], loop["images_per_s"]),
                   "steady": ratio(med["vlmbatch"].get("steady_images_per_s"), loop.get("steady_images_per_s")),
                   "beams": ratio(med["vllm_beams"].get("steady_images_per_s"), loop.get("steady_images_per_s"))},
        "a100_days": {"original_images_per_s_per_gpu": round(ORIGINAL_PER_GPU, 4),
                      **{f"{side}_images_per_s_per_gpu": round((m.get("steady_images_per_s") or 0) / gpus, 4)
                         for side, m in med.items()}},
        "targets": {},
    }


if __name__ == "__main__":
    side_main(SIDES)

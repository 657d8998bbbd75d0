"""Projected H100-hours for a ShareGPT4V-PT-sized build (1.2M captions, ~230 tokens each): a PROJECTION.

    python -m bench.projection                 # from the last H100 measurement and the roofline
    python -m bench.projection --write         # also bench/results/projection-<date>.json

Until a GPU run at 230 tokens exists (``bench/gpu_run.sh``), the images/s per H100 are projected,
not measured, from three inputs, each named in the output:

1. the bare plugin's measured rate on the H100 at 128 generated tokens (``bench/results/gpu/
   overhead-h100-xcomposer2_vl_7b-*.json``, XComposer2-VL-7B shapes, dummy weights, one wave of 256);
2. its efficiency against the roofline of ``bench/bound.py`` at those settings (measured / bound),
   assumed to hold at 230 tokens: the roofline's vision, prefill and decode seconds per image are
   scaled by that one factor;
3. what issue 19 removed from the decode steps: the rank-256 LoRA of all five projections on every
   decode token (``lora_decode_bytes_share``: its weights are that share of the bytes a memory-bound
   decode step reads), so the measured decode part shrinks by that share;

then the pipeline's fraction of the bare engine, taken from the InternVL2-8B H100 run (0.946
steady; the XComposer2 pipeline figure of that day, 0.55, predates the scheduler-budget fix).
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from bench.bound import PEAKS, SHAPES, bound
from bench.common import RESULTS

CAPTIONS = 1_200_000
TOKENS = 230
TARGET_HOURS = 24.0


def lora_decode_bytes_share(shape) -> float:
    """The Partial-LoRA weights' share of the bytes one decode step reads (weights of every layer)."""
    qkv_out = shape.hidden + 2 * shape.kv_heads * shape.head_dim
    pairs = [(shape.hidden, qkv_out), (shape.hidden, shape.hidden), (shape.hidden, shape.ffn),
             (shape.hidden, shape.ffn), (shape.ffn, shape.hidden)]
    lora = shape.layers * sum(shape.lora_rank * (i + o) for i, o in pairs)
    return lora / (shape.lm_matmul_params() + lora)


def project(gpu_result: dict, pipeline_over_bare: float = 0.946, peak: str = "h100-measured-here") -> dict:
    shape = SHAPES["xcomposer2-vl-7b"]
    p, med = gpu_result["params"], gpu_result["medians"]["bare_vllm"]
    prompt, batch = round(med["prompt_tokens_per_image"]), p["max_num_seqs"]
    measured = med["steady_images_per_s"]
    share = lora_decode_bytes_share(shape)

    def with_dense_lora(split: dict) -> dict:  # the decode steps as the measured plugin ran them
        return dict(split, decode=split["decode"] / (1 - share))

    at_measured = bound(shape, prompt, p["max_tokens"], batch, *PEAKS[peak])
    # The roofline's decode has no LoRA; the measured run's decode read the LoRA weights every step.
    efficiency = sum(with_dense_lora(at_measured["s_per_image"]).values()) * measured
    at_target = bound(shape, prompt, TOKENS, batch, *PEAKS[peak])["s_per_image"]
    seconds = {k: v / efficiency for k, v in at_target.items()}
    before = with_dense_lora(seconds)
    bare_before, bare_after = 1 / sum(before.values()), 1 / sum(seconds.values())
    pipeline = bare_after * pipeline_over_bare
    hours = CAPTIONS / pipeline / 3600
    return {
        "label": "PROJECTION (not a measurement): XComposer2-VL-7B on one H100, 230 generated tokens",
        "inputs": {"measured_bare_images_per_s": measured, "measured_tokens": p["max_tokens"],
                   "prompt_tokens": prompt, "batch": batch, "roofline_at_measured": at_measured["images_per_s"],
                   "efficiency_vs_roofline": round(efficiency, 3), "peaks": peak,
                   "lora_decode_bytes_share": round(share, 4), "pipeline_over_bare": pipeline_over_bare,
                   "source": f"bench/results/gpu/{gpu_result.get('file', '')}"},
        "seconds_per_image_at_230": {k: round(v, 4) for k, v in seconds.items()},
        "bare_images_per_s": {"dense_lora_before": round(bare_before, 2), "partial_lora_after": round(bare_after, 2)},
        "pipeline_images_per_s": round(pipeline, 2),
        "h100_hours_for_1_2m": round(hours, 1),
        "h100_hours_for_1_2m_before": round(CAPTIONS / (bare_before * pipeline_over_bare) / 3600, 1),
        "target_hours": TARGET_HOURS, "needed_images_per_s": round(CAPTIONS / TARGET_HOURS / 3600, 2),
    }


def measured(gpu_result: dict) -> dict | None:
    """The build's hours straight from a GPU run at 230 tokens with issue 19's code (it records the engine's
    CPU per image, which earlier runs did not), else None."""
    med = gpu_result["medians"].get("vlmbatch", {})
    if gpu_result["params"]["max_tokens"] != TOKENS or "engine_cpu_ms_per_image" not in med:
        return None
    rate = med["steady_images_per_s"]
    return {"label": f"MEASURED: XComposer2-VL-7B through the pipeline on one {gpu_result['machine']['gpu']}, "
                     f"{TOKENS} generated tokens", "source": gpu_result.get("file"),
            "pipeline_images_per_s": rate, "h100_hours_for_1_2m": round(CAPTIONS / rate / 3600, 1),
            "target_hours": TARGET_HOURS, "needed_images_per_s": round(CAPTIONS / TARGET_HOURS / 3600, 2)}


def main(argv: list[str]) -> int:
    files = sorted((RESULTS / "gpu").glob("overhead-h*-xcomposer2_vl_7b-*.json"), key=lambda f: f.stem[-8:])
    body = json.loads(files[-1].read_text())
    body["file"] = files[-1].name
    out = measured(body) or project(body)
    print(json.dumps(out, indent=2))
    if "--write" in argv:
        path = RESULTS / f"projection-{dt.datetime.now(dt.timezone.utc):%Y%m%d}.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

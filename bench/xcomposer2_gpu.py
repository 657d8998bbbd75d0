"""Full-size InternLM-XComposer2-VL-7B shape on a GPU with dummy weights: load, generate, throughput.

    python bench/xcomposer2_gpu.py [--images 64] [--max-tokens 128] [--variant vl|4khd] [--tp 1]

Builds a model directory with the published VL-7B ``config.json`` fields (4096 hidden, 32
layers, 8 KV heads, 92544 vocab; CLIP ViT-L/14 at 490) and the tiny tokenizer (no hub here),
starts vLLM with ``load_format="dummy"`` through vlmbatch's plugin, captions synthetic images at
a fixed output length (``ignore_eos``) and writes images/s and generated tokens/s to
``bench/results/xcomposer2_gpu.json``. Needs a CUDA GPU and vLLM; not run on CPU machines.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VL_7B = dict(vocab_size=92544, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768, rope_theta=1000000,
             rope_scaling={"type": "dynamic", "factor": 1.0}, rms_norm_eps=1e-5, bias=False, max_length=4096,
             tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2,
             model_type="internlmxcomposer2", architectures=["InternLMXComposer2ForCausalLM"])


def build_dir(root: Path, variant: str) -> Path:
    from operators.vlm.tiny.xcomposer2 import make_tiny_xcomposer2

    tiny = root / "tokenizer-src"
    make_tiny_xcomposer2(tiny, variant)
    out = root / f"xcomposer2-{variant}-7b-shape"
    out.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny / name).exists():
            (out / name).write_bytes((tiny / name).read_bytes())
    config = {**VL_7B, "xcomposer_variant": variant, "torch_dtype": "bfloat16"}
    if variant == "4khd":
        config["hd_num"] = 9
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--variant", choices=["vl", "4khd"], default="vl")
    ap.add_argument("--tp", type=int, default=1)
    args = ap.parse_args()

    from PIL import Image
    from vllm import LLM, SamplingParams

    from operators.vlm.registry import get_family

    with tempfile.TemporaryDirectory() as tmp:
        model = build_dir(Path(tmp), args.variant)
        t0 = time.perf_counter()
        llm = LLM(model=str(model), tokenizer=str(model), load_format="dummy", dtype="bfloat16",
                  max_model_len=8192, tensor_parallel_size=args.tp, limit_mm_per_prompt={"image": 1}, seed=0)
        load_s = time.perf_counter() - t0
        prompt = get_family(f"xcomposer2-{args.variant}").build_prompt("Describe this image in detail.")
        images = [Image.new("RGB", (640 + 7 * i, 480), ((37 * i) % 256, 90, 200)) for i in range(args.images)]
        params = SamplingParams(max_tokens=args.max_tokens, min_tokens=args.max_tokens, ignore_eos=True,
                                temperature=0.0)
        llm.generate([{"prompt": prompt, "multi_modal_data": {"image": images[0]}}], params)  # warm-up
        t1 = time.perf_counter()
        outs = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": im}} for im in images], params)
        wall = time.perf_counter() - t1
        generated = sum(len(o.outputs[0].token_ids) for o in outs)
        result = dict(variant=args.variant, shape="internlm-xcomposer2-vl-7b", load_format="dummy",
                      tensor_parallel_size=args.tp, images=args.images, output_tokens_per_image=args.max_tokens,
                      prompt_tokens_per_image=len(outs[0].prompt_token_ids), load_s=round(load_s, 1),
                      wall_s=round(wall, 2), images_per_s=round(args.images / wall, 3),
                      generated_tokens_per_s=round(generated / wall, 1))
        print(json.dumps(result, indent=2))
        out = Path(__file__).parent / "results" / "xcomposer2_gpu.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

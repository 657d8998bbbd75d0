"""Roofline bound of images/s per GPU for a vision-language shape, to put beside measured rates.

    python -m bench.bound internvl2-8b --prompt-tokens 379 --output-tokens 128 --batch 256
    python -m bench.bound xcomposer2-vl-7b --prompt-tokens 1546 --output-tokens 128 --batch 256

Per image: the vision tower and the prefill are compute-bound (FLOPs / peak); each decode step is
bound by the larger of its FLOPs and its bytes (all weights once per step, shared by the batch,
plus the sequence's KV cache) over bandwidth. FLOPs count 2 per multiply-add of every matmul,
plus attention scores and values (causal prefill halves them). Peaks: H100 SXM datasheet (dense
BF16 989 TFLOP/s, HBM3 3.35 TB/s) and what this workplace's H100 reached in a bare bf16 matmul and
a device copy (798 TFLOP/s, 3.0 TB/s: /work/.library/device/KINDS.md). The bound ignores
everything a real engine also pays (sampling, scheduling, kernel launch, imperfect overlap), so
no engine reaches it; the ratio measured/bound says how far a stack is from the hardware.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

PEAKS = {"h100-datasheet": (989e12, 3.35e12), "h100-measured-here": (798e12, 3.0e12)}


@dataclass(frozen=True)
class Shape:
    # language model
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    # vision tower (ViT) and what it hands the language model
    vit_width: int
    vit_layers: int
    vit_ffn: int
    vit_tokens: int  # patches + class token through the tower, per view
    image_tokens: int  # tokens in the language model's prompt per image
    projector_flops_per_token: float  # per vision token entering the projector
    lora_rank: int = 0  # Partial LoRA on image tokens (XComposer2): extra low-rank matmuls
    vit_views: int = 1  # independent passes through the tower per image (4KHD: the crops plus the global view)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def lm_matmul_params(self) -> int:
        """Weights every token multiplies (attention, MLP, LM head); embeddings are a lookup."""
        attn = self.hidden * self.hidden * 2 + 2 * self.hidden * self.kv_heads * self.head_dim
        return self.layers * (attn + 3 * self.hidden * self.ffn) + self.hidden * self.vocab

    def lm_bytes(self, dtype_bytes: int = 2) -> int:
        return dtype_bytes * (self.lm_matmul_params() + self.hidden * self.vocab)  # + input embedding

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def lora_flops_per_image_token(self) -> float:
        if not self.lora_rank:
            return 0.0
        qkv_out = self.hidden + 2 * self.kv_heads * self.head_dim
        pairs = [(self.hidden, qkv_out), (self.hidden, self.hidden), (self.hidden, self.ffn),
                 (self.hidden, self.ffn), (self.ffn, self.hidden)]
        return self.layers * sum(2 * self.lora_rank * (i + o) for i, o in pairs)

    def vision_flops(self) -> float:
        per_layer = 2 * self.vit_tokens * (4 * self.vit_width**2 + 2 * self.vit_width * self.vit_ffn)
        attention = 4 * self.vit_tokens**2 * self.vit_width
        tower = self.vit_layers * (per_layer + attention) + self.projector_flops_per_token * self.vit_tokens
        return self.vit_views * tower


SHAPES = {
    # InternViT-300M-448px (pixel shuffle 0.5: 1024 patches -> 256 tokens) + InternLM2.5-7B
    "internvl2-8b": Shape(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=92553, vit_width=1024,
                          vit_layers=24, vit_ffn=4096, vit_tokens=1025, image_tokens=256,
                          projector_flops_per_token=2 * (4096 * 4096 + 4096 * 4096) / 4),
    # CLIP ViT-L/14 at 490 px (35 x 35 patches, all kept) + 2-layer projector + InternLM2-7B with Partial LoRA
    "xcomposer2-vl-7b": Shape(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=92544, vit_width=1024,
                              vit_layers=24, vit_ffn=4096, vit_tokens=1226, image_tokens=1225,
                              projector_flops_per_token=2 * (1024 * 4096 + 4096 * 4096), lora_rank=256),
    # CLIP ViT-L/14 at 336 px per crop (24 x 24 patches merged 2 x 2), hd_num 25, the bench corpus's 448 x 597
    # photographs: 5 x 4 crops of 336 + the global view = 21 tower passes; (20 + 1) * 144 + 1 + 5 * 12 = 3085
    # image tokens. The projector sees 144 merged tokens of 4 x width per view.
    "xcomposer2-4khd-7b": Shape(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=92544,
                                vit_width=1024, vit_layers=24, vit_ffn=4096, vit_tokens=577, image_tokens=3085,
                                projector_flops_per_token=2 * (4096 * 4096 + 4096 * 4096) / 4, lora_rank=256,
                                vit_views=21),
}


def bound(shape: Shape, prompt_tokens: int, output_tokens: int, batch: int, peak_flops: float,
          bandwidth: float) -> dict:
    """Images/s per GPU at the roofline, and where the time goes (seconds per image)."""
    n = shape.lm_matmul_params()
    attn_prefill = 2 * shape.layers * prompt_tokens**2 * shape.hidden  # causal: half of 4 L P^2 h
    prefill = 2 * n * prompt_tokens + attn_prefill + shape.lora_flops_per_image_token() * shape.image_tokens
    vision = shape.vision_flops()
    # Decode: mean context over the generated tokens.
    ctx = prompt_tokens + output_tokens / 2
    decode_flops_step = 2 * n + 4 * shape.layers * ctx * shape.hidden
    decode_bytes_step = shape.lm_bytes() / batch + shape.kv_bytes_per_token() * ctx
    t_vision, t_prefill = vision / peak_flops, prefill / peak_flops
    t_decode = output_tokens * max(decode_flops_step / peak_flops, decode_bytes_step / bandwidth)
    total = t_vision + t_prefill + t_decode
    memory_bound = decode_bytes_step / bandwidth > decode_flops_step / peak_flops
    return {"images_per_s": round(1 / total, 1),
            "s_per_image": {"vision": t_vision, "prefill": t_prefill, "decode": t_decode},
            "tflop_per_image": round((vision + prefill + output_tokens * decode_flops_step) / 1e12, 2),
            "decode_bound_by": "memory" if memory_bound else "compute"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--prompt-tokens", type=int, required=True)
    ap.add_argument("--output-tokens", type=int, required=True)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    out = {"shape": args.shape, **asdict(shape), "prompt_tokens": args.prompt_tokens,
           "output_tokens": args.output_tokens, "batch": args.batch}
    for name, (flops, bw) in PEAKS.items():
        out[name] = bound(shape, args.prompt_tokens, args.output_tokens, args.batch, flops, bw)
    print(json.dumps(out, indent=2, default=lambda x: round(x, 5)))


if __name__ == "__main__":
    main()

"""Published XComposer v1 weight names -> the vLLM layers of :mod:`operators.vlm.xcomposer.vllm_model`.

Pure tensor bookkeeping (no vLLM import), so it is unit-tested on its own:

* ``visual_encoder.*`` (EVA, timm-style) -> vLLM's BLIP-2 vision tower names; ``attn.q_bias`` and
  ``attn.v_bias`` become the fused ``qkv.bias`` ``[q_bias; 0; v_bias]`` (EVA's key has no bias).
* ``Qformer.bert.*`` (BERT names) -> vLLM's ``Blip2QFormerModel`` names.
* ``internlm_model.*`` -> ``language_model.*`` (vLLM's Llama); a LoRA'd linear's ``weight``, ``lora_A``
  and ``lora_B`` are merged into one ``weight`` as soon as all three have arrived.
* Buffers of the original code (``position_ids``, ``rotary_emb.inv_freq``) are dropped; anything else
  unknown reaches the loader, which rejects it (a layout mismatch fails loudly).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import torch

_VIT_RULES = [
    (re.compile(r"^visual_encoder\.cls_token$"), "visual_encoder.embeddings.class_embedding"),
    (re.compile(r"^visual_encoder\.pos_embed$"), "visual_encoder.embeddings.position_embedding"),
    (re.compile(r"^visual_encoder\.patch_embed\.proj\."), "visual_encoder.embeddings.patch_embedding."),
    (re.compile(r"^visual_encoder\.blocks\.(\d+)\.norm1\."), r"visual_encoder.encoder.layers.\1.layer_norm1."),
    (re.compile(r"^visual_encoder\.blocks\.(\d+)\.norm2\."), r"visual_encoder.encoder.layers.\1.layer_norm2."),
    (re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\."), r"visual_encoder.encoder.layers.\1.self_attn.qkv."),
    (re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\."),
     r"visual_encoder.encoder.layers.\1.self_attn.projection."),
    (re.compile(r"^visual_encoder\.blocks\.(\d+)\.mlp\."), r"visual_encoder.encoder.layers.\1.mlp."),
    (re.compile(r"^Qformer\.bert\.embeddings\.LayerNorm\."), "Qformer.layernorm."),
    (re.compile(r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\."),
     r"Qformer.encoder.layer.\1.\2.attention."),
    (re.compile(r"^Qformer\.bert\.encoder\."), "Qformer.encoder."),
    (re.compile(r"^internlm_model\."), "language_model."),
]
_QV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q|v)_bias$")
_LORA = re.compile(r"^(internlm_model\.model\.layers\.\d+\.(?:self_attn|mlp)\.\w+_proj)\."
                   r"(weight|lora_A\.weight|lora_B\.weight)$")
_SKIP = ("position_ids", "rotary_emb.inv_freq")


def rename(name: str) -> str:
    """The vLLM parameter name of a published weight name (unchanged when no rule applies)."""
    for pattern, repl in _VIT_RULES:
        if pattern.search(name):
            return pattern.sub(repl, name, count=1)
    return name


def merge_lora(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """``W + scaling * B A`` computed in float32, returned in ``weight``'s dtype."""
    return (weight.float() + scaling * (lora_b.float() @ lora_a.float())).to(weight.dtype)


def published_to_vllm(weights: Iterable[tuple[str, torch.Tensor]], config) -> Iterator[tuple[str, torch.Tensor]]:
    """Stream ``(vLLM name, tensor)`` for the published checkpoint ``weights`` of ``config``.

    Raises:
        ValueError: a LoRA'd linear whose three tensors did not all arrive (e.g. LoRA beside a quantized
            base, where no exact merge exists), or LoRA on a module ``learn_param`` does not name.
    """
    lora = config.lora()
    targets = config.lora_targets()
    scaling = float(lora["lora_alpha"]) / float(lora["lora_r"]) if lora else 0.0
    pending: dict[str, dict[str, torch.Tensor]] = {}
    qv: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights:
        if name.endswith(_SKIP):
            continue
        m = _QV_BIAS.match(name)
        if m:
            parts = qv.setdefault(m.group(1), {})
            parts[m.group(2)] = tensor
            if len(parts) == 2:
                bias = torch.cat([parts["q"], torch.zeros_like(parts["v"]), parts["v"]])
                yield f"visual_encoder.encoder.layers.{m.group(1)}.self_attn.qkv.bias", bias
                del qv[m.group(1)]
            continue
        m = _LORA.match(name)
        if m and m.group(1).rsplit(".", 1)[1] in targets:
            parts = pending.setdefault(m.group(1), {})
            parts[m.group(2)] = tensor
            if len(parts) == 3:
                merged = merge_lora(parts["weight"], parts["lora_A.weight"], parts["lora_B.weight"], scaling)
                yield rename(f"{m.group(1)}.weight"), merged
                del pending[m.group(1)]
            continue
        if ".lora_" in name and name.startswith("internlm_model."):
            raise ValueError(f"{name}: LoRA weights the config's internlm_lora.learn_param does not name")
        yield rename(name), tensor
    if pending or qv:
        raise ValueError(f"incomplete weights in the checkpoint: {sorted(pending) + sorted(qv)}")

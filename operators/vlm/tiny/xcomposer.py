"""Tiny InternLM-XComposer v1 checkpoints (XComposer-VL, Share-Captioner, the 4-bit layout), random weights.

Weight names and layouts are the published ones (see ``operators/vlm/xcomposer/reference.py``); only sizes
are toy: EVA 56 px (4 x 4 patches of 14), width 64, 2 blocks; perceive sampler width 64, 2 layers (the
first cross-attends), 8 queries (10 image tokens); InternLM width 128, 2 layers, 4 heads (vLLM's CPU
attention needs head_dim >= 32), LoRA r 8 on q, k, v, o and the FFN. The tokenizer carries ``<s>`` (BOS,
prepended like the published one), ``</s>``, ``<TOKENS_UNUSED_0>`` / ``<TOKENS_UNUSED_1>`` (end of human /
assistant, ordinary added tokens: they survive ``skip_special_tokens`` as in the SentencePiece original) and
vlmbatch's ``<ImageHere>`` placeholder. LoRA and LM-head weights are scaled up so that a dropped LoRA, a
misplaced image or a wrong layout moves log-probs far more than float32 noise.

``quantized=True`` writes the 4-bit release's layout: the decoder linears as AutoGPTQ tensors
(``qweight`` / ``qzeros`` / ``scales`` / ``g_idx``, symmetric 4-bit, group 32) with LoRA merged before
quantization (an AutoGPTQ ``QuantLinear`` replaces the whole module, so no ``lora_A`` / ``lora_B`` survive),
plus ``quantize_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from operators.vlm.xcomposer.tokens import ARCHITECTURE, EOA, EOH, IMAGE_TOKEN, MODEL_TYPE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", IMAGE_TOKEN]
IMAGE_SIZE = 56
NUM_QUERY = 8
GROUP_SIZE = 32
QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _fields(vocab_size: int, bos: int, eos: int) -> dict:
    return dict(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=2048, rms_norm_eps=1e-6, bos_token_id=bos, eos_token_id=eos, pad_token_id=-1,
        bias=True, kqvo_bias=True, intern_converted_llm=True, num_query_token=NUM_QUERY, max_length=768,
        internlm_lora=dict(lora_r=8, lora_alpha=16, lora_dropout=0.05, learn_param=["q", "k", "v", "o", "ffn"]),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=14, image_size=IMAGE_SIZE, layer_norm_eps=1e-6),
        qformer_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                            layer_norm_eps=1e-12, cross_attention_freq=2),
    )


def make_tiny_xcomposer(directory: Path, seed: int = 0, quantized: bool = False) -> None:
    """Write a deterministic tiny XComposer v1 checkpoint and tokenizer to ``directory``."""
    import torch
    from safetensors.torch import save_file
    from tokenizers.processors import TemplateProcessing

    from operators.vlm.tiny.tokenizer import build_tokenizer
    from operators.vlm.xcomposer.config import InternLMXComposerConfig
    from operators.vlm.xcomposer.reference import XComposerReference

    directory = Path(directory)
    tokenizer = build_tokenizer(directory, special_tokens=SPECIAL_TOKENS, eos_token="</s>", pad_token="</s>",
                                bos_token="<s>", unk_token="<unk>")
    tokenizer.add_tokens([EOH, EOA])
    bos = tokenizer.convert_tokens_to_ids("<s>")
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                             special_tokens=[("<s>", bos)])
    tokenizer.save_pretrained(str(directory))
    fields = _fields(len(tokenizer), bos, tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = XComposerReference(InternLMXComposerConfig(**fields))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "LayerNorm.weight", "ln_vision.weight", "norm1.weight", "norm2.weight")):
                continue
            if "lora_" in name:
                p.normal_(0.0, 0.2)
            elif name == "internlm_model.lm_head.weight":
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, 0.1 if p.dim() >= 2 else 0.05)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    if quantized:
        weights = _gptq_layout(weights, model)
        fields.pop("internlm_lora")
        (directory / "quantize_config.json").write_text(json.dumps(
            {"bits": 4, "group_size": GROUP_SIZE, "damp_percent": 0.01, "desc_act": False, "static_groups": False,
             "sym": True, "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "model"},
            indent=2))
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    published = dict(fields, model_type=MODEL_TYPE, architectures=[ARCHITECTURE], torch_dtype="float32")
    (directory / "config.json").write_text(json.dumps(published, indent=2))
    (directory / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos, "eos_token_id": tokenizer.eos_token_id}, indent=2))


def quantize_gptq(weight, group_size: int = GROUP_SIZE):
    """AutoGPTQ tensors (qweight, qzeros, scales, g_idx) of a float ``[out, in]`` weight, symmetric 4-bit."""
    import torch

    out_f, in_f = weight.shape
    w = weight.t().float()  # [in, out]
    groups = w.reshape(in_f // group_size, group_size, out_f)
    scales = (groups.abs().amax(1) / 7.0).clamp(min=1e-8)  # [groups, out]
    q = torch.clamp(torch.round(groups / scales[:, None]) + 8, 0, 15).to(torch.int32).reshape(in_f, out_f)
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    qweight = (q.reshape(in_f // 8, 8, out_f) << shifts[None, :, None]).sum(1, dtype=torch.int32)
    # AutoGPTQ's v1 format stores zero - 1 (7 for symmetric 4-bit), 8 per int32 along the output dim.
    zeros = torch.full((in_f // group_size, out_f), 7, dtype=torch.int32)
    qzeros = (zeros.reshape(in_f // group_size, out_f // 8, 8) << shifts[None, None, :]).sum(-1, dtype=torch.int32)
    g_idx = torch.arange(in_f, dtype=torch.int32) // group_size
    return qweight.contiguous(), qzeros.contiguous(), scales.to(torch.float16).contiguous(), g_idx


def _gptq_layout(weights: dict, model) -> dict:
    """Merge each decoder linear's LoRA into its weight, then store it as AutoGPTQ tensors."""
    out = {k: v for k, v in weights.items() if ".lora_" not in k}
    for name, module in model.internlm_model.named_modules():
        if not name.endswith(QUANTIZED):
            continue
        base = f"internlm_model.{name}"
        w = module.weight.detach().float()
        if getattr(module, "scaling", 0.0):
            w = w + module.scaling * module.lora_B.weight.float() @ module.lora_A.weight.float()
        qweight, qzeros, scales, g_idx = quantize_gptq(w)
        del out[f"{base}.weight"]
        out.update({f"{base}.qweight": qweight, f"{base}.qzeros": qzeros, f"{base}.scales": scales,
                    f"{base}.g_idx": g_idx})
    return out

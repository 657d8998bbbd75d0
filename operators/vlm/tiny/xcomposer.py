"""Tiny InternLM-XComposer v1 checkpoints (XComposer-VL, Share-Captioner, the 4-bit layout), random weights.

Weight names and layouts are the published ones (see ``operators/vlm/xcomposer/reference.py``), checked
against the released remote code and its ``config.json`` (``tests/golden_xcomposer/public.py``); only sizes
are toy: EVA 56 px (4 x 4 patches of 14), width 64, 2 blocks; perceive sampler width 64, 2 layers (the first
cross-attends); InternLM width 128, 2 layers, 4 heads (vLLM's CPU attention needs head_dim >= 32), LoRA r 8.
Structure fields are the published ``config.json``'s: ``num_query_token`` 64 (66 image positions),
``rms_norm_eps`` 1e-5, ``kqvo_bias``, ``intern_converted_llm``, and LoRA ``learn_param`` ``[q, v, ffn]``
(q_proj, v_proj, up_proj, down_proj) under both ``internlm_lora`` and ``lora_cfg`` (the released modules are
built from ``lora_cfg``). Like the released checkpoints, the weights carry the persistent buffers
``Qformer.bert.embeddings.position_ids`` and every layer's ``self_attn.rotary_emb.inv_freq``. The tokenizer
carries ``<s>`` (BOS, prepended like the published one), ``</s>``, ``<TOKENS_UNUSED_0>`` /
``<TOKENS_UNUSED_1>`` (end of human / assistant, ordinary added tokens: they survive ``skip_special_tokens``
as in the SentencePiece original) and vlmbatch's ``<ImageHere>`` placeholder. LoRA and LM-head weights are
scaled up so that a dropped LoRA, a misplaced image or a wrong layout moves log-probs far more than float32
noise.

``quantized=True`` writes the 4-bit release's layout: the decoder linears as AutoGPTQ tensors
(``qweight`` / ``qzeros`` / ``scales`` / ``g_idx``, symmetric 4-bit, group 128) with LoRA merged before
quantization (an AutoGPTQ ``QuantLinear`` replaces the whole module, so no ``lora_A`` / ``lora_B`` survive;
the release's config says ``internlm_lora: null``, ``lora_cfg: null``), plus ``quantize_config.json`` with
the release's values (group 128, ``desc_act`` false, ``sym`` true).
"""

from __future__ import annotations

import json
from pathlib import Path

from operators.vlm.xcomposer.tokens import ARCHITECTURE, EOA, EOH, IMAGE_TOKEN, MODEL_TYPE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", IMAGE_TOKEN]
IMAGE_SIZE = 56
NUM_QUERY = 64  # published config.json
GROUP_SIZE = 32  # XComposer2's tiny 4-bit layout (tiny/xcomposer2_4bit.py)
V1_GROUP_SIZE = 128  # internlm-xcomposer-7b-4bit's quantize_config.json
LORA = dict(lora_r=8, lora_alpha=16, lora_dropout=0.05, learn_param=["q", "v", "ffn"], freeze=False)
QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _fields(vocab_size: int, bos: int, eos: int) -> dict:
    return dict(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=2048, rms_norm_eps=1e-5, bos_token_id=bos, eos_token_id=eos, pad_token_id=-1,
        bias=True, kqvo_bias=True, intern_converted_llm=True, num_query_token=NUM_QUERY, max_length=768,
        hidden_act="silu", tie_word_embeddings=False,
        internlm_lora=dict(LORA), lora_cfg=dict(LORA),
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
    weights.update(_published_buffers(model.config))
    if quantized:
        weights = _gptq_layout(weights, model)
        fields.update(internlm_lora=None, lora_cfg=None)
        (directory / "quantize_config.json").write_text(json.dumps(
            {"bits": 4, "group_size": V1_GROUP_SIZE, "damp_percent": 0.01, "desc_act": False, "static_groups": False,
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


def _published_buffers(config) -> dict:
    """The persistent buffers the released checkpoints store (their ``pytorch_model.bin.index.json``)."""
    import torch

    d = config.head_dim
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    out = {f"internlm_model.model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq.clone()
           for i in range(config.num_hidden_layers)}
    out["Qformer.bert.embeddings.position_ids"] = torch.arange(512).expand(1, -1).contiguous()  # BertConfig() 512
    return out


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
        qweight, qzeros, scales, g_idx = quantize_gptq(w, V1_GROUP_SIZE)
        del out[f"{base}.weight"]
        out.update({f"{base}.qweight": qweight, f"{base}.qzeros": qzeros, f"{base}.scales": scales,
                    f"{base}.g_idx": g_idx})
    return out

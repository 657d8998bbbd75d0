"""XComposer v1 goldens from the released remote code (``InternLMXComposerForCausalLM``), nothing of vlmbatch's.

What runs is the folder the user names (the v1 model repositories' ``modeling_InternLM_XComposer.py``,
``modeling_vit.py``, ``modeling_perceive_sampler.py``, ``modeling_InternLM.py``, ``modeling_utils.py``,
``configuration_InternLM_XComposer.py``): its config class reads the tiny ``config.json``; its class is
built and the tiny checkpoint is loaded into it strictly (every parameter and persistent buffer);
``vis_processor`` + ``encode_img`` (EVA ViT, ``ln_vision``, the perceive sampler, ``internlm_proj``, the
flags) make the image embeddings, ``encode_text`` / ``wrap_prompt`` the prompt, ``internlm_model`` (the
converted InternLM with ``LoRALinear``) the logits. Greedy decoding is a loop over that forward (no KV
cache). The public code imports ``timm`` and ``einops``, which vlmbatch does not need: put them on
``PYTHONPATH`` for this script only.

Patches (each minimal; none changes a computation of the released modules):
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.golden_xcomposer.oracle import images
from tests.goldens.public import RecordingTokenizer, load_package, module

PACKAGE = "xcomposer_v1_public"
PATCHES = [
    "transformers 5 moved apply_chunking_to_forward / prune_linear_layer to transformers.pytorch_utils and removed "
    "find_pruneable_heads_and_indices; modeling_perceive_sampler imports them from transformers.modeling_utils: "
    "the first two are re-exported there, the third raises if called (head pruning, never used)",
    "create_eva_vit_g hard-codes ViT-g (1408 wide, 39 blocks): the release's own VisionTransformer with the same "
    "fixed arguments (patch 14, qkv_bias, no mean pooling, LayerNorm eps 1e-6, drop_path_rate 0.4) at the "
    "checkpoint's vision_config sizes; no fp16 conversion (CPU; the whole model runs in float32)",
    "init_qformer builds BertConfig() (BERT-base): BertConfig at the checkpoint's qformer_config sizes",
    "transformers 5's init_weights (called in the sampler's __init__, before post_init) reads "
    "all_tied_weights_keys, which post_init sets: an empty class default on the sampler's BertPreTrainedModel "
    "(the tied BERT LM head is deleted by the release right after)",
    "transformers 5 removed PreTrainedModel.get_head_mask: transformers 4's result for head_mask=None "
    "(one None per layer) on the sampler's BertPreTrainedModel",
    "config.device 'cuda' -> 'cpu' (stop-word tensors and internlm_model.to_empty)",
    "flag_image_start / flag_image_end hard-code width 4096: re-created at the checkpoint's hidden_size "
    "before loading",
    "vis_processor's Resize hard-codes 224: set to the checkpoint's image_size (bicubic, CLIP mean/std unchanged)",
    "4-bit: the release loads through AutoGPTQ (CUDA kernels, not installable here); its qweight/qzeros/scales/g_idx "
    "are dequantized with AutoGPTQ's formula (scale * (q - (zero + 1))) into the release's plain nn.Linear modules "
    "(lora_cfg null), in float32",
    "greedy decoding: a loop over internlm_model's forward (use_cache=False) instead of generate(); "
    "float32 throughout (the release autocasts to fp16 on GPU)",
    "the meta instruction of each case is set as the instance's meta_instruction before wrap_prompt "
    "(the release prepends it whenever history is None; cases with system '' are the VL card's layout)",
]
__doc__ += "".join(f"\n* {p}" for p in PATCHES) + "\n"

# Fields of the published config.json that decide the module layout (the tiny checkpoints must agree).
STRUCTURE = ("bias", "kqvo_bias", "intern_converted_llm", "num_query_token", "rms_norm_eps", "hidden_act",
             "tie_word_embeddings", "max_position_embeddings")
FILES = ("modeling_InternLM_XComposer.py", "modeling_vit.py", "modeling_perceive_sampler.py", "modeling_InternLM.py",
         "modeling_utils.py", "configuration_InternLM_XComposer.py")


def fingerprint(folder: Path) -> dict:
    """sha256 of the released modeling files used (so the golden names exactly which code made it)."""
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest()[:16] for f in FILES}


def check_structure(folder: Path, model_dir: Path) -> None:
    """The tiny checkpoint's layout fields equal the released ``config.json``'s (and ``quantize_config.json``'s)."""
    pub = json.loads((folder / "config.json").read_text())
    tiny = json.loads((model_dir / "config.json").read_text())
    bad = [f"{k}: published {pub.get(k)!r}, tiny {tiny.get(k)!r}" for k in STRUCTURE if pub.get(k) != tiny.get(k)]
    for key in ("internlm_lora", "lora_cfg"):
        p, t = pub.get(key), tiny.get(key)
        if (p is None) != (t is None) or (p and sorted(p["learn_param"]) != sorted(t["learn_param"])):
            bad.append(f"{key}: published {p!r}, tiny {t!r}")
    if (folder / "quantize_config.json").exists():
        pq = json.loads((folder / "quantize_config.json").read_text())
        tq = json.loads((model_dir / "quantize_config.json").read_text())
        bad += [f"quantize_config {k}: published {pq[k]!r}, tiny {tq.get(k)!r}"
                for k in ("bits", "group_size", "desc_act", "sym") if pq[k] != tq.get(k)]
    if bad:
        raise SystemExit(f"{model_dir} does not have the released layout ({folder}): " + "; ".join(bad))


def _compat_transformers() -> None:
    import transformers.modeling_utils as mu
    import transformers.pytorch_utils as pu

    for name in ("apply_chunking_to_forward", "prune_linear_layer"):
        if not hasattr(mu, name):
            setattr(mu, name, getattr(pu, name))
    if not hasattr(mu, "find_pruneable_heads_and_indices"):
        def find_pruneable_heads_and_indices(*args, **kwargs):
            raise NotImplementedError("head pruning is not used by the golden script")

        mu.find_pruneable_heads_and_indices = find_pruneable_heads_and_indices


def dequantize_gptq(qweight, qzeros, scales, g_idx):
    """AutoGPTQ 4-bit (v1 format, zeros stored minus one) -> float ``[out, in]`` weight."""
    import torch

    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    q = ((qweight[:, None, :] >> shifts[None, :, None]) & 15).reshape(-1, qweight.shape[1])  # [in, out]
    z = ((qzeros[:, :, None] >> shifts[None, None, :]) & 15).reshape(qzeros.shape[0], -1) + 1  # [groups, out]
    g = g_idx.long()
    return (scales.float()[g] * (q.float() - z.float()[g])).t().contiguous()


def build(folder: Path, model_dir: Path):
    """(released model holding the tiny checkpoint, its modeling module), float32, eval."""
    import sys

    import torch
    from safetensors.torch import load_file
    from torch import nn

    _compat_transformers()
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]  # a fresh import per folder (the 4-bit release is another folder)
    load_package(folder, PACKAGE)
    mx = module(PACKAGE, "modeling_InternLM_XComposer")
    raw = json.loads((model_dir / "config.json").read_text())
    v, q = raw["vision_config"], raw["qformer_config"]

    def create_eva_vit_g(img_size=224, drop_path_rate=0.4, use_checkpoint=False, precision="fp16"):
        from functools import partial

        return mx.VisionTransformer(
            img_size=v["image_size"], patch_size=v["patch_size"], use_mean_pooling=False, embed_dim=v["hidden_size"],
            depth=v["num_hidden_layers"], num_heads=v["num_attention_heads"],
            mlp_ratio=v["intermediate_size"] / v["hidden_size"], qkv_bias=True, drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), use_checkpoint=use_checkpoint)

    bert_config = module(PACKAGE, "modeling_perceive_sampler").BertConfig  # transformers' own

    def tiny_bert_config():
        return bert_config(hidden_size=q["hidden_size"], num_hidden_layers=q["num_hidden_layers"],
                           num_attention_heads=q["num_attention_heads"], intermediate_size=q["intermediate_size"])

    mx.create_eva_vit_g, mx.BertConfig = create_eva_vit_g, tiny_bert_config
    sampler = module(PACKAGE, "modeling_perceive_sampler").BertPreTrainedModel
    sampler.all_tied_weights_keys = {}
    if not hasattr(sampler, "get_head_mask"):
        def get_head_mask(self, head_mask, num_hidden_layers):
            if head_mask is not None:
                raise NotImplementedError("head masks are not used by the golden script")
            return [None] * num_hidden_layers

        sampler.get_head_mask = get_head_mask
    config = mx.InternLMXComposerConfig.from_pretrained(str(model_dir))
    config.device = "cpu"
    if not hasattr(config, "max_length"):  # transformers 5 keeps generation fields off configs
        config.max_length = raw.get("max_length", 768)
    torch.manual_seed(0)
    model = mx.InternLMXComposerForCausalLM(config)
    model.flag_image_start = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
    model.flag_image_end = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
    for t in model.vis_processor.transforms:
        if type(t).__name__ == "Resize":
            t.size = (v["image_size"], v["image_size"])
    weights = load_file(str(model_dir / "model.safetensors"))
    for key in [k for k in weights if k.endswith(".qweight")]:
        base = key[: -len(".qweight")]
        weights[f"{base}.weight"] = dequantize_gptq(weights.pop(key), weights.pop(f"{base}.qzeros"),
                                                    weights.pop(f"{base}.scales"), weights.pop(f"{base}.g_idx"))
    model = model.float()
    model.load_state_dict(weights, strict=True)
    return model.eval(), mx


class PublicOracle:
    """The released v1 model with one tiny checkpoint; :meth:`run` makes one golden record."""

    def __init__(self, folder: Path, model_dir: Path):
        from transformers import AutoTokenizer

        check_structure(folder, model_dir)
        self.model, self.mx = build(folder, model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<ImageHere>")

    def _prompt(self, case: dict):
        """(embeds [1, T, H], token ids with image positions as the placeholder, image-token counts)."""
        import torch

        m, pics = self.model, images()
        rec = RecordingTokenizer(self.tokenizer)
        m.tokenizer = rec
        parts, ids, counts = [], [], []
        for kind, value in case["segments"]:
            if kind == "image":
                e = m.encode_img(m.vis_processor(pics[value].convert("RGB")).unsqueeze(0))
                parts.append(e)
                counts.append(int(e.shape[1]))
                ids += [self.image_token_id] * e.shape[1]
            else:
                parts.append(m.encode_text(kind, add_special_tokens=bool(value)))
                ids += rec.calls[-1]
        embeds = torch.cat(parts, 1)
        if case["family"] != "share-captioner":  # the card layouts are the release's own wrap_prompt
            m.meta_instruction = case["system"]
            text = m.encode_text(case["instruction"])
            img = parts[1] if case["images"] else None
            wrapped = m.wrap_prompt(text, img)
            if not torch.equal(wrapped, embeds):
                raise SystemExit(f"{case['name']}: the case's segments are not the release's wrap_prompt")
        return embeds, ids, counts

    def run(self, case: dict, max_new: int, top: int) -> dict:
        import torch

        lm = self.model.internlm_model
        with torch.no_grad():
            embeds, ids, counts = self._prompt(case)
            x, greedy = embeds, []
            for _ in range(max_new):
                logits = lm(inputs_embeds=x, use_cache=False, return_dict=True).logits[0, -1]
                greedy.append(int(logits.argmax()))
                x = torch.cat([x, lm.model.embed_tokens(torch.tensor([[greedy[-1]]]))], 1)
            logits = lm(inputs_embeds=x[:, :-1], use_cache=False, return_dict=True).logits[0]
            lp = torch.log_softmax(logits.float(), -1)
        n = len(ids)
        prompt = [[i, ids[i], float(lp[i - 1, ids[i]])] for i in range(1, n) if ids[i] != self.image_token_id]
        steps = []
        for j in range(max_new):
            row = lp[n - 1 + j]
            vals, idx = row.topk(top)
            steps.append({"token": greedy[j], "logprob": float(row[greedy[j]]),
                          "top": [[int(t), float(v)] for t, v in zip(idx, vals, strict=True)]})
        keep = {k: case[k] for k in ("name", "family", "instruction", "system", "images")}
        return {**keep, "prompt_ids": ids, "image_tokens": counts, "greedy": greedy, "prompt_logprobs": prompt,
                "steps": steps}

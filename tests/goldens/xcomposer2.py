"""XComposer2 goldens from the checkpoints' public remote code (``InternLMXComposer2ForCausalLM``).

What runs is the public code: its config class reads the tiny ``config.json``; its
``interleav_wrap_chat`` (prompts with images) and ``build_inputs`` (text-only) build the prompt
exactly as ``model.chat()`` does; ``vis_processor``, the CLIP tower, ``vision_proj`` and, for 4KHD,
``HD_transform`` (``ixc_utils.py``) and the tiled tower ``CLIPVisionTower.forward(images, glb_GN,
sub_GN)`` (``build_mlp.py``) make the image embeddings; its ``forward`` (InternLM2 with Partial LoRA)
gives the logits. Greedy decoding is a loop over that ``forward`` (what ``generate(do_sample=False)``
computes, without the KV cache, whose legacy tuple form transformers 5 no longer passes).

Shims (construction only; none touches a computation):

* ``build_mlp.CLIPVisionModel``: the public code downloads ``openai/clip-vit-large-patch14-336`` at
  construction; here the tower is built from the tiny checkpoint's ``vision_config`` (its weights
  are then loaded from the checkpoint, as published), in transformers 4's module layout
  (``vision_model.*``, the checkpoints' names), which transformers 5 flattened.
* ``build_mlp.build_vision_projector``: the public one hard-codes 1024 / 4096 widths; the same
  ``Linear, GELU, Linear`` with the tiny widths.
* ``CLIPVisionTower.resize_pos``: interpolates 24x24 to 35x35 positions at construction, before the
  checkpoint's own position table replaces them; skipped for a tower that is not 24x24.
* 4KHD: ``plora_glb_GN`` / ``plora_sub_GN`` created at the tiny width (public: 4096) before loading.
* 4KHD ``wqkv``: when the folder's ``modeling_internlm2.py`` builds ``wqkv`` at rank 256 (the VL
  file), it is rebuilt with the public ``PLoRA`` class at the checkpoint's rank 8, alpha 16 (the 4KHD
  checkpoint's own ``modeling_internlm2.py``; lmdeploy's reader: ``w_qkv:8``, scale 2.0).

The 4KHD model class is not needed: its ``encode_img`` / ``img2emb`` are ``HD_transform`` ->
``vis_processor`` -> ``vit([image], plora_glb_GN, plora_sub_GN)`` -> ``vision_proj``, run here from
the folder's ``ixc_utils.py`` and ``build_mlp.py``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from tests.goldens.cases import CASES, MAX_NEW_TOKENS, TOP, Case, image
from tests.goldens.public import RecordingTokenizer, load_package, module

PACKAGE = "xcomposer2_public"
DEFAULT_HD_NUM = 25
SHIMS = [
    "build_mlp.CLIPVisionModel: transformers 4's layout (.vision_model.*) around transformers 5's flat class, "
    "built from the checkpoint's vision_config (no hub download)",
    "build_mlp.build_vision_projector: Linear-GELU-Linear at the checkpoint's widths (public: 1024/4096)",
    "build_mlp.CLIPVisionTower.resize_pos: skipped unless the tower has 24x24 positions (construction only)",
    "4KHD: plora_glb_GN / plora_sub_GN created at the checkpoint's width (public: 4096)",
    "4KHD: wqkv PLoRA rebuilt at rank 8 / alpha 16 when the folder's modeling_internlm2.py builds 256",
    "greedy decoding: a loop over the public forward (no KV cache) instead of generate()",
    "config.max_length set from config.json (transformers 5 no longer keeps generation fields on configs)",
    "4KHD without the 4KHD class: config.img_size set for the VL class's Resize, which the 4KHD path never uses",
]


def _install_shims(build_mlp, vision: dict, proj_in: int, hidden: int) -> None:
    import torch
    from torch import nn
    from transformers import CLIPVisionConfig, CLIPVisionModel

    class _TowerV4(nn.Module):
        """transformers 4's ``CLIPVisionModel`` layout (``.vision_model.*``), which the public code and the
        checkpoints' weight names use; transformers 5's class is that inner module itself."""

        def __init__(self, config):
            super().__init__()
            self.vision_model = CLIPVisionModel(config)
            self.config = config

        def forward(self, *args, **kwargs):
            return self.vision_model(*args, **kwargs)

        @property
        def dtype(self):
            return next(self.parameters()).dtype

        @property
        def device(self):
            return next(self.parameters()).device

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            return cls(CLIPVisionConfig(**vision))

    build_mlp.CLIPVisionModel = _TowerV4
    build_mlp.build_vision_projector = lambda *a, **k: nn.Sequential(
        nn.Linear(proj_in, hidden), nn.GELU(), nn.Linear(hidden, hidden))
    original = build_mlp.CLIPVisionTower.resize_pos

    def resize_pos(self):
        if self.vision_tower.vision_model.embeddings.position_embedding.weight.shape[0] == 24 * 24 + 1:
            return original(self)

    build_mlp.CLIPVisionTower.resize_pos = resize_pos
    torch.manual_seed(0)


def build(public: Path, model_dir: Path, variant: str):
    """(model, tokenizer, public modules) with the checkpoint's weights loaded strictly."""
    import torch
    from safetensors.torch import load_file
    from torch import nn
    from transformers import AutoTokenizer

    load_package(public, PACKAGE)
    build_mlp = module(PACKAGE, "build_mlp")
    raw = json.loads((model_dir / "config.json").read_text())
    vision = dict(raw["vision_config"], projection_dim=raw["vision_config"].get("projection_dim", 32))
    width = vision["hidden_size"] * (4 if variant == "4khd" else 1)
    _install_shims(build_mlp, vision, width, raw["hidden_size"])
    modeling = module(PACKAGE, "modeling_internlm_xcomposer2")
    config = module(PACKAGE, "configuration_internlm_xcomposer2").InternLMXcomposer2Config.from_pretrained(
        str(model_dir))
    if not hasattr(config, "max_length"):  # transformers 5 moved generation fields off the config
        config.max_length = raw.get("max_length", 4096)
    if not hasattr(config, "img_size"):  # the VL class builds a Resize from it; the 4KHD path never calls it
        config.img_size = vision["image_size"]
    model = modeling.InternLMXComposer2ForCausalLM(config).float().eval()
    weights = load_file(str(model_dir / "model.safetensors"))
    if variant == "4khd":
        model.plora_glb_GN = nn.Parameter(torch.zeros(1, 1, width))
        model.plora_sub_GN = nn.Parameter(torch.zeros(1, 1, 1, width))
        for i, layer in enumerate(model.model.layers):
            old = layer.attention.wqkv
            rank = weights[f"model.layers.{i}.attention.wqkv.Plora_A.weight"].shape[0]
            if old.Plora_A.out_features != rank:
                layer.attention.wqkv = build_mlp.PLoRA(old.in_features, old.out_features, bias=old.bias is not None,
                                                       lora_r=rank, lora_alpha=2 * rank, lora_len=576)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [m for m in missing if not m.endswith(("position_ids", "inv_freq"))]
    if missing or unexpected:
        raise SystemExit(f"checkpoint does not fit the public model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return model, tokenizer, modeling, build_mlp


def _meta_instruction(modeling) -> str:
    return inspect.signature(modeling.InternLMXComposer2ForCausalLM.chat).parameters["meta_instruction"].default


def _image_embeds(model, variant: str, pil, hd_num: int, public: Path):
    """One image's embeddings [1, N, hidden] the way the variant's public ``encode_img`` makes them."""
    import torch

    if variant == "vl":
        return model.encode_img(model.vis_processor(pil)[None])
    from torchvision import transforms

    hd = module(PACKAGE, "ixc_utils").HD_transform(pil, hd_num=hd_num)
    # The 4KHD class's vis_processor: ToTensor + CLIP Normalize, no resize (the VL class's resizes).
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(
        (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    with torch.no_grad():
        embeds, _ = model.vit([to_tensor(hd)[None]], model.plora_glb_GN, model.plora_sub_GN)
        return model.vision_proj(embeds), hd.size


def run_case(model, tokenizer, modeling, variant: str, case: Case, public: Path, image_token: str,
             default_hd_num: int) -> dict:
    """The golden record of ``case``: prompt layout, image-token counts, greedy tokens, log-probs."""
    import torch

    meta = _meta_instruction(modeling) if case.system is None else case.system
    query = image_token * len(case.images) + case.instruction
    rec = RecordingTokenizer(tokenizer)
    sizes = []
    with torch.no_grad():
        if not case.images:
            ids = model.build_inputs(rec, query, [], meta)["input_ids"]
            embeds = model.model.tok_embeddings(ids)
            mask = torch.zeros(embeds.shape[:2], dtype=torch.bool)
        else:
            per_image = []
            for name in case.images:
                out = _image_embeds(model, variant, image(name), case.hd_num or default_hd_num, public)
                if variant == "4khd":
                    out, size = out
                    sizes.append(list(size))
                per_image.append(out)
            # What chat() hands interleav_wrap_chat: a [n, tokens, hidden] batch (one image, or equal-sized VL ones).
            images = torch.cat(per_image)
            inputs, mask = model.interleav_wrap_chat(rec, query, images, [], meta)
            embeds = inputs["inputs_embeds"]
        layout = _layout(rec.calls, mask[0].tolist(), [e.shape[1] for e in per_image] if case.images else [])
        greedy, steps, prompt_lp = [], [], None
        x, m = embeds, mask
        for step in range(MAX_NEW_TOKENS):
            logits = model(inputs_embeds=x, im_mask=m, use_cache=False, return_dict=True).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            if step == 0:
                prompt_lp = _prompt_logprobs(layout, logp)
            nxt = int(logp[-1].argmax())
            top = torch.topk(logp[-1], TOP)
            steps.append({str(int(t)): float(v) for t, v in zip(top.indices, top.values, strict=True)})
            greedy.append(nxt)
            x = torch.cat([x, model.model.tok_embeddings(torch.tensor([[nxt]]))], dim=1)
            m = torch.cat([m, torch.zeros(1, 1, dtype=torch.bool)], dim=1)
    record = {"instruction": case.instruction, "images": list(case.images), "system": case.system,
              "hd_num": case.hd_num, "prompt": layout,
              "image_tokens": [item["image"] for item in layout if isinstance(item, dict)],
              "greedy": greedy, "step_logprobs": steps, "prompt_logprobs": prompt_lp}
    if sizes:
        record["hd_sizes"] = sizes
    return record


def _layout(calls: list[list[int]], mask: list[bool], counts: list[int]) -> list:
    """The prompt as text token ids with each image as ``{"image": n}`` (its n embeddings), in model order.

    ``calls``: the text parts' token ids as tokenised; ``counts``: each image's embedding count, which
    splits a run of adjacent images.
    """
    out: list = []
    parts, images = iter(calls), iter(counts)
    i = 0
    while i < len(mask):
        if mask[i]:
            n = next(images)
            out.append({"image": n})
            i += n
        else:
            part = next(parts)
            out.extend(part)
            i += len(part)
    return out


def _prompt_logprobs(layout: list, logp) -> list:
    """Per text position after the first, the log-prob of that token given the prompt before it (None at images)."""
    flat: list = []
    for item in layout:
        flat.extend([None] * item["image"] if isinstance(item, dict) else [item])
    return [None if tok is None else float(logp[pos - 1, tok]) for pos, tok in enumerate(flat) if pos > 0]


def make(public: Path, model_dir: Path, variant: str) -> dict:
    """The golden file's content for XComposer2 ``variant`` (``vl`` or ``4khd``)."""
    import torch
    import transformers

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer, modeling, _ = build(public, model_dir, variant)
    cfg_cls = module(PACKAGE, "configuration_internlm_xcomposer2").InternLMXcomposer2Config
    config = cfg_cls.from_pretrained(str(model_dir))
    # The 4KHD model's own default (encode_img(image, hd_num=25)); ixc_utils.HD_transform's bare default is 16.
    default_hd_num = DEFAULT_HD_NUM if variant == "4khd" else None
    cases = {c.name: run_case(model, tokenizer, modeling, variant, c, public, "<ImageHere>", default_hd_num)
             for c in CASES[f"xcomposer2-{variant}"]}
    return {
        "family": f"xcomposer2-{variant}",
        "public_code": "InternLMXComposer2ForCausalLM remote code (interleav_wrap_chat / build_inputs / forward)",
        "transformers": transformers.__version__, "torch": torch.__version__,
        "shims": SHIMS,
        "meta_instruction": _meta_instruction(modeling),
        "public_config": {"rms_norm_eps": config.rms_norm_eps, "rope_scaling": {
            k: config.rope_scaling[k] for k in ("type", "factor")} if config.rope_scaling else None},
        "hd_num_default": default_hd_num,
        "max_new_tokens": MAX_NEW_TOKENS,
        "cases": cases,
    }

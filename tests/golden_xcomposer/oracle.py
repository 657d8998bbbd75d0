"""The public-code oracle of :mod:`tests.golden_xcomposer.make_golden` and the cases it runs.

The cases are shared with the tests (``tests/unit/test_xcomposer.py``, ``tests/integration/test_xcomposer_parity.py``):
each names a family, its instruction, the system text and the images; the golden file holds what the
oracle computed for them, the tests rebuild the same prompts through the family registry.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.xcomposer2_cases import _images as images  # the same four test pictures as XComposer2's cases

EOH = "<TOKENS_UNUSED_0>"
LONG = "Describe the image in detail, the colors, the shapes and where each one is, left or right."
SHARE = "Analyze the image in a comprehensive and detailed manner."
META = (
    "meta instruction\nYou are an AI assistant whose name is 浦语.\n- 浦语 is a conversational language model "
    "that is developed by Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and "
    "harmless.\n- 浦语 can understand and communicate fluently in the language chosen by the user such as English "
    "and 中文.\nconversation\n"
)


def cases(variant: str) -> list[dict]:
    """The cases of ``variant``: family, instruction, system (None: the family's), image indices, upstream segments."""
    card = lambda text, image, system="": dict(  # noqa: E731 - a table of cases reads better inline
        segments=[[system + " <|User|>:", True], *([["image", image]] if image is not None else []), [text, False],
                  ["\n" + EOH + " <|Bot|>:", False]], instruction=text, system=system,
        images=[] if image is None else [image])
    if variant == "xcomposer-vl":
        return [dict(name="one-image", family="xcomposer-vl", **card("Describe the image.", 0)),
                dict(name="one-image-long", family="xcomposer-vl", **card(LONG, 1)),
                dict(name="text-only", family="xcomposer-vl", **card("What is in the sky?", None)),
                dict(name="chat-meta", family="xcomposer-7b", **card("What is shown?", 2, META))]
    if variant == "share-captioner":
        return [dict(name=f"image-{i}", family="share-captioner", instruction=SHARE, system="", images=[i],
                     segments=[["<|User|>:", True], ["image", i], [SHARE + EOH + "\n<|Bot|>:", False]])
                for i in range(3)]
    if variant == "xcomposer-7b-4bit":
        return [dict(name="chat-meta", family="xcomposer-7b-4bit", **card("What is shown?", 3, META)),
                dict(name="text-only", family="xcomposer-7b-4bit", **card("What is in the sky?", None, META))]
    raise KeyError(variant)


def check_public_segments(public: Path) -> None:
    """The released ``wrap_prompt`` builds its segments from the strings the cases use."""
    text = (Path(public) / "modeling_InternLM_XComposer.py").read_text()
    for needle in ("' <|User|>:'", "f'\\n{self.eoh} <|Bot|>:'"):
        if needle not in text:
            raise SystemExit(f"{public}: wrap_prompt no longer holds {needle}; update the cases")


class Oracle:
    """transformers' BLIP-2 tower + Q-Former + Llama(bias) holding one tiny v1 checkpoint."""

    def __init__(self, path: Path):
        import torch
        from safetensors.torch import load_file
        from transformers import (
            AutoTokenizer,
            Blip2QFormerConfig,
            Blip2QFormerModel,
            Blip2VisionConfig,
            Blip2VisionModel,
            LlamaConfig,
            LlamaForCausalLM,
        )

        torch.manual_seed(0)
        c = json.loads((Path(path) / "config.json").read_text())
        v, q = c["vision_config"], c["qformer_config"]
        self.size = int(v["image_size"])
        self.tok = AutoTokenizer.from_pretrained(str(path))
        w = load_file(str(Path(path) / "model.safetensors"))
        dims = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "layer_norm_eps")
        self.vit = Blip2VisionModel(Blip2VisionConfig(
            **{k: v[k] for k in dims}, patch_size=v["patch_size"], image_size=v["image_size"], hidden_act="gelu",
            qkv_bias=True)).eval()
        self.qformer = Blip2QFormerModel(Blip2QFormerConfig(
            **{k: q[k] for k in dims}, hidden_act="gelu", cross_attention_frequency=q["cross_attention_freq"],
            encoder_hidden_size=v["hidden_size"])).eval()
        self.lm = LlamaForCausalLM(LlamaConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
            num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
            num_key_value_heads=c["num_attention_heads"], rms_norm_eps=c["rms_norm_eps"],
            attention_bias=c["kqvo_bias"],
            max_position_embeddings=c["max_position_embeddings"], tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})).eval()
        self._load(w, c)
        self.image_token_id = self.tok.convert_tokens_to_ids("<ImageHere>")

    def _load(self, w: dict, c: dict) -> None:
        import torch

        def take(prefix):
            return {k[len(prefix):]: w.pop(k) for k in list(w) if k.startswith(prefix)}

        vit = {}
        for k, t in take("visual_encoder.").items():
            k = (k.replace("cls_token", "embeddings.class_embedding")
                 .replace("pos_embed", "embeddings.position_embedding")
                 .replace("patch_embed.proj", "embeddings.patch_embedding").replace("blocks.", "encoder.layers.")
                 .replace(".norm1.", ".layer_norm1.").replace(".norm2.", ".layer_norm2.")
                 .replace(".attn.proj.", ".self_attn.projection.").replace(".attn.", ".self_attn."))
            vit[k] = t
        # transformers' BLIP-2 tower holds one qkv bias; EVA's key has none (timm: cat(q_bias, 0, v_bias)).
        for k in [k for k in vit if k.endswith(".q_bias")]:
            base = k[: -len(".q_bias")]
            q_bias, v_bias = vit.pop(k), vit.pop(f"{base}.v_bias")
            vit[f"{base}.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(v_bias), v_bias])
        self._strict(self.vit, vit, allow_missing=("post_layernorm",))
        qf = {}
        for k, t in take("Qformer.bert.").items():
            k = k.replace("embeddings.LayerNorm", "layernorm").replace(".self.", ".attention.")
            qf[k] = t
        # The text FFN (``intermediate`` / ``output``) is removed upstream; queries never use it.
        self._strict(self.qformer, qf, allow_missing=(".intermediate.", ".output.dense", ".output.LayerNorm"))
        lm = take("internlm_model.")
        lora = c.get("internlm_lora")
        for key in [k for k in lm if k.endswith(".qweight")]:
            base = key[: -len(".qweight")]
            lm[f"{base}.weight"] = _unpack_gptq(lm.pop(key), lm.pop(f"{base}.scales"), lm.pop(f"{base}.g_idx"))
            lm.pop(f"{base}.qzeros")
        for key in [k for k in lm if k.endswith(".lora_A.weight")]:
            base = key[: -len(".lora_A.weight")]
            a, b = lm.pop(key), lm.pop(f"{base}.lora_B.weight")
            lm[f"{base}.weight"] = lm[f"{base}.weight"] + lora["lora_alpha"] / lora["lora_r"] * (b @ a)
        self._strict(self.lm, lm)
        self.ln_vision = torch.nn.LayerNorm(c["vision_config"]["hidden_size"])
        self.ln_vision.load_state_dict({"weight": w.pop("ln_vision.weight"), "bias": w.pop("ln_vision.bias")})
        self.query_tokens = w.pop("query_tokens")
        self.proj = torch.nn.Linear(*reversed(w["internlm_proj.weight"].shape))
        self.proj.load_state_dict({"weight": w.pop("internlm_proj.weight"), "bias": w.pop("internlm_proj.bias")})
        self.flags = w.pop("flag_image_start"), w.pop("flag_image_end")
        if w:
            raise SystemExit(f"weights no oracle module holds: {sorted(w)[:8]}")

    @staticmethod
    def _strict(module, weights: dict, allow_missing: tuple[str, ...] = ()) -> None:
        missing, unexpected = module.load_state_dict(weights, strict=False)
        missing = [m for m in missing if not any(a in m for a in allow_missing)]
        if missing or unexpected:
            raise SystemExit(f"{type(module).__name__}: missing {missing[:6]}, unexpected {unexpected[:6]}")

    def encode_img(self, image):
        """``encode_img``: the tower, ``ln_vision``, the sampler, ``internlm_proj``, the flags."""
        import numpy as np
        import torch
        from PIL import Image

        im = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        arr = np.asarray(im, dtype=np.float32) / 255.0
        arr = (arr - np.array([0.48145466, 0.4578275, 0.40821073], np.float32)) / np.array(
            [0.26862954, 0.26130258, 0.27577711], np.float32)
        pixels = torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]
        feats = self.ln_vision(self.vit(pixel_values=pixels, output_hidden_states=True).hidden_states[-1])
        out = self.qformer(query_embeds=self.query_tokens, encoder_hidden_states=feats,
                           encoder_attention_mask=torch.ones(feats.shape[:2], dtype=torch.long))
        x = self.proj(out.last_hidden_state)
        return torch.cat([self.flags[0], x, self.flags[1]], 1)[0]

    def run(self, case: dict, max_new: int, top: int) -> dict:
        import torch

        pics = images()
        ids, parts, n_image = [], [], []
        with torch.no_grad():
            for kind, value in case["segments"]:
                if kind == "image":
                    e = self.encode_img(pics[value])
                    parts.append(e)
                    ids += [self.image_token_id] * e.shape[0]
                    n_image.append(int(e.shape[0]))
                    continue
                seg = self.tok(kind, add_special_tokens=bool(value))["input_ids"]
                ids += seg
                parts.append(self.lm.model.embed_tokens(torch.tensor(seg)))
            embeds = torch.cat(parts)[None]
            self.lm.generation_config.eos_token_id = None
            gen = self.lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                   max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False, pad_token_id=0)
            greedy = gen[0, -max_new:].tolist()
            full = torch.cat([embeds[0], self.lm.model.embed_tokens(torch.tensor(greedy[:-1]))])[None]
            lp = torch.log_softmax(self.lm(inputs_embeds=full).logits[0].float(), -1)
        n = len(ids)
        prompt = [[i, ids[i], float(lp[i - 1, ids[i]])] for i in range(1, n) if ids[i] != self.image_token_id]
        steps = []
        for j in range(max_new):
            row = lp[n - 1 + j]
            vals, idx = row.topk(top)
            steps.append({"token": greedy[j], "logprob": float(row[greedy[j]]),
                          "top": [[int(t), float(v)] for t, v in zip(idx, vals, strict=True)]})
        keep = {k: case[k] for k in ("name", "family", "instruction", "system", "images")}
        return {**keep, "prompt_ids": ids, "image_tokens": n_image, "greedy": greedy, "prompt_logprobs": prompt,
                "steps": steps}


def _unpack_gptq(qweight, scales, g_idx):
    """AutoGPTQ (symmetric 4-bit): 8 values per int32 along the input dim, ``w = (q - 8) * scale``."""
    import torch

    q = torch.stack([(qweight >> (4 * i)) & 15 for i in range(8)], 1).reshape(-1, qweight.shape[1])
    return ((q.float() - 8) * scales.float()[g_idx.long()]).t().contiguous()

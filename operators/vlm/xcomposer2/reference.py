"""Plain PyTorch reference of InternLM-XComposer2 (VL and 4KHD): the oracle for the vLLM plugin.

Written from the public description of the model (paper arXiv:2401.16420 and the facts of the
published modeling code), one sequence at a time, no KV cache, float32 by default:

* InternLM2 decoder: RMSNorm, rotary attention with grouped KV heads and a fused ``wqkv`` whose
  rows are laid out per KV head as ``[q_0 .. q_{g-1}, k, v]``, SwiGLU feed-forward (w1 gate,
  w3 up, w2 down).
* Partial LoRA on ``wqkv``, ``wo``, ``w1``, ``w2``, ``w3``: ``y = W x + (alpha / r) * B A x`` only at
  positions whose image mask is set (the image embeddings), ``y = W x`` elsewhere; rank and alpha
  per projection from ``InternLMXComposer2Config.lora_for`` (4KHD's ``wqkv``: 8 / 16).
* Vision: CLIP ViT-L/14 (transformers ``CLIPVisionModel``), the last layer's hidden states
  without the CLS token and without the post layer norm, then ``vision_proj`` (Linear, GELU,
  Linear). VL: one 490x490 view. 4KHD: a bicubic 336x336 global view plus ``h x w`` crops of
  336, each crop's 24x24 patch features merged 2x2 into 12x12 tokens of 4x width, a newline
  token (``plora_sub_GN``) after every row, the global view, then one separator
  (``plora_glb_GN``), then the sub-image grid.

Weights load from the published names (``model.layers.N.attention.wqkv.Plora_A.weight``,
``vit.vision_tower.vision_model.*``, ``vision_proj.0/2``, ``plora_glb_GN``, ``plora_sub_GN``,
``output.weight``); loading is strict, so a name or shape the checkpoint layout does not have
fails here.

Dynamic NTK RoPE is not modelled: the published configs use a factor of 1 (plain RoPE).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from operators.vlm.xcomposer2.config import InternLMXComposer2Config
from operators.vlm.xcomposer2.hd import hd_grid, normalize, prepare_4khd, prepare_vl

_VIT_PUBLISHED = "vit.vision_tower.vision_model."
_VIT_LOCAL = "vit."


class PLoRALinear(nn.Module):
    """A linear layer plus a low-rank update applied only where ``im_mask`` is set."""

    def __init__(self, in_features: int, out_features: int, r: int, alpha: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.Plora_A = nn.Linear(in_features, r, bias=False)
        self.Plora_B = nn.Linear(r, out_features, bias=False)
        self.scaling = alpha / r

    def forward(self, x: torch.Tensor, im_mask: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if bool(im_mask.any()):
            out = out.clone()
            out[im_mask] = out[im_mask] + self.Plora_B(self.Plora_A(x[im_mask])) * self.scaling
        return out


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, c: InternLMXComposer2Config, variant: str):
        super().__init__()
        self.h, self.kv, self.d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.theta = c.rope_parameters["rope_theta"]
        self.wqkv = PLoRALinear(c.hidden_size, (self.h + 2 * self.kv) * self.d, *c.lora_for("wqkv", variant), c.bias)
        self.wo = PLoRALinear(self.h * self.d, c.hidden_size, *c.lora_for("wo", variant), c.bias)

    def forward(self, x: torch.Tensor, im_mask: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        g = self.h // self.kv
        qkv = self.wqkv(x, im_mask).view(t, self.kv, g + 2, self.d)
        q = qkv[:, :, :g].reshape(t, self.h, self.d)
        k, v = qkv[:, :, g], qkv[:, :, g + 1]
        inv = 1.0 / (self.theta ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d))
        ang = torch.outer(torch.arange(t, dtype=torch.float32), inv)
        emb = torch.cat((ang, ang), -1)[:, None]
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
        return self.wo(out.transpose(0, 1).reshape(t, self.h * self.d), im_mask)


class FeedForward(nn.Module):
    def __init__(self, c: InternLMXComposer2Config):
        super().__init__()
        r, a = c.lora_r, c.lora_alpha
        self.w1 = PLoRALinear(c.hidden_size, c.intermediate_size, r, a)
        self.w3 = PLoRALinear(c.hidden_size, c.intermediate_size, r, a)
        self.w2 = PLoRALinear(c.intermediate_size, c.hidden_size, r, a)

    def forward(self, x: torch.Tensor, im_mask: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x, im_mask)) * self.w3(x, im_mask), im_mask)


class DecoderLayer(nn.Module):
    def __init__(self, c: InternLMXComposer2Config, variant: str):
        super().__init__()
        self.attention = Attention(c, variant)
        self.feed_forward = FeedForward(c)
        self.attention_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.ffn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x: torch.Tensor, im_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), im_mask)
        return x + self.feed_forward(self.ffn_norm(x), im_mask)


class InternLM2(nn.Module):
    def __init__(self, c: InternLMXComposer2Config, variant: str):
        super().__init__()
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c, variant) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class XComposer2Reference(nn.Module):
    """The whole model; ``variant`` is ``"vl"`` or ``"4khd"``."""

    def __init__(self, config: InternLMXComposer2Config, variant: str):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.config, self.variant = config, variant
        clip = config.clip_config(variant)
        self.image_size, self.patch = int(clip["image_size"]), int(clip["patch_size"])
        self.model = InternLM2(config, variant)
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.vit = CLIPVisionModel(CLIPVisionConfig(**clip))
        width = clip["hidden_size"] * (4 if variant == "4khd" else 1)
        self.vision_proj = nn.Sequential(nn.Linear(width, config.hidden_size), nn.GELU(),
                                         nn.Linear(config.hidden_size, config.hidden_size))
        if variant == "4khd":
            self.plora_glb_GN = nn.Parameter(torch.zeros(1, 1, width))
            self.plora_sub_GN = nn.Parameter(torch.zeros(1, 1, 1, width))

    # -- weights under the published names ------------------------------------------------------
    def published_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under the names and shapes of the published checkpoints."""
        out = {}
        for name, tensor in self.state_dict().items():
            if name.endswith("position_ids"):
                continue
            if name.startswith(_VIT_LOCAL):
                name = _VIT_PUBLISHED + name[len(_VIT_LOCAL):]
            out[name] = tensor
        return out

    def load_published(self, weights: dict[str, torch.Tensor]) -> None:
        """Load ``weights`` named as published; every weight of the model must be there, nothing else.

        GPTQ tensors (the 4-bit release's ``<module>.linear.qweight`` ...) are dequantized first.
        """
        from operators.vlm.gptq import dequantized

        local = {}
        for name, tensor in dequantized(weights).items():
            if name.endswith("position_ids") or name.endswith("rotary_emb.inv_freq"):
                continue
            if name.startswith(_VIT_PUBLISHED):
                name = _VIT_LOCAL + name[len(_VIT_PUBLISHED):]
            local[name] = tensor
        missing, unexpected = self.load_state_dict(local, strict=False)
        missing = [m for m in missing if not m.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"checkpoint layout mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> XComposer2Reference:
        from safetensors.torch import load_file

        from operators.vlm.xcomposer2.config import detect_variant

        path = Path(path)
        config = InternLMXComposer2Config(**json.loads((path / "config.json").read_text()))
        model = cls(config, config.xcomposer_variant or detect_variant(path))
        weights: dict[str, torch.Tensor] = {}
        for file in sorted(path.glob("*.safetensors")):
            weights.update(load_file(str(file)))
        model.load_published(weights)
        return model.to(dtype).eval()

    # -- vision ---------------------------------------------------------------------------------
    def _vit(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vit(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-1][:, 1:]

    def prepare(self, image, hd_num: int | None = None):
        """The CPU step: the PIL image the vision tower's preprocessing starts from.

        4KHD: the HD transform at ``hd_num`` (default the config's), applied to every raw image.
        """
        if self.variant == "vl":
            return prepare_vl(image, self.image_size)
        return prepare_4khd(image, hd_num or self.config.effective_hd_num(), self.image_size)

    @torch.no_grad()
    def encode_image(self, image, hd_num: int | None = None) -> torch.Tensor:
        """``[tokens, hidden]`` language-model embeddings of one PIL image (see :meth:`prepare`)."""
        dtype = self.output.weight.dtype
        pixels = torch.from_numpy(normalize(self.prepare(image, hd_num)))[None].to(dtype)
        if self.variant == "vl":
            return self.vision_proj(self._vit(pixels))[0]
        crop = self.image_size
        rows, cols = hd_grid(pixels.shape[3], pixels.shape[2], crop)
        glb = F.interpolate(pixels.float(), size=(crop, crop), mode="bicubic").to(dtype)
        crops = [pixels[:, :, r * crop:(r + 1) * crop, c * crop:(c + 1) * crop]
                 for r in range(rows) for c in range(cols)]
        feats = self._vit(torch.cat([glb, *crops]))
        side = crop // self.patch
        half = side // 2
        nl = self.plora_sub_GN.reshape(-1)

        def merged(f: torch.Tensor) -> torch.Tensor:
            # 2x2 neighbouring patches -> one token of 4x width, row-major over the half grid.
            g = f.reshape(side, side, -1)
            out = torch.empty(half, half, 4 * g.shape[-1], dtype=f.dtype)
            for i in range(half):
                for j in range(half):
                    a, b = g[2 * i], g[2 * i + 1]
                    out[i, j] = torch.cat([a[2 * j], a[2 * j + 1], b[2 * j], b[2 * j + 1]])
            return out

        tokens = []
        glb_grid = merged(feats[0])
        for i in range(half):
            tokens.extend(glb_grid[i])
            tokens.append(nl)
        tokens.append(self.plora_glb_GN.reshape(-1))
        grids = [merged(feats[1 + k]) for k in range(rows * cols)]
        for r in range(rows):
            for i in range(half):
                for c in range(cols):
                    tokens.extend(grids[r * cols + c][i])
                tokens.append(nl)
        return self.vision_proj(torch.stack(tokens))

    # -- language model -------------------------------------------------------------------------
    @torch.no_grad()
    def logits_from_embeds(self, embeds: torch.Tensor, im_mask: torch.Tensor) -> torch.Tensor:
        x = embeds
        for layer in self.model.layers:
            x = layer(x, im_mask)
        return self.output(self.model.norm(x)).float()

    @torch.no_grad()
    def embed(self, input_ids: list[int], image_embeds: list[torch.Tensor], image_token_id: int):
        """Embeddings and image mask of ``input_ids`` whose image-token runs hold ``image_embeds`` in order."""
        ids = torch.tensor(input_ids)
        x = self.model.tok_embeddings(ids.clamp(max=self.config.vocab_size - 1))
        mask = ids == image_token_id
        if image_embeds:
            flat = torch.cat(image_embeds).to(x.dtype)
            if flat.shape[0] != int(mask.sum()):
                raise ValueError(f"{int(mask.sum())} image positions for {flat.shape[0]} image embeddings")
            x = x.clone()
            x[mask] = flat
        return x, mask

    def expand(self, input_ids: list[int], image_token_id: int, counts: list[int]) -> list[int]:
        """``input_ids`` with the k-th image token repeated ``counts[k]`` times (the placeholder expansion)."""
        out, k = [], 0
        for t in input_ids:
            if t == image_token_id:
                out.extend([t] * counts[k])
                k += 1
            else:
                out.append(t)
        return out

    @torch.no_grad()
    def greedy(self, prompt_ids: list[int], images: list, image_token_id: int, max_new_tokens: int,
               stop_ids: tuple[int, ...] = ()) -> tuple[list[int], list[int], torch.Tensor]:
        """Greedy decoding. Returns (expanded prompt ids, generated ids, log-probs ``[prompt+gen, vocab]``)."""
        embeds = [self.encode_image(im) for im in images]
        ids = self.expand(prompt_ids, image_token_id, [e.shape[0] for e in embeds])
        x, mask = self.embed(ids, embeds, image_token_id)
        generated: list[int] = []
        logits = None
        for _ in range(max_new_tokens):
            logits = self.logits_from_embeds(x, mask)
            nxt = int(logits[-1].argmax())
            generated.append(nxt)
            if nxt in stop_ids:
                break
            x = torch.cat([x, self.model.tok_embeddings(torch.tensor([nxt])).to(x.dtype)])
            mask = torch.cat([mask, torch.tensor([False])])
        return ids, generated, torch.log_softmax(logits, -1)

"""InternVL-C (InternVL-14B-224px style): InternViT-6B + attention pooling for images, QLLaMA for texts.

A PyTorch implementation of the published checkpoints' remote-code layout, written from the facts
of OpenGVLab's public code (``clip_benchmark/.../internvl_huggingface``: ``modeling_intern_vit.py``,
``modeling_internvl.py`` ``InternVL_C``, ``modeling_qllama.py``), so no remote code runs and vLLM,
which does not serve the model, is not needed. It loads the published ``config.json`` and weight
names unchanged; only the parts InternVL-C uses are built (the QLLaMA cross-attention, query tokens,
``clip_projector2``, ``itm_head`` and ``lm_head`` of InternVL-G are left in the file).

- Image: bicubic resize to the square input size, ImageNet mean/std (the public ``retrieval``
  transform); InternViT (class token, RMSNorm, q/k RMSNorm over all heads, layer scale, no final
  norm); the full token sequence pooled by ``clip_projector`` (LayerNorms, one cross-attention
  whose query is the token mean).
- Text: ``"summarize:" + text`` with BOS and EOS, at most 80 tokens; QLLaMA's decoder layers
  (causal, rotary with base 10000, RMSNorm, SiLU MLP) and final norm; the hidden state at the
  last real token times ``text_projection``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

# InternViT's and QLLaMA's RMSNorm are the one XComposer2's reference has: float32 statistics, the input's dtype out.
from operators.vlm.xcomposer2.reference import RMSNorm

if TYPE_CHECKING:
    import numpy as np

TEXT_PREFIX = "summarize:"
MAX_TEXT_TOKENS = 80
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VisionEmbeddings(nn.Module):
    def __init__(self, vc: dict):
        super().__init__()
        d, p = vc["hidden_size"], vc["patch_size"]
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, d))
        self.patch_embedding = nn.Conv2d(3, d, kernel_size=p, stride=p)
        self.position_embedding = nn.Parameter(torch.zeros(1, (vc["image_size"] // p) ** 2 + 1, d))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixels.shape[0], 1, -1).to(patches.dtype)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.to(patches.dtype)


class VisionAttention(nn.Module):
    def __init__(self, vc: dict):
        super().__init__()
        d = vc["hidden_size"]
        self.heads = vc["num_attention_heads"]
        self.qkv = nn.Linear(d, 3 * d, bias=vc.get("qkv_bias", False))
        self.qk_normalization = vc.get("qk_normalization", True)
        if self.qk_normalization:
            self.q_norm = RMSNorm(d, vc.get("layer_norm_eps", 1e-6))
            self.k_norm = RMSNorm(d, vc.get("layer_norm_eps", 1e-6))
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        if self.qk_normalization:
            # Normalised over all heads at once (the published q_norm / k_norm have the full width).
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class VisionMLP(nn.Module):
    def __init__(self, vc: dict):
        super().__init__()
        from transformers.activations import ACT2FN

        self.act = ACT2FN[vc.get("hidden_act", "gelu")]
        self.fc1 = nn.Linear(vc["hidden_size"], vc["intermediate_size"])
        self.fc2 = nn.Linear(vc["intermediate_size"], vc["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nn.Module):
    def __init__(self, vc: dict):
        super().__init__()
        d, eps = vc["hidden_size"], vc.get("layer_norm_eps", 1e-6)
        self.attn, self.mlp = VisionAttention(vc), VisionMLP(vc)
        self.norm1, self.norm2 = RMSNorm(d, eps), RMSNorm(d, eps)
        self.ls1 = nn.Parameter(torch.ones(d))
        self.ls2 = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.mlp(self.norm2(x)) * self.ls2


class VisionModel(nn.Module):
    def __init__(self, vc: dict):
        super().__init__()
        self.embeddings = VisionEmbeddings(vc)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(VisionLayer(vc) for _ in range(vc["num_hidden_layers"]))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return x


class AttentionPooling(nn.Module):
    """``clip_projector``: LayerNorms, then one cross-attention from the token mean to all tokens."""

    def __init__(self, dim: int, heads: int, out_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1_q, self.norm1_k, self.norm1_v = (nn.LayerNorm(dim, eps=1e-5) for _ in range(3))
        self.cross_attn = nn.Module()
        for name in ("q", "k", "v"):
            setattr(self.cross_attn, name, nn.Linear(dim, dim, bias=False))
            setattr(self.cross_attn, f"{name}_bias", nn.Parameter(torch.zeros(dim)))
        self.cross_attn.proj = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, d = self.cross_attn, x.shape[0], x.shape[2]
        q = F.linear(self.norm1_q(x.mean(1, keepdim=True)), a.q.weight, a.q_bias)
        k = F.linear(self.norm1_k(x), a.k.weight, a.k_bias)
        v = F.linear(self.norm1_v(x), a.v.weight, a.v_bias)
        q, k, v = (t.reshape(b, -1, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return a.proj(out.transpose(1, 2).reshape(b, 1, d)).squeeze(1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class TextAttention(nn.Module):
    def __init__(self, tc: dict):
        super().__init__()
        d = tc["hidden_size"]
        self.heads = tc["num_attention_heads"]
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, d))


class TextLayer(nn.Module):
    def __init__(self, tc: dict):
        super().__init__()
        from transformers.activations import ACT2FN

        d, eps = tc["hidden_size"], tc.get("rms_norm_eps", 1e-6)
        self.self_attn = TextAttention(tc)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(d, tc["intermediate_size"], bias=False)
        self.mlp.up_proj = nn.Linear(d, tc["intermediate_size"], bias=False)
        self.mlp.down_proj = nn.Linear(tc["intermediate_size"], d, bias=False)
        self.act = ACT2FN[tc.get("hidden_act", "silu")]
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(d, eps), RMSNorm(d, eps)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        h = self.post_attention_layernorm(x)
        return x + self.mlp.down_proj(self.act(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))


class QLLaMAText(nn.Module):
    """``qllama.model`` on the text-only path (no query tokens, no cross-attention)."""

    def __init__(self, tc: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(tc["vocab_size"], tc["hidden_size"])
        self.layers = nn.ModuleList(TextLayer(tc) for _ in range(tc["num_hidden_layers"]))
        self.norm = RMSNorm(tc["hidden_size"], tc.get("rms_norm_eps", 1e-6))
        self.head_dim = tc["hidden_size"] // tc["num_attention_heads"]

    def forward(self, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        # The published rotary embedding is fixed at base 10000 whatever the config's rope_theta says.
        inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, device=ids.device).float() / self.head_dim))
        freqs = torch.outer(torch.arange(n, device=ids.device).float(), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        x = self.embed_tokens(ids)
        cos, sin = emb.cos().to(x.dtype)[None, None], emb.sin().to(x.dtype)[None, None]
        causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
        mask = causal[None, None] & real[:, None, None, :]
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


class InternVLC(nn.Module):
    """The InternVL-C towers under the published parameter names."""

    def __init__(self, config: dict):
        super().__init__()
        vc, tc = config["vision_config"], config["qllama_config"]
        self.vision_model = VisionModel(vc)
        self.clip_projector = AttentionPooling(vc["hidden_size"], config.get("attn_pool_num_heads", 16),
                                               config.get("clip_embed_dim", 768))
        self.qllama = nn.Module()
        self.qllama.model = QLLaMAText(tc)
        self.text_projection = nn.Parameter(torch.zeros(tc["hidden_size"], config.get("clip_embed_dim", 768)))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip_projector(self.vision_model(pixels))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        real = ids > 0
        hidden = self.qllama.model(ids, real)
        last = hidden[torch.arange(ids.shape[0], device=ids.device), real.sum(1) - 1]
        return last @ self.text_projection


def read_weights(directory: Path, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The tensors named in ``wanted`` from a checkpoint directory (safetensors shards or .bin files)."""
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    out: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as st:
                out.update({k: st.get_tensor(k) for k in st.keys() if k in wanted})  # noqa: SIM118 - not a dict
        else:
            out.update({k: v for k, v in torch.load(f, map_location="cpu", weights_only=True).items() if k in wanted})
    return out


def load_internvl_c(model_dir: str, device=None, dtype=None) -> tuple[InternVLC, dict]:
    """``(model, config)`` of a published-layout checkpoint directory.

    Raises:
        ValueError: no ``config.json`` of model_type ``internvl``, or weights the model needs are missing.
    """
    directory = Path(model_dir).expanduser()
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{model_dir}: no readable config.json ({exc})") from None
    if config.get("model_type") != "internvl" or "qllama_config" not in config:
        raise ValueError(f"{model_dir}: not an InternVL-C checkpoint (model_type internvl with a qllama_config)")
    if config.get("force_image_size") not in (None, config["vision_config"]["image_size"]):
        raise ValueError(f"{model_dir}: force_image_size (resized position embeddings) is not supported")
    model = InternVLC(config)
    names = set(model.state_dict())
    weights = read_weights(directory, names)
    missing = sorted(names - set(weights))
    if missing:
        raise ValueError(f"{model_dir}: {len(missing)} weights missing, e.g. {missing[0]}")
    model.load_state_dict(weights)
    return model.to(device or "cpu", dtype or torch.float32).eval(), config


class InternVLCEmbedder:
    """:class:`operators.embed.models.Embedder` of an InternVL-C checkpoint."""

    embeds_text = True

    def __init__(self, model_id: str, *, device=None, dtype=None):
        from transformers import AutoTokenizer

        self.model, config = load_internvl_c(model_id, device, dtype)
        self.device, self.dtype = device or torch.device("cpu"), dtype or torch.float32
        self.size = config["vision_config"]["image_size"]
        self.dim = int(config.get("clip_embed_dim", 768))
        self.tokenizer = AutoTokenizer.from_pretrained(str(Path(model_id).expanduser()))
        self.name = f"internvl-c:{model_id}"

    def pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        """The public retrieval transform: bicubic resize to size x size, to [0, 1], ImageNet mean/std."""
        import numpy as np
        from PIL import Image

        batch = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im), "RGB").resize(
            (self.size, self.size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0 for im in images])
        batch = (batch - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
        return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()

    def token_ids(self, texts: list[str]) -> torch.Tensor:
        """BOS, the tokens of ``"summarize:" + text`` (cut to fit), EOS; right-padded with 0, the published pad."""
        tok = self.tokenizer
        rows = [[tok.bos_token_id, *tok(TEXT_PREFIX + t, add_special_tokens=False)["input_ids"][: MAX_TEXT_TOKENS - 2],
                 tok.eos_token_id] for t in texts]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)

    def images(self, images: list[np.ndarray]) -> np.ndarray:
        from operators.embed.models import normalise

        with torch.inference_mode():
            out = self.model.encode_image(self.pixels(images).to(self.device, self.dtype))
        return normalise(out.float().cpu().numpy())

    def texts(self, texts: list[str]) -> np.ndarray:
        from operators.embed.models import normalise

        with torch.inference_mode():
            out = self.model.encode_text(self.token_ids(texts).to(self.device))
        return normalise(out.float().cpu().numpy())

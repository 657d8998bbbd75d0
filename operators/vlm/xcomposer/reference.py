"""Plain PyTorch reference of InternLM-XComposer v1 (XComposer-7B, -VL-7B, Share-Captioner): the parity oracle.

Written from the facts of the published modeling code (``modeling_InternLM_XComposer.py`` ``encode_img``,
``modeling_vit.py`` ``create_eva_vit_g``, ``modeling_perceive_sampler.py``, ``modeling_InternLM.py``),
float32 by default, under the published weight names (loading is strict):

* ``visual_encoder.*`` EVA ViT-g: CLS + learned positions, pre-norm blocks, fused ``qkv`` without bias
  plus ``q_bias`` / ``v_bias`` (k has none), exact GELU; ``ln_vision`` on every output token.
* ``Qformer.bert.*`` the perceive sampler: ``query_tokens`` -> ``embeddings.LayerNorm`` -> BERT layers
  (post-norm self-attention, cross-attention to the image on every ``cross_attention_freq``-th layer,
  the query FFN ``intermediate_query`` / ``output_query``); ``internlm_proj``; ``flag_image_start`` /
  ``flag_image_end`` around the projected queries.
* ``internlm_model.*`` InternLM-7B: RMSNorm, rotary attention (NeoX halves, base 10000) with q/k/v/o biases
  (``kqvo_bias``), SwiGLU; LoRA ``y += (alpha / r) B A x`` on the ``learn_param`` modules for every token
  (XComposer v1's LoRA is not partial). A GPTQ checkpoint's linears (``qweight``, ``qzeros``, ``scales``,
  ``g_idx``) are dequantized here (symmetric 4-bit: ``(q - 8) * scale``).

The language model takes a batch of equal-length rows and an optional KV cache, so the generate loop in
:mod:`operators.vlm.xcomposer.generate` runs beams the way Hugging Face ``generate`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from operators.vlm.xcomposer.config import InternLMXComposerConfig
from operators.vlm.xcomposer2.reference import RMSNorm, XComposer2Reference


class LinearLoRA(nn.Linear):
    """``nn.Linear`` plus ``lora_A`` / ``lora_B`` (present only on the ``learn_param`` modules)."""

    def __init__(self, n_in: int, n_out: int, bias: bool, lora: dict | None):
        super().__init__(n_in, n_out, bias=bias)
        self.scaling = 0.0
        if lora:
            self.lora_A = nn.Linear(n_in, int(lora["lora_r"]), bias=False)
            self.lora_B = nn.Linear(int(lora["lora_r"]), n_out, bias=False)
            self.scaling = float(lora["lora_alpha"]) / float(lora["lora_r"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.scaling:
            out = out + self.lora_B(self.lora_A(x)) * self.scaling
        return out


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, c: InternLMXComposerConfig, targets: set[str]):
        super().__init__()
        self.h, self.d = c.num_attention_heads, c.head_dim
        lora, b = c.lora(), bool(c.kqvo_bias)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, name, LinearLoRA(c.hidden_size, c.hidden_size, b, lora if name in targets else None))

    def forward(self, x: torch.Tensor, start: int, past: tuple | None):
        bsz, t, _ = x.shape
        q, k, v = (getattr(self, n)(x).view(bsz, t, self.h, self.d).transpose(1, 2)
                   for n in ("q_proj", "k_proj", "v_proj"))
        inv = 1.0 / (10000.0 ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d))
        ang = torch.outer(torch.arange(start, start + t, dtype=torch.float32), inv)
        emb = torch.cat((ang, ang), -1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and t > 1)
        return self.o_proj(out.transpose(1, 2).reshape(bsz, t, -1)), (k, v)


class MLP(nn.Module):
    def __init__(self, c: InternLMXComposerConfig, targets: set[str]):
        super().__init__()
        lora, h, i = c.lora(), c.hidden_size, c.intermediate_size
        self.gate_proj = LinearLoRA(h, i, False, None)
        self.up_proj = LinearLoRA(h, i, False, lora if "up_proj" in targets else None)
        self.down_proj = LinearLoRA(i, h, False, lora if "down_proj" in targets else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: InternLMXComposerConfig, targets: set[str]):
        super().__init__()
        self.self_attn = Attention(c, targets)
        self.mlp = MLP(c, targets)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, start, past):
        a, kv = self.self_attn(self.input_layernorm(x), start, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class InternLM(nn.Module):
    def __init__(self, c: InternLMXComposerConfig):
        super().__init__()
        targets = c.lora_targets()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c, targets) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class InternLMForCausalLM(nn.Module):
    def __init__(self, c: InternLMXComposerConfig):
        super().__init__()
        self.model = InternLM(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, embeds: torch.Tensor, past: list | None = None, start: int = 0):
        """Logits ``[B, T, vocab]`` (float32) of ``embeds`` ``[B, T, H]`` and the new per-layer KV cache."""
        x, cache = embeds, []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, start, past[i] if past else None)
            cache.append(kv)
        return self.lm_head(self.model.norm(x)).float(), cache


class EVABlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(width, 3 * width, bias=False)
        self.attn.q_bias = nn.Parameter(torch.zeros(width))
        self.attn.v_bias = nn.Parameter(torch.zeros(width))
        self.attn.proj = nn.Linear(width, width)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(width, mlp), nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        a = self.attn
        bias = torch.cat([a.q_bias, torch.zeros_like(a.v_bias), a.v_bias])
        qkv = F.linear(self.norm1(x), a.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, n, c)
        x = x + a.proj(out)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class EVAViT(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        w, p = int(v["hidden_size"]), int(v["patch_size"])
        n = (int(v["image_size"]) // p) ** 2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, w, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, w))
        self.blocks = nn.ModuleList(EVABlock(w, int(v["num_attention_heads"]), int(v["intermediate_size"]),
                                             float(v["layer_norm_eps"])) for _ in range(int(v["num_hidden_layers"])))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return x


class BertAttention(nn.Module):
    """``self`` (query/key/value) + ``output`` (dense, LayerNorm of the residual sum), as BERT names them."""

    def __init__(self, width: int, heads: int, kv_width: int, eps: float):
        super().__init__()
        self.heads = heads
        self.self = nn.Module()
        self.self.query, self.self.key, self.self.value = (nn.Linear(width, width), nn.Linear(kv_width, width),
                                                           nn.Linear(kv_width, width))
        self.output = nn.Module()
        self.output.dense, self.output.LayerNorm = nn.Linear(width, width), nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]

        def heads(t):
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)

        s = self.self
        out = F.scaled_dot_product_attention(heads(s.query(x)), heads(s.key(kv)), heads(s.value(kv)))
        out = out.transpose(1, 2).reshape(b, x.shape[1], -1)
        return self.output.LayerNorm(self.output.dense(out) + x)


class BertLayer(nn.Module):
    def __init__(self, q: dict, cross: bool, enc_width: int):
        super().__init__()
        w, h, eps = int(q["hidden_size"]), int(q["num_attention_heads"]), float(q["layer_norm_eps"])
        self.attention = BertAttention(w, h, w, eps)
        self.crossattention = BertAttention(w, h, enc_width, eps) if cross else None
        self.intermediate_query = nn.Module()
        self.intermediate_query.dense = nn.Linear(w, int(q["intermediate_size"]))
        self.output_query = nn.Module()
        self.output_query.dense = nn.Linear(int(q["intermediate_size"]), w)
        self.output_query.LayerNorm = nn.LayerNorm(w, eps=eps)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x)
        if self.crossattention is not None:
            x = self.crossattention(x, image)
        h = self.output_query.dense(F.gelu(self.intermediate_query.dense(x)))
        return self.output_query.LayerNorm(h + x)


class PerceiveSampler(nn.Module):
    """``Qformer`` of the checkpoint (``Qformer.bert.embeddings.LayerNorm``, ``Qformer.bert.encoder.layer.N``)."""

    def __init__(self, q: dict, enc_width: int):
        super().__init__()
        w, freq = int(q["hidden_size"]), int(q["cross_attention_freq"])
        self.bert = nn.Module()
        self.bert.embeddings = nn.Module()
        self.bert.embeddings.LayerNorm = nn.LayerNorm(w, eps=float(q["layer_norm_eps"]))
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList(BertLayer(q, i % freq == 0, enc_width)
                                                for i in range(int(q["num_hidden_layers"])))

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.bert.embeddings.LayerNorm(queries)
        for layer in self.bert.encoder.layer:
            x = layer(x, image)
        return x


class XComposerReference(nn.Module):
    """The whole v1 model under its published module names."""

    def __init__(self, config: InternLMXComposerConfig):
        super().__init__()
        self.config = config
        v, q = config.eva(), config.qformer()
        self.image_size = int(v["image_size"])
        self.visual_encoder = EVAViT(v)
        self.ln_vision = nn.LayerNorm(int(v["hidden_size"]))
        self.Qformer = PerceiveSampler(q, int(v["hidden_size"]))
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_token, int(q["hidden_size"])))
        self.internlm_proj = nn.Linear(int(q["hidden_size"]), config.hidden_size)
        self.flag_image_start = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.flag_image_end = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.internlm_model = InternLMForCausalLM(config)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> XComposerReference:
        from safetensors.torch import load_file

        path = Path(path)
        config = InternLMXComposerConfig(**json.loads((path / "config.json").read_text()))
        model = cls(config)
        weights: dict[str, torch.Tensor] = {}
        for file in sorted(path.glob("*.safetensors")):
            weights.update(load_file(str(file)))
        model.load_published(weights)
        return model.to(dtype).eval()

    def load_published(self, weights: dict[str, torch.Tensor]) -> None:
        """Load published weights strictly; GPTQ linears are dequantized into the plain weight first."""
        from operators.vlm.gptq import dequantized

        weights = {k: v for k, v in dequantized(weights).items()
                   if not k.endswith(("position_ids", "rotary_emb.inv_freq"))}
        missing, unexpected = self.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint layout mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")

    def prepare(self, image):
        """The vision tower's input: a bicubic resize to 224 x 224 (``vis_processor``)."""
        from operators.vlm.xcomposer2.hd import prepare_vl

        return prepare_vl(image, self.image_size)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, num_query + 2, hidden]`` language-model embeddings of normalised ``[B, 3, 224, 224]`` pixels."""
        feats = self.ln_vision(self.visual_encoder(pixels))
        queries = self.Qformer(self.query_tokens.expand(pixels.shape[0], -1, -1), feats)
        x = self.internlm_proj(queries)
        b = x.shape[0]
        return torch.cat([self.flag_image_start.expand(b, -1, -1), x, self.flag_image_end.expand(b, -1, -1)], 1)

    @torch.no_grad()
    def encode_image(self, image) -> torch.Tensor:
        """``[num_query + 2, hidden]`` embeddings of one PIL image."""
        from operators.vlm.xcomposer.image import pixel_values

        dtype = self.internlm_proj.weight.dtype
        return self.encode_pixels(pixel_values(self.prepare(image))[None].to(dtype))[0]

    @torch.no_grad()
    def embed(self, input_ids: list[int], image_embeds: list[torch.Tensor], image_token_id: int) -> torch.Tensor:
        """``[T, hidden]`` embeddings of ``input_ids`` whose image-token runs hold ``image_embeds`` in order."""
        ids = torch.tensor(input_ids)
        mask = ids == image_token_id
        x = self.internlm_model.model.embed_tokens(ids.masked_fill(mask, 0))
        if image_embeds:
            flat = torch.cat(image_embeds).to(x.dtype)
            if flat.shape[0] != int(mask.sum()):
                raise ValueError(f"{int(mask.sum())} image positions for {flat.shape[0]} image embeddings")
            x = x.clone()
            x[mask] = flat
        return x

    # ``expand(input_ids, image_token_id, counts)``: the k-th image token repeated ``counts[k]`` times.
    expand = XComposer2Reference.expand

    @torch.no_grad()
    def logits(self, embeds: torch.Tensor) -> torch.Tensor:
        """``[T, vocab]`` float32 logits of one sequence of embeddings."""
        return self.internlm_model(embeds[None])[0][0]

    @torch.no_grad()
    def greedy(self, prompt_ids: list[int], images: list, image_token_id: int, max_new_tokens: int,
               stop_ids: tuple[int, ...] = ()) -> tuple[list[int], list[int]]:
        """Greedy decoding with a KV cache. Returns (expanded prompt ids, generated ids)."""
        embeds = [self.encode_image(im) for im in images]
        ids = self.expand(prompt_ids, image_token_id, [e.shape[0] for e in embeds])
        x = self.embed(ids, embeds, image_token_id)[None]
        logits, past = self.internlm_model(x)
        start, generated = x.shape[1], []
        for _ in range(max_new_tokens):
            nxt = int(logits[0, -1].argmax())
            generated.append(nxt)
            if nxt in stop_ids:
                break
            emb = self.internlm_model.model.embed_tokens(torch.tensor([[nxt]]))
            logits, past = self.internlm_model(emb, past, start)
            start += 1
        return ids, generated

"""InternLM-XComposer2 as a vLLM model: CLIP tower, ``vision_proj``, InternLM2 with Partial LoRA.

Registered by ``plugin.register`` as ``InternLMXComposer2ForCausalLM``. Parameter names are the
published checkpoint names, so weights load unchanged; the CLIP tower's q/k/v are fused by
vLLM's own CLIP loader.

Partial LoRA only where the image is. vLLM calls ``embed_input_ids(input_ids, mm_embeds,
is_multimodal=...)`` once per step, outside any CUDA graph, for the tokens scheduled in that step
in the order ``forward`` then sees them; ``is_multimodal`` marks the positions that receive image
embeddings, per sequence and per chunk (chunked prefill splits an image's run of positions across
steps and the mark follows). When the step has image embeddings (a host-side fact: the list is
non-empty), the positions become an index of rows (one device sync, on prefill steps with images
only) that the step's ``forward`` takes: each of the five projections gathers those rows, applies
``(alpha / r) * B A x`` to them alone and adds it back (``index_add_``); each projection carries
its own ``alpha / r`` (4KHD's ``wqkv``: rank 8, alpha 16; ``config.lora_for``). A step without image
tokens, every decode step among them, runs the projections alone, i.e. exactly the model without
LoRA.

Why this is CUDA-graph safe, and the one choice it rests on: vLLM captures FULL graphs only for
uniform decode batches, by dummy runs that never call ``embed_input_ids``, and replays them
without running Python. The row index is therefore handed from ``embed_input_ids`` to the next
``forward`` and consumed there (never left for a later call), and a ``forward`` that runs under a
FULL graph (the forward context says so, or the stream is capturing) ignores it: graphs are
captured without the LoRA, which is right for every step they replay, since decode tokens are
never image tokens. (A branch on a device-side "any image token" would sync inside capture; a
fixed-size gather would still read all the LoRA weights on every decode step, which is the
memory-bound cost this removes.) The one schedule this cannot serve exactly is a uniform step in
which a prefilling request is scheduled exactly one token and that token is an image token (its
prompt ends on an image placeholder, or ``max_num_batched_tokens`` is no larger than
``max_num_seqs`` so a chunk can shrink to one token): vLLM would replay a decode graph for it.
vlmbatch's prompts always end with the chat template's assistant turn and its engines keep the
token budget far above ``max_num_seqs``; if it happens anyway the model logs a warning (the index
was still unconsumed when ``compute_logits`` ran).

Tensor parallelism follows vLLM's InternLM2: ``wqkv`` / ``w1`` / ``w3`` column-parallel (their
``Plora_B`` split the same way, ``Plora_A`` replicated), ``wo`` / ``w2`` row-parallel (``Plora_A``
split on its input, ``Plora_B`` replicated) with one all-reduce of the sum. Pipeline
parallelism is not offered: the image rows would have to travel between stages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_gather,
    tensor_model_parallel_all_reduce,
)
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (
    ColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.models.clip import CLIPVisionModel
from vllm.model_executor.models.interfaces import SupportsMultiModal
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY

from operators.vlm.xcomposer2.config import IMAGE_TOKEN, InternLMXComposer2Config
from operators.vlm.xcomposer2.processing import (
    XComposer2DummyInputsBuilder,
    XComposer2MultiModalProcessor,
    XComposer2ProcessingInfo,
)
from operators.vlm.xcomposer2.tp import restore_row_order, split_grouped

try:  # vLLM >= 0.2x moved the attention layer
    from vllm.model_executor.layers.attention import Attention
except ImportError:  # pragma: no cover - older vLLM
    from vllm.attention import Attention

log = logging.getLogger(__name__)


def _rope(head_dim: int, max_position: int, params: dict):
    try:
        return get_rope(head_dim, max_position=max_position, rope_parameters=params)
    except TypeError:  # pragma: no cover - vLLM before rope_parameters
        scaling = None if params.get("rope_type", "default") == "default" else params
        return get_rope(head_dim, rotary_dim=head_dim, max_position=max_position,
                        base=params["rope_theta"], rope_scaling=scaling)


def _plora(layer, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``W x`` for every row, plus ``scale * B A x`` added to the image ``rows`` only (None: no image row).

    Row for row the same arithmetic as ``W x + scale * B A x`` on image rows and ``W x`` elsewhere.
    """
    out, _ = layer(x)
    if rows is None:
        return out
    low, _ = layer.Plora_A(x.index_select(0, rows))
    delta, _ = layer.Plora_B(low)
    return out.index_add_(0, rows, delta, alpha=layer.lora_scale)


class _OwnLoader:
    """Load this layer's weight and its ``Plora_A`` / ``Plora_B`` each with their own loader.

    (vLLM's fused QKV layer has a ``load_weights`` that would pass a shard id to every child.)
    """

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        from vllm.model_executor.model_loader.weight_utils import default_weight_loader

        params = dict(self.named_parameters())
        loaded = set()
        for name, tensor in weights:
            param = params[name]
            getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            loaded.add(name)
        return loaded


class PLoRAQKV(_OwnLoader, QKVParallelLinear):
    """``wqkv`` plus ``Plora_A`` (replicated) and ``Plora_B`` (split exactly like ``wqkv``)."""

    def __init__(self, hidden: int, head_dim: int, heads: int, kv_heads: int, r: int, scale: float, prefix: str,
                 quant_config=None):
        super().__init__(hidden, head_dim, heads, kv_heads, bias=False, quant_config=quant_config, prefix=prefix)
        self.lora_scale = scale
        self.Plora_A = ReplicatedLinear(hidden, r, bias=False, prefix=f"{prefix}.Plora_A")
        self.Plora_B = QKVParallelLinear(r, head_dim, heads, kv_heads, bias=False, prefix=f"{prefix}.Plora_B")

    def plora(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        return _plora(self, x, rows)


class PLoRAColumn(_OwnLoader, ColumnParallelLinear):
    """Column-parallel linear (``w1``, ``w3``) with a Partial-LoRA update."""

    def __init__(self, in_features: int, out_features: int, r: int, scale: float, prefix: str, quant_config=None):
        super().__init__(in_features, out_features, bias=False, quant_config=quant_config, prefix=prefix)
        self.lora_scale = scale
        self.Plora_A = ReplicatedLinear(in_features, r, bias=False, prefix=f"{prefix}.Plora_A")
        self.Plora_B = ColumnParallelLinear(r, out_features, bias=False, prefix=f"{prefix}.Plora_B")

    def plora(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        return _plora(self, x, rows)


class PLoRARow(_OwnLoader, RowParallelLinear):
    """Row-parallel linear (``wo``, ``w2``) with a Partial-LoRA update; one all-reduce for both."""

    def __init__(self, in_features: int, out_features: int, r: int, scale: float, prefix: str, quant_config=None):
        super().__init__(in_features, out_features, bias=False, reduce_results=False, quant_config=quant_config,
                         prefix=prefix)
        self.lora_scale = scale
        self.Plora_A = RowParallelLinear(in_features, r, bias=False, reduce_results=False, prefix=f"{prefix}.Plora_A")
        self.Plora_B = ReplicatedLinear(r, out_features, bias=False, prefix=f"{prefix}.Plora_B")

    def plora(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        out = _plora(self, x, rows)  # B(sum of partial A x) == sum of B(partial A x): one all-reduce
        if self.tp_size > 1:
            out = tensor_model_parallel_all_reduce(out)
        return out


class XComposer2Attention(nn.Module):
    def __init__(self, config: InternLMXComposer2Config, cache_config, prefix: str, quant_config=None):
        super().__init__()
        self.tp_size = get_tensor_model_parallel_world_size()
        self.tp_rank = get_tensor_model_parallel_rank()
        self.total_heads, self.total_kv = config.num_attention_heads, config.num_key_value_heads
        self.heads = self.total_heads // self.tp_size
        self.kv_heads = max(1, self.total_kv // self.tp_size)
        self.head_dim = config.head_dim
        r, scale = config.lora_r, config.lora_alpha / config.lora_r
        # 4KHD's wqkv LoRA has its own rank and alpha (config.lora_for); each layer carries its own scale.
        qkv_r, qkv_alpha = config.lora_for("wqkv", config.variant())
        self.wqkv = PLoRAQKV(config.hidden_size, self.head_dim, self.total_heads, self.total_kv, qkv_r,
                             qkv_alpha / qkv_r, prefix=f"{prefix}.wqkv", quant_config=quant_config)
        self.wo = PLoRARow(self.total_heads * self.head_dim, config.hidden_size, r, scale, prefix=f"{prefix}.wo",
                           quant_config=quant_config)
        self.rotary_emb = _rope(self.head_dim, config.max_position_embeddings, config.rope_parameters)
        self.attn = Attention(self.heads, self.head_dim, self.head_dim**-0.5, num_kv_heads=self.kv_heads,
                              cache_config=cache_config, prefix=f"{prefix}.attn")

    def _split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.tp_size > 1:
            q_part, kv_part = self.heads * self.head_dim, self.kv_heads * self.head_dim
            qkv = restore_row_order(tensor_model_parallel_all_gather(qkv), self.tp_size, q_part, kv_part)
        return split_grouped(qkv, self.total_heads, self.total_kv, self.head_dim, self.tp_size, self.tp_rank)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self._split(self.wqkv.plora(x, rows))
        q, k = self.rotary_emb(positions, q, k)
        return self.wo.plora(self.attn(q, k, v), rows)


class XComposer2MLP(nn.Module):
    def __init__(self, config: InternLMXComposer2Config, prefix: str, quant_config=None):
        super().__init__()
        r, scale, q = config.lora_r, config.lora_alpha / config.lora_r, quant_config
        self.w1 = PLoRAColumn(config.hidden_size, config.intermediate_size, r, scale, prefix=f"{prefix}.w1",
                              quant_config=q)
        self.w3 = PLoRAColumn(config.hidden_size, config.intermediate_size, r, scale, prefix=f"{prefix}.w3",
                              quant_config=q)
        self.w2 = PLoRARow(config.intermediate_size, config.hidden_size, r, scale, prefix=f"{prefix}.w2",
                           quant_config=q)

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        return self.w2.plora(F.silu(self.w1.plora(x, rows)) * self.w3.plora(x, rows), rows)


class XComposer2DecoderLayer(nn.Module):
    def __init__(self, config: InternLMXComposer2Config, cache_config, prefix: str, quant_config=None):
        super().__init__()
        self.attention = XComposer2Attention(config, cache_config, prefix=f"{prefix}.attention",
                                             quant_config=quant_config)
        self.feed_forward = XComposer2MLP(config, prefix=f"{prefix}.feed_forward", quant_config=quant_config)
        self.attention_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.ffn_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, positions, hidden, residual, rows):
        if residual is None:
            residual = hidden
            hidden = self.attention_norm(hidden)
        else:
            hidden, residual = self.attention_norm(hidden, residual)
        hidden = self.attention(positions, hidden, rows)
        hidden, residual = self.ffn_norm(hidden, residual)
        return self.feed_forward(hidden, rows), residual


class XComposer2Model(nn.Module):
    """``model.*`` of the checkpoint: embeddings, decoder layers, final norm."""

    def __init__(self, config: InternLMXComposer2Config, cache_config, prefix: str, quant_config=None):
        super().__init__()
        self.tok_embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            XComposer2DecoderLayer(config, cache_config, prefix=f"{prefix}.layers.{i}", quant_config=quant_config)
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.tok_embeddings(input_ids)

    def forward(self, positions, hidden, rows):
        residual = None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual, rows)
        hidden, _ = self.norm(hidden, residual)
        return hidden


@MULTIMODAL_REGISTRY.register_processor(
    XComposer2MultiModalProcessor, info=XComposer2ProcessingInfo, dummy_inputs=XComposer2DummyInputsBuilder
)
class InternLMXComposer2ForCausalLM(nn.Module, SupportsMultiModal):
    """InternLM-XComposer2 VL / 4KHD for vLLM (variant from the config or the checkpoint's weights)."""

    # vLLM's GPTQ config lists the quantized linears from a checkpoint's integer tensors under their
    # published names; the 4-bit release names them ``<module>.linear`` (see load_weights).
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_suffix={".linear": ""})

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_TOKEN
        raise ValueError("only images are supported")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        from transformers import CLIPVisionConfig

        config: InternLMXComposer2Config = vllm_config.model_config.hf_config
        self.config = config
        self.variant = config.variant(vllm_config.model_config.model)
        config.xcomposer_variant = self.variant  # the layers below read it (4KHD's own wqkv LoRA)
        clip = config.clip_config(self.variant)
        self.image_size, self.patch = int(clip["image_size"]), int(clip["patch_size"])
        width = int(clip["hidden_size"]) * (4 if self.variant == "4khd" else 1)
        mark_tower = getattr(self, "_mark_tower_model", None)
        mark_lm = getattr(self, "_mark_language_model", None)
        with mark_tower(vllm_config, "image") if mark_tower else nullcontext():
            self.vit = nn.Module()
            self.vit.vision_tower = CLIPVisionModel(CLIPVisionConfig(**clip), require_post_norm=False,
                                                    prefix=maybe_prefix(prefix, "vit.vision_tower"))
            self.vision_proj = nn.Sequential(nn.Linear(width, config.hidden_size), nn.GELU(),
                                             nn.Linear(config.hidden_size, config.hidden_size))
            if self.variant == "4khd":
                self.plora_glb_GN = nn.Parameter(torch.zeros(1, 1, width))
                self.plora_sub_GN = nn.Parameter(torch.zeros(1, 1, 1, width))
        with mark_lm(vllm_config) if mark_lm else nullcontext():
            # A GPTQ checkpoint (the 4-bit release) quantizes the decoder's base linears only; the
            # Partial-LoRA factors, vision side and LM head stay in floating point.
            self.model = XComposer2Model(config, vllm_config.cache_config, prefix=maybe_prefix(prefix, "model"),
                                         quant_config=vllm_config.quant_config)
            self.output = ParallelLMHead(config.vocab_size, config.hidden_size, prefix=maybe_prefix(prefix, "output"))
        self.logits_processor = LogitsProcessor(config.vocab_size)
        # Image rows found by the last embed_input_ids, until the same step's forward takes them.
        self._image_rows: torch.Tensor | None = None
        self._warned_graph_rows = False

    def get_language_model(self) -> nn.Module:
        return self.model

    # -- vision ---------------------------------------------------------------------------------
    def _vit(self, pixels: torch.Tensor) -> torch.Tensor:
        tower = self.vit.vision_tower
        return tower(pixels.to(dtype=tower.dtype))[:, 1:]  # last layer, no CLS, no post-norm

    def _encode_hd(self, image: torch.Tensor) -> torch.Tensor:
        crop, side = self.image_size, self.image_size // self.patch
        half = side // 2
        rows, cols = image.shape[1] // crop, image.shape[2] // crop
        glb = F.interpolate(image[None].float(), size=(crop, crop), mode="bicubic").to(image.dtype)
        tiles = image.reshape(3, rows, crop, cols, crop).permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, crop, crop)
        feats = self._vit(torch.cat([glb, tiles]))
        c = feats.shape[-1]
        # 2x2 neighbouring patches become one token of 4x width.
        merged = feats.reshape(-1, half, 2, half, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, half, half, 4 * c)
        newline = self.plora_sub_GN.reshape(1, 1, 4 * c).to(merged.dtype)
        glb_tokens = torch.cat([merged[0], newline.expand(half, 1, -1)], dim=1).reshape(-1, 4 * c)
        sub = merged[1:].reshape(rows, cols, half, half, 4 * c).permute(0, 2, 1, 3, 4)
        sub = sub.reshape(rows * half, cols * half, -1)
        sub_tokens = torch.cat([sub, newline.expand(rows * half, 1, -1)], dim=1).reshape(-1, 4 * c)
        sep = self.plora_glb_GN.reshape(1, 4 * c).to(merged.dtype)
        return self.vision_proj(torch.cat([glb_tokens, sep, sub_tokens]))

    def embed_multimodal(self, **kwargs: object) -> list[torch.Tensor]:
        pixels = kwargs.get("pixel_values")
        if pixels is None:
            return []
        images = list(pixels) if isinstance(pixels, (list, tuple)) else list(pixels.unbind(0))
        dtype = self.vision_proj[0].weight.dtype
        images = [im.to(dtype) for im in images]
        if self.variant == "vl":
            feats = self.vision_proj(self._vit(torch.stack(images)))
            return list(feats.unbind(0))
        return [self._encode_hd(im) for im in images]

    # -- language model -------------------------------------------------------------------------
    def embed_input_ids(self, input_ids: torch.Tensor, multimodal_embeddings=None, *,
                        is_multimodal: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        self._image_rows = None
        if is_multimodal is not None:
            # Placeholder ids may lie outside the vocabulary; their rows are overwritten below.
            input_ids = input_ids.masked_fill(is_multimodal.to(input_ids.device), 0)
        embeds = self.model.embed_input_ids(input_ids)
        if multimodal_embeddings is not None and len(multimodal_embeddings) > 0 and is_multimodal is not None:
            is_mm = is_multimodal.to(embeds.device)
            flat = torch.cat([e.reshape(-1, embeds.shape[-1]) for e in multimodal_embeddings]).to(embeds.dtype)
            embeds = embeds.clone()
            embeds[is_mm] = flat
            rows = is_mm.nonzero().squeeze(1)
            self._image_rows = rows if rows.numel() else None
        return embeds

    def _take_image_rows(self) -> torch.Tensor | None:
        """This forward's image rows, consumed: None when the last ``embed_input_ids`` found none, or
        under a FULL CUDA graph (captured without the LoRA, see the module docstring)."""
        rows, self._image_rows = self._image_rows, None
        if rows is None:
            return None
        from vllm.forward_context import get_forward_context, is_forward_context_available

        capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
        context = get_forward_context() if is_forward_context_available() else None
        mode = getattr(context, "cudagraph_runtime_mode", None)
        if capturing or getattr(mode, "name", "NONE") == "FULL":
            self._warn_graph_rows()
            return None
        return rows

    def _warn_graph_rows(self) -> None:
        if not self._warned_graph_rows:
            self._warned_graph_rows = True
            log.warning("image tokens ran in a step vLLM served from a decode CUDA graph: Partial LoRA was not "
                        "applied to them (a prompt ending on %s, or max_num_batched_tokens <= max_num_seqs)",
                        IMAGE_TOKEN)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.embed_input_ids(input_ids)
        return self.model(positions, inputs_embeds, self._take_image_rows())

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        if self._image_rows is not None:  # image rows found, yet no forward ran Python: a graph replay
            self._image_rows = None
            self._warn_graph_rows()
        return self.logits_processor(self.output, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        def published(ws):
            for name, w in ws:
                if name.endswith(("position_ids", "rotary_emb.inv_freq")):
                    continue
                # The 4-bit release wraps each base linear as ``<module>.linear`` (its AutoGPTQ
                # inside_layer_modules: attention.wqkv.linear, ...); here the module is the base linear.
                yield name.replace(".linear.", "."), w

        return AutoWeightsLoader(self).load_weights(published(weights))

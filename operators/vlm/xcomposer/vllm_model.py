"""InternLM-XComposer v1 as a vLLM model: EVA ViT-g, the perceive sampler, InternLM-7B.

Registered by ``plugin.register`` as ``InternLMXComposerForCausalLM``. The parts are vLLM's own layers of
the same architectures: the BLIP-2 vision tower (EVA ViT-g, tensor parallel), BLIP-2's Q-Former (the
perceive sampler is that BERT: layer norm on the queries, cross-attention every second layer, the query
FFN) and vLLM's Llama with q/k/v/o biases for InternLM-7B (plain multi-head attention, NeoX rotary halves,
base 10000: what upstream's "converted" attention computes). Weights keep their published names; the
mapping to these layers is in :mod:`operators.vlm.xcomposer.weights`.

LoRA. Upstream's ``internlm_lora`` updates every token (not only image positions, unlike XComposer2's
Partial LoRA), so it is merged at load: ``W + (alpha / r) B A`` in float32, before tensor-parallel
sharding. Each image is a fixed run of ``num_query_token + 2`` positions whose embeddings are scattered
into the prompt by ``embed_input_ids``; nothing else is position-dependent, so chunked prefill and
batching need nothing of their own. GPTQ checkpoints (the 4-bit release) load through vLLM's quantized
linear layers for the decoder; the vision side is never quantized.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models.blip import BlipVisionModel
from vllm.model_executor.models.blip2 import Blip2QFormerModel
from vllm.model_executor.models.interfaces import SupportsMultiModal
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, init_vllm_registered_model, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY

from operators.vlm.xcomposer.config import IMAGE_TOKEN, InternLMXComposerConfig
from operators.vlm.xcomposer.processing import XComposerProcessingInfo
from operators.vlm.xcomposer.weights import published_to_vllm
from operators.vlm.xcomposer2.processing import XComposer2DummyInputsBuilder, XComposer2MultiModalProcessor


def _configs(config: InternLMXComposerConfig):
    """(BLIP-2 vision config, BLIP-2 Q-Former config, Llama config) holding this checkpoint's facts."""
    from transformers import Blip2QFormerConfig, Blip2VisionConfig, LlamaConfig

    v, q = config.eva(), config.qformer()
    dims = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "layer_norm_eps")
    vision = Blip2VisionConfig(**{k: v[k] for k in dims}, patch_size=v["patch_size"], image_size=v["image_size"],
                               hidden_act="gelu", qkv_bias=True)
    qformer = Blip2QFormerConfig(**{k: q[k] for k in dims}, cross_attention_frequency=q["cross_attention_freq"],
                                 encoder_hidden_size=v["hidden_size"], hidden_act="gelu")
    text = LlamaConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                       intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
                       num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_attention_heads,
                       hidden_act=config.hidden_act, max_position_embeddings=config.max_position_embeddings,
                       rms_norm_eps=config.rms_norm_eps, attention_bias=bool(config.kqvo_bias), mlp_bias=False,
                       tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       architectures=["LlamaForCausalLM"])
    return vision, qformer, text


@MULTIMODAL_REGISTRY.register_processor(
    XComposer2MultiModalProcessor, info=XComposerProcessingInfo, dummy_inputs=XComposer2DummyInputsBuilder
)
class InternLMXComposerForCausalLM(nn.Module, SupportsMultiModal):
    """InternLM-XComposer v1 (7B, VL-7B, Share-Captioner, 7B-4bit) for vLLM."""

    # What vLLM's GPTQ config needs to find the quantized linears: it lists them from the checkpoint's
    # integer tensors under their published names, maps those with this, and matches fused layers' shards.
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix={"internlm_model.": "language_model."})
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_TOKEN
        raise ValueError("only images are supported")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config: InternLMXComposerConfig = vllm_config.model_config.hf_config
        self.config = config
        vision, qformer, text = _configs(config)
        mark_tower = getattr(self, "_mark_tower_model", None)
        mark_lm = getattr(self, "_mark_language_model", None)
        with mark_tower(vllm_config, "image") if mark_tower else nullcontext():
            self.visual_encoder = BlipVisionModel(vision, quant_config=None, require_post_norm=False,
                                                  prefix=maybe_prefix(prefix, "visual_encoder"))
            self.ln_vision = nn.LayerNorm(vision.hidden_size)
            self.Qformer = Blip2QFormerModel(qformer, quant_config=None, cache_config=vllm_config.cache_config,
                                             prefix=maybe_prefix(prefix, "Qformer"))
            self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_token, qformer.hidden_size))
            self.internlm_proj = nn.Linear(qformer.hidden_size, config.hidden_size)
            self.flag_image_start = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
            self.flag_image_end = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        with mark_lm(vllm_config) if mark_lm else nullcontext():
            self.language_model = init_vllm_registered_model(vllm_config=vllm_config, hf_config=text,
                                                             prefix=maybe_prefix(prefix, "language_model"),
                                                             architectures=["LlamaForCausalLM"])
        self.make_empty_intermediate_tensors = getattr(self.language_model, "make_empty_intermediate_tensors", None)

    def get_language_model(self) -> nn.Module:
        return self.language_model

    def embed_multimodal(self, **kwargs: object) -> list[torch.Tensor]:
        pixels = kwargs.get("pixel_values")
        if pixels is None:
            return []
        images = list(pixels) if isinstance(pixels, (list, tuple)) else list(pixels.unbind(0))
        dtype = self.internlm_proj.weight.dtype
        x = torch.stack([im.to(dtype) for im in images])
        feats = self.ln_vision(self.visual_encoder(x))
        queries = self.Qformer(query_embeds=self.query_tokens.expand(x.shape[0], -1, -1), encoder_hidden_states=feats)
        out = self.internlm_proj(queries)
        b = out.shape[0]
        out = torch.cat([self.flag_image_start.expand(b, -1, -1), out, self.flag_image_end.expand(b, -1, -1)], 1)
        return list(out.unbind(0))

    def embed_input_ids(self, input_ids: torch.Tensor, multimodal_embeddings=None, *,
                        is_multimodal: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if is_multimodal is not None:
            # The placeholder id may lie past the vocabulary; its rows are overwritten below.
            input_ids = input_ids.masked_fill(is_multimodal.to(input_ids.device), 0)
        embeds = self.language_model.embed_input_ids(input_ids)
        if multimodal_embeddings is not None and len(multimodal_embeddings) > 0 and is_multimodal is not None:
            flat = torch.cat([e.reshape(-1, embeds.shape[-1]) for e in multimodal_embeddings]).to(embeds.dtype)
            embeds = embeds.clone()
            embeds[is_multimodal.to(embeds.device)] = flat
        return embeds

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.embed_input_ids(input_ids)
        return self.language_model.model(None, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(published_to_vllm(weights, self.config))

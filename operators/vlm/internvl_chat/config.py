"""The InternVL chat checkpoints' ``config.json`` as transformers configs, without remote code.

The checkpoints (``OpenGVLab/InternVL-Chat-V1-5``, ``InternVL2-*``, ``InternVL2_5-*``, ...) declare
``model_type: internvl_chat`` and ship ``configuration_internvl_chat.py`` as remote code. vLLM
serves ``InternVLChatModel`` with its own implementation and reads only fields of the config; this
class gives them to it (and to the pipeline's validation) from the file alone, so a checkpoint
loads with ``trust_remote_code: false`` (a spec that trusts remote code gets the checkpoint's own
class instead). Field names and defaults are the published ones.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

MODEL_TYPE = "internvl_chat"
VISION_MODEL_TYPE = "intern_vit_6b"


class InternVisionConfig(PretrainedConfig):
    """InternViT fields (defaults: InternViT-6B, as published)."""

    model_type = VISION_MODEL_TYPE

    def __init__(self, num_channels: int = 3, patch_size: int = 14, image_size: int = 224, qkv_bias: bool = False,
                 hidden_size: int = 3200, num_attention_heads: int = 25, intermediate_size: int = 12800,
                 qk_normalization: bool = True, num_hidden_layers: int = 48, use_flash_attn: bool = True,
                 hidden_act: str = "gelu", norm_type: str = "rms_norm", layer_norm_eps: float = 1e-6,
                 dropout: float = 0.0, drop_path_rate: float = 0.0, attention_dropout: float = 0.0,
                 initializer_range: float = 0.02, initializer_factor: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_channels, self.patch_size, self.image_size = num_channels, patch_size, image_size
        self.qkv_bias, self.hidden_size, self.num_attention_heads = qkv_bias, hidden_size, num_attention_heads
        self.intermediate_size, self.qk_normalization = intermediate_size, qk_normalization
        self.num_hidden_layers, self.use_flash_attn, self.hidden_act = num_hidden_layers, use_flash_attn, hidden_act
        self.norm_type, self.layer_norm_eps, self.dropout = norm_type, layer_norm_eps, dropout
        self.drop_path_rate, self.attention_dropout = drop_path_rate, attention_dropout
        self.initializer_range, self.initializer_factor = initializer_range, initializer_factor


def text_config(llm: dict) -> PretrainedConfig:
    """The language model's config: transformers' own class for its ``model_type`` where there is one
    (llama, qwen2, phi3, ...), else a plain config holding the fields (InternLM2, whose class is remote
    code; vLLM's InternLM2 reads only fields)."""
    from transformers import AutoConfig

    llm = dict(llm)
    model_type = llm.pop("model_type", None)
    try:
        config = AutoConfig.for_model(model_type, **llm)
    except (ValueError, KeyError):
        config = PretrainedConfig(**llm)
        config.model_type = model_type
    return config


class InternVLChatConfig(PretrainedConfig):
    """``InternVLChatModel`` fields: vision and language configs, projector and tiling settings."""

    model_type = MODEL_TYPE

    def __init__(self, vision_config: dict | None = None, llm_config: dict | None = None, use_backbone_lora: int = 0,
                 use_llm_lora: int = 0, pad2square: bool = False, select_layer: int = -1,
                 force_image_size: int | None = None, downsample_ratio: float = 0.5, template: str | None = None,
                 dynamic_image_size: bool = False, use_thumbnail: bool = False, ps_version: str = "v1",
                 min_dynamic_patch: int = 1, max_dynamic_patch: int = 6, **kwargs: Any):
        kwargs.pop("has_no_defaults_at_init", None)  # vLLM passes it for this model type
        super().__init__(**kwargs)
        vision = vision_config if isinstance(vision_config, dict) else (vision_config or {}).to_dict() \
            if vision_config is not None else {}
        llm = llm_config if isinstance(llm_config, dict) else llm_config.to_dict() if llm_config is not None else {}
        self.vision_config = InternVisionConfig(**vision)
        self.llm_config = text_config(llm) if llm else PretrainedConfig()
        self.use_backbone_lora, self.use_llm_lora, self.pad2square = use_backbone_lora, use_llm_lora, pad2square
        self.select_layer, self.force_image_size = select_layer, force_image_size
        self.downsample_ratio, self.template = downsample_ratio, template
        self.dynamic_image_size, self.use_thumbnail, self.ps_version = dynamic_image_size, use_thumbnail, ps_version
        self.min_dynamic_patch, self.max_dynamic_patch = min_dynamic_patch, max_dynamic_patch
        self.hidden_size = getattr(self.llm_config, "hidden_size", None)
        self.tie_word_embeddings = False

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        out["llm_config"] = self.llm_config.to_dict()
        out.pop("text_config", None)  # vLLM's alias of llm_config
        return out


def register_config() -> None:
    """Make ``AutoConfig`` load ``model_type: internvl_chat`` without remote code (idempotent)."""
    from transformers import AutoConfig

    for model_type, cls in ((VISION_MODEL_TYPE, InternVisionConfig), (MODEL_TYPE, InternVLChatConfig)):
        try:
            AutoConfig.register(model_type, cls)
        except ValueError:
            pass  # already registered in this process

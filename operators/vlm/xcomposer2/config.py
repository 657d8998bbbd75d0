"""The published ``config.json`` of InternLM-XComposer2 as a transformers config, without remote code.

The checkpoints (https://huggingface.co/internlm/internlm-xcomposer2-vl-7b,
https://huggingface.co/internlm/internlm-xcomposer2-vl-1_8b,
https://huggingface.co/internlm/internlm-xcomposer2-4khd-7b) declare
``model_type: internlmxcomposer2`` and carry only the InternLM2 language-model fields; the
vision side (CLIP ViT-L/14, its input size, the projector, the 4KHD tiling) lives in their
remote modeling code. Those facts are defaults here, so the published file loads unchanged;
tiny test models (and users) may override them with the optional fields below.

Variant: ``4khd`` when the checkpoint carries ``plora_glb_GN`` (found from its weight index,
see :func:`detect_variant`) or the config says so; otherwise ``vl``.

Partial LoRA: rank 256, alpha 256 on every projection of VL-7B and VL-1.8B; 4KHD's ``wqkv`` has
rank 8 and alpha 16 (its ``modeling_internlm2.py``; lmdeploy's XComposer2 reader states the same
``attention.w_qkv:8`` / scale 2.0), its other projections 256 / 256 (:meth:`lora_for`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

MODEL_TYPE = "internlmxcomposer2"
ARCHITECTURE = "InternLMXComposer2ForCausalLM"
IMAGE_TOKEN = "<ImageHere>"
# CLIP ViT-L/14 (openai/clip-vit-large-patch14-336), the tower all three checkpoints fine-tune.
CLIP_VIT_L14: dict[str, Any] = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
)
VL_IMAGE_SIZE = 490  # VL-7B and VL-1.8B resize every image to 490x490 (35x35 patches)
HD_CROP_SIZE = 336  # 4KHD tiles of 336x336 (24x24 patches, merged 2x2 into 12x12 tokens)
DEFAULT_HD_NUM = 25  # the 4KHD remote code's default (``encode_img(..., hd_num=25)``)
# 4KHD's wqkv Partial LoRA (rank, alpha); every other projection uses the config's lora_r / lora_alpha.
HD_QKV_LORA = (8, 16)
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


class InternLMXComposer2Config(PretrainedConfig):
    """InternLM2 decoder fields plus the XComposer2 vision facts (defaults = published checkpoints).

    Extra fields (all optional; absent from the published files):
        xcomposer_variant: ``"vl"`` or ``"4khd"``; None = detect from the weights.
        vision_config: CLIP vision config overrides (tiny models); image_size defaults per variant.
        img_size: the VL input side the published VL configs name (490); ``vision_config`` wins.
        hd_num: most 4KHD sub-images per image (absent from the published files: 25).
        lora_r / lora_alpha: Partial-LoRA rank and alpha (256 / 256 in all published checkpoints;
            4KHD's ``wqkv`` differs, see :meth:`lora_for`).
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 92544,
        hidden_size: int = 4096,
        intermediate_size: int = 14336,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int = 8,
        hidden_act: str = "silu",
        max_position_embeddings: int = 32768,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-5,
        use_cache: bool = True,
        pad_token_id: int | None = 2,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        tie_word_embeddings: bool = False,
        bias: bool = False,
        rope_theta: float = 1_000_000.0,
        rope_scaling: dict | None = None,
        max_length: int = 4096,
        xcomposer_variant: str | None = None,
        vision_config: dict | None = None,
        hd_num: int | None = None,
        img_size: int | None = None,
        lora_r: int = 256,
        lora_alpha: int = 256,
        **kwargs: Any,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.bias = bias
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.max_length = max_length
        self.xcomposer_variant = xcomposer_variant
        self.vision_config = dict(vision_config or {})
        self.hd_num = hd_num
        self.img_size = img_size
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        # Published files say {"type": "dynamic", "factor": 1.0} or nothing: a factor of 1 scales
        # nothing, so it is plain RoPE. A real factor is passed on (vLLM and the reference differ
        # on dynamic NTK below max_position_embeddings; see the reference's docstring).
        kwargs.pop("rope_parameters", None)
        scaling = dict(rope_scaling or {})
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        factor = float(scaling.get("factor", 1.0))
        params: dict[str, Any] = {"rope_type": "default", "rope_theta": float(rope_theta)}
        if kind != "default" and factor != 1.0:
            params.update(rope_type=kind, factor=factor)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.rope_parameters = params

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def variant(self, model_path: str | None = None) -> str:
        """``"vl"`` or ``"4khd"``: the explicit field, else what the checkpoint's weights say."""
        if self.xcomposer_variant:
            return self.xcomposer_variant
        return detect_variant(model_path) if model_path else "vl"

    def clip_config(self, variant: str) -> dict[str, Any]:
        """CLIP vision config for ``variant`` (ViT-L/14 at the checkpoint's input size by default).

        A published ``img_size`` (224 in internlm-xcomposer2-7b, the composition model) sets the VL size.
        """
        size = int(self.img_size or VL_IMAGE_SIZE) if variant == "vl" else HD_CROP_SIZE
        return {**CLIP_VIT_L14, "image_size": size, **self.vision_config}

    def effective_hd_num(self) -> int:
        return int(self.hd_num or DEFAULT_HD_NUM)

    def lora_for(self, module: str, variant: str) -> tuple[int, int]:
        """(rank, alpha) of the Partial LoRA on projection ``module`` (wqkv, wo, w1, w2, w3) of ``variant``."""
        if variant == "4khd" and module == "wqkv":
            return HD_QKV_LORA
        return int(self.lora_r), int(self.lora_alpha)


def detect_variant(model_path: str | Path) -> str:
    """``"4khd"`` if the checkpoint in ``model_path`` carries the 4KHD separator weights, else ``"vl"``."""
    return _detect_variant(str(model_path))


@functools.lru_cache(maxsize=64)
def _detect_variant(model_path: str) -> str:
    # Cached: the multimodal processor asks once per image.
    root = Path(model_path)
    if not root.is_dir():
        return "vl"
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (root / index).exists():
            names = json.loads((root / index).read_text()).get("weight_map", {})
            return "4khd" if "plora_glb_GN" in names else "vl"
    single = root / "model.safetensors"
    if single.exists():
        from safetensors import safe_open

        with safe_open(str(single), "pt") as f:
            return "4khd" if "plora_glb_GN" in f.keys() else "vl"
    return "vl"


def register_config() -> None:
    """Make ``AutoConfig`` load ``model_type: internlmxcomposer2`` without remote code (idempotent)."""
    from transformers import AutoConfig

    try:
        AutoConfig.register(MODEL_TYPE, InternLMXComposer2Config)
    except ValueError:
        pass  # already registered in this process

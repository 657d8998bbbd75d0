"""The published ``config.json`` of InternLM-XComposer (v1) as a transformers config, without remote code.

The checkpoints (https://huggingface.co/internlm/internlm-xcomposer-7b,
https://huggingface.co/internlm/internlm-xcomposer-vl-7b, https://huggingface.co/Lin-Chen/ShareCaptioner,
https://huggingface.co/internlm/internlm-xcomposer-7b-4bit) declare ``model_type: InternLMXComposer``
and carry the InternLM-7B fields plus ``num_query_token`` (64), ``kqvo_bias``, ``rms_norm_eps`` (1e-5) and
the LoRA settings twice, as ``internlm_lora`` and ``lora_cfg`` (``lora_r`` 256, ``lora_alpha`` 256,
``lora_dropout``, ``learn_param`` ``[q, v, ffn]``: which of ``q k v o ffn`` carry LoRA; the 4-bit release:
both null). The released ``modeling_InternLM.py`` builds its ``LoRALinear`` modules from ``lora_cfg``
(``internlm_lora`` only reaches a class attribute), so :meth:`InternLMXComposerConfig.lora` reads
``lora_cfg`` first.
The vision side lives in their remote code; its facts are the defaults here:

* EVA-CLIP ViT-g/14 (``create_eva_vit_g``): 224 px, patch 14, width 1408, 39 blocks, 16 heads,
  MLP 6144 (ratio 4.3637), q/v biases, LayerNorm eps 1e-6, no final norm; then ``ln_vision``
  (LayerNorm 1408, eps 1e-5) over all 257 tokens (CLS included).
* Perceive sampler: BERT-base (``BertConfig()``: width 768, 12 layers, 12 heads, FFN 3072, LayerNorm
  eps 1e-12) with ``num_query_token`` learned queries, cross-attention to the image every
  ``cross_attention_freq`` = 2 layers (layers 0, 2, ...), the query-only FFN (``intermediate_query``).
* ``internlm_proj`` (768 -> 4096), then ``flag_image_start`` + queries + ``flag_image_end``: the
  language model sees ``num_query_token + 2`` embeddings per image.

Tiny test models (and users) may override the vision facts with ``vision_config`` / ``qformer_config``.
A GPTQ checkpoint's ``quantize_config.json`` (AutoGPTQ, as the 4-bit releases ship) is found by
:func:`operators.vlm.gptq.quantization_of`, which the vLLM engine passes on as ``quantization``.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from operators.vlm.xcomposer.tokens import ARCHITECTURE, EOA, EOH, IMAGE_TOKEN, MODEL_TYPE  # noqa: F401 - re-exported

IMAGE_SIZE = 224
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
EVA_VIT_G: dict[str, Any] = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                                 num_attention_heads=16, patch_size=14, image_size=IMAGE_SIZE, layer_norm_eps=1e-6)
BERT_BASE: dict[str, Any] = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                 layer_norm_eps=1e-12, cross_attention_freq=2)
LORA_DEFAULT: dict[str, Any] = dict(lora_r=8, lora_alpha=16, lora_dropout=0.05, learn_param=["q", "v"])


class InternLMXComposerConfig(PretrainedConfig):
    """InternLM-7B decoder fields plus the XComposer v1 vision facts (defaults = published checkpoints)."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 103168,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-5,
        use_cache: bool = True,
        pad_token_id: int | None = -1,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        tie_word_embeddings: bool = False,
        bias: bool = True,
        num_query_token: int = 32,
        kqvo_bias: bool = True,
        intern_converted_llm: bool = True,
        internlm_lora: dict | None = None,
        lora_cfg: dict | None = None,
        vision_config: dict | None = None,
        qformer_config: dict | None = None,
        **kwargs: Any,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads  # InternLM-7B: plain multi-head attention
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.bias = bias
        self.num_query_token = num_query_token
        self.kqvo_bias = kqvo_bias
        self.intern_converted_llm = intern_converted_llm
        self.internlm_lora = dict(internlm_lora) if internlm_lora else None
        self.lora_cfg = dict(lora_cfg) if lora_cfg else None
        self.vision_config = dict(vision_config or {})
        self.qformer_config = dict(qformer_config or {})
        kwargs.pop("device", None)  # the published file says "cuda"; placement is the engine's business
        # pad_token_id -1 (published) is no token at all.
        super().__init__(pad_token_id=pad_token_id if (pad_token_id or 0) >= 0 else None, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def eva(self) -> dict[str, Any]:
        """EVA ViT-g facts, overridden by ``vision_config``."""
        return {**EVA_VIT_G, **self.vision_config}

    def qformer(self) -> dict[str, Any]:
        """Perceive-sampler (BERT) facts, overridden by ``qformer_config``."""
        return {**BERT_BASE, **self.qformer_config}

    def lora(self) -> dict[str, Any] | None:
        """``lora_cfg`` (else ``internlm_lora``) with the upstream defaults filled in; None when there is none."""
        lora = self.lora_cfg or self.internlm_lora
        if not lora:
            return None
        return {**LORA_DEFAULT, **lora}

    def lora_targets(self) -> set[str]:
        """Module names (``q_proj`` ... ``up_proj``, ``down_proj``) that carry a LoRA update upstream."""
        lora = self.lora()
        if not lora:
            return set()
        names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
        out = {names[p] for p in lora["learn_param"] if p in names}
        if "ffn" in lora["learn_param"]:  # upstream: up_proj and down_proj, never gate_proj
            out |= {"up_proj", "down_proj"}
        return out

    def num_image_tokens(self) -> int:
        """Language-model positions per image: start flag, the queries, end flag."""
        return int(self.num_query_token) + 2


def register_config() -> None:
    """Make ``AutoConfig`` load ``model_type: InternLMXComposer`` without remote code (idempotent)."""
    from transformers import AutoConfig

    try:
        AutoConfig.register(MODEL_TYPE, InternLMXComposerConfig)
    except ValueError:
        pass  # already registered in this process

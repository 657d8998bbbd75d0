"""vLLM general plugin: registers the XComposer v1 config class, tokenizer and model with vLLM.

Called by :mod:`operators.vlm.plugins` (the project's ``vllm.general_plugins`` entry point) in every
process vLLM starts: no patch to vLLM, no remote code.
"""

from __future__ import annotations

from operators.vlm.xcomposer.config import ARCHITECTURE, register_config

MODEL_CLASS = "operators.vlm.xcomposer.vllm_model:InternLMXComposerForCausalLM"


def register() -> None:
    """Register ``InternLMXComposerForCausalLM`` (lazily, by import path), its config and tokenizer; idempotent."""
    from operators.vlm.xcomposer.tokenizer import register_tokenizer

    register_config()
    register_tokenizer()
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)

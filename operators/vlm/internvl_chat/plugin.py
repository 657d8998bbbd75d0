"""vLLM general plugin: the InternVL chat config class (vLLM's own ``InternVLChatModel`` serves the model).

Called by :mod:`operators.vlm.plugins` in every process vLLM starts, so a checkpoint in the
``InternVLChatModel`` layout loads without its remote ``configuration_internvl_chat.py``.
"""

from __future__ import annotations


def register() -> None:
    """Register the ``internvl_chat`` / ``intern_vit_6b`` config classes with transformers; idempotent."""
    from operators.vlm.internvl_chat.config import register_config

    register_config()

"""InternLM-XComposer v1 (XComposer-7B, -VL-7B, Share-Captioner): config, PyTorch reference, vLLM plugin.

Nothing heavy is imported here; ``plugin.register`` is what vLLM calls, through the project's
``vllm.general_plugins`` entry point (:mod:`operators.vlm.plugins`).
"""

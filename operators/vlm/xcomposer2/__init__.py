"""InternLM-XComposer2 (VL-7B, VL-1.8B, 4KHD-7B): config, CPU tiling, PyTorch reference and vLLM plugin.

Nothing heavy is imported here; ``plugin.register`` is what vLLM calls, through the project's
``vllm.general_plugins`` entry point (:mod:`operators.vlm.plugins`).
"""

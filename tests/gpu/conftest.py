"""The GPU tier: tests that need a CUDA GPU (real tensor parallelism, CUDA graphs, vLLM's CUDA build).

Collected everywhere; on a machine without a CUDA GPU (or without vLLM's CUDA build) each is
skipped with the reason. On the project's GPU machines (torch 2.11 + vLLM 0.24, see
bench/gpu_env.sh for the offline install) run ``python -m pytest tests/gpu``.
"""

from __future__ import annotations

import functools

import pytest


@functools.cache
def gpu_missing() -> str | None:
    """Why the GPU tier cannot run here, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    try:
        import vllm
    except ImportError:
        return "needs vLLM's CUDA build (vllm is not importable)"
    if "cpu" in getattr(vllm, "__version__", ""):
        return f"needs vLLM's CUDA build (found {vllm.__version__})"
    return None


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config, items):
    gpu_items = [i for i in items if "tests/gpu/" in str(i.fspath).replace("\\", "/")]
    if not gpu_items:
        return
    reason = gpu_missing()
    for item in gpu_items:
        item.add_marker(pytest.mark.gpu)
        item.add_marker(pytest.mark.slow)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))

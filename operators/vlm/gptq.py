"""AutoGPTQ checkpoints (the 4-bit XComposer releases): how vLLM is told their linears are quantized."""

from __future__ import annotations

import json
from pathlib import Path


def quantization_of(model_dir: str | Path) -> str | None:
    """``"gptq"`` when ``model_dir`` holds AutoGPTQ's ``quantize_config.json`` with 4 or 8 bits, else None.

    internlm-xcomposer-7b-4bit and internlm-xcomposer2-vl-7b-4bit ship that file and no
    ``quantization_config`` in ``config.json``, so vLLM would not see that the decoder's linears are GPTQ
    tensors; the engine passes this as vLLM's ``quantization`` argument. A hub id (no local folder) gives None.
    """
    path = Path(str(model_dir)) / "quantize_config.json"
    if not path.is_file():
        return None
    return "gptq" if int(json.loads(path.read_text()).get("bits", 4)) in (4, 8) else None

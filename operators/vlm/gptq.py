"""AutoGPTQ checkpoints (the 4-bit XComposer releases): how vLLM is told, and what the references load.

Layout (AutoGPTQ, symmetric, ``desc_act`` false): ``qweight`` ``[in / 8, out]`` int32 holding 8 4-bit values
along the input dimension (low bits first), ``scales`` ``[groups, out]`` float16, ``qzeros`` ``[groups, out / 8]``
(zero - 1 = 7 stored; symmetric, so fixed), ``g_idx`` ``[in]`` the group of each input row.
"""

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


def dequantize(qweight, scales, g_idx, bits: int = 4):
    """``[out, in]`` float32 weights of one symmetric GPTQ tensor set: ``(q - 2**(bits-1)) * scale``."""
    import torch

    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    q = (qweight.unsqueeze(1) >> shifts[None, :, None]) & ((1 << bits) - 1)  # [in/per, per, out]
    q = q.reshape(qweight.shape[0] * per, qweight.shape[1]).float()
    return ((q - (1 << (bits - 1))) * scales.float()[g_idx.long()]).t().contiguous()


def dequantized(weights: dict) -> dict:
    """``weights`` with every GPTQ tensor set ``<m>.qweight`` (or ``<m>.linear.qweight``) as ``<m>.weight``."""
    out = dict(weights)
    for name in [k for k in weights if k.endswith(".qweight")]:
        base = name[: -len(".qweight")]
        w = dequantize(out.pop(name), out.pop(f"{base}.scales"), out.pop(f"{base}.g_idx"))
        out.pop(f"{base}.qzeros")  # symmetric: the zero point is fixed
        out[f"{base.removesuffix('.linear')}.weight"] = w
    return out

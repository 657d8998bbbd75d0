"""Tiny InternLM-XComposer2-VL in the 4-bit release's layout (internlm-xcomposer2-vl-7b-4bit).

That release is AutoGPTQ output whose ``inside_layer_modules`` are ``attention.wqkv.linear``,
``attention.wo.linear``, ``feed_forward.w1.linear`` / ``w3.linear`` and ``feed_forward.w2.linear`` (the
InternLM-XComposer README's ``InternLMXComposer2QForCausalLM``): each Partial-LoRA module's base linear is
stored as ``<module>.linear.qweight`` / ``qzeros`` / ``scales`` / ``g_idx`` (symmetric 4-bit), while its
``Plora_A`` / ``Plora_B``, the vision side and the LM head stay in floating point, beside AutoGPTQ's
``quantize_config.json``. Built from the tiny float checkpoint of ``operators/vlm/tiny/xcomposer2.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_BASE = re.compile(r"^(model\.layers\.\d+\.(?:attention\.(?:wqkv|wo)|feed_forward\.w[123]))\.weight$")


def make_tiny_xcomposer2_4bit(directory: Path, seed: int = 0) -> None:
    """Write the tiny XComposer2-VL checkpoint with its decoder's base linears as AutoGPTQ tensors."""
    from safetensors.torch import load_file, save_file

    from operators.vlm.tiny.xcomposer import GROUP_SIZE, quantize_gptq
    from operators.vlm.tiny.xcomposer2 import make_tiny_xcomposer2

    directory = Path(directory)
    make_tiny_xcomposer2(directory, "vl", seed=seed)
    weights = load_file(str(directory / "model.safetensors"))
    out = {}
    for name, tensor in weights.items():
        m = _BASE.match(name)
        if not m:
            out[name] = tensor
            continue
        qweight, qzeros, scales, g_idx = quantize_gptq(tensor)
        base = f"{m.group(1)}.linear"
        out.update({f"{base}.qweight": qweight, f"{base}.qzeros": qzeros, f"{base}.scales": scales,
                    f"{base}.g_idx": g_idx})
    save_file(out, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "quantize_config.json").write_text(json.dumps(
        {"bits": 4, "group_size": GROUP_SIZE, "desc_act": False, "sym": True, "true_sequential": True}, indent=2))

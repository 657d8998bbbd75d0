"""CPU image preparation of InternLM-XComposer v1: ``vis_processor`` without torchvision.

Upstream: ``Resize((224, 224), BICUBIC)``, ``ToTensor``, ``Normalize(CLIP mean, CLIP std)``. The resize is
PIL's bicubic (what torchvision applies to PIL images); an image already 224 x 224 is not resized again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pixel_values(image, size: int | None = None) -> torch.Tensor:
    """``[3, size, size]`` float32 normalised pixels of a PIL image (resized to ``size`` when given)."""
    import torch

    from operators.vlm.xcomposer2.hd import normalize, prepare_vl

    if size is not None:
        image = prepare_vl(image, size)
    return torch.from_numpy(normalize(image))

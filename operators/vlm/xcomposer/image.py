"""CPU image preparation of InternLM-XComposer v1: ``vis_processor`` without torchvision.

Upstream: ``Resize((224, 224), BICUBIC)``, ``ToTensor``, ``Normalize(CLIP mean, CLIP std)``. The resize is
PIL's bicubic (what torchvision applies to PIL images); an image already 224 x 224 is not resized again.
"""

from __future__ import annotations

from collections.abc import Callable
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


def tower_size(model_id: str) -> int:
    """EVA's input side for ``model_id``: its config's ``vision_config.image_size``, else the published 224."""
    from operators.vlm.xcomposer.config import IMAGE_SIZE
    from operators.vlm.xcomposer2.cpu import raw_config

    return int((raw_config(model_id).get("vision_config") or {}).get("image_size") or IMAGE_SIZE)


def cpu_preparer(model_id: str) -> Callable:
    """The pipeline's CPU ``prepare`` function for ``model_id``: ``PIL image -> (3 x size x size float32, None)``.

    The same array :func:`pixel_values` gives the engine's processor for a raw image, so the engine's
    process receives the model's input and does no image work.
    """
    from operators.vlm.xcomposer2.cpu import square_preparer

    return square_preparer(tower_size(model_id))

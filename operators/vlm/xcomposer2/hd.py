"""CPU image preparation for InternLM-XComposer2: VL resize and the 4KHD ``hd_num`` layout.

4KHD (https://huggingface.co/internlm/internlm-xcomposer2-4khd-7b, its ``HD_transform``): the
image is transposed to landscape, the largest ``scale`` with ``scale * ceil(scale / ratio) <=
hd_num`` picks a width of ``scale * 336``, the height follows the aspect ratio (bilinear
resize), then white padding centres it vertically to a multiple of 336, and the transpose is
undone. The model cuts that into ``h x w`` crops of 336 plus one global view; per image the
language model sees ``(h*w + 1) * 144 + 1 + (h + 1) * 12`` tokens (12x12 merged tokens per
crop, one newline token per row of the global view and of the sub-image grid, one separator).

Every raw image is transformed, whatever its size (a 336x336 image becomes 5x5 crops at hd_num
25, as in the public code). An image the pipeline's CPU stage already laid out travels with its
tile grid as request metadata (:func:`check_prepared`); nothing is inferred from an image's size.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


def _landscape_resize(width: int, height: int, hd_num: int, crop: int) -> tuple[int, int]:
    # width >= height here; the largest crop count per row whose rows still fit in hd_num crops.
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * crop)
    return new_w, max(1, int(new_w / ratio))


def hd_size(width: int, height: int, hd_num: int, crop: int = 336) -> tuple[int, int]:
    """(width, height) of ``width x height`` after :func:`hd_transform`, computed without pixels."""
    transposed = width < height
    w, h = (height, width) if transposed else (width, height)
    new_w, new_h = _landscape_resize(w, h, hd_num, crop)
    padded = int(math.ceil(new_h / crop) * crop)
    return (padded, new_w) if transposed else (new_w, padded)


def hd_transform(image: Image.Image, hd_num: int, crop: int = 336) -> Image.Image:
    """The 4KHD layout of ``image``: both sides multiples of ``crop``, at most ``hd_num`` crops."""
    from PIL import Image

    transposed = image.width < image.height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    width, height = image.size
    new_w, new_h = _landscape_resize(width, height, hd_num, crop)
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    target = int(math.ceil(new_h / crop) * crop)
    top = (target - new_h) // 2
    canvas = Image.new("RGB", (new_w, target), (255, 255, 255))
    canvas.paste(image, (0, top))
    return canvas.transpose(Image.Transpose.TRANSPOSE) if transposed else canvas


def prepare_4khd(image: Image.Image, hd_num: int, crop: int = 336) -> Image.Image:
    """``image`` in the 4KHD layout: the HD transform, applied to every raw image."""
    return hd_transform(image.convert("RGB"), hd_num, crop)


def check_prepared(width: int, height: int, grid: tuple[int, int], crop: int = 336) -> None:
    """An image said to be laid out in ``grid`` (rows, columns) of ``crop`` crops must measure so.

    Raises:
        ValueError: naming the image's size and the grid's.
    """
    rows, cols = int(grid[0]), int(grid[1])
    if (width, height) != (cols * crop, rows * crop):
        raise ValueError(f"a {width}x{height} image was marked as laid out in {rows}x{cols} tiles of {crop} "
                         f"({cols * crop}x{rows * crop})")


def prepare_vl(image: Image.Image, size: int) -> Image.Image:
    """VL input: bicubic resize to ``size x size`` (the checkpoints' ``vis_processor``)."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BICUBIC)


def hd_grid(width: int, height: int, crop: int = 336) -> tuple[int, int]:
    """(rows, columns) of crops of a prepared image."""
    return height // crop, width // crop


def hd_num_tokens(width: int, height: int, crop: int, tokens_side: int) -> int:
    """Language-model tokens of one prepared 4KHD image; ``tokens_side`` merged tokens per crop side."""
    h, w = hd_grid(width, height, crop)
    return (h * w + 1) * tokens_side * tokens_side + 1 + (h + 1) * tokens_side


def normalize(image: Image.Image) -> np.ndarray:
    """float32 CHW array, CLIP mean/std normalised (``ToTensor`` + ``Normalize``)."""
    import numpy as np

    from operators.vlm.xcomposer2.config import IMAGE_MEAN, IMAGE_STD

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(IMAGE_MEAN, dtype=np.float32)) / np.asarray(IMAGE_STD, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))

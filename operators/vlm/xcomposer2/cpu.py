"""XComposer2's image preparation as CPU-stage functions: the model's input array, made off the engine.

Each preparer turns one RGB image into exactly the ``pixel_values`` item the model's vision step
takes (``operators/vlm/xcomposer2/vllm_model.py`` ``embed_multimodal``, the reference's
``encode_pixels``): float32, channels first, CLIP-normalised; VL resized to ``image_size`` square,
4KHD the HD transform (applied to every raw image) into ``hd_num`` tiles of ``crop``, with the
tile grid it made. The plugin's processor applies the same functions to a raw image
(``processing.XComposer2ProcessingInfo.model_input``), so both routes give the model the same array.

Settings: ``hd_num`` the spec's (``model.hd_num``), else the checkpoint config's when ``model_id``
is a local directory, else the remote code's default (25); the crop size and VL side from the
checkpoint's config (vision config, else VL's published ``img_size``), else the published values
(336; 490).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from operators.vlm.xcomposer2.config import DEFAULT_HD_NUM, HD_CROP_SIZE, VL_IMAGE_SIZE


def raw_config(model_id: str) -> dict:
    path = Path(model_id) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def hd_settings(model_id: str, hd_num: int | None = None) -> tuple[int, int]:
    """(hd_num, crop) for ``model_id``; an explicit ``hd_num`` wins over the checkpoint's."""
    raw = raw_config(model_id)
    configured = int(raw.get("hd_num") or DEFAULT_HD_NUM)
    crop = int((raw.get("vision_config") or {}).get("image_size") or HD_CROP_SIZE)
    return int(hd_num or configured), crop


def vl_size(model_id: str) -> int:
    """The square side VL resizes to, for ``model_id`` (as ``InternLMXComposer2Config.clip_config``)."""
    raw = raw_config(model_id)
    return int((raw.get("vision_config") or {}).get("image_size") or raw.get("img_size") or VL_IMAGE_SIZE)


def model_input_vl(image, size: int):
    """VL: bicubic resize to ``size`` x ``size``, normalised, 3 x size x size float32."""
    from operators.vlm.xcomposer2.hd import normalize, prepare_vl

    return normalize(prepare_vl(image, size))


def model_input_4khd(image, hd_num: int, crop: int):
    """4KHD: (the HD transform into ``hd_num`` tiles of ``crop``, normalised, 3 x H x W float32; its (rows, cols))."""
    from operators.vlm.xcomposer2.hd import hd_grid, normalize, prepare_4khd

    laid_out = prepare_4khd(image, hd_num, crop)
    return normalize(laid_out), hd_grid(laid_out.width, laid_out.height, crop)


class _VLPrepare:
    tiles = False  # one square input: no tile grid to record

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image):
        return model_input_vl(image, self.size), None


class _HDPrepare:
    tiles = True  # the prepare stage records the grid (``tile_grid``) and the laid-out size

    def __init__(self, hd_num: int, crop: int):
        self.hd_num, self.crop = hd_num, crop

    def __call__(self, image):
        return model_input_4khd(image, self.hd_num, self.crop)


def square_preparer(size: int) -> Callable:
    """A picklable ``PIL image -> (float32 array, None)``: bicubic resize to ``size`` square, normalised (no tiles).

    XComposer2-VL's input at its 490 and XComposer v1's (``vis_processor``) at EVA's 224: the same steps.
    """
    return _VLPrepare(size)


def vl_preparer(model_id: str) -> Callable:
    """A picklable ``PIL image -> (float32 array, None)``: VL's model input for ``model_id`` (no tiles)."""
    return square_preparer(vl_size(model_id))


def hd_preparer(model_id: str, hd_num: int | None = None) -> Callable:
    """A picklable ``PIL image -> (float32 array, (rows, cols))``: 4KHD's model input and tile grid."""
    return _HDPrepare(*hd_settings(model_id, hd_num))

"""XComposer2's image preparation as CPU-stage functions: the model's input array, made off the engine.

Each preparer turns one RGB image into exactly the ``pixel_values`` item the plugin's vision step
takes (``operators/vlm/xcomposer2/vllm_model.py`` ``embed_multimodal``): float32, channels first,
CLIP-normalised; VL resized to ``image_size`` square, 4KHD in the ``hd_num`` layout of ``crop``
tiles. It is the same function the plugin's processor applies to a raw image
(``processing.XComposer2ProcessingInfo.model_input``), so both routes give the model the same array.

Settings come from the model's ``config.json`` when ``model_id`` is a local directory (tiny models
set them), else the published values (VL 490 px; 4KHD 25 crops of 336).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from operators.vlm.xcomposer2.config import DEFAULT_HD_NUM, HD_CROP_SIZE, VL_IMAGE_SIZE


def _raw_config(model_id: str) -> dict:
    path = Path(model_id) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def hd_settings(model_id: str) -> tuple[int, int]:
    """(hd_num, crop) for ``model_id``."""
    raw = _raw_config(model_id)
    hd_num = int(raw.get("hd_num") or DEFAULT_HD_NUM)
    crop = int((raw.get("vision_config") or {}).get("image_size") or HD_CROP_SIZE)
    return hd_num, crop


def vl_size(model_id: str) -> int:
    """The square side VL resizes to, for ``model_id``."""
    return int((_raw_config(model_id).get("vision_config") or {}).get("image_size") or VL_IMAGE_SIZE)


def model_input_vl(image, size: int):
    """VL: bicubic resize to ``size`` x ``size``, normalised, 3 x size x size float32."""
    from operators.vlm.xcomposer2.hd import normalize, prepare_vl

    return normalize(prepare_vl(image, size))


def model_input_4khd(image, hd_num: int, crop: int):
    """4KHD: the ``hd_num`` layout of ``crop`` tiles, normalised, 3 x H x W float32."""
    from operators.vlm.xcomposer2.hd import normalize, prepare_4khd

    return normalize(prepare_4khd(image, hd_num, crop))


class _VLPrepare:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image):
        return model_input_vl(image, self.size)


class _HDPrepare:
    def __init__(self, hd_num: int, crop: int):
        self.hd_num, self.crop = hd_num, crop

    def __call__(self, image):
        return model_input_4khd(image, self.hd_num, self.crop)


def vl_preparer(model_id: str) -> Callable:
    """A picklable ``PIL image -> float32 array``: VL's model input for ``model_id``."""
    return _VLPrepare(vl_size(model_id))


def hd_preparer(model_id: str) -> Callable:
    """A picklable ``PIL image -> float32 array``: 4KHD's model input for ``model_id``."""
    return _HDPrepare(*hd_settings(model_id))

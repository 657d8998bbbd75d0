"""The 4KHD layout as a CPU-stage function, configured from the checkpoint when it is local.

``hd_num`` and the crop size come from the model's ``config.json`` when ``model_id`` is a local
directory (tiny models set both), else the published values (25 crops of 336).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from operators.vlm.xcomposer2.config import DEFAULT_HD_NUM, HD_CROP_SIZE


def hd_settings(model_id: str) -> tuple[int, int]:
    """(hd_num, crop) for ``model_id``."""
    path = Path(model_id) / "config.json"
    hd_num, crop = DEFAULT_HD_NUM, HD_CROP_SIZE
    if path.is_file():
        raw = json.loads(path.read_text())
        hd_num = int(raw.get("hd_num") or hd_num)
        crop = int((raw.get("vision_config") or {}).get("image_size") or crop)
    return hd_num, crop


def hd_preparer(model_id: str) -> Callable:
    """A picklable ``PIL image -> PIL image`` applying the 4KHD layout of ``model_id``."""
    hd_num, crop = hd_settings(model_id)
    return _HDPrepare(hd_num, crop)


class _HDPrepare:
    def __init__(self, hd_num: int, crop: int):
        self.hd_num, self.crop = hd_num, crop

    def __call__(self, image):
        from operators.vlm.xcomposer2.hd import prepare_4khd

        return prepare_4khd(image, self.hd_num, self.crop)

"""The 4KHD layout as a CPU-stage function, configured from the spec and the checkpoint.

``hd_num``: the spec's (``model.hd_num``), else the checkpoint config's when ``model_id`` is a local
directory, else the remote code's default (25). The crop size: the checkpoint's vision config (336
in every published checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from operators.vlm.xcomposer2.config import DEFAULT_HD_NUM, HD_CROP_SIZE


def hd_settings(model_id: str, hd_num: int | None = None) -> tuple[int, int]:
    """(hd_num, crop) for ``model_id``; an explicit ``hd_num`` wins over the checkpoint's."""
    path = Path(model_id) / "config.json"
    configured, crop = DEFAULT_HD_NUM, HD_CROP_SIZE
    if path.is_file():
        raw = json.loads(path.read_text())
        configured = int(raw.get("hd_num") or configured)
        crop = int((raw.get("vision_config") or {}).get("image_size") or crop)
    return int(hd_num or configured), crop


def hd_preparer(model_id: str, hd_num: int | None = None) -> Callable:
    """A picklable ``PIL image -> (laid-out image, (rows, cols))`` applying the 4KHD layout of ``model_id``."""
    hd_num, crop = hd_settings(model_id, hd_num)
    return _HDPrepare(hd_num, crop)


class _HDPrepare:
    def __init__(self, hd_num: int, crop: int):
        self.hd_num, self.crop = hd_num, crop

    def __call__(self, image):
        from operators.vlm.xcomposer2.hd import hd_grid, prepare_4khd

        out = prepare_4khd(image, self.hd_num, self.crop)
        return out, hd_grid(out.width, out.height, self.crop)

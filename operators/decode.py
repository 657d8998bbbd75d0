"""Decode and normalise images on CPU tasks: upright, RGB, bounded size, one status per row.

Contract of the produced columns: ``pixels`` holds ``width * height * 3`` bytes of RGB,
row-major, EXIF orientation applied, alpha composited on white, the longest side at most the
configured cap. ``orig_width`` / ``orig_height`` are the upright size the file declares;
``num_frames`` counts frames of animated images (the first frame is used).

The decompression-bomb check reads only the header: an image whose declared pixel count is
over the limit ends as ``too_large`` before a single pixel is decoded.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from operators.base import Resources, Stage
from operators.rows import RowFailure, map_rows
from schemas import columns as C
from schemas.spec import DecodeConfig
from schemas.status import Status

if TYPE_CHECKING:
    from PIL import Image

_TRANSPOSED = {5, 6, 7, 8}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
PRODUCES = (C.PIXELS, C.WIDTH, C.HEIGHT, C.ORIG_WIDTH, C.ORIG_HEIGHT, C.ORIG_FORMAT, C.NUM_FRAMES)


def _to_rgb(im: Image.Image) -> Image.Image:
    import numpy as np
    from PIL import Image

    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit-depth greyscale: map the 16-bit range onto 8 bits rather than clipping.
        arr = np.asarray(im).astype(np.float64)
        scale = 256.0 if im.mode.startswith("I") else 1.0
        im = Image.fromarray(np.clip(arr / scale, 0, 255).astype(np.uint8), mode="L")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_image(data: bytes, config: DecodeConfig, max_side: int) -> dict:
    """Decode ``data`` into the produced columns.

    Raises:
        RowFailure: with ``not_an_image``, ``too_large`` or ``decode_error``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    # Our own header check below replaces Pillow's global bomb guard.
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RowFailure(Status.NOT_AN_IMAGE, "bytes are not an image in any format Pillow reads") from None
    except Exception as exc:  # noqa: BLE001 - malformed header
        raise RowFailure(Status.DECODE_ERROR, f"unreadable image header: {exc}") from None
    width, height = im.size
    fmt = im.format
    if width <= 0 or height <= 0:
        raise RowFailure(Status.DECODE_ERROR, f"image declares an empty size {width}x{height}")
    if width * height > config.max_source_pixels:
        raise RowFailure(
            Status.TOO_LARGE,
            f"header declares {width}x{height} = {width * height} pixels, over "
            f"decode.max_source_pixels={config.max_source_pixels} (possible decompression bomb)",
        )
    num_frames = int(getattr(im, "n_frames", 1) or 1)
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the image
        orientation = 1
    orig_w, orig_h = (height, width) if orientation in _TRANSPOSED else (width, height)
    try:
        if num_frames > 1:
            im.seek(0)
        if fmt == "JPEG" and max(width, height) > max_side:
            # DCT-domain downscale: decodes a huge JPEG at 1/2, 1/4 or 1/8 size, never full.
            scale = max_side / max(width, height)
            im.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        im.load()
        im = ImageOps.exif_transpose(im) if orientation != 1 else im
        im = _to_rgb(im)
        if max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        pixels = im.tobytes()
    except RowFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise RowFailure(Status.DECODE_ERROR, f"{fmt or 'image'} data is truncated or corrupt: {exc}") from None
    return {
        C.PIXELS: pixels,
        C.WIDTH: im.size[0],
        C.HEIGHT: im.size[1],
        C.ORIG_WIDTH: orig_w,
        C.ORIG_HEIGHT: orig_h,
        C.ORIG_FORMAT: fmt,
        C.NUM_FRAMES: num_frames,
    }


class DecodeBatch:
    """Per-batch decode function (picklable)."""

    def __init__(self, config: DecodeConfig, max_side: int):
        self.config = config
        self.max_side = max_side

    def __call__(self, table):
        return map_rows(table, lambda row: decode_image(row[C.IMAGE_BYTES], self.config, self.max_side), PRODUCES,
                        failure_status=Status.DECODE_ERROR, drop=(C.IMAGE_BYTES,))


#: The cap when neither the spec nor a model family names one (decoding without a model in view).
DEFAULT_MAX_SIDE = 1024


def decode_stage(config: DecodeConfig, max_side: int | None = None, batch_size: int = 32) -> Stage:
    """Turn ``image_bytes`` into normalised RGB ``pixels`` on CPU tasks; drops the encoded bytes.

    ``max_side``: the longest side the model family uses. The spec's ``decode.max_side``, when set,
    is the cap instead (the pipeline builder refuses one below the family's need).
    """
    cap = config.max_side or max_side or DEFAULT_MAX_SIDE
    return Stage(
        "decode", DecodeBatch, dict(config=config, max_side=cap),
        needs=(C.IMAGE_BYTES, C.STATUS, C.ERROR), produces=PRODUCES, drops=(C.IMAGE_BYTES,),
        resources=Resources(num_cpus=1), batch_size=batch_size,
    )

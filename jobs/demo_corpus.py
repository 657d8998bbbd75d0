"""The demo corpus: real photographs that scikit-image ships, generated images, one planted bad file.

Written to any URI (local directory or ``s3://bucket/prefix``) so the demo and the tests read
it through the same source as production corpora.
"""

from __future__ import annotations

import io
import math
import posixpath
from pathlib import Path

from operators.storage import filesystem
from schemas.spec import StorageConfig

#: Photographs and scans bundled inside the scikit-image wheel (no download needed).
SKIMAGE_FILES = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "color.png", "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png",
    "logo.png", "microaneurysms.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png",
    "phantom.png", "retina.jpg", "rocket.jpg", "text.png", "chessboard_RGB.png", "no_time_for_that_tiny.gif",
)
#: The planted bad file: text bytes under an image name.
BAD_NAME = "not-really-a-photo.jpg"


def _generated() -> dict[str, bytes]:
    from PIL import Image, ImageDraw

    out: dict[str, bytes] = {}
    for k in range(8):
        w, h = 320 + 40 * k, 240 + 24 * k
        im = Image.new("RGB", (w, h))
        px = im.load()
        for y in range(h):
            for x in range(w):
                px[x, y] = (int(255 * x / w), int(255 * y / h), int(127 + 127 * math.sin((x + y + 30 * k) / 23)))
        draw = ImageDraw.Draw(im)
        draw.ellipse((w // 4, h // 4, w // 2 + 10 * k, h // 2 + 8 * k), fill=(255 - 20 * k, 40, 20 * k))
        draw.rectangle((w // 2, h // 2, w - 20, h - 20), outline=(0, 0, 0), width=3)
        buf = io.BytesIO()
        fmt = "JPEG" if k % 2 == 0 else "PNG"
        im.save(buf, format=fmt)
        out[f"generated-{k:02d}.{fmt.lower().replace('jpeg', 'jpg')}"] = buf.getvalue()
    rgba = Image.new("RGBA", (200, 120), (0, 0, 255, 0))
    ImageDraw.Draw(rgba).rectangle((20, 20, 180, 100), fill=(255, 0, 0, 200))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    out["generated-transparent.png"] = buf.getvalue()
    return out


def demo_files() -> dict[str, bytes]:
    """Name -> bytes of every demo object (deterministic)."""
    import skimage

    data_dir = Path(skimage.__file__).parent / "data"
    files = {f"photos/{name}": (data_dir / name).read_bytes() for name in SKIMAGE_FILES if (data_dir / name).exists()}
    files.update({f"generated/{name}": data for name, data in _generated().items()})
    files[f"bad/{BAD_NAME}"] = b"this is a text file, not a JPEG\n"
    return files


def write_demo_corpus(dest: str, storage: StorageConfig | None = None, planted: bool = False) -> int:
    """Write the demo corpus under ``dest`` (``planted``: its photographs with duplicates, see planted_duplicates)."""
    fs, root = filesystem(dest, storage)
    files = planted_duplicates()[0] if planted else demo_files()
    for name, data in files.items():
        path = posixpath.join(root, name)
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)
    return len(files)



#: How each planted near-duplicate is made from its original (``planted_duplicates``).
VARIANTS = ("copy", "resized", "reencoded", "cropped")
#: A near-duplicate the photographs bring themselves: a stereo pair, seen from two points a hand apart.
STEREO_PAIR = ("photos/motorcycle_right.png", "photos/motorcycle_left.png")


def _variant(data: bytes, how: str) -> bytes:
    from PIL import Image

    if how == "copy":
        return data
    im = Image.open(io.BytesIO(data))
    im.seek(0)
    im = im.convert("RGB")
    w, h = im.size
    if how == "resized":
        im = im.resize((max(16, w * 3 // 5), max(16, h * 3 // 5)), Image.Resampling.LANCZOS)
    elif how == "cropped":
        dx, dy = max(1, w * 3 // 100), max(1, h * 3 // 100)
        im = im.crop((dx, dy, w - dx, h - dy))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=70 if how == "reencoded" else 90)
    return buf.getvalue()


def distinct_images(n: int, seed: int = 0) -> dict[str, bytes]:
    """``n`` unrelated pictures (smooth random colour fields with a random shape), deterministic."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = {}
    for k in range(n):
        w, h = int(rng.integers(160, 400)), int(rng.integers(120, 300))
        field = rng.random((4, 4, 3)) * 255
        im = Image.fromarray(field.astype(np.uint8), "RGB").resize((w, h), Image.Resampling.BICUBIC)
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        ImageDraw.Draw(im).ellipse((x0, y0, x0 + w // 3, y0 + h // 3), fill=colour)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out[f"distinct/field-{k:02d}.png"] = buf.getvalue()
    return out


def planted_duplicates(distinct: int = 12) -> tuple[dict[str, bytes], dict[str, str]]:
    """Photographs with duplicates planted, and unrelated images: ``(name -> bytes, duplicate -> original)``.

    Every photograph of the demo corpus gets, in turn, one of :data:`VARIANTS`: a byte-for-byte copy
    (an exact duplicate), a 60 % resize, a JPEG re-encode at quality 70, or a 3 % crop of each side
    (near duplicates), named ``dups/<variant>/<original>``; :data:`STEREO_PAIR` is a near duplicate
    the photographs bring themselves. ``distinct`` unrelated images (:func:`distinct_images`) and the
    planted text file complete it. (The demo's generated images are left out: they are one template
    drawn eight times, near duplicates of each other by design.)
    """
    files = {n: d for n, d in demo_files().items() if n.startswith(("photos/", "bad/"))}
    truth: dict[str, str] = {STEREO_PAIR[0]: STEREO_PAIR[1]} if STEREO_PAIR[0] in files else {}
    originals = sorted(n for n in files if n.startswith("photos/"))
    for k, name in enumerate(originals):
        how = VARIANTS[k % len(VARIANTS)]
        base = name.split("/", 1)[1]
        dup = f"dups/{how}/{base if how == 'copy' else base.rsplit('.', 1)[0] + '.jpg'}"
        files[dup] = _variant(files[name], how)
        truth[dup] = name
    files.update(distinct_images(distinct))
    return files, truth

"""Generators of test images, one function per case a corpus throws at the decoder."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _save(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def rgb(w: int = 64, h: int = 48, color=(200, 30, 30), fmt: str = "JPEG") -> bytes:
    return _save(Image.new("RGB", (w, h), color), fmt)


def gradient(w: int = 96, h: int = 64, fmt: str = "PNG") -> bytes:
    im = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    return _save(im, fmt)


def truncated_jpeg() -> bytes:
    data = _save(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG")
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = _save(Image.effect_noise((256, 256), 64).convert("RGB"), "PNG")
    return data[: len(data) // 2]


def png_bomb(w: int = 100_000, h: int = 100_000) -> bytes:
    """A small PNG whose header declares ``w`` x ``h`` pixels (the IHDR CRC is valid)."""
    data = bytearray(_save(Image.new("L", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def huge_jpeg(w: int = 6000, h: int = 4000) -> bytes:
    return _save(Image.new("RGB", (w, h), (10, 120, 200)), "JPEG", quality=50)


def cmyk_jpeg() -> bytes:
    return _save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG")


def gray16_png() -> bytes:
    im = Image.new("I;16", (40, 30))
    im.putdata([40000] * (40 * 30))
    return _save(im, "PNG")


def bilevel_png() -> bytes:
    return _save(Image.new("1", (40, 30), 1), "PNG")


def palette_transparent_png() -> bytes:
    im = Image.new("P", (40, 30), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (0, 0, 20, 30))
    return _save(im, "PNG", transparency=0)


def rgba_transparent_png() -> bytes:
    im = Image.new("RGBA", (40, 30), (0, 0, 255, 0))
    im.paste((255, 0, 0, 255), (0, 0, 20, 30))
    return _save(im, "PNG")


def animated_gif(frames: int = 3) -> bytes:
    ims = [Image.new("RGB", (32, 32), (80 * i, 255 - 80 * i, 0)) for i in range(frames)]
    return _save(ims[0], "GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)


def animated_webp(frames: int = 4) -> bytes:
    ims = [Image.new("RGB", (32, 32), (60 * i, 0, 0)) for i in range(frames)]
    return _save(ims[0], "WEBP", save_all=True, append_images=ims[1:], duration=100)


def exif_rotated_jpeg() -> bytes:
    """Stored 60 wide x 40 high, left half red; EXIF orientation 6 (rotate 90 clockwise to view)."""
    im = Image.new("RGB", (60, 40), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 30, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(im, "JPEG", exif=exif.tobytes(), quality=95)


def text_as_jpg() -> bytes:
    return b"this is a text file, not a JPEG\n"


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """A tar archive (WebDataset shard) holding ``members`` (name -> bytes), in order."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()

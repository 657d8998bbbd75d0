"""Decode and normalisation: each corpus case ends with the right status and pixels."""

from __future__ import annotations

import pyarrow as pa
import pytest
from PIL import Image, ImageFile

from operators.decode import DecodeBatch, decode_image
from operators.rows import RowFailure
from schemas import columns as C
from schemas.spec import DecodeConfig
from schemas.status import Status
from tests import corpus

CFG = DecodeConfig(max_side=512, max_source_pixels=50_000_000)


def pixels_of(out: dict) -> Image.Image:
    return Image.frombytes("RGB", (out[C.WIDTH], out[C.HEIGHT]), out[C.PIXELS])


def test_plain_jpeg_and_png():
    for data, fmt in ((corpus.rgb(), "JPEG"), (corpus.gradient(), "PNG")):
        out = decode_image(data, CFG, 512)
        assert out[C.ORIG_FORMAT] == fmt
        assert len(out[C.PIXELS]) == out[C.WIDTH] * out[C.HEIGHT] * 3
        assert out[C.NUM_FRAMES] == 1


@pytest.mark.parametrize(
    "data, status",
    [
        (corpus.text_as_jpg(), Status.NOT_AN_IMAGE),
        (b"", Status.NOT_AN_IMAGE),
        (corpus.truncated_jpeg(), Status.DECODE_ERROR),
        (corpus.truncated_png(), Status.DECODE_ERROR),
        (corpus.png_bomb(), Status.TOO_LARGE),
    ],
    ids=["text", "zero-bytes", "truncated-jpeg", "truncated-png", "bomb"],
)
def test_bad_input_is_a_status(data, status):
    with pytest.raises(RowFailure) as info:
        decode_image(data, CFG, 512)
    assert info.value.status == status
    assert info.value.message


def test_bomb_rejected_from_header_without_decoding(monkeypatch):
    def no_decode(self, *a, **k):
        raise AssertionError("pixels were decoded")

    bomb = corpus.png_bomb()
    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(RowFailure) as info:
        decode_image(bomb, CFG, 512)
    assert "100000x100000" in info.value.message


def test_huge_image_is_reduced_and_original_size_recorded():
    out = decode_image(corpus.huge_jpeg(), CFG, 512)
    assert (out[C.ORIG_WIDTH], out[C.ORIG_HEIGHT]) == (6000, 4000)
    assert max(out[C.WIDTH], out[C.HEIGHT]) == 512
    assert out[C.WIDTH] / out[C.HEIGHT] == pytest.approx(1.5, rel=0.01)


@pytest.mark.parametrize(
    "make", [corpus.cmyk_jpeg, corpus.gray16_png, corpus.bilevel_png], ids=["cmyk", "16bit", "1bit"]
)
def test_modes_become_rgb(make):
    out = decode_image(make(), CFG, 512)
    assert len(out[C.PIXELS]) == out[C.WIDTH] * out[C.HEIGHT] * 3


def test_16bit_keeps_brightness():
    r, g, b = pixels_of(decode_image(corpus.gray16_png(), CFG, 512)).getpixel((5, 5))
    assert r == g == b == 40000 // 256


@pytest.mark.parametrize("make", [corpus.palette_transparent_png, corpus.rgba_transparent_png])
def test_transparency_composited_on_white(make):
    im = pixels_of(decode_image(make(), CFG, 512))
    assert im.getpixel((35, 15)) == (255, 255, 255)  # transparent half
    assert im.getpixel((5, 15)) == (255, 0, 0)  # opaque red half


@pytest.mark.parametrize("make, frames", [(corpus.animated_gif, 3), (corpus.animated_webp, 4)], ids=["gif", "webp"])
def test_animated_first_frame_and_frame_count(make, frames):
    out = decode_image(make(), CFG, 512)
    assert out[C.NUM_FRAMES] == frames
    assert (out[C.WIDTH], out[C.HEIGHT]) == (32, 32)


def test_exif_orientation_applied():
    out = decode_image(corpus.exif_rotated_jpeg(), CFG, 512)
    assert (out[C.WIDTH], out[C.HEIGHT]) == (40, 60)
    assert (out[C.ORIG_WIDTH], out[C.ORIG_HEIGHT]) == (40, 60)
    im = pixels_of(out)
    top, bottom = im.getpixel((20, 5)), im.getpixel((20, 55))
    assert top[0] > 200 and top[2] < 60  # the red half is on top once upright
    assert bottom[2] > 200 and bottom[0] < 60


def test_batch_keeps_every_row_and_passes_failures_through():
    table = pa.table({
        C.ID: ["a", "b", "c", "d"],
        C.IMAGE_BYTES: [corpus.rgb(), corpus.text_as_jpg(), None, corpus.gradient()],
        C.STATUS: ["ok", "ok", "not_found", "ok"],
        C.ERROR: [None, None, "gone", None],
    })
    out = DecodeBatch(CFG, 512)(table)
    assert out.num_rows == 4
    assert out.column(C.ID).to_pylist() == ["a", "b", "c", "d"]
    assert out.column(C.STATUS).to_pylist() == ["ok", "not_an_image", "not_found", "ok"]
    assert out.column(C.ERROR).to_pylist()[2] == "gone"
    assert C.IMAGE_BYTES not in out.column_names
    assert out.column(C.PIXELS).to_pylist()[1] is None

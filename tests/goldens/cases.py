"""The golden cases: images and prompts shared by the golden script and the tests that read its output.

``tests/goldens/make_goldens.py`` runs each case through the public modeling code of the family's
checkpoints (the cards' ``model.chat()`` path) and records what came out in
``tests/data/goldens/<family>.json``; ``tests/integration/test_goldens.py`` (InternVL chat) and
``tests/integration/test_xcomposer2_parity.py`` (XComposer2) run the same cases through vLLM and
compare. Images are drawn here, deterministically, so the numbers need no image files.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Generated tokens per case (greedy, EOS ignored, as far as the goldens go).
MAX_NEW_TOKENS = 6
#: Log-probabilities kept per generated step (the most likely entries of the public model).
TOP = 20


@dataclass(frozen=True)
class Case:
    """One golden case.

    Attributes:
        name: key in the golden file.
        instruction: the user's text, without image placeholders (the family places them).
        images: names of :func:`image` drawings, in prompt order.
        system: system prompt; None = the family's default (the card's meta instruction).
        hd_num: 4KHD tiles per image; None = the checkpoint's default.
    """

    name: str
    instruction: str
    images: tuple[str, ...] = ()
    system: str | None = None
    hd_num: int | None = None


_SIZES = {"wide": (150, 90), "tall": (64, 200), "square": (300, 300), "small": (90, 40),
          "tile": (336, 336), "photo": (1800, 1200)}


def image(name: str):
    """The case image ``name``: coloured ellipses on a plain ground, the same on every machine."""
    from PIL import Image, ImageDraw

    size = _SIZES[name]
    seed = sorted(_SIZES).index(name) + 1
    im = Image.new("RGB", size, ((seed * 70) % 256, (seed * 130) % 256, (seed * 50) % 256))
    draw = ImageDraw.Draw(im)
    for k in range(6):
        x, y = (seed * 37 + k * 53) % size[0], (seed * 11 + k * 29) % size[1]
        draw.ellipse([x, y, x + size[0] // 4, y + size[1] // 4],
                     fill=((k * 80) % 256, 255 - k * 40, seed * 60 % 256))
    return im


XCOMPOSER2_VL = (
    Case("text-only", "What is in the sky?"),
    Case("one-image", "Describe this image in detail.", ("wide",)),
    Case("one-image-no-system", "What?", ("tall",), system=""),
    Case("two-images", "Compare the two images.", ("square", "small")),
)

XCOMPOSER2_4KHD = (
    Case("text-only", "What is in the sky?"),
    # A side that is a multiple of 336 is still rescaled to the largest grid: 5x5 tiles at hd_num 25.
    Case("hd-336", "Describe this image in detail.", ("tile",)),
    Case("hd-336-hd9", "Describe this image.", ("tile",), hd_num=9),
    Case("hd-large", "Describe this image in detail.", ("photo",)),
)

INTERNVL_CHAT = (
    Case("text-only", "What is in the sky?"),
    Case("one-image", "Describe this image in detail.", ("photo",)),
    Case("one-image-no-system", "What?", ("tall",), system=""),
    Case("two-images", "Compare the two images.", ("square", "small")),
)

CASES = {"xcomposer2-vl": XCOMPOSER2_VL, "xcomposer2-4khd": XCOMPOSER2_4KHD, "internvl-chat": INTERNVL_CHAT}

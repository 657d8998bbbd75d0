"""The cases of the XComposer v1 goldens (:mod:`tests.golden_xcomposer.make_golden`; oracle: ``public.py``).

The cases are shared with the tests (``tests/unit/test_xcomposer.py``, ``tests/integration/test_xcomposer_parity.py``):
each names a family, its instruction, the system text and the images; the golden file holds what the
oracle computed for them, the tests rebuild the same prompts through the family registry.
"""

from __future__ import annotations

from tests.xcomposer2_cases import _images as images  # noqa: F401 - re-exported: the four test pictures

EOH = "<TOKENS_UNUSED_0>"
LONG = "Describe the image in detail, the colors, the shapes and where each one is, left or right."
SHARE = "Analyze the image in a comprehensive and detailed manner."
META = (
    "meta instruction\nYou are an AI assistant whose name is 浦语.\n- 浦语 is a conversational language model "
    "that is developed by Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and "
    "harmless.\n- 浦语 can understand and communicate fluently in the language chosen by the user such as English "
    "and 中文.\nconversation\n"
)


def cases(variant: str) -> list[dict]:
    """The cases of ``variant``: family, instruction, system (None: the family's), image indices, upstream segments."""
    card = lambda text, image, system="": dict(  # noqa: E731 - a table of cases reads better inline
        segments=[[system + " <|User|>:", True], *([["image", image]] if image is not None else []), [text, False],
                  ["\n" + EOH + " <|Bot|>:", False]], instruction=text, system=system,
        images=[] if image is None else [image])
    if variant == "xcomposer-vl":
        return [dict(name="one-image", family="xcomposer-vl", **card("Describe the image.", 0)),
                dict(name="one-image-long", family="xcomposer-vl", **card(LONG, 1)),
                dict(name="text-only", family="xcomposer-vl", **card("What is in the sky?", None)),
                dict(name="chat-meta", family="xcomposer-7b", **card("What is shown?", 2, META))]
    if variant == "share-captioner":
        return [dict(name=f"image-{i}", family="share-captioner", instruction=SHARE, system="", images=[i],
                     segments=[["<|User|>:", True], ["image", i], [SHARE + EOH + "\n<|Bot|>:", False]])
                for i in range(3)]
    if variant == "xcomposer-7b-4bit":
        return [dict(name="chat-meta", family="xcomposer-7b-4bit", **card("What is shown?", 3, META)),
                dict(name="text-only", family="xcomposer-7b-4bit", **card("What is in the sky?", None, META))]
    raise KeyError(variant)

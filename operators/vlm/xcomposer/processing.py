"""vLLM multimodal processing for InternLM-XComposer v1: image -> 224 px pixels, ``<ImageHere>`` -> N tokens.

Runs in vLLM's input processing (CPU, the engine's front end). Every image becomes the same number of
language-model positions, ``num_query_token + 2`` (start flag, the perceive sampler's queries, end flag:
66 for the published checkpoints' 64 queries), whatever its size. The processor, dummy-input builder and
vLLM-version hooks are XComposer2's (``operators/vlm/xcomposer2/processing.py``); only the sizes and the
image preparation differ, so only the processing info is this family's.
"""

from __future__ import annotations

from collections.abc import Mapping

from operators.vlm.xcomposer.config import InternLMXComposerConfig
from operators.vlm.xcomposer2.processing import XComposer2ProcessingInfo


class XComposerProcessingInfo(XComposer2ProcessingInfo):
    """Sizes and token counts of a v1 checkpoint, from its config."""

    def get_hf_config(self) -> InternLMXComposerConfig:
        return self.ctx.get_hf_config(InternLMXComposerConfig)

    def image_size(self) -> int:
        return int(self.get_hf_config().eva()["image_size"])

    def prepare(self, image, mm_kwargs: Mapping[str, object] | None = None, index: int = 0):
        """The image the vision tower sees: a bicubic resize to the tower's size (a no-op when already there).

        Same signature as XComposer2's hook (the shared processor passes ``mm_kwargs`` and the image index,
        which v1, one fixed-size image layout, does not need).
        """
        import torch
        from PIL import Image

        from operators.vlm.xcomposer2.hd import prepare_vl

        if not isinstance(image, Image.Image):
            image = Image.fromarray(image if not isinstance(image, torch.Tensor) else image.numpy())
        return prepare_vl(image, self.image_size())

    def num_image_tokens(self, width: int, height: int, mm_kwargs: Mapping[str, object] | None = None,
                         index: int = 0) -> int:
        return self.get_hf_config().num_image_tokens()

    def largest_image(self) -> tuple[int, int]:
        return self.image_size(), self.image_size()

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.get_hf_config().num_image_tokens()}

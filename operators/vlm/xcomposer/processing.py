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

    def model_input(self, image, mm_kwargs: Mapping[str, object] | None = None):
        """A raw image's model input: bicubic resize to the tower's size (a no-op when already there), normalised,
        3 x size x size float32 (``vis_processor``, ``operators/vlm/xcomposer/image.py``)."""
        import torch
        from PIL import Image

        from operators.vlm.xcomposer.image import pixel_values

        if not isinstance(image, Image.Image):
            image = Image.fromarray(image if not isinstance(image, torch.Tensor) else image.numpy())
        return pixel_values(image, self.image_size()).numpy()

    def num_input_tokens(self, height: int, width: int) -> int:
        """Tokens of a prepared input (the tower's square), the same for every image.

        Raises:
            ValueError: the input is not the tower's size.
        """
        size = self.image_size()
        if (height, width) != (size, size):
            raise ValueError(f"a prepared XComposer input is {size}x{size}; got {width}x{height}")
        return self.get_hf_config().num_image_tokens()

    def num_image_tokens(self, width: int, height: int, mm_kwargs: Mapping[str, object] | None = None) -> int:
        return self.get_hf_config().num_image_tokens()

    def largest_image(self) -> tuple[int, int]:
        return self.image_size(), self.image_size()

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.get_hf_config().num_image_tokens()}

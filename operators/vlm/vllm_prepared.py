"""Prepared images in vLLM's multimodal input path, for the model plugins whose processor vlmbatch owns.

The pipeline's CPU ``prepare`` stage makes each image's model input (``ModelFamily.cpu_prepare``);
:class:`~operators.vlm.vllm_engine.VLLMEngine` sends it as ``{"image": {"pixel_values": [tensor, ...]}}``.
That form IS the mark of a prepared input: a plugin's processor info returns :func:`prepared_parser`
from ``get_data_parser``, which turns such a dict into :class:`PreparedImageItems` (one tensor per
image, handed to the model unchanged as ``pixel_values``), while PIL images and arrays stay raw
images for the processor's own path. Nothing is inferred from an image's size.

Own item class rather than vLLM's ``DictEmbeddingItems``: those are embeddings to vLLM (they need
``enable_mm_embeds`` and are validated as such), and their constructor differs between vLLM 0.24
and 0.29; the base ``ModalityDataItems`` interface used here is the same in both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from vllm.multimodal.parse import ModalityDataItems, MultiModalDataParser

PIXEL_VALUES = "pixel_values"


class PreparedImageItems(ModalityDataItems[Sequence[torch.Tensor], torch.Tensor]):
    """Images already in the model's input form: processed by nothing, passed through as ``pixel_values``."""

    def __init__(self, data: Sequence[torch.Tensor]) -> None:
        super().__init__(list(data), "image")

    def get_count(self) -> int:
        return len(self.data)

    def get(self, index: int) -> torch.Tensor:
        return self.data[index]

    def get_processor_data(self) -> Mapping[str, object]:
        return {}

    def get_passthrough_data(self) -> Mapping[str, object]:
        return {PIXEL_VALUES: list(self.data)}


def is_prepared(data: object) -> bool:
    """True for the prepared form ``{"pixel_values": tensor or list of tensors}``."""
    return isinstance(data, Mapping) and set(data) == {PIXEL_VALUES}


class _PreparedImageParser(MultiModalDataParser):
    def _parse_image_data(self, data):
        if isinstance(data, Mapping):
            if not is_prepared(data):
                raise ValueError(f"a prepared image input holds only {PIXEL_VALUES!r}; got keys {sorted(data)}")
            values = data[PIXEL_VALUES]
            tensors = list(values.unbind(0)) if isinstance(values, torch.Tensor) and values.dim() == 4 else values
            if isinstance(tensors, torch.Tensor):
                tensors = [tensors]
            return PreparedImageItems([torch.as_tensor(t) for t in tensors])
        return super()._parse_image_data(data)


def prepared_parser(default: MultiModalDataParser) -> MultiModalDataParser:
    """vLLM's default parser for the model (``default``, every setting kept) that also takes prepared images."""
    parser = _PreparedImageParser.__new__(_PreparedImageParser)
    parser.__dict__.update(default.__dict__)
    return parser

"""vLLM multimodal processing for InternLM-XComposer2: image -> pixels, ``<ImageHere>`` -> N tokens.

Runs in vLLM's input processing (CPU, the engine's front end), never on the accelerator. Each
``<ImageHere>`` token of the prompt becomes as many copies of itself as the image has
embeddings; the model scatters the image embeddings there and applies its Partial LoRA at
exactly those positions (vLLM's ``is_multimodal``).

Two kinds of image input, told apart by their form (``operators/vlm/vllm_prepared.py``): a raw
image (PIL or H x W x 3 array) is resized / laid out and normalised here; a prepared one
(``{"pixel_values": [...]}``, what vlmbatch's CPU ``prepare`` stage made with the same functions,
``operators/vlm/xcomposer2/cpu.py``) is passed to the model untouched, its token count read from
its shape. The pipeline sends prepared images, so the engine's process does no image work.

Number of tokens per image: VL ``(image_size / patch)^2`` (1225 at 490); 4KHD
``(h*w + 1) * s^2 + 1 + (h + 1) * s`` with ``s = crop / patch / 2`` (see ``hd.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageProcessorItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
)

from operators.vlm.vllm_prepared import PIXEL_VALUES, PreparedImageItems, prepared_parser
from operators.vlm.xcomposer2.config import IMAGE_TOKEN, InternLMXComposer2Config
from operators.vlm.xcomposer2.cpu import model_input_4khd, model_input_vl
from operators.vlm.xcomposer2.hd import hd_num_tokens, hd_size


class XComposer2ProcessingInfo(BaseProcessingInfo):
    """Sizes and token counts, from the checkpoint's config."""

    def get_hf_config(self) -> InternLMXComposer2Config:
        return self.ctx.get_hf_config(InternLMXComposer2Config)

    def variant(self) -> str:
        return self.get_hf_config().variant(self.ctx.model_config.model)

    def clip(self) -> dict:
        return self.get_hf_config().clip_config(self.variant())

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def get_data_parser(self):
        """vLLM's parser, plus the prepared form ``{"pixel_values": [...]}`` (the pipeline's CPU stage made it)."""
        return prepared_parser(super().get_data_parser())

    def image_token_id(self) -> int:
        tok = self.get_tokenizer()
        tid = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        if not isinstance(tid, int) or tid == getattr(tok, "unk_token_id", None):
            raise ValueError(f"the tokenizer has no {IMAGE_TOKEN} token")
        return tid

    def model_input(self, image):
        """A raw image's model input, float32 3 x H x W: the same functions as the CPU stage's preparers."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(image if not isinstance(image, torch.Tensor) else image.numpy())
        size = int(self.clip()["image_size"])
        if self.variant() == "vl":
            return model_input_vl(image, size)
        return model_input_4khd(image, self.get_hf_config().effective_hd_num(), size)

    def num_input_tokens(self, height: int, width: int) -> int:
        """Tokens of a prepared input of ``height`` x ``width`` pixels (4KHD: its grid of crops)."""
        c = self.clip()
        side = int(c["image_size"]) // int(c["patch_size"])
        return side * side if self.variant() == "vl" else hd_num_tokens(width, height, int(c["image_size"]), side // 2)

    def num_image_tokens(self, width: int, height: int) -> int:
        c = self.clip()
        side = int(c["image_size"]) // int(c["patch_size"])
        if self.variant() == "vl":
            return side * side
        crop = int(c["image_size"])
        w, h = hd_size(width, height, self.get_hf_config().effective_hd_num(), crop)
        return hd_num_tokens(w, h, crop, side // 2)

    def largest_image(self) -> tuple[int, int]:
        """(width, height) of an image with the most tokens: one column of ``hd_num`` crops for 4KHD."""
        crop = int(self.clip()["image_size"])
        if self.variant() == "vl":
            return crop, crop
        return crop, crop * self.get_hf_config().effective_hd_num()

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.num_image_tokens(*self.largest_image())}


class XComposer2DummyInputsBuilder(BaseDummyInputsBuilder[XComposer2ProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_TOKEN * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None):
        width, height = self.info.largest_image()
        overrides = (mm_options or {}).get("image")
        return {"image": self._get_dummy_images(width=width, height=height, num_images=mm_counts.get("image", 0),
                                                overrides=overrides)}


class XComposer2MultiModalProcessor(BaseMultiModalProcessor[XComposer2ProcessingInfo]):
    """No Hugging Face processor exists for this family: pixels are made here."""

    def _apply_hf_processor_main(self, *args, **kwargs):
        # vLLM 0.29: (mm_items, hf_processor_mm_kwargs) -> pixels only. vLLM 0.24: (prompt, mm_items,
        # mm_kwargs, tok_kwargs, *, enable_hf_prompt_update) -> (ids, pixels, applied): its base class
        # tokenises and calls _call_hf_processor below, so defer to it.
        if "prompt" in kwargs or len(args) > 2:
            return super()._apply_hf_processor_main(*args, **kwargs)
        return self._pixels(*args, **kwargs)

    def _pixels(self, mm_items, hf_processor_mm_kwargs) -> BatchFeature:
        if not mm_items.get_all_counts().get("image", 0):
            return BatchFeature({})
        processor_data, passthrough = self._get_hf_mm_data(mm_items)
        if passthrough:  # prepared images: the model's input already
            return BatchFeature(dict(passthrough))
        return BatchFeature({PIXEL_VALUES: self._pixel_values(processor_data.get("images") or [])})

    def _pixel_values(self, images) -> list[torch.Tensor]:
        """One normalised CHW tensor per raw image, in the variant's layout (VL resize or 4KHD tiles)."""
        return [torch.from_numpy(self.info.model_input(im)) for im in images]

    # vLLM 0.24 (the GPU machines') processes the prompt *text* with these two hooks; 0.29 never
    # calls them. Exercised on an H100 with 0.24 (bench/results/gpu/), not by the CPU tests (0.29).
    def _call_hf_processor(self, prompt: str, mm_data: Mapping[str, object], mm_kwargs=None, tok_kwargs=None):
        out: dict = {"input_ids": torch.tensor([self.info.get_tokenizer()(prompt)["input_ids"]])}
        images = list(mm_data.get("images") or [])
        if images:
            out["pixel_values"] = self._pixel_values(images)
        return BatchFeature(out)

    def _hf_processor_applies_updates(self, *args, **kwargs) -> bool:
        return False

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        return dict(pixel_values=MultiModalFieldConfig.batched("image"))

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptReplacement]:
        token = self.info.image_token_id()

        def replacement(item_idx: int) -> list[int]:
            items = mm_items.get_items("image", (ImageProcessorItems, PreparedImageItems))
            if isinstance(items, PreparedImageItems):
                height, width = items.get(item_idx).shape[-2:]
                return [token] * self.info.num_input_tokens(int(height), int(width))
            size = items.get_image_size(item_idx)
            return [token] * self.info.num_image_tokens(size.width, size.height)

        return [PromptReplacement(modality="image", target=[token], replacement=replacement)]

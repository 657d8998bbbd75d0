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

Multimodal processor kwargs (engine-wide ``mm_processor_kwargs`` or per request): ``hd_num`` (4KHD
tiles per image; default the config's), for raw images, which always get the HD transform. A
prepared input carries its layout in its shape (the CPU stage's HD transform at the spec's
``hd_num``; the row records it as ``tile_grid``); it must measure whole crops.
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
from operators.vlm.xcomposer2.hd import check_prepared, hd_grid, hd_num_tokens, hd_size


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

    def hd_num(self, mm_kwargs: Mapping[str, object] | None = None) -> int:
        """4KHD tiles per image: the request's ``hd_num``, the engine's, else the config's."""
        merge = getattr(self.ctx, "get_merged_mm_kwargs", None)  # vLLM 0.29; 0.24 below
        engine_wide = getattr(self.ctx.model_config, "mm_processor_kwargs", None) or {}
        merged = merge(mm_kwargs or {}) if merge else {**engine_wide, **(mm_kwargs or {})}
        return int(merged.get("hd_num") or self.get_hf_config().effective_hd_num())

    def model_input(self, image, mm_kwargs: Mapping[str, object] | None = None):
        """A raw image's model input, float32 3 x H x W: the same functions as the CPU stage's preparers
        (VL resize, or the 4KHD HD transform at :meth:`hd_num`)."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(image if not isinstance(image, torch.Tensor) else image.numpy())
        size = int(self.clip()["image_size"])
        if self.variant() == "vl":
            return model_input_vl(image, size)
        return model_input_4khd(image, self.hd_num(mm_kwargs), size)[0]

    def num_input_tokens(self, height: int, width: int) -> int:
        """Tokens of a prepared input of ``height`` x ``width`` pixels (4KHD: its grid of crops).

        Raises:
            ValueError: the input does not measure what the model takes (VL's square; 4KHD's whole crops).
        """
        c = self.clip()
        size = int(c["image_size"])
        side = size // int(c["patch_size"])
        if self.variant() == "vl":
            if (height, width) != (size, size):
                raise ValueError(f"a prepared VL input is {size}x{size}; got {width}x{height}")
            return side * side
        check_prepared(width, height, hd_grid(width, height, size), size)
        return hd_num_tokens(width, height, size, side // 2)

    def num_image_tokens(self, width: int, height: int, mm_kwargs: Mapping[str, object] | None = None) -> int:
        """Tokens of a raw ``width`` x ``height`` image once laid out (4KHD: the HD transform at :meth:`hd_num`)."""
        c = self.clip()
        side = int(c["image_size"]) // int(c["patch_size"])
        if self.variant() == "vl":
            return side * side
        crop = int(c["image_size"])
        w, h = hd_size(width, height, self.hd_num(mm_kwargs), crop)
        return hd_num_tokens(w, h, crop, side // 2)

    def largest_image(self) -> tuple[int, int]:
        """(width, height) of an image with the most tokens: one column of ``hd_num`` crops for 4KHD."""
        crop = int(self.clip()["image_size"])
        if self.variant() == "vl":
            return crop, crop
        return crop, crop * self.hd_num()

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
        return BatchFeature({PIXEL_VALUES: self._pixel_values(processor_data.get("images") or [],
                                                              hf_processor_mm_kwargs)})

    def _pixel_values(self, images, mm_kwargs=None) -> list[torch.Tensor]:
        """One normalised CHW tensor per raw image, in the variant's layout (VL resize or 4KHD tiles)."""
        return [torch.from_numpy(self.info.model_input(im, mm_kwargs)) for im in images]

    # vLLM 0.24 (the GPU machines') processes the prompt *text* with these two hooks; 0.29 never
    # calls them. Exercised on an H100 with 0.24 (bench/results/gpu/), not by the CPU tests (0.29).
    def _call_hf_processor(self, prompt: str, mm_data: Mapping[str, object], mm_kwargs=None, tok_kwargs=None):
        out: dict = {"input_ids": torch.tensor([self.info.get_tokenizer()(prompt)["input_ids"]])}
        images = list(mm_data.get("images") or [])
        if images:
            out["pixel_values"] = self._pixel_values(images, mm_kwargs)
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
            return [token] * self.info.num_image_tokens(size.width, size.height, hf_processor_mm_kwargs)

        return [PromptReplacement(modality="image", target=[token], replacement=replacement)]

"""Reference engine: Hugging Face transformers, one request at a time.

Used to check the vLLM path's outputs and where vLLM cannot serve a model. It is the model
cards' way of running these models, so it is also the per-image baseline in ``bench/``.
"""

from __future__ import annotations

import asyncio
import threading

from operators.rows import error_text
from operators.vlm.engine import GenerationRequest, GenerationResult
from operators.vlm.registry import ModelFamily
from schemas.spec import ModelConfig, SamplingConfig
from schemas.status import Status

_DTYPES = {"auto": "auto", "bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


class TransformersEngine:
    """``AutoModelForImageTextToText.generate`` behind the engine contract."""

    takes_arrays = False  # the reference path keeps the model cards' PIL inputs

    def __init__(self, model: ModelConfig, sampling: SamplingConfig, family: ModelFamily):
        import torch
        import transformers
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name = f"transformers-{transformers.__version__}"
        kwargs = dict(revision=model.revision, trust_remote_code=model.trust_remote_code)
        if family.reference_loader is not None:
            # Families transformers has no class for bring their own PyTorch reference.
            self._processor, self._model = family.reference_loader(model)
            self._model.eval()
        else:
            self._processor = AutoProcessor.from_pretrained(model.model_id, **kwargs)
            self._model = AutoModelForImageTextToText.from_pretrained(
                model.model_id, dtype=_DTYPES.get(model.engine.dtype, "auto"), **kwargs
            ).eval()
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model.to(self._device)
        self._sampling = sampling.resolved(family.sampling_defaults)
        self._max_len = model.engine.max_model_len
        tok = self._processor.tokenizer
        stop_ids = [tok.convert_tokens_to_ids(s) for s in family.stop]
        self._eos = sorted({i for i in stop_ids + [tok.eos_token_id] if isinstance(i, int) and i >= 0})
        # generate() is not re-entrant; concurrent batches take turns.
        self._lock = threading.Lock()

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        import torch

        s = self._sampling
        inputs = self._processor(
            text=[request.prompt], images=list(request.images) or None, return_tensors="pt"
        ).to(self._device)
        n_prompt = int(inputs["input_ids"].shape[1])
        if self._max_len and n_prompt + 1 > self._max_len:
            return GenerationResult(None, n_prompt, None, None, Status.PROMPT_TOO_LONG,
                                    f"prompt is {n_prompt} tokens; max_model_len is {self._max_len}")
        gen = dict(max_new_tokens=s.max_tokens, min_new_tokens=s.min_tokens or None,
                   repetition_penalty=s.repetition_penalty, eos_token_id=None if s.ignore_eos else self._eos)
        if s.temperature > 0:
            if s.seed is not None:
                torch.manual_seed(s.seed)
            gen.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            gen.update(do_sample=False)
        with self._lock, torch.inference_mode():
            out = self._model.generate(**inputs, **{k: v for k, v in gen.items() if v is not None})
        new = out[0, n_prompt:].tolist()
        hit_eos = bool(new) and new[-1] in self._eos and not s.ignore_eos
        if hit_eos:
            new = new[:-1]
        text = self._processor.tokenizer.decode(new, skip_special_tokens=True)
        return GenerationResult(text, n_prompt, len(new) + int(hit_eos), "stop" if hit_eos else "length")

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results = []
        for r in requests:
            try:
                results.append(await asyncio.to_thread(self._generate_one, r))
            except Exception as exc:  # noqa: BLE001 - a failed request is a row status
                results.append(GenerationResult(None, None, None, None, Status.GENERATION_ERROR, error_text(exc)))
        return results

    def shutdown(self) -> None:
        self._model = None

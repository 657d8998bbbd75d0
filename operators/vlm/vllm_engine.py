"""vLLM engine inside an actor: one ``AsyncLLM`` serving every batch the actor has in flight.

Several batches awaiting one async engine is what keeps the accelerator busy: while one
batch's rows are being converted and returned, the engine's scheduler is already running
the next batch's prefill alongside the decode of the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
import warnings

from operators.rows import error_text
from operators.vlm.engine import EngineDead, GenerationRequest, GenerationResult, PreparedImage
from operators.vlm.registry import ModelFamily
from schemas.spec import ModelConfig, SamplingConfig
from schemas.status import Status

log = logging.getLogger(__name__)

# vLLM's wording differs across versions: 0.29 says "maximum context length ... (parameter=input_tokens)".
_TOO_LONG_MARKERS = ("longer than the maximum model length", "maximum context length", "parameter=input_tokens",
                     "exceeds the maximum", "too long", "max_model_len")


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return True


def engine_args(model: ModelConfig, family: ModelFamily) -> dict:
    """Keyword arguments for ``vllm.AsyncEngineArgs`` from the spec."""
    e = model.engine
    args = dict(
        model=model.model_id,
        tokenizer=model.model_id,
        revision=model.revision,
        trust_remote_code=model.trust_remote_code,
        dtype=e.dtype,
        max_model_len=e.max_model_len,
        max_num_seqs=e.max_num_seqs,
        tensor_parallel_size=e.tensor_parallel_size,
        gpu_memory_utilization=e.gpu_memory_utilization,
        enforce_eager=e.enforce_eager,
        limit_mm_per_prompt={"image": e.limit_images_per_prompt},
        load_format=e.load_format,
        seed=e.seed,
        # vLLM's own per-step statistics (scheduler stats, Prometheus histograms, the 5-second log
        # line) cost CPU in the engine core and the front end on every step and nothing here reads
        # them (run metrics are operators/metrics.py's). ``vllm.LLM`` turns them off by default too.
        disable_log_stats=True,
    )
    if _on_cpu():
        args["enforce_eager"] = True
    return {k: v for k, v in args.items() if v is not None}


def sampling_params(sampling: SamplingConfig, family: ModelFamily):
    """``vllm.SamplingParams`` for the spec's sampling settings and the family's stop strings.

    Only each request's final output is produced (what ``LLM.generate`` asks for too): the
    default, a cumulative output per generated token, makes the engine's front end build and
    queue a result object per request per step, CPU that the engine's own processes need.
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=sampling.max_tokens,
        min_tokens=sampling.min_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        repetition_penalty=sampling.repetition_penalty,
        seed=sampling.seed,
        ignore_eos=sampling.ignore_eos,
        stop=list(family.stop),
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def vllm_prompt(request: GenerationRequest) -> dict:
    """``request`` as a vLLM prompt dict.

    Prepared images (:class:`PreparedImage`) go in the form the plugins' processors recognise as
    prepared, ``{"pixel_values": [tensor, ...]}`` (``operators/vlm/vllm_prepared.py``); raw images as
    vLLM takes them. Image keys become ``multi_modal_uuids``: vLLM then keys its multimodal caches by
    the row id instead of hashing every image's bytes in the front end.
    """
    prompt: dict = {"prompt": request.prompt}
    images = request.images
    if not images:
        return prompt
    if all(isinstance(im, PreparedImage) for im in images):
        import torch

        with warnings.catch_warnings():  # a read-only view of the Arrow buffer; vLLM only reads it
            warnings.simplefilter("ignore", UserWarning)
            prompt["multi_modal_data"] = {"image": {"pixel_values": [torch.from_numpy(im.array) for im in images]}}
    else:
        prompt["multi_modal_data"] = {"image": list(images) if len(images) > 1 else images[0]}
    if request.image_keys and len(request.image_keys) == len(images):
        prompt["multi_modal_uuids"] = {"image": list(request.image_keys)}
    return prompt


class VLLMEngine:
    """An ``AsyncLLM`` for one model, with per-request statuses."""

    # vLLM takes H x W x 3 uint8 arrays as images and hashes and processes them without the
    # copies a PIL image costs (PIL -> bytes for the cache key, PIL -> tensor for the processor).
    takes_arrays = True
    # Prepared images (a family's CPU preparer made the model input) go to the plugins' processors as is.
    takes_prepared = True

    def __init__(self, model: ModelConfig, sampling: SamplingConfig, family: ModelFamily):
        if _on_cpu():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(model.engine.cpu_kvcache_gib))
        import vllm

        self.name = f"vllm-{vllm.__version__}"
        from vllm.usage.usage_lib import UsageContext

        # Batch captioning is offline work: take vLLM's offline defaults, as ``vllm.LLM`` does.
        # The engine's own default context sizes the scheduler for a server: on CPU half the
        # tokens per step (2048 against 4096), on an H100 an eighth (2048 against 16384), so a
        # wave of image prompts takes several times more steps to prefill.
        self._engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**engine_args(model, family)),
                                                            usage_context=UsageContext.LLM_CLASS)
        self._params = sampling_params(sampling, family)
        self._warm_up()

    def _warm_up(self) -> None:
        """Pay the front end's first-request costs now, before the actor reports ready.

        ``vllm.LLM()`` does this in its constructor (``renderer.warmup``: the multimodal
        processor's lazy set-up, run on a dummy input, then its cache cleared); ``AsyncLLM``
        leaves it to the first request, ~70 ms on a 2-core CPU that would land in the first
        wave of batches. Synchronous and loop-free, so the engine's asyncio parts stay unbound
        until Ray Data's event loop sends the first batch.
        """
        renderer = getattr(self._engine, "renderer", None)
        if renderer is None or not hasattr(renderer, "warmup"):
            return  # another vLLM version: nothing to warm this way
        from vllm.renderers.params import ChatParams

        try:
            renderer.warmup(ChatParams())
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the first request time
            log.warning("engine front-end warm-up failed: %s", error_text(exc))

    async def _one(self, request: GenerationRequest) -> GenerationResult:
        prompt = vllm_prompt(request)
        final = None
        try:
            async for out in self._engine.generate(prompt, self._params, f"{request.request_id}-{uuid.uuid4().hex}"):
                final = out
        except Exception as exc:  # noqa: BLE001 - classify below
            if type(exc).__name__ in ("EngineDeadError", "EngineGenerateError") and self._engine.errored:
                raise EngineDead(error_text(exc)) from exc
            text = str(exc)
            status = Status.PROMPT_TOO_LONG if any(m in text for m in _TOO_LONG_MARKERS) else Status.GENERATION_ERROR
            return GenerationResult(None, None, None, None, status, error_text(exc))
        if final is None or not final.outputs:
            return GenerationResult(None, None, None, None, Status.GENERATION_ERROR, "engine returned no output")
        completion = final.outputs[0]
        return GenerationResult(
            text=completion.text,
            num_prompt_tokens=len(final.prompt_token_ids or ()),
            num_generated_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason,
        )

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def shutdown(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown:
            shutdown()

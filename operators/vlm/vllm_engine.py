"""vLLM engine inside an actor: one ``AsyncLLM`` serving every batch the actor has in flight.

Several batches awaiting one async engine is what keeps the accelerator busy: while one
batch's rows are being converted and returned, the engine's scheduler is already running
the next batch's prefill alongside the decode of the others.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import uuid
import warnings

from operators.rows import error_text
from operators.vlm.engine import EngineDead, GenerationRequest, GenerationResult, PreparedImage
from operators.vlm.gptq import quantization_of
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
        quantization=quantization_of(model.model_id),
        seed=e.seed,
        # vLLM's own per-step statistics (scheduler stats, Prometheus histograms, the 5-second log
        # line) cost CPU in the engine core and the front end on every step and nothing here reads
        # them (run metrics are operators/metrics.py's). ``vllm.LLM`` turns them off by default too.
        disable_log_stats=True,
        # Family-wide processor settings (4KHD: hd_num); requests may add their own (tile grids).
        mm_processor_kwargs=family.processor_kwargs(model) if family.processor_kwargs is not None else None,
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

    sampling = sampling.resolved(family.sampling_defaults)
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


def vllm_prompt(request: GenerationRequest, token_ids: list[int] | None = None) -> dict:
    """``request`` as a vLLM prompt dict: its text, or ``token_ids`` where given (the family's card tokenisation).

    Prepared images (:class:`PreparedImage`) go in the form the plugins' processors recognise as
    prepared, ``{"pixel_values": [tensor, ...]}`` (``operators/vlm/vllm_prepared.py``); raw images as
    vLLM takes them. Image keys become ``multi_modal_uuids``: vLLM then keys its multimodal caches by
    the row id instead of hashing every image's bytes in the front end.
    """
    prompt: dict = {"prompt_token_ids": list(token_ids)} if token_ids is not None else {"prompt": request.prompt}
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
        before = _descendants()
        self._engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**engine_args(model, family)),
                                                            usage_context=UsageContext.LLM_CLASS)
        # The processes this engine started (engine core, workers): shutdown waits for them.
        self._processes = [p for p in _descendants() if p.pid not in {q.pid for q in before}]
        self._params = sampling_params(sampling, family)
        self._family, self._model = family, model
        self._sampling = sampling.resolved(family.sampling_defaults)
        self._tokenizer = None
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

    def tokenizer(self):
        """The engine's tokenizer (the checkpoint's, as vLLM loaded it); the checkpoint's own where this
        vLLM version offers it only asynchronously."""
        if self._tokenizer is None:
            tok = getattr(self._engine, "tokenizer", None)  # 0.29: a property; some versions: a coroutine method
            if tok is None or inspect.isawaitable(tok) or callable(getattr(tok, "__await__", None)):
                from transformers import AutoTokenizer

                m = self._model
                tok = AutoTokenizer.from_pretrained(m.model_id, revision=m.revision,
                                                    trust_remote_code=m.trust_remote_code)
            self._tokenizer = tok
        return self._tokenizer

    def request_prompt(self, request: GenerationRequest) -> dict:
        """vLLM's prompt for ``request`` (:func:`vllm_prompt`): token ids where the family tokenises as its
        card does, else text."""
        if self._family.encode_prompt is not None:
            return vllm_prompt(request, self._family.encode_prompt(request.prompt, self.tokenizer()))
        return vllm_prompt(request)

    def _failed(self, exc: Exception) -> GenerationResult:
        if type(exc).__name__ in ("EngineDeadError", "EngineGenerateError") and self._engine.errored:
            raise EngineDead(error_text(exc)) from exc
        text = str(exc)
        status = Status.PROMPT_TOO_LONG if any(m in text for m in _TOO_LONG_MARKERS) else Status.GENERATION_ERROR
        return GenerationResult(None, None, None, None, status, error_text(exc))

    async def _one(self, request: GenerationRequest) -> GenerationResult:
        prompt = self.request_prompt(request)
        if (self._sampling.num_beams or 1) > 1:
            return await self._beams(request, prompt)
        final = None
        try:
            async for out in self._engine.generate(prompt, self._params, f"{request.request_id}-{uuid.uuid4().hex}"):
                final = out
        except Exception as exc:  # noqa: BLE001 - classify below
            return self._failed(exc)
        if final is None or not final.outputs:
            return GenerationResult(None, None, None, None, Status.GENERATION_ERROR, "engine returned no output")
        completion = final.outputs[0]
        return GenerationResult(
            text=completion.text,
            num_prompt_tokens=len(final.prompt_token_ids or ()),
            num_generated_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason,
        )

    async def _beams(self, request: GenerationRequest, prompt: dict) -> GenerationResult:
        """``sampling.num_beams`` beam search (:mod:`operators.vlm.beam`) over one-token requests."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from operators.vlm.beam import beam_search

        s, tok = self._sampling, self.tokenizer()
        base = dict(prompt)
        if "prompt_token_ids" not in base:
            base["prompt_token_ids"] = list(tok(base.pop("prompt"))["input_ids"])
        ids = list(base["prompt_token_ids"])
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=2 * s.num_beams, detokenize=False,
                                repetition_penalty=s.repetition_penalty, output_kind=RequestOutputKind.FINAL_ONLY)
        stops = {tok.convert_tokens_to_ids(t) for t in self._family.stop} | {tok.eos_token_id}

        expanded: list[int] = []  # the prompt's length once the engine placed the image tokens

        async def step(tokens: list[int]) -> dict[int, float]:
            final = None
            rid = f"{request.request_id}-beam-{uuid.uuid4().hex}"
            async for out in self._engine.generate({**base, "prompt_token_ids": ids + tokens}, params, rid):
                final = out
            if not expanded:
                expanded.append(len(final.prompt_token_ids or ()) - len(tokens))
            return {t: lp.logprob for t, lp in final.outputs[0].logprobs[0].items()}

        try:
            best = await beam_search(step, beams=s.num_beams, max_tokens=s.max_tokens, min_tokens=s.min_tokens,
                                     stop_ids={t for t in stops if isinstance(t, int)}, ignore_eos=s.ignore_eos)
        except Exception as exc:  # noqa: BLE001 - classify as a request failure
            return self._failed(exc)
        text_ids = best.tokens[:-1] if best.stopped else best.tokens
        return GenerationResult(text=tok.decode(text_ids, skip_special_tokens=True),
                                num_prompt_tokens=expanded[0] if expanded else len(ids),
                                num_generated_tokens=len(best.tokens),
                                finish_reason="stop" if best.stopped else "length")

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def shutdown(self, timeout_s: float = 20.0) -> None:
        """Stop the engine quietly: its output handler, then the engine core, then wait for every process it started.

        The order is the point. ``AsyncLLM.shutdown`` alone kills the engine core while the front
        end's output handler still awaits its next output on the actor's event loop (Ray calls
        ``__del__`` from another thread): the handler finds the core dead and logs an
        ``EngineDeadError`` traceback at the end of a run that succeeded. So the handler is cancelled
        on its own loop, and awaited, first. And the engine core exits before its worker processes:
        a worker still releasing its shared memory once the actor has exited finds the actor's
        ``multiprocessing`` resource tracker gone (Ray ends a worker's children with it), starts a
        fresh one, and that one prints ``KeyError`` tracebacks for segments it never registered. So
        the engine's processes are waited for here, while the tracker still lives (and terminated
        after ``timeout_s``).
        """
        import psutil

        _cancel_output_handler(self._engine, timeout_s)
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown:
            shutdown()
        _, alive = psutil.wait_procs(self._processes, timeout=timeout_s)
        for proc in alive:
            log.warning("engine process %s still running %.0f s after shutdown; terminating it", proc.pid, timeout_s)
            proc.terminate()


def _descendants() -> list:
    """This process's descendants, less ``multiprocessing``'s resource tracker (it must outlive them)."""
    import psutil

    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if not any("resource_tracker" in part for part in proc.cmdline()):
                out.append(proc)
        except psutil.Error:  # gone already, or not ours to read
            continue
    return out


def _cancel_output_handler(engine, timeout_s: float) -> None:
    """Cancel ``AsyncLLM``'s output-handler task on its own event loop and wait until it has stopped."""
    handler = getattr(engine, "output_handler", None)
    if handler is None or handler.done():
        return
    loop = handler.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        handler.cancel()  # cannot wait from inside the loop; the cancel lands before the core is told to stop
        return
    if loop.is_closed() or not loop.is_running():
        return

    async def stop() -> None:
        handler.cancel()
        try:
            await handler
        except BaseException:  # noqa: BLE001 - CancelledError (or the error it ended with): it has stopped
            pass

    try:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout_s)
    except Exception as exc:  # noqa: BLE001 - the engine is shut down regardless
        log.warning("engine output handler did not stop: %s", error_text(exc))

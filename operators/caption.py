"""Captioning: a fixed pool of actors, one engine each, several batches in flight per actor.

Rows whose status is already a failure pass through untouched (no engine time spent);
every row leaves with provenance. The image columns (pixels, or the prepared model input) are
dropped here (unless a later model stage still needs the image), so image data never travels past
the engines.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from operators.base import ActorPool, PipelineError, Resources, Stage
from operators.metrics import RunMetrics
from operators.rows import error_text, set_columns
from operators.vlm.engine import IMAGE_COLUMNS, Engine, EngineActor, GenerationRequest, image_data, image_needs
from operators.vlm.factory import EngineFactory
from operators.vlm.registry import ModelFamily, family_for, get_family
from schemas import columns as C
from schemas.provenance import Provenance
from schemas.spec import CaptionConfig, ModelConfig, ResourcesConfig, SamplingConfig
from schemas.status import Status

PRODUCES = (C.PROMPT, C.CAPTION, C.NUM_PROMPT_TOKENS, C.NUM_GENERATED_TOKENS, C.FINISH_REASON, C.STATUS, C.ERROR,
            C.MODEL_ID, C.MODEL_REVISION, C.ENGINE, C.SAMPLING_HASH, C.CODE_VERSION, C.RUN_ID, C.DONE_AT,
            C.ENGINES_READY_AT)
MAX_BEAMS = 10  # vLLM's default max_logprobs (20) / 2 candidates per beam


def row_needs(prepared: bool) -> tuple[str, ...]:
    """What a model stage reads of each row: id, status, and its image (prepared model input or pixels)."""
    return (C.ID, *image_needs(prepared), C.STATUS, C.ERROR)


class CaptionActor(EngineActor):
    """Ray Data actor UDF: holds one engine; ``__call__`` is async so batches overlap.

    Args:
        engine: builds this actor's engine (called once, in the actor's process).
        family: the model family (prompt format), or its registry name.
        caption: the caption task (instruction, system prompt).
        provenance: stamped on every row (the engine's name is added from the engine).
        keep_pixels: leave the image (pixels or prepared model input) in the rows, for a later model stage (QA).
    """

    def __init__(self, engine: Callable[[], Engine], family: str | ModelFamily, caption: CaptionConfig,
                 provenance: Provenance, keep_pixels: bool = False):
        self.family = family if isinstance(family, ModelFamily) else get_family(family)
        self.system_prompt = caption.system_prompt
        self.prompt = self.family.build_prompt(caption.prompt, caption.system_prompt)
        self.provenance = provenance
        self.keep_pixels = keep_pixels
        self.metrics = RunMetrics(provenance.run_id)
        self.load_engine(engine)

    async def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        statuses = table.column(C.STATUS).to_pylist()
        errors = table.column(C.ERROR).to_pylist()
        ids = table.column(C.ID).to_pylist()
        out: dict[str, list] = {name: [None] * n for name in PRODUCES
                                if name not in (C.STATUS, C.ERROR, C.DONE_AT, C.ENGINES_READY_AT)}
        todo = [i for i in range(n) if statuses[i] == Status.OK.value]
        # A per-row instruction (drawn from a prompt set upstream) overrides caption.prompt.
        instructions = table.column(C.INSTRUCTION).to_pylist() if C.INSTRUCTION in table.column_names else [None] * n
        prompts = [self.family.build_prompt(t, self.system_prompt) if t else self.prompt for t in instructions]
        if todo:
            read = self.image_reader(table)
            requests, ready = [], []
            for i in todo:
                # A row whose pixels do not make an image fails alone, never its batch.
                try:
                    image = read(i)
                except Exception as exc:  # noqa: BLE001
                    statuses[i], errors[i] = Status.GENERATION_ERROR.value, error_text(exc)
                    continue
                requests.append(GenerationRequest(ids[i], prompts[i], (image,), (ids[i],)))
                ready.append(i)
            results = await self.generate(requests)
            for i, res in zip(ready, results, strict=True):
                out[C.PROMPT][i] = prompts[i]
                out[C.CAPTION][i] = res.text
                out[C.NUM_PROMPT_TOKENS][i] = res.num_prompt_tokens
                out[C.NUM_GENERATED_TOKENS][i] = res.num_generated_tokens
                out[C.FINISH_REASON][i] = res.finish_reason
                statuses[i], errors[i] = res.status.value, res.error
                if res.status == Status.OK and not (res.text or "").strip():
                    statuses[i], errors[i] = Status.EMPTY_GENERATION.value, "the model generated no text"
        self.metrics.rows(statuses, out[C.NUM_GENERATED_TOKENS], out[C.NUM_PROMPT_TOKENS])
        p = self.provenance
        stamp = {C.MODEL_ID: p.model_id, C.MODEL_REVISION: p.model_revision, C.ENGINE: self.engine.name,
                 C.SAMPLING_HASH: p.sampling_hash, C.CODE_VERSION: p.code_version, C.RUN_ID: p.run_id}
        for name, value in stamp.items():
            out[name] = [value] * n
        if not self.keep_pixels:
            table = table.drop_columns([c for c in IMAGE_COLUMNS if c in table.column_names])
        self.stamp_times(out, table)
        return set_columns(table, {**out, C.STATUS: statuses, C.ERROR: errors})


def engine_stage(name: str, actor: type, args: dict, model: ModelConfig, resources: ResourcesConfig, *,
                 needs: tuple[str, ...], produces: tuple[str, ...], drops: tuple[str, ...],
                 sampling: SamplingConfig | None = None) -> Stage:
    """A model stage: a fixed pool of ``actor`` (one engine each), rows kept in order.

    Each actor works on ``resources.in_flight(max_num_seqs)`` batches at once (its async
    ``__call__``), and Ray Data may queue as many again, so the engine never waits on the CPU.

    Raises:
        PipelineError: ``model.family`` is not registered (naming the known families), the family cannot
            serve the checkpoint (and why), or ``sampling`` asks for beams the engine cannot search.
    """
    family = checked_family(model, name)
    if model.engine.kind == "transformers" and not family.transformers_reference:
        raise PipelineError(f"{name}: model family {family.name} has no transformers reference (its modeling code "
                            "is the checkpoints' remote code); use engine.kind vllm")
    if sampling is not None and (sampling.num_beams or 1) > 1:
        if model.engine.kind != "vllm":
            raise PipelineError(f"{name}: sampling.num_beams={sampling.num_beams} needs engine.kind vllm (beam "
                                "search runs on vLLM's one-token steps; the transformers reference decodes greedily "
                                "or samples)")
        if sampling.num_beams > MAX_BEAMS:
            raise PipelineError(f"{name}: sampling.num_beams={sampling.num_beams} is over {MAX_BEAMS}: vLLM returns "
                                "at most 20 log-probabilities a step and beam search asks for 2 x num_beams")
    r = resources
    in_flight = r.in_flight(model.engine.max_num_seqs)
    gpus = r.gpus_per_engine * model.engine.tensor_parallel_size
    return Stage(
        name, actor, args, needs=needs, produces=produces, drops=drops,
        resources=Resources(num_cpus=r.cpus_per_engine, num_gpus=gpus,
                            custom=tuple(sorted(r.engine_resources.items()))), batch_size=r.batch_size,
        pool=ActorPool(size=r.num_engines, concurrency=in_flight, tasks_in_flight=2 * in_flight),
    )


def caption_stage(model: ModelConfig, sampling: SamplingConfig, caption: CaptionConfig, resources: ResourcesConfig,
                  provenance: Provenance, *, keep_pixels: bool = False, prepared: bool = False,
                  engines: Callable[[ModelConfig, SamplingConfig], Callable[[], Engine]] = EngineFactory) -> Stage:
    """Caption every ``ok`` row with the spec's model on a fixed pool of engine actors.

    Args:
        keep_pixels: a later model stage (QA) still needs the image.
        prepared: the rows carry the prepared model input (a ``prepare`` stage ran) instead of pixels.
        engines: ``engines(model, sampling)`` is the engine builder handed to each actor.
    """
    return engine_stage(
        "caption", CaptionActor,
        dict(engine=engines(model, sampling), family=checked_family(model, "caption"), caption=caption,
             provenance=provenance, keep_pixels=keep_pixels),
        model, resources, needs=row_needs(prepared), produces=PRODUCES,
        drops=() if keep_pixels else image_data(prepared), sampling=sampling,
    )


def checked_family(model: ModelConfig, where: str = "model.family") -> ModelFamily:
    """The checkpoint's family; a family that cannot serve it fails here, before any actor starts.

    Raises:
        PipelineError: prefixed with ``where`` (the stage or spec field).
    """
    try:
        return family_for(model)
    except KeyError as exc:
        raise PipelineError(f"{where}: {exc.args[0]}") from None
    except ValueError as exc:
        raise PipelineError(f"{where}: model {model.model_id}: {exc}") from None

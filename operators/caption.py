"""Captioning: a fixed pool of actors, one engine each, several batches in flight per actor.

Rows whose status is already a failure pass through untouched (no engine time spent);
every row leaves with provenance. The pixels column is dropped here, so image data never
travels past the engine.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import pyarrow as pa

from operators.base import Operator, Resources
from operators.metrics import RunMetrics
from operators.rows import error_text, set_columns
from operators.vlm.engine import EngineActor, EngineDead, GenerationRequest
from operators.vlm.registry import get_family
from schemas import columns as C
from schemas.provenance import Provenance
from schemas.spec import CaptionConfig, ModelConfig, ResourcesConfig, SamplingConfig
from schemas.status import Status

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

OUT_TYPES = {
    C.PROMPT: pa.string(),
    C.CAPTION: pa.string(),
    C.NUM_PROMPT_TOKENS: pa.int32(),
    C.NUM_GENERATED_TOKENS: pa.int32(),
    C.FINISH_REASON: pa.string(),
    C.STATUS: pa.string(),
    C.ERROR: pa.string(),
    C.MODEL_ID: pa.string(),
    C.MODEL_REVISION: pa.string(),
    C.ENGINE: pa.string(),
    C.SAMPLING_HASH: pa.string(),
    C.CODE_VERSION: pa.string(),
    C.RUN_ID: pa.string(),
}


def make_engine(model: ModelConfig, sampling: SamplingConfig):
    """The engine the spec names, loaded in this process."""
    family = get_family(model.family)
    if model.engine.kind == "vllm":
        from operators.vlm.vllm_engine import VLLMEngine

        return VLLMEngine(model, sampling, family)
    from operators.vlm.transformers_engine import TransformersEngine

    return TransformersEngine(model, sampling, family)


class CaptionActor(EngineActor):
    """Ray Data actor UDF: holds one engine; ``__call__`` is async so batches overlap."""

    # Class-level defaults so actors built without __init__ (tests) behave as before.
    keep_pixels = False
    system_prompt: str | None = None

    def __init__(self, model: ModelConfig, sampling: SamplingConfig, caption: CaptionConfig,
                 provenance: Provenance, pixels_column: str = C.PIXELS, keep_pixels: bool = False):
        self.family = get_family(model.family)
        self.prompt = self.family.build_prompt(caption.prompt, caption.system_prompt)
        self.system_prompt = caption.system_prompt
        self.provenance = provenance
        self.pixels_column = pixels_column
        self.keep_pixels = keep_pixels
        self.engine = make_engine(model, sampling)

    def _run_metrics(self) -> RunMetrics:
        # Made on first use, in the actor's own process, where Ray's metrics API is up.
        if getattr(self, "_metrics", None) is None:
            self._metrics = RunMetrics(self.provenance.run_id)
        return self._metrics

    async def __call__(self, table: pa.Table) -> pa.Table:
        metrics = self._run_metrics()
        n = table.num_rows
        statuses = table.column(C.STATUS).to_pylist()
        errors = table.column(C.ERROR).to_pylist()
        ids = table.column(C.ID).to_pylist()
        out: dict[str, list] = {name: [None] * n for name in OUT_TYPES if name not in (C.STATUS, C.ERROR)}
        todo = [i for i in range(n) if statuses[i] == Status.OK.value]
        # A per-row instruction (drawn from a prompt set upstream) overrides caption.prompt.
        instructions = table.column(C.INSTRUCTION).to_pylist() if C.INSTRUCTION in table.column_names else [None] * n
        prompts = [self.family.build_prompt(t, self.system_prompt) if t else self.prompt for t in instructions]
        if todo:
            pixels = table.column(self.pixels_column)
            widths = table.column(C.WIDTH).to_pylist()
            heights = table.column(C.HEIGHT).to_pylist()
            requests, ready = [], []
            for i in todo:
                # A row whose pixels do not make an image fails alone, never its batch.
                try:
                    image = self.request_image(pixels[i].as_buffer(), widths[i], heights[i])
                except Exception as exc:  # noqa: BLE001
                    statuses[i], errors[i] = Status.GENERATION_ERROR.value, error_text(exc)
                    continue
                requests.append(GenerationRequest(ids[i], prompts[i], (image,)))
                ready.append(i)
            todo = ready
            metrics.submitted(len(requests))
            try:
                results = await self.engine.generate(requests)
            except EngineDead as exc:
                # Nothing more can run here: exit so Ray replaces the actor and retries the batch.
                log.error("engine died (%s); exiting so the actor is replaced", exc)
                os._exit(1)
            finally:
                metrics.answered(len(requests))
            for i, res in zip(todo, results, strict=True):
                out[C.PROMPT][i] = prompts[i]
                out[C.CAPTION][i] = res.text
                out[C.NUM_PROMPT_TOKENS][i] = res.num_prompt_tokens
                out[C.NUM_GENERATED_TOKENS][i] = res.num_generated_tokens
                out[C.FINISH_REASON][i] = res.finish_reason
                statuses[i], errors[i] = res.status.value, res.error
                if res.status == Status.OK and not (res.text or "").strip():
                    statuses[i], errors[i] = Status.EMPTY_GENERATION.value, "the model generated no text"
        metrics.rows(statuses, out[C.NUM_GENERATED_TOKENS], out[C.NUM_PROMPT_TOKENS])
        p = self.provenance
        stamp = {C.MODEL_ID: p.model_id, C.MODEL_REVISION: p.model_revision, C.ENGINE: self.engine.name,
                 C.SAMPLING_HASH: p.sampling_hash, C.CODE_VERSION: p.code_version, C.RUN_ID: p.run_id}
        for name, value in stamp.items():
            out[name] = [value] * n
        if not self.keep_pixels:
            table = table.drop_columns([self.pixels_column])
        return set_columns(table, {**out, C.STATUS: statuses, C.ERROR: errors}, OUT_TYPES)


class CaptionOperator(Operator):
    """Caption every ``ok`` row with the spec's model on a fixed pool of engine actors."""

    name = "caption"

    def __init__(self, model: ModelConfig, sampling: SamplingConfig, caption: CaptionConfig,
                 resources: ResourcesConfig, provenance: Provenance, pixels_column: str = C.PIXELS,
                 keep_pixels: bool = False):
        self.keep_pixels = keep_pixels  # a later model stage (QA) still needs the image
        self.model = model
        self.sampling = sampling
        self.caption = caption
        self.resources = resources
        self.provenance = provenance
        self.pixels_column = pixels_column

    def requires(self) -> tuple[str, ...]:
        return (C.ID, self.pixels_column, C.WIDTH, C.HEIGHT, C.STATUS, C.ERROR)

    def produces(self) -> tuple[str, ...]:
        return tuple(OUT_TYPES)

    def drops(self) -> tuple[str, ...]:
        return () if self.keep_pixels else (self.pixels_column,)

    def check(self) -> None:
        get_family(self.model.family)  # KeyError names the known families

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        return engine_pool(ds, CaptionActor, self.resources, self.model,
                           dict(model=self.model, sampling=self.sampling, caption=self.caption,
                                provenance=self.provenance, pixels_column=self.pixels_column,
                                keep_pixels=self.keep_pixels))


def engine_pool(ds: ray.data.Dataset, actor_cls: type, resources: ResourcesConfig, model: ModelConfig,
                constructor_kwargs: dict) -> ray.data.Dataset:
    """``ds`` through a fixed pool of ``actor_cls`` engine actors (one engine each), rows kept in order.

    Each actor works on ``resources.in_flight(max_num_seqs)`` batches at once (its async
    ``__call__``), and Ray Data may queue as many again, so the engine never waits on the CPU.
    """
    import ray.data

    r = resources
    in_flight = r.in_flight(model.engine.max_num_seqs)
    res = Resources(num_cpus=r.cpus_per_engine, num_gpus=r.gpus_per_engine * model.engine.tensor_parallel_size)
    return ds.map_batches(
        actor_cls,
        fn_constructor_kwargs=constructor_kwargs,
        batch_size=r.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=r.num_engines, max_tasks_in_flight_per_actor=2 * in_flight),
        max_concurrency=in_flight,
        udf_modifying_row_count=False,
        **res.ray_args(),
    )

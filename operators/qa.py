"""Visual QA: questions per image (manifest, question set or generated), then answers with the image.

A second fixed pool of engine actors, separate from the caption pool, so QA may use another
model. Per ``ok`` row: questions come from the first of ``qa.questions_from`` that yields any;
generated questions are asked of the QA model with the image and its caption; every question
is then answered with the image. Each generation is post-checked: a pair that fails keeps its
text and gets a status, and is not exported. The row's own status is the caption's. This is
the last model stage, so it drops the pixels.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

import pyarrow as pa

from operators.base import Operator
from operators.caption import engine_pool, make_engine
from operators.draw import draw
from operators.postcheck import check_generation
from operators.rows import set_columns
from operators.vlm.engine import EngineActor, EngineDead, GenerationRequest
from operators.vlm.registry import get_family
from schemas import columns as C
from schemas.dataset_records import QA_PAIR
from schemas.provenance import Provenance
from schemas.spec import ModelConfig, PostCheckConfig, QAConfig, ResourcesConfig, SamplingConfig
from schemas.status import Status

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

OUT_TYPES = {C.QA: pa.list_(QA_PAIR), C.QA_MODEL_ID: pa.string(), C.QA_ENGINE: pa.string()}
_NUMBERING = re.compile(r"^\s*(?:\d+[.):]|[-*\u2022]|Q\d*[.):]?)\s*", re.IGNORECASE)
_CAPTION_CHARS = 2000  # a runaway caption must not push the question prompt past the context


def parse_questions(text: str | None, n: int) -> list[str]:
    """Up to ``n`` questions from a generated reply: one per non-empty line, numbering stripped."""
    out = []
    for line in (text or "").splitlines():
        q = _NUMBERING.sub("", line).strip()
        if q and q not in out:
            out.append(q)
    return out[:n]


def _pair(question, answer=None, origin=None, status=Status.OK, error=None, finish_reason=None) -> dict:
    return {C.QA_QUESTION: question, C.QA_ANSWER: answer, C.QA_ORIGIN: origin, C.STATUS: status.value,
            C.ERROR: error, C.FINISH_REASON: finish_reason}


class QAActor(EngineActor):
    """Ray Data actor UDF: one engine; asks and answers questions for every ``ok`` row of a batch."""

    def __init__(self, model: ModelConfig, sampling: SamplingConfig, qa: QAConfig, postcheck: PostCheckConfig,
                 provenance: Provenance, pixels_column: str = C.PIXELS):
        self.family = get_family(model.family)
        self.qa = qa
        self.postcheck = postcheck
        self.provenance = provenance
        self.pixels_column = pixels_column
        self.engine = make_engine(model, sampling)

    def _questions(self, row_id: str, manifest_questions: list[str] | None) -> tuple[list[str], str] | None:
        """Questions and their origin from the first configured place that has some; None: generate."""
        for origin in self.qa.questions_from:
            if origin == "manifest" and manifest_questions:
                return list(manifest_questions), "manifest"
            if origin == "set" and self.qa.question_set:
                return draw(row_id, self.qa.question_set, self.qa.questions_per_image, salt="qa"), "set"
            if origin == "generate":
                return None
        return [], "none"

    async def _run(self, requests: list[GenerationRequest]):
        try:
            return await self.engine.generate(requests)
        except EngineDead as exc:
            log.error("QA engine died (%s); exiting so the actor is replaced", exc)
            os._exit(1)

    async def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        statuses = table.column(C.STATUS).to_pylist()
        ids = table.column(C.ID).to_pylist()
        captions = table.column(C.CAPTION).to_pylist() if C.CAPTION in table.column_names else [None] * n
        asked = table.column(C.QUESTIONS).to_pylist() if C.QUESTIONS in table.column_names else [None] * n
        qa: list[list[dict] | None] = [None] * n
        todo = [i for i in range(n) if statuses[i] == Status.OK.value]
        images = {}
        if todo:
            pixels = table.column(self.pixels_column)
            widths, heights = table.column(C.WIDTH).to_pylist(), table.column(C.HEIGHT).to_pylist()
            images = {i: self.request_image(pixels[i].as_buffer(), widths[i], heights[i]) for i in todo}
        questions: dict[int, list[tuple[str, str]]] = {}
        generate = []
        for i in todo:
            qa[i] = []
            found = self._questions(ids[i], asked[i])
            if found is None:
                generate.append(i)
            else:
                questions[i] = [(q, found[1]) for q in found[0]]
        if generate:
            k = self.qa.questions_per_image
            reqs = [GenerationRequest(f"{ids[i]}-ask", self.family.build_prompt(
                self.qa.generate_prompt.format(caption=(captions[i] or "")[:_CAPTION_CHARS], n=k)), (images[i],))
                for i in generate]
            for i, res in zip(generate, await self._run(reqs), strict=True):
                failed = ((res.status, res.error) if res.status != Status.OK
                          else check_generation(res.text, res.finish_reason, self.postcheck))
                parsed = parse_questions(res.text, k) if failed is None else []
                if failed is None and not parsed:
                    failed = (Status.EMPTY_GENERATION, "the question generation held no question")
                if failed is not None:
                    qa[i].append(_pair(res.text, None, "generate", failed[0], failed[1], res.finish_reason))
                questions[i] = [(q, "generate") for q in parsed]
        pairs = [(i, q, origin) for i in todo for q, origin in questions.get(i, [])]
        if pairs:
            reqs = [GenerationRequest(f"{ids[i]}-qa{j}", self.family.build_prompt(q), (images[i],))
                    for j, (i, q, _) in enumerate(pairs)]
            for (i, q, origin), res in zip(pairs, await self._run(reqs), strict=True):
                failed = ((res.status, res.error) if res.status != Status.OK
                          else check_generation(res.text, res.finish_reason, self.postcheck))
                status, error = failed if failed is not None else (Status.OK, None)
                qa[i].append(_pair(q, res.text, origin, status, error, res.finish_reason))
        p = self.provenance
        out = {C.QA: qa, C.QA_MODEL_ID: [p.model_id] * n, C.QA_ENGINE: [self.engine.name] * n}
        return set_columns(table.drop_columns([self.pixels_column]), out, OUT_TYPES)


class QAOperator(Operator):
    """Visual QA for every ``ok`` row on its own pool of engine actors; drops the pixels."""

    name = "qa"

    def __init__(self, model: ModelConfig, sampling: SamplingConfig, qa: QAConfig, postcheck: PostCheckConfig,
                 resources: ResourcesConfig, provenance: Provenance, pixels_column: str = C.PIXELS):
        self.model = model
        self.sampling = sampling
        self.qa = qa
        self.postcheck = postcheck
        self.resources = resources
        self.provenance = provenance
        self.pixels_column = pixels_column

    def requires(self) -> tuple[str, ...]:
        needs = [C.ID, self.pixels_column, C.WIDTH, C.HEIGHT, C.STATUS, C.ERROR]
        if "generate" in self.qa.questions_from:
            needs.append(C.CAPTION)
        if "manifest" in self.qa.questions_from:
            needs.append(C.QUESTIONS)
        return tuple(needs)

    def produces(self) -> tuple[str, ...]:
        return tuple(OUT_TYPES)

    def drops(self) -> tuple[str, ...]:
        return (self.pixels_column,)

    def check(self) -> None:
        get_family(self.model.family)
        if "set" in self.qa.questions_from and not self.qa.question_set:
            raise ValueError("qa.questions_from names 'set' but qa.question_set is empty")
        try:
            self.qa.generate_prompt.format(caption="", n=1)
        except (KeyError, IndexError) as exc:
            raise ValueError(f"qa.generate_prompt may use only {{caption}} and {{n}}: {exc}") from None

    def apply(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        return engine_pool(ds, QAActor, self.resources, self.model,
                           dict(model=self.model, sampling=self.sampling, qa=self.qa, postcheck=self.postcheck,
                                provenance=self.provenance, pixels_column=self.pixels_column))

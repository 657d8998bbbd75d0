"""Visual QA: questions per image (manifest, question set or generated), then answers with the image.

A second fixed pool of engine actors, separate from the caption pool, so QA may use another
model. Per ``ok`` row: questions come from the first of ``qa.questions_from`` that yields any;
generated questions are asked of the QA model with the image and its caption; every question
is then answered with the image. Each generation is post-checked: a pair that fails keeps its
text and gets a status, and is not exported. The row's own status is the caption's. This is
the last model stage, so it drops the image columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pyarrow as pa

from operators.base import PipelineError, Stage
from operators.caption import checked_family, engine_stage, row_needs
from operators.draw import draw
from operators.metrics import RunMetrics
from operators.postcheck import check_generation
from operators.rows import set_columns
from operators.vlm.engine import IMAGE_COLUMNS, Engine, EngineActor, GenerationRequest, GenerationResult, image_data
from operators.vlm.factory import EngineFactory
from operators.vlm.registry import ModelFamily, get_family
from schemas import columns as C
from schemas.provenance import Provenance
from schemas.spec import ModelConfig, PostCheckConfig, QAConfig, ResourcesConfig, SamplingConfig
from schemas.status import Status

PRODUCES = (C.QA, C.QA_PROMPT_TOKENS, C.QA_GENERATED_TOKENS, C.QA_MODEL_ID, C.QA_MODEL_REVISION, C.QA_ENGINE,
            C.QA_SAMPLING_HASH, C.DONE_AT, C.ENGINES_READY_AT)
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


def _pair(question, answer, origin, status: Status, error, res: GenerationResult) -> dict:
    return {C.QA_QUESTION: question, C.QA_ANSWER: answer, C.QA_ORIGIN: origin, C.STATUS: status.value,
            C.ERROR: error, C.FINISH_REASON: res.finish_reason, C.NUM_PROMPT_TOKENS: res.num_prompt_tokens,
            C.NUM_GENERATED_TOKENS: res.num_generated_tokens}


class QAActor(EngineActor):
    """Ray Data actor UDF: one engine; asks and answers questions for every ``ok`` row of a batch.

    Args:
        engine: builds this actor's engine (called once, in the actor's process).
        family: the QA model's family (prompt format), or its registry name.
        qa: where questions come from and how many.
        postcheck: the checks every question and answer passes.
        provenance: the QA model's (its id is stamped on every row).
    """

    def __init__(self, engine: Callable[[], Engine], family: str | ModelFamily, qa: QAConfig,
                 postcheck: PostCheckConfig,
                 provenance: Provenance):
        self.family = family if isinstance(family, ModelFamily) else get_family(family)
        self.qa = qa
        self.postcheck = postcheck
        self.provenance = provenance
        self.metrics = RunMetrics(provenance.run_id)
        self.load_engine(engine)

    async def _ask(self, requests: list[GenerationRequest], tokens: list[list[int]],
                   rows: list[int]) -> list[GenerationResult]:
        """Generate ``requests`` (one per entry of ``rows``), adding each one's tokens to its row's totals."""
        results = await self.generate(requests)
        for i, res in zip(rows, results, strict=True):
            tokens[i][0] += res.num_prompt_tokens or 0
            tokens[i][1] += res.num_generated_tokens or 0
        return results

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

    async def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        statuses = table.column(C.STATUS).to_pylist()
        ids = table.column(C.ID).to_pylist()
        captions = table.column(C.CAPTION).to_pylist() if C.CAPTION in table.column_names else [None] * n
        asked = table.column(C.QUESTIONS).to_pylist() if C.QUESTIONS in table.column_names else [None] * n
        qa: list[list[dict] | None] = [None] * n
        tokens = [[0, 0] for _ in range(n)]  # prompt, generated: every QA generation of the row
        todo = [i for i in range(n) if statuses[i] == Status.OK.value]
        images = {}
        if todo:
            read = self.image_reader(table)
            images = {i: read(i) for i in todo}
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
                self.qa.generate_prompt.format(caption=(captions[i] or "")[:_CAPTION_CHARS], n=k)), (images[i],),
                (ids[i],))
                for i in generate]
            for i, res in zip(generate, await self._ask(reqs, tokens, generate), strict=True):
                failed = ((res.status, res.error) if res.status != Status.OK
                          else check_generation(res.text, res.finish_reason, self.postcheck))
                parsed = parse_questions(res.text, k) if failed is None else []
                if failed is None and not parsed:
                    failed = (Status.EMPTY_GENERATION, "the question generation held no question")
                if failed is not None:
                    qa[i].append(_pair(res.text, None, "generate", failed[0], failed[1], res))
                questions[i] = [(q, "generate") for q in parsed]
        pairs = [(i, q, origin) for i in todo for q, origin in questions.get(i, [])]
        if pairs:
            reqs = [GenerationRequest(f"{ids[i]}-qa{j}", self.family.build_prompt(q), (images[i],), (ids[i],))
                    for j, (i, q, _) in enumerate(pairs)]
            answered = await self._ask(reqs, tokens, [i for i, _, _ in pairs])
            for (i, q, origin), res in zip(pairs, answered, strict=True):
                failed = ((res.status, res.error) if res.status != Status.OK
                          else check_generation(res.text, res.finish_reason, self.postcheck))
                status, error = failed if failed is not None else (Status.OK, None)
                qa[i].append(_pair(q, res.text, origin, status, error, res))
        asked = [i for i in todo if qa[i]]
        self.metrics.qa_pairs([p[C.STATUS] for i in asked for p in qa[i]], [tokens[i][1] for i in asked],
                              [tokens[i][0] for i in asked])
        p = self.provenance
        out = {C.QA: qa, C.QA_PROMPT_TOKENS: [t[0] if qa[i] is not None else None for i, t in enumerate(tokens)],
               C.QA_GENERATED_TOKENS: [t[1] if qa[i] is not None else None for i, t in enumerate(tokens)],
               C.QA_MODEL_ID: [p.model_id] * n, C.QA_MODEL_REVISION: [p.model_revision] * n,
               C.QA_ENGINE: [self.engine.name] * n, C.QA_SAMPLING_HASH: [p.sampling_hash] * n}
        table = table.drop_columns([c for c in IMAGE_COLUMNS if c in table.column_names])
        self.stamp_times(out, table)
        return set_columns(table, out)


def qa_stage(model: ModelConfig, sampling: SamplingConfig, qa: QAConfig, postcheck: PostCheckConfig,
             resources: ResourcesConfig, provenance: Provenance, *, prepared: bool = False,
             engines: Callable[[ModelConfig, SamplingConfig], Callable[[], Engine]] = EngineFactory) -> Stage:
    """Visual QA for every ``ok`` row on its own pool of engine actors; drops the image columns.

    Args:
        prepared: the rows carry the prepared model input (a ``prepare`` stage ran) instead of pixels.

    Raises:
        PipelineError: the question settings cannot work (a set origin without a set, a bad format field).
    """
    if "set" in qa.questions_from and not qa.question_set:
        raise PipelineError("qa: qa.questions_from names 'set' but qa.question_set is empty")
    try:
        qa.generate_prompt.format(caption="", n=1)
    except (KeyError, IndexError) as exc:
        raise PipelineError(f"qa: qa.generate_prompt may use only {{caption}} and {{n}}: {exc}") from None
    needs = list(row_needs(prepared))
    if "generate" in qa.questions_from:
        needs.append(C.CAPTION)
    if "manifest" in qa.questions_from:
        needs.append(C.QUESTIONS)
    return engine_stage(
        "qa", QAActor,
        dict(engine=engines(model, sampling), family=checked_family(model, "qa"), qa=qa, postcheck=postcheck,
             provenance=provenance),
        model, resources, needs=tuple(needs), produces=PRODUCES, drops=image_data(prepared), sampling=sampling,
    )

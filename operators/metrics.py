"""Run metrics through Ray's metrics API, so the Ray dashboard and Prometheus show them.

Emitted from the engine actors, per batch (one call per status, not per row), tagged with
the run id. Ray exports them on every node's metrics port with a ``ray_`` prefix:

| metric | kind | tags | what |
| --- | --- | --- | --- |
| ``vlmbatch_images_processed`` | counter | run_id | rows that left the model stage, any status |
| ``vlmbatch_images_failed`` | counter | run_id, status | rows that left it with a failure status |
| ``vlmbatch_generated_tokens`` | counter | run_id | tokens generated |
| ``vlmbatch_prompt_tokens`` | counter | run_id | prompt tokens (image tokens included) |
| ``vlmbatch_engine_queue_depth`` | gauge | run_id | requests handed to this actor's engine and not yet answered |
| ``vlmbatch_qa_pairs`` | counter | run_id, status | question-answer pairs that left the QA stage, per status |
| ``vlmbatch_qa_generated_tokens`` | counter | run_id | tokens the QA pool generated (answers and questions) |
| ``vlmbatch_qa_prompt_tokens`` | counter | run_id | prompt tokens of the QA pool |

Outside a Ray worker (unit tests, plain scripts) the calls do nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from schemas.status import Status

log = logging.getLogger(__name__)

PROCESSED = "vlmbatch_images_processed"
FAILED = "vlmbatch_images_failed"
GENERATED_TOKENS = "vlmbatch_generated_tokens"
PROMPT_TOKENS = "vlmbatch_prompt_tokens"
QUEUE_DEPTH = "vlmbatch_engine_queue_depth"
QA_PAIRS = "vlmbatch_qa_pairs"
QA_GENERATED_TOKENS = "vlmbatch_qa_generated_tokens"
QA_PROMPT_TOKENS = "vlmbatch_qa_prompt_tokens"


class RunMetrics:
    """The metrics of one run in this process; create once per actor (metric objects are not free)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.in_flight = 0
        self._m: dict | None = None
        try:
            import ray
            from ray.util import metrics

            if not ray.is_initialized():
                return
            self._m = {
                PROCESSED: metrics.Counter(PROCESSED, "Rows that left the model stage, any status.", ("run_id",)),
                FAILED: metrics.Counter(FAILED, "Rows that left the model stage with a failure status.",
                                        ("run_id", "status")),
                GENERATED_TOKENS: metrics.Counter(GENERATED_TOKENS, "Tokens generated.", ("run_id",)),
                PROMPT_TOKENS: metrics.Counter(PROMPT_TOKENS, "Prompt tokens, image tokens included.", ("run_id",)),
                QUEUE_DEPTH: metrics.Gauge(QUEUE_DEPTH, "Requests handed to this actor's engine, not yet answered.",
                                           ("run_id",)),
                QA_PAIRS: metrics.Counter(QA_PAIRS, "Question-answer pairs that left the QA stage.",
                                          ("run_id", "status")),
                QA_GENERATED_TOKENS: metrics.Counter(QA_GENERATED_TOKENS, "Tokens the QA pool generated.",
                                                     ("run_id",)),
                QA_PROMPT_TOKENS: metrics.Counter(QA_PROMPT_TOKENS, "Prompt tokens of the QA pool.", ("run_id",)),
            }
        except Exception as exc:  # noqa: BLE001 - metrics must never stop a run
            log.warning("run metrics disabled: %s", exc)
            self._m = None

    @property
    def enabled(self) -> bool:
        return self._m is not None

    def submitted(self, n: int) -> None:
        """``n`` requests were handed to the engine."""
        self.in_flight += n
        self._depth()

    def answered(self, n: int) -> None:
        """``n`` requests came back (or failed) from the engine."""
        self.in_flight = max(0, self.in_flight - n)
        self._depth()

    def _depth(self) -> None:
        if self._m:
            self._m[QUEUE_DEPTH].set(self.in_flight, {"run_id": self.run_id})

    def rows(self, statuses: Iterable[str], generated_tokens: Iterable[int | None],
             prompt_tokens: Iterable[int | None]) -> None:
        """A batch left the model stage with these statuses and token counts."""
        if not self._m:
            return
        tags = {"run_id": self.run_id}
        counts = Counter(statuses)
        total = sum(counts.values())
        if total:
            self._m[PROCESSED].inc(total, tags)
        for status, n in counts.items():
            if status != Status.OK.value:
                self._m[FAILED].inc(n, {**tags, "status": status})
        gen = sum(x or 0 for x in generated_tokens)
        prompt = sum(x or 0 for x in prompt_tokens)
        if gen:
            self._m[GENERATED_TOKENS].inc(gen, tags)
        if prompt:
            self._m[PROMPT_TOKENS].inc(prompt, tags)

    def qa_pairs(self, statuses: Iterable[str], generated_tokens: Iterable[int], prompt_tokens: Iterable[int]) -> None:
        """A batch left the QA stage with pairs of these statuses and these token totals."""
        if not self._m:
            return
        tags = {"run_id": self.run_id}
        for status, n in Counter(statuses).items():
            self._m[QA_PAIRS].inc(n, {**tags, "status": status})
        gen, prompt = sum(generated_tokens), sum(prompt_tokens)
        if gen:
            self._m[QA_GENERATED_TOKENS].inc(gen, tags)
        if prompt:
            self._m[QA_PROMPT_TOKENS].inc(prompt, tags)

"""A committed run made without Ray: shard files through the real ShardWriter, a manifest, a report.

For unit tests of the report, the progress line and the status/report commands.
"""

from __future__ import annotations

import io

import pyarrow as pa

from pipeline.commit import MANIFEST
from pipeline.progress import RunObserver
from pipeline.report import publish_report
from pipeline.shards import Ledger, ShardWriter, write_bytes_atomic
from schemas import columns as C
from schemas.manifest import FileEntry, Manifest, RunSummary
from schemas.records import record_schema
from schemas.spec import StorageConfig

STATUSES = ["ok", "ok", "ok", "not_an_image", "ok", "decode_error", "ok", "ok", "ok", "empty_generation"]


#: Seconds after the start at which the fixture's engines are ready, and between two batch completions.
READY_S, BATCH_S, BATCH_ROWS = 2.0, 0.5, 5


def qa_pairs(i: int) -> list[dict]:
    """Two QA pairs for row ``i``: one ok, one ok or (every third row) a repetition."""
    def pair(k: int, status: str) -> dict:
        return {C.QA_QUESTION: f"q{k}?", C.QA_ANSWER: "a b c", C.QA_ORIGIN: "set", C.STATUS: status, C.ERROR: None,
                C.FINISH_REASON: "stop", C.NUM_PROMPT_TOKENS: 30, C.NUM_GENERATED_TOKENS: 3 + k + i % 4}

    return [pair(0, "ok"), pair(1, "repetition" if i % 3 == 0 else "ok")]


def shard_rows(start: int, n: int, started_at: float = 0.0, qa: bool = False) -> pa.Table:
    """Fixture rows ``start..start+n`` as the model stage leaves them (batch completion stamps included)."""
    statuses = [STATUSES[i % len(STATUSES)] for i in range(start, start + n)]
    done = [started_at + READY_S + BATCH_S * (1 + i // BATCH_ROWS) for i in range(start, start + n)]
    extra = {}
    if qa:
        pairs = [qa_pairs(i) if s == "ok" else None for i, s in zip(range(start, start + n), statuses, strict=True)]
        extra = {C.QA: pa.array(pairs, type=C.TYPES[C.QA]),
                 C.QA_PROMPT_TOKENS: [60 if p else None for p in pairs],
                 C.QA_GENERATED_TOKENS: [sum(x[C.NUM_GENERATED_TOKENS] for x in p) if p else None for p in pairs],
                 C.QA_MODEL_ID: ["tiny-qa"] * n, C.QA_ENGINE: ["transformers-5"] * n}
    return pa.table({
        C.ID: [f"id{i:04d}" for i in range(start, start + n)],
        C.SOURCE: [f"s3://corpus/{i}.jpg" for i in range(start, start + n)],
        C.STATUS: statuses,
        C.ERROR: [None if s == "ok" else f"{s} here" for s in statuses],
        C.CAPTION: ["a photo of a cat" if s == "ok" else None for s in statuses],
        C.NUM_GENERATED_TOKENS: [(i * 7) % 23 + 4 if s == "ok" else None for i, s in zip(range(start, start + n),
                                                                                         statuses, strict=True)],
        C.NUM_PROMPT_TOKENS: [40] * n,
        C.ENGINE: ["vllm-0.29.0"] * n,
        C.DONE_AT: done,
        C.ENGINES_READY_AT: [started_at + READY_S] * n,
        **extra,
    })


def make_committed_run(run_root: str, storage: StorageConfig, shards: int = 5, rows: int = 10,
                       stream: io.StringIO | None = None, report: bool = True,
                       qa: bool = False) -> tuple[Manifest, RunObserver]:
    """Write ``shards`` shards of ``rows`` rows (with QA pairs if ``qa``), commit them and (optionally) the report."""
    schema = record_schema(shard_rows(0, 1, qa=qa).column_names)
    writer = ShardWriter(run_root, storage, "zstd", schema)
    observer = RunObserver(stream=stream or io.StringIO(), min_interval_s=0.0)
    observer.start(shards * rows)
    files, by_status, tokens, ledger = [], {}, 0, Ledger()
    for k in range(shards):
        meta = writer(shard_rows(k * rows, rows, observer.timeline.started_at, qa)).to_pylist()[0]
        observer.shard(meta)
        ledger.add(meta)
        files.append(FileEntry(path=meta["path"], rows=meta["rows"]))
        tokens += meta["generated_tokens"]
    for k in range(shards):
        for s in shard_rows(k * rows, rows).column(C.STATUS).to_pylist():
            by_status[s] = by_status.get(s, 0) + 1
    q = ledger.qa
    manifest = Manifest(
        schema_version="2", record="dataset" if qa else "caption", run_id=run_root.rstrip("/").rsplit("/", 1)[-1],
        job="unit",
        spec_hash="x", spec={}, model_id="tiny", model_revision=None, engine="vllm-0.29.0", sampling_hash="s",
        code_version="vlmbatch 0.1.0", created_at="2026-11-22T23:00:00+00:00", files=files,
        summary=RunSummary(rows_in=shards * rows, rows_out=shards * rows, by_status=by_status, wall_s=10.0,
                           images_per_s=shards * rows / 10.0, prompt_tokens=40 * shards * rows,
                           generated_tokens=tokens, generated_tokens_per_s=tokens / 10.0,
                           startup_s=observer.timeline.startup_s, qa_pairs=q.pairs, qa_by_status=dict(q.by_status),
                           qa_prompt_tokens=q.prompt_tokens, qa_generated_tokens=q.generated_tokens,
                           qa_generated_tokens_per_s=q.generated_tokens / 10.0),
        qa_model_id="tiny-qa" if qa else None, qa_engine=q.engine,
    )
    write_bytes_atomic(f"{run_root}/{MANIFEST}", manifest.model_dump_json().encode(), storage)
    observer.finish()
    if report:
        publish_report(manifest, run_root, storage, observer.timeline, lengths=ledger.lengths)
    return manifest, observer

"""A committed run made without Ray: shard files through the real ShardWriter, a manifest, a report.

For unit tests of the report, the progress line and the status/report commands.
"""

from __future__ import annotations

import io

import pyarrow as pa

from pipeline.commit import MANIFEST
from pipeline.progress import RunObserver
from pipeline.report import publish_report
from pipeline.shards import ShardWriter, write_bytes_atomic
from schemas import columns as C
from schemas.manifest import FileEntry, Manifest, RunSummary
from schemas.records import record_schema
from schemas.spec import StorageConfig

STATUSES = ["ok", "ok", "ok", "not_an_image", "ok", "decode_error", "ok", "ok", "ok", "empty_generation"]


def shard_rows(start: int, n: int) -> pa.Table:
    statuses = [STATUSES[i % len(STATUSES)] for i in range(start, start + n)]
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
    })


def make_committed_run(run_root: str, storage: StorageConfig, shards: int = 5, rows: int = 10,
                       stream: io.StringIO | None = None, report: bool = True) -> tuple[Manifest, RunObserver]:
    """Write ``shards`` shards of ``rows`` rows, commit them and (optionally) the report."""
    schema = record_schema(shard_rows(0, 1).column_names)
    writer = ShardWriter(run_root, storage, "zstd", schema)
    observer = RunObserver(stream=stream or io.StringIO(), min_interval_s=0.0)
    observer.start(shards * rows)
    files, by_status, tokens = [], {}, 0
    for k in range(shards):
        meta = writer(shard_rows(k * rows, rows)).to_pylist()[0]
        observer.shard(meta)
        files.append(FileEntry(path=meta["path"], rows=meta["rows"]))
        tokens += meta["generated_tokens"]
    for k in range(shards):
        for s in shard_rows(k * rows, rows).column(C.STATUS).to_pylist():
            by_status[s] = by_status.get(s, 0) + 1
    manifest = Manifest(
        schema_version="1", record="caption", run_id=run_root.rstrip("/").rsplit("/", 1)[-1], job="unit",
        spec_hash="x", spec={}, model_id="tiny", model_revision=None, engine="vllm-0.29.0", sampling_hash="s",
        code_version="vlmbatch 0.1.0", created_at="2026-11-22T23:00:00+00:00", files=files,
        summary=RunSummary(rows_in=shards * rows, rows_out=shards * rows, by_status=by_status, wall_s=10.0,
                           images_per_s=shards * rows / 10.0, prompt_tokens=40 * shards * rows,
                           generated_tokens=tokens, generated_tokens_per_s=tokens / 10.0),
    )
    write_bytes_atomic(f"{run_root}/{MANIFEST}", manifest.model_dump_json().encode(), storage)
    observer.finish()
    if report:
        publish_report(manifest, run_root, storage, observer.timeline)
    return manifest, observer

"""The commit protocol: data files under the run's staging prefix, then one manifest.

Layout of a run::

    <sink>/<run_id>/staging/part-<hash of the shard's ids>.parquet
    <sink>/<run_id>/manifest.json          written last; its presence is the commit

Shard files are named from the ids they hold, so a retried write task overwrites its own
file instead of adding a second copy, and a file that a dead attempt left behind is never
listed: the manifest holds only the files whose writers reported back. The manifest is
written once, after the row count of the files equals the rows the source listed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections import Counter
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import filesystem, join_uri, split_uri
from schemas import columns as C
from schemas.manifest import FileEntry, Manifest, RunSummary
from schemas.records import CAPTION_SCHEMA, SCHEMA_VERSION, conform
from schemas.spec import SinkConfig, StorageConfig

if TYPE_CHECKING:
    import ray.data

    from pipeline.dag import Pipeline

STAGING = "staging"
MANIFEST = "manifest.json"

SHARD_META = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("by_status", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("generated_tokens", pa.int64()),
        pa.field("engine", pa.string()),
    ]
)


class CommitError(RuntimeError):
    """The run could not be committed; nothing was published."""


class ShardWriter:
    """Ray Data UDF: write one batch as one Parquet file; return one row describing it."""

    def __init__(self, run_root: str, storage: StorageConfig, compression: str,
                 schema: pa.Schema = CAPTION_SCHEMA):
        self.run_root = run_root
        self.storage = storage
        self.compression = compression
        self.schema = schema

    def __call__(self, table: pa.Table) -> pa.Table:
        data = conform(table, self.schema)
        ids = data.column(C.ID).to_pylist()
        name = "part-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24] + ".parquet"
        rel = f"{STAGING}/{name}"
        fs, root = filesystem(self.run_root, self.storage)
        fs.makedirs(f"{root}/{STAGING}", exist_ok=True)
        with fs.open(f"{root}/{rel}", "wb") as f:
            pq.write_table(data, f, compression=self.compression)
        statuses = Counter(data.column(C.STATUS).to_pylist())
        engines = {e for e in data.column(C.ENGINE).to_pylist() if e}
        return pa.table(
            {
                "path": [rel],
                "rows": [data.num_rows],
                "by_status": [json.dumps(statuses, sort_keys=True)],
                "prompt_tokens": [sum(x or 0 for x in data.column(C.NUM_PROMPT_TOKENS).to_pylist())],
                "generated_tokens": [sum(x or 0 for x in data.column(C.NUM_GENERATED_TOKENS).to_pylist())],
                "engine": [sorted(engines)[0] if engines else None],
            },
            schema=SHARD_META,
        )


def write_bytes_atomic(uri: str, data: bytes, storage: StorageConfig) -> None:
    """Write ``data`` so readers see all of it or nothing (rename locally, one PUT on object stores)."""
    fs, path = filesystem(uri, storage)
    protocol, _ = split_uri(uri)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if protocol == "file":
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def read_manifest(run_root: str, storage: StorageConfig | None = None) -> Manifest | None:
    """The committed manifest of a run, or None if the run is not committed."""
    fs, root = filesystem(run_root, storage)
    try:
        raw = fs.cat_file(f"{root}/{MANIFEST}")
    except FileNotFoundError:
        return None
    return Manifest.model_validate_json(raw)


def read_committed(run_root: str, storage: StorageConfig | None = None) -> pa.Table:
    """All rows of a committed run, read only through its manifest.

    Raises:
        CommitError: the run has no manifest, or a listed file's row count differs.
    """
    manifest = read_manifest(run_root, storage)
    if manifest is None:
        raise CommitError(f"{run_root} is not committed (no {MANIFEST})")
    fs, root = filesystem(run_root, storage)
    tables = []
    for entry in manifest.files:
        with fs.open(f"{root}/{entry.path}", "rb") as f:
            t = pq.read_table(f)
        if t.num_rows != entry.rows:
            raise CommitError(f"{entry.path}: {t.num_rows} rows on disk, manifest says {entry.rows}")
        tables.append(t)
    return pa.concat_tables(tables) if tables else CAPTION_SCHEMA.empty_table()


class ParquetCommitSink:
    """Sink of a caption run: shard files, row-count check, manifest last."""

    def __init__(self, config: SinkConfig, run_id: str, manifest_fields: dict, rows_in: int | None = None,
                 schema: pa.Schema = CAPTION_SCHEMA):
        self.config = config
        self.run_id = run_id
        self.run_root = join_uri(config.uri, run_id)
        self.manifest_fields = manifest_fields
        self.rows_in = rows_in
        self.schema = schema

    def requires(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema if not f.nullable)

    def commit(self, pipeline: Pipeline, ds: ray.data.Dataset) -> Manifest:
        """Run ``ds`` into shard files and publish the manifest.

        Raises:
            CommitError: the run is already committed, or rows were lost or duplicated.
        """
        if read_manifest(self.run_root, self.config.storage) is not None:
            raise CommitError(f"run {self.run_id} is already committed at {self.run_root}; use a new run id")
        rows_in = self.rows_in if self.rows_in is not None else pipeline.source.count()
        started = time.monotonic()
        shards = ds.map_batches(
            ShardWriter(self.run_root, self.config.storage, self.config.compression, self.schema),
            batch_size=self.config.rows_per_file, batch_format="pyarrow", num_cpus=0.25,
        )
        files: dict[str, FileEntry] = {}
        by_status: Counter = Counter()
        prompt_tokens = generated_tokens = 0
        engine = None
        for meta in shards.iter_rows():
            if meta["path"] in files:
                raise CommitError(f"two shards wrote {meta['path']}: the same rows were processed twice")
            files[meta["path"]] = FileEntry(path=meta["path"], rows=meta["rows"])
            by_status.update(json.loads(meta["by_status"]))
            prompt_tokens += meta["prompt_tokens"]
            generated_tokens += meta["generated_tokens"]
            engine = engine or meta["engine"]
        wall = max(time.monotonic() - started, 1e-9)
        rows_out = sum(f.rows for f in files.values())
        if rows_in is not None and rows_out != rows_in:
            raise CommitError(f"source listed {rows_in} rows but {rows_out} were written; not committing")
        summary = RunSummary(
            rows_in=rows_in if rows_in is not None else rows_out,
            rows_out=rows_out,
            by_status=dict(by_status),
            wall_s=round(wall, 3),
            images_per_s=round(rows_out / wall, 4),
            prompt_tokens=prompt_tokens,
            generated_tokens=generated_tokens,
            generated_tokens_per_s=round(generated_tokens / wall, 3),
        )
        manifest = Manifest(
            schema_version=self.schema.metadata.get(b"vlmbatch.schema_version", SCHEMA_VERSION.encode()).decode(),
            record=self.schema.metadata.get(b"vlmbatch.record", b"caption").decode(),
            run_id=self.run_id,
            engine=engine,
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            files=sorted(files.values(), key=lambda f: f.path),
            summary=summary,
            **self.manifest_fields,
        )
        write_bytes_atomic(join_uri(self.run_root, MANIFEST), manifest.model_dump_json(indent=2).encode(),
                           self.config.storage)
        return manifest

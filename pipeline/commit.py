"""The commit protocol: shard files under the run's staging prefix, then one manifest.

Layout of a run::

    <sink>/<run_id>/staging/part-<hash of the shard's ids>.parquet   the rows
    <sink>/<run_id>/errors/part-<same>.parquet                      id, source, status, error of failed rows
    <sink>/<run_id>/manifest.json                                   written last; its presence is the commit

Resume: a run id that is not committed yet may be run again. The new attempt reads the ids
already in staging, processes only the rest, and commits old and new shards together. Every
listed row is then in exactly one committed file; the commit checks that the ids are unique
and that their count equals the source's before it writes the manifest.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import Counter
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import ensure_parent, filesystem, join_uri, split_uri
from pipeline.faults import AFTER_SHARDS, BEFORE_MANIFEST, crash_point
from pipeline.progress import RunObserver
from pipeline.shards import ShardWriter, StagingState, retry, scan_staging
from schemas.manifest import FileEntry, Manifest, RunSummary
from schemas.records import CAPTION_SCHEMA, SCHEMA_VERSION
from schemas.spec import SinkConfig, StorageConfig

if TYPE_CHECKING:
    from pipeline.dag import Pipeline

MANIFEST = "manifest.json"


class CommitError(RuntimeError):
    """The run could not be committed; nothing was published."""


def write_bytes_atomic(uri: str, data: bytes, storage: StorageConfig) -> None:
    """Write ``data`` so readers see all of it or nothing (rename locally, one PUT on object stores)."""
    fs, path = filesystem(uri, storage)
    protocol, _ = split_uri(uri)
    ensure_parent(uri)
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
        raw = retry(lambda: fs.cat_file(f"{root}/{MANIFEST}"), f"read {run_root}/{MANIFEST}")
    except FileNotFoundError:
        return None
    return Manifest.model_validate_json(raw)


def read_committed(run_root: str, storage: StorageConfig | None = None,
                   columns: list[str] | None = None) -> pa.Table:
    """All rows of a committed run (only ``columns``, if given), read only through its manifest.

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
            t = pq.read_table(f, columns=columns)
        if t.num_rows != entry.rows:
            raise CommitError(f"{entry.path}: {t.num_rows} rows on disk, manifest says {entry.rows}")
        tables.append(t)
    if tables:
        return pa.concat_tables(tables)
    empty = CAPTION_SCHEMA.empty_table()
    return empty.select(columns) if columns else empty


class ParquetCommitSink:
    """Sink of a run: shard files, exactly-once check, manifest last."""

    def __init__(self, config: SinkConfig, run_id: str, manifest_fields: dict, rows_in: int | None = None,
                 schema: pa.Schema = CAPTION_SCHEMA, skip_ids: list[str] | None = None):
        """
        Args:
            config: where and how to write.
            run_id: the run; reusing an uncommitted one resumes it.
            manifest_fields: job-level fields of the manifest (job, spec, model, ...).
            rows_in: rows the source yields, if the source cannot count them itself.
            schema: record schema of the files.
            skip_ids: ids to leave out entirely (done by earlier runs of a schedule).
        """
        self.config = config
        self.run_id = run_id
        self.run_root = join_uri(config.uri, run_id)
        self.manifest_fields = manifest_fields
        self.rows_in = rows_in
        self.schema = schema
        self.skip_ids = skip_ids or []
        # The running count line during the commit loop, the run report after the manifest.
        self.observer = RunObserver()

    def requires(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema if not f.nullable)

    def commit(self, pipeline: Pipeline) -> Manifest:
        """Run ``pipeline`` into shard files (resuming what staging holds) and publish the manifest.

        Raises:
            CommitError: the run is already committed, or rows were lost or duplicated.
        """
        storage = self.config.storage
        if read_manifest(self.run_root, storage) is not None:
            raise CommitError(f"run {self.run_id} is already committed at {self.run_root}; use a new run id")
        pipeline.validate(self.requires())
        rows_in = self.expected_rows(pipeline)
        started = time.monotonic()
        earlier = scan_staging(self.run_root, storage)
        files = {f.path: f for f in earlier.files}
        error_files = {f.path: f for f in earlier.error_files}
        by_status = Counter(earlier.by_status)
        prompt_tokens, generated_tokens, engine = earlier.prompt_tokens, earlier.generated_tokens, earlier.engine
        new_rows = 0
        shards = None
        self.observer.start(rows_in, len(earlier.ids))
        if rows_in is None or len(earlier.ids) < rows_in:
            import ray.data

            ds = pipeline.plan(self.requires(), skip_ids=list(self.skip_ids) + earlier.ids)
            # A standing writer that reserves no CPU never queues behind fetch and decode tasks:
            # shards land as soon as their rows are captioned, so a crash loses little and
            # finished rows do not pile up in the object store.
            shards = ds.map_batches(
                ShardWriter,
                fn_constructor_args=(self.run_root, storage, self.config.compression, self.schema),
                batch_size=self.config.rows_per_file, batch_format="pyarrow", num_cpus=0,
                compute=ray.data.ActorPoolStrategy(size=1),
            )
            for meta in shards.iter_rows():
                if meta["path"] in files:
                    raise CommitError(f"two shards wrote {meta['path']}: the same rows were processed twice")
                files[meta["path"]] = FileEntry(path=meta["path"], rows=meta["rows"])
                if meta["error_path"]:
                    error_files[meta["error_path"]] = FileEntry(path=meta["error_path"], rows=meta["error_rows"])
                by_status.update(json.loads(meta["by_status"]))
                prompt_tokens += meta["prompt_tokens"]
                generated_tokens += meta["generated_tokens"]
                engine = engine or meta["engine"]
                new_rows += meta["rows"]
                crash_point(AFTER_SHARDS, len(files) - len(earlier.files))
                self.observer.shard(meta)
        wall = max(time.monotonic() - started, 1e-9)
        rows_out = sum(f.rows for f in files.values())
        self._check_exactly_once(files, rows_in, rows_out, earlier)
        summary = RunSummary(
            rows_in=rows_in if rows_in is not None else rows_out,
            rows_out=rows_out,
            rows_resumed=len(earlier.ids),
            by_status=dict(by_status),
            wall_s=round(wall, 3),
            images_per_s=round(new_rows / wall, 4),
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
            error_files=sorted(error_files.values(), key=lambda f: f.path),
            summary=summary,
            **self.manifest_fields,
        )
        crash_point(BEFORE_MANIFEST)
        retry(lambda: write_bytes_atomic(join_uri(self.run_root, MANIFEST),
                                         manifest.model_dump_json(indent=2).encode(), storage),
              f"write {self.run_root}/{MANIFEST}")
        self.observer.committed(manifest, self.run_root, storage, shards)
        return manifest

    def expected_rows(self, pipeline: Pipeline) -> int | None:
        """Rows this run must commit: the source's, less those skipped as done elsewhere; None if unknown."""
        if self.rows_in is not None and not self.skip_ids:
            return self.rows_in
        if not self.skip_ids:
            return pipeline.source.count()
        ids = pipeline.source.ids()
        if ids is None:
            return None
        skip = set(self.skip_ids)
        return sum(1 for i in ids if i not in skip)

    def _check_exactly_once(self, files: dict[str, FileEntry], rows_in: int | None, rows_out: int,
                            earlier: StagingState) -> None:
        """Every listed row once: unique ids across the files, as many as the source listed.

        The ids of earlier attempts' files were read by the staging scan; only new files are read here.
        """
        from schemas import columns as C

        seen: set[str] = set(earlier.ids)
        if len(seen) != len(earlier.ids):
            raise CommitError(f"earlier attempts' shards repeat {len(earlier.ids) - len(seen)} ids; not committing")
        known = {f.path for f in earlier.files}
        fs, root = filesystem(self.run_root, self.config.storage)
        for entry in (f for f in files.values() if f.path not in known):
            with fs.open(f"{root}/{entry.path}", "rb") as f:
                ids = pq.read_table(f, columns=[C.ID]).column(C.ID).to_pylist()
            dupes = seen.intersection(ids)
            if dupes or len(set(ids)) != len(ids):
                raise CommitError(f"{entry.path} repeats ids already committed ({len(dupes)} rows); not committing")
            seen.update(ids)
        if rows_in is not None and rows_out != rows_in:
            raise CommitError(f"source listed {rows_in} rows but {rows_out} were written; not committing")

"""Shard files of a run: atomic writes with retries, the writer stage, and the ledger of what is written.

A shard is one Parquet file under ``<run>/staging/`` named from the ids it holds, plus, when
any of its rows failed, one file under ``<run>/errors/`` with those rows' id, source, status
and error. Files appear whole or not at all (one PUT on object stores; write-then-rename on
local disks), so a reader of the staging prefix never sees half a file.

The :class:`Ledger` adds up what the shards hold (files, statuses, token counts, and the count
and :func:`operators.idset.key_digest` of their row keys, computed by the writer where each shard
is written); the commit starts it from what earlier attempts left in staging (:func:`scan_staging`,
CPU tasks that read each file's key column) and adds one entry per shard the writer reports. The
driver holds one entry per shard, never a row key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from operators.base import ActorPool, Resources, Stage
from operators.idset import (
    DIGEST_MOD,
    GROUPS,
    KeySet,
    as_key_array,
    concat_keys,
    digest_hex,
    key_digest,
    reduce_buckets,
    split_by_bucket,
)
from operators.storage import ensure_parent, filesystem, join_uri, split_uri
from operators.storage_errors import is_transient
from operators.tasks import cpu_task
from pipeline.figures import LengthCounts, QAFigures, batch_times, length_counts, qa_figures
from schemas import columns as C
from schemas.manifest import FileEntry
from schemas.records import conform
from schemas.spec import SinkConfig, StorageConfig
from schemas.status import Status

log = logging.getLogger(__name__)
T = TypeVar("T")

STAGING = "staging"
ERRORS = "errors"
ERROR_COLUMNS = (C.ID, C.SOURCE, C.STATUS, C.ERROR)

SHARD_META = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("error_path", pa.string()),
        pa.field("error_rows", pa.int64()),
        pa.field("by_status", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("generated_tokens", pa.int64()),
        pa.field("engine", pa.string()),
        pa.field("qa", pa.string()),  # pipeline.figures.qa_figures
        pa.field("lengths", pa.string()),  # pipeline.figures.length_counts
        pa.field("timing", pa.string()),  # pipeline.figures.batch_times
        pa.field("digest", pa.string()),
        pa.field("repeats", pa.int64()),
    ]
)


def retry(fn: Callable[[], T], what: str, attempts: int = 7, base_s: float = 0.5) -> T:
    """Call ``fn`` until it succeeds, backing off 0.5, 1, 2 ... s (about 30 s in all by default).

    For idempotent storage operations only; an object store that is briefly away (restart,
    throttling) must not fail a run that has spent GPU-hours. Errors that no retry changes (a
    missing object or bucket, a denied action, rejected credentials, bad data) are raised at once
    (:func:`operators.storage_errors.is_transient`).
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - transient ones until the budget is spent
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            delay = base_s * 2**attempt
            log.warning("%s failed (%s); retrying in %.1f s", what, type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def write_atomic(uri: str, write: Callable[[BinaryIO], None], storage: StorageConfig | None = None) -> None:
    """Write ``uri`` through ``write(file)`` so that readers see the whole object or none of it.

    Local disks: a temporary file beside it, fsynced, renamed into place. Object stores: the
    object is created by the final PUT of the upload, whole; when ``write`` fails the upload is
    discarded (a started multipart upload aborted), so a failed write publishes nothing.
    """
    fs, path = filesystem(uri, storage)
    protocol, _ = split_uri(uri)
    ensure_parent(uri)
    if protocol == "file":
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        f = fs.open(path, "wb")
        try:
            write(f)
        except BaseException:
            # Closing would upload what was buffered: a truncated object under the final name.
            _discard(f)
            raise
        try:
            f.close()
        except BaseException:
            # The final PUT or CompleteMultipartUpload failed: no object, but a started multipart
            # upload would keep its parts (and their storage) until aborted.
            _discard(f)
            raise


def _discard(f) -> None:
    """Abandon an object-store upload: abort its multipart upload, if one started; never publish."""
    try:
        f.discard()
    except Exception as exc:  # noqa: BLE001 - the upload's own failure is the one to report
        log.warning("could not abort the upload of %s: %s", getattr(f, "path", "?"), exc)
    f.closed = True


def _remove_quietly(uri: str, storage: StorageConfig | None) -> None:
    fs, path = filesystem(uri, storage)
    try:
        fs.rm_file(path)
    except Exception as exc:  # noqa: BLE001 - the write's own failure is the one to report
        log.warning("could not remove %s after a failed shard write: %s", uri, exc)


def write_bytes_atomic(uri: str, data: bytes, storage: StorageConfig | None = None) -> None:
    """:func:`write_atomic` of ``data``."""
    write_atomic(uri, lambda f: f.write(data), storage)


def shard_name(ids: list[str]) -> str:
    """File name of the shard holding ``ids``: a retried write of the same rows overwrites itself."""
    return "part-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24] + ".parquet"


def shard_stats(data: pa.Table, key: str = C.ID) -> dict:
    """A shard's figures: rows per status (JSON), prompt and generated tokens, the engine that wrote it, its QA
    figures and generated-length counts (JSON), the digest of its ``key`` column and how many of its keys repeat
    another of its keys."""
    def total(name: str) -> int:
        return sum(x or 0 for x in data.column(name).to_pylist()) if name in data.column_names else 0

    engines = sorted({e for e in data.column(C.ENGINE).to_pylist() if e}) if C.ENGINE in data.column_names else []
    keys = data.column(key).to_pylist()
    return {"by_status": json.dumps(Counter(data.column(C.STATUS).to_pylist()), sort_keys=True),
            "prompt_tokens": total(C.NUM_PROMPT_TOKENS), "generated_tokens": total(C.NUM_GENERATED_TOKENS),
            "engine": engines[0] if engines else None, "qa": qa_figures(data), "lengths": length_counts(data),
            "digest": digest_hex(key_digest(keys)), "repeats": len(keys) - len(set(keys))}


class ShardWriter:
    """Ray Data UDF: write one batch as one shard (and its error rows); return one row describing it.

    The row carries the count and digest of the shard's ``key`` column (the run's exactly-once
    key) and how many keys repeat within it, so the commit checks every row once without
    reading a key back.
    """

    def __init__(self, run_root: str, storage: StorageConfig, compression: str, schema: pa.Schema, key: str = C.ID):
        self.run_root = run_root
        self.storage = storage
        self.compression = compression
        self.schema = schema
        self.key = key

    def _write(self, rel: str, table: pa.Table) -> None:
        retry(lambda: write_atomic(f"{self.run_root}/{rel}",
                                   lambda f: pq.write_table(table, f, compression=self.compression), self.storage),
              f"write {rel}")

    def __call__(self, table: pa.Table) -> pa.Table:
        data = conform(table, self.schema)
        name = shard_name(data.column(C.ID).to_pylist())
        rel = f"{STAGING}/{name}"
        statuses = data.column(C.STATUS).to_pylist()
        failed = [i for i, s in enumerate(statuses) if s != Status.OK.value]
        error_rel = None
        if failed:
            error_rel = f"{ERRORS}/{name}"
            self._write(error_rel, data.select(list(ERROR_COLUMNS)).take(pa.array(failed, pa.int64())))
        # The data file goes last: its presence is what a resume counts as done.
        try:
            self._write(rel, data)
        except BaseException:
            if error_rel:  # a shard that failed publishes nothing, not its error rows alone
                _remove_quietly(f"{self.run_root}/{error_rel}", self.storage)
            raise
        meta = {"path": rel, "rows": data.num_rows, "error_path": error_rel, "error_rows": len(failed),
                **shard_stats(data, self.key), "timing": batch_times(table)}
        return pa.Table.from_pylist([meta], schema=SHARD_META)


#: What the writer needs of every row (the rest of the record may be null).
WRITER_NEEDS = (C.ID, C.SOURCE, C.STATUS, C.ERROR)


def writer_stage(run_root: str, sink: SinkConfig, schema: pa.Schema, key: str = C.ID) -> Stage:
    """The sink's writer: ``sink.rows_per_file`` rows per shard, one row of :data:`SHARD_META` per shard.

    A standing writer that reserves no CPU never queues behind fetch and decode tasks: shards
    land as soon as their rows are captioned, so a crash loses little and finished rows do not
    pile up in the object store. Its node may be lost like any other: Ray restarts the actor
    and retries its batches (Ray Data's actor defaults, kept by :meth:`Stage.apply`); a retried
    batch writes the same file, named from its ids.
    """
    return Stage("write", ShardWriter, dict(run_root=run_root, storage=sink.storage, compression=sink.compression,
                                            schema=schema, key=key),
                 needs=WRITER_NEEDS, resources=Resources(num_cpus=0), batch_size=sink.rows_per_file,
                 pool=ActorPool(size=1), keeps_rows=False)


@dataclass
class Ledger:
    """What a run's shards hold, added up: earlier attempts' (from staging) first, then this attempt's."""

    files: dict[str, FileEntry] = field(default_factory=dict)
    error_files: dict[str, FileEntry] = field(default_factory=dict)
    by_status: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    engine: str | None = None
    qa: QAFigures = field(default_factory=QAFigures)
    lengths: LengthCounts = field(default_factory=LengthCounts)
    digest: int = 0  # sum of the shards' key digests (mod 2**128)
    repeats: int = 0  # keys repeated within a shard, summed

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files.values())

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.by_status.items() if s != Status.OK.value)

    @property
    def digest_hex(self) -> str:
        return digest_hex(self.digest)

    def add(self, meta: dict) -> None:
        """Count one shard (a :data:`SHARD_META` row)."""
        self.files[meta["path"]] = FileEntry(path=meta["path"], rows=meta["rows"])
        if meta["error_path"]:
            self.error_files[meta["error_path"]] = FileEntry(path=meta["error_path"], rows=meta["error_rows"])
        self.by_status.update(json.loads(meta["by_status"]))
        self.prompt_tokens += meta["prompt_tokens"]
        self.generated_tokens += meta["generated_tokens"]
        self.engine = self.engine or meta["engine"]
        self.qa.add(meta.get("qa"))
        self.lengths.add(meta["lengths"])
        self.digest = (self.digest + int(meta["digest"], 16)) % DIGEST_MOD
        self.repeats += meta["repeats"]


_SCAN_COLUMNS = (C.ID, C.SOURCE, C.STATUS, C.NUM_PROMPT_TOKENS, C.NUM_GENERATED_TOKENS, C.ENGINE, C.QA,
                 C.QA_PROMPT_TOKENS, C.QA_GENERATED_TOKENS, C.QA_ENGINE)


def _scan_file(uri: str, storage: StorageConfig, key: str) -> tuple[dict, pa.ChunkedArray] | None:
    """One staging file's :data:`SHARD_META` row and its keys; None if it cannot be read as Parquet."""
    fs, path = filesystem(uri, storage)
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            # Decoded in this thread: Arrow's pool threads would release the Python-owned read buffers
            # after this returns, and one still doing so at interpreter exit aborts the process
            # (std::terminate: ``vlmbatch status``'s rare "terminate called without an active exception").
            t = pf.read(columns=[c for c in _SCAN_COLUMNS if c in pf.schema_arrow.names], use_threads=False)
    except Exception as exc:  # noqa: BLE001 - unreadable leftovers are redone, not trusted
        log.warning("ignoring unreadable staging file %s: %s", uri, exc)
        return None
    name = uri.rsplit("/", 1)[1]
    stats = shard_stats(t, key)
    failed = sum(n for s, n in json.loads(stats["by_status"]).items() if s != Status.OK.value)
    meta = {"path": f"{STAGING}/{name}", "rows": t.num_rows, "error_path": f"{ERRORS}/{name}" if failed else None,
            "error_rows": failed, **stats}
    return meta, t.column(key)


def _scan_group(uris: list[str], storage: StorageConfig, key: str, buckets: int) -> tuple[list[dict], list]:
    """Task body: the metadata rows of a group of staging files, and their keys split by bucket (sorted, distinct)."""
    metas, keys = [], []
    for uri in uris:
        scanned = _scan_file(uri, storage, key)
        if scanned is not None:
            metas.append(scanned[0])
            keys.append(as_key_array(scanned[1]))
    return metas, split_by_bucket(concat_keys(keys), buckets)


def staged_files(run_root: str, storage: StorageConfig) -> list[str]:
    """URIs of the shard files in a run's staging prefix, sorted (one listing, O(shards))."""
    fs, root = filesystem(run_root, storage)
    try:
        names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/{STAGING}", detail=False))
    except FileNotFoundError:
        return []
    return [join_uri(run_root, STAGING, n) for n in names if n.startswith("part-") and n.endswith(".parquet")]


def scan_staging(run_root: str, storage: StorageConfig, key: str = C.ID) -> Ledger:
    """The ledger of the shards earlier attempts of this run left in staging (figures only, in this process).

    For tools (``vlmbatch status``); a run uses :func:`scan_staging_tasks`. A file that cannot be
    read as Parquet is ignored (its rows are simply done again).
    """
    ledger = Ledger()
    for uri in staged_files(run_root, storage):
        scanned = _scan_file(uri, storage, key)
        if scanned is not None:
            ledger.add(scanned[0])
    return ledger


def scan_staging_tasks(run_root: str, storage: StorageConfig, key: str = C.ID,
                       groups: int = GROUPS) -> tuple[Ledger, KeySet]:
    """:func:`scan_staging` in CPU tasks, plus the done keys as a :class:`KeySet` (left in the object store).

    The driver receives one metadata row per shard; the keys stay with the tasks' results.
    """
    import ray

    uris = staged_files(run_root, storage)
    ledger = Ledger()
    if not uris:
        return ledger, KeySet()
    task = cpu_task(_scan_group, num_returns=2)
    step = -(-len(uris) // groups)
    mapped = [task.remote(uris[i:i + step], storage, key, groups) for i in range(0, len(uris), step)]
    refs, sizes = reduce_buckets([split for _, split in mapped], groups)
    for metas in ray.get([metas for metas, _ in mapped]):
        for meta in metas:
            ledger.add(meta)
    return ledger, KeySet(refs, sum(ray.get(sizes)), bucketed=True)

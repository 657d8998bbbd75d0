"""Shard files of a run: atomic writes with retries, and reading back what a dead attempt left.

A shard is one Parquet file under ``<run>/staging/`` named from the ids it holds, plus, when
any of its rows failed, one file under ``<run>/errors/`` with those rows' id, source, status
and error. Files appear whole or not at all (one PUT on object stores; write-then-rename on
local disks), so a reader of the staging prefix never sees half a file.
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
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import ensure_parent, filesystem, split_uri
from schemas import columns as C
from schemas.manifest import FileEntry
from schemas.records import CAPTION_SCHEMA, conform
from schemas.spec import StorageConfig

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
    ]
)


def retry(fn: Callable[[], T], what: str, attempts: int = 7, base_s: float = 0.5) -> T:
    """Call ``fn`` until it succeeds, backing off 0.5, 1, 2 ... s (about 30 s in all by default).

    For idempotent storage operations only; an object store that is briefly away (restart,
    throttling) must not fail a run that has spent GPU-hours.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except (FileNotFoundError, PermissionError):
            raise
        except Exception as exc:  # noqa: BLE001 - transient until the budget is spent
            if attempt == attempts - 1:
                raise
            delay = base_s * 2**attempt
            log.warning("%s failed (%s); retrying in %.1f s", what, type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def write_parquet_atomic(uri: str, table: pa.Table, compression: str, storage: StorageConfig) -> None:
    """Write ``table`` to ``uri`` so that readers see the whole file or none of it."""
    fs, path = filesystem(uri, storage)
    protocol, _ = split_uri(uri)
    ensure_parent(uri)
    if protocol == "file":
        tmp = f"{path}.tmp-{os.getpid()}"
        pq.write_table(table, tmp, compression=compression)
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as f:  # the object is created by the final PUT, whole
            pq.write_table(table, f, compression=compression)


def shard_name(ids: list[str]) -> str:
    """File name of the shard holding ``ids``: a retried write of the same rows overwrites itself."""
    return "part-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24] + ".parquet"


class ShardWriter:
    """Ray Data UDF: write one batch as one shard (and its error rows); return one row describing it."""

    def __init__(self, run_root: str, storage: StorageConfig, compression: str, schema: pa.Schema = CAPTION_SCHEMA):
        self.run_root = run_root
        self.storage = storage
        self.compression = compression
        self.schema = schema

    def __call__(self, table: pa.Table) -> pa.Table:
        data = conform(table, self.schema)
        ids = data.column(C.ID).to_pylist()
        name = shard_name(ids)
        rel = f"{STAGING}/{name}"
        statuses = data.column(C.STATUS).to_pylist()
        failed = [i for i, s in enumerate(statuses) if s != "ok"]
        error_rel = None
        if failed:
            error_rel = f"{ERRORS}/{name}"
            errors = data.select(list(ERROR_COLUMNS)).take(pa.array(failed, pa.int64()))
            retry(lambda: write_parquet_atomic(f"{self.run_root}/{error_rel}", errors, self.compression,
                                               self.storage), f"write {error_rel}")
        # The data file goes last: its presence is what a resume counts as done.
        retry(lambda: write_parquet_atomic(f"{self.run_root}/{rel}", data, self.compression, self.storage),
              f"write {rel}")
        return pa.table([[rel], [data.num_rows], [error_rel], [len(failed)]] + _stats(data), schema=SHARD_META)


def _stats(data: pa.Table) -> list[list]:
    engines = sorted({e for e in data.column(C.ENGINE).to_pylist() if e}) if C.ENGINE in data.column_names else []
    return [
        [json.dumps(Counter(data.column(C.STATUS).to_pylist()), sort_keys=True)],
        [sum(x or 0 for x in data.column(C.NUM_PROMPT_TOKENS).to_pylist())],
        [sum(x or 0 for x in data.column(C.NUM_GENERATED_TOKENS).to_pylist())],
        [engines[0] if engines else None],
    ]


@dataclass
class StagingState:
    """What earlier attempts of a run left in its staging prefix."""

    files: list[FileEntry] = field(default_factory=list)
    error_files: list[FileEntry] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    by_status: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    engine: str | None = None


def scan_staging(run_root: str, storage: StorageConfig) -> StagingState:
    """Read the shards earlier attempts of this run committed to staging (ids and stats only).

    A file that cannot be read as Parquet is ignored (its rows are simply done again).
    """
    fs, root = filesystem(run_root, storage)
    state = StagingState()
    try:
        names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/{STAGING}", detail=False))
    except FileNotFoundError:
        return state
    wanted = [C.ID, C.STATUS, C.NUM_PROMPT_TOKENS, C.NUM_GENERATED_TOKENS, C.ENGINE]
    for name in names:
        if not (name.startswith("part-") and name.endswith(".parquet")):
            continue
        try:
            with fs.open(f"{root}/{STAGING}/{name}", "rb") as f:
                t = pq.read_table(f, columns=wanted)
        except Exception as exc:  # noqa: BLE001 - unreadable leftovers are redone, not trusted
            log.warning("ignoring unreadable staging file %s: %s", name, exc)
            continue
        state.files.append(FileEntry(path=f"{STAGING}/{name}", rows=t.num_rows))
        state.ids.extend(t.column(C.ID).to_pylist())
        by_status, prompt, generated, engine = (x[0] for x in _stats(t))
        state.by_status.update(json.loads(by_status))
        state.prompt_tokens += prompt
        state.generated_tokens += generated
        state.engine = state.engine or engine
        failed = sum(n for s, n in json.loads(by_status).items() if s != "ok")
        if failed:
            state.error_files.append(FileEntry(path=f"{ERRORS}/{name}", rows=failed))
    return state

"""The commit protocol: shard files under the run's staging prefix, then one manifest.

Layout of a run::

    <sink>/<run_id>/staging/part-<hash of the shard's ids>.parquet   the rows
    <sink>/<run_id>/errors/part-<same>.parquet                      id, source, status, error of failed rows
    <sink>/<run_id>/manifest.json                                   written last; its presence is the commit

Resume: a run id that is not committed yet may be run again. The new attempt reads the ids
already in staging, processes only the rest, and commits old and new shards together. Every
listed row is then in exactly one committed file: :func:`check_exactly_once` checks that the
ids are unique and that their count equals the source's before the manifest is written.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import filesystem, join_uri, split_uri
from pipeline.conditional import SUPPORTED, ConditionalObject
from pipeline.shards import Ledger, retry, write_bytes_atomic
from schemas import columns as C
from schemas.manifest import Manifest
from schemas.records import record_schema
from schemas.spec import StorageConfig

MANIFEST = "manifest.json"


class CommitError(RuntimeError):
    """The run could not be committed; nothing was published."""


def read_manifest(run_root: str, storage: StorageConfig | None = None) -> Manifest | None:
    """The committed manifest of a run, or None if the run is not committed."""
    fs, root = filesystem(run_root, storage)
    try:
        raw = retry(lambda: fs.cat_file(f"{root}/{MANIFEST}"), f"read {run_root}/{MANIFEST}")
    except FileNotFoundError:
        return None
    return Manifest.model_validate_json(raw)


def write_manifest(run_root: str, manifest: Manifest, storage: StorageConfig | None = None) -> None:
    """Publish ``manifest``: the commit of the run, once (a conditional create where the store has one).

    Raises:
        CommitError: another run of the id committed first (its manifest is left as it is).
    """
    uri, body = join_uri(run_root, MANIFEST), manifest.model_dump_json(indent=2).encode()
    if split_uri(uri)[0] not in SUPPORTED:
        retry(lambda: write_bytes_atomic(uri, body, storage), f"write {uri}")
        return
    target = ConditionalObject(uri, storage)

    def create() -> None:
        if target.create(body) is None:
            existing = target.read()
            # Our own earlier PUT whose answer was lost (and retried) left the same bytes.
            if existing is None or existing[1] != body:
                raise CommitError(f"{run_root} was committed by another run meanwhile; not replacing its manifest")

    retry(create, f"write {uri}")


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
            t = pq.read_table(f, columns=columns, use_threads=False)
        if t.num_rows != entry.rows:
            raise CommitError(f"{entry.path}: {t.num_rows} rows on disk, manifest says {entry.rows}")
        tables.append(t)
    if tables:
        return pa.concat_tables(tables)
    empty = record_schema(C.TYPES).empty_table()
    return empty.select(columns) if columns else empty


def check_exactly_once(ledger: Ledger, earlier: set[str], rows_in: int | None, run_root: str,
                       storage: StorageConfig | None) -> None:
    """Every listed row once: unique ids across the files, as many as the source listed.

    The ids of earlier attempts' files (paths in ``earlier``) were read by the staging scan into
    ``ledger.ids``; only this attempt's files are read here.

    Raises:
        CommitError: an id repeats, or the row count differs from the source's.
    """
    seen: set[str] = set(ledger.ids)
    if len(seen) != len(ledger.ids):
        raise CommitError(f"earlier attempts' shards repeat {len(ledger.ids) - len(seen)} ids; not committing")
    fs, root = filesystem(run_root, storage)
    for entry in (f for f in ledger.files.values() if f.path not in earlier):
        with fs.open(f"{root}/{entry.path}", "rb") as f:
            ids = pq.read_table(f, columns=[C.ID], use_threads=False).column(C.ID).to_pylist()
        dupes = seen.intersection(ids)
        if dupes or len(set(ids)) != len(ids):
            raise CommitError(f"{entry.path} repeats ids already committed ({len(dupes)} rows); not committing")
        seen.update(ids)
    if rows_in is not None and ledger.rows != rows_in:
        raise CommitError(f"source listed {rows_in} rows but {ledger.rows} were written; not committing")

"""The commit protocol: shard files under the run's staging prefix, then one manifest.

Layout of a run::

    <sink>/<run_id>/staging/part-<hash of the shard's ids>.parquet   the rows
    <sink>/<run_id>/errors/part-<same>.parquet                      id, source, status, error of failed rows
    <sink>/<run_id>/manifest.json                                   written last; its presence is the commit

Resume: a run id that is not committed yet may be run again. The new attempt reads the keys
already in staging (in CPU tasks), processes only the rest, and commits old and new shards
together. Every listed row is then in exactly one committed file: :func:`check_exactly_once`
compares the shards' row counts and key digests (computed where each shard was written) with
the listing's (computed where it was listed) before the manifest is written; the driver adds
one number per shard and never holds a key.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from operators.base import Expected
from operators.idset import Repeats, find_repeats
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


def check_exactly_once(ledger: Ledger, expected: Expected, run_root: str, storage: StorageConfig | None) -> None:
    """Every listed row once: no key twice within a shard or across shards, as many rows as listed.

    With the listing's digest known, equal counts and equal digests mean the shards hold the
    listed keys, each once (a key written twice adds its hash twice, a lost one takes it away).
    Without it (a source that knows its rows only as it reads them), CPU tasks look for keys
    repeated across the staged shards. When a check fails the repeated keys are looked up in
    tasks, so the error names some.

    Raises:
        CommitError: a key repeats, a row is missing or unlisted, or the count differs from the source's.
    """
    key = expected.key
    if ledger.repeats:
        raise CommitError(f"{ledger.repeats} rows repeat a key ({key}) within their shard; not committing"
                          f"{_repeated(ledger, key, run_root, storage)}")
    if expected.rows is not None and ledger.rows != expected.rows:
        raise CommitError(f"source listed {expected.rows} rows but {ledger.rows} were written; not committing"
                          f"{_repeated(ledger, key, run_root, storage)}")
    if expected.digest is not None:
        if ledger.digest_hex != expected.digest:
            raise CommitError(f"the {ledger.rows} rows written are not the rows listed ({key} digest "
                              f"{ledger.digest_hex} != {expected.digest}); not committing"
                              f"{_repeated(ledger, key, run_root, storage)}")
        return
    found = _find(ledger, key, run_root, storage)
    if found.count:
        raise CommitError(f"{found.count} rows repeat a key ({key}) of another shard (e.g. "
                          f"{', '.join(found.examples)}); not committing")


def _find(ledger: Ledger, key: str, run_root: str, storage: StorageConfig | None) -> Repeats:
    return find_repeats([join_uri(run_root, p) for p in sorted(ledger.files)], key, storage, rows=ledger.rows)


def _repeated(ledger: Ledger, key: str, run_root: str, storage: StorageConfig | None) -> str:
    """`` (repeated: ...)`` naming some keys written twice, or that none was (a row is missing or unlisted)."""
    found = _find(ledger, key, run_root, storage)
    if found.count:
        return f" ({found.count} rows repeat a key ({key}), e.g. {', '.join(found.examples)})"
    return f" (no key ({key}) is written twice: a listed row is missing, or a row was written that was not listed)"

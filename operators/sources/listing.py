"""A run's listing: written by CPU tasks as Parquet parts under ``<run>/listing/``, counted where written.

    <run>/listing/part-<unit>-<n>.parquet    listing rows (the source's columns, + ``entry`` for manifests)
    <run>/listing/listing.json              written last: every part, its rows and key digest; the totals

Sources whose listing is itself a scan (an object-store prefix, a JSON / JSONL manifest) list in
CPU tasks, each task writing the rows of its unit of work (a folder, a byte range) as parts of at
most :data:`PART_ROWS` rows and returning only their figures. The driver holds one small record
per part, never a row: the run's expected row count and key digest are sums of the parts'. The
rows a schedule has already processed are dropped in those tasks (so the parts are what the run
owes). Once ``listing.json`` exists a resumed attempt reads the same parts: one run covers one
listing, however the bucket changes between attempts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.idset import KeySet, add_digests, digest_hex, key_digest
from operators.storage import ensure_parent, filesystem, join_uri, split_uri
from operators.tasks import cpu_task
from schemas.spec import StorageConfig

if TYPE_CHECKING:
    from operators.base import Stage

log = logging.getLogger(__name__)

LISTING_DIR = "listing"
LISTING_FILE = "listing.json"
#: Rows per listing part: ~4-6 MB of Parquet, so a 100M-row listing is ~1,500 parts.
PART_ROWS = 65_536
#: Internal column of manifest listings: the entry's position in the manifest (for repeat ids).
ENTRY = "entry"


@dataclass(frozen=True)
class Part:
    """One listing file: ``path`` relative to the run root; ``rank`` orders parts (source order)."""

    path: str
    rows: int
    digest: str
    rank: str


@dataclass
class Listing:
    """The parts of a run's listing and their totals (``key``: the column the digest is over)."""

    parts: list[Part]
    key: str
    skipped: int = 0
    source: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def digest(self) -> str:
        return add_digests(*(p.digest for p in self.parts)) if self.parts else digest_hex(0)

    def to_json(self) -> str:
        return json.dumps({"version": 1, "key": self.key, "rows": self.rows, "digest": self.digest,
                           "skipped": self.skipped, "source": self.source, "parts": [asdict(p) for p in self.parts]},
                          indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> Listing:
        body = json.loads(text)
        return cls([Part(**p) for p in body["parts"]], body["key"], body.get("skipped", 0), body.get("source", {}))


def listing_uri(run_root: str, *parts: str) -> str:
    return join_uri(run_root, LISTING_DIR, *parts)


def read_listing(run_root: str, storage: StorageConfig | None, source: dict) -> Listing | None:
    """The finished listing an earlier attempt of this run wrote for this source, if any."""
    fs, path = filesystem(listing_uri(run_root, LISTING_FILE), storage)
    try:
        listing = Listing.from_json(fs.cat_file(path))
    except FileNotFoundError:
        return None
    if listing.source != source:
        log.warning("the listing under %s was made for another source; listing again", run_root)
        return None
    return listing


def clear_listing(run_root: str, storage: StorageConfig | None) -> None:
    """Remove what an unfinished listing left (its parts are not trusted without ``listing.json``)."""
    fs, path = filesystem(listing_uri(run_root), storage)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


def write_listing(run_root: str, listing: Listing, storage: StorageConfig | None) -> None:
    """Publish the listing (last, after every part): one PUT, or write-then-rename on local disks."""
    uri = listing_uri(run_root, LISTING_FILE)
    fs, path = filesystem(uri, storage)
    ensure_parent(uri)
    data = listing.to_json().encode()
    if split_uri(uri)[0] == "file":
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


class PartWriter:
    """Inside a listing task: buffer rows, drop the ones already done, write parts, count and digest them.

    Args:
        run_root: where ``listing/`` goes.
        unit: a name for the task's unit of work; part names derive from it, so a retried task
            overwrites its own parts.
        rank: orders this unit's parts among all parts (source order).
        key: the column digested (the run's exactly-once key).
        skip: keys done by earlier runs of a schedule; such rows are dropped and counted.
    """

    def __init__(self, run_root: str, storage: StorageConfig | None, schema: pa.Schema, unit: str, rank: str,
                 key: str, skip: KeySet | None = None, part_rows: int = PART_ROWS):
        self.run_root, self.storage, self.schema = run_root, storage, schema
        self.name = hashlib.sha256(unit.encode()).hexdigest()[:16]
        self.rank, self.key, self.skip, self.part_rows = rank, key, skip, part_rows
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.parts: list[Part] = []
        self.skipped = 0

    def add_rows(self, rows: list[dict]) -> None:
        if rows:
            self.add(pa.Table.from_pylist(rows, schema=self.schema))

    def add(self, table: pa.Table) -> None:
        if self.skip and table.num_rows:
            done = self.skip.mask(table.column(self.key))
            if done.any():
                self.skipped += int(done.sum())
                table = table.filter(pa.array(~done))
        self.buffer.append(table)
        self.buffered += table.num_rows
        while self.buffered >= self.part_rows:
            self._flush(self.part_rows)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.buffer) if len(self.buffer) != 1 else self.buffer[0]
        head, rest = table.slice(0, rows), table.slice(rows)
        self.buffer, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows
        n = len(self.parts)
        rel = f"{LISTING_DIR}/part-{self.name}-{n:05d}.parquet"
        write_part(join_uri(self.run_root, rel), head, self.storage)
        self.parts.append(Part(rel, head.num_rows, digest_hex(key_digest(head.column(self.key).to_pylist())),
                               f"{self.rank}\x00{n:05d}"))

    def close(self) -> tuple[list[Part], int]:
        """Write what is buffered; return the parts written and the rows skipped."""
        if self.buffered:
            self._flush(self.buffered)
        return self.parts, self.skipped


def write_part(uri: str, table: pa.Table, storage: StorageConfig | None) -> None:
    fs, path = filesystem(uri, storage)
    ensure_parent(uri)
    with fs.open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")


def read_part(uri: str, storage: StorageConfig | None, columns: list[str] | None = None) -> pa.Table:
    fs, path = filesystem(uri, storage)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def _truncate(run_root: str, part: Part, rows: int, key: str, storage: StorageConfig | None) -> Part:
    """Task body: rewrite ``part`` keeping its first ``rows`` rows (``source.limit``)."""
    table = read_part(join_uri(run_root, part.path), storage).slice(0, rows)
    write_part(join_uri(run_root, part.path), table, storage)
    return Part(part.path, rows, digest_hex(key_digest(table.column(key).to_pylist())), part.rank)


def finish_listing(run_root: str, storage: StorageConfig | None, parts: Iterable[Part], key: str, skipped: int,
                   source: dict, limit: int | None = None,
                   repeats: Callable[[list[Part]], list[Part]] | None = None) -> Listing:
    """Order the parts, apply ``limit`` (first N rows in source order), settle repeated ids, publish.

    Args:
        repeats: rewrites parts so that a repeated id is an ``invalid_entry`` row (manifest sources).
    """
    import ray

    ordered = sorted((p for p in parts if p.rows), key=lambda p: p.rank)
    if limit is not None:
        kept, left = [], limit
        for p in ordered:
            if left <= 0:
                break
            kept.append(p if p.rows <= left else ray.get(cpu_task(_truncate).remote(
                run_root, p, left, key, storage)))
            left -= p.rows
        ordered = kept
    if repeats is not None:
        ordered = repeats(ordered)
    listing = Listing(ordered, key, skipped, source)
    write_listing(run_root, listing, storage)
    return listing


#: Read tasks of a listing at most (the parts are spread over them): the driver holds an input block per task.
READ_TASKS = 256


class ReadListingPart:
    """Ray Data UDF: listing part paths -> their rows (the internal ``entry`` column dropped)."""

    def __init__(self, run_root: str, storage: StorageConfig | None):
        self.run_root, self.storage = run_root, storage

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = [read_part(join_uri(self.run_root, p), self.storage) for p in batch.column("part").to_pylist()]
        table = pa.concat_tables(tables)
        return table.drop_columns([ENTRY]) if ENTRY in table.column_names else table


def read_listing_dataset(run_root: str, storage: StorageConfig | None, listing: Listing, rows_per_block: int,
                         first: Sequence[Stage] = ()):
    """The listing's rows as a lazy Ray dataset: parts read by at most READ_TASKS tasks, ``first``, then blocks
    of ``rows_per_block``.

    Parts are large (cheap for the driver); the blocks after them are small, so the CPU stages
    that follow run as many tasks in parallel as there are blocks. ``first`` (skips of done ids)
    runs on whole parts, fused into their read tasks, so what it leaves is cut into full blocks.
    """
    import ray.data

    from operators.base import Resources, Stage, apply_stages

    items = [{"part": p.path} for p in listing.parts]
    read = Stage("read-listing", ReadListingPart, dict(run_root=run_root, storage=storage),
                 resources=Resources(num_cpus=0.25), batch_size=1, keeps_rows=False)
    # Each input block is an object the driver owns, with its metadata, for the whole stream: at
    # most READ_TASKS of them, each task reading its parts one by one (a block out per part).
    blocks = max(1, min(len(items), READ_TASKS))
    ds = read.apply(ray.data.from_items(items, override_num_blocks=blocks))
    return apply_stages(ds, first).repartition(target_num_rows_per_block=rows_per_block)


def read_listed(prepared: tuple | None, listing: Callable[[], pa.Table], rows_per_block: int,
                first: Sequence[Stage] = ()):
    """A listing source's rows: its prepared listing ``(run_root, storage, Listing)`` read in tasks, or,
    unprepared, ``listing()`` (an in-process table, small sources) cut into blocks; ``first`` applied."""
    import ray.data

    from operators.base import apply_stages

    if prepared is not None:
        run_root, storage, parts = prepared
        return read_listing_dataset(run_root, storage, parts, rows_per_block, first)
    table = listing()
    step = rows_per_block
    return apply_stages(ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)]), first)


def drop_done(table: pa.Table, skip: KeySet | None, key: str) -> tuple[pa.Table, int]:
    """``table`` without rows whose ``key`` is in ``skip``, and how many were dropped (for in-process listings)."""
    if not skip or not table.num_rows:
        return table, 0
    done = skip.mask(table.column(key))
    return table.filter(pa.array(~done)), int(np.count_nonzero(done))


def first_rows(tables: Iterable[pa.Table], limit: int | None) -> pa.Table | None:
    """Concatenate ``tables`` (in order), keeping the first ``limit`` rows."""
    tables = list(tables)
    if not tables:
        return None
    table = pa.concat_tables(tables)
    return table.slice(0, limit) if limit else table


def nonempty(column: pa.ChunkedArray) -> pa.Array:
    """Mask of values that are neither null nor empty."""
    return pc.and_(pc.is_valid(column), pc.not_equal(pc.utf8_length(column), 0))

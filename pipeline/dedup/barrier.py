"""The dedup barrier: from the committed index pass to the decisions file, in bounded memory.

Reads only committed data: the index pass's manifest and shards (``<run>/index/``) and, for a
schedule, the increment indexes of earlier committed runs. Two streaming passes over the shards:
the first spills content hashes to 256 hash buckets and takes a deterministic sample of the
embeddings (by id, not by arrival) for k-means; the second spills every vector that is not an
exact duplicate to its cell and guest cells of this run's centroids and of each earlier
increment's. Then buckets and cells are processed one at a time (:mod:`pipeline.dedup.index`).
For a schedule the run's own increment index (centroids, cells, first occurrences of each hash)
is written under ``publish``, then ``decisions.parquet``, then ``decisions.json``, the marker that
the barrier is done.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import filesystem, join_uri
from pipeline.commit import read_manifest
from pipeline.dedup.index import assign, best_earlier, block_rows, kmeans, order_keys, radius, separations, unit
from pipeline.dedup.spill import Spill
from pipeline.shards import write_bytes_atomic
from schemas import columns as C
from schemas.spec import DedupConfig, StorageConfig

log = logging.getLogger(__name__)

DECISIONS = "decisions.parquet"
DONE = "decisions.json"
INCREMENT = "index.json"
BUCKETS = 256
#: Bytes of spilled rows held in memory before the largest partition is written out (per spill). 16 MiB: at 500k
#: rows it cut the peak 437 -> 376 MiB for +9 % time (64 MiB: the buffers still filled between 50k and 500k rows).
SPILL_BUDGET = 16 << 20
DECISION_SCHEMA = pa.schema([pa.field(C.ID, pa.string()), pa.field(C.DUPLICATE_OF, pa.string()),
                             pa.field(C.DUPLICATE_SIMILARITY, pa.float32()), pa.field(C.ERROR, pa.string())])


@dataclass
class DedupSummary:
    """What the barrier found and what it cost."""

    rows: int = 0
    embedded: int = 0
    exact: int = 0
    near: int = 0
    earlier_increments: int = 0
    cells: int = 0
    guests: int = 0
    largest_cell: int = 0
    largest_home: int = 0
    seconds: float = 0.0


def _read_bytes(uri: str, storage: StorageConfig) -> bytes | None:
    fs, path = filesystem(uri, storage)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def _write_table(uri: str, table: pa.Table, storage: StorageConfig) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes_atomic(uri, buf.getvalue(), storage)


def _read_table(uri: str, storage: StorageConfig) -> pa.Table | None:
    data = _read_bytes(uri, storage)
    return pq.read_table(io.BytesIO(data)) if data is not None else None


def decisions_done(index_root: str, storage: StorageConfig) -> dict | None:
    """The summary the barrier wrote last, or None when it has not finished."""
    data = _read_bytes(join_uri(index_root, DONE), storage)
    return json.loads(data) if data is not None else None


class _Hits:
    """The best earlier match of every duplicate found so far (rank: increment, then id order)."""

    def __init__(self):
        self.best: dict[str, tuple[float, int, int, int, str]] = {}

    def offer(self, qid: str, sim: float, increment: int, key: np.ndarray, dup_of: str) -> None:
        new = (float(sim), -increment, -int(key[0]), -int(key[1]), dup_of)
        old = self.best.get(qid)
        if old is None or new[:4] > old[:4]:
            self.best[qid] = new


def _shards(index_root: str, storage: StorageConfig, columns: list[str]):
    manifest = read_manifest(index_root, storage)
    if manifest is None:
        raise RuntimeError(f"{index_root}: the index pass is not committed")
    fs, root = filesystem(index_root, storage)
    for entry in sorted(manifest.files, key=lambda f: f.path):
        with fs.open(f"{root}/{entry.path}", "rb") as f:
            have = pq.read_schema(f).names
            f.seek(0)
            yield pq.read_table(f, columns=[c for c in columns if c in have], use_threads=False)


def decide(index_root: str, config: DedupConfig, storage: StorageConfig, *, earlier: list[str] = (),
           publish: str | None = None) -> DedupSummary:
    """Decide every duplicate of the committed index pass at ``index_root``; write the decisions there.

    Args:
        earlier: roots of earlier increments' indexes, oldest first (schedules).
        publish: where this run's increment index goes (schedules), or None.
    """
    started, s = time.monotonic(), DedupSummary(earlier_increments=len(earlier))
    exact: dict[str, tuple[str, str]] = {}
    hits = _Hits()
    n_rows = read_manifest(index_root, storage).summary.rows_out
    with Spill(pa.schema([("h", pa.string()), ("id", pa.string())]), SPILL_BUDGET) as buckets:
        sample, dim = [], 0
        frac = None
        for t in _shards(index_root, storage, [C.ID, C.STATUS, C.CONTENT_HASH, C.IMAGE_EMBEDDING]):
            s.rows += t.num_rows
            ok = t.filter(pa.compute.equal(t.column(C.STATUS), "ok"))
            if config.exact and C.CONTENT_HASH in ok.column_names:
                have = ok.filter(pa.compute.is_valid(ok.column(C.CONTENT_HASH)))
                hashes = have.column(C.CONTENT_HASH).to_pylist()
                buckets.add_grouped([int(h[:2], 16) for h in hashes],
                                    pa.table({"h": hashes, "id": have.column(C.ID)}))
            if config.near and C.IMAGE_EMBEDDING in ok.column_names:
                emb = ok.filter(pa.compute.is_valid(ok.column(C.IMAGE_EMBEDDING)))
                s.embedded += emb.num_rows
                if emb.num_rows:
                    dim = emb.schema.field(C.IMAGE_EMBEDDING).type.list_size
                    if frac is None:
                        k = max(1, math.ceil(n_rows / config.cluster_size))
                        frac = min(1.0, (64 * k + 1000) / max(1, n_rows))
                    keys = order_keys(emb.column(C.ID).to_pylist())
                    take = keys[:, 0] < np.uint64(min(2**64 - 1, int(frac * 2**64)))
                    if take.any():
                        sample.append((keys[take], _vectors(emb.filter(pa.array(take)), dim)))
        firsts = _exact(buckets, earlier, storage, exact) if config.exact else {}
    s.exact = len(exact)
    if publish is not None and config.exact:
        for b, table in firsts.items():
            _write_table(join_uri(publish, "hashes", f"b-{b:03d}.parquet"), table, storage)
    cells_meta: list[int] = []
    if config.near and s.embedded:
        keys = np.concatenate([k for k, _ in sample]) if sample else np.zeros((0, 2), np.uint64)
        vecs = np.concatenate([v for _, v in sample]) if sample else np.zeros((0, dim), np.float32)
        order = np.lexsort((keys[:, 1], keys[:, 0]))
        centroids = kmeans(vecs[order], max(1, math.ceil(s.embedded / config.cluster_size)))
        s.cells = len(centroids)
        cells_meta = _near(index_root, config, storage, centroids, earlier, exact, hits, s, publish)
        if publish is not None:
            buf = io.BytesIO()
            np.save(buf, centroids)
            write_bytes_atomic(join_uri(publish, "centroids.npy"), buf.getvalue(), storage)
    s.near = len(hits.best)
    if publish is not None:
        meta = {"cells": cells_meta, "hash_buckets": sorted(firsts), "rows": s.rows, "embedded": s.embedded}
        write_bytes_atomic(join_uri(publish, INCREMENT), json.dumps(meta).encode(), storage)
    rows = [(i, d, 1.0, f"exact duplicate of {d} (same bytes, sha256 {h[:16]}...)") for i, (d, h) in exact.items()]
    rows += [(i, b[4], b[0], f"near duplicate of {b[4]} (cosine {b[0]:.4f} >= dedup.threshold {config.threshold})")
             for i, b in hits.best.items()]
    rows.sort()
    _write_table(join_uri(index_root, DECISIONS), pa.table(
        [pa.array([r[k] for r in rows], type=f.type) for k, f in enumerate(DECISION_SCHEMA)], schema=DECISION_SCHEMA),
        storage)
    s.seconds = round(time.monotonic() - started, 3)
    write_bytes_atomic(join_uri(index_root, DONE), json.dumps(asdict(s)).encode(), storage)
    log.info("dedup: %s", asdict(s))
    return s


def _vectors(table: pa.Table, dim: int) -> np.ndarray:
    flat = table.column(C.IMAGE_EMBEDDING).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return unit(flat.reshape(-1, dim))


def _exact(buckets: Spill, earlier: list[str], storage: StorageConfig,
           exact: dict[str, tuple[str, str]]) -> dict[int, pa.Table]:
    """Exact duplicates bucket by bucket; returns this run's first occurrences per bucket (for its index)."""
    firsts: dict[int, pa.Table] = {}
    for b in buckets.parts():
        t = buckets.read(b)
        seen: dict[str, str] = {}
        for root in earlier:
            old = _read_table(join_uri(root, "hashes", f"b-{b:03d}.parquet"), storage)
            for h, i in zip(old.column("h").to_pylist(), old.column("id").to_pylist(), strict=True) if old else ():
                seen.setdefault(h, i)
        ids, hashes = t.column("id").to_pylist(), t.column("h").to_pylist()
        keys = order_keys(ids)
        new_h, new_id = [], []
        for k in np.lexsort((keys[:, 1], keys[:, 0])):
            h, i = hashes[k], ids[k]
            if h in seen:
                exact[i] = (seen[h], h)
            else:
                seen[h] = i
                new_h.append(h)
                new_id.append(i)
        firsts[b] = pa.table({"h": pa.array(new_h, pa.string()), "id": pa.array(new_id, pa.string())})
    return firsts


def _spill_schema(dim: int) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("hi", pa.uint64()), ("lo", pa.uint64()), ("guest", pa.bool_()),
                      ("v", pa.list_(pa.float32(), dim))])


def _spill_table(ids: list[str], keys: np.ndarray, vecs: np.ndarray, guest: bool, dim: int) -> pa.Table:
    v = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)
    return pa.Table.from_arrays([pa.array(ids, pa.string()), pa.array(keys[:, 0]), pa.array(keys[:, 1]),
                                 pa.array([guest] * len(ids)), v], schema=_spill_schema(dim))


def _cell(t: pa.Table, dim: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = t.column("id").to_pylist()
    keys = np.stack([t.column("hi").to_numpy(), t.column("lo").to_numpy()], axis=1) if ids else np.zeros((0, 2),
                                                                                                        np.uint64)
    vecs = t.column("v").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return ids, keys, vecs


def _spill_shard(spill: Spill, table: pa.Table, vecs: np.ndarray, centroids: np.ndarray, gap: np.ndarray,
                 r: float) -> int:
    """Spill ``table``'s rows to their home cells and, flagged as guests, to the cells they reach; returns guests.

    Rows are assigned in blocks of :func:`block_rows` rows (temporaries ``rows x cells`` stay a few
    MiB however many cells there are) and guest copies are taken out of ``table`` one cell at a
    time, so no ``rows x guests`` table is ever built outside the spill budget.
    """
    guests = 0
    as_guest = table.set_column(3, "guest", pa.array(np.ones(table.num_rows, dtype=bool)))
    step = block_rows(len(centroids))
    for i in range(0, len(vecs), step):
        home, grows, gcells = assign(vecs[i: i + step], centroids, r, gap)
        spill.add_grouped(home, table, np.arange(i, i + len(home)))
        spill.add_grouped(gcells, as_guest, grows + i)
        guests += len(grows)
    return guests


def _members(spill: Spill, j: int, dim: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cell ``j``'s own rows (not its guests), in key order, read a file batch at a time."""
    parts = [t.filter(pa.compute.invert(t.column("guest"))) for t in spill.batches(j)]
    mids, mkeys, mv = _cell(pa.concat_tables(parts) if parts else spill.schema.empty_table(), dim)
    order = np.lexsort((mkeys[:, 1], mkeys[:, 0]))
    return [mids[k] for k in order], mkeys[order], mv[order]


def _near(index_root: str, config: DedupConfig, storage: StorageConfig, centroids: np.ndarray, earlier: list[str],
          exact: dict, hits: _Hits, s: DedupSummary, publish: str | None) -> list[int]:
    """Near duplicates within the run and against earlier increments; returns this run's non-empty cells.

    Memory: one shard on the way in, the spill budget, and per cell its own rows (about
    ``dedup.cluster_size``) plus one batch of its guests (:data:`pipeline.dedup.spill.FILE_BATCH_ROWS`):
    the guests of a cell are streamed past its members, never held together.
    """
    dim, r, t_ = centroids.shape[1], radius(config.threshold), config.threshold
    olds = []
    for e, root in enumerate(earlier):
        data = _read_bytes(join_uri(root, "centroids.npy"), storage)
        if data is not None:
            olds.append((e, root, np.load(io.BytesIO(data))))
    gaps = [separations(centroids)] + [separations(c) for _, _, c in olds]
    spills = [Spill(_spill_schema(dim), SPILL_BUDGET) for _ in range(1 + len(olds))]
    try:
        for t in _shards(index_root, storage, [C.ID, C.STATUS, C.IMAGE_EMBEDDING]):
            if C.IMAGE_EMBEDDING not in t.column_names:
                continue
            t = t.filter(pa.compute.and_(pa.compute.equal(t.column(C.STATUS), "ok"),
                                         pa.compute.is_valid(t.column(C.IMAGE_EMBEDDING))))
            ids = t.column(C.ID).to_pylist()
            keep = np.array([i not in exact for i in ids], dtype=bool)
            if not keep.any():
                continue
            ids = [i for i, k in zip(ids, keep, strict=True) if k]
            vecs, keys = _vectors(t.filter(pa.array(keep)), dim), order_keys(ids)
            table = _spill_table(ids, keys, vecs, False, dim)
            s.guests += _spill_shard(spills[0], table, vecs, centroids, gaps[0], r)
            for (_, _, cents), gap, sp in zip(olds, gaps[1:], spills[1:], strict=True):
                _spill_shard(sp, table, vecs, cents, gap, r)  # home and guests alike are queries there
        cells = []
        for j in spills[0].parts():
            s.largest_cell = max(s.largest_cell, spills[0].rows[j])
            mids, mkeys, mv = _members(spills[0], j, dim)
            s.largest_home = max(s.largest_home, len(mids))
            for batch in [None, *spills[0].batches(j)]:
                if batch is None:  # the members among themselves, then each batch of guests
                    qids, qkeys, qv = mids, mkeys, mv
                else:
                    batch = batch.filter(batch.column("guest"))
                    qids, qkeys, qv = _cell(batch, dim)
                best, arg = best_earlier(qv, qkeys, mv, mkeys, t_)
                for q in np.flatnonzero(arg >= 0):
                    hits.offer(qids[q], best[q], len(earlier), mkeys[arg[q]], mids[arg[q]])
            if publish is not None and mids:
                _write_table(join_uri(publish, "clusters", f"c-{j:05d}.parquet"), pa.table(
                    {"id": pa.array(mids, pa.string()),
                     "v": pa.FixedSizeListArray.from_arrays(pa.array(mv.reshape(-1), pa.float32()), dim)}), storage)
                cells.append(j)
            spills[0].drop(j)  # its files and buffer back before the next cell
        for (e, root, _), sp in zip(olds, spills[1:], strict=True):
            for j in sp.parts():
                old = _read_table(join_uri(root, "clusters", f"c-{j:05d}.parquet"), storage)
                if old is None:
                    continue
                mids = old.column("id").to_pylist()
                mv = unit(old.column("v").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))
                mkeys = order_keys(mids)
                for batch in sp.batches(j):
                    qids, _, qv = _cell(batch, dim)
                    best, arg = best_earlier(qv, None, mv, None, t_)
                    for q in np.flatnonzero(arg >= 0):
                        hits.offer(qids[q], best[q], e, mkeys[arg[q]], mids[arg[q]])
                sp.drop(j)
        return cells
    finally:
        for sp in spills:
            sp.close()

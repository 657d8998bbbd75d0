"""Row keys at scale: order-free digests, sorted key sets in the object store, repeats found in tasks.

Bookkeeping that must not grow with rows on the driver uses three things from here:

- :func:`key_digest`: the sum of a 128-bit hash of every key, modulo 2**128. Equal counts and
  equal digests of two multisets of keys mean the same keys, each as often (a key written twice
  adds its hash twice; a key lost takes it away); shards are summed, so the driver holds one
  number per shard, never a key.
- :class:`KeySet`: the keys of many files, deduplicated and sorted by CPU tasks into
  :data:`GROUPS` NumPy arrays held in Ray's object store (one copy per node that reads them,
  mapped, not copied, by each worker), split by a hash of the key (:func:`bucket_of`) so that a
  lookup binary-searches each key in its one group only. The driver holds only the object
  references. (Groups by file instead of by hash made every lookup search every group: at 5M
  done keys a resume's skip stage spent ~100 ms a block of 8,192, the whole stream 4x a fresh one.)
- :func:`find_repeats`: every key that occurs more than once across files, found by tasks that
  hash keys into buckets and sort each bucket; the answer is positions (file, row) of every
  occurrence after the first, which is small unless the input is mostly repeats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators.storage import filesystem
from operators.tasks import cpu_task
from schemas.spec import StorageConfig

DIGEST_MOD = 1 << 128
#: Most arrays one key set is split into (one task each builds one; a lookup searches each).
GROUPS = 32
#: Buckets of the repeat search (one reduce task each).
BUCKETS = 16
#: Up to this many keys, work that would go to tasks runs in the calling process (bounded memory).
IN_PROCESS_ROWS = 100_000


def key_digest(keys: Iterable[str | None]) -> int:
    """Order-free digest of a multiset of keys: sum of each key's 128-bit BLAKE2b, mod 2**128."""
    total = 0
    for key in keys:
        total += int.from_bytes(hashlib.blake2b((key or "").encode(), digest_size=16).digest(), "big")
    return total % DIGEST_MOD


def digest_hex(value: int) -> str:
    """A digest as 32 hex digits (how manifests and shard metadata carry it)."""
    return f"{value % DIGEST_MOD:032x}"


def add_digests(*values: str | int) -> str:
    """Sum of digests (hex or int), as hex."""
    return digest_hex(sum(int(v, 16) if isinstance(v, str) else v for v in values))


def as_key_array(keys: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """Keys as a NumPy fixed-width bytes array (``S<n>``), the form key sets are searched in."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if isinstance(keys, pa.Array):
        fixed = _fixed_width_view(keys)
        if fixed is not None:
            return fixed
        keys = keys.to_pylist()
    encoded = [k.encode() if isinstance(k, str) else bytes(k) if isinstance(k, bytes) else
               b"" if k is None else str(k).encode() for k in keys]
    width = max((len(k) for k in encoded), default=1) or 1
    return np.array(encoded, dtype=f"S{width}")


def _fixed_width_view(arr: pa.Array) -> np.ndarray | None:
    """Zero-copy ``S<n>`` view of a string array whose values all have one length (ids are 32 hex digits)."""
    if arr.null_count or len(arr) == 0 or not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
        return None
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    lengths = np.diff(offsets)
    width = int(lengths[0])
    if width == 0 or not (lengths == width).all():
        return None
    return np.frombuffer(arr.buffers()[2], dtype=f"S{width}", count=len(arr), offset=int(offsets[0]))


def _read_column(uri: str, column: str, storage: StorageConfig | None) -> pa.ChunkedArray:
    fs, path = filesystem(uri, storage)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=[column]).column(column)


def concat_keys(arrays: list[np.ndarray]) -> np.ndarray:
    """Key arrays of any widths as one array of the widest."""
    width = max((a.dtype.itemsize for a in arrays), default=1)
    if not arrays:
        return np.array([], dtype="S1")
    return np.concatenate([a.astype(f"S{width}", copy=False) for a in arrays])


def bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    """A deterministic bucket in ``[0, buckets)`` per key, the same whatever width the keys are padded to.

    A weighted sum of the key's bytes (padding bytes are zero and add nothing), byte column by
    byte column so that memory stays a few arrays of ``len(keys)``.
    """
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    width = keys.dtype.itemsize
    codes = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), width)
    h = np.zeros(len(keys), dtype=np.uint64)
    for j in range(width):
        h += codes[:, j].astype(np.uint64) * np.uint64((j + 1) * 2654435761)
    h ^= h >> np.uint64(29)  # mix the high bits in before the modulus
    return (h % np.uint64(buckets)).astype(np.int64)


def split_by_bucket(keys: np.ndarray, buckets: int) -> list[np.ndarray]:
    """``keys`` split into ``buckets`` arrays by :func:`bucket_of`, each sorted and distinct."""
    which = bucket_of(keys, buckets)
    return [np.unique(keys[which == b]) for b in range(buckets)]


def _bucketed_keys(uris: list[str], column: str, storage: StorageConfig | None, buckets: int) -> list[np.ndarray]:
    """Map task: the keys of ``column`` over ``uris``, split by bucket (:func:`split_by_bucket`)."""
    return split_by_bucket(concat_keys([as_key_array(_read_column(u, column, storage)) for u in uris]), buckets)


def unique_of(bucket: int, *parts: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Reduce task: bucket ``bucket`` of every map task's split keys, sorted and distinct, and how many."""
    arr = np.unique(concat_keys([p[bucket] for p in parts if len(p[bucket])]))
    return arr, len(arr)


def reduce_buckets(parts: list, buckets: int) -> tuple[tuple, list]:
    """One reduce task per bucket over the map tasks' split keys (``parts``: one ref per map task).

    A map task's split keys travel as one object, large enough for the object store: returned
    bucket by bucket, the small parts would be inlined into the owner, the driver (maps x buckets
    of them, up to 100 KB each). A node fetches each map object once for all its reduce tasks.
    Returns the buckets' array refs (they stay in the object store) and refs of their sizes.
    """
    reduce_ = cpu_task(unique_of, num_returns=2)
    pairs = [reduce_.remote(b, *parts) for b in range(buckets)]
    return tuple(ref for ref, _ in pairs), [size for _, size in pairs]


def _search(arr: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` are in the sorted ``arr``."""
    if len(arr) == 0 or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    width = max(arr.dtype.itemsize, keys.dtype.itemsize)
    probe = keys.astype(f"S{width}") if keys.dtype.itemsize != width else keys
    pos = np.searchsorted(arr, probe)
    found = pos < len(arr)
    found[found] = arr[pos[found]] == probe[found]
    return found


def contains(groups: Sequence[np.ndarray], keys: np.ndarray, bucketed: bool = False) -> np.ndarray:
    """Boolean mask: which of ``keys`` are in any of the sorted ``groups``.

    ``bucketed``: group ``b`` holds exactly the keys of :func:`bucket_of` ``b`` (of ``len(groups)``),
    so each key is looked up in its own group only; otherwise in every group.
    """
    hit = np.zeros(len(keys), dtype=bool)
    if not len(keys) or not groups:
        return hit
    if bucketed:
        which = bucket_of(keys, len(groups))
        for b, arr in enumerate(groups):
            at = np.flatnonzero(which == b)
            hit[at] = _search(arr, keys[at])
        return hit
    for arr in groups:
        hit |= _search(arr, keys)
    return hit


@dataclass(frozen=True)
class KeySet:
    """Keys held in Ray's object store as sorted arrays; picklable (it travels as references).

    Attributes:
        refs: object references of the sorted, distinct arrays.
        rows: keys summed over the groups (distinct keys when ``bucketed``, else an upper bound).
        bucketed: group ``b`` holds the keys of :func:`bucket_of` ``b`` (no key is in two groups, and a
            lookup searches one group); False: any key may be in any group (each lookup searches all).
    """

    refs: tuple = ()
    rows: int = 0
    bucketed: bool = False
    _cache: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_keys(cls, keys: Sequence[str]) -> KeySet:
        """A key set of an in-memory list (small lists: tests, hand-written skips); Ray must be up."""
        import ray

        if not keys:
            return cls()
        parts = split_by_bucket(as_key_array(list(keys)), GROUPS)
        return cls(tuple(ray.put(p) for p in parts), sum(len(p) for p in parts), bucketed=True)

    @classmethod
    def from_files(cls, uris: Sequence[str], column: str, storage: StorageConfig | None,
                   groups: int = GROUPS) -> KeySet:
        """The keys of ``column`` in the Parquet files ``uris``, read, deduplicated and sorted in CPU tasks."""
        import ray

        uris = list(uris)
        if not uris:
            return cls()
        task = cpu_task(_bucketed_keys)
        step = -(-len(uris) // groups)
        mapped = [task.remote(uris[i:i + step], column, storage, groups) for i in range(0, len(uris), step)]
        refs, sizes = reduce_buckets(mapped, groups)
        # Only the sizes come to the driver; the arrays stay in the object store.
        return cls(refs, sum(ray.get(sizes)), bucketed=True)

    def __bool__(self) -> bool:
        return bool(self.refs)

    def groups(self) -> list[np.ndarray]:
        """The sorted arrays (fetched once per process; zero-copy from the object store)."""
        if not self._cache and self.refs:
            import ray

            self._cache.extend(ray.get(list(self.refs)))
        return self._cache

    def mask(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Which of ``keys`` are in the set."""
        return contains(self.groups(), as_key_array(keys), self.bucketed)

    def __reduce__(self):
        return (KeySet, (self.refs, self.rows, self.bucketed))


def _split_into_buckets(uris: list[str], first: int, column: str, storage: StorageConfig | None,
                        buckets: int, limits: list[int | None]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Map task: every non-empty key of ``uris`` (the first ``limits[n]`` rows of each) with its
    position ``(file index << 32) | row``, by bucket."""
    keys, order = [], []
    for n, uri in enumerate(uris):
        arr = as_key_array(_read_column(uri, column, storage))[: limits[n]]
        rows = np.arange(len(arr), dtype=np.int64)
        present = arr != b""
        keys.append(arr[present])
        order.append((np.int64(first + n) << np.int64(32)) | rows[present])
    allk = concat_keys(keys)
    allo = np.concatenate(order) if order else np.array([], dtype=np.int64)
    which = bucket_of(allk, buckets)
    out = [(allk[which == b], allo[which == b]) for b in range(buckets)]
    return out if buckets > 1 else out[0]


def _repeats_in_bucket(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Reduce task: positions of every occurrence of a key after its first (by position), and a few of the keys."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.array([], dtype=np.int64), []
    keys = concat_keys([p[0] for p in parts])
    order = np.concatenate([p[1] for p in parts])
    idx = np.lexsort((order, keys))
    keys, order = keys[idx], order[idx]
    repeat = np.zeros(len(keys), dtype=bool)
    repeat[1:] = keys[1:] == keys[:-1]
    examples = sorted({k.decode() for k in keys[repeat][:5]})
    return order[repeat], examples


@dataclass(frozen=True)
class Repeats:
    """What :func:`find_repeats` found: every later occurrence of a repeated key, by file."""

    count: int
    by_file: dict[int, list[int]]
    examples: list[str]


def find_repeats(uris: Sequence[str], column: str, storage: StorageConfig | None,
                 limits: Sequence[int | None] | None = None, buckets: int = BUCKETS, groups: int = GROUPS,
                 rows: int | None = None) -> Repeats:
    """Keys of ``column`` that occur more than once across the Parquet files ``uris``, found in CPU tasks.

    The first occurrence (lowest file index, then row) is the one that counts; every later one
    is reported as ``by_file[file index] = [row, ...]``. Null and empty keys are not keys.

    Args:
        limits: per file, only its first ``limits[n]`` rows count (None: all).
        rows: how many keys there are, where the caller knows: up to :data:`IN_PROCESS_ROWS` the
            search runs in this process (tasks would cost more than they save, and memory is bounded).
    """
    import ray

    uris = list(uris)
    if not uris:
        return Repeats(0, {}, [])
    limits = list(limits) if limits is not None else [None] * len(uris)
    step = -(-len(uris) // groups)
    starts = range(0, len(uris), step)
    if ray.is_initialized() and (rows is None or rows > IN_PROCESS_ROWS):
        split = cpu_task(_split_into_buckets, num_returns=buckets)
        reduce_ = cpu_task(_repeats_in_bucket)
        mapped = [split.remote(uris[i:i + step], i, column, storage, buckets, limits[i:i + step]) for i in starts]
        if buckets == 1:
            mapped = [[m] for m in mapped]
        results = ray.get([reduce_.remote(*[m[b] for m in mapped]) for b in range(buckets)])
    else:  # the same work in this process (tools and unit tests without Ray)
        mapped = [_split_into_buckets(uris[i:i + step], i, column, storage, buckets, limits[i:i + step])
                  for i in starts]
        if buckets == 1:
            mapped = [[m] for m in mapped]
        results = [_repeats_in_bucket(*[m[b] for m in mapped]) for b in range(buckets)]
    by_file: dict[int, list[int]] = {}
    examples: list[str] = []
    count = 0
    for positions, ex in results:
        count += len(positions)
        examples.extend(ex)
        for pos in positions.tolist():
            by_file.setdefault(pos >> 32, []).append(pos & 0xFFFFFFFF)
    return Repeats(count, {k: sorted(v) for k, v in by_file.items()}, sorted(examples)[:5])

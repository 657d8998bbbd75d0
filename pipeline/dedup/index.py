"""The exact, partitioned cosine range search behind near-duplicate removal (NumPy, no index library).

Every pair of unit vectors whose cosine is at least ``t`` lies within Euclidean distance
``r = sqrt(2 - 2t)``. With any set of centroids, a row ``y`` lives in the cell of its nearest
centroid ``h(y)``; a row ``x`` of cell ``h`` can only be within ``r`` of a row of cell ``j`` if
its distance to the bisector hyperplane of ``c_h`` and ``c_j``, ``(|x-c_j|^2 - |x-c_h|^2) /
(2 |c_j - c_h|)``, is at most ``r``. So each row is searched as a *guest* in every such cell
besides its own, every close pair meets in the cell of its earlier row's home, and searching
cells one at a time finds exactly what a brute-force search over all pairs finds. Centroids only
decide how much work that is (the guests), never what is found.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

#: Slack added to the search radius so float rounding never keeps a pair at the threshold apart.
RADIUS_SLACK = 1e-5
_BLOCK_Q, _BLOCK_M = 2048, 8192


def order_keys(ids: list[str]) -> np.ndarray:
    """``(n, 2)`` uint64 keys that sort like the ids: vlmbatch ids are 32 hex digits; other strings are hashed."""
    out = np.empty((len(ids), 2), dtype=np.uint64)
    for i, s in enumerate(ids):
        h = s if len(s) == 32 and all(c in "0123456789abcdef" for c in s) else hashlib.sha256(s.encode()).hexdigest()
        out[i, 0], out[i, 1] = int(h[:16], 16), int(h[16:32], 16)
    return out


def earlier(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a[i] < b[j]`` for every pair, as a boolean matrix (keys from :func:`order_keys`)."""
    hi_a, hi_b = a[:, None, 0], b[None, :, 0]
    return (hi_a < hi_b) | ((hi_a == hi_b) & (a[:, None, 1] < b[None, :, 1]))


def unit(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (stored float16 vectors are a little off)."""
    v = np.asarray(vectors, dtype=np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def radius(threshold: float) -> float:
    """Euclidean radius of the cosine threshold, with :data:`RADIUS_SLACK`."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * threshold)) + RADIUS_SLACK


def kmeans(sample: np.ndarray, k: int, iterations: int = 10) -> np.ndarray:
    """``k`` unit centroids of ``sample``'s unit rows (spherical k-means from its first ``k`` rows: deterministic).

    Spherical: every centroid is renormalised, as SemDeDup clusters embeddings. Plain means of unit
    vectors shrink towards the origin where a cell spans several groups, and such a centroid then
    draws in every group that has none of its own: one giant cell, no partitioning.
    """
    k = max(1, min(k, len(sample)))
    centroids = sample[:k].astype(np.float32).copy()
    for _ in range(iterations):
        home = nearest(sample, centroids)
        for j in range(k):
            members = sample[home == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
        centroids = unit(centroids)
    return centroids


def _distances2(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (x * x).sum(1, keepdims=True) - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(1)[None, :]


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centroid (its home cell)."""
    return np.argmin(_distances2(x, centroids), axis=1)


def assign(x: np.ndarray, centroids: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(home, guest_rows, guest_cells)``: each row's cell, and every (row, other cell) its ``r``-ball reaches."""
    d2 = _distances2(x, centroids)
    home = np.argmin(d2, axis=1)
    gap = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=2)  # k x k
    own = d2[np.arange(len(x)), home][:, None]
    sep = gap[home]  # |c_j - c_h| per row and cell
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = np.where(sep > 1e-12, (d2 - own) / (2.0 * sep), 0.0)
    guest = reach <= r
    guest[np.arange(len(x)), home] = False
    rows, cells = np.nonzero(guest)
    return home, rows, cells


def best_earlier(queries: np.ndarray, qkeys: np.ndarray | None, members: np.ndarray, mkeys: np.ndarray | None,
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For each query, ``(best similarity, member index)`` over members at or above ``threshold``, else ``(-inf, -1)``.

    With keys, only members that come before the query count (a self-join); without, all do
    (members of an earlier increment). Members must be in key order so that, among equal
    similarities, the first (earliest) wins.
    """
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    arg = np.full(len(queries), -1, dtype=np.int64)
    for q0 in range(0, len(queries), _BLOCK_Q):
        q = queries[q0: q0 + _BLOCK_Q]
        for m0 in range(0, len(members), _BLOCK_M):
            s = q @ members[m0: m0 + _BLOCK_M].T
            if qkeys is not None:
                s[~earlier(mkeys[m0: m0 + _BLOCK_M], qkeys[q0: q0 + _BLOCK_Q]).T] = -np.inf
            j = np.argmax(s, axis=1)
            v = s[np.arange(len(q)), j]
            better = (v >= threshold) & (v > best[q0: q0 + _BLOCK_Q])
            best[q0: q0 + _BLOCK_Q][better] = v[better]
            arg[q0: q0 + _BLOCK_Q][better] = m0 + j[better]
    return best, arg


def brute_force(vectors: np.ndarray, keys: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference answer of a self-join (all pairs at once; for tests and small inputs)."""
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    best, arg = best_earlier(vectors, keys, vectors[order], keys[order], threshold)
    return best, np.where(arg >= 0, order[np.maximum(arg, 0)], -1)

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
_BLOCK_Q, _BLOCK_M = 1024, 8192


def order_keys(ids: list[str]) -> np.ndarray:
    """``(n, 2)`` uint64 keys that sort like the ids: vlmbatch ids are 32 hex digits; other strings are hashed."""
    out = np.empty((len(ids), 2), dtype=np.uint64)
    for i, s in enumerate(ids):
        h = s if len(s) == 32 and all(c in "0123456789abcdef" for c in s) else hashlib.sha256(s.encode()).hexdigest()
        out[i, 0], out[i, 1] = int(h[:16], 16), int(h[16:32], 16)
    return out


def ranks(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """How many rows of ``sorted_keys`` (in key order) come strictly before each of ``keys`` (any order).

    One sort of both, queries placed before equal members, so a row that is itself a member counts
    only the members before it. O((m + q) log) instead of an ``m x q`` comparison matrix.
    """
    m = len(sorted_keys)
    both = np.concatenate([sorted_keys, keys])
    is_member = np.r_[np.ones(m, dtype=bool), np.zeros(len(keys), dtype=bool)]
    order = np.lexsort((is_member, both[:, 1], both[:, 0]))
    before = np.cumsum(is_member[order])  # members up to and including each sorted position
    at = np.empty(len(order), dtype=np.int64)
    at[order] = np.arange(len(order))
    return before[at[m:]]


def unit(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (stored float16 vectors are a little off)."""
    v = np.asarray(vectors, dtype=np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def radius(threshold: float) -> float:
    """Euclidean radius of the cosine threshold, with :data:`RADIUS_SLACK`."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * threshold)) + RADIUS_SLACK


def kmeans(sample: np.ndarray, k: int, iterations: int = 10) -> np.ndarray:
    """``k`` unit centroids of ``sample``'s unit rows: spherical k-means, k-means++ seeds, repaired (deterministic).

    Spherical: every centroid is renormalised, as SemDeDup clusters embeddings. Plain means of unit
    vectors shrink towards the origin where a cell spans several groups, and such a centroid then
    draws in every group that has none of its own: one giant cell, no partitioning. Seeds: greedy
    k-means++ (``2 + ln k`` candidates drawn by squared distance, the one that lowers the total
    most is kept; a fixed generator over the sample's id order, so every run agrees). Seeding
    alone still leaves, now and then, one centroid on two groups and two on one (a local minimum
    Lloyd's iterations cannot leave); :func:`_repair` then moves centroids. A cell that spans two
    groups puts its rows far from its centroid and so close to every bisector: they become guests
    of many cells, and each such guest is one more row to spill and search. On the bench's data
    (one group per ``cluster_size`` rows, 20-100 cells) guests per row fell from 14.7 (first-k
    seeds) to 1.1-3.6 (seeding) to 0.005-0.03 (repaired). Centroids decide only the work, never the answer.
    """
    k = max(1, min(k, len(sample)))
    x = sample.astype(np.float32)
    rng = np.random.default_rng(0)
    trials = 2 + int(math.log(k))
    chosen = [0]
    d2 = np.maximum(2.0 - 2.0 * (x @ x[0]), 0.0)
    for _ in range(1, k):
        total = float(d2.sum())
        cand = rng.choice(len(x), size=trials, p=d2 / total) if total > 0 else rng.integers(0, len(x), trials)
        dc = np.minimum(d2[None, :], np.maximum(2.0 - 2.0 * (x[cand] @ x.T), 0.0))
        best = int(np.argmin(dc.sum(axis=1)))
        chosen.append(int(cand[best]))
        d2 = dc[best]
    return _repair(x, _lloyd(x, x[chosen].copy(), iterations))


#: Most centroid moves :func:`_repair` tries (each costs a few Lloyd iterations on the sample).
REPAIR_ROUNDS = 32


def _lloyd(x: np.ndarray, centroids: np.ndarray, iterations: int) -> np.ndarray:
    """Spherical Lloyd iterations; a centroid left without rows stays where it is."""
    for _ in range(iterations):
        home = nearest(x, centroids)
        order = np.argsort(home, kind="stable")
        cells, starts = np.unique(home[order], return_index=True)
        centroids = centroids.copy()
        centroids[cells] = np.add.reduceat(x[order], starts, axis=0)  # per-cell sums (np.add.at is far slower)
        centroids = unit(centroids)
    return centroids


def _repair(x: np.ndarray, centroids: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Move the centroid that is missed least to the cell that fits worst, while the total fit improves.

    Fit: the sum of ``1 - cos`` to the nearest centroid. The centroid whose rows lose least when
    sent to their second-nearest goes to the row farthest from the worst cell's centroid (that
    cell's second group); Lloyd's iterations follow; the move is kept only if the fit improved.
    """
    k = len(centroids)
    if k < 2:
        return centroids
    fit = None
    for _ in range(REPAIR_ROUNDS):
        home, s1, s2 = _top2(x, centroids)
        fit = float((1.0 - s1).sum()) if fit is None else fit
        worst = np.bincount(home, weights=1.0 - s1, minlength=k)
        loss = np.bincount(home, weights=s1 - s2, minlength=k)
        big = int(np.argmax(worst))
        loss[big] = np.inf
        small = int(np.argmin(loss))
        rows = np.flatnonzero(home == big)
        trial = centroids.copy()
        trial[small] = x[rows[np.argmin(s1[rows])]]
        trial = _lloyd(x, trial, iterations)
        trial_fit = float((1.0 - _top2(x, trial)[1]).sum())
        if trial_fit >= fit * (1.0 - 1e-4):
            break
        centroids, fit = trial, trial_fit
    return centroids


def _top2(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's nearest centroid, its cosine, and the second-best cosine (rows in blocks)."""
    out = [], [], []
    for i in range(0, len(x), block_rows(len(centroids))):
        s = x[i: i + block_rows(len(centroids))] @ centroids.T
        j = np.argmax(s, axis=1)
        best = s[np.arange(len(s)), j]
        s[np.arange(len(s)), j] = -np.inf
        for o, v in zip(out, (j, best, s.max(axis=1)), strict=True):
            o.append(v)
    return tuple(np.concatenate(o) for o in out)


def _distances2(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (x * x).sum(1, keepdims=True) - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(1)[None, :]


#: Elements of one rows x cells distance block: assigning rows to ``k`` cells works on ``ASSIGN_ELEMENTS // k``
#: rows at a time, so its temporaries (a few float32 blocks, about 8 MiB each) do not grow with ``k``.
ASSIGN_ELEMENTS = 1 << 21


def block_rows(cells: int) -> int:
    """Rows per block of an assignment to ``cells`` cells (see :data:`ASSIGN_ELEMENTS`)."""
    return max(1, ASSIGN_ELEMENTS // max(1, cells))


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centroid (its home cell), in row blocks."""
    step = block_rows(len(centroids))
    return np.concatenate([np.argmin(_distances2(x[i: i + step], centroids), axis=1)
                           for i in range(0, len(x), step)] or [np.zeros(0, dtype=np.int64)])


def separations(centroids: np.ndarray) -> np.ndarray:
    """``k x k`` distances between centroids (from their Gram matrix: no ``k x k x dim`` temporary)."""
    sq = (centroids * centroids).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (centroids @ centroids.T), 0.0))


def assign(x: np.ndarray, centroids: np.ndarray, r: float,
           gap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(home, guest_rows, guest_cells)``: each row's cell, and every (row, other cell) its ``r``-ball reaches.

    Works on all of ``x`` at once (``len(x) x k`` temporaries): callers pass blocks of
    :func:`block_rows` rows, and ``gap`` (:func:`separations`) computed once per centroid set.
    """
    d2 = _distances2(x, centroids)
    home = np.argmin(d2, axis=1)
    gap = separations(centroids) if gap is None else gap
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
    similarities, the first (earliest) wins, and so that "before the query" is a prefix of them.
    Memory: one ``_BLOCK_Q x _BLOCK_M`` float32 block (32 MiB) and its mask, whatever the sizes.
    """
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    arg = np.full(len(queries), -1, dtype=np.int64)
    cols = np.arange(_BLOCK_M)
    for q0 in range(0, len(queries), _BLOCK_Q):
        q = queries[q0: q0 + _BLOCK_Q]
        before = ranks(mkeys, qkeys[q0: q0 + _BLOCK_Q]) if qkeys is not None else None
        for m0 in range(0, len(members), _BLOCK_M):
            if before is not None and not (before > m0).any():
                break  # no query of this block has an earlier member from here on
            # Self-join: members past the last query's rank are never earlier than any query of this block.
            hi = min(len(members), m0 + _BLOCK_M, int(before.max())) if before is not None else m0 + _BLOCK_M
            s = q @ members[m0: hi].T
            if before is not None:
                s[cols[None, : s.shape[1]] >= (before - m0)[:, None]] = -np.inf
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

"""Dedup: the partitioned search finds exactly what brute force finds; decisions, increments, planted P/R."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.dedup.barrier import DECISIONS, decide, decisions_done
from pipeline.dedup.index import assign, brute_force, kmeans, order_keys, radius, unit
from schemas import columns as C
from schemas.spec import DedupConfig
from tests.curation import commit_index, groups_of, hex_ids, index_rows, precision_recall, reference


def clustered(n: int, dim: int = 24, seed: int = 0, pairs: int = 60) -> np.ndarray:
    """Unit vectors in loose clusters, with ``pairs`` planted near copies (the last rows)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    x = centres[rng.integers(0, 12, n - pairs)] + 0.6 * rng.normal(size=(n - pairs, dim))
    x = unit(x)
    copies = x[rng.integers(0, n - pairs, pairs)] + rng.normal(scale=0.08, size=(pairs, dim)) / np.sqrt(dim)
    return unit(np.concatenate([x, copies]))


def decisions(root: str) -> dict[str, tuple[str, float, str]]:
    with open(f"{root}/{DECISIONS}", "rb") as f:
        t = pq.read_table(io.BytesIO(f.read()))
    cols = [t.column(c).to_pylist() for c in (C.ID, C.DUPLICATE_OF, C.DUPLICATE_SIMILARITY, C.ERROR)]
    return {i: (d, s, e) for i, d, s, e in zip(*cols, strict=True)}


def test_guest_rule_reaches_every_close_pair():
    x = clustered(800, seed=1)
    cents = kmeans(x[:200], 16)
    t = 0.8
    home, rows, cells = assign(x, cents, radius(t))
    seen = set(zip(rows.tolist(), cells.tolist(), strict=True))
    s = x @ x.T
    for i, j in zip(*np.nonzero(np.triu(s >= t, 1)), strict=True):
        # The pair meets in j's cell (i as member or guest) and in i's cell (j as member or guest).
        assert home[i] == home[j] or (i, home[j]) in seen, (i, j)
        assert home[i] == home[j] or (j, home[i]) in seen, (i, j)


@pytest.mark.parametrize(("cluster_size", "spill_budget", "batch_rows"),
                         [(40, 4096, 4096), (40, 4096, 7), (400, 64 << 20, 4096), (100_000, 64 << 20, 4096)])
def test_partitioned_decisions_equal_brute_force(tmp_path, monkeypatch, cluster_size, spill_budget, batch_rows):
    import pipeline.dedup.barrier as barrier
    import pipeline.dedup.spill as spill

    monkeypatch.setattr(barrier, "SPILL_BUDGET", spill_budget)  # 4 KiB: every partition written out in pieces
    monkeypatch.setattr(spill, "FILE_BATCH_ROWS", batch_rows)  # 7: members and guests read back in many batches
    ids, x = hex_ids(1500), clustered(1500)
    root = str(tmp_path / "index")
    commit_index(root, index_rows(ids, x))
    summary = decide(root, DedupConfig(exact=False, threshold=0.9, cluster_size=cluster_size), None)
    want = reference(ids, x, 0.9)
    got = decisions(root)
    assert len(want) >= 50, "the planted copies are found"
    assert {i: d for i, (d, _, _) in got.items()} == {i: d for i, (d, _) in want.items()}
    for i, (_, sim, reason) in got.items():
        assert sim == pytest.approx(want[i][1], abs=1e-6) and "near duplicate of" in reason
    assert summary.near == len(want) and summary.cells == max(1, -(-1500 // cluster_size))
    assert decisions_done(root, None)["near"] == len(want)


def test_exact_duplicates_by_hash_keep_the_smallest_id(tmp_path):
    ids = hex_ids(6, seed=3)
    hashes = ["aa" * 32, "bb" * 32, "aa" * 32, "cc" * 32, "aa" * 32, "bb" * 32]
    root = str(tmp_path / "index")
    commit_index(root, index_rows(ids, None, hashes))
    decide(root, DedupConfig(near=False), None)
    got = decisions(root)
    first_a = min(ids[0], ids[2], ids[4])
    first_b = min(ids[1], ids[5])
    assert {i: d for i, (d, _, _) in got.items()} == {
        **{i: first_a for i in (ids[0], ids[2], ids[4]) if i != first_a},
        **{i: first_b for i in (ids[1], ids[5]) if i != first_b}}
    assert all(s == 1.0 and "same bytes" in e for _, s, e in got.values())


def test_second_increment_is_checked_against_the_first(tmp_path):
    ids, x = hex_ids(1200, seed=5), clustered(1200, seed=5)
    hashes = [f"{k:064x}" for k in range(1200)]
    hashes[1100] = hashes[3]  # same bytes as a row of the first increment
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    commit_index(first, index_rows(ids[:700], x[:700], hashes[:700]))
    commit_index(second, index_rows(ids[700:], x[700:], hashes[700:]))
    config = DedupConfig(threshold=0.9, cluster_size=100)
    decide(first, config, None, publish=str(tmp_path / "state" / "a"))
    s = decide(second, config, None, earlier=[str(tmp_path / "state" / "a")], publish=str(tmp_path / "state" / "b"))
    want = reference(ids, x, 0.9, earlier=700)
    want.pop(ids[1100], None)
    got = decisions(second)
    assert got.pop(ids[1100])[0] == ids[3], "an exact copy of an earlier increment's image"
    assert {i: d for i, (d, _, _) in got.items()} == {i: d for i, (d, _) in want.items()}
    assert any(d in ids[:700] for d, _, _ in got.values()), "some duplicate an earlier increment's row"
    assert s.earlier_increments == 1 and s.exact == 1


def test_order_keys_sort_like_ids():
    ids = hex_ids(200, seed=9) + ["not-a-hex-id"]
    keys = order_keys(ids)
    hexes = sorted(ids[:200])
    order = np.lexsort((keys[:200, 1], keys[:200, 0]))
    assert [ids[k] for k in order] == hexes
    best, arg = brute_force(unit(np.ones((3, 4))), order_keys(sorted(ids[:3])), 0.99)
    assert arg.tolist() == [-1, 0, 0], "identical vectors: every later row names the first"


def test_planted_duplicates_precision_recall_with_perceptual_embeddings(tmp_path):
    """The demo photographs with planted exact and near duplicates: every duplicate found, none wrongly."""
    from tests.curation import planted_corpus_vectors

    files, truth, names, ids, hashes, vectors = planted_corpus_vectors()
    by_id = dict(zip(ids, names, strict=True))
    group = groups_of(truth, names)
    config = DedupConfig(threshold=0.85, cluster_size=16)
    # One run, then the same corpus split into two schedule increments (originals first).
    first = [k for k, n in enumerate(names) if not n.startswith("dups/")]
    second = [k for k, n in enumerate(names) if n.startswith("dups/")]
    results = {}
    root = str(tmp_path / "one")
    commit_index(root, index_rows(ids, vectors, hashes))
    decide(root, config, None)
    results["one run"] = decisions(root)
    a, b = str(tmp_path / "inc1"), str(tmp_path / "inc2")
    commit_index(a, index_rows([ids[k] for k in first], vectors[first], [hashes[k] for k in first]))
    commit_index(b, index_rows([ids[k] for k in second], vectors[second], [hashes[k] for k in second]))
    decide(a, config, None, publish=str(tmp_path / "state1"))
    decide(b, config, None, earlier=[str(tmp_path / "state1")], publish=str(tmp_path / "state2"))
    results["two increments"] = {**decisions(a), **decisions(b)}
    for label, got in results.items():
        marked = {n: None for n in names}
        marked.update({by_id[i]: by_id[d] for i, (d, _, _) in got.items()})
        precision, recall = precision_recall(marked, group)
        assert (precision, recall) == (1.0, 1.0), (label, precision, recall, sorted(
            (n, d) for n, d in marked.items() if d is not None and group[n] != group[d]))
        exact = {frozenset((by_id[i], by_id[d])) for i, (d, _, e) in got.items() if "same bytes" in e}
        assert exact == {frozenset((n, o)) for n, o in truth.items() if n.startswith("dups/copy/")}, label

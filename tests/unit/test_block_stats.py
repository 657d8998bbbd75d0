"""The sample Ray Data's per-block records are kept to (pipeline/block_stats.py), without Ray."""

from __future__ import annotations

from pipeline.block_stats import ThinnedList


def test_thinned_list_keeps_a_uniform_sample_of_bounded_size():
    kept = ThinnedList(range(5), keep=8)
    assert list(kept) == [0, 1, 2, 3, 4], "below the bound everything is kept"
    for k in range(5, 10_000):
        kept.append(k)
        assert len(kept) < 16
    assert kept.seen == 10_000 and len(kept) >= 8
    gaps = {b - a for a, b in zip(kept, kept[1:], strict=False)}
    assert kept[0] == 0 and gaps == {kept.stride}, "evenly spaced from the start"
    assert kept[-1] > 10_000 - 2 * kept.stride, "the sample reaches the end"
    more = ThinnedList(keep=8)
    more.extend(range(10_000))
    assert list(more) == list(kept), "extend and append keep the same sample"

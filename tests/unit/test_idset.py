"""Row keys at scale without Ray: digests, sorted key arrays, the repeat search (run in this process)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators.ids import location_id
from operators.idset import (
    add_digests,
    as_key_array,
    bucket_of,
    contains,
    digest_hex,
    find_repeats,
    key_digest,
    split_by_bucket,
)


def test_digest_is_order_free_and_counts_every_key():
    keys = [location_id(f"s3://b/{i}.jpg") for i in range(100)]
    assert key_digest(keys) == key_digest(reversed(keys))
    assert add_digests(digest_hex(key_digest(keys[:40])), key_digest(keys[40:])) == digest_hex(key_digest(keys))
    twice = keys[:99] + [keys[0]]  # one key lost, another written twice: same count, different digest
    assert len(twice) == len(keys) and key_digest(twice) != key_digest(keys)
    assert key_digest(keys + keys[:1]) != key_digest(keys)


def test_key_arrays_fixed_width_view_and_fallback():
    ids = pa.array([location_id(f"x{i}") for i in range(5)])
    view = as_key_array(ids.slice(1, 3))
    assert view.dtype == np.dtype("S32") and [v.decode() for v in view] == ids.slice(1, 3).to_pylist()
    mixed = as_key_array(pa.array(["a", "bbb", None]))
    assert mixed.tolist() == [b"a", b"bbb", b""]
    assert as_key_array([1, 22]).tolist() == [b"1", b"22"], "non-string manifest ids are compared as text"


def test_contains_searches_every_group_of_any_width():
    groups = [np.unique(as_key_array(["b", "d"])), np.unique(as_key_array(["aaaa", "zz"]))]
    hit = contains(groups, as_key_array(["a", "b", "c", "d", "aaaa", "zz", "zzz"]))
    assert hit.tolist() == [False, True, False, True, True, True, False]


def test_bucketed_groups_find_each_key_in_its_own_group_whatever_its_width():
    done = as_key_array(["b", "d", "aaaa", "zz"] + [location_id(f"d{i}") for i in range(200)])
    groups = split_by_bucket(done, 7)
    assert sum(len(g) for g in groups) == len(done) and sum(len(g) > 0 for g in groups) > 3, "keys spread"
    probe = as_key_array(["a", "b", "c", "d", "aaaa", "zz", "zzz"] + [location_id(f"d{i}") for i in range(0, 400, 2)])
    expected = [False, True, False, True, True, True, False] + [i < 200 for i in range(0, 400, 2)]
    assert contains(groups, probe, bucketed=True).tolist() == expected
    assert contains(groups, probe).tolist() == expected, "the unbucketed search agrees"
    narrow, wide = as_key_array(["zz", "b"]), as_key_array(["zz", "b"]).astype("S40")
    assert bucket_of(narrow, 7).tolist() == bucket_of(wide, 7).tolist(), "padding does not move a key"


def test_repeats_across_files_keep_the_first_occurrence(tmp_path):
    files = []
    for n, ids in enumerate((["x", "y", "x"], ["z", "y", None, ""], ["q", "x"])):
        path = tmp_path / f"{n}.parquet"
        pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), path)
        files.append(str(path))
    found = find_repeats(files, "id", None, buckets=3, groups=2)
    assert found.count == 3 and found.by_file == {0: [2], 1: [1], 2: [1]}
    assert found.examples == ["x", "y"]
    assert find_repeats(files, "id", None, limits=[2, 4, 1]).count == 1, "rows past a file's limit do not count"

"""The pieces listing tasks are made of, run in this process: folders, byte ranges, parts, the listing file."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from operators.idset import KeySet, as_key_array, digest_hex, key_digest
from operators.sources.folders import list_level, list_tree
from operators.sources.listing import Listing, Part, PartWriter, read_listing, read_part, write_listing
from operators.sources.llava import iter_json_array, parse_lines, read_range
from operators.sources.prefix import LISTING_SCHEMA, SourceError, listing_rows
from schemas import columns as C


def test_byte_ranges_hold_every_line_once(tmp_path):
    rng = random.Random(7)
    lines = [json.dumps({"id": k, "pad": "x" * rng.randrange(0, 90)}) if k % 13 else "" for k in range(400)]
    path = tmp_path / "m.jsonl"
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)
    for step in (1, 7, 64, 100, 4096, len(data) + 5):
        got = b"".join(read_range(str(path), None, s, min(s + step, len(data))) for s in range(0, len(data), step))
        assert got == data, f"ranges of {step} bytes"
    assert [e["id"] for e in parse_lines(data, 0)] == [k for k in range(400) if k % 13]


def test_json_array_is_decoded_entry_by_entry():
    assert list(iter_json_array(' [ {"a": 1}, 2 ,"x"] ')) == [{"a": 1}, 2, "x"]
    assert list(iter_json_array("[]")) == []
    with pytest.raises(SourceError, match="expected a JSON list"):
        list(iter_json_array('{"a": 1}'))
    with pytest.raises(SourceError, match="not JSON"):
        list(iter_json_array('[{"a": 1} {"b": 2}]'))


def test_folder_level_and_tree(tmp_path):
    for rel in ("a/1.jpg", "a/b/2.JPG", "a/b/c/3.png", "top.jpg", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"xy")
    [(files, folders)] = list(list_level(str(tmp_path), None))
    assert [p for p, _ in files] == [str(tmp_path / "notes.txt"), str(tmp_path / "top.jpg")]
    assert folders == [str(tmp_path / "a")]
    tree = [p for page in list_tree(str(tmp_path / "a"), None) for p, _ in page]
    assert tree == [str(tmp_path / r) for r in ("a/1.jpg", "a/b/2.JPG", "a/b/c/3.png")]
    rows = listing_rows("file", [(p, 2) for p in tree + [str(tmp_path / "notes.txt")]], (".jpg", ".png"),
                        str(tmp_path))
    assert rows.num_rows == 3 and rows.column(C.NUM_BYTES).to_pylist() == [2, 2, 2], "extensions ignore case"
    assert rows.column(C.SOURCE_ID).to_pylist() == ["a/1.jpg", "a/b/2.JPG", "a/b/c/3.png"], "keys under the prefix"
    with pytest.raises(FileNotFoundError):
        list(list_tree(str(tmp_path / "missing"), None))


def test_part_writer_splits_skips_and_digests(tmp_path):
    files = [(f"/img/{k:04d}.jpg", k) for k in range(25)]
    table = listing_rows("file", files, (".jpg",), "/img")
    ids = table.column(C.ID).to_pylist()
    done = KeySet(("in-memory",), 5, _cache=[np.unique(as_key_array(ids[:5]))])  # what a schedule already has
    writer = PartWriter(str(tmp_path), None, LISTING_SCHEMA, "unit-a", "a", C.ID, done, part_rows=8)
    writer.add(table.slice(0, 11))
    writer.add(table.slice(11))
    parts, skipped = writer.close()
    assert skipped == 5 and [p.rows for p in parts] == [8, 8, 4]
    assert [p.rank for p in parts] == sorted(p.rank for p in parts)
    back = [i for p in parts for i in read_part(str(tmp_path / p.path), None).column(C.ID).to_pylist()]
    assert back == ids[5:], "the rows not done, in order, once"
    listing = Listing(parts, C.ID, skipped, {"uri": "x"})
    assert listing.rows == 20 and listing.digest == digest_hex(key_digest(ids[5:]))
    again = PartWriter(str(tmp_path), None, LISTING_SCHEMA, "unit-a", "a", C.ID, done, part_rows=8)
    again.add(table)
    assert [p.path for p in again.close()[0]] == [p.path for p in parts], "a retried task overwrites its own parts"


def test_listing_file_round_trip_and_source_check(tmp_path):
    listing = Listing([Part("listing/part-a-00000.parquet", 3, digest_hex(5), "a\x0000000")], C.ID, 2, {"uri": "u"})
    write_listing(str(tmp_path), listing, None)
    back = read_listing(str(tmp_path), None, {"uri": "u"})
    assert back == listing and back.rows == 3 and back.digest == digest_hex(5)
    assert read_listing(str(tmp_path), None, {"uri": "other"}) is None, "a listing of another source is not reused"
    assert read_listing(str(tmp_path / "none"), None, {"uri": "u"}) is None

"""Manifest sources: LLaVA JSON/JSONL, Parquet (URI column, HF Image structs), WebDataset shards."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.fetch import FetchBatch
from operators.sources.llava import LlavaManifestSource
from operators.sources.parquet import ParquetManifestSource, ReadParquetEntries
from operators.sources.webdataset import ReadShard, WebDatasetSource
from schemas import columns as C
from schemas.spec import DecodeConfig, SourceConfig
from tests.corpus import rgb, tar_bytes


def _llava_entries():
    return [
        {"id": "1", "image": "coco/a.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat is red?"}, {"from": "gpt", "value": "A box."}]},
        {"id": "2", "image": "../outside.jpg"},
        {"id": "3", "image": "/etc/passwd"},
        {"id": "1", "image": "coco/b.jpg"},
        {"image": "coco/c.jpg"},
        {"id": "5"},
    ]


@pytest.fixture
def image_tree(tmp_path):
    (tmp_path / "images" / "coco").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (tmp_path / "images" / "coco" / f"{name}.jpg").write_bytes(rgb())
    return tmp_path


def test_llava_json_rows_statuses_and_questions(image_tree):
    manifest = image_tree / "data.json"
    manifest.write_text(json.dumps(_llava_entries()))
    src = LlavaManifestSource(SourceConfig(uri=str(manifest), format="llava_json",
                                           image_root=str(image_tree / "images")))
    rows = src.listing().to_pylist()
    assert src.count() == 6, "one row per entry, bad ones included"
    assert [r[C.STATUS] for r in rows] == ["ok", "invalid_entry", "invalid_entry", "invalid_entry", "ok",
                                           "invalid_entry"]
    assert "escapes the image root" in rows[1][C.ERROR] and "absolute" in rows[2][C.ERROR]
    assert "duplicate id" in rows[3][C.ERROR] and "no image path" in rows[5][C.ERROR]
    assert rows[0][C.IMAGE] == "coco/a.jpg" and rows[0][C.SOURCE] == str(image_tree / "images/coco/a.jpg")
    assert rows[0][C.QUESTIONS] == ["What is red?"]
    assert len({r[C.ID] for r in rows}) == 6, "ids are unique, invalid rows included"
    assert [r[C.SOURCE_ID] for r in rows] == ["1", "2", "3", "1", None, "5"], "the manifest's own ids, kept"


def test_manifest_ids_are_namespaced_and_stable(image_tree):
    a, b = image_tree / "a.jsonl", image_tree / "b.jsonl"
    for path in (a, b):
        path.write_text(json.dumps({"id": "1", "image": "images/coco/a.jpg"}) + "\n")
    id_a = LlavaManifestSource(SourceConfig(uri=str(a), format="llava_jsonl")).listing()[C.ID][0].as_py()
    id_b = LlavaManifestSource(SourceConfig(uri=str(b), format="llava_jsonl")).listing()[C.ID][0].as_py()
    again = LlavaManifestSource(SourceConfig(uri=str(a), format="llava_jsonl")).listing()[C.ID][0].as_py()
    assert id_a != id_b and id_a == again
    same_ns = LlavaManifestSource(SourceConfig(uri=str(b), format="llava_jsonl", namespace=str(a)))
    assert same_ns.listing()[C.ID][0].as_py() == id_a


def test_jsonl_bad_line_is_a_row(image_tree):
    path = image_tree / "m.jsonl"
    path.write_text('{"id": "x", "image": "images/coco/a.jpg"}\n{not json\n')
    rows = LlavaManifestSource(SourceConfig(uri=str(path), format="llava_jsonl")).listing().to_pylist()
    assert [r[C.STATUS] for r in rows] == ["ok", "invalid_entry"] and "not JSON" in rows[1][C.ERROR]


def test_parquet_uri_column_and_hf_image_structs(image_tree):
    path = image_tree / "m.parquet"
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({
        "id": ["e1", "e2", "e3"],
        "image": pa.array([{"bytes": rgb(color=(0, 0, 255)), "path": "blue.jpg"},
                           {"bytes": None, "path": "images/coco/b.jpg"},
                           {"bytes": None, "path": "../x.jpg"}], type=image_type),
    }), path)
    cfg = SourceConfig(uri=str(path), format="parquet")
    src = ParquetManifestSource(cfg)
    assert src.count() == 3
    out = ReadParquetEntries(cfg, src.image_root, src.namespace)(pa.table({"file": [str(path)], "take": [3]}))
    rows = out.to_pylist()
    assert rows[0][C.IMAGE_BYTES] and rows[0][C.SOURCE] == f"{path}#row=0" and rows[0][C.IMAGE] == "blue.jpg"
    assert rows[1][C.IMAGE_BYTES] is None and rows[1][C.SOURCE] == str(image_tree / "images/coco/b.jpg")
    assert rows[2][C.STATUS] == "invalid_entry"
    assert [r[C.SOURCE_ID] for r in rows] == ["e1", "e2", "e3"]
    fetched = FetchBatch(cfg, DecodeConfig())(out).to_pylist()
    assert fetched[0][C.IMAGE_BYTES] == rows[0][C.IMAGE_BYTES], "embedded bytes skip the fetch"
    assert fetched[1][C.IMAGE_BYTES] and fetched[1][C.STATUS] == "ok"
    assert fetched[2][C.IMAGE_BYTES] is None and fetched[2][C.STATUS] == "invalid_entry"


def test_webdataset_shard_samples(tmp_path):
    shard = tmp_path / "shards" / "shard-000.tar"
    shard.parent.mkdir()
    shard.write_bytes(tar_bytes({
        "s1.jpg": rgb(), "s1.json": json.dumps({"id": "k1", "conversations": [
            {"from": "human", "value": "<image>\nHow many?"}]}).encode(),
        "s2.png": rgb(fmt="PNG"), "s2.txt": b"a caption",
        "s3.txt": b"orphan text",
    }))
    cfg = SourceConfig(uri=str(tmp_path / "shards"), format="webdataset")
    src = WebDatasetSource(cfg)
    assert src.shards() == [str(shard)]
    rows = ReadShard(cfg, src.namespace)(pa.table({"shard": src.shards()})).to_pylist()
    assert [r[C.STATUS] for r in rows] == ["ok", "ok", "invalid_entry"]
    assert [r[C.SOURCE_ID] for r in rows] == ["k1", "s2", "s3"], "the .json's id, else the sample key"
    assert src.count() == src.progress_total() == 3, "local shards are counted from their headers"
    assert rows[0][C.QUESTIONS] == ["How many?"] and rows[0][C.IMAGE] == "shard-000/s1.jpg"
    assert rows[1][C.SOURCE] == f"tar://s2.png::{shard}" and rows[1][C.IMAGE_BYTES]
    import fsspec

    with fsspec.open(rows[1][C.SOURCE], "rb") as f:
        assert f.read() == rows[1][C.IMAGE_BYTES], "the source URL reads the image back"


def test_broken_shard_is_a_row(tmp_path):
    shard = tmp_path / "bad.tar"
    shard.write_bytes(b"not a tar at all" * 10)
    cfg = SourceConfig(uri=str(shard), format="webdataset")
    rows = ReadShard(cfg, cfg.uri)(pa.table({"shard": [str(shard)]})).to_pylist()
    assert len(rows) == 1 and rows[0][C.STATUS] == "invalid_entry"
    assert WebDatasetSource(cfg).count() == 1, "counted as the one row it becomes"


def test_a_shard_cut_short_counts_as_the_rows_its_read_makes(tmp_path):
    import io
    import tarfile

    whole = tar_bytes({"a.jpg": rgb(), "b.jpg": rgb(200, 100)})
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        b = tar.getmember("b.jpg")
    shard = tmp_path / "cut.tar"
    cfg = SourceConfig(uri=str(shard), format="webdataset")
    # Cut inside b's data (the streaming read fails: one invalid row), then inside b's header (a alone).
    for cut, expected in ((b.offset_data + b.size // 2, ["invalid_entry"]), (b.offset_data - 100, ["ok"])):
        shard.write_bytes(whole[:cut])
        rows = ReadShard(cfg, cfg.uri)(pa.table({"shard": [str(shard)]})).to_pylist()
        assert [r[C.STATUS] for r in rows] == expected
        assert WebDatasetSource(cfg).count() == len(rows), "the commit's count check must hold"


def test_remote_shards_are_counted_for_progress_from_a_shard_index(tmp_path, monkeypatch):
    folder = tmp_path / "wds"
    folder.mkdir()
    for k in range(2):
        (folder / f"s-{k}.tar").write_bytes(tar_bytes({f"{k}a.jpg": rgb(), f"{k}b.jpg": rgb()}))
    src = WebDatasetSource(SourceConfig(uri=str(folder), format="webdataset"))
    monkeypatch.setattr(WebDatasetSource, "count", lambda self: None)  # as for s3:// shards
    assert src.progress_total() is None, "no index: the progress line says ?"
    (folder / "shardindex.json").write_text(json.dumps({"shardlist": [
        {"url": "s-0.tar", "nsamples": 2}, {"url": "s-1.tar", "nsamples": 5}]}))
    assert src.progress_total() == 7, "the index's own counts (for progress only)"


def test_parquet_repeated_ids_across_files_become_invalid_rows(image_tree):
    folder = image_tree / "pq"
    folder.mkdir()
    for name, ids in (("a.parquet", ["x", "y"]), ("b.parquet", ["y", "z"])):
        pq.write_table(pa.table({"id": ids, "image": ["images/coco/a.jpg"] * 2}), folder / name)
    cfg = SourceConfig(uri=str(folder), format="parquet", image_root=str(image_tree))
    src = ParquetManifestSource(cfg)
    assert src.count() == 4 and [f[2] for f in src.files()] == [[], [0]]
    items = pa.Table.from_pylist([{"file": f, "take": t, "duplicates": d} for f, t, d in src.files()])
    rows = ReadParquetEntries(cfg, src.image_root, src.namespace)(items).to_pylist()
    assert [r[C.STATUS] for r in rows] == ["ok", "ok", "invalid_entry", "ok"]
    assert "duplicate id" in rows[2][C.ERROR] and len({r[C.ID] for r in rows}) == 4

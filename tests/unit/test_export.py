"""Exporters checked with their real consumers: ``datasets.load_dataset`` and the LLaVA layout."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pipeline.commit import MANIFEST
from pipeline.export.hf_parquet import export_hf_parquet
from pipeline.export.llava import export_llava
from pipeline.export.rows import ExportError
from pipeline.shards import ShardWriter
from schemas import columns as C
from schemas.manifest import FileEntry, Manifest, RunSummary
from schemas.records import record_schema
from schemas.spec import StorageConfig
from tests.corpus import rgb


def _pair(q, a, status="ok"):
    return {C.QA_QUESTION: q, C.QA_ANSWER: a, C.QA_ORIGIN: "set", C.STATUS: status, C.ERROR: None,
            C.FINISH_REASON: "stop"}


def make_run(tmp_path, record="dataset", source_spec=None, image_paths=True):
    images = tmp_path / "images"
    (images / "coco").mkdir(parents=True)
    for name, color in (("a", (255, 0, 0)), ("b", (0, 255, 0))):
        (images / "coco" / f"{name}.jpg").write_bytes(rgb(color=color))
    rows = [
        {C.ID: "id-a", C.SOURCE: str(images / "coco/a.jpg"), C.IMAGE: "coco/a.jpg", C.STATUS: "ok",
         C.INSTRUCTION: "Describe this photo.", C.CAPTION: "A red square.", C.MODEL_ID: "m",
         C.QA: [_pair("What colour?", "Red."), _pair("Loop?", "la la la la", "repetition")]},
        {C.ID: "id-b", C.SOURCE: str(images / "coco/b.jpg"), C.IMAGE: "coco/b.jpg", C.STATUS: "ok",
         C.INSTRUCTION: None, C.CAPTION: "A green square.", C.MODEL_ID: "m", C.QA: []},
        {C.ID: "id-c", C.SOURCE: str(images / "coco/c.jpg"), C.IMAGE: "coco/c.jpg", C.STATUS: "truncated",
         C.CAPTION: "A blue", C.MODEL_ID: "m", C.QA: None},
        {C.ID: "id-d", C.SOURCE: "x#0", C.STATUS: "invalid_entry", C.ERROR: "escapes"},
    ]
    if not image_paths:
        for r in rows:
            r[C.IMAGE] = None
    schema = record_schema([*rows[0], C.ERROR])
    table = pa.Table.from_pylist(rows, schema=schema)
    run_root = str(tmp_path / "out" / "run-1")
    meta = ShardWriter(run_root, StorageConfig(), "zstd", schema)(table).to_pylist()[0]
    manifest = Manifest(
        schema_version="1", record=record, run_id="run-1", job="t", spec_hash="h",
        spec={"caption": {"prompt": "Describe this image in detail."}, "source": source_spec or {}},
        model_id="m", model_revision=None,
        engine="e", sampling_hash="s", code_version="c", created_at="now",
        files=[FileEntry(path=meta["path"], rows=4)], error_files=[],
        summary=RunSummary(rows_in=4, rows_out=4, by_status={}, wall_s=1, images_per_s=1, prompt_tokens=0,
                           generated_tokens=0, generated_tokens_per_s=0),
    )
    (tmp_path / "out" / "run-1" / MANIFEST).write_text(manifest.model_dump_json())
    return run_root, images


def _check_llava_layout(records):
    for rec in records:
        assert set(rec) == {"id", "image", "conversations"}
        turns = rec["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2), "roles alternate"
        assert turns[0]["value"].startswith("<image>\n")
        assert all("<image>" not in t["value"] for t in turns[1:]), "<image> only in the first human turn"


def test_sharegpt4v_json_exports_only_ok_rows_and_pairs(tmp_path):
    run_root, images = make_run(tmp_path)
    out = tmp_path / "sharegpt4v.json"
    summary = export_llava(run_root, str(out), image_root=str(images))
    records = json.loads(out.read_text())
    _check_llava_layout(records)
    assert [r["id"] for r in records] == ["id-a", "id-b"]
    assert records[0]["image"] == "coco/a.jpg" and (images / records[0]["image"]).exists()
    assert [t["value"] for t in records[0]["conversations"]] == [
        "<image>\nDescribe this photo.", "A red square.", "What colour?", "Red."]
    assert records[1]["conversations"][0]["value"] == "<image>\nDescribe this image in detail."
    assert summary.rows_out == 2 and summary.qa_pairs_out == 1
    assert summary.skipped == {"status truncated": 1, "status invalid_entry": 1}


def test_jsonl_and_image_root_outside(tmp_path):
    run_root, images = make_run(tmp_path)
    out = tmp_path / "d.jsonl"
    export_llava(run_root, str(out), image_root=str(images / "coco"), jsonl=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    _check_llava_layout(records)
    assert [r["image"] for r in records] == ["a.jpg", "b.jpg"]
    summary = export_llava(run_root, str(tmp_path / "x.json"), image_root=str(tmp_path / "elsewhere"))
    assert summary.rows_out == 0 and summary.skipped["image not under the image root"] == 2


def test_hf_parquet_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    run_root, images = make_run(tmp_path)
    summary = export_hf_parquet(run_root, str(tmp_path / "hf"), image_root=str(images), rows_per_shard=1)
    assert [f.rsplit("/", 1)[1] for f in summary.files] == ["train-00000-of-00002.parquet",
                                                            "train-00001-of-00002.parquet"]
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "hf" / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds.features["image"], datasets.Image)
    rows = sorted(ds, key=lambda r: r["id"])
    assert [r["caption"] for r in rows] == ["A red square.", "A green square."]
    from PIL import Image

    assert isinstance(rows[0]["image"], Image.Image) and rows[0]["image"].size == (64, 48)
    assert rows[0]["image"].convert("RGB").getpixel((10, 10))[0] > 200, "the red image, not another"
    assert rows[0]["conversations"][2] == {"from": "human", "value": "What colour?"}


def test_only_committed_dataset_runs(tmp_path):
    with pytest.raises(ExportError, match="not committed"):
        export_llava(str(tmp_path / "nope"), str(tmp_path / "o.json"))
    run_root, _ = make_run(tmp_path, record="caption")
    with pytest.raises(ExportError, match="dataset build"):
        export_llava(run_root, str(tmp_path / "o.json"))


def test_prefix_runs_export_paths_relative_to_the_listed_prefix(tmp_path):
    images = tmp_path / "images"
    run_root, _ = make_run(tmp_path, source_spec={"uri": str(images)}, image_paths=False)
    out = tmp_path / "p.json"
    export_llava(run_root, str(out))
    assert [r["image"] for r in json.loads(out.read_text())] == ["coco/a.jpg", "coco/b.jpg"]


def test_image_reader_reads_embedded_images_back(tmp_path):
    import io
    import tarfile

    import pyarrow.parquet as pq

    from pipeline.export.hf_parquet import ImageReader

    jpg = rgb(color=(1, 2, 3))
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("k/x.jpg")
        info.size = len(jpg)
        tar.addfile(info, io.BytesIO(jpg))
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"zero", "path": None}, {"bytes": jpg, "path": "p"}],
                                               type=image)}), tmp_path / "m.parquet")
    reader = ImageReader(StorageConfig())
    assert reader.read(f"tar://k/x.jpg::{shard}") == jpg
    assert reader.read(f"{tmp_path / 'm.parquet'}#row=1") == jpg
    with pytest.raises(FileNotFoundError):
        reader.read(str(tmp_path / "gone.jpg"))

"""Exporters checked with their real consumers' rules: LLaVA's / ShareGPT4V's loaders, ``datasets`` (two versions)."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli_main
from pipeline.commit import MANIFEST
from pipeline.export.hf_parquet import export_hf_parquet
from pipeline.export.images import ImageReader
from pipeline.export.llava import export_llava, record_path
from pipeline.export.rows import ExportError
from pipeline.shards import ShardWriter
from schemas import columns as C
from schemas.manifest import FileEntry, Manifest, RunSummary
from schemas.records import record_schema
from schemas.spec import StorageConfig
from tests.consumers import OLDEST_DATASETS, hf_load, llava_problem, load_llava, oldest_datasets_dir
from tests.corpus import rgb


def _pair(q, a, status="ok"):
    return {C.QA_QUESTION: q, C.QA_ANSWER: a, C.QA_ORIGIN: "set", C.STATUS: status, C.ERROR: None,
            C.FINISH_REASON: "stop", C.NUM_PROMPT_TOKENS: 20, C.NUM_GENERATED_TOKENS: 3}


def commit(tmp_path, rows, record="dataset", source_spec=None, name="run-1"):
    """Commit ``rows`` as a run through the real writer; returns its root."""
    columns = {c for r in rows for c in r} | {C.ERROR}
    schema = record_schema(columns)
    run_root = str(tmp_path / "out" / name)
    meta = ShardWriter(run_root, StorageConfig(), "zstd", schema)(pa.Table.from_pylist(rows, schema=schema))
    meta = meta.to_pylist()[0]
    manifest = Manifest(
        schema_version="2", record=record, run_id=name, job="t", spec_hash="h",
        spec={"caption": {"prompt": "Describe this image in detail."}, "source": source_spec or {}},
        model_id="m", model_revision=None,
        engine="e", sampling_hash="s", code_version="c", created_at="now",
        files=[FileEntry(path=meta["path"], rows=len(rows))], error_files=[],
        summary=RunSummary(rows_in=len(rows), rows_out=len(rows), by_status={}, wall_s=1, images_per_s=1,
                           prompt_tokens=0, generated_tokens=0, generated_tokens_per_s=0),
    )
    (tmp_path / "out" / name / MANIFEST).write_text(manifest.model_dump_json())
    return run_root


def make_run(tmp_path, record="dataset", source_spec=None, image_paths=True):
    images = tmp_path / "images"
    (images / "coco").mkdir(parents=True, exist_ok=True)
    for name, color in (("a", (255, 0, 0)), ("b", (0, 255, 0))):
        (images / "coco" / f"{name}.jpg").write_bytes(rgb(color=color))
    rows = [
        {C.ID: "id-a", C.SOURCE: str(images / "coco/a.jpg"), C.SOURCE_ID: "a-1", C.IMAGE: "coco/a.jpg",
         C.STATUS: "ok", C.INSTRUCTION: "Describe this photo.", C.CAPTION: "A red square.", C.MODEL_ID: "m",
         C.QA: [_pair("What colour?", "Red."), _pair("Loop?", "la la la la", "repetition")]},
        {C.ID: "id-b", C.SOURCE: str(images / "coco/b.jpg"), C.SOURCE_ID: None, C.IMAGE: "coco/b.jpg",
         C.STATUS: "ok", C.INSTRUCTION: None, C.CAPTION: "A green square.", C.MODEL_ID: "m", C.QA: []},
        {C.ID: "id-c", C.SOURCE: str(images / "coco/c.jpg"), C.IMAGE: "coco/c.jpg", C.STATUS: "truncated",
         C.CAPTION: "A blue", C.MODEL_ID: "m", C.QA: None},
        {C.ID: "id-d", C.SOURCE: "x#0", C.STATUS: "invalid_entry", C.ERROR: "escapes"},
    ]
    if not image_paths:
        for r in rows:
            r[C.IMAGE] = None
    return commit(tmp_path, rows, record, source_spec), images


def _loads(records, folder, version):
    loaded, why = load_llava(records, str(folder), version)
    assert loaded == len(records), why
    return loaded


def test_finetune_json_exports_only_ok_rows_and_pairs_and_counts_the_rest(tmp_path):
    run_root, images = make_run(tmp_path)
    out = tmp_path / "sharegpt4v.json"
    summary = export_llava(run_root, str(out), image_root=str(images))
    records = json.loads(out.read_text())
    assert _loads(records, images, "v1") == 2
    assert [r["id"] for r in records] == ["a-1", "id-b"], "the source's own id where it has one, else the row key"
    assert records[0]["image"] == "coco/a.jpg"
    assert [t["value"] for t in records[0]["conversations"]] == [
        "<image>\nDescribe this photo.", "A red square.", "What colour?", "Red."]
    assert records[1]["conversations"][0]["value"] == "<image>\nDescribe this image in detail."
    assert summary.rows_out == 2 and summary.qa_pairs_out == 1 and summary.qa_pairs_in == 2
    assert summary.skipped == {"status truncated": 1, "status invalid_entry": 1}
    assert summary.qa_skipped == {"status repetition": 1}, "the QA pair left out is counted"
    assert "1 of 2 QA pairs" in summary.render() and "status repetition=1" in summary.render()
    record = json.loads((tmp_path / "sharegpt4v.export.json").read_text())
    assert record["image_root"] == str(images) and record["stage"] == "finetune" and record["rows_out"] == 2


def test_pretrain_stage_gives_two_turns_the_plain_loader_takes(tmp_path):
    run_root, images = make_run(tmp_path)
    out = tmp_path / "pt.json"
    summary = export_llava(run_root, str(out), stage="pretrain", fmt="llava-json", image_root=str(images))
    records = json.loads(out.read_text())
    assert _loads(records, images, "plain") == 2
    assert all(len(r["conversations"]) == 2 for r in records)
    assert summary.qa_pairs_out == 0 and summary.qa_skipped == {"stage pretrain (two turns)": 2}
    # Before stages existed, every record with a QA pair failed `assert len(source) == 2`.
    export_llava(run_root, str(tmp_path / "ft.json"), image_root=str(images))
    finetune = json.loads((tmp_path / "ft.json").read_text())
    assert llava_problem(finetune[0], str(images), "plain") == "pretraining needs two turns (assert len(source) == 2)"


def test_caption_runs_export_too(tmp_path):
    images = tmp_path / "images"
    run_root, _ = make_run(tmp_path, record="caption", source_spec={"uri": str(images)}, image_paths=False)
    out = tmp_path / "c.jsonl"
    export_llava(run_root, str(out), fmt="llava-jsonl", stage="pretrain")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in records] == ["coco/a.jpg", "coco/b.jpg"], "relative to the listed prefix"
    assert _loads(records, images, "plain") == 2
    assert record_path(str(out)) == str(tmp_path / "c.export.json")
    assert json.loads((tmp_path / "c.export.json").read_text())["image_root"] == str(images)


def test_an_export_of_nothing_fails_with_the_reason(tmp_path, capsys):
    run_root, images = make_run(tmp_path)
    with pytest.raises(ExportError, match="no record to export .*image not under the image root=2"):
        export_llava(run_root, str(tmp_path / "x.json"), image_root=str(tmp_path / "elsewhere"))
    assert not (tmp_path / "x.json").exists()
    code = cli_main(["export", run_root, str(tmp_path / "y.json"), "--format", "sharegpt4v", "--image-root",
                     str(tmp_path / "elsewhere")])
    assert code == 1 and "export failed: " in capsys.readouterr().err


def test_a_missing_image_file_fails_the_export(tmp_path):
    run_root, images = make_run(tmp_path)
    (images / "coco" / "b.jpg").unlink()
    with pytest.raises(ExportError, match="1 named image file.* do not exist, e.g. .*coco/b.jpg"):
        export_llava(run_root, str(tmp_path / "x.json"), image_root=str(images))
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ExportError, match="1 image.* cannot be read back, e.g. .*coco/b.jpg"):
        export_hf_parquet(run_root, str(tmp_path / "hf"), rows_per_shard=1)
    assert not list((tmp_path / "hf" / "data").iterdir()), "the shard written before the failure is removed"


def test_only_committed_runs(tmp_path):
    with pytest.raises(ExportError, match="not committed"):
        export_llava(str(tmp_path / "nope"), str(tmp_path / "o.json"))


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def embedded_runs(tmp_path):
    """A WebDataset run and an HF-Parquet run, images only inside a tar and Parquet structs (and source ids)."""
    shards = tmp_path / "shards"
    shards.mkdir()
    _tar(shards / "shard-000.tar", {"k1.jpg": rgb(color=(255, 0, 0)), "k2.png": rgb(40, 30, fmt="PNG")})
    hf = tmp_path / "hf"
    hf.mkdir()
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([{"bytes": rgb(color=(0, 0, 255)), "path": "same.jpg"},
                                                {"bytes": rgb(20, 20), "path": "same.jpg"}], type=image)}),
                   hf / "train-0.parquet")
    tar = str(shards / "shard-000.tar")
    wds = commit(tmp_path, [
        {C.ID: "w1", C.SOURCE: f"tar://k1.jpg::{tar}", C.SOURCE_ID: "k1", C.IMAGE: "shard-000/k1.jpg",
         C.STATUS: "ok", C.CAPTION: "red", C.QA: [_pair("Q?", "A.")]},
        {C.ID: "w2", C.SOURCE: f"tar://k2.png::{tar}", C.SOURCE_ID: "k2", C.IMAGE: "shard-000/k2.png",
         C.STATUS: "ok", C.CAPTION: "white", C.QA: []},
    ], source_spec={"format": "webdataset", "uri": str(shards)}, name="wds")
    part = str(hf / "train-0.parquet")
    hfp = commit(tmp_path, [
        {C.ID: "h1", C.SOURCE: f"{part}#row=0", C.SOURCE_ID: "dup", C.IMAGE: "same.jpg", C.STATUS: "ok",
         C.CAPTION: "blue", C.QA: []},
        {C.ID: "h2", C.SOURCE: f"{part}#row=1", C.SOURCE_ID: "dup", C.IMAGE: "same.jpg", C.STATUS: "ok",
         C.CAPTION: "white", C.QA: []},
    ], source_spec={"format": "parquet", "uri": str(hf)}, name="hf")
    return wds, hfp


def test_embedded_images_are_written_out_with_images_to(tmp_path):
    wds, hfp = embedded_runs(tmp_path)
    for run_root, expect_ids in ((wds, ["k1", "k2"]), (hfp, ["h1", "h2"])):
        with pytest.raises(ExportError, match="live inside .* export with --images-to"):
            export_llava(run_root, str(tmp_path / "no.json"))
        images = tmp_path / f"img-{expect_ids[0]}"
        out = tmp_path / f"{expect_ids[0]}.json"
        summary = export_llava(run_root, str(out), images_to=str(images))
        records = json.loads(out.read_text())
        assert sorted(r["id"] for r in records) == expect_ids, "source ids; a repeated one falls back to the row key"
        assert _loads(records, images, "v1") == 2 and summary.images_written == 2
        assert len({r["image"] for r in records}) == 2, "one file per record, even for the same struct path"
        assert json.loads((tmp_path / f"{expect_ids[0]}.export.json").read_text())["image_root"] == str(images)
    assert sorted(p.relative_to(tmp_path / "img-k1").as_posix() for p in (tmp_path / "img-k1").rglob("*.*")) == [
        "shard-000/k1.jpg", "shard-000/k2.png"], "the shard's layout is kept"


def test_hf_parquet_loads_with_the_newest_and_the_oldest_datasets(tmp_path):
    pytest.importorskip("datasets")
    run_root, images = make_run(tmp_path)
    summary = export_hf_parquet(run_root, str(tmp_path / "hf"), image_root=str(images), rows_per_shard=1)
    assert [f.rsplit("/", 1)[1] for f in summary.files] == ["train-00000-of-00002.parquet",
                                                            "train-00001-of-00002.parquet"]
    assert json.loads((tmp_path / "hf" / "export.json").read_text())["image_root"] == str(images)
    old = oldest_datasets_dir()
    assert old.is_dir(), f"datasets {OLDEST_DATASETS} is not installed at {old}: run infra/local/install.sh"
    for pythonpath in (None, str(old)):
        got = hf_load(str(tmp_path / "hf"), str(tmp_path / f"cache-{bool(pythonpath)}"), pythonpath)
        assert got["version"] == (OLDEST_DATASETS if pythonpath else __import__("datasets").__version__)
        assert got["image_feature"] == "Image" and got["rows"] == 2
        items = sorted(got["items"], key=lambda r: r["id"])
        assert [r["caption"] for r in items] == ["A red square.", "A green square."]
        assert items[0]["size"] == [64, 48] and items[0]["id"] == "a-1"
        assert items[0]["conversations"][2] == {"from": "human", "value": "What colour?"}


def test_hf_parquet_of_embedded_images(tmp_path):
    pytest.importorskip("datasets")
    wds, _ = embedded_runs(tmp_path)
    export_hf_parquet(wds, str(tmp_path / "hfw"), stage="pretrain")
    got = hf_load(str(tmp_path / "hfw"), str(tmp_path / "cache"))
    assert sorted(tuple(r["size"]) for r in got["items"]) == [(40, 30), (64, 48)]
    assert all(len(r["conversations"]) == 2 for r in got["items"])


def test_image_reader_reads_embedded_images_back_in_one_pass(tmp_path):
    jpg = rgb(color=(1, 2, 3))
    shard = tmp_path / "s.tar"
    _tar(shard, {"k/x.jpg": jpg, "k/y.jpg": b"y"})
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"zero", "path": None}, {"bytes": jpg, "path": "p"}],
                                               type=image)}), tmp_path / "m.parquet")
    reader = ImageReader(StorageConfig())
    assert reader.read(f"tar://k/x.jpg::{shard}") == jpg
    assert reader.read(f"{tmp_path / 'm.parquet'}#row=1") == jpg
    got = reader.read_many([f"tar://k/y.jpg::{shard}", f"tar://k/z.jpg::{shard}", str(tmp_path / "gone.jpg")])
    assert got[f"tar://k/y.jpg::{shard}"] == b"y"
    assert isinstance(got[f"tar://k/z.jpg::{shard}"], KeyError)
    assert isinstance(got[str(tmp_path / "gone.jpg")], FileNotFoundError)

"""Embedded-image sources end to end on the real S3 server: WebDataset shards and a Hugging Face
Parquet manifest (Image structs) -> fetch skipped -> caption + generated QA (transformers reference
engine in both pools, the quick real engine) -> committed run -> exports: JSON with every image written
out by ``--images-to`` (each file there, opening, named by the consumers' layout), and HF Parquet read
back by ``datasets``.
"""

from __future__ import annotations

import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.specfile import load_spec
from pipeline.commit import read_committed, read_manifest
from schemas import columns as C
from schemas.spec import StorageConfig
from tests.conftest import ROOT
from tests.consumers import load_llava
from tests.corpus import gradient, rgb, tar_bytes, text_as_jpg

pytestmark = pytest.mark.slow


def test_webdataset_and_hf_parquet_sources(s3_server, tiny_models, tmp_path):
    import fsspec
    import ray
    from PIL import Image

    from pipeline.export.hf_parquet import export_hf_parquet
    from pipeline.export.llava import export_llava
    from pipeline.export.rows import ExportError
    from pipeline.runner import Run, configure_data_context, init_ray

    datasets = pytest.importorskip("datasets")
    storage = StorageConfig(endpoint_url=s3_server)
    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_server})
    fs.mkdir("sgwds")
    fs.pipe_file("sgwds/shards/shard-000.tar", tar_bytes({
        "a.jpg": rgb(64, 48, (200, 0, 0)), "a.json": json.dumps({"id": "a"}).encode(),
        "b.png": gradient(), "b.txt": b"original caption",
        "c.jpg": text_as_jpg(),
    }))
    fs.pipe_file("sgwds/shards/shard-001.tar", tar_bytes({"d.jpg": rgb(40, 30, (0, 0, 200)), "e.json": b"{}"}))
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["p1", "p2"], "image": pa.array(
        [{"bytes": rgb(32, 32, (0, 200, 0)), "path": "p1.jpg"}, {"bytes": gradient(50, 40), "path": "p2.png"}],
        type=image)}), buf)
    fs.pipe_file("sgwds/hf/train-0.parquet", buf.getvalue())

    base = load_spec(ROOT / "jobs/specs/sharegpt4v-prefix.yaml").model_dump(mode="json")
    for section in (base["model"], base["qa"]["model"]):
        section["engine"]["kind"] = "transformers"
        section["model_id"] = str(tiny_models[section["family"]])
    base["sink"] = {"uri": "s3://sgwds/out/", "storage": {"endpoint_url": s3_server}, "rows_per_file": 4}
    base["run"] = {"num_cpus": 4, "progress_bars": False}
    cases = {
        "wds": ({"uri": "s3://sgwds/shards/", "format": "webdataset"}, {"ok": 3, "not_an_image": 1,
                                                                        "invalid_entry": 1}),
        "hf": ({"uri": "s3://sgwds/hf/", "format": "parquet"}, {"ok": 2}),
    }
    os.environ["VLMBATCH_S3_ENDPOINT"] = s3_server
    init_ray(load_spec(ROOT / "jobs/specs/sharegpt4v-prefix.yaml").run.model_copy(update={"num_cpus": 4}))
    try:
        configure_data_context(load_spec(ROOT / "jobs/specs/sharegpt4v-prefix.yaml").run)
        from jobs.specfile import parse_spec

        progress = {}
        for run_id, (source, _) in cases.items():
            spec = parse_spec({**base, "source": {**source, "storage": {"endpoint_url": s3_server}}})
            progress[run_id] = io.StringIO()
            run = Run(spec, run_id, stream=progress[run_id])
            assert run.pipeline.describe().split(" -> ")[0] in ("webdataset", "parquet-manifest")
            run.execute()
    finally:
        ray.shutdown()
    # Remote WebDataset shards hold no count: "?" until every row is written, then the total.
    for run_id, (first, last) in {"wds": ("0/?", "5/5"), "hf": ("0/2", "2/2")}.items():
        lines = [ln for ln in progress[run_id].getvalue().splitlines() if ln.startswith("[vlmbatch]")]
        assert lines[0].startswith(f"[vlmbatch] {first} images done") and lines[-1].startswith(
            f"[vlmbatch] {last} images done"), lines
        assert len(lines) == len(set(lines)), "no progress line printed twice"

    for run_id, (_, expected) in cases.items():
        rows = read_committed(f"s3://sgwds/out/{run_id}", storage).to_pylist()
        statuses = {}
        for r in rows:
            key = "ok" if r[C.STATUS] in ("ok", "repetition", "refusal", "empty_generation") else r[C.STATUS]
            statuses[key] = statuses.get(key, 0) + 1
        assert statuses == expected, (run_id, [(r[C.SOURCE], r[C.STATUS], r[C.ERROR]) for r in rows])
        assert len({r[C.ID] for r in rows}) == len(rows)
        for r in rows:
            if r[C.STATUS] == "ok":
                assert r[C.QA] and all(p[C.QA_ORIGIN] == "generate" for p in r[C.QA]), "questions were generated"
                # The row's QA tokens include the question generation, beyond its answers'.
                assert r[C.QA_GENERATED_TOKENS] > sum(p[C.NUM_GENERATED_TOKENS] or 0 for p in r[C.QA])
        manifest = read_manifest(f"s3://sgwds/out/{run_id}", storage)
        assert manifest.summary.qa_pairs == sum(len(r[C.QA] or []) for r in rows) > 0
        assert manifest.summary.qa_generated_tokens == sum(r[C.QA_GENERATED_TOKENS] or 0 for r in rows)
        assert sorted(r[C.SOURCE_ID] for r in rows) == {"wds": ["a", "b", "c", "d", "e"], "hf": ["p1", "p2"]}[
            run_id], "the source's own ids: the .json's id, else the sample key; the Parquet id column"
        ok = [r for r in rows if r[C.STATUS] == "ok"]
        own = {r[C.SOURCE_ID]: r for r in ok}
        if not ok:  # every caption failed a post-check: an export of nothing fails, saying why
            with pytest.raises(ExportError, match="no record to export"):
                export_llava(f"s3://sgwds/out/{run_id}", str(tmp_path / "none.json"), images_to=str(tmp_path / "x"),
                             storage=storage)
            continue

        # JSON: every image lives in a tar or a Parquet struct, so --images-to writes each one out.
        images = tmp_path / f"{run_id}-images"
        summary = export_llava(f"s3://sgwds/out/{run_id}", str(tmp_path / f"{run_id}.json"), images_to=str(images),
                               storage=storage)
        records = json.loads((tmp_path / f"{run_id}.json").read_text())
        assert sorted(r["id"] for r in records) == sorted(own) and summary.images_written == len(ok)
        loaded, why = load_llava(records, str(images), "v1")
        assert loaded == len(records), why
        for rec in records:
            with Image.open(images / rec["image"]) as im:
                assert im.size == (own[rec["id"]][C.ORIG_WIDTH], own[rec["id"]][C.ORIG_HEIGHT])
        assert len(list(p for p in images.rglob("*") if p.is_file())) == len(ok), "one file per record, no more"

        out = tmp_path / run_id
        summary = export_hf_parquet(f"s3://sgwds/out/{run_id}", str(out), storage=storage)
        assert summary.rows_out == len(ok)
        ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                                   cache_dir=str(tmp_path / "cache"))
        for item in ds:
            assert item["image"].size == (own[item["id"]][C.ORIG_WIDTH], own[item["id"]][C.ORIG_HEIGHT])

"""The ShareGPT4V build end to end: JSON manifest on the real S3 server -> caption pool (vLLM, tiny
InternVL) -> post-checks -> QA pool (transformers, tiny LLaVA) -> committed Parquet -> exports read
by their real consumers (``json`` into the LLaVA layout, ``datasets.load_dataset``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from jobs.demo_corpus import write_demo_corpus
from jobs.demo_dataset import demo_manifest, write_demo_manifest
from jobs.specfile import load_spec
from pipeline.commit import read_committed, read_manifest
from schemas import columns as C
from schemas.spec import StorageConfig
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

IMAGES = 8
POSTCHECK_STATUSES = {"repetition", "refusal", "empty_generation", "truncated"}


def _run(args, env):
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_sharegpt4v_build_from_json_manifest(s3_server, tiny_models, tmp_path):
    datasets = pytest.importorskip("datasets")
    storage = StorageConfig(endpoint_url=s3_server)
    bucket = "sgpt4v"
    write_demo_corpus(f"s3://{bucket}/corpus/", storage)
    n_entries = write_demo_manifest(f"s3://{bucket}/sharegpt4v/manifest.json", storage, limit=IMAGES)
    entries = {e["id"]: e for e in demo_manifest(IMAGES)}
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    for family in ("internvl", "llava"):
        (home / "models" / f"tiny-{family}").symlink_to(tiny_models[family])
    env = {**os.environ, "VLMBATCH_S3_ENDPOINT": s3_server, "VLMBATCH_HOME": str(home),
           "VLMBATCH_SHAREGPT4V_MANIFEST": f"s3://{bucket}/sharegpt4v/manifest.json",
           "VLMBATCH_SHAREGPT4V_IMAGES": f"s3://{bucket}/corpus/",
           "VLMBATCH_SHAREGPT4V_SINK": f"s3://{bucket}/datasets/", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)

    proc = _run(["run", "jobs/specs/sharegpt4v.yaml", "--run-id", "sg-1"], env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"rows in {n_entries}, rows out {n_entries}" in proc.stdout

    # Stage by stage: listed -> fetched/decoded -> captioned + post-checked -> QA.
    root = f"s3://{bucket}/datasets/sg-1"
    manifest = read_manifest(root, storage)
    assert manifest.record == "dataset" and manifest.summary.rows_in == n_entries == IMAGES + 2
    rows = {r[C.ID]: r for r in read_committed(root, storage).to_pylist()}
    assert len(rows) == n_entries, "one row per manifest entry, no duplicates"
    by_image = {r[C.IMAGE]: r for r in rows.values() if r[C.IMAGE]}
    statuses = Counter(r[C.STATUS] for r in rows.values())
    assert statuses["invalid_entry"] == 1 and statuses["not_found"] == 1
    assert by_image["photos/does-not-exist.jpg"][C.STATUS] == "not_found"
    assert set(statuses) <= {"ok", "invalid_entry", "not_found"} | POSTCHECK_STATUSES
    assert statuses["ok"] >= IMAGES // 2, statuses
    spec = load_spec(ROOT / "jobs/specs/sharegpt4v.yaml")
    ok = [r for r in rows.values() if r[C.STATUS] == "ok"]
    for r in ok:
        assert r[C.ENGINE].startswith("vllm-") and r[C.QA_ENGINE].startswith("transformers-"), "two pools"
        assert r[C.INSTRUCTION] in spec.caption.prompts and r[C.INSTRUCTION] in r[C.PROMPT]
        assert r[C.CAPTION].strip() and r[C.WIDTH] > 0
        entry = next(e for e in entries.values() if e["image"] == r[C.IMAGE])
        questions = [p[C.QA_QUESTION] for p in r[C.QA]]
        if "conversations" in entry:
            assert questions == ["What is the main subject of this picture?"]
            assert r[C.QA][0][C.QA_ORIGIN] == "manifest"
        else:
            assert len(set(questions)) == 2 and set(questions) <= set(spec.qa.question_set)
        for pair in r[C.QA]:
            assert pair[C.QA_ANSWER] is not None and pair[C.STATUS] in {"ok"} | POSTCHECK_STATUSES
    for r in rows.values():
        if r[C.STATUS] in POSTCHECK_STATUSES:
            assert r[C.ERROR] and r[C.CAPTION] is not None, "a post-check failure keeps its text"
        if r[C.STATUS] != "ok":
            assert not r[C.QA], "no QA for a row that is not a training example"
    ok_pairs = sum(p[C.STATUS] == "ok" for r in ok for p in r[C.QA])

    # ShareGPT4V JSON, read back as training code reads it.
    out_json = tmp_path / "sharegpt4v.json"
    proc = _run(["export", root, str(out_json), "--format", "sharegpt4v", "--image-root", f"s3://{bucket}/corpus/",
                 "--endpoint-url", s3_server], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(out_json.read_text())
    assert sorted(r["id"] for r in records) == sorted(r[C.ID] for r in ok), "exactly the ok rows"
    for rec in records:
        turns = rec["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n") and turns[1]["value"] == rows[rec["id"]][C.CAPTION]
        assert rec["image"] == rows[rec["id"]][C.IMAGE], "relative to the image root"
    assert sum(len(r["conversations"]) // 2 - 1 for r in records) == ok_pairs

    # Hugging Face datasets Parquet, loaded by datasets itself.
    out_hf = tmp_path / "hf"
    proc = _run(["export", root, str(out_hf), "--format", "hf-parquet", "--image-root", f"s3://{bucket}/corpus/",
                 "--endpoint-url", s3_server, "--rows-per-shard", "4"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted(p.name for p in (out_hf / "data").iterdir())
    n = -(-len(ok) // 4)
    assert shards == [f"train-{k:05d}-of-{n:05d}.parquet" for k in range(n)]
    ds = datasets.load_dataset("parquet", data_files=str(out_hf / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(ds.features["image"], datasets.Image) and ds.num_rows == len(ok)
    for item in ds:
        row = rows[item["id"]]
        assert item["caption"] == row[C.CAPTION]
        assert item["image"].size == (row[C.ORIG_WIDTH], row[C.ORIG_HEIGHT]), "the original image, embedded"

"""The ShareGPT4V-PT recaptioning recipe end to end: an image prefix on the real S3 server -> Share-Captioner
(vLLM plugin, tiny checkpoint) -> post-checks -> committed Parquet -> the pretraining JSON, read the way
LLaVA's / ShareGPT4V's pretraining loader reads it (``preprocess_plain``: exactly two turns, the image
token in the first, the caption in the second).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from jobs.demo_corpus import BAD_NAME, demo_files
from jobs.specfile import load_spec
from operators.storage import filesystem
from pipeline.commit import read_committed, read_manifest
from schemas import columns as C
from schemas.spec import StorageConfig
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

POSTCHECK = {"repetition", "refusal", "empty_generation", "truncated"}
IMAGE_TOKEN = "<image>"


def _run(args, env):
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def pretrain_example(record: dict) -> tuple[str, str]:
    """(image path, target text) as LLaVA's ``preprocess_plain`` builds a pretraining example, or AssertionError."""
    turns = record["conversations"]
    assert len(turns) == 2, "pretraining records hold exactly one exchange"
    assert [t["from"] for t in turns] == ["human", "gpt"]
    assert IMAGE_TOKEN in turns[0]["value"], "the image token sits in the human turn"
    return record["image"], IMAGE_TOKEN + turns[1]["value"] + "\n"


def test_sharegpt4v_pt_recipe(s3_server, tiny_models, tmp_path):
    storage = StorageConfig(endpoint_url=s3_server)
    fs, root = filesystem("s3://sgpt4vpt/corpus/", storage)
    demo = demo_files()
    # Four images and the planted non-image: small, as the CI budget asks.
    files = {k: demo[k] for k in sorted(k for k in demo if k.startswith("generated/generated-0"))[:4]}
    files[f"bad/{BAD_NAME}"] = demo[f"bad/{BAD_NAME}"]
    for name, data in files.items():
        fs.makedirs(f"{root}/{name.rsplit('/', 1)[0]}", exist_ok=True)
        fs.pipe_file(f"{root}/{name}", data)
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "tiny-share-captioner").symlink_to(tiny_models["share-captioner"])
    env = {**os.environ, "VLMBATCH_S3_ENDPOINT": s3_server, "VLMBATCH_HOME": str(home),
           "VLMBATCH_SGPT4V_PT_SOURCE": "s3://sgpt4vpt/corpus/", "VLMBATCH_SGPT4V_PT_SINK": "s3://sgpt4vpt/datasets/",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)

    proc = _run(["run", "jobs/specs/sharegpt4v-pt.yaml", "--run-id", "pt-1"], env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"rows in {len(files)}, rows out {len(files)}" in proc.stdout

    run_root = "s3://sgpt4vpt/datasets/pt-1"
    manifest = read_manifest(run_root, storage)
    assert manifest.record == "dataset" and manifest.summary.rows_in == len(files)
    rows = {r[C.ID]: r for r in read_committed(run_root, storage).to_pylist()}
    assert len(rows) == len(files), "one row per image, no duplicates"
    statuses = Counter(r[C.STATUS] for r in rows.values())
    bad = next(r for r in rows.values() if r[C.SOURCE].endswith(BAD_NAME))
    assert bad[C.STATUS] in {"not_an_image", "decode_error"} and bad[C.ERROR]
    assert set(statuses) <= {"ok", bad[C.STATUS]} | POSTCHECK, (statuses, {r[C.ERROR] for r in rows.values()})
    assert statuses["ok"] >= 3, statuses
    spec = load_spec(ROOT / "jobs/specs/sharegpt4v-pt.yaml")
    ok = [r for r in rows.values() if r[C.STATUS] == "ok"]
    for r in ok:
        assert r[C.ENGINE].startswith("vllm-") and r[C.CAPTION].strip()
        assert r[C.INSTRUCTION] == spec.caption.prompt
        assert r[C.PROMPT] == f"<|User|>:<ImageHere>{spec.caption.prompt}<TOKENS_UNUSED_0>\n<|Bot|>:"
    for r in rows.values():
        if r[C.STATUS] in POSTCHECK:
            assert r[C.ERROR] and r[C.CAPTION] is not None, "a post-check failure keeps its text"

    out = tmp_path / "sharegpt4v_pt.json"
    proc = _run(["export", run_root, str(out), "--format", "sharegpt4v", "--image-root", "s3://sgpt4vpt/corpus/",
                 "--endpoint-url", s3_server], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(out.read_text())
    # Export ids are the sources' own ids (issue 15: the object's path under the corpus), unique here.
    by_export_id = {r[C.SOURCE_ID] or r[C.ID]: r for r in ok}
    assert len(by_export_id) == len(ok)
    assert sorted(r["id"] for r in records) == sorted(by_export_id), "exactly the ok rows"
    for rec in records:
        row = by_export_id[rec["id"]]
        image, target = pretrain_example(rec)
        assert image == row[C.SOURCE].split("/corpus/", 1)[1], "relative to the image root"
        assert rec["conversations"][0]["value"] == f"{IMAGE_TOKEN}\n{spec.caption.prompt}"
        assert target == IMAGE_TOKEN + row[C.CAPTION] + "\n"
    print(f"\nsharegpt4v-pt: {len(rows)} rows, {dict(statuses)}, {len(records)} pretraining records")

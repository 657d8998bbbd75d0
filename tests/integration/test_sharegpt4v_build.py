"""The ShareGPT4V build end to end: JSON manifest on the real S3 server -> caption pool (vLLM, tiny
InternVL) -> post-checks -> QA pool (transformers, tiny LLaVA) -> committed Parquet with QA figures
-> exports in every format and stage, read by their real consumers' rules (LLaVA's / ShareGPT4V's
``LazySupervisedDataset`` layouts, ``datasets.load_dataset`` of the newest and the oldest supported
``datasets``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from unittest import mock

import pytest

from jobs.demo_corpus import write_demo_corpus
from jobs.demo_dataset import demo_manifest, write_demo_manifest
from jobs.specfile import load_spec
from pipeline.commit import read_committed, read_manifest
from pipeline.report import read_report
from schemas import columns as C
from schemas.spec import StorageConfig
from tests.conftest import ROOT
from tests.consumers import OLDEST_DATASETS, hf_load, load_llava, oldest_datasets_dir, read_json_export
from tests.integration.helpers import TRACEBACK

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
    assert TRACEBACK not in proc.stdout + proc.stderr, "a successful run ends quietly: " + proc.stderr[-6000:]

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
    with mock.patch.dict(os.environ, env):  # the spec as the command read it (VLMBATCH_HOME, the sink)
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

    # QA everywhere a caption figure is: per-pair tokens, statuses and tokens in the summary, provenance.
    pairs = [p for r in rows.values() for p in r[C.QA] or []]
    assert pairs and all(p[C.NUM_GENERATED_TOKENS] >= 2 and p[C.NUM_PROMPT_TOKENS] > 16 for p in pairs)
    entries_by_image = {e["image"]: e for e in entries.values()}
    # What ran is what is hashed: the spec's QA settings with the family's card defaults filled in.
    from operators.vlm.registry import get_family

    qa_hash = spec.qa.sampling.resolved(get_family(spec.qa.model.family).sampling_defaults).digest()
    for r in ok:
        assert r[C.QA_GENERATED_TOKENS] == sum(p[C.NUM_GENERATED_TOKENS] for p in r[C.QA]), "manifest questions"
        assert r[C.QA_SAMPLING_HASH] == qa_hash and r[C.QA_MODEL_ID] == spec.qa.model.model_id
        assert r[C.SOURCE_ID] == entries_by_image[r[C.IMAGE]]["id"], "the manifest's own id, kept"
    s = manifest.summary
    assert s.qa_pairs == len(pairs) and s.qa_by_status == dict(Counter(p[C.STATUS] for p in pairs))
    assert s.qa_generated_tokens == sum(p[C.NUM_GENERATED_TOKENS] for p in pairs) > 0 < s.qa_generated_tokens_per_s
    assert manifest.qa_model_id == spec.qa.model.model_id and manifest.qa_engine.startswith("transformers-")
    assert manifest.qa_sampling_hash == qa_hash
    qa_line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("qa "))
    assert qa_line.startswith(f"qa {len(pairs)} pairs (") and f"{s.qa_generated_tokens} generated tokens" in qa_line
    assert 0 < s.startup_s < s.wall_s
    report = read_report(root, storage)
    assert report["qa_model_id"] == manifest.qa_model_id and report["qa_engine"] == manifest.qa_engine
    assert report["figures"]["qa_status_breakdown"] == s.qa_by_status
    assert report["figures"]["qa_answer_length_histogram"]["rows"] == s.qa_by_status.get("ok", 0)
    assert report["figures"]["startup_s"] == s.startup_s and report["figures"]["throughput"][0]["t_s"] > s.startup_s

    # Every JSON format and stage, read back by the consumers' own rules, images relative to the
    # manifest's image root (the default), ids the manifest's own.
    by_own = {r[C.SOURCE_ID]: r for r in ok}
    corpus = f"s3://{bucket}/corpus/"
    for fmt, stage in (("sharegpt4v", "finetune"), ("llava-json", "pretrain"), ("llava-jsonl", "finetune")):
        out = tmp_path / (f"{fmt}-{stage}.json" + ("l" if fmt == "llava-jsonl" else ""))
        proc = _run(["export", root, str(out), "--format", fmt, "--stage", stage, "--endpoint-url", s3_server], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = read_json_export(str(out))
        assert sorted(r["id"] for r in records) == sorted(by_own), "exactly the ok rows, by the manifest's ids"
        loaded, why = load_llava(records, corpus, "plain" if stage == "pretrain" else "v1", storage)
        assert loaded == len(records), why
        for rec in records:
            row = by_own[rec["id"]]
            assert rec["conversations"][1]["value"] == row[C.CAPTION] and rec["image"] == row[C.IMAGE]
        exported = sum(len(r["conversations"]) // 2 - 1 for r in records)
        assert exported == (ok_pairs if stage == "finetune" else 0)
        left = sum(len(r[C.QA]) for r in ok) - exported
        assert f"({exported} of {len(pairs)} QA pairs, {stage})" in proc.stdout
        assert ("QA pairs left out: none" in proc.stdout) == (left == 0)
        assert json.loads((tmp_path / f"{fmt}-{stage}.export.json").read_text())["image_root"] == corpus

    # Hugging Face datasets Parquet, loaded by the newest datasets and by the oldest supported one.
    out_hf = tmp_path / "hf"
    proc = _run(["export", root, str(out_hf), "--format", "hf-parquet", "--endpoint-url", s3_server,
                 "--rows-per-shard", "4"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted(p.name for p in (out_hf / "data").iterdir())
    n = -(-len(ok) // 4)
    assert shards == [f"train-{k:05d}-of-{n:05d}.parquet" for k in range(n)]
    for label, pythonpath in ((datasets.__version__, None), (OLDEST_DATASETS, str(oldest_datasets_dir()))):
        got = hf_load(str(out_hf), str(tmp_path / f"hf-cache-{label}"), pythonpath)
        assert got["version"] == label and got["image_feature"] == "Image" and got["rows"] == len(ok)
        for item in got["items"]:
            row = by_own[item["id"]]
            assert item["caption"] == row[C.CAPTION]
            assert item["size"] == [row[C.ORIG_WIDTH], row[C.ORIG_HEIGHT]], "the original image, embedded"
            assert len(item["conversations"]) == 2 + 2 * sum(p[C.STATUS] == "ok" for p in row[C.QA])

"""Helpers for integration tests: demo specs pointed at the test S3 server, output checks."""

from __future__ import annotations

from collections import Counter

import yaml

from jobs.demo_corpus import BAD_NAME, demo_files
from pipeline.commit import read_committed, read_manifest
from schemas import columns as C
from schemas.spec import StorageConfig

#: What a successful run's log must never hold.
TRACEBACK = "Traceback (most recent call last)"


def demo_spec(endpoint: str, bucket: str, family: str, model_dir: str, name: str = "itest") -> dict:
    """The demo spec as a dict, reading s3://<bucket>/corpus/ and writing s3://<bucket>/captions/."""
    storage = {"endpoint_url": endpoint}
    return {
        "name": name,
        "source": {"uri": f"s3://{bucket}/corpus/", "storage": storage},
        "model": {"family": family, "model_id": model_dir,
                  "engine": {"dtype": "float32", "max_model_len": 1024, "max_num_seqs": 16}},
        "sampling": {"max_tokens": 12, "min_tokens": 4},
        "sink": {"uri": f"s3://{bucket}/captions/", "storage": storage, "rows_per_file": 16},
        "postcheck": {"truncated": False, "repetition": False},
        "resources": {"num_engines": 1, "batch_size": 8, "batches_in_flight": 2, "cpu_batch_size": 8},
        "run": {"num_cpus": 2, "progress_bars": False},
    }


def write_spec(path, spec: dict) -> str:
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def check_demo_output(endpoint: str, bucket: str, run_id: str, family: str) -> dict:
    """Assert what a user checks of a committed demo run; return the manifest as a dict."""
    storage = StorageConfig(endpoint_url=endpoint)
    root = f"s3://{bucket}/captions/{run_id}"
    manifest = read_manifest(root, storage)
    assert manifest is not None, f"{root} not committed"
    table = read_committed(root, storage)
    expected = {f"s3://{bucket}/corpus/{name}" for name in demo_files()}
    sources = table.column(C.SOURCE).to_pylist()
    assert len(sources) == len(expected), "one output row per input image"
    assert set(sources) == expected
    assert len(set(table.column(C.ID).to_pylist())) == table.num_rows, "no duplicate ids"
    rows = {r[C.SOURCE]: r for r in table.to_pylist()}
    bad = rows.pop(f"s3://{bucket}/corpus/bad/{BAD_NAME}")
    assert bad[C.STATUS] == "not_an_image" and "not an image" in bad[C.ERROR]
    assert bad[C.CAPTION] is None
    for source, row in rows.items():
        assert row[C.STATUS] == "ok", (source, row[C.STATUS], row[C.ERROR])
        assert row[C.CAPTION] and row[C.CAPTION].strip(), source
        assert 4 <= row[C.NUM_GENERATED_TOKENS] <= 12
        assert row[C.FINISH_REASON] in ("stop", "length")
        assert row[C.NUM_PROMPT_TOKENS] > 16
    for row in table.to_pylist():
        assert row[C.SOURCE_ID] == row[C.SOURCE].split("/corpus/", 1)[1], "a prefix row's own id: its relative key"
        assert row[C.RUN_ID] == run_id and row[C.ENGINE].startswith("vllm-")
        assert row[C.MODEL_ID] and row[C.SAMPLING_HASH] and row[C.CODE_VERSION].startswith("vlmbatch")
    s = manifest.summary
    assert s.rows_in == s.rows_out == table.num_rows
    assert Counter(table.column(C.STATUS).to_pylist()) == Counter(s.by_status)
    assert s.generated_tokens == sum(r[C.NUM_GENERATED_TOKENS] or 0 for r in table.to_pylist())
    assert s.images_per_s > 0 and s.wall_s > 0
    assert sum(f.rows for f in manifest.files) == table.num_rows
    assert manifest.schema_version == "2" and manifest.run_id == run_id
    assert s.startup_s is not None and 0 < s.startup_s < s.wall_s, "the engines' start-up, measured"
    assert manifest.spec["model"]["family"] == family
    return manifest.model_dump()


def fast_spec(endpoint: str, bucket: str, model_dir: str, engine: str = "transformers", tokens: int = 6) -> dict:
    """The demo job with small shards (many commit points) and fixed-length generations."""
    spec = demo_spec(endpoint, bucket, "internvl", model_dir, name="faults")
    spec["model"]["engine"]["kind"] = engine
    spec["sampling"] = {"max_tokens": tokens, "min_tokens": tokens}
    spec["sink"]["rows_per_file"] = 4
    spec["resources"].update(batch_size=4, cpu_batch_size=4)
    spec["postcheck"] = {"truncated": False, "repetition": False}
    return spec

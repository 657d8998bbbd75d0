"""Generation failures as statuses, end to end: a prompt over the context, and degenerate output."""

from __future__ import annotations

import pytest
import s3fs

from pipeline.commit import read_committed
from schemas import columns as C
from schemas.spec import StorageConfig
from tests import corpus
from tests.integration.faults import log_of, start_run
from tests.integration.helpers import fast_spec, write_spec

pytestmark = pytest.mark.slow


def small_corpus(endpoint: str, bucket: str) -> None:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.mkdir(bucket)
    for i in range(3):
        fs.pipe_file(f"{bucket}/corpus/img-{i}.png", corpus.gradient(64 + i, 48))


def run_rows(endpoint: str, bucket: str, spec: dict, tmp_path, env) -> list[dict]:
    proc = start_run(write_spec(tmp_path / f"{bucket}.yaml", spec), "r", env)
    assert proc.wait(timeout=600) == 0, log_of(proc)
    return read_committed(f"s3://{bucket}/captions/r", StorageConfig(endpoint_url=endpoint)).to_pylist()


def test_prompt_over_the_context_is_a_row_status(s3_server, tiny_models, tmp_path, run_env):
    """vLLM refuses the request; the row says why, the job commits."""
    env, _ = run_env
    small_corpus(s3_server, "toolong")
    spec = fast_spec(s3_server, "toolong", str(tiny_models["internvl"]), engine="vllm")
    spec["model"]["engine"]["max_model_len"] = 64  # the InternVL system prompt alone is longer
    rows = run_rows(s3_server, "toolong", spec, tmp_path, env)
    assert len(rows) == 3
    for row in rows:
        assert row[C.STATUS] == "prompt_too_long", (row[C.STATUS], row[C.ERROR])
        assert "64" in row[C.ERROR] and row[C.CAPTION] is None


def test_generation_cut_at_max_tokens_is_truncated(s3_server, tiny_models, tmp_path, run_env):
    """With the post-check on, a caption cut at max_tokens is kept for inspection but not ok."""
    env, _ = run_env
    small_corpus(s3_server, "truncated")
    spec = fast_spec(s3_server, "truncated", str(tiny_models["internvl"]))
    spec["postcheck"] = {"truncated": True, "repetition": False}
    rows = run_rows(s3_server, "truncated", spec, tmp_path, env)
    assert len(rows) == 3
    for row in rows:
        assert row[C.FINISH_REASON] == "length"
        assert row[C.STATUS] == "truncated" and row[C.ERROR] and row[C.CAPTION]

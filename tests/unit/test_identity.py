"""A run's spec identity: what it covers, how a changed spec is found and said (local run roots)."""

from __future__ import annotations

import json

import pytest

from pipeline.identity import (
    SPEC_RECORD,
    SpecMismatch,
    check_attempt,
    compare,
    differences,
    identity_digest,
    identity_view,
    mismatch,
)
from schemas.spec import JobSpec


def spec(tmp_path, **sections) -> JobSpec:
    base = {"name": "t", "source": {"uri": str(tmp_path / "corpus")},
            "model": {"family": "internvl", "model_id": "/m"}, "sink": {"uri": str(tmp_path / "out")}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return JobSpec.model_validate(base)


def test_what_rows_say_is_the_identity_how_it_runs_is_not(tmp_path):
    base = spec(tmp_path)
    same = [spec(tmp_path, resources={"batch_size": 2, "num_engines": 3}), spec(tmp_path, run={"run_id": "x"}),
            spec(tmp_path, sink={"rows_per_file": 7, "compression": "snappy"}),
            spec(tmp_path, model={"engine": {"max_num_seqs": 4, "gpu_memory_utilization": 0.5}}),
            spec(tmp_path, source={"storage": {"endpoint_url": "http://other:9000"}}), spec(tmp_path, name="u")]
    for other in same:
        assert identity_digest(other) == identity_digest(base), identity_view(other)
    changed = {"caption.prompt": spec(tmp_path, caption={"prompt": "Briefly."}),
               "sampling.temperature": spec(tmp_path, sampling={"temperature": 0.5}),
               "model.engine.dtype": spec(tmp_path, model={"engine": {"dtype": "bfloat16"}}),
               "decode.max_side": spec(tmp_path, decode={"max_side": 256}),
               "source.uri": spec(tmp_path, source={"uri": str(tmp_path / "elsewhere")})}
    for field, other in changed.items():
        assert identity_digest(other) != identity_digest(base)
        assert differences(identity_view(base), identity_view(other)) == [field]


def test_first_attempt_records_its_spec_and_a_changed_resume_is_refused(tmp_path):
    run_root = str(tmp_path / "out" / "r1")
    original = spec(tmp_path)
    check_attempt(original, "r1", run_root)
    record = json.loads((tmp_path / "out" / "r1" / SPEC_RECORD).read_text())
    assert record["identity"] == identity_digest(original) and record["spec"]["caption"]["prompt"]
    check_attempt(spec(tmp_path, resources={"batch_size": 1}), "r1", run_root)  # smaller batches: still a resume

    edited = spec(tmp_path, caption={"prompt": "Say it in five words."}, sampling={"max_tokens": 32})
    with pytest.raises(SpecMismatch) as refused:
        check_attempt(edited, "r1", run_root)
    message = str(refused.value)
    assert identity_digest(original) in message and identity_digest(edited) in message
    assert "caption.prompt, sampling.max_tokens" in message and "was started" in message
    assert refused.value.fields == ["caption.prompt", "sampling.max_tokens"]
    # The record is the first attempt's, untouched by the refused one.
    assert json.loads((tmp_path / "out" / "r1" / SPEC_RECORD).read_text())["identity"] == identity_digest(original)


def test_a_committed_spec_is_compared_as_the_committed_run_recorded_it(tmp_path):
    original = spec(tmp_path)
    committed = original.model_dump(mode="json")
    del committed["postcheck"]  # written before a section existed: its defaults fill in
    compare("r1", committed, original, committed=True)
    with pytest.raises(SpecMismatch, match="run r1 is committed with spec"):
        compare("r1", committed, spec(tmp_path, caption={"prompt": "Other."}), committed=True)
    assert mismatch(spec(tmp_path, caption={"prompt": "Other."}), "r1", committed).fields == ["caption.prompt"]
    assert mismatch(original, "r1", committed) is None
    assert mismatch(original, "never-run", None) is None

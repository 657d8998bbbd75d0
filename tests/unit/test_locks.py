"""Locks and dataset versions of schedules (local filesystem; S3 in the integration tests)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pipeline.locks import LockHeld, ObjectLock
from pipeline.schedule import dataset_version
from schemas.spec import JobSpec

SPEC = {
    "name": "t", "source": {"uri": "/x/"}, "model": {"family": "internvl", "model_id": "/m"},
    "sink": {"uri": "/out/"}, "schedule": {"state_uri": "/state/"},
}


def test_one_holder_at_a_time(tmp_path):
    uri = str(tmp_path / "lock")
    with ObjectLock(uri, "run-a"):
        with pytest.raises(LockHeld, match="held by run 'run-a'"):
            ObjectLock(uri, "run-b").acquire()
    with ObjectLock(uri, "run-b"):
        assert ObjectLock(uri, "x").read()["run_id"] == "run-b"
    assert ObjectLock(uri, "x").read() is None


def test_racing_acquirers_exactly_one_wins(tmp_path):
    uri = str(tmp_path / "lock")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            ObjectLock(uri, f"run-{i}").acquire()
            results.append("won")
        except LockHeld:
            results.append("refused")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused"] * 7 + ["won"]


def test_expired_lock_of_a_dead_run_is_broken(tmp_path):
    uri = tmp_path / "lock"
    uri.write_text(json.dumps({"run_id": "dead", "expires_at": time.time() - 1}))
    with ObjectLock(str(uri), "alive"):
        assert ObjectLock(str(uri), "x").read()["run_id"] == "alive"


def test_model_or_prompt_change_is_a_new_version():
    base = JobSpec.model_validate(SPEC)
    same = JobSpec.model_validate({**SPEC, "resources": {"batch_size": 3}, "run": {"run_id": "r"}})
    prompt = JobSpec.model_validate({**SPEC, "caption": {"prompt": "Describe briefly."}})
    model = JobSpec.model_validate({**SPEC, "model": {"family": "internvl", "model_id": "/other"}})
    sampling = JobSpec.model_validate({**SPEC, "sampling": {"temperature": 0.7}})
    versions = {dataset_version(s)[0] for s in (prompt, model, sampling)}
    assert dataset_version(base)[0] == dataset_version(same)[0]
    assert len(versions) == 3 and dataset_version(base)[0] not in versions

"""Locks and dataset versions of schedules (local filesystem; S3 in the integration tests)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest

from pipeline.locks import LockHeld, LockLost, ObjectLock, _boot_id
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


def _holder(pid: int, host: str | None = None, expires_in: float = 60) -> str:
    now = time.time()
    return json.dumps({"run_id": "other", "host": host or socket.gethostname(), "boot_id": _boot_id(), "pid": pid,
                       "acquired_at": now - 5, "renewed_at": now - 1, "expires_at": now + expires_in})


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    uri = tmp_path / "lease.json"
    uri.write_text(_holder(gone.pid))
    with ObjectLock(str(uri), "rerun") as lock:
        assert lock.read()["run_id"] == "rerun"


def test_a_holder_on_another_host_is_refused_until_its_lease_expires(tmp_path):
    uri = tmp_path / "lease.json"
    uri.write_text(_holder(1, host="elsewhere"))
    with pytest.raises(LockHeld, match=r"held by run 'other' \(host elsewhere, pid 1\).*expires in (59|60) s"):
        ObjectLock(str(uri), "second").acquire()
    uri.write_text(_holder(1, host="elsewhere", expires_in=-1))
    with ObjectLock(str(uri), "second") as lock:
        assert lock.read()["run_id"] == "second"


def test_a_held_lease_is_renewed_and_released(tmp_path):
    uri = str(tmp_path / "lease.json")
    with ObjectLock(uri, "long", ttl_s=2) as lock:
        first = lock.read()
        time.sleep(1.4)  # renewals every max(ttl / 4, 1 s)
        later = lock.read()
        assert later["token"] == first["token"] and later["acquired_at"] == first["acquired_at"]
        assert later["expires_at"] > first["expires_at"]
        lock.check()
    assert ObjectLock(uri, "x").read() is None


def test_a_lease_taken_over_is_lost_and_left_to_its_new_holder(tmp_path):
    uri = tmp_path / "lease.json"
    lock = ObjectLock(str(uri), "slow")
    lock.acquire()
    uri.write_text(_holder(1, host="elsewhere"))  # what a taker writes once it saw the lease expired
    with pytest.raises(LockLost, match="taken over"):
        lock.check()
    lock.renew()
    lock.release()
    assert json.loads(uri.read_text())["run_id"] == "other"


def test_model_or_prompt_change_is_a_new_version():
    base = JobSpec.model_validate(SPEC)
    same = JobSpec.model_validate({**SPEC, "resources": {"batch_size": 3}, "run": {"run_id": "r"}})
    prompt = JobSpec.model_validate({**SPEC, "caption": {"prompt": "Describe briefly."}})
    model = JobSpec.model_validate({**SPEC, "model": {"family": "internvl", "model_id": "/other"}})
    sampling = JobSpec.model_validate({**SPEC, "sampling": {"temperature": 0.7}})
    versions = {dataset_version(s)[0] for s in (prompt, model, sampling)}
    assert dataset_version(base)[0] == dataset_version(same)[0]
    assert len(versions) == 3 and dataset_version(base)[0] not in versions

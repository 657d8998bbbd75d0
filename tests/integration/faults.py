"""Fault injection for integration tests: runs in child processes we can kill, found by an env marker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from jobs.demo_corpus import demo_files
from pipeline.commit import read_committed, read_manifest
from schemas import columns as C
from schemas.spec import StorageConfig
from tests.conftest import ROOT
from tests.procs import pids_with_env


def marked_env(env: dict) -> tuple[dict, str]:
    """``env`` plus a unique marker every descendant process inherits."""
    marker = uuid.uuid4().hex
    return {**env, "VLMBATCH_TEST_MARKER": marker}, marker


def marked_pids(marker: str, cmdline_contains: str | None = None) -> list[int]:
    """Processes carrying ``marker`` in their environment (optionally whose cmdline contains a string)."""
    return pids_with_env(f"VLMBATCH_TEST_MARKER={marker}", cmdline_contains)


def kill_marked(marker: str, cmdline_contains: str | None = None, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to the marked processes; returns their pids."""
    pids = marked_pids(marker, cmdline_contains)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def reap(marker: str, timeout: float = 20.0) -> None:
    """Kill everything left of a marked run (a killed driver leaves its local Ray behind)."""
    deadline = time.monotonic() + timeout
    while marked_pids(marker) and time.monotonic() < deadline:
        kill_marked(marker)
        time.sleep(0.3)


def start_run(spec_path: str, run_id: str, env: dict) -> subprocess.Popen:
    """``vlmbatch run SPEC --run-id RUN`` as a child process, output to a log beside the spec."""
    path = f"{spec_path}.{run_id or 'auto'}.{uuid.uuid4().hex[:8]}.log"
    args = [sys.executable, "-m", "jobs.cli", "run", spec_path] + (["--run-id", run_id] if run_id else [])
    with open(path, "w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = path  # type: ignore[attr-defined]
    return proc


def log_of(proc: subprocess.Popen) -> str:
    """The tail of a run's combined output."""
    try:
        with open(proc.log_path) as f:  # type: ignore[attr-defined]
            return f.read()[-4000:]
    except OSError:
        return ""


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``predicate`` until true; fail with ``what`` on timeout or if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"run exited ({proc.returncode}) before {what}; log: {log_of(proc)}")
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def staged(endpoint: str, bucket: str, run_id: str) -> list[str]:
    """The staging files of ``s3://<bucket>/captions/<run_id>`` (a fresh listing)."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.invalidate_cache()
    try:
        return sorted(fs.ls(f"{bucket}/captions/{run_id}/staging/"))
    except FileNotFoundError:
        return []


def assert_exactly_once(endpoint: str, bucket: str, run_id: str):
    """The committed demo run holds every demo image exactly once; returns its manifest."""
    n = len(demo_files())
    storage = StorageConfig(endpoint_url=endpoint)
    table = read_committed(f"s3://{bucket}/captions/{run_id}", storage)
    sources = table.column(C.SOURCE).to_pylist()
    assert len(sources) == n, f"{len(sources)} rows committed, {n} listed"
    assert set(sources) == {f"s3://{bucket}/corpus/{name}" for name in demo_files()}, "a row was lost"
    assert len(set(table.column(C.ID).to_pylist())) == n, "a row was committed twice"
    statuses = table.column(C.STATUS).to_pylist()
    assert statuses.count("ok") == n - 1 and statuses.count("not_an_image") == 1
    return read_manifest(f"s3://{bucket}/captions/{run_id}", storage)

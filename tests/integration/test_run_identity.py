"""One run id, one live run, one spec: concurrent runs, an edited spec and signals against real runs.

A single story on the real S3 server and a real local Ray (transformers engine, small shards), so
two engine runs cover it all: a run of ``r`` is refused a twin while it runs and is stopped by
SIGTERM mid-run; the edited spec cannot resume it; a resume stopped by SIGINT as it starts says the
same; the original resumes and commits every row exactly once, all of them the original prompt's;
the committed id then refuses the edited spec. Refusals happen before Ray starts (checked by a
fresh ``RAY_TMPDIR``).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
import s3fs

from jobs.demo_corpus import write_demo_corpus
from pipeline.commit import read_committed, read_manifest
from pipeline.identity import identity_digest
from schemas import columns as C
from schemas.spec import JobSpec, StorageConfig
from tests.conftest import ROOT
from tests.integration.faults import log_of, reap, start_run, wait_until
from tests.integration.helpers import fast_spec, write_spec
from tests.integration.test_faults import assert_exactly_once, staged

pytestmark = pytest.mark.slow
BUCKET = "identity"
EDITED = "Name one thing in this picture."


def refused(spec_path: str, env: dict, tmp_path) -> tuple[int, list[str], bool]:
    """A run of ``r`` that should be refused: exit code, its non-log lines, whether Ray started."""
    ray_tmp = tmp_path / f"ray-{len(list(tmp_path.glob('ray-*')))}"
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", spec_path, "--run-id", "r"], cwd=ROOT,
                          env={**env, "RAY_TMPDIR": str(ray_tmp)}, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line and " INFO " not in line and " WARNING " not in line]
    return proc.returncode, lines, ray_tmp.exists()


def stop_with(run: subprocess.Popen, sig: int) -> str:
    run.send_signal(sig)
    assert run.wait(timeout=120) == 128 + sig, log_of(run)
    log = log_of(run)
    # Ray's own shutdown may still log after it; what the run says is that one line, and no traceback.
    assert "interrupted: rerun with --run-id r to resume" in log.splitlines(), log[-1500:]
    assert "Traceback" not in log, log
    return log


def test_one_live_run_one_spec_and_signals_then_every_row_once(s3_server, tiny_models, tmp_path, run_env):
    env, marker = run_env
    storage = StorageConfig(endpoint_url=s3_server)
    write_demo_corpus(f"s3://{BUCKET}/corpus/", storage)
    spec = fast_spec(s3_server, BUCKET, str(tiny_models["internvl"]))
    original = write_spec(tmp_path / "spec.yaml", spec)
    edited = write_spec(tmp_path / "edited.yaml", {**spec, "caption": {"prompt": EDITED}})
    digests = [identity_digest(JobSpec.model_validate(s)) for s in (spec, {**spec, "caption": {"prompt": EDITED}})]
    root = f"s3://{BUCKET}/captions/r"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True,
                           use_listings_cache=False)

    # A run of r, and while it runs a twin of it: refused, naming the live one; then SIGTERM (an eviction).
    first = start_run(original, "r", env)
    wait_until(lambda: fs.exists(f"{BUCKET}/captions/r/lease.json"), 120, "the lease", first)
    rc, lines, ray_started = refused(original, env, tmp_path)
    assert rc == 3 and len(lines) == 1, lines
    assert lines[0].startswith(f"refused: {root}/lease.json is held by run 'r' (host {socket.gethostname()}, "
                               f"pid {first.pid})"), lines
    assert not ray_started
    wait_until(lambda: staged(s3_server, BUCKET, "r"), 300, "the first shard", first)
    stop_with(first, signal.SIGTERM)
    reap(marker)
    after_first = staged(s3_server, BUCKET, "r")
    assert after_first and read_manifest(root, storage) is None
    assert not fs.exists(f"{BUCKET}/captions/r/lease.json"), "an interrupted run keeps its lease"

    # The edited spec cannot resume it: both digests and the field, before Ray starts.
    rc, lines, ray_started = refused(edited, env, tmp_path)
    assert (rc, len(lines), ray_started) == (4, 1, False), lines
    assert lines[0] == (f"refused: run r was started with spec {digests[0]}, this spec is {digests[1]} (differs in "
                        "caption.prompt); rerun it with its own spec, or give a new run id (--new-run-id-on-change)")

    # Ctrl-C while the resume starts (its lease taken, Ray not yet running its engine): the same line, and
    # the lease released. (Past Ray's start SIGINT and SIGTERM take one path, tested mid-run above.)
    second = start_run(original, "r", env)
    wait_until(lambda: fs.exists(f"{BUCKET}/captions/r/lease.json"), 120, "the resume's lease", second)
    stop_with(second, signal.SIGINT)
    reap(marker)
    assert not fs.exists(f"{BUCKET}/captions/r/lease.json")

    # The same command again commits.
    third = start_run(original, "r", env)
    assert third.wait(timeout=600) == 0, log_of(third)
    manifest = assert_exactly_once(s3_server, BUCKET, "r")
    assert manifest.summary.rows_resumed > 0
    prompts = set(read_committed(root, storage, columns=[C.PROMPT]).column(C.PROMPT).to_pylist()) - {None}
    assert len(prompts) == 1 and JobSpec.model_validate(spec).caption.prompt in prompts.pop()

    # The committed id: its own spec is a no-op, the edited one is refused.
    rc, lines, _ = refused(edited, env, tmp_path)
    assert rc == 4 and lines[0].startswith(f"refused: run r is committed with spec {digests[0]}, this spec is "
                                           f"{digests[1]}"), lines
    rc, _, ray_started = refused(original, env, tmp_path)
    assert rc == 0 and not ray_started
    assert read_manifest(root, storage).created_at == manifest.created_at

"""Faults injected into real runs: the run finishes with every row exactly once.

Each run is a child process (`vlmbatch run`) with a marker in its environment, so the test
can kill the driver, an engine actor or the S3 server at a chosen moment and clean up every
process the run left behind.
"""

from __future__ import annotations

import random
import time

import pytest

from jobs.demo_corpus import demo_files, write_demo_corpus
from pipeline.commit import read_manifest
from schemas.spec import StorageConfig
from tests.conftest import ROOT, free_port_block
from tests.integration.faults import assert_exactly_once, kill_marked, log_of, reap, staged, start_run, wait_until
from tests.integration.helpers import fast_spec, write_spec

pytestmark = pytest.mark.slow
N = len(demo_files())


def test_driver_killed_at_random_points_then_resumed(s3_server, tiny_models, tmp_path, run_env):
    env, marker = run_env
    bucket = "fault-driver"
    write_demo_corpus(f"s3://{bucket}/corpus/", StorageConfig(endpoint_url=s3_server))
    spec = write_spec(tmp_path / "spec.yaml", fast_spec(s3_server, bucket, str(tiny_models["internvl"])))
    seed = random.randrange(1 << 30)
    shards_before_kill = random.Random(seed).randint(1, 3)

    # Attempt 1: the driver dies at a random point, after its 1st, 2nd or 3rd shard reported back.
    first = start_run(spec, "r", {**env, "VLMBATCH_CRASH_AT": f"after-shards:{shards_before_kill}"})
    assert first.wait(timeout=600) == 137, log_of(first)
    reap(marker)
    after_first = staged(s3_server, bucket, "r")
    assert read_manifest(f"s3://{bucket}/captions/r", StorageConfig(endpoint_url=s3_server)) is None
    assert 0 < len(after_first) < -(-N // 4), f"seed {seed}: every shard was written before the crash"
    assert len(after_first) >= shards_before_kill

    # Attempt 2: dies after its last data file and before the manifest.
    second = start_run(spec, "r", {**env, "VLMBATCH_CRASH_AT": "before-manifest"})
    assert second.wait(timeout=600) == 137, log_of(second)
    reap(marker)
    after_second = staged(s3_server, bucket, "r")
    assert set(after_first) <= set(after_second), "a resumed attempt must keep earlier shards"
    assert read_manifest(f"s3://{bucket}/captions/r", StorageConfig(endpoint_url=s3_server)) is None

    # Attempt 3: the same command commits; nothing is left to process.
    third = start_run(spec, "r", env)
    assert third.wait(timeout=600) == 0, log_of(third)
    assert staged(s3_server, bucket, "r") == after_second, "the last attempt had no rows left to write"
    manifest = assert_exactly_once(s3_server, bucket, "r")
    assert manifest.summary.rows_resumed == N
    assert f"{N} from earlier attempts" in log_of(third)


def test_engine_actor_killed_mid_run(s3_server, tiny_models, tmp_path, run_env):
    """A vLLM engine actor's process exits mid-run; Ray restarts it and retries its batches."""
    env, marker = run_env
    bucket = "fault-actor"
    write_demo_corpus(f"s3://{bucket}/corpus/", StorageConfig(endpoint_url=s3_server))
    spec = write_spec(tmp_path / "spec.yaml", fast_spec(s3_server, bucket, str(tiny_models["internvl"]), "vllm"))
    run = start_run(spec, "r", env)
    wait_until(lambda: staged(s3_server, bucket, "r"), 400, "the first shard", run)
    killed = kill_marked(marker, "CaptionActor")
    assert killed, "no engine actor process found to kill"
    assert run.wait(timeout=600) == 0, log_of(run)
    assert_exactly_once(s3_server, bucket, "r")


def test_s3_server_down_for_seconds_mid_run(tiny_models, tmp_path, run_env):
    """The object store goes away for a few seconds mid-run; transient errors are retried."""
    import subprocess

    env, marker = run_env
    port = free_port_block(13)
    s3env = {**env, "VLMBATCH_S3_PORT": str(port), "VLMBATCH_S3_DIR": str(tmp_path / "s3")}
    script = str(ROOT / "infra/local/s3.sh")
    endpoint = subprocess.run([script, "start"], env=s3env, capture_output=True, text=True, check=True).stdout.strip()
    try:
        bucket = "fault-outage"
        write_demo_corpus(f"s3://{bucket}/corpus/", StorageConfig(endpoint_url=endpoint))
        # Long generations: the rest of the run must outlast the outage (with 6 tokens a row it could
        # commit inside the 5 s, and the outage would land on nothing).
        spec = write_spec(tmp_path / "spec.yaml", fast_spec(endpoint, bucket, str(tiny_models["internvl"]), tokens=64))
        run = start_run(spec, "r", {**env, "VLMBATCH_S3_ENDPOINT": endpoint})
        wait_until(lambda: staged(endpoint, bucket, "r"), 300, "the first shard", run)
        subprocess.run([script, "stop"], env=s3env, check=True)
        time.sleep(5)
        assert run.poll() is None, "the run gave up while the store was away"
        subprocess.run([script, "start"], env=s3env, check=True, capture_output=True)
        assert run.wait(timeout=600) == 0, log_of(run)
        assert_exactly_once(endpoint, bucket, "r")
    finally:
        subprocess.run([script, "stop"], env=s3env, check=False)

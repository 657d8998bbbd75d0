"""Nodes lost mid-run on a real multi-node Ray cluster (one machine, ``ray start`` per node).

The cluster: a head that runs nothing (``--num-cpus=0``), a CPU worker, and an engine worker
that alone offers the custom resource the spec's engine actors ask for
(``resources.engine_resources``). One caption run loses the CPU worker, then the engine worker
(the node holding the only engine): the run waits, a new engine node joins, Ray restarts the
engine actor there, and the run commits every row exactly once with no manual step. Then the
head is lost: Ray has no recovery for that without GCS fault tolerance (an external Redis), so
the driver fails; the same command against a new cluster resumes the run to every row once.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from jobs.demo_corpus import write_demo_corpus
from schemas.spec import StorageConfig
from tests.conftest import RAY_CLUSTER_GROUP, LocalRayCluster
from tests.integration.faults import assert_exactly_once, log_of, staged, start_run, wait_until
from tests.integration.helpers import fast_spec, write_spec

pytestmark = pytest.mark.slow

#: Nodes missing for 3 s are dead (Ray's default: 30 s), so the test does not sit and wait.
FAST_FAILURE = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
ENGINE = {"engine_node": 1}


def cluster_spec(endpoint: str, bucket: str, model: str) -> dict:
    """The fault tests' job, engines pinned to the nodes offering ``ENGINE``; the cluster comes from RAY_ADDRESS.

    Batches and shards of 2 rows and 24 tokens: the engine has work left when its node is lost.
    """
    spec = fast_spec(endpoint, bucket, model, tokens=24)
    spec["resources"].update(engine_resources=ENGINE, batch_size=2, cpu_batch_size=2)
    spec["sink"]["rows_per_file"] = 2
    spec["run"] = {"progress_bars": False}
    return spec


def settled(count, quiet_s: float, limit_s: float) -> int:
    """``count()`` once it has not changed for ``quiet_s`` (fails after ``limit_s``)."""
    deadline, last, since = time.monotonic() + limit_s, count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"shards kept coming for {limit_s:.0f} s with no engine alive")


@pytest.mark.xdist_group(RAY_CLUSTER_GROUP)
def test_worker_nodes_lost_then_head_lost(s3_server, tiny_models, tmp_path, run_env):
    env, _ = run_env
    # Drivers present the cluster's token; a driver whose GCS is gone gives up within seconds.
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_gcs_rpc_server_reconnect_timeout_s": "10"}
    bucket = "nodes"
    write_demo_corpus(f"s3://{bucket}/corpus/", StorageConfig(endpoint_url=s3_server))
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    model = str(tiny_models["internvl"])
    cluster = LocalRayCluster(ray_bin, env, num_cpus=0, system_config=FAST_FAILURE)
    second = None
    try:
        started = cluster.start()
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        cluster.add_node("cpu", 2)
        cluster.add_node("engine-1", 2, ENGINE)
        spec = write_spec(tmp_path / "spec.yaml", cluster_spec(s3_server, bucket, model))

        # 1. Lose the CPU worker after the first shard, then the node holding the only engine.
        run = start_run(spec, "workers", {**env, "RAY_ADDRESS": cluster.address})
        wait_until(lambda: staged(s3_server, bucket, "workers"), 300, "the first shard", run)
        assert cluster.kill_node("cpu"), "no process of the CPU node found to kill"
        first = len(staged(s3_server, bucket, "workers"))
        wait_until(lambda: len(staged(s3_server, bucket, "workers")) > first, 300, "a shard after the loss", run)
        assert cluster.kill_node("engine-1"), "no process of the engine node found to kill"
        at_kill = len(staged(s3_server, bucket, "workers"))
        assert at_kill < 14, f"{at_kill} of 18 shards were out before the engine was lost: nothing left to test"
        # Rows already past the engine drain (how long depends on the machine's load: seconds apart on
        # a loaded machine); the rest wait, because no node offers the engine's resource: the run
        # neither ends nor completes.
        settled(lambda: len(staged(s3_server, bucket, "workers")), quiet_s=5, limit_s=90)
        time.sleep(5)
        assert run.poll() is None, f"the run ended without an engine: {log_of(run)}"
        waiting = len(staged(s3_server, bucket, "workers"))
        assert waiting < 18, "every shard was written with no engine alive"
        cluster.add_node("engine-2", 2, ENGINE)
        assert run.wait(timeout=600) == 0, log_of(run)
        manifest = assert_exactly_once(s3_server, bucket, "workers")
        assert manifest.summary.rows_resumed == 0, "one attempt: the losses were survived inside the run"

        # 2. Lose the head: the driver fails; the same command on a new cluster resumes the run.
        run = start_run(spec, "head", {**env, "RAY_ADDRESS": cluster.address})
        wait_until(lambda: staged(s3_server, bucket, "head"), 300, "the first shard", run)
        cluster.kill_node("head")
        code = run.wait(timeout=180)
        assert code != 0, "the driver survived the loss of the head"
        before = staged(s3_server, bucket, "head")
        assert before, "the shards written before the loss are kept"
        cluster.stop()
        second = LocalRayCluster(ray_bin, env, num_cpus=2, resources=ENGINE)
        started = second.start()
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        rerun = start_run(spec, "head", {**env, "RAY_ADDRESS": second.address})
        assert rerun.wait(timeout=600) == 0, log_of(rerun)
        manifest = assert_exactly_once(s3_server, bucket, "head")
        assert 0 < manifest.summary.rows_resumed < manifest.summary.rows_in
        assert set(before) <= set(staged(s3_server, bucket, "head")), "the resumed attempt kept the earlier shards"
    finally:
        cluster.stop()
        if second is not None:
            second.stop()

"""The demo job end to end: real S3 server, real Ray, vLLM's CPU build, each registered family.

Three ways in, as users take them: the ``vlmbatch run`` command, the Python DAG API (the README's
own blocks, run as written), and ``ray job submit`` to a running cluster. One engine start per
run (about 20-40 s each); the DAG API's run is compared row for row with the command's.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest

from jobs.demo_corpus import write_demo_corpus
from pipeline.commit import read_committed
from schemas import columns as C
from schemas.spec import StorageConfig
from tests.conftest import RAY_CLUSTER_GROUP, ROOT, LocalRayCluster
from tests.integration.helpers import TRACEBACK, check_demo_output, demo_spec, write_spec

pytestmark = pytest.mark.slow


def _env(endpoint: str) -> dict:
    env = {**os.environ, "VLMBATCH_S3_ENDPOINT": endpoint, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def corpus_bucket(s3_server):
    """Buckets holding the demo corpus, one per test, created on demand."""
    made = {}

    def make(bucket: str) -> str:
        if bucket not in made:
            made[bucket] = write_demo_corpus(f"s3://{bucket}/corpus/", StorageConfig(endpoint_url=s3_server))
        return bucket

    return make


@pytest.fixture(scope="module")
def cli_run(s3_server, corpus_bucket, tiny_models, tmp_path_factory):
    """``vlmbatch run`` of the demo job (tiny LLaVA on vLLM) as run id cli-1: (spec path, bucket, process)."""
    bucket = corpus_bucket("demo-cli")
    body = demo_spec(s3_server, bucket, "llava", str(tiny_models["llava"]))
    # The smallest object-store budget the spec takes: fetch and decode are throttled by it,
    # and the run must still finish with every row (no stall, nothing lost).
    body["resources"]["object_store_memory"] = 64 * 2**20
    spec = write_spec(tmp_path_factory.mktemp("cli") / "spec.yaml", body)
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", spec, "--run-id", "cli-1"], cwd=ROOT,
                          env=_env(s3_server), capture_output=True, text=True, timeout=600)
    return spec, bucket, proc


def test_cli_run_llava(s3_server, cli_run):
    spec, bucket, proc = cli_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "committed run cli-1" in proc.stdout and "rows in 36, rows out 36" in proc.stdout
    check_demo_output(s3_server, bucket, "cli-1", "llava")
    # A successful run ends quietly: no engine shutdown traceback (EngineDeadError, resource_tracker KeyError).
    assert TRACEBACK not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-6000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[vlmbatch]")]
    assert lines[0].startswith("[vlmbatch] 0/36 images done") and lines[-1].startswith("[vlmbatch] 36/36 images done")
    assert len(lines) == len(set(lines)), "no progress line printed twice"

    again = subprocess.run([sys.executable, "-m", "jobs.cli", "run", spec, "--run-id", "cli-1"], cwd=ROOT,
                           env=_env(s3_server), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already committed" in again.stderr + again.stdout


def test_readme_dag_blocks_give_the_rows_vlmbatch_run_gives(s3_server, cli_run):
    """The README's two DAG API blocks, run as written (the spec file and run ids substituted)."""
    import ray

    from tests.readme import dag_snippets

    spec_path, bucket, proc = cli_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The first block's run id is the command's: its Run is already committed, so it prints that
    # run's summary, as `vlmbatch run` did; the second block composes the stages by hand and runs.
    first, second = dag_snippets(spec_path, "cli-1")
    second = second.replace('"my-run-2"', '"dag-2"')
    os.environ["VLMBATCH_S3_ENDPOINT"] = s3_server
    scope: dict = {}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(first, scope)  # noqa: S102
            assert not ray.is_initialized(), "a committed run id starts nothing"
            exec(second, scope)  # noqa: S102
    finally:
        ray.shutdown()
    printed = out.getvalue()
    cli_summary = proc.stdout[proc.stdout.index("committed run cli-1"):].splitlines()
    assert printed.startswith("list -> fetch -> decode -> caption -> postcheck\n" + "\n".join(cli_summary[:3]))
    assert "committed run dag-2: " in printed and cli_summary[2] in printed, "the summary the command prints"
    storage = StorageConfig(endpoint_url=s3_server)
    by_source = {}
    for run_id in ("cli-1", "dag-2"):
        rows = read_committed(f"s3://{bucket}/captions/{run_id}", storage).to_pylist()
        by_source[run_id] = {r[C.SOURCE]: (r[C.ID], r[C.STATUS], r[C.CAPTION], r[C.PROMPT]) for r in rows}
    assert by_source["dag-2"] == by_source["cli-1"], "the same rows as `vlmbatch run`, caption for caption"
    check_demo_output(s3_server, bucket, "dag-2", "llava")


@pytest.mark.xdist_group(RAY_CLUSTER_GROUP)
def test_ray_job_submit_to_local_cluster(s3_server, corpus_bucket, tiny_models, tmp_path):
    """`ray job submit --working-dir . -- python -m jobs.caption --spec ...` against `ray start --head`."""
    corpus_bucket("vlmbatch-demo")  # the bucket demo.yaml reads
    spec_path = ROOT / "jobs" / "specs" / "demo.yaml"
    env = _env(s3_server)
    env["VLMBATCH_HOME"] = str(tmp_path / "home")
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    (models / "tiny-internvl").symlink_to(tiny_models["internvl"])
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    cluster = LocalRayCluster(ray_bin, env)
    try:
        started = cluster.start()
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        entrypoint = ["python", "-m", "jobs.caption", "--spec", str(spec_path.relative_to(ROOT)), "--run-id", "job-1"]
        returncode, log = cluster.submit(entrypoint, ROOT, env)
        assert returncode == 0, log[-6000:]
        assert TRACEBACK not in log, log[-6000:]
    finally:
        cluster.stop()
    # demo.yaml reads s3://vlmbatch-demo/: the cluster saw the test server through VLMBATCH_S3_ENDPOINT.
    check_demo_output(s3_server, "vlmbatch-demo", "job-1", "internvl")

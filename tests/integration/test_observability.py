"""What the operator sees, end to end: a `ray job submit` run on a local cluster with the real S3 server.

One run (the transformers reference engine, which starts in seconds with the tiny model) and
every view of it: the running count and Ray Data's progress output in the job log, the run's
metrics on the node's Prometheus endpoint, the committed report (JSON and a page Chromium
renders), and `vlmbatch status` / `vlmbatch report` reading it back from object storage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import urllib.request

import pytest

from jobs.cli import main as cli_main
from jobs.demo_corpus import write_demo_corpus
from schemas.spec import StorageConfig
from tests import browser
from tests.conftest import RAY_CLUSTER_GROUP, ROOT, LocalRayCluster, free_port
from tests.integration.helpers import TRACEBACK, demo_spec, write_spec
from tests.unit.test_report import _figures

pytestmark = pytest.mark.slow
RUN_ID = "obs-1"


def _scrape(port: int, want: str, timeout_s: float = 90) -> dict[str, float]:
    """vlmbatch metric samples (name{labels} -> value) once ``want`` shows up."""
    deadline = time.monotonic() + timeout_s
    samples: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            body = ""
        samples = {}
        for line in body.splitlines():
            if line.startswith("ray_vlmbatch_") and f'run_id="{RUN_ID}"' in line:
                name = line.split("{", 1)[0]
                status = re.search(r'status="([^"]+)"', line)
                samples[name + (f"[{status.group(1)}]" if status else "")] = float(line.rsplit(" ", 1)[1])
        if want in samples:
            return samples
        time.sleep(3)
    return samples


@pytest.mark.xdist_group(RAY_CLUSTER_GROUP)
def test_progress_metrics_report_status(s3_server, tiny_models, tmp_path, capsys):
    bucket = "observe"
    write_demo_corpus(f"s3://{bucket}/corpus/", StorageConfig(endpoint_url=s3_server))
    spec = demo_spec(s3_server, bucket, "internvl", str(tiny_models["internvl"]), name="observe")
    spec["model"]["engine"]["kind"] = "transformers"
    spec["run"]["progress_bars"] = True
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    metrics_port = free_port()
    cluster = LocalRayCluster(ray_bin, env, extra_args=(f"--metrics-export-port={metrics_port}",))
    try:
        started = cluster.start()
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        returncode, log = cluster.submit(["python", "-m", "jobs.caption", "--spec", spec_path, "--run-id", RUN_ID],
                                         ROOT, env)
        if os.environ.get("VLMBATCH_KEEP_JOB_LOG"):
            with open(os.environ["VLMBATCH_KEEP_JOB_LOG"], "w") as f:
                f.write(log)
        assert returncode == 0, log[-4000:]
        assert TRACEBACK not in log, log[-6000:]
        metrics = _scrape(metrics_port, "ray_vlmbatch_images_failed_total[not_an_image]")
    finally:
        cluster.stop()

    # Live progress in the job's log: the running count, and Ray Data's per-operator progress.
    counts = re.findall(r"\[vlmbatch\] (\d+)/36 images done \((\d+) failed\), [0-9.]+ images/s, [0-9.]+ tokens/s", log)
    assert counts and counts[-1] == ("36", "1"), log[-3000:]
    # Under Ray Jobs stdout is not a terminal: Ray Data logs each operator's progress instead of drawing bars.
    assert re.search(r"MapBatches\(CaptionActor\): \d+/\d+", log), "per-operator progress in the job log"

    # Metrics through Ray's metrics API, on the node's Prometheus endpoint.
    assert metrics.get("ray_vlmbatch_images_processed_total") == 36, metrics
    assert metrics.get("ray_vlmbatch_images_failed_total[not_an_image]") == 1, metrics
    assert metrics.get("ray_vlmbatch_generated_tokens_total", 0) >= 35 * 4, metrics
    assert "ray_vlmbatch_engine_queue_depth" in metrics, metrics

    # status and report read the committed state back from object storage.
    root = f"s3://{bucket}/captions/{RUN_ID}"
    capsys.readouterr()
    assert cli_main(["status", root, "--endpoint-url", s3_server]) == 0
    assert "rows in 36, rows out 36 (not_an_image=1, ok=35)" in capsys.readouterr().out
    html, js = tmp_path / "report.html", tmp_path / "report.json"
    assert cli_main(["report", root, "--endpoint-url", s3_server, "--html", str(html), "--json", str(js)]) == 0
    report = json.loads(js.read_text())
    figs = report["figures"]
    assert figs["status_breakdown"] == {"ok": 35, "not_an_image": 1}
    assert figs["generated_length_histogram"]["rows"] == 35
    assert sum(p["images_per_s"] for p in figs["throughput"]) > 0
    assert 0 < figs["startup_s"] < report["summary"]["wall_s"] and figs["throughput"][0]["t_s"] > figs["startup_s"]
    stages = {s["stage"] for s in figs["stage_time"]}
    assert any("CaptionActor" in s for s in stages) and any("ShardWriter" in s for s in stages), stages

    # The page as a person sees it.
    found = _figures(browser.dump_dom(str(html)))
    assert set(found) == {"throughput", "status", "lengths", "stages"}
    assert found["status"]["bars"] == 2 and found["stages"]["bars"] >= 3 and found["lengths"]["bars"] >= 1
    assert found["throughput"]["points"] >= 1 and not any(f["empty"] for f in found.values())
    png = tmp_path / "report.png"
    browser.screenshot(str(html), str(png))
    if os.environ.get("VLMBATCH_KEEP_SCREENSHOT"):
        shutil.copy(png, os.environ["VLMBATCH_KEEP_SCREENSHOT"])

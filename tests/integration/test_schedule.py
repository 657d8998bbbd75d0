"""Scheduled incremental runs against the real S3 server: only new images, never overlapping,
a new dataset version when the model or prompt changes."""

from __future__ import annotations

import pytest
import s3fs

from jobs.specfile import parse_spec
from pipeline.schedule import Schedule
from schemas import columns as C
from tests import corpus
from tests.integration.faults import log_of, start_run
from tests.integration.helpers import fast_spec, write_spec

pytestmark = pytest.mark.slow


def add_images(endpoint: str, bucket: str, start: int, count: int) -> None:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for i in range(start, start + count):
        fs.pipe_file(f"{bucket}/corpus/img-{i:03d}.png", corpus.gradient(64 + i, 48 + i))


def scheduled_spec(endpoint: str, bucket: str, model_dir: str, prompt: str = "Describe this image in detail.") -> dict:
    spec = fast_spec(endpoint, bucket, model_dir)
    spec["schedule"] = {"state_uri": f"s3://{bucket}/schedules/nightly/"}
    spec["caption"] = {"prompt": prompt}
    return spec


def run_scheduled(spec_path: str, env: dict) -> tuple[int, str]:
    proc = start_run(spec_path, "", env)
    rc = proc.wait(timeout=600)
    return rc, log_of(proc)


def test_incremental_runs_process_only_new_images(s3_server, tiny_models, tmp_path, run_env):
    env, _ = run_env
    bucket = "sched"
    add_images(s3_server, bucket, 0, 6)
    spec_dict = scheduled_spec(s3_server, bucket, str(tiny_models["internvl"]))
    spec_path = write_spec(tmp_path / "spec.yaml", spec_dict)

    rc, out = run_scheduled(spec_path, env)
    assert rc == 0, out
    assert "0 earlier runs, 6 new rows" in out

    add_images(s3_server, bucket, 6, 4)
    rc, out = run_scheduled(spec_path, env)
    assert rc == 0, out
    assert "1 earlier runs, 4 new rows" in out

    rc, out = run_scheduled(spec_path, env)
    assert rc == 0 and "nothing new to process" in out, out

    schedule = Schedule(parse_spec(spec_dict))
    data = schedule.dataset()
    sources = data.column(C.SOURCE).to_pylist()
    assert sorted(sources) == [f"s3://{bucket}/corpus/img-{i:03d}.png" for i in range(10)]
    assert len(set(data.column(C.ID).to_pylist())) == 10, "the union has no duplicates"
    assert set(data.column(C.STATUS).to_pylist()) == {"ok"}

    # Two runs of the schedule at once: one proceeds, the other refuses.
    add_images(s3_server, bucket, 10, 3)
    a, b = start_run(spec_path, "", env), start_run(spec_path, "", env)
    results = sorted([(a.wait(timeout=600), log_of(a)), (b.wait(timeout=600), log_of(b))])
    assert [rc for rc, _ in results] == [0, 3], results
    assert "refusing to overlap" in results[1][1]
    assert "3 new rows" in results[0][1]
    assert schedule.dataset().num_rows == 13

    # A different prompt is a new dataset version: everything is captioned again, apart.
    new_spec = scheduled_spec(s3_server, bucket, str(tiny_models["internvl"]), prompt="Describe it briefly.")
    new_path = write_spec(tmp_path / "spec2.yaml", new_spec)
    rc, out = run_scheduled(new_path, env)
    assert rc == 0, out
    assert "0 earlier runs, 13 new rows" in out
    new_version = Schedule(parse_spec(new_spec))
    assert new_version.version != schedule.version
    assert set(new_version.dataset().column(C.PROMPT).to_pylist()) != set(data.column(C.PROMPT).to_pylist())
    assert schedule.dataset().num_rows == 13, "the earlier version is untouched"

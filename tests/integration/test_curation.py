"""Dedup before captioning, end to end against the real S3 server: a schedule of two increments over the
demo photographs with planted exact and near duplicates; precision and recall of ``duplicate`` on the
committed rows; duplicates never captioned; the export leaves them out and counts them."""

from __future__ import annotations

from collections import Counter

import pytest
import s3fs

from jobs.demo_corpus import planted_duplicates
from jobs.specfile import parse_spec
from pipeline.commit import read_committed
from pipeline.export.llava import export_llava
from pipeline.schedule import Schedule
from schemas import columns as C
from schemas.spec import StorageConfig
from tests.curation import groups_of, precision_recall
from tests.integration.faults import log_of, start_run
from tests.integration.helpers import fast_spec, write_spec

pytestmark = pytest.mark.slow


def upload(endpoint: str, bucket: str, files: dict[str, bytes]) -> None:
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for name, data in files.items():
        fs.pipe_file(f"{bucket}/corpus/{name}", data)


def test_dedup_over_two_schedule_increments(s3_server, tiny_models, tmp_path, run_env):
    env, _ = run_env
    bucket = "curate"
    files, truth = planted_duplicates()
    originals = {n: d for n, d in files.items() if not n.startswith("dups/")}
    upload(s3_server, bucket, originals)
    spec = fast_spec(s3_server, bucket, str(tiny_models["internvl"]))
    spec["source"]["extensions"] = [".jpg", ".png", ".gif"]
    spec["caption"] = {"prompts": ["Describe this image in detail."]}  # a dataset build, so it exports
    spec["schedule"] = {"state_uri": f"s3://{bucket}/schedules/curate/"}
    # On 2 CPUs the caption actor (1) and decode tasks (1) take them all: the light embedder asks for none.
    spec["embedding"] = {"kind": "perceptual", "dtype": "float16", "cpus_per_actor": 0}
    spec["dedup"] = {"threshold": 0.85, "cluster_size": 16}
    spec_path = write_spec(tmp_path / "spec.yaml", spec)

    outs = []
    for step in (1, 2):
        if step == 2:
            upload(s3_server, bucket, {n: d for n, d in files.items() if n.startswith("dups/")})
        proc = start_run(spec_path, "", env)
        assert proc.wait(timeout=600) == 0, log_of(proc)
        with open(proc.log_path) as f:  # the whole log: the barrier's line is printed mid-run
            outs.append(f.read())
    assert "dedup: 0 exact and 1 near duplicates" in outs[0], outs[0]  # the stereo pair, within increment 1
    assert "1 earlier increments" in outs[1], outs[1]

    schedule = Schedule(parse_spec(spec))
    data = schedule.dataset()
    prefix = f"s3://{bucket}/corpus/"
    name = {r[C.ID]: r[C.SOURCE][len(prefix):] for r in data.to_pylist()}
    assert sorted(name.values()) == sorted(files), "every listed image once, duplicates included"
    rows = {name[r[C.ID]]: r for r in data.to_pylist()}
    group = groups_of(truth, sorted(n for n in files if not n.startswith("bad/")))
    marked = {n: (name[r[C.DUPLICATE_OF]] if r[C.STATUS] == "duplicate" else None)
              for n, r in rows.items() if n in group}
    precision, recall = precision_recall(marked, group)
    assert (precision, recall) == (1.0, 1.0), sorted((n, d) for n, d in marked.items() if d)
    for n, r in rows.items():
        if r[C.STATUS] == "duplicate":
            assert r[C.CAPTION] is None and r[C.IMAGE_EMBEDDING] is None, "a duplicate is never captioned"
            assert 0.85 <= r[C.DUPLICATE_SIMILARITY] <= 1.0 and "duplicate of" in r[C.ERROR]
        elif n in group:
            assert r[C.STATUS] == "ok" and r[C.CAPTION] and len(r[C.IMAGE_EMBEDDING]) == 63, n
    exact = {n for n, r in rows.items() if r[C.STATUS] == "duplicate" and r[C.DUPLICATE_SIMILARITY] == 1.0
             and "same bytes" in r[C.ERROR]}
    assert exact == {n for n in truth if n.startswith("dups/copy/")}
    assert rows["bad/not-really-a-photo.jpg"][C.STATUS] == "not_an_image"

    # Export of the first increment: only ok rows; the duplicate (the stereo pair's later half) is counted as left out.
    storage = StorageConfig(endpoint_url=s3_server)
    first = schedule.runs()[0]["run_root"]
    statuses = Counter(read_committed(first, storage).column(C.STATUS).to_pylist())
    summary = export_llava(first, str(tmp_path / "out.json"), storage=storage)
    assert summary.skipped["status duplicate"] == statuses["duplicate"] == 1
    assert summary.rows_out == statuses["ok"] == len(originals) - 2
    second = Counter(read_committed(schedule.runs()[1]["run_root"], storage).column(C.STATUS).to_pylist())
    assert second == {"duplicate": len(truth) - 1}, "the second increment's images all duplicate the first's"

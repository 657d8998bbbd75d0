"""Listing, resume and the exactly-once check in tasks, on a local Ray: nothing per row on the driver.

The caption stage is the scale bench's stand-in (no model): what runs is the real source
listing (folders, JSONL byte ranges), the listing parts, the staging scan, the skip join, the
writer's digests and the commit check. One Ray instance for the module.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from bench.scale import standin_stage
from operators.idset import digest_hex, key_digest
from operators.sources import llava as llava_module
from operators.sources.listing import Listing, read_part
from pipeline.commit import CommitError, read_committed
from pipeline.dag import Pipeline
from pipeline.plan import source_for
from pipeline.runner import Run
from schemas import columns as C
from schemas.spec import JobSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False)
    yield
    ray.shutdown()


def spec(source: dict, out: str) -> JobSpec:
    return JobSpec.model_validate({"name": "bk", "source": source, "model": {"family": "internvl", "model_id": "/x"},
                                   "sink": {"uri": out, "rows_per_file": 10}, "resources": {"cpu_batch_size": 8},
                                   "run": {"num_cpus": 2, "progress_bars": False}})


def run(s: JobSpec, run_id: str, **kw) -> Run:
    return Run(s, run_id, pipeline=Pipeline.read(source_for(s)).then(standin_stage(8)), **kw)


def tree(root) -> int:
    """Three levels of folders, images at every level, other files between them; returns the image count."""
    n = 0
    for a in range(3):
        for b in range(5):
            folder = root / f"a{a}" / f"b{b}"
            folder.mkdir(parents=True)
            for k in range(6):
                (folder / f"{k}.jpg").write_bytes(b"x" * k)
                n += 1
            (folder / "notes.txt").write_text("not an image")
        (root / f"a{a}" / "top.png").write_bytes(b"p")
        n += 1
    (root / "root.JPG").write_bytes(b"r")
    return n + 1


def test_prefix_listed_in_tasks_resumed_and_checked(local_ray, tmp_path, monkeypatch):
    import pipeline.runner as runner_module

    bounded = []  # each stream bounds Ray Data's per-block records of its operators (pipeline/block_stats.py)
    real = runner_module.bound_block_stats
    monkeypatch.setattr(runner_module, "bound_block_stats", lambda ds: bounded.append(real(ds)) or bounded[-1])
    n = tree(tmp_path / "corpus")
    s = spec({"uri": str(tmp_path / "corpus")}, str(tmp_path / "out"))
    expected = source_for(s).listing()  # the in-process listing: the oracle
    ids = expected.column(C.ID).to_pylist()
    first = run(s, "r1")
    manifest = first.execute()
    root = tmp_path / "out" / "r1"
    listing = Listing.from_json((root / "listing" / "listing.json").read_text())
    assert listing.rows == n and listing.digest == digest_hex(key_digest(ids)) and len(listing.parts) > 3
    committed = read_committed(str(root))
    assert sorted(committed.column(C.ID).to_pylist()) == sorted(ids) and manifest.summary.rows_in == n

    # A crash leaves half the shards: the next attempt skips their ids (a join in tasks) and commits.
    (root / "manifest.json").unlink()
    shards = sorted((root / "staging").iterdir())
    for path in shards[: len(shards) // 2]:
        path.unlink()
    again = run(s, "r1").execute()
    assert 0 < again.summary.rows_resumed < n and again.summary.rows_out == n
    assert sorted(read_committed(str(root)).column(C.ID).to_pylist()) == sorted(ids)
    assert len(bounded) == 2 and min(bounded) >= 3, f"both streams' operators were bounded, once each ({bounded})"

    # A shard written twice under another name repeats every one of its ids: caught, named, not committed.
    (root / "manifest.json").unlink()
    extra = root / "staging" / "part-000000000000000000000000.parquet"
    shutil.copy(shards[-1], extra)
    with pytest.raises(CommitError, match="not committing") as info:
        run(s, "r1").execute()
    copied = read_part(str(shards[-1]), None).column(C.ID).to_pylist()
    assert f"{len(copied)} rows repeat a key (id)" in str(info.value)
    assert any(i in str(info.value) for i in copied), "the error names repeated ids"
    assert not (root / "manifest.json").exists()
    extra.unlink()

    # Ids done by earlier runs (a schedule's) are dropped in the listing tasks; limit takes the first N.
    skipped = run(s, "r2", skip_ids=ids[::2]).execute()
    left = read_committed(str(tmp_path / "out" / "r2")).column(C.ID).to_pylist()
    assert sorted(left) == sorted(ids[1::2]) and skipped.summary.rows_in == len(ids[1::2])
    limited = spec({"uri": str(tmp_path / "corpus"), "limit": 7}, str(tmp_path / "out"))
    assert run(limited, "r3").execute().summary.rows_out == 7


def test_jsonl_read_in_byte_ranges_equals_the_whole(local_ray, tmp_path, monkeypatch):
    lines = []
    for k in range(240):
        if k % 50 == 7:
            lines.append("{not json")
        elif k % 40 == 3:
            lines.append("")
        elif k % 60 == 9:
            lines.append(json.dumps({"id": 5, "image": f"x/{k}.jpg"}))  # repeats entry 5's id
        else:
            lines.append(json.dumps({"id": k, "image": f"x/{k % 8}.jpg",
                                     "conversations": [{"from": "human", "value": "<image>\nWhat?"}]}))
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(llava_module, "RANGE_BYTES", 700)  # a few kB of manifest: several ranges, several tasks
    s = spec({"uri": str(path), "format": "llava_jsonl"}, str(tmp_path / "out"))
    whole = source_for(s).listing().to_pylist()
    manifest = run(s, "j1").execute()
    root = tmp_path / "out" / "j1"
    listing = Listing.from_json((root / "listing" / "listing.json").read_text())
    rows = [r for p in listing.parts for r in read_part(os.path.join(root, p.path), None).drop_columns(["entry"])
            .to_pylist()]
    assert len(listing.parts) > 3 and rows == whole, "ranges read in tasks give the rows of the whole manifest"
    assert sum(r[C.STATUS] == "invalid_entry" for r in rows) >= 6
    assert manifest.summary.rows_out == len(whole) == len({r[C.ID] for r in whole})


def test_a_stream_lost_to_the_cluster_is_streamed_again_inside_the_run(local_ray, tmp_path, monkeypatch):
    """Ray's error for a block lost with its node, after 3 shards: the run streams the rest again from staging."""
    n = tree(tmp_path / "corpus")
    s = spec({"uri": str(tmp_path / "corpus")}, str(tmp_path / "out"))
    ids = sorted(source_for(s).listing().column(C.ID).to_pylist())
    monkeypatch.setenv("VLMBATCH_CRASH_AT", "lose-stream-after-shards:3")
    manifest = run(s, "lost").execute()
    assert manifest.summary.restreams == 1 and manifest.summary.rows_resumed == 0
    committed = read_committed(str(tmp_path / "out" / "lost"))
    assert sorted(committed.column(C.ID).to_pylist()) == ids and manifest.summary.rows_out == n, "each row once"
    assert "streamed again 1x" in manifest.summary.render()


def test_a_failure_of_the_code_is_not_streamed_again(local_ray, tmp_path):
    """A stage's own exception is the same on every stream: the run ends at once, nothing committed."""
    from operators.base import Stage

    s = spec({"uri": str(tmp_path / "corpus")}, str(tmp_path / "out"))
    tree(tmp_path / "corpus")
    bug = Stage("bug", Broken, needs=(C.ID,), batch_size=8)
    r = Run(s, "bug", pipeline=Pipeline.read(source_for(s)).then(bug).then(standin_stage(8)))
    with pytest.raises(Exception, match="a bug in a stage"):
        r.execute()
    assert r.restreams == 0
    assert not (tmp_path / "out" / "bug" / "manifest.json").exists()


class Broken:
    def __call__(self, table):
        raise ValueError("a bug in a stage: the same on every stream")


def test_ray_datas_per_block_records_are_kept_to_a_sample(local_ray):
    import ray.data

    from pipeline.block_stats import ThinnedList, bound_block_stats

    ds = ray.data.range(3000, override_num_blocks=300).map_batches(lambda b: b, batch_size=None)
    rows = iter(ds.iter_rows())
    first = next(rows)
    assert bound_block_stats(ds, keep=8) >= 1, "the pinned Ray keeps its executor and per-block records here"
    assert sum(1 for _ in rows) + 1 == 3000 and first is not None
    ops = [op for op in ds._current_executor._topology if isinstance(getattr(op, "_output_blocks_stats", None),
                                                                          ThinnedList)]
    assert ops and all(len(op._output_blocks_stats) < 16 for op in ops), "at most 2 * keep records an operator"
    assert max(op._output_blocks_stats.seen for op in ops) == 300, "every block was offered, a sample kept"
    assert "Operator" in ds.stats(), "Ray Data's summary still renders from the sample"

"""Scale: 100k, 1M and 10M entries through the real source, skip, commit and resume; captions cost nothing.

For each size and source the same corpus goes through ``pipeline.runner.Run`` three times, each in
a fresh driver process on a local Ray instance:

- ``fresh``: a new run id, to the commit (listing in tasks, stream, exactly-once check, manifest);
- ``crash``: a new run id whose driver dies (``VLMBATCH_CRASH_AT``) after half of its shards;
- ``resume``: the crashed run id again: staging scanned in tasks, done ids skipped by a join in
  tasks, the rest streamed, checked and committed.

Sources: ``jsonl`` (a LLaVA JSONL manifest of short relative paths, read in byte ranges) and
``prefix`` (a local folder tree of hard links, listed folder by folder). Images repeat (a handful
of files); ids never do. The caption stage is a stand-in that fills the caption columns with
constants, so what is measured is the machinery: the driver's peak RSS and private memory, and
wall seconds of listing, staging scan, stream, check and manifest, per million rows. Target:
driver peak flat (within 10 %) from 1M to 10M rows.

Run: ``python -m bench.run scale [--extra '{"scale_sizes": [100000, 1000000], "scale_sources": ["jsonl"]}']``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from bench.common import CACHE, ROOT, BenchParams, bench_env, loadavg, malloc_in_use_mib, peak_rss_mib, ratio
from operators.base import Resources, Stage
from schemas import columns as C

SIZES = (100_000, 1_000_000, 10_000_000)
SOURCES = ("jsonl", "prefix")
#: Rows per block and per shard: large, so that Ray Data's own per-block bookkeeping on the driver
#: (one record per output block per operator, kept for the dataset's life) stays a small share.
BLOCK_ROWS = 8192
SHARD_ROWS = 16384
IMAGES = 8


class StandInCaption:
    """Stand-in for the caption pool: constant captions, no model (what remains is the machinery's cost)."""

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        return (table.append_column(C.CAPTION, pa.array(["a stand-in caption"] * n))
                .append_column(C.NUM_GENERATED_TOKENS, pa.array([4] * n, pa.int32()))
                .append_column(C.FINISH_REASON, pa.array(["stop"] * n)))


def standin_stage(batch_size: int = BLOCK_ROWS) -> Stage:
    return Stage("stand-in-caption", StandInCaption, needs=(C.ID,),
                 produces=(C.CAPTION, C.NUM_GENERATED_TOKENS, C.FINISH_REASON),
                 resources=Resources(num_cpus=0.5), batch_size=batch_size)


def _tiny_jpegs(directory: Path) -> list[Path]:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(IMAGES):
        path = directory / f"{k}.jpg"
        if not path.exists():
            Image.new("RGB", (8, 8), (30 * k, 255 - 30 * k, 90)).save(path, format="JPEG")
        paths.append(path)
    return paths


def make_jsonl(n: int) -> Path:
    """A JSONL manifest of ``n`` entries ``{"id": k, "image": "i/<k % 8>.jpg"}`` (built once)."""
    root = CACHE / "scale"
    path = root / f"manifest-{n}.jsonl"
    if path.exists():
        return path
    _tiny_jpegs(root / "i")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for start in range(0, n, 100_000):
            stop = min(n, start + 100_000)
            f.write("".join(f'{{"id":{k},"image":"i/{k % IMAGES}.jpg"}}\n' for k in range(start, stop)))
    tmp.replace(path)
    return path


def make_tree(n: int, per_folder: int = 10_000) -> Path:
    """A folder tree of ``n`` hard links to a few tiny JPEGs, ``per_folder`` a folder (built once).

    Every 40 folders link to their own copies of the JPEGs (a file takes at most 65,000 links).
    """
    root = CACHE / "scale" / f"tree-{n}"
    done = root / ".complete"
    if done.exists():
        return root
    for start in range(0, n, per_folder):
        index = start // per_folder
        images = _tiny_jpegs(CACHE / "scale" / f"links-{n}" / f"g{index // 40:04d}")
        folder = root / f"f{index:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(start, min(n, start + per_folder)):
            target = folder / f"{k:08d}.jpg"
            if not target.exists():
                os.link(images[k % IMAGES], target)
    done.write_text("ok\n")
    return root


def _spec(source: str, n: int, out: str, shard_rows: int = SHARD_ROWS, block_rows: int = BLOCK_ROWS):
    from schemas.spec import JobSpec

    if source == "jsonl":
        src = {"uri": str(make_jsonl(n)), "format": "llava_jsonl"}
    else:
        src = {"uri": str(make_tree(n))}
    return JobSpec.model_validate({
        "name": "scale", "source": src, "model": {"family": "internvl", "model_id": "/unused"},
        "sink": {"uri": out, "rows_per_file": shard_rows},
        "resources": {"cpu_batch_size": block_rows},
        "run": {"num_cpus": 2, "progress_bars": False},
    })


def side(params: BenchParams) -> dict:
    """One driver: run (or resume) ``scale_run_id`` over the corpus; figures of this process."""
    from bench.pipeline_side import MemorySampler
    from pipeline.dag import Pipeline
    from pipeline.plan import source_for
    from pipeline.runner import Run

    x = params.extra
    block_rows = int(x.get("scale_block_rows", BLOCK_ROWS))
    spec = _spec(x["scale_source"], int(x["scale_rows"]), x["scale_out"],
                 int(x.get("scale_shard_rows", SHARD_ROWS)), block_rows)
    pipe = Pipeline.read(source_for(spec)).then(standin_stage(block_rows))
    t0 = time.perf_counter()
    run = Run(spec, x["scale_run_id"], pipeline=pipe)
    with MemorySampler(keep_cpu=False) as sampler:
        manifest = run.execute()
    wall = time.perf_counter() - t0
    import ray

    ray.shutdown()
    s = manifest.summary
    return {"rows": s.rows_out, "rows_in": s.rows_in, "rows_resumed": s.rows_resumed, "shards": len(manifest.files),
            "wall_s": round(wall, 3), **run.timings, "driver_peak_rss_mib": peak_rss_mib(),
            "driver_peak_anon_mib": sampler.summary()["driver_peak_anon_mib"],
            "workers_peak_total_rss_mib": sampler.summary()["descendants_peak_total_rss_mib"],
            "driver_heap_in_use_mib": (malloc_in_use_mib() or {}).get("in_use_mib"), "load": loadavg()}


def _with_rates(body: dict, n: int, *phases: str) -> dict:
    """``body`` with listing, commit (check + manifest) and each of ``phases``' seconds per million rows added."""
    body["list_s_per_million"] = per_million(body.get("list_s"), n)
    body["commit_s_per_million"] = per_million((body.get("check_s") or 0) + (body.get("commit_s") or 0), n)
    for phase in phases:
        body[f"{phase}_s_per_million"] = per_million(body.get(f"{phase}_s"), n)
    return body


def _driver(params: BenchParams, env_extra: dict, timeout_s: float = 3 * 3600) -> tuple[int, dict | None, str]:
    """Run :func:`side` in a fresh process; (exit code, its JSON or None, the output tail)."""
    env = {**bench_env(), **env_extra}
    marker = f"VLMBATCH_BENCH_SCALE={os.getpid()}-{time.time_ns()}"
    env["VLMBATCH_BENCH_SCALE"] = marker.split("=", 1)[1]
    proc = subprocess.run([sys.executable, "-m", __name__, "--side", "run", "--params",
                           json.dumps(dataclasses.asdict(params))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    _reap(marker)  # a driver that died leaves its local Ray behind
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, json.loads(last[-1]) if last and proc.returncode == 0 else None, proc.stderr[-3000:]


def _reap(marker: str) -> None:
    import signal

    from tests.procs import pids_with_env

    for _ in range(20):
        pids = pids_with_env(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)


def per_million(seconds: float | None, rows: int) -> float | None:
    return round(seconds / (rows / 1e6), 3) if seconds is not None and rows else None


def measure(source: str, n: int, out_root: Path, shard_rows: int = SHARD_ROWS, block_rows: int = BLOCK_ROWS,
            resume: bool = True) -> dict:
    """fresh, crash and resume runs of one corpus (``resume=False``: fresh only); their figures."""
    base = BenchParams(extra={"scale_source": source, "scale_rows": n, "scale_out": str(out_root),
                              "scale_shard_rows": shard_rows, "scale_block_rows": block_rows})
    (make_jsonl if source == "jsonl" else make_tree)(n)  # built before any timing
    result: dict = {"source": source, "rows": n, "shard_rows": shard_rows, "block_rows": block_rows}
    fresh = dataclasses.replace(base, extra={**base.extra, "scale_run_id": f"fresh-{source}-{n}"})
    code, body, tail = _driver(fresh, {})
    if body is None:
        raise RuntimeError(f"scale fresh {source} {n} failed (rc {code}):\n{tail}")
    result["fresh"] = _with_rates(body, n)
    if not resume:
        return result
    crash_at = max(1, body["shards"] // 2)
    crashed = dataclasses.replace(base, extra={**base.extra, "scale_run_id": f"resume-{source}-{n}"})
    code, _, tail = _driver(crashed, {"VLMBATCH_CRASH_AT": f"after-shards:{crash_at}"})
    if code != 137:
        raise RuntimeError(f"scale crash run {source} {n} did not crash as asked (rc {code}):\n{tail}")
    code, body, tail = _driver(crashed, {})
    if body is None:
        raise RuntimeError(f"scale resume {source} {n} failed (rc {code}):\n{tail}")
    result["resume"] = _with_rates(body, n, "scan")
    return result


def compare(params: BenchParams, runs: int) -> dict:
    sizes = [int(s) for s in params.extra.get("scale_sizes", SIZES)]
    sources = list(params.extra.get("scale_sources", SOURCES))
    # Driver memory per shard and per block: 1M rows again with more, smaller shards / blocks (fresh runs).
    sweeps = [("shard_rows", int(v)) for v in params.extra.get("scale_shard_sweep", [])]
    sweeps += [("block_rows", int(v)) for v in params.extra.get("scale_block_sweep", [])]
    out_root = Path(tempfile.mkdtemp(prefix="vlmbatch-scale-"))
    results: list[dict] = []
    swept: list[dict] = []

    def fresh_root() -> None:
        shutil.rmtree(out_root, ignore_errors=True)
        out_root.mkdir()

    try:
        for source in sources:
            for n in sizes:
                results.append(measure(source, n, out_root))
                fresh_root()
        for knob, value in sweeps:
            swept.append(measure("jsonl", 1_000_000, out_root, resume=False, **{knob: value}))
            fresh_root()
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    ratios: dict = {}
    for source in sources:
        by = {r["rows"]: r for r in results if r["source"] == source}
        lo, hi = min(by), max(by)
        for name in ("fresh", "resume"):
            ratios[f"{source}_{name}_driver_peak_rss_{hi}_over_{lo}"] = ratio(by[hi][name]["driver_peak_rss_mib"],
                                                                            by[lo][name]["driver_peak_rss_mib"])
        if 1_000_000 in by and hi > 1_000_000:
            for name in ("fresh", "resume"):
                for field in ("driver_peak_rss_mib", "driver_peak_anon_mib"):
                    ratios[f"{source}_{name}_{field[:-4]}_{hi}_over_1000000"] = ratio(by[hi][name][field],
                                                                                      by[1_000_000][name][field])
    return {"runs_per_side": 1,
            "params": {"sizes": sizes, "sources": sources, "block_rows": BLOCK_ROWS, "shard_rows": SHARD_ROWS,
                       "images": IMAGES},
            "runs": results, "sweeps": swept, "ratios": ratios,
            "targets": {k: "<= 1.10 (flat)" for k in ratios}}


if __name__ == "__main__":
    from bench.common import side_main

    side_main({"run": side})

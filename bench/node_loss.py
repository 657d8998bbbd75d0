"""Node loss: the same caption run on a multi-node Ray cluster with no loss, a worker lost, an engine node lost.

One ``ray start`` cluster on this machine: a head that runs nothing, a CPU worker, and an engine
worker that alone offers the custom resource the engine actors ask for. Each scenario is
``vlmbatch run`` (a driver process joining the cluster) over the bench corpus:

- ``baseline``: nothing is lost;
- ``worker_lost``: after the first shard the CPU worker is killed (raylet, object store, every
  worker process) and a fresh one joins at once (a replaced spot node);
- ``engine_lost``: after the first shard the node holding the only engine is killed and a fresh
  engine node joins at once; Ray restarts the engine actor there (the model loads again).

Reported per scenario: images committed, lost (listed but not committed) and duplicated
(committed more than once), and the extra wall seconds over the baseline of the same round.
Rounds alternate the scenario order.

Run: ``python -m bench.run node_loss [--runs N] [--num-images N] [--engine vllm|transformers]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import ROOT, BenchParams, bench_env, loadavg, make_corpus, median
from bench.pipeline_side import job_spec

SCENARIOS = ("baseline", "worker_lost", "engine_lost")
ENGINE = {"engine_node": 1}
FAST_FAILURE = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}


def _staged(run_root: Path) -> int:
    try:
        return len(os.listdir(run_root / "staging"))
    except FileNotFoundError:
        return 0


def _committed(run_root: str, corpus: Path) -> dict:
    from pipeline.commit import read_committed
    from schemas import columns as C

    table = read_committed(run_root)
    sources = table.column(C.SOURCE).to_pylist()
    listed = {str(p) for p in sorted(corpus.glob("*.jpg"))}
    return {"images": len(sources), "lost": len(listed - set(sources)), "duplicated": len(sources) - len(set(sources))}


def scenario(name: str, cluster, nodes: dict[str, str], spec_path: str, sink: Path, corpus: Path, run_id: str,
             env: dict) -> dict:
    """One driver run of ``name``; kills and replaces a node after the first shard where asked.

    ``nodes`` maps a role (``cpu``, ``engine``) to the name of the node that has it now.
    """
    log = open(sink / f"{run_id}.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", spec_path, "--run-id", run_id], cwd=ROOT,
                            env={**env, "RAY_ADDRESS": cluster.address}, stdout=log, stderr=subprocess.STDOUT)
    event: dict = {}
    if name != "baseline":
        node = "cpu" if name == "worker_lost" else "engine"
        while _staged(sink / run_id) == 0 and proc.poll() is None:
            time.sleep(0.2)
        event["killed_at_s"] = round(time.perf_counter() - t0, 2)
        # How far the run was when the node went: a loss after the last shard would prove nothing.
        event["shards_staged_at_kill"] = _staged(sink / run_id)
        cluster.kill_node(nodes[node])
        fresh = f"{node}-{time.monotonic_ns()}"
        cluster.add_node(fresh, 2, ENGINE if node == "engine" else None)
        nodes[node] = fresh
        event["replaced_at_s"] = round(time.perf_counter() - t0, 2)
    code = proc.wait(timeout=3600)
    wall = time.perf_counter() - t0
    log.close()
    if code != 0:
        raise RuntimeError(f"node_loss {name} failed (rc {code}): {(sink / f'{run_id}.log').read_text()[-3000:]}")
    return {"scenario": name, "wall_s": round(wall, 3), **event, "shards": _staged(sink / run_id),
            **_committed(str(sink / run_id), corpus), "load_after": loadavg()}


def compare(params: BenchParams, runs: int) -> dict:
    from tests.conftest import LocalRayCluster

    corpus = make_corpus(params.num_images, params.image_side)
    sink = Path(tempfile.mkdtemp(prefix="vlmbatch-node-loss-"))
    spec = job_spec(params, str(corpus), str(sink)).model_dump(mode="json")
    spec["resources"]["engine_resources"] = ENGINE
    spec["resources"]["cpu_batch_size"] = min(spec["resources"]["cpu_batch_size"], 8)
    spec["sink"]["rows_per_file"] = max(4, params.num_images // 8)  # several shards: a loss lands mid-run
    spec["run"] = {"progress_bars": False}
    spec_path = sink / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = {**bench_env(), "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    cluster = LocalRayCluster(os.path.join(os.path.dirname(sys.executable), "ray"), env, num_cpus=0,
                              system_config=FAST_FAILURE)
    results: dict[str, list[dict]] = {s: [] for s in SCENARIOS}
    try:
        started = cluster.start()
        if started.returncode != 0:
            raise RuntimeError(f"the head did not start: {started.stderr[-2000:]}")
        cluster.add_node("cpu", 2)
        cluster.add_node("engine", 2, ENGINE)
        nodes = {"cpu": "cpu", "engine": "engine"}
        for r in range(runs):
            for name in SCENARIOS if r % 2 == 0 else tuple(reversed(SCENARIOS)):
                results[name].append(scenario(name, cluster, nodes, str(spec_path), sink, corpus, f"{name}-{r}",
                                              env))
    finally:
        cluster.stop()
        shutil.rmtree(sink, ignore_errors=True)
    base = median([r["wall_s"] for r in results["baseline"]])
    med = {name: {"wall_s": median([r["wall_s"] for r in rs]), "images": rs[0]["images"],
                  "lost": max(r["lost"] for r in rs), "duplicated": max(r["duplicated"] for r in rs),
                  "extra_wall_s": round(median([r["wall_s"] for r in rs]) - base, 3)} for name, rs in results.items()}
    ratios = {f"{name}_extra_wall_s": med[name]["extra_wall_s"] for name in SCENARIOS[1:]}
    ratios.update({f"{name}_lost": med[name]["lost"] for name in SCENARIOS[1:]})
    ratios.update({f"{name}_duplicated": med[name]["duplicated"] for name in SCENARIOS[1:]})
    return {"params": {**params.__dict__, "images": params.num_images}, "runs": results, "medians": med,
            "ratios": ratios, "targets": {k: "0" for k in ratios if not k.endswith("wall_s")}}

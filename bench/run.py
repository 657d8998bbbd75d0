"""Run benchmarks and write ``bench/results/<name>-<date>.json`` (machine, versions, runs, medians, ratios).

Usage::

    python -m bench.run                                  # all comparisons, 3 runs each, tiny InternVL
    python -m bench.run overhead vs_ray_llm --runs 5
    python -m bench.run overhead --num-images 8 --runs 1 --results-dir /tmp/r   # a smoke run
    python -m bench.run vs_sharegpt4v --family share-captioner --num-images 16 --max-tokens 16
    # GPU machine, full-size shapes with random weights (no download of weights needed, config only):
    python -m bench.run overhead vs_ray_llm vs_transformers --model-id shape:internvl2-8b \
        --load-format dummy --dtype bfloat16 --gpus-per-engine 1 --num-cpus 16 --max-num-seqs 256 --batch-size 64
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import typing
from pathlib import Path

from bench.common import RESULTS, BenchParams, loadavg, write_result

NAMES = ("overhead", "vs_ray_llm", "vs_transformers", "preprocess", "growth", "vs_sharegpt4v", "curation", "plora",
         "engine_cpu", "scale", "node_loss")
#: What runs when no name is given (``scale`` goes to 10M rows, an hour or more; ``node_loss`` starts a
#: multi-node cluster: name them to run them).
DEFAULT = NAMES[:9]


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", choices=[*NAMES, []], help="comparisons to run (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side; medians are reported")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--extra", type=json.loads, default={},
                        help='JSON of per-bench knobs: {"growth_base": 8, "growth_scales": [1, 4, 16], '
                             '"preprocess_images": 128}')
    defaults, hints = BenchParams(), typing.get_type_hints(BenchParams)
    for name in ("family", "model_id", "load_format", "dtype", "num_images", "image_side", "max_tokens",
                 "max_model_len", "max_num_seqs", "batch_size", "batches_in_flight", "cpu_batch_size",
                 "object_store_memory",
                 "num_cpus", "gpus_per_engine", "engine", "cpu_prepare"):
        # The field's own type; for an optional field (``int | None``), the type that is not None.
        kind = next(t for t in (typing.get_args(hints[name]) or (hints[name],)) if t is not type(None))
        if kind is bool:
            kind = _flag
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name), dest=name)
    args = parser.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k in BenchParams.__dataclass_fields__}
    params = BenchParams(**fields)
    for name in args.names or DEFAULT:
        module = importlib.import_module(f"bench.{name}")
        start_load, t0 = loadavg(), time.perf_counter()
        payload = module.compare(params, args.runs)
        # A bench that runs each case a fixed number of times says so itself (scale: once per size and source).
        payload.setdefault("runs_per_side", args.runs)
        payload.update(bench_wall_s=round(time.perf_counter() - t0, 1),
                       load_start=start_load, load_end=loadavg())
        path = write_result(name, payload, args.results_dir)
        print(json.dumps({"name": name, "ratios": payload.get("ratios"), "result": str(path)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

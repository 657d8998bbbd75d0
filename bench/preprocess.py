"""Comparison 4: vlmbatch's CPU preprocessing (fetch + decode + normalise) vs a plain Pillow loop, per core.

Three measurements over the same JPEG corpus:

- ``vlmbatch_fn``: the pipeline's own batch functions (``FetchBatch`` then ``DecodeBatch``: bytes
  through fsspec, header bomb check, EXIF upright, RGB, size cap, raw pixels out) in a pool of
  1 and 2 worker processes;
- ``pillow``: the loop anyone writes (``Image.open``, ``exif_transpose``, ``convert('RGB')``,
  ``thumbnail``, ``tobytes``) in the same pools;
- ``ray_data``: the pipeline's list -> fetch -> decode stages on Ray Data with 1 and 2 CPUs,
  streamed to the driver and counted (Ray's scheduling and object store included).

Tiling (InternVL's dynamic 448 tiles) is not a CPU-stage step in vlmbatch: the engine's processor
does it, on both vlmbatch and the peers, so it is not measured here.

Run: ``python -m bench.run preprocess [--runs N]``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor

from bench.common import BenchParams, corpus_files, loadavg, make_corpus, median, ratio, run_side, side_main


def _images(params: BenchParams) -> int:
    return int(params.extra.get("preprocess_images", max(256, params.num_images)))


def _max_side(params: BenchParams) -> int:
    from operators.vlm.registry import get_family

    # What the pipeline decodes at when the spec sets no cap: the family's need.
    return get_family(params.family).max_side


def _warm(root: str, paths: list[str], max_side: int) -> None:
    # Pool initializer: both sides' imports (numpy, pyarrow, pydantic, Pillow plugins) are paid here,
    # before the clock starts, in every worker.
    _vlmbatch_chunk((root, paths, max_side))
    _pillow_chunk((root, paths, max_side))


def _vlmbatch_chunk(args: tuple[str, list[str], int]) -> int:
    import pyarrow as pa

    from operators.decode import DecodeBatch
    from operators.fetch import FetchBatch
    from operators.ids import location_id
    from schemas import columns as C
    from schemas.spec import DecodeConfig, SourceConfig
    from schemas.status import Status

    root, paths, max_side = args
    table = pa.table({C.ID: [location_id(p) for p in paths], C.SOURCE: paths,
                      C.NUM_BYTES: pa.nulls(len(paths), pa.int64()), C.STATUS: [Status.OK.value] * len(paths),
                      C.ERROR: pa.nulls(len(paths), pa.string())})
    decode = DecodeConfig()
    out = DecodeBatch(decode, max_side)(FetchBatch(SourceConfig(uri=root), decode)(table))
    return sum(s == Status.OK.value for s in out.column(C.STATUS).to_pylist())


def _pillow_chunk(args: tuple[str, list[str], int]) -> int:
    from PIL import Image, ImageOps

    _, paths, max_side = args
    done = 0
    for path in paths:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            done += len(im.tobytes()) > 0
    return done


def _pool_rate(fn, root: str, paths: list[str], max_side: int, workers: int, chunk: int) -> float:
    chunks = [(root, paths[i:i + chunk], max_side) for i in range(0, len(paths), chunk)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_warm,
                             initargs=(root, paths[:2], max_side)) as pool:
        list(pool.map(time.sleep, [0.5] * workers))  # every worker up and warmed
        t0 = time.perf_counter()
        done = sum(pool.map(fn, chunks))
        wall = time.perf_counter() - t0
    if done != len(paths):
        raise RuntimeError(f"{fn.__name__}: {done} of {len(paths)} images decoded")
    return len(paths) / wall


def ray_data_side(params: BenchParams) -> dict:
    """list -> fetch -> decode on Ray Data with ``params.num_cpus`` CPUs, streamed and counted."""
    import ray

    from operators.decode import decode_stage
    from operators.fetch import fetch_stage
    from operators.sources.prefix import PrefixSource
    from pipeline.runner import configure_data_context, init_ray
    from schemas.spec import DecodeConfig, RunConfig, SourceConfig

    root = make_corpus(_images(params), params.image_side)
    run = RunConfig(num_cpus=params.num_cpus, progress_bars=False)
    init_ray(run)
    configure_data_context(run)
    try:
        b = params.cpu_batch_size

        def stages(limit: int | None):
            source = SourceConfig(uri=str(root), limit=limit)
            ds = PrefixSource(source, rows_per_block=b).read()
            ds = fetch_stage(source, DecodeConfig(), batch_size=b).apply(ds)
            return decode_stage(DecodeConfig(), max_side=_max_side(params), batch_size=b).apply(ds)

        def count(ds) -> int:
            return sum(batch.num_rows for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None))

        count(stages(4 * b))  # warm-up: Ray's worker processes started and imports paid before the clock
        t0 = time.perf_counter()
        n = count(stages(None))
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"side": "ray_data", "num_cpus": params.num_cpus, "images": n, "wall_s": round(wall, 3),
            "images_per_s": round(n / wall, 3)}


SIDES = {"ray_data": ray_data_side}


def compare(params: BenchParams, runs: int) -> dict:
    root = make_corpus(_images(params), params.image_side)
    paths = [str(p) for p in corpus_files(root)]
    max_side = _max_side(params)
    results: dict[str, list[dict]] = {"vlmbatch_fn": [], "pillow": [], "ray_data": []}
    for run in range(runs):
        for workers in (1, 2):
            load = loadavg()
            pair = (("vlmbatch_fn", _vlmbatch_chunk), ("pillow", _pillow_chunk))
            for name, fn in pair if run % 2 == 0 else pair[::-1]:
                rate = _pool_rate(fn, str(root), paths, max_side, workers, params.cpu_batch_size)
                results[name].append({"workers": workers, "images_per_s": round(rate, 3), "load_before": load})
            side = run_side(__name__, "ray_data", dataclasses.replace(params, num_cpus=workers))
            results["ray_data"].append({**side, "workers": workers, "load_before": load})
    med = {name: {f"{w}_cores": median([r["images_per_s"] for r in rs if r["workers"] == w]) for w in (1, 2)}
           for name, rs in results.items()}
    for m in med.values():
        m["per_core_1"] = m["1_cores"]
        m["per_core_2"] = round(m["2_cores"] / 2, 3)
        m["scaling_1_to_2"] = ratio(m["2_cores"], m["1_cores"])
    return {
        "params": {**params.__dict__, "images": len(paths), "max_side": max_side}, "runs": results, "medians": med,
        "ratios": {"vlmbatch_fn_vs_pillow_per_core": ratio(med["vlmbatch_fn"]["1_cores"], med["pillow"]["1_cores"]),
                   "ray_data_vs_pillow_per_core_1": ratio(med["ray_data"]["1_cores"], med["pillow"]["1_cores"]),
                   "ray_data_vs_pillow_2_cores": ratio(med["ray_data"]["2_cores"], med["pillow"]["2_cores"]),
                   "vlmbatch_fn_scaling_1_to_2": med["vlmbatch_fn"]["scaling_1_to_2"],
                   "ray_data_scaling_1_to_2": med["ray_data"]["scaling_1_to_2"]},
        "targets": {},
    }


if __name__ == "__main__":
    side_main(SIDES)

"""Curation: embedding throughput per CPU core, dedup time and memory as the corpus grows, GPU time saved.

Three figures, each side in its own process (``python -m bench.curation --side S --arg JSON``):

- **embed**: images/s on one core (``torch.set_num_threads(1)``) of the embedding stage's actor
  (pixels in rows -> processor -> model -> float16 column) against the plain transformers loop
  (processor + ``get_image_features`` on the same images, the peer), for CLIP ViT-B/32's real
  shape with random weights (speed needs no trained weights); and the perceptual embedder.
- **dedup**: the barrier (:func:`pipeline.dedup.barrier.decide`, partitioned exact search) on
  synthetic clustered embeddings with 1 % planted copies at 1x, 10x, 100x a base size: wall time
  and peak RSS, against the brute-force all-pairs search holding every vector (the peer; skipped
  where it would take too long), with the answers checked equal where both ran.
- **gpu_saved**: the planted-duplicate demo corpus (:func:`jobs.demo_corpus.planted_duplicates`)
  deduplicated with the perceptual embedder; the duplicates' share of caption GPU time, priced at the
  InternVL2-8B steady rate measured on an H100 (``bench/results/gpu/overhead-h100-internvl2_8b-*.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, BenchParams, peak_rss_mib

SIDES = ("embed_stage", "embed_loop", "embed_perceptual", "dedup_prepare", "dedup_partitioned", "dedup_brute")


def _side(name: str, arg: dict) -> dict:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "bench.curation", "--side", name, "--arg", json.dumps(arg)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"side {name} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clip_b32(directory: Path) -> Path:
    """CLIP ViT-B/32's shape (transformers' CLIPConfig defaults) with random weights, in the checkpoint layout."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from operators.embed.tiny import make_tiny_clip

    cfg = directory / "config.json"
    if not cfg.exists() or json.loads(cfg.read_text())["vision_config"].get("hidden_size") != 768:
        make_tiny_clip(directory)  # tokenizer and layout
        tok_len = json.loads((directory / "config.json").read_text())["text_config"]["vocab_size"]
        config = CLIPConfig(text_config={"vocab_size": tok_len})
        torch.manual_seed(0)
        CLIPModel(config).eval().save_pretrained(str(directory), safe_serialization=True)
        CLIPImageProcessor().save_pretrained(str(directory))
    return directory


def _images(n: int, side: int = 448):
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (side, side * 4 // 3, 3), dtype=np.uint8) for _ in range(n)]


def run_side(name: str, arg: dict) -> dict:
    """One side, in this process (embedding sides on one core; dedup sides import no torch)."""
    if name.startswith("embed"):
        import torch

        torch.set_num_threads(1)
        images = _images(arg["n"])
        model_dir = _clip_b32(Path(arg["model_dir"]))
        if name == "embed_perceptual":
            from operators.embed.perceptual import PerceptualEmbedder

            e = PerceptualEmbedder()
            t0 = time.perf_counter()
            e.images(images)
            return {"images_per_s": round(len(images) / (time.perf_counter() - t0), 2)}
        if name == "embed_loop":
            from transformers import CLIPImageProcessor, CLIPModel

            model = CLIPModel.from_pretrained(str(model_dir)).eval()
            proc = CLIPImageProcessor.from_pretrained(str(model_dir))
            t0 = time.perf_counter()
            with torch.inference_mode():
                for k in range(0, len(images), 32):
                    out = model.get_image_features(**proc(images=images[k: k + 32], return_tensors="pt"))
                    _ = out.pooler_output.numpy()
            return {"images_per_s": round(len(images) / (time.perf_counter() - t0), 2)}
        from operators.embed.stage import EmbedActor
        from schemas.spec import EmbeddingConfig
        from tests.curation import pixel_rows

        actor = EmbedActor(EmbeddingConfig(kind="clip", model_id=str(model_dir), batch_size=32), 512)
        rows = pixel_rows(images)
        t0 = time.perf_counter()
        actor(rows)
        return {"images_per_s": round(len(images) / (time.perf_counter() - t0), 2)}
    if name == "dedup_prepare":
        return _prepare(arg)
    if name == "dedup_brute":
        # The peer holds every vector (read from the committed index) and compares all pairs.
        import pyarrow as pa

        from pipeline.commit import read_committed
        from pipeline.dedup.index import brute_force, order_keys, unit

        t0 = time.perf_counter()
        t = read_committed(arg["root"], None, columns=[C_ID, C_EMB])
        dim = t.schema.field(C_EMB).type.list_size
        x = unit(pa.concat_arrays(t.column(C_EMB).chunks).flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))
        best, arg_ = brute_force(x, order_keys(t.column(C_ID).to_pylist()), arg["threshold"])
        return {"seconds": round(time.perf_counter() - t0, 2), "found": int((arg_ >= 0).sum()),
                "peak_rss_mib": peak_rss_mib()}
    from pipeline.dedup.barrier import decide
    from schemas.spec import DedupConfig

    t0 = time.perf_counter()
    s = decide(arg["root"], DedupConfig(exact=False, threshold=arg["threshold"], cluster_size=arg["cluster"]), None)
    return {"seconds": round(time.perf_counter() - t0, 2), "found": s.near, "cells": s.cells, "guests": s.guests,
            "largest_cell": s.largest_cell, "peak_rss_mib": peak_rss_mib()}


C_ID, C_EMB = "id", "image_embedding"


def _prepare(arg: dict) -> dict:
    """A committed index pass of ``n`` synthetic rows under ``root``: clustered unit vectors, 1 % near copies."""
    import numpy as np

    from pipeline.dedup.index import unit
    from tests.curation import commit_index, hex_ids, index_rows

    n, dim, root = arg["n"], arg["dim"], arg["root"]
    rng = np.random.default_rng(0)
    # As many groups as the index has cells (``groups_per_cell`` more for a harder case): groups looser than
    # the cells make every row a guest of many cells (the reported ``guests``), which is where the cost grows.
    centres = rng.normal(size=(max(1, n * arg.get("groups_per_cell", 1) // arg["cluster"]), dim))
    ids = hex_ids(n)
    slices = []
    for start in range(0, n, 50_000):  # generated and committed in slices
        m = min(50_000, n - start)
        x = unit(centres[rng.integers(0, len(centres), m)] + 0.7 * rng.normal(size=(m, dim)))
        k = m // 100
        x[m - k:] = unit(x[rng.integers(0, m - k, k)] + rng.normal(scale=0.05, size=(k, dim)) / math.sqrt(dim))
        commit_index(f"{root}.part{start:09d}", index_rows(ids[start: start + m], x, dtype="float16"),
                     rows_per_file=10_000)
        slices.append(f"{root}.part{start:09d}")
    _merge(root, slices, n)
    return {"rows": n}


def _merge(root: str, slices: list[str], n: int) -> None:
    """One committed index at ``root`` from the slices' files and manifests."""
    import shutil

    from pipeline.commit import read_manifest, write_manifest
    from schemas.manifest import FileEntry

    out = Path(root)
    (out / "staging").mkdir(parents=True)
    files, first = [], None
    for d in map(Path, slices):
        m = read_manifest(str(d))
        first = first or m
        for f in m.files:
            name = f"staging/{d.name}-{Path(f.path).name}"
            shutil.move(str(d / f.path), str(out / name))
            files.append(FileEntry(path=name, rows=f.rows))
        shutil.rmtree(d)
    summary = first.summary.model_copy(update={"rows_in": n, "rows_out": n})
    write_manifest(str(out), first.model_copy(update={"files": files, "summary": summary}))


def gpu_saved() -> dict:
    """Duplicates of the planted demo corpus and the caption GPU time they would have cost on an H100."""
    from pipeline.dedup.barrier import decide
    from schemas.spec import DedupConfig
    from tests.curation import commit_index, index_rows, planted_corpus_vectors

    files, truth, names, ids, hashes, vectors = planted_corpus_vectors()
    with tempfile.TemporaryDirectory() as tmp:
        commit_index(tmp, index_rows(ids, vectors, hashes))
        s = decide(tmp, DedupConfig(threshold=0.85, cluster_size=16), None)
    gpu = sorted((RESULTS / "gpu").glob("overhead-h100-internvl2_8b-*.json"))
    rate = json.loads(gpu[-1].read_text())["medians"]["vlmbatch"]["steady_images_per_s"] if gpu else None
    dups = s.exact + s.near
    return {"rows": len(files), "images": len(names), "planted": len(truth), "exact": s.exact, "near": s.near,
            "share_not_captioned": round(dups / len(names), 4),
            "h100_internvl2_8b_captions_per_s": rate,
            "gpu_seconds_saved": round(dups / rate, 3) if rate else None,
            "gpu_seconds_without_dedup": round(len(names) / rate, 3) if rate else None,
            "source": gpu[-1].name if gpu else None}


def compare(params: BenchParams, runs: int) -> dict:
    """The three figures (``params.extra``: ``embed_images``, ``dedup_base``, ``dedup_scales``, ``dedup_dim``)."""
    extra = params.extra
    cache = Path(tempfile.gettempdir()) / "vlmbatch-bench-clip-b32"
    embed = {}
    for side in ("embed_stage", "embed_loop", "embed_perceptual"):
        vals = [_side(side, {"n": extra.get("embed_images", 64), "model_dir": str(cache)})["images_per_s"]
                for _ in range(runs)]
        embed[side] = sorted(vals)[len(vals) // 2]
    base, dim = extra.get("dedup_base", 5000), extra.get("dedup_dim", 256)
    brute_max = extra.get("dedup_brute_max", 60_000)
    dedup = []
    cases = [(scale, 1) for scale in extra.get("dedup_scales", [1, 10, 100])]
    cases += [(scale, 8) for scale in extra.get("dedup_hard_scales", [1, 10])]
    with tempfile.TemporaryDirectory() as tmp:
        for scale, groups in cases:
            arg = {"n": base * scale, "dim": dim, "threshold": 0.9, "cluster": extra.get("dedup_cluster", 5000),
                   "root": f"{tmp}/x{scale}-g{groups}", "groups_per_cell": groups}
            _side("dedup_prepare", arg)
            row = {"scale": scale, "rows": base * scale, "groups_per_cell": groups,
                   "partitioned": _side("dedup_partitioned", arg)}
            if base * scale <= brute_max:
                row["brute_force"] = _side("dedup_brute", arg)
                row["same_answer"] = row["brute_force"]["found"] == row["partitioned"]["found"]
                row["time_ratio"] = round(row["partitioned"]["seconds"] / max(row["brute_force"]["seconds"], 1e-9),
                                          3)
                row["memory_ratio"] = round(row["partitioned"]["peak_rss_mib"] / row["brute_force"]["peak_rss_mib"], 3)
            dedup.append(row)
    saved = gpu_saved()
    return {"params": {**params.__dict__}, "embed_images_per_s_one_core": embed,
            "ratios": {"embed_stage_vs_transformers_loop": round(embed["embed_stage"] / embed["embed_loop"], 3)},
            "dedup": dedup, "gpu_saved": saved}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--side", choices=SIDES, required=True)
    p.add_argument("--arg", type=json.loads, default={})
    a = p.parse_args()
    print(json.dumps(run_side(a.side, a.arg)))

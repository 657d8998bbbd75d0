"""Helpers of the curation tests: a committed index pass written by hand, brute-force references, P/R."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators.embed.stage import vectors_array
from pipeline.commit import write_manifest
from pipeline.dedup.index import brute_force, order_keys, unit
from schemas import columns as C
from schemas.manifest import FileEntry, Manifest, RunSummary


def index_rows(ids: list[str], vectors: np.ndarray | None, hashes: list[str | None] | None = None,
               dtype: str = "float32") -> pa.Table:
    """Rows as the index pass commits them (id, source, status, error, content_hash, image_embedding)."""
    n = len(ids)
    cols = {C.ID: pa.array(ids), C.SOURCE: pa.array([f"mem://{i}" for i in ids]), C.STATUS: pa.array(["ok"] * n),
            C.ERROR: pa.nulls(n, pa.string()), C.CONTENT_HASH: pa.array(hashes or [None] * n, pa.string())}
    if vectors is not None:
        cols[C.IMAGE_EMBEDDING] = vectors_array(list(vectors), C.embedding_type(vectors.shape[1], dtype))
    return pa.table(cols)


def commit_index(root: str, table: pa.Table, rows_per_file: int = 500) -> None:
    """Write ``table`` under ``root`` as a committed run (shards + manifest), as the index pass would."""
    from operators.storage import filesystem

    fs, path = filesystem(root, None)
    fs.makedirs(f"{path}/staging", exist_ok=True)
    files = []
    for k, start in enumerate(range(0, table.num_rows, rows_per_file)):
        part = table.slice(start, rows_per_file)
        buf = io.BytesIO()
        pq.write_table(part, buf)
        name = f"staging/part-{k:05d}.parquet"
        with fs.open(f"{path}/{name}", "wb") as f:
            f.write(buf.getvalue())
        files.append(FileEntry(path=name, rows=part.num_rows))
    summary = RunSummary(rows_in=table.num_rows, rows_out=table.num_rows, by_status={"ok": table.num_rows},
                         wall_s=1, images_per_s=1, prompt_tokens=0, generated_tokens=0, generated_tokens_per_s=0)
    write_manifest(root, Manifest(schema_version="1", record="caption", run_id="index", job="t", spec_hash="x",
                                  spec={}, model_id="m", model_revision=None, engine=None, sampling_hash="s",
                                  code_version="t", created_at="2026-01-01T00:00:00+00:00", files=files,
                                  summary=summary))


def hex_ids(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct vlmbatch-style ids (32 hex digits), not in sorted order."""
    rng = np.random.default_rng(seed)
    return [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, size=(n, 2))]


def reference(ids: list[str], vectors: np.ndarray, threshold: float, earlier: int = 0) -> dict[str, tuple[str, float]]:
    """Brute force of the dedup rule: ``id -> (duplicate_of, similarity)``; the first ``earlier`` rows precede all."""
    keys = order_keys(ids)
    if earlier:
        keys = keys.copy()
        keys[:earlier, 0], keys[:earlier, 1] = 0, np.arange(earlier, dtype=np.uint64)  # an earlier increment first
        keys[earlier:, 0] = np.maximum(keys[earlier:, 0], np.uint64(1))
    best, arg = brute_force(unit(vectors), keys, threshold)
    return {ids[i]: (ids[arg[i]], float(best[i])) for i in range(earlier, len(ids)) if arg[i] >= 0}


def groups_of(truth: dict[str, str], names: list[str]) -> dict[str, int]:
    """Group number of every name: a duplicate and its original (transitively) share one."""
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for dup, orig in truth.items():
        parent[find(dup)] = find(orig)
    roots = sorted({find(n) for n in names})
    return {n: roots.index(find(n)) for n in names}


def precision_recall(marked: dict[str, str | None], group: dict[str, int]) -> tuple[float, float]:
    """``(precision, recall)`` of ``marked`` (row -> the row it duplicates, None if kept) against the groups.

    A duplicate is right when it names a row of its own group; recall counts the rows a perfect
    dedup removes (all but one of each group).
    """
    flagged = [(r, d) for r, d in marked.items() if d is not None]
    correct = sum(1 for r, d in flagged if group[r] == group[d])
    sizes = np.bincount(list(group.values()))
    should = int((sizes[sizes > 0] - 1).sum())
    return (correct / len(flagged) if flagged else 1.0), (correct / should if should else 1.0)


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
SHAPES = ("circle", "square")


def shape_image(colour: str, shape: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A ``colour`` ``shape`` at a random place and size on a grey background (H x W x 3 uint8)."""
    from PIL import Image, ImageDraw

    grey = int(rng.integers(90, 160))
    im = Image.new("RGB", (size, size), (grey, grey, grey))
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    draw = ImageDraw.Draw(im)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return np.asarray(im)


def shape_pairs(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` images with their captions ("a red circle"), classes cycling."""
    rng = np.random.default_rng(seed)
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    picks = [classes[k % len(classes)] for k in range(n)]
    return [shape_image(c, s, rng) for c, s in picks], [f"a {c} {s}" for c, s in picks]


def train_tiny_clip(directory, steps: int = 300, seed: int = 0) -> None:
    """A tiny CLIP (``make_tiny_clip``'s layout) trained on coloured shapes, so its similarities mean something.

    Random weights make image-text similarity noise; this model learns, in a few seconds on a
    CPU, which caption names an image's colour and shape. Deterministic for a seed.
    """
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from operators.embed.tiny import make_tiny_clip

    make_tiny_clip(directory, seed=seed)
    torch.manual_seed(seed)
    model = CLIPModel.from_pretrained(str(directory)).train()
    processor = CLIPImageProcessor.from_pretrained(str(directory))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    images, captions = shape_pairs(512, seed=seed + 100)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randperm(len(images), generator=gen)[:64]
        out = model(input_ids=tokens["input_ids"][batch], attention_mask=tokens["attention_mask"][batch],
                    pixel_values=pixels[batch], return_loss=True)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    model.eval().save_pretrained(str(directory), safe_serialization=True)


def pixel_rows(images: list[np.ndarray], statuses: list[str] | None = None) -> pa.Table:
    """Decoded rows as the decode stage leaves them."""
    n = len(images)
    return pa.table({
        C.ID: [f"{k:032x}" for k in range(n)], C.STATUS: statuses or ["ok"] * n, C.ERROR: pa.nulls(n, pa.string()),
        C.PIXELS: pa.array([np.ascontiguousarray(im).tobytes() for im in images], pa.binary()),
        C.WIDTH: pa.array([im.shape[1] for im in images], pa.int32()),
        C.HEIGHT: pa.array([im.shape[0] for im in images], pa.int32())})


def planted_corpus_vectors() -> tuple[dict[str, bytes], dict[str, str], list[str], list[str], list[str], np.ndarray]:
    """The planted-duplicate demo corpus as the index pass would see it with the perceptual embedder.

    Returns ``(files, truth, names, ids, content hashes, vectors)`` of every image (the text file left out),
    each decoded as the decode stage does (first frame, RGB, longest side at most 512).
    """
    import hashlib
    import io

    from PIL import Image

    from jobs.demo_corpus import planted_duplicates
    from operators.embed.perceptual import PerceptualEmbedder
    from operators.ids import location_id

    files, truth = planted_duplicates()
    names = sorted(n for n in files if not n.startswith("bad/"))
    images = []
    for n in names:
        im = Image.open(io.BytesIO(files[n]))
        im.seek(0)
        im = im.convert("RGB")
        im.thumbnail((512, 512))
        images.append(np.asarray(im))
    ids = [location_id(f"mem://corpus/{n}") for n in names]
    hashes = [hashlib.sha256(files[n]).hexdigest() for n in names]
    return files, truth, names, ids, hashes, PerceptualEmbedder().images(images)


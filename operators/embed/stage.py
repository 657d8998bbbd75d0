"""The embedding stage: a fixed pool of actors, one embedding model each, image vectors of every ``ok`` row.

Rows whose status is already a failure pass through with a null vector. A row whose pixels the
model cannot take ends as ``embedding_error`` alone (the batch is retried row by row); the
vectors land in ``image_embedding``, a fixed-size list of the spec's float type, L2-normalised.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pyarrow as pa

from operators.base import ActorPool, PipelineError, Resources, Stage
from operators.embed.models import Embedder, embedding_dim, load_embedder
from operators.rows import error_text, set_columns
from schemas import columns as C
from schemas.spec import EmbeddingConfig
from schemas.status import Status

IMAGE_NEEDS = (C.ID, C.PIXELS, C.WIDTH, C.HEIGHT, C.STATUS, C.ERROR)


def vectors_array(vectors: list[np.ndarray | None], type_: pa.FixedSizeListType) -> pa.Array:
    """A fixed-size list array of ``type_`` with a null wherever ``vectors`` holds None."""
    dim = type_.list_size
    flat = np.zeros((len(vectors), dim), dtype=np.float32)
    valid = np.zeros(len(vectors), dtype=bool)
    for i, v in enumerate(vectors):
        if v is not None:
            flat[i], valid[i] = v, True
    values = pa.array(flat.reshape(-1).astype(np.float16 if type_.value_type == pa.float16() else np.float32))
    return pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~valid))


def put_column(table: pa.Table, name: str, array: pa.Array) -> pa.Table:
    """``table`` with column ``name`` added or replaced by ``array`` (its own type, not the catalogue's)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


def pixel_array(buffer, width: int, height: int) -> np.ndarray:
    """One row's packed RGB pixels as an H x W x 3 uint8 view."""
    return np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)


def embed_rows(embed: Callable[[list], np.ndarray], items: list, batch_size: int) -> list[np.ndarray | str]:
    """``embed`` over ``items`` in batches; a failing batch is retried item by item, a failed item is its error."""
    out: list[np.ndarray | str] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start: start + batch_size]
        try:
            out.extend(embed(chunk))
        except Exception:  # noqa: BLE001 - find the item at fault, never fail the batch
            for item in chunk:
                try:
                    out.append(embed([item])[0])
                except Exception as exc:  # noqa: BLE001
                    out.append(error_text(exc))
    return out


class EmbedActor:
    """Ray Data actor UDF holding one embedding model.

    Args:
        config: the spec's embedding section.
        dim: the model's vector size (sizes the column type on the driver).
        embedder: builds the model (called once, in the actor); None loads ``config``'s.
    """

    def __init__(self, config: EmbeddingConfig, dim: int, embedder: Callable[[], Embedder] | None = None):
        self.embedder = (embedder or partial(load_embedder, config))()
        if self.embedder.dim != dim:
            raise ValueError(f"embedding model gives {self.embedder.dim}-vectors, the column expects {dim}")
        self.type = C.embedding_type(dim, config.dtype)
        self.batch_size = config.batch_size

    def __call__(self, table: pa.Table) -> pa.Table:
        statuses, errors = table.column(C.STATUS).to_pylist(), table.column(C.ERROR).to_pylist()
        todo = [i for i, s in enumerate(statuses) if s == Status.OK.value]
        pixels, widths, heights = table.column(C.PIXELS), table.column(C.WIDTH), table.column(C.HEIGHT)
        images = [pixel_array(pixels[i].as_buffer(), widths[i].as_py(), heights[i].as_py()) for i in todo]
        vectors: list[np.ndarray | None] = [None] * table.num_rows
        for i, v in zip(todo, embed_rows(self.embedder.images, images, self.batch_size), strict=True):
            if isinstance(v, str):
                statuses[i], errors[i] = Status.EMBEDDING_ERROR.value, v
            else:
                vectors[i] = v
        table = put_column(table, C.IMAGE_EMBEDDING, vectors_array(vectors, self.type))
        return set_columns(table, {C.STATUS: statuses, C.ERROR: errors})


def stage_dim(name: str, config: EmbeddingConfig) -> int:
    """The embedding size of ``config``'s model, or a :class:`PipelineError` naming the stage."""
    try:
        return embedding_dim(config)
    except ValueError as exc:
        raise PipelineError(f"{name}: {exc}") from None


def embed_stage(config: EmbeddingConfig, *, embedder: Callable[[], Embedder] | None = None,
                dim: int | None = None) -> Stage:
    """``image_embedding`` of every ``ok`` row on a fixed pool of ``embedding.num_actors`` actors.

    The pixels stay in the rows (the caption pool still needs them).

    Args:
        embedder: the model builder each actor calls (tests pass their own); None loads the spec's.
        dim: the vector size; None reads it from the checkpoint's config on the driver.
    """
    dim = dim or stage_dim("embed", config)
    return Stage(
        "embed", EmbedActor, dict(config=config, dim=dim, embedder=embedder),
        needs=IMAGE_NEEDS, produces=(C.IMAGE_EMBEDDING, C.STATUS, C.ERROR),
        types={C.IMAGE_EMBEDDING: C.embedding_type(dim, config.dtype)},
        resources=Resources(num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor),
        batch_size=config.batch_size, pool=ActorPool(size=config.num_actors),
    )

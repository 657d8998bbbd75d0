"""Image-text alignment after captioning: the cosine of each caption's embedding and its image's.

Every row with a caption and an image embedding gets ``alignment_score`` (and the caption's
vector in ``caption_embedding``), whatever its status, so a threshold can be chosen after the
run; an ``ok`` row scoring below ``alignment.threshold`` becomes ``low_alignment`` (the caption is
kept, the row is not a training example). Runs on a fixed pool of actors, one text model each:
the image vectors come from the embedding stage before the caption pool.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pyarrow as pa

from operators.base import ActorPool, Resources, Stage
from operators.embed.models import Embedder, load_embedder
from operators.embed.stage import embed_rows, put_column, stage_dim, vectors_array
from operators.rows import set_columns
from schemas import columns as C
from schemas.spec import AlignmentConfig, EmbeddingConfig
from schemas.status import Status


class AlignActor:
    """Ray Data actor UDF: embeds captions, scores them against ``image_embedding``."""

    def __init__(self, config: EmbeddingConfig, alignment: AlignmentConfig, dim: int,
                 embedder: Callable[[], Embedder] | None = None):
        self.embedder = (embedder or partial(load_embedder, config))()
        self.threshold = alignment.threshold
        self.type = C.embedding_type(dim, config.dtype)
        self.batch_size = config.batch_size

    def __call__(self, table: pa.Table) -> pa.Table:
        statuses, errors = table.column(C.STATUS).to_pylist(), table.column(C.ERROR).to_pylist()
        captions = table.column(C.CAPTION).to_pylist()
        images = table.column(C.IMAGE_EMBEDDING)
        todo = [i for i in range(table.num_rows) if captions[i] and images[i].is_valid]
        scores: list[float | None] = [None] * table.num_rows
        texts: list[np.ndarray | None] = [None] * table.num_rows
        for i, v in zip(todo, embed_rows(self.embedder.texts, [captions[i] for i in todo], self.batch_size),
                        strict=True):
            if isinstance(v, str):
                continue  # a caption the model cannot read keeps its status; its score stays null
            image = np.asarray(images[i].values.to_numpy(zero_copy_only=False), dtype=np.float32)
            texts[i], scores[i] = v, float(np.dot(v, image / max(np.linalg.norm(image), 1e-12)))
            if statuses[i] == Status.OK.value and scores[i] < self.threshold:
                statuses[i] = Status.LOW_ALIGNMENT.value
                errors[i] = f"caption-image similarity {scores[i]:.4f} is below alignment.threshold {self.threshold}"
        table = put_column(table, C.CAPTION_EMBEDDING, vectors_array(texts, self.type))
        return set_columns(table, {C.ALIGNMENT_SCORE: scores, C.STATUS: statuses, C.ERROR: errors})


def align_stage(config: EmbeddingConfig, alignment: AlignmentConfig, *,
                embedder: Callable[[], Embedder] | None = None, dim: int | None = None) -> Stage:
    """``alignment_score`` and ``caption_embedding`` of every captioned row; ``low_alignment`` below the threshold."""
    dim = dim or stage_dim("align", config)
    return Stage(
        "align", AlignActor, dict(config=config, alignment=alignment, dim=dim, embedder=embedder),
        needs=(C.CAPTION, C.IMAGE_EMBEDDING, C.STATUS, C.ERROR),
        produces=(C.ALIGNMENT_SCORE, C.CAPTION_EMBEDDING, C.STATUS, C.ERROR),
        types={C.CAPTION_EMBEDDING: C.embedding_type(dim, config.dtype)},
        resources=Resources(num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor),
        batch_size=config.batch_size, pool=ActorPool(size=config.num_actors),
    )

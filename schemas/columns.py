"""Columns: the only place a column is spelled, and the catalogue of their Arrow types.

Stages declare the columns they need and produce with these names; the pipeline checks the
chain on the driver before any actor starts. :data:`TYPES` gives every column its one Arrow
type, in the order committed records hold them: the record schema of a run is the columns its
rows carry at the end, in this order, less the :data:`TRANSIENT` ones
(:func:`schemas.records.record_schema`). A stage that produces a column missing here fails
validation, naming it, instead of losing it at the sink.
"""

from __future__ import annotations

import pyarrow as pa

# Identity and location of an input image. ``id`` is the stable hash every run agrees on (the row key);
# ``source_id`` is the id the source itself gives the image (a manifest's or WebDataset's id, a Parquet
# id column, a prefix's relative key), so outputs join back to the source's annotations.
ID = "id"
SOURCE = "source"
SOURCE_ID = "source_id"
NUM_BYTES = "num_bytes"

# Transient columns: passed between stages, never committed.
IMAGE_BYTES = "image_bytes"
PIXELS = "pixels"
# When the row left the last model stage and when every engine it went through was ready (epoch
# seconds), stamped by the engine actors: the writer turns them into per-batch completion times
# for the run's throughput figure (pipeline/figures.py).
DONE_AT = "done_at"
ENGINES_READY_AT = "engines_ready_at"
# An image already in the model's input form (a family's CPU preparer: resized, tiled, normalised):
# the array's float32 bytes in C order, and its shape. Present instead of ``pixels`` past ``prepare``.
MODEL_INPUT = "model_input"
MODEL_INPUT_SHAPE = "model_input_shape"

# Row outcome.
STATUS = "status"
ERROR = "error"

# Image facts recorded by decode.
WIDTH = "width"
HEIGHT = "height"
ORIG_WIDTH = "orig_width"
ORIG_HEIGHT = "orig_height"
ORIG_FORMAT = "orig_format"
NUM_FRAMES = "num_frames"

# Image layout made on the CPU prepare stage: [rows, columns] of the tiles a family's CPU
# preparation cut the image into (4KHD; committed with the row). The engine learns that an image is
# prepared from its form (the model_input columns, a PreparedImage), the layout from its shape.
TILE_GRID = "tile_grid"

# Generation.
PROMPT = "prompt"
CAPTION = "caption"
NUM_PROMPT_TOKENS = "num_prompt_tokens"
NUM_GENERATED_TOKENS = "num_generated_tokens"
FINISH_REASON = "finish_reason"

# Dataset builds (ShareGPT4V-style): image path relative to the image root, questions a
# manifest or question set supplies, and the question-answer pairs generated per image.
IMAGE = "image"
INSTRUCTION = "instruction"
QUESTIONS = "questions"
QA = "qa"
QA_MODEL_ID = "qa_model_id"
QA_MODEL_REVISION = "qa_model_revision"
QA_ENGINE = "qa_engine"
QA_SAMPLING_HASH = "qa_sampling_hash"
# Every token the QA pool spent on the row: its answers and, for generated questions, the asking.
QA_PROMPT_TOKENS = "qa_prompt_tokens"
QA_GENERATED_TOKENS = "qa_generated_tokens"
# Fields of one QA pair (struct inside the QA list column).
QA_QUESTION = "question"
QA_ANSWER = "answer"
QA_ORIGIN = "origin"

# Curation: content hash (exact duplicates), embeddings (fixed-size lists; the size and float type
# come from the embedding model and spec, see :func:`embedding_type`), the evidence of a duplicate
# and the caption-image similarity.
CONTENT_HASH = "content_hash"
IMAGE_EMBEDDING = "image_embedding"
CAPTION_EMBEDDING = "caption_embedding"
DUPLICATE_OF = "duplicate_of"
DUPLICATE_SIMILARITY = "duplicate_similarity"
ALIGNMENT_SCORE = "alignment_score"

# Provenance.
MODEL_ID = "model_id"
MODEL_REVISION = "model_revision"
ENGINE = "engine"
SAMPLING_HASH = "sampling_hash"
CODE_VERSION = "code_version"
RUN_ID = "run_id"

#: One question-answer pair. ``origin``: manifest, set or generate. ``status``: ok or why not. Token
#: counts are the answer's generation (for a failed question generation, that generation's).
QA_PAIR = pa.struct(
    [
        pa.field(QA_QUESTION, pa.string()),
        pa.field(QA_ANSWER, pa.string()),
        pa.field(QA_ORIGIN, pa.string()),
        pa.field(STATUS, pa.string()),
        pa.field(ERROR, pa.string()),
        pa.field(FINISH_REASON, pa.string()),
        pa.field(NUM_PROMPT_TOKENS, pa.int32()),
        pa.field(NUM_GENERATED_TOKENS, pa.int32()),
    ]
)

#: Every column's Arrow type, in committed order.
TYPES: dict[str, pa.DataType] = {
    ID: pa.string(),
    SOURCE: pa.string(),
    SOURCE_ID: pa.string(),
    IMAGE: pa.string(),
    NUM_BYTES: pa.int64(),
    STATUS: pa.string(),
    ERROR: pa.string(),
    WIDTH: pa.int32(),
    HEIGHT: pa.int32(),
    ORIG_WIDTH: pa.int32(),
    ORIG_HEIGHT: pa.int32(),
    ORIG_FORMAT: pa.string(),
    NUM_FRAMES: pa.int32(),
    TILE_GRID: pa.list_(pa.int32()),
    PROMPT: pa.string(),
    INSTRUCTION: pa.string(),
    CAPTION: pa.string(),
    NUM_PROMPT_TOKENS: pa.int32(),
    NUM_GENERATED_TOKENS: pa.int32(),
    FINISH_REASON: pa.string(),
    MODEL_ID: pa.string(),
    MODEL_REVISION: pa.string(),
    ENGINE: pa.string(),
    SAMPLING_HASH: pa.string(),
    QA: pa.list_(QA_PAIR),
    QA_PROMPT_TOKENS: pa.int32(),
    QA_GENERATED_TOKENS: pa.int32(),
    QA_MODEL_ID: pa.string(),
    QA_MODEL_REVISION: pa.string(),
    QA_ENGINE: pa.string(),
    # Curation (a stage's ``types`` gives an embedding its fixed size, see embedding_type).
    CONTENT_HASH: pa.string(),
    DUPLICATE_OF: pa.string(),
    DUPLICATE_SIMILARITY: pa.float32(),
    ALIGNMENT_SCORE: pa.float32(),
    IMAGE_EMBEDDING: pa.list_(pa.float32()),
    CAPTION_EMBEDDING: pa.list_(pa.float32()),
    QA_SAMPLING_HASH: pa.string(),
    CODE_VERSION: pa.string(),
    RUN_ID: pa.string(),
    # Transient.
    QUESTIONS: pa.list_(pa.string()),
    IMAGE_BYTES: pa.binary(),
    PIXELS: pa.binary(),
    DONE_AT: pa.float64(),
    ENGINES_READY_AT: pa.float64(),
    MODEL_INPUT: pa.large_binary(),  # 4KHD at hd_num 55 is ~75 MB a row: past binary's 2 GiB per block
    MODEL_INPUT_SHAPE: pa.list_(pa.int32()),
}

#: Columns that travel between stages but are never committed (bytes, pixels, model inputs, manifest questions,
#: timings).
TRANSIENT = frozenset({IMAGE_BYTES, PIXELS, MODEL_INPUT, MODEL_INPUT_SHAPE, QUESTIONS, DONE_AT, ENGINES_READY_AT})

#: Columns every committed row has a value in (non-nullable in the record schema).
REQUIRED = frozenset({ID, SOURCE, STATUS})


def embedding_type(dim: int, dtype: str = "float16") -> pa.DataType:
    """The committed type of an embedding column: ``dim`` values of ``dtype`` (float16 or float32), L2-normalised."""
    return pa.list_(pa.float16() if dtype == "float16" else pa.float32(), dim)


def types_of(*names: str) -> dict[str, pa.DataType]:
    """``{name: type}`` of ``names`` from the catalogue (for building a stage's output arrays)."""
    return {n: TYPES[n] for n in names}

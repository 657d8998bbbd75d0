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

# Identity and location of an input image.
ID = "id"
SOURCE = "source"
NUM_BYTES = "num_bytes"

# Transient columns: passed between stages, never committed.
IMAGE_BYTES = "image_bytes"
PIXELS = "pixels"
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
QA_ENGINE = "qa_engine"
# Fields of one QA pair (struct inside the QA list column).
QA_QUESTION = "question"
QA_ANSWER = "answer"
QA_ORIGIN = "origin"

# Provenance.
MODEL_ID = "model_id"
MODEL_REVISION = "model_revision"
ENGINE = "engine"
SAMPLING_HASH = "sampling_hash"
CODE_VERSION = "code_version"
RUN_ID = "run_id"

#: One question-answer pair. ``origin``: manifest, set or generate. ``status``: ok or why not.
QA_PAIR = pa.struct(
    [
        pa.field(QA_QUESTION, pa.string()),
        pa.field(QA_ANSWER, pa.string()),
        pa.field(QA_ORIGIN, pa.string()),
        pa.field(STATUS, pa.string()),
        pa.field(ERROR, pa.string()),
        pa.field(FINISH_REASON, pa.string()),
    ]
)

#: Every column's Arrow type, in committed order.
TYPES: dict[str, pa.DataType] = {
    ID: pa.string(),
    SOURCE: pa.string(),
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
    QA_MODEL_ID: pa.string(),
    QA_ENGINE: pa.string(),
    CODE_VERSION: pa.string(),
    RUN_ID: pa.string(),
    # Transient.
    QUESTIONS: pa.list_(pa.string()),
    IMAGE_BYTES: pa.binary(),
    PIXELS: pa.binary(),
    MODEL_INPUT: pa.large_binary(),  # 4KHD at hd_num 55 is ~75 MB a row: past binary's 2 GiB per block
    MODEL_INPUT_SHAPE: pa.list_(pa.int32()),
}

#: Columns that travel between stages but are never committed (bytes, pixels, model inputs, manifest questions).
TRANSIENT = frozenset({IMAGE_BYTES, PIXELS, MODEL_INPUT, MODEL_INPUT_SHAPE, QUESTIONS})

#: Columns every committed row has a value in (non-nullable in the record schema).
REQUIRED = frozenset({ID, SOURCE, STATUS})


def types_of(*names: str) -> dict[str, pa.DataType]:
    """``{name: type}`` of ``names`` from the catalogue (for building a stage's output arrays)."""
    return {n: TYPES[n] for n in names}

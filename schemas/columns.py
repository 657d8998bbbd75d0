"""Column-name constants: the only place a column is spelled.

Operators declare the columns they require and produce with these names; the pipeline
checks the chain on the driver before any actor starts.
"""

from __future__ import annotations

# Identity and location of an input image.
ID = "id"
SOURCE = "source"
NUM_BYTES = "num_bytes"

# Transient columns, dropped before the sink.
IMAGE_BYTES = "image_bytes"
PIXELS = "pixels"

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

TRANSIENT = (IMAGE_BYTES, PIXELS)

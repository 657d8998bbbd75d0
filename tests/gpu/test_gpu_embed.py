"""On a CUDA GPU: the embedding stage on the device (float16 weights, the spec's ``compute_dtype: auto``)
against the CPU float32 reference (the golden numbers of the public InternVL-C code; transformers' CLIP).

float16 weights and activations through a tiny model keep about 3 significant digits: 2e-2 on
unit vectors (cosine above 0.999) separates a device bug (a wrong mask, a transposed head) from rounding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from schemas import columns as C
from schemas.spec import EmbeddingConfig
from tests.curation import pixel_rows

TOL = 2e-2


def _vectors(table) -> np.ndarray:
    return np.stack([np.asarray(v, np.float32) for v in table.column(C.IMAGE_EMBEDDING).to_pylist()])


@pytest.mark.parametrize("kind", ["clip", "internvl-c"])
def test_embedding_on_the_gpu_matches_the_cpu(tmp_path, kind):
    from operators.embed.stage import EmbedActor
    from operators.embed.tiny import BUILDERS
    from tests.golden_internvl_c import case_image
    from tests.unit.test_embeddings import GOLDEN

    BUILDERS[kind](tmp_path)
    images = [case_image(*c) for c in json.loads(GOLDEN.read_text())["images"]]
    cpu = EmbedActor(EmbeddingConfig(kind=kind, model_id=str(tmp_path), dtype="float32"), 16)(pixel_rows(images))
    gpu = EmbedActor(EmbeddingConfig(kind=kind, model_id=str(tmp_path), dtype="float16", gpus_per_actor=1), 16)
    assert next(gpu.embedder.model.parameters()).is_cuda
    out = gpu(pixel_rows(images))
    np.testing.assert_allclose(_vectors(out), _vectors(cpu), atol=TOL)
    assert (np.sum(_vectors(out) * _vectors(cpu), axis=1) > 0.999).all()

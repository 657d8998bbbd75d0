"""A perceptual-hash embedding: the low DCT frequencies of a 32 x 32 grey thumbnail, as a unit vector.

The vector is pHash's (the DCT of a small luminance thumbnail, its top-left 8 x 8 block less the DC
term) kept real-valued instead of thresholded, so cosine similarity measures it. It needs no
weights and is deterministic: resizing, re-encoding and slight crops leave it nearly unchanged,
while different pictures point elsewhere. It knows nothing of meaning (two photographs of the same
dog in different poses are far apart) and embeds no text; the light learned default is CLIP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SIZE = 32
BLOCK = 8
DIM = BLOCK * BLOCK - 1


def _dct_matrix(n: int) -> np.ndarray:
    import numpy as np

    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def perceptual_vector(image: np.ndarray) -> np.ndarray:
    """The unnormalised ``DIM``-vector of one H x W x 3 uint8 image."""
    import numpy as np
    from PIL import Image

    grey = Image.fromarray(np.ascontiguousarray(image), "RGB").convert("L")
    # BOX averages every source pixel into the thumbnail, so a re-encode's block noise cancels out.
    small = np.asarray(grey.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float64)
    d = _dct_matrix(SIZE)
    coeffs = d @ small @ d.T
    return coeffs[:BLOCK, :BLOCK].reshape(-1)[1:]


class PerceptualEmbedder:
    """:class:`operators.embed.models.Embedder` of perceptual-hash vectors (images only)."""

    name = "perceptual-dct32"
    dim = DIM
    embeds_text = False

    def images(self, images: list[np.ndarray]) -> np.ndarray:
        import numpy as np

        from operators.embed.models import normalise

        if not images:
            return np.zeros((0, DIM), np.float32)
        return normalise(np.stack([perceptual_vector(im) for im in images]))

    def texts(self, texts: list[str]) -> np.ndarray:
        raise ValueError("the perceptual embedder embeds images only; use embedding.kind clip or internvl-c for text")

"""The embedder contract and the one place a spec's embedding section becomes a model.

An :class:`Embedder` turns images (H x W x 3 uint8 RGB arrays) and, where it can, texts into
L2-normalised float32 vectors of a fixed size. Model weights load where the embedder is built
(inside the actor that holds it); nothing heavy is imported at module import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from schemas.spec import EmbeddingConfig

if TYPE_CHECKING:
    import numpy as np


class Embedder(Protocol):
    """An embedding model living in one actor.

    Attributes:
        name: recorded in logs and the index (kind and checkpoint).
        dim: size of every vector it returns.
        embeds_text: :meth:`texts` is supported (false for image-only models).
    """

    name: str
    dim: int
    embeds_text: bool

    def images(self, images: list[np.ndarray]) -> np.ndarray:
        """``(len(images), dim)`` float32, each row of unit length."""
        ...

    def texts(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, each row of unit length, in the image vectors' space."""
        ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows of ``vectors`` scaled to unit length (a zero row stays zero), as float32."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


def device_and_dtype(config: EmbeddingConfig):
    """``(torch device, torch dtype)`` for ``config``: auto is float16 on a GPU, float32 on the CPU."""
    import torch

    device = torch.device("cuda" if config.gpus_per_actor > 0 and torch.cuda.is_available() else "cpu")
    if config.compute_dtype == "auto":
        return device, torch.float16 if device.type == "cuda" else torch.float32
    return device, getattr(torch, config.compute_dtype)


def load_embedder(config: EmbeddingConfig) -> Embedder:
    """The embedder ``config`` names, loaded here (call it inside the actor that holds it).

    Raises:
        ValueError: the checkpoint does not match the kind (a one-line reason).
    """
    if config.kind == "perceptual":
        from operators.embed.perceptual import PerceptualEmbedder

        return PerceptualEmbedder()
    device, dtype = device_and_dtype(config)
    if config.kind == "clip":
        from operators.embed.clip import ClipEmbedder

        return ClipEmbedder(config.model_id, revision=config.revision, device=device, dtype=dtype)
    from operators.embed.internvl_c import InternVLCEmbedder

    return InternVLCEmbedder(config.model_id, device=device, dtype=dtype)


def embedding_dim(config: EmbeddingConfig) -> int:
    """The vector size of ``config``'s model, read from its config file (no weights loaded), on the driver."""
    if config.kind == "perceptual":
        from operators.embed.perceptual import DIM

        return DIM
    import json
    from pathlib import Path

    path = Path(config.model_id).expanduser() / "config.json"
    if not path.exists():
        try:  # a hub id: its config.json alone (from the local cache when offline)
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(config.model_id, "config.json", revision=config.revision))
        except Exception as exc:  # noqa: BLE001 - any failure here is one clear line for the user
            raise ValueError(f"embedding.model_id {config.model_id!r}: no config.json to size the embedding "
                             f"column ({type(exc).__name__})") from None
    cfg = json.loads(path.read_text())
    if config.kind == "clip":
        return int(cfg.get("projection_dim", 512))
    return int(cfg.get("clip_embed_dim", 768))

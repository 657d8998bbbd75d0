"""Embedding models of the curation stages: one :class:`~operators.embed.models.Embedder` per kind.

- ``clip``: a CLIP checkpoint through transformers' ``CLIPModel`` (:mod:`operators.embed.clip`).
- ``internvl-c``: InternVL-14B-224px style checkpoints (InternViT-6B + QLLaMA, the published
  remote-code layout) through vlmbatch's own PyTorch implementation (:mod:`operators.embed.internvl_c`).
- ``perceptual``: a DCT perceptual hash as a vector, no weights (:mod:`operators.embed.perceptual`).

The stage that runs them is :mod:`operators.embed.stage`; the tiny checkpoints of the first two
are built by :mod:`operators.embed.tiny` (``vlmbatch make-tiny-model clip|internvl-c DIR``).
"""

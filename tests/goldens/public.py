"""Loading a folder of public modeling code as a package, and recording what it tokenises.

The golden script imports the checkpoints' published remote code (``modeling_*.py`` and its
siblings) from a folder the user names, never from this repository. Relative imports
(``from .build_mlp import ...``) resolve inside that folder; absolute imports of a source tree's
own package (InternVL's GitHub layout: ``from internvl.conversation import ...``) are answered by
aliases onto the same folder's modules.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path


def load_package(folder: str | Path, name: str) -> types.ModuleType:
    """``folder`` as an importable package ``name`` (no ``__init__.py`` needed)."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder of public modeling code")
    package = types.ModuleType(name)
    package.__path__ = [str(folder)]
    sys.modules[name] = package
    return package


def module(package: str, name: str) -> types.ModuleType:
    """Import ``package.name`` from a folder :func:`load_package` registered."""
    return importlib.import_module(f"{package}.{name}")


def alias(fake: str, real: types.ModuleType) -> None:
    """Make ``import fake`` (and its parent packages) resolve to ``real``."""
    parts = fake.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        sys.modules.setdefault(parent, types.ModuleType(parent)).__path__ = []
    sys.modules[fake] = real


def stub(fake: str, **attrs) -> types.ModuleType:
    """A module ``fake`` holding ``attrs`` (for imports the public code makes but never uses here).

    Import transformers first: its optional-package probes (``is_timm_available``) must see the real
    environment, not the stub.
    """
    import importlib.machinery

    mod = types.ModuleType(fake)
    mod.__dict__.update(attrs)
    mod.__spec__ = importlib.machinery.ModuleSpec(fake, None)
    alias(fake, mod)
    for i in range(1, len(fake.split("."))):
        parent = sys.modules[".".join(fake.split(".")[:i])]
        parent.__spec__ = getattr(parent, "__spec__", None) or importlib.machinery.ModuleSpec(parent.__name__, None)
    return mod


class RecordingTokenizer:
    """Wraps a tokenizer and keeps the ``input_ids`` of every call, in call order.

    The public chat code tokenises each text part of a prompt itself and returns only embeddings;
    recording its calls recovers the exact token ids it fed the model.
    """

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.calls: list[list[int]] = []

    def __call__(self, *args, **kwargs):
        out = self._tokenizer(*args, **kwargs)
        ids = out["input_ids"]
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        self.calls.append(list(ids[0]) if ids and isinstance(ids[0], list) else list(ids))
        return out

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

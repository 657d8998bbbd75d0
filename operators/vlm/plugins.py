"""The project's one vLLM general plugin: registers every model implementation vlmbatch ships.

vLLM calls :func:`register` in every process it starts (the ``vllm.general_plugins`` entry point
in pyproject.toml). Each package under ``operators/vlm/`` that holds a ``plugin.py`` with a
``register()`` (e.g. ``operators/vlm/xcomposer2/plugin.py``) is one model implementation; a new
one needs no edit here or in pyproject.toml.
"""

from __future__ import annotations

import importlib
import pkgutil


def plugin_modules() -> list[str]:
    """Import paths of the ``plugin`` modules of ``operators.vlm``'s packages, sorted."""
    from operators import vlm

    found = []
    for info in pkgutil.iter_modules(vlm.__path__):
        if info.ispkg and importlib.util.find_spec(f"{vlm.__name__}.{info.name}.plugin") is not None:
            found.append(f"{vlm.__name__}.{info.name}.plugin")
    return sorted(found)


def register() -> None:
    """Call every model package's ``plugin.register()`` (each is idempotent); quiet resource tracking at exit."""
    from operators.vlm.quiet_exit import install

    install()  # operators/vlm/quiet_exit.py: vLLM's processes can outlive the actor's resource tracker
    for name in plugin_modules():
        importlib.import_module(name).register()

"""The model-family registry: prompt format, stop tokens and image preprocessing per family.

One :class:`ModelFamily` per family, each in its own module under ``operators/vlm/families``
with a link to the model card whose format it follows; every module there is imported (and so
registered) on first use, so a new family is one new file. The pipeline asks the registry for a
family by the name in the spec; an unknown name fails at validation with the known names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFamily:
    """Everything vlmbatch needs to know about one model family.

    Attributes:
        name: registry key used in specs (``model.family``).
        architectures: Hugging Face ``architectures`` values of checkpoints in this family.
        model_card: the model card whose chat format and preprocessing this entry follows.
        image_placeholder: text the engine expands into the image's tokens.
        prompt_template: format string with ``{system}`` and ``{user}`` fields.
        default_system_prompt: system message used when the spec gives none ('' for none).
        stop: strings that end a generation besides the tokenizer's EOS.
        max_side: longest side worth decoding for the engine; its own processor resizes further,
            so anything larger only costs object-store bandwidth.
        make_tiny: ``make_tiny(directory)`` writes a deterministic tiny random-weight checkpoint.
        system_block: format string for the system part; '' when the family has no system turn.
        image_separator: text after each image placeholder, before the instruction.
        cpu_prepare: ``cpu_prepare(model_id)`` returns a picklable function ``PIL image (RGB) -> numpy
            array``: the model's input for that image (resized, tiled, normalised; float32, C order),
            which the pipeline's CPU ``prepare`` stage makes for engines that take prepared input (vLLM
            with a processor vlmbatch owns), so the engine's process only runs the model. None: the
            engine's own processor prepares images (vLLM's for InternVL and LLaVA).
        reference_loader: ``reference_loader(model_config)`` returns (processor, model) for the
            transformers engine when transformers has no class for the family; None for Auto classes.
    """

    name: str
    architectures: tuple[str, ...]
    model_card: str
    image_placeholder: str
    prompt_template: str
    default_system_prompt: str
    stop: tuple[str, ...]
    make_tiny: Callable[[Path], None]
    max_side: int = 1024
    system_block: str = ""
    image_separator: str = "\n"
    cpu_prepare: Callable[[str], Callable] | None = None
    reference_loader: Callable | None = None

    def build_prompt(self, instruction: str, system_prompt: str | None = None, num_images: int = 1) -> str:
        """Full prompt text for one request: chat markers, image placeholders, instruction."""
        system = self.default_system_prompt if system_prompt is None else system_prompt
        system_text = self.system_block.format(system=system) if system and self.system_block else ""
        images = "".join(f"{self.image_placeholder}{self.image_separator}" for _ in range(num_images))
        return self.prompt_template.format(system=system_text, user=images + instruction)


_FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry; a second family with the same name is an error."""
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def _load_builtin() -> None:
    # Every module of the families package, imported for its register() side effect; kept lazy
    # so schemas-only users stay light.
    from operators.vlm import families as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


def get_family(name: str) -> ModelFamily:
    """The registered family ``name``.

    Raises:
        KeyError: with the known family names.
    """
    _load_builtin()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(_FAMILIES))}") from None


def families() -> dict[str, ModelFamily]:
    """All registered families by name."""
    _load_builtin()
    return dict(_FAMILIES)

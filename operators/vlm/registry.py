"""The model-family registry: prompt format, stop tokens and image preprocessing per family.

One :class:`ModelFamily` per family, each in its own module under ``operators/vlm/families``
with a link to the model card whose format it follows; every module there is imported (and so
registered) on first use, so a new family is one new file. The pipeline asks the registry for a
family by the name in the spec; an unknown name fails at validation with the known names.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
        max_side: the longest side the family's preprocessing uses (its own processor resizes to at
            most this): decode never reduces an image below it, and a spec's ``decode.max_side`` under
            it is a validation error.
        make_tiny: ``make_tiny(directory)`` writes a deterministic tiny random-weight checkpoint.
        system_block: format string for the system part; '' when the family has no system turn.
        system_always: format the system block even for an empty system prompt (templates that do).
        image_separator: text after each image placeholder, before the instruction.
        cpu_prepare: ``cpu_prepare(model_config)`` returns a picklable function ``PIL image (RGB) ->
            (numpy array, tile grid or None)``: the model's input for that image (resized, laid out in
            tiles, normalised; float32, C order) and, for a preparer whose ``tiles`` is true (4KHD), the
            (rows, cols) grid it cut, which the row records. The pipeline's CPU ``prepare`` stage makes
            it for engines that take prepared input (vLLM with a processor vlmbatch owns), so the
            engine's process only runs the model. None: the engine's own processor prepares images
            (vLLM's for InternVL and LLaVA).
        reference_loader: ``reference_loader(model_config)`` returns (processor, model) for the
            transformers engine when transformers has no class for the family; None for Auto classes.
        transformers_reference: whether the transformers engine can run the family at all (False:
            its modeling code exists only as the checkpoints' remote code).
        encode_prompt: ``encode_prompt(prompt, tokenizer) -> token ids`` where the card tokenises a
            prompt otherwise than ``tokenizer(prompt)`` (XComposer2: each text part with its own BOS);
            engines then send the ids. None: the prompt text goes to the engine.
        sampling_defaults: the model card's generation settings, used where the spec leaves a
            sampling field unset (``None``).
        for_model: ``for_model(family, model_config) -> ModelFamily``: the family as one checkpoint
            needs it (InternVL chat: the conversation template its config names); also the place to
            refuse, with ``ValueError`` and the reason, a checkpoint the engine cannot serve.
        needed_side: ``needed_side(model_config) -> int`` when the longest useful side depends on the
            model settings (4KHD: ``hd_num`` tiles); None: ``max_side``.
        processor_kwargs: ``processor_kwargs(model_config) -> dict`` of engine-wide multimodal
            processor settings (4KHD: ``hd_num``); None for none.
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
    system_always: bool = False
    image_separator: str = "\n"
    cpu_prepare: Callable[[Any], Callable] | None = None
    reference_loader: Callable | None = None
    transformers_reference: bool = True
    encode_prompt: Callable[[str, Any], list[int]] | None = None
    sampling_defaults: tuple[tuple[str, Any], ...] = ()
    for_model: Callable[[ModelFamily, Any], ModelFamily] | None = None
    needed_side: Callable[[Any], int] | None = None
    processor_kwargs: Callable[[Any], dict] | None = None

    def build_prompt(self, instruction: str, system_prompt: str | None = None, num_images: int = 1) -> str:
        """Full prompt text for one request: chat markers, image placeholders, instruction."""
        system = self.default_system_prompt if system_prompt is None else system_prompt
        keep = bool(system) or self.system_always
        system_text = self.system_block.format(system=system) if keep and self.system_block else ""
        images = "".join(f"{self.image_placeholder}{self.image_separator}" for _ in range(num_images))
        return self.prompt_template.format(system=system_text, user=images + instruction)


    def side_for(self, model) -> int:
        """The longest image side this family uses with ``model`` (a ``schemas.spec.ModelConfig``)."""
        return self.needed_side(model) if self.needed_side is not None else self.max_side

    def replace(self, **changes) -> ModelFamily:
        """A copy with ``changes`` (the per-checkpoint form :attr:`for_model` returns)."""
        return dataclasses.replace(self, **changes)


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


def family_for(model) -> ModelFamily:
    """The family of ``model`` (a ``schemas.spec.ModelConfig``) as that checkpoint needs it.

    Raises:
        KeyError: the family is unknown (with the known names).
        ValueError: the family cannot serve this checkpoint, and why.
    """
    family = get_family(model.family)
    if getattr(model, "hd_num", None) is not None and family.processor_kwargs is None:
        raise ValueError(f"model.hd_num is an InternLM-XComposer2-4KHD setting; family {family.name} has no tiles "
                         "to count")
    return family.for_model(family, model) if family.for_model is not None else family


def families() -> dict[str, ModelFamily]:
    """All registered families by name."""
    _load_builtin()
    return dict(_FAMILIES)

"""The engine contract shared by the vLLM engine and the transformers reference engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from schemas.status import Status

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt with its images."""

    request_id: str
    prompt: str
    images: tuple[Image.Image, ...]


@dataclass(frozen=True)
class GenerationResult:
    """What came back for one request; ``status`` is ``ok`` or why the request failed."""

    text: str | None
    num_prompt_tokens: int | None
    num_generated_tokens: int | None
    finish_reason: str | None
    status: Status = Status.OK
    error: str | None = None


class Engine(Protocol):
    """An inference engine living inside one actor.

    ``generate`` may be awaited by several batches at once; the engine batches across them.
    """

    name: str

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Results in request order; a failed request is a result with a status, not an exception."""
        ...

    def shutdown(self) -> None:
        """Release the model and any child processes."""
        ...


class EngineDead(RuntimeError):
    """The engine can serve nothing more; the actor must be replaced."""


class EngineActor:
    """Base of Ray Data actor UDFs that hold one engine in ``self.engine``."""

    def __del__(self):
        # Ray Data calls this when it retires the actor: stop the engine's child processes
        # in order instead of letting them notice a dead parent.
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

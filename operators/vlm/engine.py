"""The engine contract shared by the vLLM engine and the transformers reference engine."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from schemas import columns as C
from schemas.status import Status

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from PIL import Image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt with its images: PIL images, or H x W x 3 uint8 RGB arrays for an engine
    whose ``takes_arrays`` is true (see :func:`request_image`).

    ``processor_kwargs``: per-request settings for the engine's multimodal processor; today
    ``{"hd_grids": [[rows, cols], ...]}``, one per image, for images the CPU stage already laid out
    (4KHD; see :func:`layout_kwargs`). None: raw images, engine-wide settings.
    """

    request_id: str
    prompt: str
    images: tuple[Image.Image | np.ndarray, ...]
    processor_kwargs: Mapping[str, object] | None = None


def layout_kwargs(table) -> list[dict | None]:
    """Per row of ``table``, the ``processor_kwargs`` marking its image as laid out by the CPU stage
    (from the ``tile_grid`` column), or None for a raw image / a table without the column."""
    from schemas import columns as C

    if C.TILE_GRID not in table.column_names:
        return [None] * table.num_rows
    return [{"hd_grids": [list(g)]} if g is not None else None for g in table.column(C.TILE_GRID).to_pylist()]


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
    ``takes_arrays`` (optional, false when absent): requests may carry images as H x W x 3
    uint8 arrays instead of PIL images.
    """

    name: str

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Results in request order; a failed request is a result with a status, not an exception."""
        ...

    def shutdown(self) -> None:
        """Release the model and any child processes."""
        ...


# Heights that Hugging Face image processors would read as a channel axis in an H x W x 3 array.
_AMBIGUOUS_HEIGHTS = (1, 3, 4)


def request_image(buffer, width: int, height: int, as_array: bool) -> Image.Image | np.ndarray:
    """One row's packed RGB pixels (``width * height * 3`` bytes) as a request image.

    ``as_array``: an H x W x 3 uint8 NumPy view of ``buffer`` (no copy; engines only read it, and
    it keeps ``buffer`` alive), except for heights 1, 3 and 4, which image processors take for a
    channel axis. Otherwise a PIL image (a copy, which the engine's processor converts back).

    Raises:
        ValueError: ``buffer`` does not hold ``width`` x ``height`` RGB pixels.
    """
    if as_array and height not in _AMBIGUOUS_HEIGHTS:
        import numpy as np

        return np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
    from PIL import Image

    return Image.frombuffer("RGB", (width, height), buffer, "raw", "RGB", 0, 1)


class EngineDead(RuntimeError):
    """The engine can serve nothing more; the actor must be replaced."""


class EngineActor:
    """Base of Ray Data actor UDFs that hold one engine in ``self.engine``.

    Subclasses build it with :meth:`load_engine` and pass every output batch through
    :meth:`stamp_times`, so the writer can tell when each batch was done and when its engines were
    ready (the run's throughput figure and its start-up segment).
    """

    ready_at: float = 0.0

    def load_engine(self, engine: Callable[[], Engine]) -> None:
        """Build this actor's engine (in its process) and note when it was ready."""
        self.engine = engine()
        self.ready_at = time.time()

    def stamp_times(self, values: dict[str, list], table: pa.Table) -> None:
        """Add ``done_at`` (now) and ``engines_ready_at`` (latest ready time of the row's engines) to ``values``."""
        n = table.num_rows
        earlier = (table.column(C.ENGINES_READY_AT).to_pylist() if C.ENGINES_READY_AT in table.column_names
                   else [None] * n)
        values[C.ENGINES_READY_AT] = [max(t or 0.0, self.ready_at) for t in earlier]
        values[C.DONE_AT] = [time.time()] * n

    def __del__(self):
        # Ray Data calls this when it retires the actor: stop the engine's child processes
        # in order instead of letting them notice a dead parent.
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

    def request_image(self, buffer, width: int, height: int) -> Image.Image | np.ndarray:
        """One row's pixels as :func:`request_image` makes them, in the form this actor's engine takes
        (arrays where its ``takes_arrays`` is true, PIL images where it is false or absent)."""
        return request_image(buffer, width, height, getattr(self.engine, "takes_arrays", False))

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """``self.engine.generate``, counted in the queue-depth gauge of ``self.metrics`` (when the actor has one);
        a dead engine ends this process so Ray replaces the actor and retries."""
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.submitted(len(requests))
        try:
            return await self.engine.generate(requests)
        except EngineDead as exc:
            log.error("engine died (%s); exiting so the actor is replaced", exc)
            os._exit(1)
        finally:
            if metrics is not None:
                metrics.answered(len(requests))

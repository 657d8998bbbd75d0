"""The engine contract shared by the vLLM engine and the transformers reference engine."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
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
class PreparedImage:
    """One image already in its model's input form, made by the family's CPU preparer
    (``ModelFamily.cpu_prepare``): e.g. XComposer2-VL's normalised float32 3 x 490 x 490 array.
    The engine hands it to the model as is; only engines that take prepared input get these."""

    array: np.ndarray


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt with its images: PIL images, H x W x 3 uint8 RGB arrays for an engine whose
    ``takes_arrays`` is true (see :func:`request_image`), or :class:`PreparedImage` s (the CPU
    ``prepare`` stage made the model's input; its form is the only mark of a prepared image)."""

    request_id: str
    prompt: str
    images: tuple[Image.Image | np.ndarray | PreparedImage, ...]
    #: A stable identity per image (its row id), or () for none: an engine may key its caches by it
    #: instead of hashing the image's content (requests about one image share it).
    image_keys: tuple[str, ...] = ()


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


def prepared_image(buffer, shape: list[int]) -> PreparedImage:
    """One row's model input (float32 bytes of ``shape``, C order) as a :class:`PreparedImage` (a view, no copy).

    Raises:
        ValueError: ``buffer`` does not hold an array of ``shape``.
    """
    import numpy as np

    return PreparedImage(np.frombuffer(buffer, dtype=np.float32).reshape(shape))


#: Every column that carries a row's image to a model stage (raw pixels or the prepared model input).
IMAGE_COLUMNS = (C.PIXELS, C.MODEL_INPUT, C.MODEL_INPUT_SHAPE)


def image_data(prepared: bool) -> tuple[str, ...]:
    """The columns that hold a row's image (what the last model stage drops): model input or pixels."""
    return (C.MODEL_INPUT, C.MODEL_INPUT_SHAPE) if prepared else (C.PIXELS,)


def image_needs(prepared: bool) -> tuple[str, ...]:
    """The columns a model stage reads a row's image from: the model input past ``prepare``, else pixels."""
    return image_data(True) if prepared else (C.PIXELS, C.WIDTH, C.HEIGHT)


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

    def image_reader(self, table: pa.Table):
        """``read(i)``: row ``i``'s image for a request: its prepared model input when the rows carry
        one (the ``prepare`` stage ran), else its pixels (:meth:`request_image`). ``read`` raises
        ``ValueError`` for a row whose data does not make an image."""
        if C.MODEL_INPUT in table.column_names:
            data, shapes = table.column(C.MODEL_INPUT), table.column(C.MODEL_INPUT_SHAPE).to_pylist()
            return lambda i: prepared_image(data[i].as_buffer(), shapes[i])
        pixels = table.column(C.PIXELS)
        widths, heights = table.column(C.WIDTH).to_pylist(), table.column(C.HEIGHT).to_pylist()
        return lambda i: self.request_image(pixels[i].as_buffer(), widths[i], heights[i])

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

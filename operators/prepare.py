"""Family-specific image preparation on CPU tasks, between decode and the engine actors.

Some families lay images out before the vision tower (InternLM-XComposer2-4KHD: ``hd_num``
tiling, resize and padding). Doing it here keeps that work on CPU workers and off the
accelerator actors; the engine then finds the image already in its final layout.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from operators.base import Resources, Stage
from operators.rows import map_rows
from schemas import columns as C
from schemas.status import Status

PRODUCES = (C.PIXELS, C.WIDTH, C.HEIGHT)


class PrepareBatch:
    """Per-batch function (picklable): RGB pixels in, prepared RGB pixels out."""

    def __init__(self, prepare: Callable):
        self.prepare = prepare

    def _row(self, row: dict) -> dict:
        from PIL import Image

        image = Image.frombuffer("RGB", (row[C.WIDTH], row[C.HEIGHT]), row[C.PIXELS], "raw", "RGB", 0, 1)
        out = self.prepare(image).convert("RGB")
        return {C.PIXELS: out.tobytes(), C.WIDTH: out.size[0], C.HEIGHT: out.size[1]}

    def __call__(self, table: pa.Table) -> pa.Table:
        return map_rows(table, self._row, PRODUCES, failure_status=Status.DECODE_ERROR)


def prepare_stage(prepare: Callable, batch_size: int = 32) -> Stage:
    """Apply a family's CPU preparation (``ModelFamily.cpu_prepare``) to every ``ok`` row's pixels."""
    return Stage("prepare", PrepareBatch, dict(prepare=prepare),
                 needs=(C.PIXELS, C.WIDTH, C.HEIGHT, C.STATUS, C.ERROR), produces=PRODUCES,
                 resources=Resources(num_cpus=1), batch_size=batch_size)

"""Family-specific image preparation on CPU tasks, between decode and the engine actors.

Some families lay images out before the vision tower (InternLM-XComposer2-4KHD: ``hd_num``
tiling, resize and padding). Doing it here keeps that work on CPU workers and off the
accelerator actors. The stage records the layout it made on the row (``tile_grid``: rows and
columns of tiles), and that column is what tells the engine the image is already laid out: an
image is never taken as prepared because of its size.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from operators.base import Resources, Stage
from operators.rows import map_rows
from schemas import columns as C
from schemas.status import Status

PRODUCES = (C.PIXELS, C.WIDTH, C.HEIGHT, C.TILE_GRID)


class PrepareBatch:
    """Per-batch function (picklable): RGB pixels in, prepared RGB pixels and their tile grid out.

    Args:
        prepare: ``PIL image -> (PIL image, (rows, cols) or None)`` (``ModelFamily.cpu_prepare``).
    """

    def __init__(self, prepare: Callable):
        self.prepare = prepare

    def _row(self, row: dict) -> dict:
        from PIL import Image

        image = Image.frombuffer("RGB", (row[C.WIDTH], row[C.HEIGHT]), row[C.PIXELS], "raw", "RGB", 0, 1)
        out, grid = self.prepare(image)
        out = out.convert("RGB")
        return {C.PIXELS: out.tobytes(), C.WIDTH: out.size[0], C.HEIGHT: out.size[1],
                C.TILE_GRID: list(grid) if grid is not None else None}

    def __call__(self, table: pa.Table) -> pa.Table:
        return map_rows(table, self._row, PRODUCES, failure_status=Status.DECODE_ERROR)


def prepare_stage(prepare: Callable, batch_size: int = 32) -> Stage:
    """Apply a family's CPU preparation (``ModelFamily.cpu_prepare``) to every ``ok`` row's pixels."""
    return Stage("prepare", PrepareBatch, dict(prepare=prepare),
                 needs=(C.PIXELS, C.WIDTH, C.HEIGHT, C.STATUS, C.ERROR), produces=PRODUCES,
                 resources=Resources(num_cpus=1), batch_size=batch_size)

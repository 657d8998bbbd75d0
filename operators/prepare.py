"""Family-specific image preparation on CPU tasks, between decode and the engine actors.

For a family whose image processor vlmbatch owns (InternLM-XComposer2 VL and 4KHD), the whole of
it runs here: resize, the 4KHD HD transform into ``hd_num`` tiles (every raw image, whatever its
size), normalisation into the float32 array the model's vision step takes. The engines then only
run the model: they receive the array as a ``PreparedImage`` (``operators/vlm/engine.py``), which
is what marks it as prepared (its form, never its size), and the plugin's processor passes it
through. The raw pixels are dropped here.

For a preparer that cuts tiles (4KHD: its ``tiles`` attribute is true) the stage records the
layout it made on the row: ``tile_grid`` (rows and columns of tiles, committed), and ``width`` and
``height`` become the laid-out image's (what the model saw, as the HD transform sized it). Other
preparers (VL) add no column and leave the decoded size.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from operators.base import Resources, Stage
from operators.rows import map_rows
from schemas import columns as C
from schemas.status import Status

PRODUCES = (C.MODEL_INPUT, C.MODEL_INPUT_SHAPE)
TILED = (C.TILE_GRID, C.WIDTH, C.HEIGHT)  # also produced by a preparer that cuts tiles


def _tiles(prepare: Callable) -> bool:
    return bool(getattr(prepare, "tiles", False))


class PrepareBatch:
    """Per-batch function (picklable): RGB pixels in, the model's input array (bytes and shape) and tile grid out.

    Args:
        prepare: ``PIL image -> (float32 C-order array, (rows, cols) or None)`` (``ModelFamily.cpu_prepare``);
            the grid is recorded when ``prepare.tiles`` is true.
    """

    def __init__(self, prepare: Callable):
        self.prepare = prepare

    def _row(self, row: dict) -> dict:
        from PIL import Image

        image = Image.frombuffer("RGB", (row[C.WIDTH], row[C.HEIGHT]), row[C.PIXELS], "raw", "RGB", 0, 1)
        array, grid = self.prepare(image)
        if array.dtype.name != "float32" or not array.flags.c_contiguous:
            raise TypeError(f"the family's preparer returned {array.dtype} (contiguous: {array.flags.c_contiguous}); "
                            "expected a C-contiguous float32 array")
        out = {C.MODEL_INPUT: array.tobytes(), C.MODEL_INPUT_SHAPE: list(array.shape)}
        if _tiles(self.prepare):
            out[C.TILE_GRID] = list(grid) if grid is not None else None
        return out

    def __call__(self, table: pa.Table) -> pa.Table:
        tiles = _tiles(self.prepare)
        produces = (*PRODUCES, C.TILE_GRID) if tiles else PRODUCES
        out = map_rows(table, self._row, produces, failure_status=Status.DECODE_ERROR, drop=(C.PIXELS,))
        if not tiles:
            return out
        # A tiled image's size is its layout's (the array's last two dimensions); failed rows keep theirs.
        grids, shapes = out.column(C.TILE_GRID).to_pylist(), out.column(C.MODEL_INPUT_SHAPE).to_pylist()
        sizes = {C.WIDTH: out.column(C.WIDTH).to_pylist(), C.HEIGHT: out.column(C.HEIGHT).to_pylist()}
        for i, (grid, shape) in enumerate(zip(grids, shapes, strict=True)):
            if grid is not None:
                sizes[C.HEIGHT][i], sizes[C.WIDTH][i] = shape[-2], shape[-1]
        for name, values in sizes.items():
            out = out.set_column(out.schema.get_field_index(name), name, pa.array(values, C.TYPES[name]))
        return out


def prepare_stage(prepare: Callable, batch_size: int = 32) -> Stage:
    """Turn every ``ok`` row's pixels into its model input with a family's ``cpu_prepare(model_config)``.

    Rows that fail keep their status; a row whose preparation raises gets ``decode_error`` and the
    reason.
    """
    return Stage("prepare", PrepareBatch, dict(prepare=prepare),
                 needs=(C.PIXELS, C.WIDTH, C.HEIGHT, C.STATUS, C.ERROR),
                 produces=(*PRODUCES, *TILED) if _tiles(prepare) else PRODUCES,
                 drops=(C.PIXELS,), resources=Resources(num_cpus=1), batch_size=batch_size)

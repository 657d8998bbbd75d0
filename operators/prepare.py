"""Family-specific image preparation on CPU tasks, between decode and the engine actors.

For a family whose image processor vlmbatch owns (InternLM-XComposer2 VL and 4KHD), the whole of
it runs here: resize, the 4KHD ``hd_num`` tiling layout, normalisation into the float32 array the
model's vision step takes. The engine's process then only runs the model: its processor passes
the array through (it recognises a prepared input by its form, never by its size; see
``operators/vlm/engine.py`` ``PreparedImage``). The raw pixels are dropped here.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from operators.base import Resources, Stage
from operators.rows import map_rows
from schemas import columns as C
from schemas.status import Status

PRODUCES = (C.MODEL_INPUT, C.MODEL_INPUT_SHAPE)


class PrepareBatch:
    """Per-batch function (picklable): RGB pixels in, the model's input array (bytes and shape) out."""

    def __init__(self, prepare: Callable):
        self.prepare = prepare

    def _row(self, row: dict) -> dict:
        from PIL import Image

        image = Image.frombuffer("RGB", (row[C.WIDTH], row[C.HEIGHT]), row[C.PIXELS], "raw", "RGB", 0, 1)
        array = self.prepare(image)
        if array.dtype.name != "float32" or not array.flags.c_contiguous:
            raise TypeError(f"the family's preparer returned {array.dtype} (contiguous: {array.flags.c_contiguous}); "
                            "expected a C-contiguous float32 array")
        return {C.MODEL_INPUT: array.tobytes(), C.MODEL_INPUT_SHAPE: list(array.shape)}

    def __call__(self, table: pa.Table) -> pa.Table:
        return map_rows(table, self._row, PRODUCES, failure_status=Status.DECODE_ERROR, drop=(C.PIXELS,))


def prepare_stage(prepare: Callable, batch_size: int = 32) -> Stage:
    """Turn every ``ok`` row's pixels into its model input with a family's ``cpu_prepare(model_id)``.

    Rows that fail keep their status; a row whose preparation raises gets ``decode_error`` and the
    reason. ``width`` and ``height`` stay the decoded image's.
    """
    return Stage("prepare", PrepareBatch, dict(prepare=prepare),
                 needs=(C.PIXELS, C.WIDTH, C.HEIGHT, C.STATUS, C.ERROR), produces=PRODUCES, drops=(C.PIXELS,),
                 resources=Resources(num_cpus=1), batch_size=batch_size)

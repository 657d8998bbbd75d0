"""CaptionActor plumbing with a fake engine: statuses, provenance, overlap of batches in flight."""

from __future__ import annotations

import asyncio

import pyarrow as pa

from operators.caption import CaptionActor
from operators.vlm.engine import GenerationResult
from schemas import columns as C
from schemas.provenance import Provenance
from schemas.spec import CaptionConfig
from schemas.status import Status


class FakeEngine:
    name = "fake-1"

    def __init__(self, replies):
        self.replies = replies
        self.active = 0
        self.max_active = 0

    async def generate(self, requests):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await asyncio.sleep(0.05)
        self.active -= 1
        out = []
        for r in requests:
            assert r.images[0].size == (4, 2)
            out.append(self.replies.get(r.request_id, GenerationResult("a red square", 30, 3, "stop")))
        return out

    def shutdown(self):
        pass


def actor(engine) -> CaptionActor:
    prov = Provenance(model_id="m", model_revision="rev", sampling_hash="sh", code_version="cv", run_id="r")
    return CaptionActor(engine=lambda: engine, family="internvl", caption=CaptionConfig(prompt="Describe."),
                        provenance=prov)


def batch(ids, statuses):
    n = len(ids)
    return pa.table({
        C.ID: ids, C.SOURCE: [f"s3://b/{i}" for i in ids], C.STATUS: statuses, C.ERROR: [None] * n,
        C.PIXELS: [bytes(4 * 2 * 3) if s == "ok" else None for s in statuses],
        C.WIDTH: [4 if s == "ok" else None for s in statuses], C.HEIGHT: [2 if s == "ok" else None for s in statuses],
    })


def test_statuses_and_provenance():
    engine = FakeEngine({
        "empty": GenerationResult("  ", 30, 1, "stop"),
        "long": GenerationResult(None, None, None, None, Status.PROMPT_TOO_LONG, "prompt too long"),
    })
    out = asyncio.run(actor(engine)(batch(["a", "bad", "empty", "long"], ["ok", "not_an_image", "ok", "ok"])))
    rows = {r[C.ID]: r for r in out.to_pylist()}
    assert out.num_rows == 4 and C.PIXELS not in out.column_names
    assert rows["a"][C.STATUS] == "ok" and rows["a"][C.CAPTION] == "a red square"
    assert rows["a"][C.NUM_GENERATED_TOKENS] == 3 and rows["a"][C.PROMPT].endswith("assistant\n")
    assert rows["bad"][C.STATUS] == "not_an_image" and rows["bad"][C.CAPTION] is None
    assert rows["empty"][C.STATUS] == "empty_generation"
    assert rows["long"][C.STATUS] == "prompt_too_long" and rows["long"][C.ERROR]
    for r in rows.values():
        assert (r[C.MODEL_ID], r[C.MODEL_REVISION], r[C.ENGINE], r[C.RUN_ID]) == ("m", "rev", "fake-1", "r")


def test_batches_in_flight_overlap_on_one_engine():
    engine = FakeEngine({})
    a = actor(engine)

    async def two():
        return await asyncio.gather(a(batch(["x"], ["ok"])), a(batch(["y"], ["ok"])))

    outs = asyncio.run(two())
    assert [o.column(C.ID).to_pylist() for o in outs] == [["x"], ["y"]]
    assert engine.max_active == 2


def test_a_row_with_bad_pixels_fails_alone():
    t = batch(["good", "bad"], ["ok", "ok"])
    t = t.set_column(t.column_names.index(C.WIDTH), C.WIDTH, pa.array([4, 400]))
    out = asyncio.run(actor(FakeEngine({}))(t))
    rows = {r[C.ID]: r for r in out.to_pylist()}
    assert rows["good"][C.STATUS] == "ok"
    assert rows["bad"][C.STATUS] == "generation_error" and rows["bad"][C.ERROR]


class ArrayEngine(FakeEngine):
    """An engine that takes images as arrays (like the vLLM engine)."""

    takes_arrays = True

    async def generate(self, requests):
        self.seen = [r.images[0] for r in requests]
        return [GenerationResult("ok text", 30, 2, "stop") for _ in requests]


def test_an_array_engine_gets_array_views_and_a_bad_row_still_fails_alone():
    import numpy as np

    t = batch(["good", "bad"], ["ok", "ok"])
    t = t.set_column(t.column_names.index(C.WIDTH), C.WIDTH, pa.array([4, 400]))
    engine = ArrayEngine({})
    out = asyncio.run(actor(engine)(t))
    rows = {r[C.ID]: r for r in out.to_pylist()}
    assert rows["good"][C.STATUS] == "ok" and rows["bad"][C.STATUS] == "generation_error"
    (image,) = engine.seen
    assert isinstance(image, np.ndarray) and image.shape == (2, 4, 3) and image.dtype == np.uint8


def test_request_image_array_view_pil_copy_and_ambiguous_heights():
    import numpy as np
    from PIL import Image

    from operators.vlm.engine import request_image

    pixels = pa.array([bytes(range(5 * 2 * 3))], type=pa.binary())
    buf = pixels[0].as_buffer()
    view = request_image(buf, 2, 5, as_array=True)
    assert view.shape == (5, 2, 3)
    assert np.shares_memory(view, np.frombuffer(buf, dtype=np.uint8))  # no copy of the pixels
    pil = request_image(buf, 2, 5, as_array=False)
    assert isinstance(pil, Image.Image) and pil.size == (2, 5)
    assert np.array_equal(np.asarray(pil), view)
    # Heights an image processor would read as channels go as PIL images even to array engines.
    short = pa.array([bytes(4 * 3 * 3)], type=pa.binary())[0].as_buffer()
    assert isinstance(request_image(short, 4, 3, as_array=True), Image.Image)
    try:
        request_image(buf, 4, 5, as_array=True)
    except ValueError:
        pass
    else:
        raise AssertionError("a buffer of the wrong size must raise ValueError")


class PreparedEngine(FakeEngine):
    """An engine that takes prepared model input (like the vLLM engine)."""

    takes_arrays = takes_prepared = True

    async def generate(self, requests):
        self.seen = requests
        return [GenerationResult("ok text", 30, 2, "stop") for _ in requests]


def test_prepared_rows_reach_the_engine_as_prepared_images_keyed_by_row_id():
    import numpy as np

    from operators.vlm.engine import PreparedImage

    arrays = {"p": np.arange(3 * 2 * 5, dtype=np.float32).reshape(3, 2, 5), "q": np.ones((3, 4, 4), np.float32)}
    t = pa.table({
        C.ID: ["p", "q", "short", "failed"], C.SOURCE: ["s"] * 4, C.STATUS: ["ok", "ok", "ok", "decode_error"],
        C.ERROR: [None, None, None, "x"],
        C.MODEL_INPUT: pa.array([arrays["p"].tobytes(), arrays["q"].tobytes(), b"\x00" * 7, None], pa.large_binary()),
        C.MODEL_INPUT_SHAPE: [[3, 2, 5], [3, 4, 4], [3, 2, 5], None],
    })
    engine = PreparedEngine({})
    out = asyncio.run(actor(engine)(t))
    rows = {r[C.ID]: r for r in out.to_pylist()}
    assert [rows[k][C.STATUS] for k in ("p", "q", "short", "failed")] == ["ok", "ok", "generation_error",
                                                                           "decode_error"]
    assert not {C.MODEL_INPUT, C.MODEL_INPUT_SHAPE} & set(out.column_names)
    for request in engine.seen:
        (image,) = request.images
        assert isinstance(image, PreparedImage) and request.image_keys == (request.request_id,)
        np.testing.assert_array_equal(image.array, arrays[request.request_id])


def test_vllm_prompts_carry_prepared_images_in_the_marked_form_and_row_keys():
    import numpy as np

    from operators.vlm.engine import GenerationRequest, PreparedImage
    from operators.vlm.vllm_engine import vllm_prompt

    prepared = PreparedImage(np.zeros((3, 4, 4), np.float32))
    p = vllm_prompt(GenerationRequest("r", "text", (prepared,), ("row-1",)))
    (tensor,) = p["multi_modal_data"]["image"]["pixel_values"]  # the form the plugins' processors mark prepared
    assert tuple(tensor.shape) == (3, 4, 4) and p["multi_modal_uuids"] == {"image": ["row-1"]}
    raw = np.zeros((2, 4, 3), np.uint8)
    p = vllm_prompt(GenerationRequest("r", "text", (raw,)))
    assert p["multi_modal_data"]["image"] is raw and "multi_modal_uuids" not in p
    assert vllm_prompt(GenerationRequest("r", "text only", ())) == {"prompt": "text only"}

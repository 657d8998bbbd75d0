"""Bench plumbing: parameters from the command line, stamp arithmetic, result files, preprocessing sides.

No timings are asserted: what a user checks of a bench is that it ran the same work on both
sides and wrote a result file they can read.
"""

from __future__ import annotations

import json
import os

import pytest

from bench import run as bench_run
from bench.common import BenchParams, corpus_files, make_corpus, write_result
from bench.pipeline_side import job_spec, steady_rates


def test_cli_params_reach_both_sides(monkeypatch, tmp_path):
    seen = {}

    def fake_compare(params, runs):
        seen.update(params=params, runs=runs)
        return {"ratios": {"steady": 1.0}, "medians": {}}

    import bench.overhead

    monkeypatch.setattr(bench.overhead, "compare", fake_compare)
    rc = bench_run.main(["overhead", "--runs", "2", "--num-images", "5", "--max-tokens", "7", "--load-format",
                         "dummy", "--results-dir", str(tmp_path), "--extra", '{"growth_base": 3}',
                         "--cpu-prepare", "false"])
    assert rc == 0
    p = seen["params"]
    assert (seen["runs"], p.num_images, p.max_tokens, p.load_format, p.extra) == (2, 5, 7, "dummy", {"growth_base": 3})
    assert p.cpu_prepare is False
    [path] = tmp_path.glob("overhead-*.json")
    body = json.loads(path.read_text())
    assert body["name"] == "overhead" and body["runs_per_side"] == 2
    assert body["ratios"] == {"steady": 1.0}
    assert body["machine"]["cpus"] >= 1 and "ray" in body["machine"]["versions"]
    assert len(body["load_start"]) == 3


def test_unknown_bench_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        bench_run.main(["no_such_bench", "--results-dir", str(tmp_path)])


def test_spec_fixes_the_generation_length():
    spec = job_spec(BenchParams(max_tokens=9, model_id="/models/x"), "/corpus", "/sink")
    assert spec.sampling.max_tokens == spec.sampling.min_tokens == 9
    assert spec.sampling.ignore_eos and spec.sampling.temperature == 0
    assert spec.model.model_id == "/models/x"


def test_steady_rates_from_stamps():
    stamps = [{"event": "engine_ready", "t": 100.0, "rows": 0}]
    stamps += [{"event": "batch_done", "t": 100.0 + k, "rows": 10} for k in (2, 4, 6)]
    stamps[0]["cpu"] = {"10": {"role": "front_end", "name": "a", "cpu_s": 1.0},
                        "11": {"role": "engine_core", "name": "b", "cpu_s": 5.0}}
    stamps[-1]["cpu"] = {"10": {"role": "front_end", "name": "a", "cpu_s": 4.0},
                         "11": {"role": "engine_core", "name": "b", "cpu_s": 11.0},
                         "12": {"role": "worker", "name": "c", "cpu_s": 1.5}}  # started inside the window
    rates = steady_rates(stamps, images=30)
    assert rates["steady_s"] == 6.0 and rates["steady_images_per_s"] == 5.0
    assert rates["engine_cpu_s"] == {"front_end": 3.0, "engine_core": 6.0, "worker": 1.5, "total": 10.5}
    assert rates["engine_cpu_ms_per_image"]["front_end"] == 100.0
    assert steady_rates([], images=30) == {}


def test_cpu_seconds_of_this_process_grow_and_name_its_role():
    from bench.procstat import cpu_seconds, tree_cpu

    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    assert cpu_seconds(os.getpid()) > before
    assert tree_cpu()[str(os.getpid())]["role"] == "front_end"
    assert cpu_seconds(2**22 + 7) is None  # no such process


def test_write_result_is_named_by_bench_and_date(tmp_path):
    path = write_result("growth", {"ratios": {"x": 1}}, tmp_path)
    assert path.name.startswith("growth-") and path.suffix == ".json"
    assert json.loads(path.read_text())["ratios"] == {"x": 1}


def test_preprocess_sides_decode_every_image(monkeypatch, tmp_path):
    from bench import common
    from bench.preprocess import _pillow_chunk, _vlmbatch_chunk

    monkeypatch.setattr(common, "CACHE", tmp_path)
    root = make_corpus(5, 64)
    paths = [str(p) for p in corpus_files(root)]
    assert len(paths) == 5
    assert _vlmbatch_chunk((str(root), paths, 1024)) == 5
    assert _pillow_chunk((str(root), paths, 1024)) == 5


def test_what_a_mistake_printed_is_told_apart_from_log_records():
    from bench.cli_runs import describe_output

    text = ("2026-12-01 18:10:44,637\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled\n"
            "2026-12-01 18:10:45,001 INFO pipeline.runner: run r: list -> fetch\n"
            "(MapWorker(MapBatches(CaptionActor)) pid=12) Loading weights\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\n")
    seen = describe_output(text)
    assert seen["first_line"] == "Traceback (most recent call last):" and seen["last_line"] == "ValueError: bad"
    assert seen["traceback"] and seen["lines"] == 6
    assert describe_output("error: one line\n") == {"first_line": "error: one line", "last_line": "error: one line",
                                                   "lines": 1, "traceback": False}


def test_engine_cpu_ratios_compare_the_front_end_per_image():
    from bench.engine_cpu import summarise_runs

    def run(front_end, total, steady):
        return {"steady_s": 2.0, "steady_images_per_s": steady, "images_per_s": 1.0, "prompt_tokens_per_image": 9,
                "engine_cpu_ms_per_image": {"front_end": front_end, "engine_core": 20.0, "total": total}}

    res = {"vlmbatch": [run(4.0, 30.0, 50.0), run(6.0, 40.0, 52.0)], "vlmbatch_raw": [run(10.0, 50.0, 40.0)] * 2}
    body = summarise_runs(BenchParams(family="xcomposer2-vl"), res)
    assert body["medians"]["vlmbatch"]["engine_cpu_ms_per_image"]["front_end"] == 5.0
    assert body["ratios"]["front_end_cpu_prepared_over_raw"] == 0.5
    assert body["ratios"]["engine_total_cpu_prepared_over_raw"] == 0.7
    assert body["ratios"]["steady_prepared_over_raw"] == 1.275


def test_the_bare_side_gets_what_the_pipeline_hands_its_engine(monkeypatch, tmp_path):
    """Prepared model inputs for a family with a CPU preparer (unless cpu_prepare is off), arrays otherwise."""
    import numpy as np

    from bench import common
    from bench.peers import _predecoded
    from operators.vlm.engine import PreparedImage

    monkeypatch.setattr(common, "CACHE", tmp_path)
    params = BenchParams(family="xcomposer2-vl", model_id=str(tmp_path / "no-config"), num_images=2, image_side=64)
    prepared = _predecoded(params)
    assert all(isinstance(im, PreparedImage) and im.array.shape == (3, 490, 490) for im in prepared)
    raw = _predecoded(BenchParams(**{**params.__dict__, "cpu_prepare": False}))
    assert all(isinstance(im, np.ndarray) and im.dtype == np.uint8 for im in raw)

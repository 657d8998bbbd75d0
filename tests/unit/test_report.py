"""The run report and the running count line, on a run committed without Ray (local files)."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from html.parser import HTMLParser

import pytest

from pipeline.figures import TIMELINE_POINTS, LengthCounts, Timeline
from pipeline.progress import RunObserver
from pipeline.report import REPORT_HTML, REPORT_JSON, build_report, histogram, publish_report, throughput_series
from schemas.spec import StorageConfig
from tests import browser
from tests.report_fixtures import BATCH_S, READY_S, STATUSES, make_committed_run


class _Figures(HTMLParser):
    """figure id -> (svg count, bar count, point count, empty placeholders)."""

    def __init__(self):
        super().__init__()
        self.figures: dict[str, dict] = {}
        self.current: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self.current = a.get("id")
            self.figures[self.current] = {"svg": 0, "bars": 0, "points": 0, "empty": 0}
        elif self.current:
            f = self.figures[self.current]
            if tag == "svg":
                f["svg"] += 1
                f["empty"] += "empty" in a.get("class", "")
            f["bars"] += tag == "rect" and a.get("class") == "bar"
            f["points"] += tag == "circle" and a.get("class") == "point"

    def handle_endtag(self, tag):
        if tag == "figure":
            self.current = None


def _figures(html: str) -> dict[str, dict]:
    p = _Figures()
    p.feed(html)
    return p.figures


def test_running_count_line_counts_done_failed_and_rates(tmp_path):
    stream = io.StringIO()
    make_committed_run(str(tmp_path / "run-a"), StorageConfig(), shards=3, rows=10, stream=stream)
    lines = [ln for ln in stream.getvalue().splitlines() if ln.startswith("[vlmbatch]")]
    assert lines[0].startswith("[vlmbatch] 0/30 images done (0 failed)")
    # 3 of every 10 fixture rows fail (not_an_image, decode_error, empty_generation).
    assert re.match(r"\[vlmbatch\] 30/30 images done \(9 failed\), [0-9.]+ images/s, [0-9.]+ tokens/s", lines[-1])
    assert len(lines) >= 4


def test_running_count_is_throttled_but_always_prints_the_end():
    stream = io.StringIO()
    obs = RunObserver(stream=stream, min_interval_s=3600)
    obs.start(20, resumed=10)
    obs.shard({"rows": 5, "by_status": json.dumps({"ok": 5}), "generated_tokens": 50})
    obs.shard({"rows": 5, "by_status": json.dumps({"ok": 4, "decode_error": 1}), "generated_tokens": 40})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # the start and the finished line, nothing between
    assert lines[-1].startswith("[vlmbatch] 10/10 images done (1 failed, 10 resumed)")


def test_an_unknown_total_says_so_until_the_end_and_the_end_once():
    stream = io.StringIO()
    obs = RunObserver(stream=stream, min_interval_s=0.0)
    obs.start(None)
    obs.shard({"rows": 5, "by_status": json.dumps({"ok": 5}), "generated_tokens": 50,
               "qa": json.dumps({"by_status": {"ok": 4}, "prompt_tokens": 9, "generated_tokens": 30, "engine": "e"})})
    obs.finish()
    obs.finish()
    lines = stream.getvalue().splitlines()
    assert [ln.split(" images done")[0] for ln in lines] == ["[vlmbatch] 0/?", "[vlmbatch] 5/?", "[vlmbatch] 5/5"]
    assert obs.tokens == 80, "caption and QA tokens both count"


def test_report_files_hold_the_figures(tmp_path):
    run = tmp_path / "run-b"
    manifest, _ = make_committed_run(str(run), StorageConfig(), shards=4, rows=10)
    report = json.loads((run / REPORT_JSON).read_text())
    figs = report["figures"]
    assert report["run_id"] == "run-b" and report["failed"] == 12
    assert figs["status_breakdown"] == {"ok": 28, "not_an_image": 4, "decode_error": 4, "empty_generation": 4}
    hist = figs["generated_length_histogram"]
    assert sum(hist["counts"]) == hist["rows"] == 28
    assert hist["bin_edges"][0] == 4 and hist["bin_edges"][-1] > 26 >= hist["bin_edges"][-2]
    assert figs["throughput"], "a timeline from the batches' completion times"
    assert figs["startup_s"] == READY_S and report["summary"]["startup_s"] == READY_S
    assert sum(p["images_per_s"] for p in figs["throughput"]) * BATCH_S == pytest.approx(40), \
        "the series adds up to the rows, bucketed by batch"
    html = (run / REPORT_HTML).read_text()
    assert not re.search(r"https?:|src=|href=|<script|<link", html), "self-contained page: nothing to fetch"
    found = _figures(html)
    assert set(found) == {"throughput", "status", "lengths", "stages"}
    assert found["status"]["bars"] == 4 and found["lengths"]["bars"] == len(hist["counts"])
    assert found["throughput"]["points"] == len(figs["throughput"])
    assert 'class="segment"' in html and "engine start-up 2.0 s" in html, "start-up drawn as its own segment"
    assert found["stages"]["empty"] == 1, "no Ray Data stats in a Ray-less run: said, not faked"
    assert "qa_status_breakdown" not in figs and "QA pairs" not in html, "a caption run shows no QA figures"


def test_throughput_series_from_batch_completions_after_start_up():
    # Start-up until 10 s, then four batches of 8 rows, two at a time, every 2 s.
    batches = [(12.0, 8, 80), (12.1, 8, 80), (14.0, 8, 80), (14.1, 8, 70)]
    series = throughput_series(batches, startup_s=10.0)
    width = (14.1 - 10.0) / 4
    assert sum(p["images_per_s"] * width for p in series) == pytest.approx(32, rel=1e-3)
    assert series[0]["t_s"] > 10.0, "nothing is drawn inside the start-up segment"
    true_rate = 32 / (14.1 - 10.0)
    assert max(p["images_per_s"] for p in series) < 3 * true_rate, "no single spike of a shard's commit"
    assert throughput_series([]) == []
    one = throughput_series([(5.0, 36, 100)], startup_s=4.0)
    assert one == [{"t_s": 5.0, "images_per_s": 36.0, "tokens_per_s": 100.0}]


def test_qa_figures_reach_the_summary_the_report_and_the_page(tmp_path):
    run = tmp_path / "run-qa"
    manifest, _ = make_committed_run(str(run), StorageConfig(), shards=2, rows=10, qa=True)
    s = manifest.summary
    # 14 ok rows, two pairs each; rows 0, 3, 6, ... repeat themselves.
    ok_rows = [i for i in range(20) if STATUSES[i % 10] == "ok"]
    assert s.qa_pairs == 28 and s.qa_by_status == {"ok": 28 - sum(i % 3 == 0 for i in ok_rows),
                                                   "repetition": sum(i % 3 == 0 for i in ok_rows)}
    assert s.qa_generated_tokens == sum(3 + (3 + 1) + 2 * (i % 4) for i in ok_rows) and s.qa_prompt_tokens == 60 * 14
    assert "qa 28 pairs (ok=" in s.render() and "repetition=" in s.render()
    report = json.loads((run / REPORT_JSON).read_text())
    assert report["qa_model_id"] == "tiny-qa" and report["qa_engine"] == "transformers-5"
    figs = report["figures"]
    assert figs["qa_status_breakdown"] == s.qa_by_status
    hist = figs["qa_answer_length_histogram"]
    assert hist["rows"] == s.qa_by_status["ok"]
    found = _figures((run / REPORT_HTML).read_text())
    assert set(found) == {"throughput", "status", "lengths", "qa-status", "qa-lengths", "stages"}
    assert found["qa-status"]["bars"] == 2 and found["qa-lengths"]["bars"] == len(hist["counts"])
    html = (run / REPORT_HTML).read_text()
    assert "tiny-qa" in html and "QA pairs" in html


def test_report_page_renders_its_figures_in_a_browser(tmp_path):
    """Headless Chromium lays out the page: the four figures are there, with bars and points."""
    run = tmp_path / "run-c"
    make_committed_run(str(run), StorageConfig(), shards=6, rows=10)
    dom = browser.dump_dom(str(run / REPORT_HTML))
    found = _figures(dom)
    assert set(found) == {"throughput", "status", "lengths", "stages"}
    assert found["status"]["bars"] == 4 and found["lengths"]["bars"] >= 5 and found["throughput"]["points"] >= 5
    assert "Run run-c" in dom and "Status breakdown" in dom
    png = tmp_path / "report.png"
    browser.screenshot(str(run / REPORT_HTML), str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_report_that_cannot_be_written_never_fails_the_committed_run(tmp_path, caplog):
    run = tmp_path / "run-d"
    manifest, observer = make_committed_run(str(run), StorageConfig(), shards=1, rows=10, report=False)
    (run / REPORT_JSON).mkdir()  # a directory where the report file should go
    assert publish_report(manifest, str(run), StorageConfig(), observer.timeline) is None
    assert "is committed but its report could not be written" in caplog.text
    assert (run / "manifest.json").exists()


@pytest.mark.parametrize("qa", [False, True])
def test_writer_length_counts_give_the_histograms_a_file_read_gives(tmp_path, qa):
    """The run's report takes the lengths the writer counted; a report rebuilt from the manifest reads the files."""
    run = tmp_path / f"run-{qa}"
    manifest, _ = make_committed_run(str(run), StorageConfig(), shards=3, rows=10, qa=qa)
    written = json.loads((run / REPORT_JSON).read_text())["figures"]
    rebuilt = build_report(manifest, str(run), StorageConfig())["figures"]
    assert written["generated_length_histogram"] == rebuilt["generated_length_histogram"]
    assert written.get("qa_answer_length_histogram") == rebuilt.get("qa_answer_length_histogram")
    ok = [(i * 7) % 23 + 4 for i in range(30) if STATUSES[i % 10] == "ok"]
    hist = written["generated_length_histogram"]
    assert hist["rows"] == len(ok) and hist["mean"] == round(sum(ok) / len(ok), 2)
    assert (written.get("qa_answer_length_histogram") is not None) == qa


def test_histogram_of_counts_is_the_histogram_of_the_lengths():
    lengths = [3, 3, 4, 9, 27, 27, 27, 60]
    hist = histogram(Counter(lengths))
    assert hist["rows"] == 8 and sum(hist["counts"]) == 8 and hist["mean"] == round(sum(lengths) / 8, 2)
    assert hist["bin_edges"][0] == 3 and hist["bin_edges"][-2] <= 60 < hist["bin_edges"][-1]
    assert histogram({}) == {"bin_edges": [], "counts": [], "rows": 0}


def test_a_shard_without_length_counts_leaves_no_histogram():
    counts = LengthCounts()
    counts.add(json.dumps({"captions": {"5": 2}, "answers": None}))
    counts.add(json.dumps({"captions": {"5": 1, "7": 1}, "answers": None}))
    assert counts.captions == {5: 3, 7: 1} and counts.answers is None
    counts.add(json.dumps({"captions": None, "answers": None}))
    counts.add(json.dumps({"captions": {"9": 1}, "answers": None}))
    assert counts.captions is None, "a histogram over some shards only would mislead"


def test_timeline_stays_bounded_and_adds_up():
    timeline = Timeline(started_at=1000.0)
    n = 3 * TIMELINE_POINTS
    for shard in range(n // 64):  # 64 batches a shard, one every 0.1 s
        batches = [[1000.0 + 0.1 * (shard * 64 + k), 8, 80] for k in range(64)]
        timeline.add(json.dumps({"batches": batches, "ready_at": 1001.0}))
        assert len(timeline.batches) <= TIMELINE_POINTS
    points = timeline.batches
    assert sum(p[1] for p in points) == 8 * n and sum(p[2] for p in points) == 80 * n
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    assert points[-1][0] == pytest.approx(0.1 * (n - 1)), "the last completion is kept as it was"
    series = throughput_series(points, timeline.startup_s)
    assert sum(p["images_per_s"] for p in series) * (points[-1][0] - 1.0) / len(series) == \
        pytest.approx(8 * n, rel=0.01)

"""The run report: ``report.json`` and ``report.html`` beside the manifest.

    <sink>/<run_id>/manifest.json    the commit
    <sink>/<run_id>/report.json      the figures below, as data
    <sink>/<run_id>/report.html      the same figures as a page a person opens (inline SVG, no network)

Figures: throughput over time (images/s of this attempt, from the engine actors' per-batch
completion times) with the engines' start-up as its own segment, status breakdown (from the
manifest), generated-length histogram (read from the committed files' token counts), per-stage
time (Ray Data's operator statistics); for runs with QA, the pairs' status breakdown and the
answers' length histogram, and the QA model's provenance beside the caption model's. The report is written
after the manifest and never changes what was committed: a report that cannot be written is a
warning, not a failed run. ``build_report`` also works from the manifest alone, which is how
``vlmbatch report`` rebuilds a report a run did not leave.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from operators.storage import filesystem, join_uri
from schemas import columns as C
from schemas.status import Status

if TYPE_CHECKING:
    import ray.data

    from pipeline.figures import Timeline
    from schemas.manifest import Manifest
    from schemas.spec import StorageConfig

log = logging.getLogger(__name__)

#: 2: throughput from per-batch completion times with ``startup_s``; QA figures and provenance.
REPORT_VERSION = "2"
REPORT_JSON = "report.json"
#: Manifest fields the report carries as they are: the caption model's provenance, then the QA model's.
PROVENANCE = ("model_id", "model_revision", "engine", "sampling_hash", "qa_model_id", "qa_model_revision",
              "qa_engine", "qa_sampling_hash", "code_version")
REPORT_HTML = "report.html"
HIST_BINS = 20


def stage_times(ds: ray.data.Dataset) -> list[dict]:
    """Per-operator time of an executed dataset: busy task-seconds and span, from Ray Data's stats.

    Ray Data keeps these in an internal summary; if its shape changes, the report says so
    instead of failing.
    """
    try:
        summary = ds._get_stats_summary()
    except Exception as exc:  # noqa: BLE001 - an internal API; the report is optional
        log.warning("no Ray Data stage statistics: %s", exc)
        return []
    out: list[dict] = []

    def walk(s) -> None:
        for parent in getattr(s, "parents", []) or []:
            walk(parent)
        for op in s.operators_stats:
            busy = op.wall_time.sum if op.wall_time is not None else None
            out.append({"stage": op.operator_name, "busy_s": round(float(busy), 3) if busy is not None else None,
                        "span_s": round(float(op.time_total_s or 0.0), 3)})

    walk(summary)
    return out


def throughput_series(batches: list[tuple[float, int, int]], startup_s: float | None = None,
                      buckets: int = 20) -> list[dict]:
    """Images/s and tokens/s over time from per-batch completions ``(t_s, rows, tokens)``, ``t_s`` from the start.

    The engines' start-up (``[0, startup_s]``) is not part of the series: the page draws it as its
    own segment. The series covers the start of work to the last completion in as many buckets as
    there were batches (at most ``buckets``), each the rows done in it over its width, so it adds up
    to the rows and a short run is not one spike.
    """
    if not batches:
        return []
    end = max(t for t, _, _ in batches)
    begin = min(startup_s or 0.0, min(t for t, _, _ in batches))
    n = max(1, min(buckets, len(batches)))
    width = max((end - begin) / n, 1e-9)
    rows, tokens = [0] * n, [0] * n
    for t, r, k in batches:
        b = min(n - 1, int((t - begin) / width))
        rows[b] += r
        tokens[b] += k
    return [{"t_s": round(begin + (b + 1) * width, 3), "images_per_s": round(rows[b] / width, 4),
             "tokens_per_s": round(tokens[b] / width, 3)} for b in range(n)]


def histogram(lengths: list[int]) -> dict:
    """About :data:`HIST_BINS` bins of whole-token width over ``lengths``."""
    if not lengths:
        return {"bin_edges": [], "counts": [], "rows": 0}
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // HIST_BINS))
    edges = list(range(lo, hi + width + 1, width))
    counts = [0] * (len(edges) - 1)
    for n in lengths:
        counts[min((n - lo) // width, len(counts) - 1)] += 1
    return {"bin_edges": edges, "counts": counts, "rows": len(lengths), "mean": round(sum(lengths) / len(lengths), 2)}


def length_histograms(manifest: Manifest, run_root: str,
                      storage: StorageConfig | None) -> tuple[dict | None, dict | None]:
    """Generated tokens of ``ok`` captions and of ``ok`` QA answers, read through the manifest.

    Either is None when the records carry no such counts (a run without QA; a version-1 run's QA pairs).
    """
    fs, root = filesystem(run_root, storage)
    captions: list[int] | None = []
    answers: list[int] | None = []
    for entry in manifest.files:
        with fs.open(f"{root}/{entry.path}", "rb") as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            names = set(schema.names)
            if C.NUM_GENERATED_TOKENS not in names or C.STATUS not in names:
                captions = None
            qa_counted = C.QA in names and C.NUM_GENERATED_TOKENS in {
                pair.name for pair in schema.field(C.QA).type.value_type}
            if not qa_counted:
                answers = None
            t = pf.read(columns=[c for c in (C.NUM_GENERATED_TOKENS, C.STATUS, C.QA)
                                 if c in names and (c != C.QA or qa_counted)])
        rows = t.to_pylist()
        if captions is not None:
            captions += [int(r[C.NUM_GENERATED_TOKENS]) for r in rows
                         if r[C.STATUS] == Status.OK.value and r[C.NUM_GENERATED_TOKENS] is not None]
        if answers is not None:
            answers += [int(p[C.NUM_GENERATED_TOKENS]) for r in rows for p in r.get(C.QA) or []
                        if p[C.STATUS] == Status.OK.value and p[C.NUM_GENERATED_TOKENS] is not None]
    return (histogram(captions) if captions is not None else None,
            histogram(answers) if answers is not None and manifest.summary.qa_pairs else None)


def build_report(manifest: Manifest, run_root: str, storage: StorageConfig | None = None,
                 timeline: Timeline | None = None, stages: list[dict] | None = None) -> dict:
    """The report of a committed run as JSON-ready data."""
    summary = manifest.summary
    failed = {k: v for k, v in summary.by_status.items() if k != Status.OK.value}
    captions, answers = length_histograms(manifest, run_root, storage)
    startup = timeline.startup_s if timeline is not None else summary.startup_s
    figures = {
        "throughput": throughput_series(timeline.batches if timeline else [], startup),
        "startup_s": startup,
        "status_breakdown": dict(sorted(summary.by_status.items(), key=lambda kv: -kv[1])),
        "generated_length_histogram": captions,
        "stage_time": stages or [],
    }
    if summary.qa_pairs:
        figures["qa_status_breakdown"] = dict(sorted(summary.qa_by_status.items(), key=lambda kv: -kv[1]))
        figures["qa_answer_length_histogram"] = answers
    return {
        "report_version": REPORT_VERSION,
        "run_id": manifest.run_id,
        "job": manifest.job,
        "created_at": manifest.created_at,
        **{k: getattr(manifest, k) for k in PROVENANCE},
        "summary": summary.model_dump(mode="json"),
        "failed": sum(failed.values()),
        "figures": figures,
    }


def write_report(report: dict, run_root: str, storage: StorageConfig | None = None) -> None:
    """Write ``report.json`` and ``report.html`` under ``run_root``."""
    from pipeline.report_html import render_html
    from pipeline.shards import write_bytes_atomic

    write_bytes_atomic(join_uri(run_root, REPORT_JSON), json.dumps(report, indent=2).encode(), storage)
    write_bytes_atomic(join_uri(run_root, REPORT_HTML), render_html(report).encode(), storage)


def publish_report(manifest: Manifest, run_root: str, storage: StorageConfig | None = None,
                   timeline: Timeline | None = None, ds: ray.data.Dataset | None = None) -> dict | None:
    """Build and write the report of a committed run; None (and a warning) if it cannot be written.

    The manifest is already the truth when this runs: a report failure never fails the run.
    """
    try:
        report = build_report(manifest, run_root, storage, timeline, stage_times(ds) if ds is not None else [])
        write_report(report, run_root, storage)
    except Exception as exc:  # noqa: BLE001 - the run is committed; a report failure is only a warning
        log.warning("run %s is committed but its report could not be written: %s", manifest.run_id, exc)
        return None
    return report


def read_report(run_root: str, storage: StorageConfig | None = None) -> dict[str, Any] | None:
    """The ``report.json`` of a run, or None if it has none."""
    fs, root = filesystem(run_root, storage)
    try:
        return json.loads(fs.cat_file(f"{root}/{REPORT_JSON}"))
    except FileNotFoundError:
        return None

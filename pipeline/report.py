"""The run report: ``report.json`` and ``report.html`` beside the manifest.

    <sink>/<run_id>/manifest.json    the commit
    <sink>/<run_id>/report.json      the figures below, as data
    <sink>/<run_id>/report.html      the same figures as a page a person opens (inline SVG, no network)

Figures: throughput over time (images/s of this attempt, from the engine actors' per-batch
completion times) with the engines' start-up as its own segment, status breakdown (from the
manifest), generated-length histogram (from the writer's per-shard length counts, or read from the committed
files' token counts for a report rebuilt later), per-stage
time (Ray Data's operator statistics); for runs with QA, the pairs' status breakdown and the
answers' length histogram, and the QA model's provenance beside the caption model's. The report is written
after the manifest and never changes what was committed: a report that cannot be written is a
warning, not a failed run. ``build_report`` also works from the manifest alone, which is how
``vlmbatch report`` rebuilds a report a run did not leave.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from operators.storage import filesystem, join_uri
from schemas import columns as C
from schemas.status import Status

if TYPE_CHECKING:
    import ray.data

    from pipeline.figures import LengthCounts, Timeline
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


def histogram(counts: Mapping[int, int]) -> dict:
    """About :data:`HIST_BINS` bins of whole-token width over lengths given as ``{length: how many}``."""
    counts = {k: n for k, n in counts.items() if n}
    if not counts:
        return {"bin_edges": [], "counts": [], "rows": 0}
    lo, hi = min(counts), max(counts)
    width = max(1, -(-(hi - lo + 1) // HIST_BINS))
    edges = list(range(lo, hi + width + 1, width))
    bins = [0] * (len(edges) - 1)
    for length, n in counts.items():
        bins[min((length - lo) // width, len(bins) - 1)] += n
    rows = sum(counts.values())
    return {"bin_edges": edges, "counts": bins, "rows": rows,
            "mean": round(sum(k * n for k, n in counts.items()) / rows, 2)}


def lengths_from_files(manifest: Manifest, run_root: str, storage: StorageConfig | None) -> LengthCounts:
    """The committed files' generated lengths, counted file by file (a report rebuilt from the manifest alone).

    The driver holds one file's two or three columns at a time and the counts, never a row list.
    """
    from pipeline.figures import LengthCounts, length_counts

    fs, root = filesystem(run_root, storage)
    lengths = LengthCounts()
    for entry in manifest.files:
        with fs.open(f"{root}/{entry.path}", "rb") as f:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            lengths.add(length_counts(pf.read(columns=[c for c in (C.NUM_GENERATED_TOKENS, C.STATUS, C.QA)
                                                       if c in names], use_threads=False)))
    return lengths


def length_histograms(manifest: Manifest, lengths: LengthCounts) -> tuple[dict | None, dict | None]:
    """Histograms of the generated tokens of ``ok`` captions and of ``ok`` QA answers.

    Either is None when the records carry no such counts (a run without QA; a version-1 run's QA pairs).
    """
    return (histogram(lengths.captions) if lengths.captions is not None else None,
            histogram(lengths.answers) if lengths.answers is not None and manifest.summary.qa_pairs else None)


def build_report(manifest: Manifest, run_root: str, storage: StorageConfig | None = None,
                 timeline: Timeline | None = None, stages: list[dict] | None = None,
                 lengths: LengthCounts | None = None) -> dict:
    """The report of a committed run as JSON-ready data.

    ``lengths``: the run's generated lengths as its writer counted them (the ledger's); without
    them, the committed files are read for them (:func:`lengths_from_files`).
    """
    summary = manifest.summary
    failed = {k: v for k, v in summary.by_status.items() if k != Status.OK.value}
    if lengths is None:
        lengths = lengths_from_files(manifest, run_root, storage)
    captions, answers = length_histograms(manifest, lengths)
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
                   timeline: Timeline | None = None, ds: ray.data.Dataset | None = None,
                   lengths: LengthCounts | None = None) -> dict | None:
    """Build and write the report of a committed run; None (and a warning) if it cannot be written.

    The manifest is already the truth when this runs: a report failure never fails the run.
    """
    try:
        report = build_report(manifest, run_root, storage, timeline, stage_times(ds) if ds is not None else [],
                              lengths)
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

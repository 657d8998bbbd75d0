"""The run report: ``report.json`` and ``report.html`` beside the manifest.

    <sink>/<run_id>/manifest.json    the commit
    <sink>/<run_id>/report.json      the figures below, as data
    <sink>/<run_id>/report.html      the same figures as a page a person opens (inline SVG, no network)

Figures: throughput over time (images/s of this attempt, from the commit loop's timeline),
status breakdown (from the manifest), generated-length histogram (read from the committed
files' token counts), per-stage time (Ray Data's operator statistics). The report is written
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

    from schemas.manifest import Manifest
    from schemas.spec import StorageConfig

log = logging.getLogger(__name__)

REPORT_VERSION = "1"
REPORT_JSON = "report.json"
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


def throughput_series(timeline: list[tuple[float, int, int]], buckets: int = 20) -> list[dict]:
    """Images/s and tokens/s per time bucket, from cumulative (t_s, rows, tokens) points."""
    if not timeline:
        return []
    end = max(t for t, _, _ in timeline) or 1e-9
    width = end / buckets
    series = []
    prev_rows = prev_tokens = 0
    i = 0
    points = sorted(timeline)
    for b in range(1, buckets + 1):
        rows, tokens = prev_rows, prev_tokens
        while i < len(points) and points[i][0] <= b * width + 1e-9:
            rows, tokens = points[i][1], points[i][2]
            i += 1
        series.append({"t_s": round(b * width, 3), "images_per_s": round((rows - prev_rows) / width, 4),
                       "tokens_per_s": round((tokens - prev_tokens) / width, 3)})
        prev_rows, prev_tokens = rows, tokens
    return series


def length_histogram(manifest: Manifest, run_root: str, storage: StorageConfig | None) -> dict | None:
    """Histogram of generated tokens over ``ok`` rows, read through the manifest; None without the column."""
    fs, root = filesystem(run_root, storage)
    lengths: list[int] = []
    for entry in manifest.files:
        with fs.open(f"{root}/{entry.path}", "rb") as f:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            if C.NUM_GENERATED_TOKENS not in names or C.STATUS not in names:
                return None
            t = pf.read(columns=[C.NUM_GENERATED_TOKENS, C.STATUS], use_threads=False)
        for n, status in zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True):
            if status == Status.OK.value and n is not None:
                lengths.append(int(n))
    if not lengths:
        return {"bin_edges": [], "counts": [], "rows": 0}
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // HIST_BINS))
    edges = list(range(lo, hi + width + 1, width))
    counts = [0] * (len(edges) - 1)
    for n in lengths:
        counts[min((n - lo) // width, len(counts) - 1)] += 1
    return {"bin_edges": edges, "counts": counts, "rows": len(lengths), "mean": round(sum(lengths) / len(lengths), 2)}


def build_report(manifest: Manifest, run_root: str, storage: StorageConfig | None = None,
                 timeline: list[tuple[float, int, int]] | None = None, stages: list[dict] | None = None) -> dict:
    """The report of a committed run as JSON-ready data."""
    summary = manifest.summary
    failed = {k: v for k, v in summary.by_status.items() if k != Status.OK.value}
    return {
        "report_version": REPORT_VERSION,
        "run_id": manifest.run_id,
        "job": manifest.job,
        "created_at": manifest.created_at,
        "model_id": manifest.model_id,
        "engine": manifest.engine,
        "code_version": manifest.code_version,
        "summary": summary.model_dump(mode="json"),
        "failed": sum(failed.values()),
        "figures": {
            "throughput": throughput_series(timeline or []),
            "status_breakdown": dict(sorted(summary.by_status.items(), key=lambda kv: -kv[1])),
            "generated_length_histogram": length_histogram(manifest, run_root, storage),
            "stage_time": stages or [],
        },
    }


def write_report(report: dict, run_root: str, storage: StorageConfig | None = None) -> None:
    """Write ``report.json`` and ``report.html`` under ``run_root``."""
    from pipeline.report_html import render_html
    from pipeline.shards import write_bytes_atomic

    write_bytes_atomic(join_uri(run_root, REPORT_JSON), json.dumps(report, indent=2).encode(), storage)
    write_bytes_atomic(join_uri(run_root, REPORT_HTML), render_html(report).encode(), storage)


def publish_report(manifest: Manifest, run_root: str, storage: StorageConfig | None = None,
                   timeline: list[tuple[float, int, int]] | None = None,
                   ds: ray.data.Dataset | None = None) -> dict | None:
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

"""``vlmbatch status RUN`` and ``vlmbatch report RUN``: a run's committed state, read from object storage.

``RUN`` is a run root, ``<sink.uri>/<run_id>`` (``s3://bucket/captions/run-1``, a local path).
``status`` reads the manifest (or, before the commit, what staging holds); ``report`` prints
the run report and saves ``report.html`` / ``report.json`` where asked, rebuilding the report
from the manifest when the run left none. Both only read; exit 0 for a committed run, 3 for a
run that is not committed (yet), 2 for a run root that holds nothing, 5 for a store that cannot
be read (unreachable, credentials rejected, no such bucket: one line, after one quick probe).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOT_COMMITTED = 3
NOTHING = 2
UNREADABLE = 5


def _storage(endpoint_url: str | None):
    from schemas.spec import StorageConfig

    return StorageConfig(endpoint_url=endpoint_url)


def status_lines(run_root: str, endpoint_url: str | None = None) -> tuple[int, list[str]]:
    """Exit code and the lines ``vlmbatch status`` prints."""
    from pipeline.commit import read_manifest
    from pipeline.shards import scan_staging

    storage = _storage(endpoint_url)
    run_root = run_root.rstrip("/")
    manifest = read_manifest(run_root, storage)
    if manifest is not None:
        s = manifest.summary
        lines = [
            f"run {manifest.run_id}: committed {manifest.created_at}",
            f"job {manifest.job}, model {manifest.model_id}, engine {manifest.engine}"
            + (f"; qa model {manifest.qa_model_id}, engine {manifest.qa_engine}" if manifest.qa_model_id else ""),
            f"{len(manifest.files)} data files, {len(manifest.error_files)} error files",
            *s.render().splitlines(),
        ]
        if s.rows_resumed:
            lines.append(f"{s.rows_resumed} rows came from earlier attempts (resumed)")
        return 0, lines
    staged = scan_staging(run_root, storage)
    if not staged.files:
        return NOTHING, [f"{run_root}: no manifest and nothing staged (not a run, or not started)"]
    counts = ", ".join(f"{k}={v}" for k, v in sorted(staged.by_status.items()))
    return NOT_COMMITTED, [
        f"{run_root}: NOT committed (running, or died: rerun with the same run id to resume)",
        f"{len(staged.files)} shard files staged, {staged.rows} rows ({counts})",
    ]


def probe(run_root: str, endpoint_url: str | None) -> str | None:
    """One line on why the run root's store cannot be read (one quick request), or None if it can."""
    from operators.storage import split_uri
    from pipeline.preflight import PreflightError, probe_filesystem, store_problem

    storage = _storage(endpoint_url)
    protocol, path = split_uri(run_root)
    if protocol not in ("s3", "s3a"):
        return None
    try:
        fs, _ = probe_filesystem(run_root, storage)
        bucket, _, key = path.partition("/")
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
    except PreflightError as exc:
        return f"error: {exc}"
    except Exception as exc:  # noqa: BLE001 - every answer becomes one line
        line = f"error: {store_problem('run', run_root, storage, exc, 'list')}"
        return line + ("" if endpoint_url else " (--endpoint-url names a non-AWS store)")
    return None


def status_command(run_root: str, endpoint_url: str | None = None) -> int:
    """Body of ``vlmbatch status``."""
    problem = probe(run_root, endpoint_url)
    if problem:
        print(problem, file=sys.stderr)
        return UNREADABLE
    code, lines = status_lines(run_root, endpoint_url)
    print("\n".join(lines))
    return code


def load_or_build_report(run_root: str, endpoint_url: str | None = None) -> dict | None:
    """The run's ``report.json``, or one built from its manifest; None if the run is not committed."""
    from pipeline.commit import read_manifest
    from pipeline.report import build_report, read_report

    storage = _storage(endpoint_url)
    run_root = run_root.rstrip("/")
    report = read_report(run_root, storage)
    if report is not None:
        return report
    manifest = read_manifest(run_root, storage)
    if manifest is None:
        return None
    return build_report(manifest, run_root, storage)


def report_command(run_root: str, endpoint_url: str | None = None, html_out: str | None = None,
                   json_out: str | None = None) -> int:
    """Body of ``vlmbatch report``."""
    from pipeline.report_html import render_html

    problem = probe(run_root, endpoint_url)
    if problem:
        print(problem, file=sys.stderr)
        return UNREADABLE
    report = load_or_build_report(run_root, endpoint_url)
    if report is None:
        print(f"{run_root} is not committed: no report yet (see `vlmbatch status`)", file=sys.stderr)
        return NOT_COMMITTED
    s, figs = report["summary"], report["figures"]
    print(f"run {report['run_id']} ({report['job']}), committed {report['created_at']}")
    print(f"rows {s['rows_out']}/{s['rows_in']}, failed {report['failed']}, "
          f"{s['images_per_s']:.2f} images/s, {s['generated_tokens_per_s']:.1f} tokens/s, wall {s['wall_s']:.1f} s")
    if figs.get("startup_s") is not None:
        print(f"engine start-up {figs['startup_s']:.1f} s")
    print("status: " + ", ".join(f"{k}={v}" for k, v in figs["status_breakdown"].items()))
    hist = figs["generated_length_histogram"]
    if hist and hist.get("rows"):
        print(f"generated length: mean {hist['mean']} tokens over {hist['rows']} ok rows, "
              f"range {hist['bin_edges'][0]}-{hist['bin_edges'][-1] - 1}")
    if "qa_status_breakdown" in figs:
        print(f"qa: {s.get('qa_pairs', 0)} pairs, {s.get('qa_generated_tokens_per_s', 0):.1f} tokens/s, model "
              f"{report.get('qa_model_id')} ({report.get('qa_engine')}); status: "
              + ", ".join(f"{k}={v}" for k, v in figs["qa_status_breakdown"].items()))
        answers = figs.get("qa_answer_length_histogram")
        if answers and answers.get("rows"):
            print(f"qa answer length: mean {answers['mean']} tokens over {answers['rows']} ok answers")
    for stage in figs["stage_time"]:
        if stage.get("busy_s") is not None:
            print(f"stage {stage['stage']}: {stage['busy_s']:.1f} task-s over {stage['span_s']:.1f} s")
    if html_out:
        Path(html_out).write_text(render_html(report))
        print(f"wrote {html_out}")
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))
        print(f"wrote {json_out}")
    return 0

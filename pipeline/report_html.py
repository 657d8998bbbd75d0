"""``report.html``: the run report as one self-contained page (inline CSS and SVG, no script, no network)."""

from __future__ import annotations

from html import escape

from pipeline.report_svg import bar_chart, empty_chart, hbar_chart, line_chart
from schemas.status import Status

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; margin-bottom: 4px; } .sub { color: #666; margin-top: 0; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; min-width: 120px; }
.card b { display: block; font-size: 20px; } .card.bad b { color: #c9302c; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(580px, 1fr)); gap: 16px; }
figure { border: 1px solid #ddd; border-radius: 6px; margin: 0; padding: 8px; }
figcaption { font-weight: 600; margin-bottom: 6px; }
table { border-collapse: collapse; font-size: 13px; } td, th { border-bottom: 1px solid #eee; padding: 3px 10px; }
"""


def _card(label: str, value: str, bad: bool = False) -> str:
    return f'<div class="card{" bad" if bad else ""}"><b>{escape(value)}</b>{escape(label)}</div>'


def _figure(fig_id: str, caption: str, svg: str) -> str:
    return f'<figure id="{fig_id}"><figcaption>{escape(caption)}</figcaption>{svg}</figure>'


def _throughput(series: list[dict], startup_s: float | None) -> str:
    title = "Throughput over time"
    if not series:
        return _figure("throughput", title, empty_chart(title, "no rows were processed in this attempt"))
    startup = f", engine start-up {startup_s:.1f} s" if startup_s else ""
    segment = (startup_s, "start-up") if startup_s else None
    return _figure("throughput", f"{title} (images/s of this attempt, from batch completions{startup})",
                   line_chart(title, [p["t_s"] for p in series], [p["images_per_s"] for p in series],
                              "seconds since the plan started", "images/s", segment=segment))


def _status(fig_id: str, title: str, by_status: dict[str, int], unit: str) -> str:
    colors = {Status.OK.value: "#5cb85c"}
    labels = list(by_status)
    svg = hbar_chart(title, labels, [float(by_status[k]) for k in labels], unit)
    # Green for ok rows, the palette for failures, so failures stand out.
    for label in labels:
        if label in colors:
            attr = f'data-label="{escape(label)}"'
            svg = svg.replace(attr, f'{attr} style="fill:{colors[label]}"')
    return _figure(fig_id, title, svg)


def _lengths(fig_id: str, title: str, hist: dict | None, unit: str) -> str:
    if hist is None:
        return _figure(fig_id, title, empty_chart(title, "these records carry no generated-token counts"))
    if not hist["counts"]:
        return _figure(fig_id, title, empty_chart(title, f"no ok {unit}s"))
    edges = hist["bin_edges"]
    labels = [str(edges[i]) if edges[i + 1] - edges[i] == 1 else f"{edges[i]}-{edges[i + 1] - 1}"
              for i in range(len(hist["counts"]))]
    return _figure(fig_id, f"{title} (tokens per ok {unit}, mean {hist.get('mean', 0)})",
                   bar_chart(title, labels, [float(c) for c in hist["counts"]], "generated tokens", f"{unit}s"))


def _stages(stages: list[dict]) -> str:
    title = "Per-stage time"
    rows = [s for s in stages if s.get("busy_s") is not None]
    if not rows:
        return _figure("stages", title, empty_chart(title, "no Ray Data stage statistics for this attempt"))
    return _figure("stages", f"{title} (task-seconds per Ray Data operator)",
                   hbar_chart(title, [s["stage"] for s in rows], [s["busy_s"] for s in rows], "task-seconds"))


def render_html(report: dict) -> str:
    """The page of a report made by :func:`pipeline.report.build_report`."""
    s = report["summary"]
    figs = report["figures"]
    card_list = [
        _card("rows in", str(s["rows_in"])),
        _card("rows out", str(s["rows_out"])),
        _card("failed", str(report["failed"]), bad=report["failed"] > 0),
        _card("images/s", f"{s['images_per_s']:.2f}"),
        _card("generated tokens/s", f"{s['generated_tokens_per_s']:.1f}"),
        _card("wall", f"{s['wall_s']:.1f} s"),
    ]
    if s.get("startup_s") is not None:
        card_list.append(_card("engine start-up", f"{s['startup_s']:.1f} s"))
    body = [_throughput(figs["throughput"], figs.get("startup_s")),
            _status("status", "Status breakdown", figs["status_breakdown"], "rows"),
            _lengths("lengths", "Generated length", figs["generated_length_histogram"], "row")]
    if "qa_status_breakdown" in figs:
        qa_bad = sum(v for k, v in figs["qa_status_breakdown"].items() if k != Status.OK.value)
        card_list += [_card("QA pairs", str(s.get("qa_pairs", 0))), _card("QA pairs failed", str(qa_bad), qa_bad > 0),
                      _card("QA generated tokens/s", f"{s.get('qa_generated_tokens_per_s', 0):.1f}")]
        body += [_status("qa-status", "QA pair status breakdown", figs["qa_status_breakdown"], "pairs"),
                 _lengths("qa-lengths", "QA answer length", figs.get("qa_answer_length_histogram"), "answer")]
    body.append(_stages(figs["stage_time"]))
    keys = ("job", "model_id", "model_revision", "engine", "sampling_hash", "qa_model_id", "qa_model_revision",
            "qa_engine", "qa_sampling_hash", "code_version", "created_at")
    meta = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(report.get(k)))}</td></tr>"
                   for k in keys if k in report and (not k.startswith("qa_") or report.get("qa_model_id")))
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>vlmbatch run {escape(report['run_id'])}</title><style>{CSS}</style></head><body>"
        f"<h1>Run {escape(report['run_id'])}</h1><p class=\"sub\">{escape(report['job'])} · committed "
        f"{escape(report['created_at'])}</p><div class=\"cards\">{''.join(card_list)}</div>"
        f"<div class=\"grid\">{''.join(body)}</div><h2>Provenance</h2><table>{meta}</table></body></html>"
    )

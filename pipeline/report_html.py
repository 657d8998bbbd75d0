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


def _throughput(series: list[dict]) -> str:
    title = "Throughput over time"
    if not series:
        return _figure("throughput", title, empty_chart(title, "no rows were processed in this attempt"))
    return _figure("throughput", f"{title} (images/s of this attempt)",
                   line_chart(title, [p["t_s"] for p in series], [p["images_per_s"] for p in series],
                              "seconds since the plan started", "images/s"))


def _status(by_status: dict[str, int]) -> str:
    title = "Status breakdown"
    colors = {Status.OK.value: "#5cb85c"}
    labels = list(by_status)
    svg = hbar_chart(title, labels, [float(by_status[k]) for k in labels], "rows")
    # Green for ok rows, the palette for failures, so failures stand out.
    for label in labels:
        if label in colors:
            attr = f'data-label="{escape(label)}"'
            svg = svg.replace(attr, f'{attr} style="fill:{colors[label]}"')
    return _figure("status", title, svg)


def _lengths(hist: dict | None) -> str:
    title = "Generated length"
    if hist is None:
        return _figure("lengths", title, empty_chart(title, "these records carry no generated-token counts"))
    if not hist["counts"]:
        return _figure("lengths", title, empty_chart(title, "no ok rows"))
    edges = hist["bin_edges"]
    labels = [str(edges[i]) if edges[i + 1] - edges[i] == 1 else f"{edges[i]}-{edges[i + 1] - 1}"
              for i in range(len(hist["counts"]))]
    return _figure("lengths", f"{title} (tokens per ok row, mean {hist.get('mean', 0)})",
                   bar_chart(title, labels, [float(c) for c in hist["counts"]], "generated tokens", "rows"))


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
    cards = "".join([
        _card("rows in", str(s["rows_in"])),
        _card("rows out", str(s["rows_out"])),
        _card("failed", str(report["failed"]), bad=report["failed"] > 0),
        _card("images/s", f"{s['images_per_s']:.2f}"),
        _card("generated tokens/s", f"{s['generated_tokens_per_s']:.1f}"),
        _card("wall", f"{s['wall_s']:.1f} s"),
    ])
    meta = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(report.get(k)))}</td></tr>"
                   for k in ("job", "model_id", "engine", "code_version", "created_at"))
    body = "".join([_throughput(figs["throughput"]), _status(figs["status_breakdown"]),
                    _lengths(figs["generated_length_histogram"]), _stages(figs["stage_time"])])
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>vlmbatch run {escape(report['run_id'])}</title><style>{CSS}</style></head><body>"
        f"<h1>Run {escape(report['run_id'])}</h1><p class=\"sub\">{escape(report['job'])} · committed "
        f"{escape(report['created_at'])}</p><div class=\"cards\">{cards}</div>"
        f"<div class=\"grid\">{body}</div><h2>Provenance</h2><table>{meta}</table></body></html>"
    )

"""Plain inline-SVG charts for the run report: no plotting package, no script, no network.

Each function returns one ``<svg>`` element as text, sized in CSS pixels, with axis labels,
a title for screen readers and ``data-*`` attributes that tests (and people) can read.
"""

from __future__ import annotations

from html import escape

W, H = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 56
PALETTE = ("#3b6fb6", "#d9534f", "#f0ad4e", "#8e6bbf", "#5bc0de", "#a0522d", "#999999")  # no green: green is ok


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v == int(v) or abs(v) >= 100 else f"{v:.3g}"


def _frame(kind: str, title: str, ymax: float, xlabel: str, ylabel: str, n: int) -> list[str]:
    ph = H - TOP - BOTTOM
    parts = [
        f'<svg class="chart {kind}" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" data-points="{n}">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):
        y = TOP + ph - ph * i / 4
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                     f"{_fmt(ymax * i / 4)}</text>")
    parts.append(f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{W - RIGHT}" y2="{TOP + ph}" stroke="#555"/>')
    parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle" font-size="12">'
                 f"{escape(xlabel)}</text>")
    parts.append(f'<text x="14" y="{TOP + ph / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {TOP + ph / 2})">{escape(ylabel)}</text>')
    return parts


def empty_chart(title: str, message: str) -> str:
    """A placeholder that says why a figure has no data."""
    return (f'<svg class="chart empty" width="{W}" height="60" '
            f'role="img" data-points="0"><title>{escape(title)}</title>'
            f'<text x="10" y="34" font-size="13" fill="#777">{escape(message)}</text></svg>')


def bar_chart(title: str, labels: list[str], values: list[float], xlabel: str, ylabel: str,
              colors: list[str] | None = None) -> str:
    """Vertical bars, one per label."""
    if not values:
        return empty_chart(title, "no data")
    ymax = _nice_max(max(values))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / len(values)
    parts = _frame("bars", title, ymax, xlabel, ylabel, len(values))
    show_every = max(1, len(labels) // 12)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = ph * value / ymax
        x = LEFT + i * slot + slot * 0.1
        color = (colors or [PALETTE[0]])[i % len(colors or [PALETTE[0]])]
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{TOP + ph - h:.1f}" width="{slot * 0.8:.1f}" '
                     f'height="{h:.1f}" fill="{color}" data-label="{escape(label)}" data-value="{value:g}">'
                     f"<title>{escape(label)}: {value:g}</title></rect>")
        if i % show_every == 0:
            parts.append(f'<text x="{x + slot * 0.4:.1f}" y="{TOP + ph + 15}" text-anchor="middle" '
                         f'font-size="10">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def hbar_chart(title: str, labels: list[str], values: list[float], xlabel: str) -> str:
    """Horizontal bars with the label at the left: for long names (statuses, stages)."""
    if not values:
        return empty_chart(title, "no data")
    row = 26
    label_w = 210
    height = TOP + row * len(values) + 36
    xmax = _nice_max(max(values))
    pw = W - label_w - RIGHT - 50
    parts = [f'<svg class="chart hbars" width="{W}" height="{height}" '
             f'viewBox="0 0 {W} {height}" role="img" data-points="{len(values)}"><title>{escape(title)}</title>']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = TOP + i * row
        w = pw * value / xmax
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" font-size="12">{escape(label)}</text>')
        parts.append(f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{max(w, 1):.1f}" height="{row - 8}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}" data-label="{escape(label)}" data-value="{value:g}">'
                     f"<title>{escape(label)}: {value:g}</title></rect>")
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" font-size="11">{_fmt(value)}</text>')
    parts.append(f'<text x="{label_w + pw / 2}" y="{height - 8}" text-anchor="middle" font-size="12">'
                 f"{escape(xlabel)}</text></svg>")
    return "".join(parts)


def line_chart(title: str, xs: list[float], ys: list[float], xlabel: str, ylabel: str,
               segment: tuple[float, str] | None = None) -> str:
    """One series as a polyline with dots; ``segment`` ``(x_end, label)`` shades ``[0, x_end]`` as its own phase."""
    if not xs:
        return empty_chart(title, "no data")
    ymax = _nice_max(max(ys))
    xmax = max(xs) or 1.0
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    pts = [(LEFT + pw * x / xmax, TOP + ph - ph * y / ymax) for x, y in zip(xs, ys, strict=True)]
    parts = _frame("line", title, ymax, xlabel, ylabel, len(xs))
    if segment is not None and segment[0] > 0:
        x_end, label = min(segment[0], xmax), segment[1]
        sw = pw * x_end / xmax
        parts.append(f'<rect class="segment" x="{LEFT}" y="{TOP}" width="{sw:.1f}" height="{ph}" fill="#eeeeee" '
                     f'data-label="{escape(label)}" data-end="{segment[0]:g}"><title>{escape(label)}: '
                     f"{segment[0]:.1f} s</title></rect>")
        parts.append(f'<text x="{LEFT + sw / 2:.1f}" y="{TOP + 14}" text-anchor="middle" font-size="11" '
                     f'fill="#555">{escape(label)}</text>')
    for i in range(5):
        x = LEFT + pw * i / 4
        parts.append(f'<text x="{x:.1f}" y="{TOP + ph + 15}" text-anchor="middle" font-size="10">'
                     f"{_fmt(xmax * i / 4)}</text>")
    poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    parts.append(f'<polyline class="series" points="{poly}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    for (x, y), v in zip(pts, ys, strict=True):
        parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{PALETTE[0]}" '
                     f'data-value="{v:g}"/>')
    parts.append("</svg>")
    return "".join(parts)

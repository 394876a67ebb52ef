"""Server-side SVG charts for the analytics pages: a bar chart and a line chart.

The console runs no JavaScript, so charts are drawn here as inline SVG. The page's CSP forbids `style`
attributes, so the SVG carries only the `.chart .bar .line .dot .axis` classes of app.css and
presentation attributes. Every label and title is escaped: a metric name or period comes from the
gateway and must never become markup. An empty series draws no chart but says so, because an empty
frame reads as "zero" to a person in a hurry."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

Point = tuple[str, float]

WIDTH = 640
HEIGHT = 260
# Room for the y-axis labels on the left and the x-axis labels below the plot.
LEFT, RIGHT, TOP, BOTTOM = 48, 24, 40, 44
# Roughly how wide one character of the 12px axis labels is, to keep labels from overlapping.
CHAR_WIDTH = 7.5


@dataclass(frozen=True)
class Frame:
    """The plot area inside the SVG, in SVG units."""

    width: int = WIDTH
    height: int = HEIGHT

    @property
    def plot_width(self) -> float:
        return self.width - LEFT - RIGHT

    @property
    def plot_height(self) -> float:
        return self.height - TOP - BOTTOM

    @property
    def baseline(self) -> float:
        return self.height - BOTTOM


def _number(value: float) -> str:
    """A value as people read it: no trailing .0, at most two decimals."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0").rstrip(".")


def _empty(title: str, message: str) -> Markup:
    return Markup('<p class="hint chart-empty" role="note">{}: {}</p>').format(title, message)


def _open(frame: Frame, title: str, summary: str) -> Markup:
    label = f"{title}. {summary}" if summary else title
    return Markup(
        '<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}"'
        ' xmlns="http://www.w3.org/2000/svg"><title>{title}</title>'
        '<text class="chart-title" x="{x}" y="18" font-weight="600">{title}</text>'
    ).format(w=frame.width, h=frame.height, label=label, title=title, x=LEFT)


def _summary(points: Sequence[Point], unit: str) -> str:
    """The data in words for screen readers (the SVG's aria-label)."""
    return "; ".join(f"{label}: {_number(value)}{unit}" for label, value in points)


def _label_every(labels: Sequence[str], slot: float) -> int:
    """Show every nth x label so that neighbours do not overlap (a year of months, of weeks)."""
    widest = max((len(label) for label in labels), default=0) * CHAR_WIDTH + 6
    return max(1, math.ceil(widest / slot)) if slot > 0 else 1


def _anchor(index: int, count: int, spread: bool) -> str:
    """The first and last labels of a line chart sit on the plot's edges: anchor them inwards."""
    if spread and count > 1 and index == 0:
        return "start"
    if spread and count > 1 and index == count - 1:
        return "end"
    return "middle"


def _axes(frame: Frame, top_value: float, bottom_value: float, unit: str) -> Markup:
    """The x axis, the y axis, and labels for the y axis's two ends."""
    return Markup(
        '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#d1d5db"/>'
        '<line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#d1d5db"/>'
        '<text x="{lx}" y="{ty}" text-anchor="end">{top}</text>'
        '<text x="{lx}" y="{b}" text-anchor="end">{bottom}</text>'
    ).format(
        l=LEFT,
        r=frame.width - RIGHT,
        t=TOP,
        b=frame.baseline,
        lx=LEFT - 6,
        ty=TOP + 4,
        top=_number(top_value) + unit,
        bottom=_number(bottom_value) + unit,
    )


def bar_chart(
    points: Sequence[Point], *, title: str, unit: str = "", empty: str = "no data for this period"
) -> Markup:
    """Bars from zero, their heights proportional to the values (negatives drawn as zero: every
    series here is a count or a rate). All-zero data is drawn, flat: zero is an answer; no points is
    not, and says so instead."""
    if not points:
        return _empty(title, empty)
    frame = Frame()
    values = [max(0.0, float(value)) for _, value in points]
    top = max(values) or 1.0
    slot = frame.plot_width / len(points)
    bar_width = max(2.0, slot * 0.6)
    parts = [_open(frame, title, _summary(points, unit)), _axes(frame, max(values), 0, unit)]
    every = _label_every([label for label, _ in points], slot)
    for index, ((label, _), value) in enumerate(zip(points, values, strict=True)):
        height = frame.plot_height * value / top
        x = LEFT + slot * index + (slot - bar_width) / 2
        y = frame.baseline - height
        parts.append(
            Markup(
                '<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="#0f766e">'
                "<title>{label}: {value}</title></rect>"
                '<text x="{cx:.1f}" y="{vy:.1f}" text-anchor="middle">{value}</text>'
            ).format(
                x=x,
                y=y,
                w=bar_width,
                h=height,
                cx=x + bar_width / 2,
                vy=max(TOP - 6, y - 4),
                label=label,
                value=_number(value) + unit,
            )
        )
        if index % every == 0:
            parts.append(
                Markup('<text x="{x:.1f}" y="{y}" text-anchor="middle">{label}</text>').format(
                    x=x + bar_width / 2, y=frame.baseline + 16, label=label
                )
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def line_chart(
    points: Sequence[Point],
    *,
    title: str,
    unit: str = "",
    y_min: float | None = None,
    y_max: float | None = None,
    empty: str = "no data for this period",
) -> Markup:
    """A line through the points, left to right in the order given; y_min/y_max fix the scale (a 0-10
    score reads wrong on a scale that starts at its lowest value)."""
    if not points:
        return _empty(title, empty)
    frame = Frame()
    values = [float(value) for _, value in points]
    low = min(values) if y_min is None else min(y_min, *values)
    high = max(values) if y_max is None else max(y_max, *values)
    if high == low:
        high = low + 1
    step = frame.plot_width / max(1, len(points) - 1)
    label_every = _label_every([label for label, _ in points], step if len(points) > 1 else frame.plot_width)
    coords = [
        (
            LEFT + (step * index if len(points) > 1 else frame.plot_width / 2),
            frame.baseline - frame.plot_height * (value - low) / (high - low),
        )
        for index, value in enumerate(values)
    ]
    parts = [_open(frame, title, _summary(points, unit)), _axes(frame, high, low, unit)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    parts.append(Markup('<polyline class="line" points="{}" fill="none" stroke="#0f766e"/>').format(path))
    for index, ((label, value), (x, y)) in enumerate(zip(points, coords, strict=True)):
        parts.append(
            Markup(
                '<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#0f766e">'
                "<title>{label}: {value}</title></circle>"
            ).format(x=x, y=y, label=label, value=_number(value) + unit)
        )
        last = index == len(points) - 1
        # The last point is always labelled; the nth label before it is dropped if they would touch.
        crowded = not last and (len(points) - 1 - index) < label_every
        if (index % label_every == 0 and not crowded) or last:
            parts.append(
                Markup('<text x="{x:.1f}" y="{y}" text-anchor="{anchor}">{label}</text>').format(
                    x=x, y=frame.baseline + 16, label=label, anchor=_anchor(index, len(points), True)
                )
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)

"""Bar charts of a few weeks of daily counts, drawn on the server as inline SVG.

No script and nothing fetched: the page keeps its strict CSP and works without JavaScript.
Colours come from CSS classes, so the page's dark mode applies. Each chart is an ``img``
with a title and a one-sentence summary for screen readers; each bar has a ``<title>``
(the tooltip) with its day and number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

WIDTH, HEIGHT = 420, 190
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 12, 26
LABEL_EVERY = 7  # days between date labels, counted back from the last (today)


@dataclass(frozen=True)
class Series:
    key: str  # CSS class suffix and element ids
    title: str  # "Sent"
    noun: str  # "emails sent", used in tooltips and the summary
    days: list[date]
    values: list[int]

    @property
    def total(self) -> int:
        return sum(self.values)

    @property
    def peak(self) -> tuple[int, date | None]:
        if not self.values or max(self.values) == 0:
            return 0, None
        best = max(range(len(self.values)), key=lambda i: (self.values[i], i))
        return self.values[best], self.days[best]


def nice_scale(peak: int, ticks: int = 5) -> tuple[int, int]:
    """(top of the axis, step between grid lines): a 1-2-5 step so labels read as round
    numbers, with the top at or above ``peak``."""
    if peak <= 0:
        return ticks, 1
    raw = peak / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    return step * math.ceil(peak / step), step


def number(value: int) -> str:
    """Exact, with thousands separators: an operator reads 49,731, not "50k"."""
    return f"{value:,}"


def axis_label(value: int) -> str:
    """A grid line's round number, short enough for the axis: 50k."""
    if value >= 10_000 and value % 1000 == 0:
        return f"{value // 1000:,}k"
    return f"{value:,}"


def day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


def bar_chart(series: Series) -> Markup:
    top, step = nice_scale(max(series.values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(series.values), 1)
    bar_w = max(1.0, slot * 0.72)

    def y(value: float) -> float:
        return TOP + plot_h - plot_h * value / top

    ident = f"chart-{series.key}"
    peak, peak_day = series.peak
    summary = f"{number(series.total)} {series.noun} over {len(series.days)} days" + (
        f"; most on {day_label(peak_day)}: {number(peak)}." if peak_day else "."
    )
    parts = [
        f'<svg class="chart c-{escape(series.key)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-t" aria-describedby="{ident}-d">',
        f'<title id="{ident}-t">{escape(series.title)} per UTC day</title>',
        f'<desc id="{ident}-d">{escape(summary)}</desc>',
    ]
    for tick in range(0, top + 1, step):
        ty = y(tick)
        parts.append(
            f'<line class="grid{" base" if tick == 0 else ""}" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
            f'y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{ty + 3.5:.1f}" text-anchor="end">'
            f"{axis_label(tick)}</text>"
        )
    last = len(series.days) - 1
    for i, (day, value) in enumerate(zip(series.days, series.values, strict=True)):
        x = LEFT + i * slot + (slot - bar_w) / 2
        today = " today" if i == last else ""
        tip = f"{day:%a} {day_label(day)}: {number(value)} {series.noun}"
        if today:
            tip += " (today so far)"
        if value > 0:
            height = max(1.5, y(0) - y(value))
            parts.append(
                f'<rect class="bar{today}" x="{x:.1f}" y="{y(0) - height:.1f}" '
                f'width="{bar_w:.1f}" height="{height:.1f}" rx="1.5">'
                f"<title>{escape(tip)}</title></rect>"
            )
        else:  # an empty day still has a hover target, so "0" can be read too
            parts.append(
                f'<rect class="hit" x="{LEFT + i * slot:.1f}" y="{TOP}" width="{slot:.1f}" '
                f'height="{plot_h}"><title>{escape(tip)}</title></rect>'
            )
        if (last - i) % LABEL_EVERY == 0:
            # The last label ends at its bar rather than centring on it, so it stays inside.
            anchor, lx = ("end", x + bar_w) if i == last else ("middle", x + bar_w / 2)
            parts.append(
                f'<text class="axis" x="{lx:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="{anchor}">{escape(day_label(day))}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))

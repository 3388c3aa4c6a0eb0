"""The usage dashboard's per-day bar charts: SVG geometry computed here, drawn by the template
(admin/chat/usage_dashboard.html) with no script."""

from __future__ import annotations

import math
from datetime import date

CHART_WIDTH, CHART_HEIGHT = 760, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 70, 10, 30, 24
TOKEN_SERIES = [
    ("Input", "#417690", "input"),
    ("Cache write", "#d9a23d", "cache_write"),
    ("Cache read", "#79aec8", "cache_read"),
    ("Output", "#5b8a3c", "output"),
]
COST_SERIES = [("Cost (USD)", "#ba2121", "cost")]


def _compact(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def _money(value: float, peak: float) -> str:
    return f"${value:.2f}" if peak >= 1 else f"${value:.4f}"


def _px(value: float) -> str:
    return f"{value:.1f}"


def chart(title: str, days: list[date], totals: list, series: list, money: bool) -> dict:
    """Geometry of a (stacked) bar chart per day, as strings the template puts in attributes.

    `totals` has one entry per day, in the order of `days`; `series` is (label, colour,
    attribute of an entry) per stacked bar, bottom first.
    """
    plot_w = CHART_WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = CHART_HEIGHT - PAD_TOP - PAD_BOTTOM
    bottom = PAD_TOP + plot_h
    peak = max((sum(float(getattr(t, attr)) for _, _, attr in series) for t in totals), default=0)
    scale = plot_h / peak if peak else 0
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.8, 1)
    bars = []
    for index, (day, t) in enumerate(zip(days, totals, strict=True)):
        x = PAD_LEFT + index * slot + (slot - bar_w) / 2
        y = bottom
        for label, colour, attr in series:
            value = getattr(t, attr)
            height = float(value) * scale
            y -= height
            shown = f"${value:.4f}" if money else f"{value:,} tokens"
            bars.append(
                {
                    "x": _px(x),
                    "y": _px(y),
                    "w": _px(bar_w),
                    "h": _px(height),
                    "fill": colour,
                    "title": f"{day.isoformat()} {label}: {shown}",
                }
            )
    step = math.ceil(len(days) / 8) or 1
    return {
        "title": title,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": PAD_LEFT,
        "right": CHART_WIDTH - PAD_RIGHT,
        "bars": bars,
        "grid": [
            {
                "y": _px(bottom - plot_h * share),
                "label": _money(peak * share, peak) if money else _compact(peak * share),
            }
            for share in (0, 0.5, 1)
        ],
        "xlabels": [
            {"x": _px(PAD_LEFT + (i + 0.5) * slot), "label": f"{day:%m-%d}"}
            for i, day in enumerate(days)
            if i % step == 0
        ],
        "legend": [
            {"x": PAD_LEFT + i * 120, "fill": colour, "label": label}
            for i, (label, colour, _) in enumerate(series)
        ],
    }

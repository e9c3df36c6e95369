"""The pack's charts as SVG with deterministic bytes.

Figures are made without pyplot (no global backend or figure registry is touched).
matplotlib's SVG writer is deterministic once the id salt is fixed and the date metadata dropped;
glyphs are drawn as paths, so the files render the same anywhere, offline, without fonts.
"""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

import matplotlib
from matplotlib.dates import DateFormatter, DayLocator
from matplotlib.figure import Figure

from pipelines.lib.review_pack.figures import MonthFigures

STYLE = {
    "svg.hashsalt": "comet-ledger-review-pack",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
SIZE = (9.0, 4.2)


def daily_spend_by_key(figures: MonthFigures) -> bytes:
    """Stacked bars: what CometAPI reported per day, split by key."""
    days = figures.period.days
    spend: dict[str, dict[date, float]] = defaultdict(dict)
    for row in figures.export:
        spend[row["key_name"]][row["usage_date"]] = float(row["reported_cost_usd"])
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=SIZE)
        ax = fig.subplots()
        if spend:
            bottom = [0.0] * len(days)
            colors = matplotlib.colormaps["tab20"].colors
            for i, key in enumerate(sorted(spend)):
                values = [spend[key].get(d, 0.0) for d in days]
                ax.bar(days, values, bottom=bottom, width=0.8, label=key, color=colors[i % len(colors)])
                bottom = [b + v for b, v in zip(bottom, values)]
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="key")
        else:
            _no_data(ax, figures)
        _frame(ax, days, f"Reported spend per day by key, {figures.period.month} (USD)")
        return _svg(fig)


def estimated_vs_reported(figures: MonthFigures) -> bytes:
    """Per day: reported by the query service, billed by the ledger, estimated from your logs; below,
    the variance (reported - estimated), red on days with a flagged key-day."""
    days = figures.period.days
    by_day = {row["usage_date"]: row for row in figures.by_day}
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(SIZE[0], SIZE[1] + 1.4))
        ax, below = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        if by_day:
            def series(column: str) -> list[float]:
                return [_float(by_day[d][column]) if d in by_day else float("nan") for d in days]

            ax.plot(days, series("reported_cost_usd"), marker="o", markersize=3, linewidth=1.6,
                    label="reported (query service)", color="#1f4e79")
            if any(row["billed_cost_usd"] is not None for row in figures.by_day):
                ax.plot(days, series("billed_cost_usd"), marker="s", markersize=3, linewidth=1.0,
                        linestyle=":", label="billed (gateway ledger)", color="#7f7f7f")
            ax.plot(days, series("estimated_cost_usd"), marker="x", markersize=4, linewidth=1.2,
                    linestyle="--", label="estimated (your logs x prices)", color="#d95f02")
            flagged = {d for d in days if d in by_day and by_day[d]["flagged_key_days"]}
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
            below.bar(days, [v if v == v else 0.0 for v in series("variance_usd")], width=0.8,
                      color=["#c00000" if d in flagged else "#9e9e9e" for d in days])
            below.axhline(0, color="#333333", linewidth=0.6)
        else:
            _no_data(ax, figures)
        _frame(ax, days, f"Estimated vs reported spend per day, {figures.period.month} (USD)")
        below.set_ylabel("variance")
        below.set_title("reported - estimated (red: a key-day is flagged)", loc="left", fontsize=8)
        below.grid(axis="y", linewidth=0.4, alpha=0.6)
        return _svg(fig)


def _frame(ax, days: list[date], title: str) -> None:
    ax.set_title(title, loc="left")
    ax.set_xlim(days[0] - timedelta(days=1), days[-1] + timedelta(days=1))
    ax.xaxis.set_major_locator(DayLocator(bymonthday=[1, 5, 10, 15, 20, 25]))
    ax.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("USD")
    ax.grid(axis="y", linewidth=0.4, alpha=0.6)


def _no_data(ax, figures: MonthFigures) -> None:
    ax.text(0.5, 0.5, f"no data for {figures.period.month}", transform=ax.transAxes, ha="center", va="center",
            fontsize=12, color="#555555")


def _float(value: Decimal | float | None) -> float:
    return float("nan") if value is None else float(value)


def _svg(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()

"""Candlestick chart of OHLC bars with volume bars, rendered to PNG with matplotlib's Agg backend.

Uses matplotlib's object API (`Figure`, no pyplot): no display, no global state, safe in threads and servers.
Needs the `analytics` extra (matplotlib).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Any

from pipeline.read.atomicfile import atomic_write
from pipeline.read.query import Bar, QueryError

MAX_BARS = 3000
UP, DOWN = "#26a69a", "#ef5350"


class ChartError(QueryError):
    """The chart cannot be drawn (no bars, too many bars): bad input, exit code 2."""


def _check(bars: Sequence[Bar], what: str = "") -> None:
    if not bars:
        raise ChartError(f"no bars{what} in the range: nothing to plot")
    if len(bars) > MAX_BARS:
        raise ChartError(
            f"{len(bars)} bars{what} are too many to plot readably (max {MAX_BARS}): "
            "use a larger --interval or a shorter --from/--to range"
        )


def plot_ohlc(
    bars: Sequence[Bar], path: str | Path, *, title: str, interval: timedelta, zone: tzinfo, zone_label: str
) -> Path:
    """Write a candlestick chart (price) over volume bars to `path` (PNG). Times are shown in `zone`.
    The file is written to a temporary name and renamed, so a failure never leaves a partial PNG."""
    return plot_ohlc_panels({title: bars}, path, interval=interval, zone=zone, zone_label=zone_label)


def plot_ohlc_panels(
    series: Mapping[str, Sequence[Bar]],
    path: str | Path,
    *,
    interval: timedelta,
    zone: tzinfo,
    zone_label: str,
) -> Path:
    """One candlestick-over-volume panel per entry of `series` (title -> bars), stacked in one PNG with a
    shared time axis (the demo draws PETR4 and VALE3 over the same session)."""
    for title, bars in series.items():
        _check(bars, f" for {title}" if len(series) > 1 else "")
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 1 + 6 * len(series)), dpi=100, layout="constrained")
    ratios = [3, 1] * len(series)
    axes = fig.subplots(2 * len(series), 1, sharex=True, height_ratios=ratios)
    first: list[float] = []
    last: list[float] = []
    for i, (title, bars) in enumerate(series.items()):
        starts = _draw(axes[2 * i], axes[2 * i + 1], bars, title, interval, zone)
        first.append(starts[0])
        last.append(starts[-1])
    volume_ax = axes[-1]
    volume_ax.set_xlabel(f"time ({zone_label})")
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    volume_ax.xaxis.set_major_locator(locator)
    volume_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    pad = interval.total_seconds() / 86400
    volume_ax.set_xlim(min(first) - pad, max(last) + pad)
    target = Path(path)
    with atomic_write(target, "wb") as handle:
        fig.savefig(handle, format="png")
    return target


def _draw(
    price_ax: Any, volume_ax: Any, bars: Sequence[Bar], title: str, interval: timedelta, zone: tzinfo
) -> list[float]:
    """Candlesticks on `price_ax`, volume bars on `volume_ax`; returns the bars' x positions."""
    import matplotlib.dates as mdates
    from matplotlib.ticker import FuncFormatter

    # Bars are placed at their start time shifted into the display zone, as naive datetimes: matplotlib then
    # draws and labels wall-clock times of that zone.
    starts = [mdates.date2num(b.start.astimezone(zone).replace(tzinfo=None)) for b in bars]  # type: ignore[no-untyped-call]
    width = interval.total_seconds() / 86400 * 0.7
    # Prices as floats: a chart is display only (Decimal128 prices are drawn at their nearest double).
    opens, highs = [float(b.open) for b in bars], [float(b.high) for b in bars]
    lows, closes = [float(b.low) for b in bars], [float(b.close) for b in bars]
    colors = [UP if c >= o else DOWN for o, c in zip(opens, closes, strict=True)]
    # A flat bar (open == close) still gets a visible body.
    bodies = [
        max(abs(c - o), (h - lo) * 0.002, 1e-9)
        for o, h, lo, c in zip(opens, highs, lows, closes, strict=True)
    ]
    price_ax.vlines(starts, lows, highs, colors=colors, linewidth=1)
    price_ax.bar(
        starts, bodies, width, bottom=[min(o, c) for o, c in zip(opens, closes, strict=True)], color=colors
    )
    volume_ax.bar(starts, [b.volume for b in bars], width, color=colors)
    price_ax.set_title(title, fontsize=13, loc="left")
    price_ax.set_ylabel("price")
    price_ax.grid(True, alpha=0.3)
    volume_ax.set_ylabel("volume")
    volume_ax.grid(True, alpha=0.3)
    volume_ax.yaxis.set_major_formatter(FuncFormatter(_compact))
    return list(starts)


def _compact(value: float, _pos: int) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"

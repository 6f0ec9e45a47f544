"""Render grafana/dashboards/tlsprobe.json to a PNG without a Grafana server.

The README wants a picture of the dashboard, and Grafana cannot be installed everywhere we build.
This script reads the dashboard JSON, runs every panel's own PromQL against a Prometheus, and
draws the panels with matplotlib where the dashboard's gridPos puts them (24 columns): stat
panels as big coloured numbers, tables with the dashboard's merge/organize transformations and
value mappings, time series as line, area or bar plots with legends from legendFormat. The
variables are rendered as "All" ($tenant and $target become .*, $__rate_interval 1m).

It is a development tool, not part of tlsprobe: `pip install matplotlib` first (it brings
Pillow). To remake grafana/dashboard-preview.png, run `tlsprobe demo --interval 10s` and a
Prometheus that scrapes it every 5s with deploy/prometheus/tlsprobe.rules.yml loaded, wait a
quarter of an hour so the time series have shape, then:

    python grafana/render_preview.py --prometheus http://127.0.0.1:9090 \
        --out grafana/dashboard-preview.png --range 15m
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # no display on build machines; must precede pyplot
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

DEFAULT_DASHBOARD = Path(__file__).resolve().parent / "dashboards" / "tlsprobe.json"
TITLE = "tlsprobe dashboard (rendered from its queries by grafana/render_preview.py)"

# Grafana's dark theme, so the picture looks like what users will see.
BACKGROUND = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
COLOURS = {
    "green": "#73bf69",
    "orange": "#ff9830",
    "red": "#f2495c",
    "purple": "#b877d9",
    "blue": "#5794f2",
    "yellow": "#fade2a",
    "text": TEXT,
}
# Grafana's "palette-classic", in order.
PALETTE = (
    "#73bf69",
    "#f2cc0c",
    "#8ab8ff",
    "#ff780a",
    "#f2495c",
    "#5794f2",
    "#b877d9",
    "#705da0",
    "#37872d",
    "#fade2a",
)

ROW_UNIT_PX = 31  # one gridPos height unit; Grafana uses 30 px plus margins
HEADER_PX = 56
MARGIN_PX = 5
LEGEND_PX_PER_CHAR = 5.4  # average DejaVu Sans advance at the legend's 7.2 pt, 100 dpi


# --------------------------------------------------------------------------- Prometheus access


@dataclass(frozen=True)
class Window:
    """The time range every panel shows, and the variable values Grafana would substitute."""

    end: float
    seconds: int
    step: int

    @property
    def start(self) -> float:
        """Unix time of the left edge of every time series panel."""
        return self.end - self.seconds


@dataclass(frozen=True)
class Prometheus:
    """Just enough of the HTTP API: instant and range queries."""

    url: str

    def _get(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as reply:  # noqa: S310 -- scheme checked in main()
            body = json.load(reply)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {params.get('query')}: {body}")
        return list(body["data"]["result"])

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        """Samples of `expr` at time `at`: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})

    def series(self, expr: str, window: Window) -> list[dict[str, Any]]:
        """Range result of `expr` over the window: [{"metric": {...}, "values": [...]}, ...]."""
        params = {
            "query": expr,
            "start": f"{window.start:.3f}",
            "end": f"{window.end:.3f}",
            "step": str(window.step),
        }
        return self._get("/api/v1/query_range", params)


def substitute(expr: str, window: Window) -> str:
    """Replace Grafana's template variables the way an "All" selection would."""
    replacements = {
        "${datasource}": "",
        "$__rate_interval": "1m",
        "$__interval": f"{window.step}s",
        "$__range": f"{window.seconds}s",
        "$tenant": ".*",
        "$target": ".*",
    }
    for name, value in replacements.items():
        expr = expr.replace(name, value)
    return expr


def parse_duration(text: str) -> int:
    """'15m' -> 900; accepts s, m, h, d suffixes like Grafana's time picker."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration like 15m or 1h: {text!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a Unix or ISO 8601 time: {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# --------------------------------------------------------------------------- value formatting


def colour(name: str | None) -> str:
    """Grafana colour names to the dark theme's hex values; hex passes through."""
    if not name:
        return TEXT
    return COLOURS.get(name, name)


def threshold_colour(value: float, thresholds: Mapping[str, Any] | None) -> str | None:
    """Colour of the highest threshold step at or below `value` (absolute mode)."""
    if not thresholds:
        return None
    chosen = None
    for step in thresholds.get("steps", []):
        if step.get("value") is None or value >= step["value"]:
            chosen = step["color"]
    return colour(chosen) if chosen else None


def mapped(value: float, mappings: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(text, colour) from a value mapping matching `value`, if any."""
    key = str(int(value)) if float(value).is_integer() else str(value)
    for mapping in mappings:
        option = mapping.get("options", {}).get(key)
        if mapping.get("type") == "value" and option:
            return option.get("text", key), colour(option.get("color"))
    return None


def format_number(value: float, unit: str | None, decimals: int | None) -> str:
    """Render a number with the panel's unit, as Grafana would (for the units we use)."""
    if math.isnan(value):
        return "-"
    if unit == "dateTimeAsIso":
        return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if unit == "dateTimeFromNow":
        return ago(time.time() - value / 1000)
    if unit == "s" and 0 < abs(value) < 1:
        return sub_second(value)
    if decimals is not None:
        text = f"{value:.{decimals}f}"
    elif float(value).is_integer():
        text = str(int(value))
    else:
        text = f"{value:.3g}"
    if unit and unit.startswith("suffix:"):
        return text + unit.removeprefix("suffix:")
    return text + {"s": " s", "ops": " ops/s"}.get(unit or "", "")


def sub_second(value: float) -> str:
    """Sub-second durations in ms or µs, as Grafana's "s" unit scales them."""
    if abs(value) < 1e-3:
        return f"{value * 1e6:.3g} \u00b5s"
    return f"{value * 1e3:.3g} ms"


def ago(seconds: float) -> str:
    """'5 minutes ago', coarse like Grafana's dateTimeFromNow."""
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {name}{'s' if count != 1 else ''} ago"
    return "a few seconds ago"


def legend_label(template: str | None, labels: Mapping[str, str], expr: str) -> str:
    """Expand a legendFormat like '{{tenant}}/{{target}}'; no format means the series name."""
    if not template:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else expr
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


# --------------------------------------------------------------------------- panel data


@dataclass(frozen=True)
class Table:
    """Rows of cells by column name, in display order."""

    columns: list[str]
    rows: list[dict[str, Any]]


def table_frames(panel: Mapping[str, Any], prom: Prometheus, window: Window) -> list[Table]:
    """One frame per query, like Grafana's 'table' format: labels as columns, then Value."""
    targets = panel.get("targets", [])
    frames = []
    for target in targets:
        value_name = f"Value #{target['refId']}" if len(targets) > 1 else "Value"
        rows = []
        for sample in prom.instant(substitute(target["expr"], window), window.end):
            row: dict[str, Any] = {"Time": sample["value"][0]}
            row.update(sorted(sample["metric"].items()))
            row[value_name] = float(sample["value"][1])
            rows.append(row)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        frames.append(Table(columns, rows))
    return frames


def merge(frames: Sequence[Table]) -> Table:
    """Grafana's merge transformation: join rows that agree on every label they share."""
    rows: list[dict[str, Any]] = []
    for frame in frames:
        for row in frame.rows:
            labels = {k: v for k, v in row.items() if k != "Time" and not k.startswith("Value")}
            match = next((r for r in rows if agrees(r, labels)), None)
            if match is None:
                rows.append(dict(row))
            else:
                match.update(row)
    columns = list(dict.fromkeys(col for frame in frames for col in frame.columns))
    return Table(columns, rows)


def agrees(row: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """True when `row` and `labels` share at least one label and no shared label differs."""
    shared = [k for k in labels if k in row]
    return bool(shared) and all(row[k] == labels[k] for k in shared)


def organize(table: Table, options: Mapping[str, Any]) -> Table:
    """Grafana's organize transformation: exclude, reorder, rename columns."""
    excluded = {k for k, v in options.get("excludeByName", {}).items() if v}
    order = options.get("indexByName", {})
    names = options.get("renameByName", {})
    kept = [c for c in table.columns if c not in excluded]
    position = {c: order.get(c, len(order) + i) for i, c in enumerate(kept)}
    kept.sort(key=position.__getitem__)
    rows = [{names.get(c, c): row.get(c) for c in kept} for row in table.rows]
    return Table([names.get(c, c) for c in kept], rows)


def transformed(panel: Mapping[str, Any], prom: Prometheus, window: Window) -> Table:
    """The table a Grafana table panel shows after its transformations."""
    frames = table_frames(panel, prom, window)
    table = merge(frames) if len(frames) > 1 else frames[0]
    for step in panel.get("transformations", []):
        if step["id"] == "organize":
            table = organize(table, step.get("options", {}))
    for sort in panel.get("options", {}).get("sortBy", []):
        sort_rows(table.rows, sort["displayName"], descending=sort["desc"])
    return table


def sort_rows(rows: list[dict[str, Any]], column: str, *, descending: bool) -> None:
    """Sort by a numeric column in place, empty cells last either way, as Grafana's sortBy."""
    sign = -1 if descending else 1

    def key(row: Mapping[str, Any]) -> tuple[bool, float]:
        value = row.get(column)
        return not isinstance(value, float), sign * value if isinstance(value, float) else 0.0

    rows.sort(key=key)


# --------------------------------------------------------------------------- drawing


def panel_axes(fig: Figure, grid: Mapping[str, int], size: tuple[int, int]) -> Axes:
    """An axes covering the panel's gridPos, with Grafana's panel background and border."""
    width_px, height_px = size
    left = MARGIN_PX + grid["x"] / 24 * (width_px - 2 * MARGIN_PX)
    top = HEADER_PX + grid["y"] * ROW_UNIT_PX
    width = grid["w"] / 24 * (width_px - 2 * MARGIN_PX) - MARGIN_PX
    height = grid["h"] * ROW_UNIT_PX - MARGIN_PX
    ax = fig.add_axes(
        (left / width_px, 1 - (top + height) / height_px, width / width_px, height / height_px)
    )
    ax.set_axis_off()
    ax.add_patch(
        Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor=PANEL, edgecolor=BORDER, lw=1)
    )
    return ax


def draw_title(ax: Axes, title: str, ink: str = TEXT) -> None:
    """Panel title in the top left corner, as Grafana does."""
    ax.text(
        0.008,
        0.985,
        title,
        transform=ax.transAxes,
        va="top",
        ha="left",
        color=ink,
        fontsize=9.5,
        fontweight="bold",
    )


def no_data(ax: Axes) -> None:
    """Grafana's placeholder for a panel whose queries returned nothing."""
    ax.text(
        0.5,
        0.45,
        "No data",
        transform=ax.transAxes,
        ha="center",
        va="center",
        color=MUTED,
        fontsize=12,
    )


def draw_row(fig: Figure, panel: Mapping[str, Any], size: tuple[int, int]) -> None:
    """A collapsed-style row header: just its title across the full width."""
    top = HEADER_PX + panel["gridPos"]["y"] * ROW_UNIT_PX + ROW_UNIT_PX * 0.45
    fig.text(
        MARGIN_PX / size[0],
        1 - top / size[1],
        "\u25be " + panel["title"],
        color=TEXT,
        fontsize=11,
        fontweight="bold",
        va="center",
    )


def draw_stat(ax: Axes, panel: Mapping[str, Any], prom: Prometheus, window: Window) -> None:
    """A stat panel: the last value, big, on its threshold or mapping colour."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    samples = prom.instant(substitute(panel["targets"][0]["expr"], window), window.end)
    if not samples:
        draw_title(ax, panel["title"])
        no_data(ax)
        return
    value = float(samples[0]["value"][1])
    hit = mapped(value, defaults.get("mappings", []))
    text, fill = hit or (
        format_number(value, defaults.get("unit"), defaults.get("decimals")),
        threshold_colour(value, defaults.get("thresholds")) or COLOURS["blue"],
    )
    if defaults.get("unit") == "dateTimeFromNow" and not hit:
        # "Now" is the right edge of the picture, which --end may put in the past.
        text = ago(window.end - value / 1000)
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor=fill, alpha=0.85))
    draw_title(ax, panel["title"], ink="white")
    size = 30 if len(text) <= 8 else 20
    ax.text(
        0.5,
        0.42,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="white",
        fontsize=size,
        fontweight="bold",
    )


@dataclass(frozen=True)
class CellStyle:
    """What a column's field overrides say about how to show its cells."""

    mappings: list[dict[str, Any]] = field(default_factory=list)
    thresholds: dict[str, Any] | None = None
    unit: str | None = None
    decimals: int | None = None
    mode: str = "auto"
    fixed: str | None = None

    def render(self, value: Any) -> tuple[str, str | None]:
        """(text, colour) of one cell; colour None means the default text colour."""
        if value is None:
            return "", None
        if not isinstance(value, float):
            return str(value), colour(self.fixed) if self.fixed else None
        hit = mapped(value, self.mappings)
        if hit:
            return hit
        text = format_number(value, self.unit, self.decimals)
        return text, threshold_colour(value, self.thresholds) if self.mode != "auto" else None


def column_styles(panel: Mapping[str, Any]) -> dict[str, CellStyle]:
    """Per-column styles from the panel's byName field overrides."""
    styles = {}
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"]["id"] != "byName":
            continue
        props = {p["id"]: p["value"] for p in override["properties"]}
        styles[override["matcher"]["options"]] = CellStyle(
            mappings=props.get("mappings", []),
            thresholds=props.get("thresholds"),
            unit=props.get("unit"),
            decimals=props.get("decimals"),
            mode=props.get("custom.cellOptions", {}).get("type", "auto"),
            fixed=props.get("color", {}).get("fixedColor"),
        )
    return styles


def column_widths(table: Table, cells: list[list[tuple[str, str | None]]]) -> list[float]:
    """Axes-fraction widths proportional to each column's longest text, capped."""
    chars = []
    for index, name in enumerate(table.columns):
        longest = max([len(name)] + [len(row[index][0]) for row in cells])
        chars.append(min(max(longest, 4), 42) + 2)
    total = sum(chars)
    return [c / total for c in chars]


def fit(text: str, width: float, px_per_axes: float) -> str:
    """Cut `text` with an ellipsis so it fits `width` (axes fraction) at ~6.3 px a character."""
    room = max(int(width * px_per_axes / 6.3) - 1, 3)
    return text if len(text) <= room else text[: room - 1] + "\u2026"


def draw_table(ax: Axes, panel: Mapping[str, Any], prom: Prometheus, window: Window) -> None:
    """A table panel: header row, then one row per transformed row, cells coloured by style."""
    draw_title(ax, panel["title"])
    table = transformed(panel, prom, window)
    if not table.rows:
        no_data(ax)
        return
    styles = column_styles(panel)
    cells = [
        [styles.get(c, CellStyle()).render(row.get(c)) for c in table.columns] for row in table.rows
    ]
    extent = ax.get_window_extent()
    layout = RowLayout(
        widths=column_widths(table, cells),
        line=min(24 / extent.height, 0.85 / (len(cells) + 1)),
        px_wide=extent.width,
    )
    top = 1 - 26 / extent.height
    draw_cells(ax, [(name, MUTED) for name in table.columns], layout, top, None)
    modes = [styles.get(c, CellStyle()).mode for c in table.columns]
    for index, row in enumerate(cells):
        draw_cells(ax, row, layout, top - (index + 1) * layout.line, modes)


@dataclass(frozen=True)
class RowLayout:
    """Geometry shared by every row of one table, in axes fractions."""

    widths: list[float]
    line: float
    px_wide: float


def draw_cells(
    ax: Axes,
    cells: Sequence[tuple[str, str | None]],
    layout: RowLayout,
    top: float,
    modes: Sequence[str] | None,
) -> None:
    """One table row whose top edge is at `top`; `modes` None marks the header row."""
    left, line = 0.006, layout.line
    ax.plot([0.006, 0.994], [top - line, top - line], color=BORDER, lw=0.8, transform=ax.transAxes)
    for index, (text, tint) in enumerate(cells):
        width = layout.widths[index] * 0.988
        mode = modes[index] if modes else "header"
        ink = (tint or TEXT) if mode != "header" else MUTED
        if mode == "color-background" and tint:
            ax.add_patch(
                Rectangle(
                    (left, top - line),
                    width,
                    line,
                    transform=ax.transAxes,
                    facecolor=tint,
                    alpha=0.9,
                    lw=0,
                )
            )
            ink = "white"
        ax.text(
            left + 0.004,
            top - line / 2,
            fit(text, width, layout.px_wide),
            transform=ax.transAxes,
            va="center",
            ha="left",
            color=ink,
            fontsize=8.5,
            fontweight="bold" if mode == "header" else "normal",
        )
        left += width


@dataclass(frozen=True)
class Series:
    """One plotted line: legend text, times (matplotlib dates) and values."""

    label: str
    times: list[float]
    values: list[float]


def fetch_series(panel: Mapping[str, Any], prom: Prometheus, window: Window) -> list[Series]:
    """Range-query every target of a time series panel, in legend order."""
    result = []
    for target in panel.get("targets", []):
        expr = substitute(target["expr"], window)
        for item in prom.series(expr, window):
            times = [mdates.date2num(datetime.fromtimestamp(t, UTC)) for t, _ in item["values"]]
            values = [float(v) for _, v in item["values"]]
            label = legend_label(target.get("legendFormat"), item["metric"], expr)
            result.append(Series(label, times, values))
    return sorted(result, key=lambda s: s.label)


def on_grid(series: Sequence[Series], window: Window) -> tuple[list[float], list[list[float]]]:
    """Values aligned to the window's steps (NaN where absent), so they can be stacked."""
    steps = [window.start + i * window.step for i in range(window.seconds // window.step + 1)]
    times = [mdates.date2num(datetime.fromtimestamp(t, UTC)) for t in steps]
    aligned = []
    for one in series:
        by_time = {round(t * 86400): v for t, v in zip(one.times, one.values, strict=True)}
        aligned.append([by_time.get(round(t * 86400), math.nan) for t in times])
    return times, aligned


def draw_timeseries(ax: Axes, panel: Mapping[str, Any], prom: Prometheus, window: Window) -> None:
    """A time series panel: plot on the left, legend table with last values on the right."""
    draw_title(ax, panel["title"])
    series = fetch_series(panel, prom, window)
    if not series:
        no_data(ax)
        return
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    times, aligned = on_grid(series, window)
    legend_left = legend_start(ax, series, aligned, defaults)
    # A fixed pixel gutter for the y tick labels, whatever the panel's width.
    gutter = 62 / ax.get_window_extent().width
    plot = ax.inset_axes((gutter, 0.12, legend_left - gutter - 0.02, 0.76))
    style_plot(plot, window)
    custom = defaults.get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    plot_values(plot, times, aligned, custom, stacked=stacked, step=window.step)
    shade_thresholds(plot, defaults)
    plot.yaxis.set_major_formatter(lambda v, _: format_number(v, defaults.get("unit"), None))
    draw_legend(ax, series, aligned, defaults, legend_left)


def last_value(values: Sequence[float]) -> float:
    """The legend's "Last *" calculation: the last non-null value."""
    return next((v for v in reversed(values) if not math.isnan(v)), math.nan)


def legend_start(
    ax: Axes,
    series: Sequence[Series],
    aligned: Sequence[Sequence[float]],
    defaults: Mapping[str, Any],
) -> float:
    """Axes fraction where the legend begins: wide enough for its longest label and value."""
    unit, decimals = defaults.get("unit"), defaults.get("decimals")
    label = max(len(s.label) for s in series)
    value = max(len(format_number(last_value(v), unit, decimals)) for v in aligned)
    px = (label + value) * LEGEND_PX_PER_CHAR + 45
    return max(1 - px / ax.get_window_extent().width, 0.4)


def style_plot(plot: Axes, window: Window) -> None:
    """Dark axes with faint grid lines and HH:MM ticks, like Grafana's graph panel."""
    plot.set_facecolor(PANEL)
    for spine in plot.spines.values():
        spine.set_visible(False)
    plot.grid(color=BORDER, lw=0.6)
    plot.set_axisbelow(True)
    plot.tick_params(colors=MUTED, labelsize=7.5, length=0)
    plot.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=8))
    plot.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    plot.set_xlim(
        mdates.date2num(datetime.fromtimestamp(window.start, UTC)),
        mdates.date2num(datetime.fromtimestamp(window.end, UTC)),
    )


def plot_values(
    plot: Axes,
    times: list[float],
    aligned: list[list[float]],
    custom: Mapping[str, Any],
    *,
    stacked: bool,
    step: int,
) -> None:
    """Lines, filled areas or bars per the panel's drawStyle, stacked if the panel stacks."""
    bottom = [0.0] * len(times)
    alpha = custom.get("fillOpacity", 0) / 100
    for index, values in enumerate(aligned):
        tint = PALETTE[index % len(PALETTE)]
        base = bottom if stacked else [0.0] * len(times)
        top = [
            b + v if stacked and not math.isnan(v) else v for b, v in zip(base, values, strict=True)
        ]
        if custom.get("drawStyle") == "bars":
            heights = [0.0 if math.isnan(v) else v for v in values]
            plot.bar(times, heights, bottom=base, width=step / 86400, color=tint, alpha=0.8, lw=0)
        else:
            plot.plot(times, top, color=tint, lw=1.3)
            if alpha:
                plot.fill_between(times, base, top, color=tint, alpha=alpha, lw=0)
        if stacked:
            bottom = [b if math.isnan(t) else t for b, t in zip(bottom, top, strict=True)]
    # Like Grafana, start the axis at zero unless a value goes below it.
    plot.set_ylim(
        bottom=min([v for values in aligned for v in values if not math.isnan(v)] + [0.0])
    )


def shade_thresholds(plot: Axes, defaults: Mapping[str, Any]) -> None:
    """thresholdsStyle line+area: faint colour bands and dashed lines at each step."""
    if defaults.get("min") is not None:
        plot.set_ylim(bottom=defaults["min"])
    if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") != "line+area":
        return
    low, high = plot.get_ylim()
    steps = defaults.get("thresholds", {}).get("steps", [])
    for index, step in enumerate(steps):
        start = low if step.get("value") is None else step["value"]
        end = steps[index + 1]["value"] if index + 1 < len(steps) else high
        tint = colour(step["color"])
        plot.axhspan(start, end, color=tint, alpha=0.07, lw=0)
        if step.get("value") is not None:
            plot.axhline(step["value"], color=tint, lw=0.9, ls="--", alpha=0.8)
    plot.set_ylim(low, high)


def draw_legend(
    ax: Axes,
    series: Sequence[Series],
    aligned: Sequence[Sequence[float]],
    defaults: Mapping[str, Any],
    left: float,
) -> None:
    """Legend as a table placed right, with each series' last non-null value."""
    px_high = ax.get_window_extent().height
    line = min(15 / px_high, 0.8 / (len(series) + 1))
    top = 1 - 32 / px_high
    ax.text(
        0.985,
        top,
        "Last *",
        transform=ax.transAxes,
        ha="right",
        va="center",
        color=MUTED,
        fontsize=7.5,
        fontweight="bold",
    )
    for index, (one, values) in enumerate(zip(series, aligned, strict=True)):
        y = top - (index + 1) * line
        last = last_value(values)
        tint = PALETTE[index % len(PALETTE)]
        ax.plot([left, left + 0.018], [y, y], color=tint, lw=3, transform=ax.transAxes)
        ax.text(
            left + 0.025,
            y,
            one.label,
            transform=ax.transAxes,
            va="center",
            color=TEXT,
            fontsize=7.2,
        )
        value = format_number(last, defaults.get("unit"), defaults.get("decimals"))
        ax.text(
            0.985,
            y,
            value,
            transform=ax.transAxes,
            va="center",
            ha="right",
            color=TEXT,
            fontsize=7.2,
        )


# --------------------------------------------------------------------------- the whole page


DRAWERS = {"stat": draw_stat, "table": draw_table, "timeseries": draw_timeseries}


def render(dashboard: Mapping[str, Any], prom: Prometheus, window: Window, out: Path) -> None:
    """Draw every panel of the dashboard into one PNG at `out`."""
    panels: Sequence[Mapping[str, Any]] = dashboard["panels"]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    size = (1800, HEADER_PX + bottom * ROW_UNIT_PX + MARGIN_PX)
    fig = plt.figure(figsize=(size[0] / 100, size[1] / 100), dpi=100, facecolor=BACKGROUND)
    stamp = datetime.fromtimestamp(window.end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    fig.text(
        0.5,
        1 - 20 / size[1],
        TITLE,
        ha="center",
        va="center",
        color=TEXT,
        fontsize=15,
        fontweight="bold",
    )
    subtitle = f"tenant = All, target = All; last {window.seconds // 60} minutes to {stamp}"
    fig.text(0.5, 1 - 42 / size[1], subtitle, ha="center", va="center", color=MUTED, fontsize=9)
    for panel in panels:
        if panel["type"] == "row":
            draw_row(fig, panel, size)
            continue
        ax = panel_axes(fig, panel["gridPos"], size)
        drawer = DRAWERS.get(panel["type"])
        if drawer is None:
            draw_title(ax, panel["title"])
            no_data(ax)
            continue
        drawer(ax, panel, prom, window)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor=BACKGROUND)
    plt.close(fig)
    image = Image.open(buffer).convert("RGB")
    # A flat dark UI needs few colours; a 256-colour palette keeps the README asset small.
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: read the dashboard, query Prometheus, write the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, default=Path("grafana/dashboard-preview.png"))
    parser.add_argument("--range", type=parse_duration, default=parse_duration("15m"))
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD)
    parser.add_argument(
        "--end", type=parse_time, default=None, help="right edge, ISO 8601 or Unix time (now)"
    )
    args = parser.parse_args(argv)
    if urllib.parse.urlsplit(args.prometheus).scheme not in {"http", "https"}:
        parser.error("--prometheus must be an http(s) URL")
    dashboard = json.loads(args.dashboard.read_text(encoding="utf-8"))
    # Enough points for smooth lines without asking Prometheus for thousands of samples.
    step = max(5, args.range // 240)
    end = time.time() if args.end is None else args.end
    window = Window(end=float(int(end) // step * step), seconds=args.range, step=step)
    try:
        render(dashboard, Prometheus(args.prometheus.rstrip("/")), window, args.out)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        parser.exit(1, f"render_preview: cannot query {args.prometheus}: {error}\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""PNG plots for the experiments, with matplotlib as an optional extra.

Why separate: everything else in the experiments is standard library only. matplotlib is
imported here, lazily, inside the functions, with the non-interactive Agg backend (no
display needed). Without it (``pip install 'sllm[plot]'`` installs it), `unavailable`
says why, and the experiments write their JSON and Markdown and skip the pictures.

Not handled yet: interactive output, SVG, and styling beyond matplotlib's defaults.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DPI = 110
SIZE = (7.0, 4.2)
# Series a legend inside a panel holds without hiding the lines (see `panels`).
LEGEND_INSIDE_MAX = 6


def unavailable() -> str | None:
    """Why plots cannot be drawn, or None when they can."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install 'sllm[plot]')"
    return None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(
    plt: Any, figure: Any, path: Path, panels_in: tuple[float, float, float, float] | None = None
) -> Path:
    """Lay the figure out (its panels within `panels_in`, in figure fractions, leaving the
    rest to a figure legend), write it and close it."""
    figure.tight_layout(rect=panels_in)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def cdf(
    path: Path, series: Mapping[str, Sequence[float]], title: str, xlabel: str, log: bool = True
) -> Path:
    """One empirical CDF line per series."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=SIZE)
    for name, values in series.items():
        ordered = sorted(values)
        if not ordered:
            continue
        heights = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axes.step(ordered, heights, where="post", label=name)
    if log:
        axes.set_xscale("log")
    axes.set(title=title, xlabel=xlabel, ylabel="fraction of requests", ylim=(0, 1.01))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    return _save(plt, figure, path)


def bars(
    path: Path,
    labels: Sequence[str],
    values: Mapping[str, Sequence[float]],
    title: str,
    *,
    xlabel: str,
    units: Mapping[str, str],
) -> Path:
    """Grouped bars: one group per label, one bar per series, each series on its own axes,
    its y axis labelled with its unit (`units`, by series name)."""
    plt = _pyplot()
    figure, all_axes = plt.subplots(1, len(values), figsize=(SIZE[0], SIZE[1]), squeeze=False)
    for axes, (name, heights) in zip(all_axes[0], values.items(), strict=True):
        axes.bar(range(len(labels)), heights, color="tab:blue")
        axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize="small")
        axes.set_title(name, fontsize="medium")
        axes.set_xlabel(xlabel, fontsize="small")
        axes.set_ylabel(units[name], fontsize="small")
        axes.grid(True, axis="y", alpha=0.3)
    figure.suptitle(title)
    return _save(plt, figure, path)


# Fault and event marks, one colour and line style each (more marks cycle).
MARK_STYLES: tuple[tuple[str, Any], ...] = (
    ("tab:red", "--"),
    ("tab:green", "-."),
    ("tab:purple", ":"),
    ("tab:orange", "--"),
)


def _draw_marks(axes: Any, marks: Sequence[tuple[float, str]]) -> list[Any]:
    """Vertical lines at each mark's x, the same label in the same style; one legend handle
    per label (the lines themselves stay out of the axes' own legend of series)."""
    from matplotlib.lines import Line2D

    handles: dict[str, Any] = {}
    for x, label in marks:
        if label not in handles:
            color, style = MARK_STYLES[len(handles) % len(MARK_STYLES)]
            handles[label] = Line2D([], [], color=color, linestyle=style, label=label)
        handle = handles[label]
        axes.axvline(
            x,
            color=handle.get_color(),
            linestyle=handle.get_linestyle(),
            alpha=0.8,
            label="_nolegend_",
        )
    return list(handles.values())


def lines(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    marks: Sequence[tuple[float, str]] = (),
    log_x: bool = False,
    log_y: bool = False,
) -> Path:
    """Lines of (x, y) per series, with labelled vertical marks (faults)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=SIZE)
    for name, (xs, ys) in series.items():
        axes.plot(xs, ys, label=name, marker="o" if len(xs) <= 12 else None)
    marked = _draw_marks(axes, marks)
    if log_x:
        axes.set_xscale("log")
    if log_y:
        axes.set_yscale("log")
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(True, alpha=0.3)
    if len(series) > 1 or marked:
        axes.legend(handles=[*axes.get_legend_handles_labels()[0], *marked], fontsize="small")
    return _save(plt, figure, path)


def panels(
    path: Path,
    rows: Sequence[tuple[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]],
    title: str,
    xlabel: str,
    marks: Sequence[tuple[float, str]] = (),
    log_x: bool = False,
    targets: Sequence[float | None] = (),
) -> Path:
    """Several line plots stacked, sharing the x axis: (ylabel, series) per row. `marks`
    (x, label) are vertical lines through every row, named in the bottom row's legend;
    `targets`, one per row (None: none), a dashed horizontal line named "target".

    A series keeps its colour and line style in every row. With more series than a legend
    inside a panel can hold without hiding the lines (`LEGEND_INSIDE_MAX`), one legend
    for the whole figure stands to its right, and the series cycle through twenty colours
    and three line styles, so that no two look alike."""
    plt = _pyplot()
    names = list(dict.fromkeys(name for _, series in rows for name in series))
    many = len(names) > LEGEND_INSIDE_MAX
    width = SIZE[0] + (3.0 if many else 0.0)
    figure, all_axes = plt.subplots(
        len(rows), 1, figsize=(width, 2.4 * len(rows)), sharex=True, squeeze=False
    )
    styles: dict[str, dict[str, Any]] = {}
    if many:
        palette = plt.get_cmap("tab20").colors
        for index, name in enumerate(names):
            line = ("-", "--", ":")[index // len(palette) % 3]
            styles[name] = {"color": palette[index % len(palette)], "linestyle": line}
    last = len(rows) - 1
    for row, (axes, (ylabel, series)) in enumerate(zip(all_axes[:, 0], rows, strict=True)):
        for name, (xs, ys) in series.items():
            marker = "o" if len(xs) <= 12 else None
            axes.plot(xs, ys, label=name, linewidth=1.0, marker=marker, **styles.get(name, {}))
        marked = _draw_marks(axes, marks)
        named = marked if row == last else []  # the marks are named once, in the bottom row
        target = targets[row] if row < len(targets) else None
        if target is not None:
            axes.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        if many and row == 0:
            handles, labels = axes.get_legend_handles_labels()
            figure.legend(
                handles,
                labels,
                loc="center left",
                bbox_to_anchor=(0.74, 0.5),
                fontsize="x-small",
                frameon=False,
            )
        elif not many and (len(series) > 1 or named):
            handles = [*axes.get_legend_handles_labels()[0], *named]
            axes.legend(handles=handles, fontsize="x-small", ncol=3)
        elif named:
            axes.legend(handles=named, fontsize="x-small")
    if log_x:
        all_axes[-1, 0].set_xscale("log")
    all_axes[-1, 0].set_xlabel(xlabel)
    figure.suptitle(title)
    return _save(plt, figure, path, panels_in=(0.0, 0.0, 0.73, 1.0) if many else None)

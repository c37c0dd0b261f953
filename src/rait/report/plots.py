"""The two report figures: each method in the Pc–Pw plane, and THS bars, one panel per test set.

Figures are built with `matplotlib.figure.Figure` and saved through its Agg canvas, so no
pyplot state or GUI backend is touched (a report can be written from any process). Every
method keeps one colour and marker across panels and figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rait.artifacts import atomic_path
from rait.report.results import (
    REFERENCE,
    ColumnGroup,
    check_rows,
    method_key,
    order_methods,
    order_test_sets,
)

MARKERS = "osD^vPX*h<>p"
REFERENCE_LINE = {"color": "0.25", "linewidth": 1.2}
ISO_LINE = {"color": "0.6", "linewidth": 0.8, "linestyle": ":"}


def _styles(methods: Sequence[str]) -> dict[str, dict]:
    """A colour and a marker per method, in table order."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
    return {m: {"color": palette[i % len(palette)], "marker": MARKERS[i % len(MARKERS)]} for i, m in enumerate(methods)}


def _panels(n: int, width: float, height: float) -> tuple[Figure, list]:
    """A near-square grid of n panels (unused grid cells removed)."""
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def _whiskers(metric: dict) -> np.ndarray:
    """Error-bar lengths below and above the value: none where the interval is undefined or misses the value."""
    lengths = np.array([[metric["value"] - metric["low"]], [metric["high"] - metric["value"]]], dtype=float)
    return np.nan_to_num(np.clip(lengths, 0.0, None))


def _title(column: ColumnGroup, rows: Sequence[dict]) -> str:
    sizes = {row["n"] for row in rows if row.get("n") is not None}
    size = f", n = {sizes.pop()}" if len(sizes) == 1 else ""
    return f"{column.label}{size}"


def _draw_iso_ths(ax, pc0: float, pw0: float, reference: str) -> None:
    """THS = 0 through the origin and the reference, and dotted lines of equal THS parallel to it.

    THS = Pc − Pw·Pc0/Pw0, so THS = t is the line through (t, 0) with direction (Pc0, Pw0).
    """
    ax.axline((0, 0), (pc0, pw0), label=f"THS = 0 (through {reference}; below it THS > 0)", **REFERENCE_LINE)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    corners = [x - y * pc0 / pw0 for x in (x0, x1) for y in (y0, y1)]  # THS at the panel's corners
    levels = [t for t in MaxNLocator(nbins=8, steps=[1, 2, 5, 10]).tick_values(min(corners), max(corners)) if t != 0]
    for i, t in enumerate(levels):
        ax.axline((t, 0), (t + pc0, pw0), label=None if i else "other THS levels (labelled)", **ISO_LINE)
        # Label each line where it leaves the panel through the top edge or the right edge.
        x_top = t + y1 * pc0 / pw0
        x, y = (x_top, y1) if x0 <= x_top <= x1 else (x1, (x1 - t) * pw0 / pc0 if pc0 else y1)
        if x0 <= x <= x1 and y0 <= y <= y1:
            ax.annotate(f"{t:+g}", (x, y), xytext=(-2, -2), textcoords="offset points", ha="right", va="top",
                        fontsize=7, color=ISO_LINE["color"])
    ax.set(xlim=(x0, x1), ylim=(y0, y1))


def pc_pw_plot(rows: Sequence[dict], path: str | Path, reference: str = REFERENCE) -> Path:
    """Each method as a point (Pc, Pw) with its 95 % intervals, one panel per test set, saved as PNG.

    The solid line is THS = 0 (through the origin and the reference); dotted lines are other
    THS levels, labelled with their value, so a point's THS can be read off the plane.
    """
    rows = check_rows(rows)
    methods = order_methods(row["method"] for row in rows)
    styles = _styles(methods)
    columns = order_test_sets(rows)
    fig, axes = _panels(len(columns), width=4.6, height=3.9)
    for ax, column in zip(axes, columns):
        chosen = [row for row in rows if row["test_set"] == column.test_set]
        chosen.sort(key=lambda row: methods.index(row["method"]))
        for row in chosen:
            pc, pw = row["pc"], row["pw"]
            ax.errorbar(pc["value"], pw["value"], xerr=_whiskers(pc), yerr=_whiskers(pw), label=row["method"],
                        linestyle="none", markersize=6, capsize=2, elinewidth=0.9, **styles[row["method"]])
        highest_pc = max(row["pc"]["high"] for row in chosen)
        highest_pw = max(row["pw"]["high"] for row in chosen)
        ax.set(xlim=(0, min(100, highest_pc * 1.08 + 1)), ylim=(0, min(100, highest_pw * 1.08 + 1)),
               xlabel="Pc, correct (%)", ylabel="Pw, wrong (%)", title=_title(column, chosen))
        ax.grid(alpha=0.25)
        anchor = next((row for row in chosen if method_key(row["method"]) == method_key(reference)), None)
        if anchor is not None and anchor["pw"]["value"] > 0:
            _draw_iso_ths(ax, anchor["pc"]["value"], anchor["pw"]["value"], reference)
    handles: dict[str, object] = {}
    for ax in axes:  # one legend for all panels: every method once in table order, then the THS lines
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    rank = {method: i for i, method in enumerate(methods)}
    handles = dict(sorted(handles.items(), key=lambda item: rank.get(item[0], len(rank))))
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(4, len(handles)),
               fontsize=8, frameon=False)
    return _save(fig, path)


def ths_bars(rows: Sequence[dict], path: str | Path, reference: str = REFERENCE) -> Path:
    """THS per method with 95 % intervals, one panel per test set (methods top to bottom in table order), as PNG.

    The reference has no bar ('ref.', THS = 0 by definition), nor has a method whose THS is undefined.
    """
    rows = check_rows(rows)
    methods = order_methods(row["method"] for row in rows)
    styles = _styles(methods)
    columns = order_test_sets(rows)
    fig = Figure(figsize=(max(4.5, 3.3 * len(columns)), 1.2 + 0.32 * len(methods)), layout="constrained")
    axes = fig.subplots(1, len(columns), sharey=True, squeeze=False)[0]
    positions = {m: i for i, m in enumerate(methods)}
    for ax, column in zip(axes, columns):
        for row in (row for row in rows if row["test_set"] == column.test_set):
            y, ths = positions[row["method"]], row.get("ths")
            if ths is None:
                is_reference = "ths" not in row and method_key(row["method"]) == method_key(reference)
                ax.annotate("ref." if is_reference else "undefined", (0, y), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=8, color="0.35")
                continue
            ax.barh(y, ths["value"], xerr=_whiskers(ths), height=0.65, color=styles[row["method"]]["color"],
                    error_kw={"elinewidth": 0.9, "capsize": 2, "ecolor": "0.2"})
        ax.axvline(0, color="0.25", linewidth=0.8)
        ax.set(title=_title(column, [r for r in rows if r["test_set"] == column.test_set]), xlabel="THS (%)")
        ax.grid(axis="x", alpha=0.25)
    axes[0].set(yticks=range(len(methods)), yticklabels=methods, ylim=(len(methods) - 0.5, -0.5))
    return _save(fig, path)


def risk_coverage_plot(curves: Sequence[dict], path: str | Path) -> Path:
    """Risk against coverage of Init-Basic's answers ranked by each confidence, one panel per test set.

    `curves` are points {test_set, confidence, coverage, risk} (`rait.evaluate.abstain.risk_coverage`); the
    dotted line is the error rate, what a random ranking gives at every coverage.
    """
    test_sets = list(dict.fromkeys(point["test_set"] for point in curves))
    fig, axes = _panels(len(test_sets), width=4.2, height=3.4)
    for ax, test_set in zip(axes, test_sets):
        points = [point for point in curves if point["test_set"] == test_set]
        for name in dict.fromkeys(point["confidence"] for point in points):
            line = [point for point in points if point["confidence"] == name]
            ax.plot([p["coverage"] for p in line], [p["risk"] for p in line], label=name, linewidth=1.2)
        full = next(point["risk"] for point in points if point["coverage"] == 1.0)
        ax.axhline(full, color="0.4", linestyle=":", linewidth=0.9, label="random ranking")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="coverage (share answered)", ylabel="risk (share not correct)",
               title=test_set)
        ax.grid(alpha=0.25)
    axes[0].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def reward_plot(steps: Sequence[dict], path: str | Path) -> Path:
    """GRPO-RAIT's training: per optimiser step the shares of correct, refused and wrong completions (faint) and
    their moving means over a tenth of the steps, with the mean reward's, one panel per track and seed (`steps`:
    {track, seed, step, correct, refused, wrong, reward})."""
    import numpy as np

    runs = list(dict.fromkeys((point["track"], point.get("seed")) for point in steps))
    fig, axes = _panels(len(runs), width=4.6, height=3.4)
    for ax, (track, seed) in zip(axes, runs):
        points = [p for p in steps if (p["track"], p.get("seed")) == (track, seed)]
        x = [p["step"] for p in points]
        window = max(1, len(points) // 10)  # a step's few completions are noisy: the line is a moving mean

        def smooth(values: list[float]) -> np.ndarray:
            return np.convolve(values, np.ones(window) / window, mode="valid")

        for name, colour in (("correct", "tab:green"), ("refused", "tab:blue"), ("wrong", "tab:red")):
            values = [p[name] for p in points]
            ax.plot(x, values, color=colour, linewidth=0.6, alpha=0.3)
            ax.plot(x[window - 1:], smooth(values), label=f"{name} share", color=colour, linewidth=1.4)
        ax.plot(x[window - 1:], smooth([p["reward"] for p in points]), label="mean reward", color="0.2",
                linestyle="--", linewidth=1.1)
        ax.set(ylim=(-1.05, 1.05), xlabel="optimiser step", title=track + ("" if seed is None else f", seed {seed}"))
        ax.grid(alpha=0.25)
    axes[0].legend(fontsize=8, loc="lower left")
    return _save(fig, path)

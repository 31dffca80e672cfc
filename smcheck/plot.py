"""Optional pictures of a check: ``forward --plot`` and ``sweep --plot``.

:func:`plot_forward` draws each entry's error in ULPs against x_i - max(x), with the allowance
the verdict used; :func:`plot_sweep` draws a sweep as a preset x dtype matrix of verdicts.

matplotlib is an optional dependency (``pip install "smcheck[plot]"``), so it is imported inside
the functions and nothing else in smcheck needs it. Figures are drawn on an explicit Agg canvas
(no pyplot): that works without a display, and it leaves the backend and the open figures of a
caller (a notebook, say) untouched, which ``matplotlib.use("Agg")`` would not.
"""

from __future__ import annotations

import math
import os
import textwrap

from .exceptions import SmcheckError

#: Errors of 0 ULP cannot sit on a log axis: errors below this floor (0 included) are drawn at
#: it, with a note in the legend.
ZERO_FLOOR = 1e-3

#: Beyond this many rows one colour serves them all: a legend with a line per row stops helping.
MAX_ROW_COLOURS = 6

PASS_COLOURS = ("#4c72b0", "#7f7f7f", "#8172b2", "#937860", "#17becf", "#bcbd22")
MANY_ROWS_COLOUR = "#4c72b0"
FAIL_COLOUR = "#d62728"
PASS_CELL, FAIL_CELL, EMPTY_CELL = "#9bd69b", "#ef7b7b", "#e0e0e0"
ROW_MARKERS = ("o", "s", "D", "v", "P", "X")
#: Failing command names are wrapped to this many characters, about a sweep cell's width.
CELL_CHARS = 24


def _matplotlib():
    """The Figure class and the Agg canvas, or the install hint."""
    try:
        import matplotlib  # noqa: F401  (a None in sys.modules must fail here, not below)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SmcheckError('matplotlib is not installed (pip install "smcheck[plot]")') from None
    return Figure, FigureCanvasAgg


def _target(path) -> tuple[str, str]:
    """(path, format) for savefig, checked before any drawing so a typo costs nothing."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = os.fspath(path)
    ext = os.path.splitext(path)[1]
    if not ext:
        # savefig would append ".png" itself; do it here so the returned path is the file
        return path + ".png", "png"
    fmt = ext[1:].lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise SmcheckError(f"cannot write a plot to {path}: unknown image format '{ext}' "
                           f"(use one of {', '.join('.' + k for k in sorted(known))})")
    return path, fmt


def _save(fig, path: str, fmt: str) -> str:
    try:
        fig.savefig(path, format=fmt, dpi=120, bbox_inches="tight")
    except (OSError, ValueError, RuntimeError) as exc:
        raise SmcheckError(f"cannot write a plot to {path}: {exc}") from None
    return path


# --- forward ---------------------------------------------------------------------------------


def plot_forward(report, path) -> str:
    """Draw the per-entry errors of a forward report (``report.arrays``) to ``path``.

    One point per entry: x_i - max(x) across, the error in ULPs of the dtype up (log scale).
    Failing entries are red; the allowance is drawn per row as a step line; infinite errors
    (nan or inf results) sit at the top of the axis; masked entries (-inf) are left out.
    The format follows the extension (no extension: PNG, ".png" appended). Returns the path.
    """
    _matplotlib()
    path, fmt = _target(path)
    fig = _forward_figure(report)
    return _save(fig, path, fmt)


def _forward_figure(report):
    import numpy as np
    from matplotlib.lines import Line2D

    Figure, FigureCanvasAgg = _matplotlib()
    arrays = report.arrays or {}
    if not arrays or np.size(arrays.get("d", [])) == 0:
        raise SmcheckError("nothing to plot: no row has a defined softmax")
    d = np.atleast_2d(np.asarray(arrays["d"], dtype=np.float64))
    err = np.abs(np.atleast_2d(np.asarray(arrays["ulp_err"], dtype=np.float64)))
    allowed = np.atleast_2d(np.asarray(arrays["allowed_ulp"], dtype=np.float64))
    ok = np.atleast_2d(np.asarray(arrays["ok"], dtype=bool))
    rows = np.asarray(arrays.get("rows", np.arange(d.shape[0])))

    shown = d > -np.inf  # masked entries have no position on the x axis
    finite_err = shown & np.isfinite(err)
    infinite = shown & ~np.isfinite(err)  # nan counts: it is a nan result, not a small error
    # below the floor (0 included) nothing matters to a verdict, and a log axis has no 0
    small = finite_err & (err < ZERO_FLOOR)
    tol_ok = shown & np.isfinite(allowed) & (allowed > 0)
    drawn = np.concatenate([np.maximum(err[finite_err], ZERO_FLOOR), allowed[tol_ok]])
    lo, hi = (drawn.min(), drawn.max()) if drawn.size else (ZERO_FLOOR, 1.0)
    # a decade and more of headroom, so the infinite-error markers clear the highest point
    ylim = (lo / 3, hi * 30)

    fig = Figure(figsize=(9, 5.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_yscale("log")
    ax.set_ylim(*ylim)
    many = d.shape[0] > MAX_ROW_COLOURS
    handles = []

    for k in range(d.shape[0]):
        colour = MANY_ROWS_COLOUR if many else PASS_COLOURS[k % len(PASS_COLOURS)]
        marker = "o" if many else ROW_MARKERS[k % len(ROW_MARKERS)]
        label = f"row {int(rows[k])}" if d.shape[0] > 1 else "entries"
        y = np.maximum(err[k], ZERO_FLOOR)
        good, bad = finite_err[k] & ok[k], finite_err[k] & ~ok[k]
        size = 22 if many else 30
        ax.scatter(d[k, good], y[good], s=size, marker=marker, color=colour, alpha=0.8,
                   linewidths=0, zorder=3)
        ax.scatter(d[k, bad], y[bad], s=size + 6, marker=marker, color=FAIL_COLOUR,
                   edgecolors="black", linewidths=0.4, zorder=4)
        # infinite errors have no y value: axes units pin them to the top whatever the range
        for sel, c in ((infinite[k] & ok[k], colour), (infinite[k] & ~ok[k], FAIL_COLOUR)):
            if sel.any():
                ax.scatter(d[k, sel], np.full(int(sel.sum()), 0.96), s=60, marker="^",
                           color=c, edgecolors="black", linewidths=0.4,
                           transform=ax.get_xaxis_transform(), zorder=5)
        t = tol_ok[k]
        if t.any():
            order = np.argsort(d[k, t], kind="stable")
            xs, ys = d[k, t][order], allowed[k, t][order]
            line_colour = "#b0b0b0" if many else ("black" if d.shape[0] == 1 else colour)
            ax.plot(xs, ys, drawstyle="steps-mid", linestyle="--", linewidth=1.0 if many else 1.4,
                    color=line_colour, alpha=0.6 if many else 0.9, zorder=2,
                    marker="_" if xs.size < 2 else None, markersize=14)
        if not many and d.shape[0] > 1:
            handles.append(Line2D([], [], linestyle="--", color=colour, marker=marker,
                                  markersize=6, label=f"{label} (dashed: allowed)"))

    n_shown = int(shown.sum())
    n_fail = int((shown & ~ok).sum())
    if many:
        handles.append(Line2D([], [], linestyle="none", marker="o", color=MANY_ROWS_COLOUR,
                              label=f"passing entries ({d.shape[0]} rows)"))
        handles.append(Line2D([], [], linestyle="--", color="#b0b0b0",
                              label="allowed (one line per row)"))
    elif d.shape[0] == 1:
        handles.append(Line2D([], [], linestyle="none", marker="o", color=PASS_COLOURS[0],
                              label=f"passing: {int((shown & ok).sum())} of {int(shown.sum())}"))
        handles.append(Line2D([], [], linestyle="--", color="black", label="allowed error"))
    handles.append(Line2D([], [], linestyle="none", marker="o", color=FAIL_COLOUR,
                          markeredgecolor="black", markeredgewidth=0.4,
                          label=f"failing: {n_fail} of {n_shown}"))
    n_inf = int(infinite.sum())
    if n_inf:
        handles.append(Line2D([], [], linestyle="none", marker="^", color=FAIL_COLOUR,
                              markeredgecolor="black", markeredgewidth=0.4, markersize=8,
                              label=f"infinite error (nan/inf result): {n_inf}"))
    notes = []
    if small.any():
        n_zero = int((small & (err == 0)).sum())
        notes.append(f"{int(small.sum())} below {ZERO_FLOOR:g} ULP"
                     + (f" ({n_zero} of them 0)" if n_zero else "") + f" drawn at {ZERO_FLOOR:g}")
    n_masked = int((~shown).sum())
    if n_masked:
        notes.append(f"{n_masked} masked (x_i = -inf) not shown")
    handles += [Line2D([], [], linestyle="none", label=n) for n in notes]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              fontsize=9, frameon=False)

    xs_all = d[shown]
    if xs_all.size and xs_all.min() < -50:
        # a few far-out entries would squeeze the interesting ones near 0 into one pixel column
        ax.set_xscale("symlog", linthresh=1.0)
    if xs_all.size and xs_all.min() == xs_all.max():
        ax.set_xlim(xs_all.min() - 1, xs_all.max() + 1)
    ax.set_xlabel("x_i − max(x)")
    metric = report.options.get("metric")
    what = "log-softmax" if report.options.get("log") else "softmax"
    ylabel = f"|error| of {what} in ULPs of {report.dtype}"
    if report.options.get("log") and metric:
        ylabel += f" ({metric} metric)"
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    verdict = "PASSED" if report.passed else "FAILED"
    title = f"{report.command} {report.impl} {report.dtype}"
    if report.options.get("log"):
        title += " log-softmax"
    ax.set_title(f"{title} — {verdict}", color="#1a7f37" if report.passed else FAIL_COLOUR,
                 fontweight="bold")
    return fig


# --- sweep -----------------------------------------------------------------------------------


def _ulp_value(v) -> float | None:
    """max_ulp as a float: None and unreadable values are None, "inf"/"nan" become floats."""
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _fmt_ulp(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf"
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.3g}"
    mantissa, exponent = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def plot_sweep(cases: list[dict], path) -> str:
    """Draw sweep cases as a matrix to ``path``: presets down, dtypes across (order of first
    appearance), green where every command passed, red otherwise, each cell with ✓/✗ and the
    worst max_ulp over its commands. Returns the path."""
    _matplotlib()
    path, fmt = _target(path)
    fig = _sweep_figure(cases)
    return _save(fig, path, fmt)


def _sweep_figure(cases: list[dict]):
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    Figure, FigureCanvasAgg = _matplotlib()
    if not cases:
        raise SmcheckError("nothing to plot: the sweep has no cases")
    for c in cases:
        missing = [k for k in ("preset", "dtype", "command", "passed") if k not in c]
        if missing:
            raise SmcheckError(f"sweep case {c!r} lacks {', '.join(missing)}: cannot plot it")
    presets = list(dict.fromkeys(str(c["preset"]) for c in cases))
    dtypes = list(dict.fromkeys(str(c["dtype"]) for c in cases))
    cells: dict[tuple[str, str], list[dict]] = {}
    for c in cases:
        cells.setdefault((str(c["preset"]), str(c["dtype"])), []).append(c)

    # the sweep's table shows each case's worst error as a fraction of its allowance
    # ("scaled"); cases without it fall back to ULPs
    key = "scaled" if any(c.get("scaled") is not None for c in cases) else "max_ulp"
    # 0 failed, 1 passed, 2 no case run for that pair
    grid = np.full((len(presets), len(dtypes)), 2)
    labels = {}
    for (p, dt), group in cells.items():
        passed = all(bool(c["passed"]) for c in group)
        grid[presets.index(p), dtypes.index(dt)] = 1 if passed else 0
        ulps = [u for u in (_ulp_value(c.get(key)) for c in group) if u is not None]
        # nan means an undefined result: worse than any finite error
        worst = max(ulps, key=lambda u: math.inf if math.isnan(u) else u) if ulps else None
        text = f"{'✓' if passed else '✗'} {_fmt_ulp(worst)}"
        failed = [str(c["command"]) for c in group if not c["passed"]]
        if failed and len(group) > 1:
            # with several commands per cell, which one failed is the first question
            names = (f"all {len(group)} commands" if len(failed) == len(group) > 2
                     else ", ".join(failed))
            text += "\n" + textwrap.fill(names, CELL_CHARS)
        labels[presets.index(p), dtypes.index(dt)] = text

    lines = max(t.count("\n") for t in labels.values())
    fig = Figure(figsize=(2.2 + 1.7 * len(dtypes), 1.3 + (0.5 + 0.17 * lines) * len(presets)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fs = 10 if len(presets) <= 20 else 8
    for (i, j), text in labels.items():
        ax.text(j, i, text, ha="center", va="center", fontsize=fs - 2 if "\n" in text else fs)
    ax.imshow(grid, cmap=ListedColormap([FAIL_CELL, PASS_CELL, EMPTY_CELL]), vmin=0, vmax=2,
              aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(dtypes)), dtypes)
    ax.set_yticks(range(len(presets)), presets)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False, length=0)
    ax.set_xticks(np.arange(-0.5, len(dtypes)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(presets)), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    n_fail = sum(not c["passed"] for c in cases)
    impls = {str(c["impl"]) for c in cases if "impl" in c}
    caption = f"{len(cases) - n_fail} of {len(cases)} cases passed; cells: " + (
        "worst error / allowance" if key == "scaled" else "worst max ULP")
    if len(impls) == 1:
        caption = f"impl {impls.pop()}: " + caption
    ax.set_xlabel(caption, fontsize=9)
    handles = [Patch(color=PASS_CELL, label="every command passed"),
               Patch(color=FAIL_CELL, label="a command failed")]
    if (grid == 2).any():
        handles.append(Patch(color=EMPTY_CELL, label="not run"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              fontsize=8, frameon=False)
    ax.set_title("smcheck sweep", fontweight="bold")
    return fig

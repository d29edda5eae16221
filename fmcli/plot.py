"""fmcli plot: learning curves and tune results as PNG or SVG charts.

Inputs are -rlog tables, --log-json lines and `fmcli tune` result files, told apart by
their content (fmcli.io.runlog reads and checks them and defines the tune result layout).

Learning curves: one metric per iteration (or per elapsed second), one colour per file,
one line style per split (test solid, train dashed, validation dotted), one legend naming
both. The metric defaults to the first file's main one (rmse for regression, accuracy for
classification, what libFM prints as Train= and Test=); every file must have it. Another
-rlog column or --log-json `hyper` key (alpha, wlambda[0], time_learn ...) can be drawn
too, as one line per file. A NaN, infinite or null value is a gap in its line (the -rlog
table writes nan for what was not measured); a value with gaps on both sides is drawn as
a dot, so that it does not vanish.

Tune results: the score against each hyperparameter, one panel per hyperparameter,
sharing the score axis, one colour per file. A hyperparameter whose values are all
numbers gets a numeric axis (logarithmic when they are positive and span a factor of 100
or more, as learning rates and regularisation grids do); otherwise its values are
categories, in order of first appearance. Error bars show sd where a candidate has one;
the best candidate of each file is ringed. Failed candidates (score null or not finite)
are counted in the legend, not drawn.

matplotlib is imported only when a chart is drawn, and only its Figure, the Agg canvas
(PNG) and the SVG canvas: no pyplot, no window, no global backend. The chart is drawn in
matplotlib's default style (a matplotlibrc does not change it) and the SVG carries no
date and fixed ids, so the same inputs give the same bytes. Without matplotlib, plotting
fails with exit status 1: the command line is valid, the installation lacks a part.
"""

import contextlib
import io
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass

from fmcli.errors import FmcliError, InputError, UsageError
from fmcli.io.atomic import atomic_output, check_writable
from fmcli.io.runlog import MAIN_METRIC, SPLITS, TASK_NAME, LearningCurves, read_plot_input

FORMATS = ("png", "svg")
X_AXES = ("iteration", "elapsed")
NEEDS_MATPLOTLIB = "fmcli plot needs matplotlib: pip install 'fmcli[plot]'"
LINE_STYLE = {"test": "-", "train": "--", "validation": ":", "": "-"}
METRIC_LABEL = {"rmse": "RMSE", "mae": "MAE", "accuracy": "accuracy", "auc": "AUC", "logloss": "log-loss",
                "ll": "ll (libFM, base 10)"}
X_LABEL = {"iteration": "iteration", "elapsed": "elapsed seconds"}


@dataclass
class PlotJob:
    inputs: list                 # paths; "-" (once) is standard input
    out: str                     # "-" = standard output
    fmt: str = None              # "png" or "svg"; None: from the suffix of `out` (png for "-")
    metric: str = None           # None: the first file's main metric (or the tune result's)
    x_axis: str = None           # "iteration" (the default) or "elapsed"
    labels: tuple = ()           # legend names, one per input; default the paths
    title: str = None
    width: int = 800             # pixels
    height: int = 500
    dpi: int = 96                # text and lines are sized in points: more dpi, larger text


def output_format(out, fmt=None):
    """png or svg, from --format and the -out name; UsageError when they disagree or say nothing."""
    suffix = os.path.splitext(out)[1].lower().lstrip(".") if out != "-" else ""
    if fmt is not None:
        if suffix in FORMATS and suffix != fmt:
            raise UsageError(f"-out {out}: the name says {suffix}, --format says {fmt}")
        return fmt
    if suffix in FORMATS:
        return suffix
    if out == "-":
        return "png"
    raise UsageError(f"-out {out}: give a name ending in .png or .svg, or --format png|svg")


def run_plot(job):
    """Check the job, read every input, draw, and write the image atomically (nothing on error)."""
    fmt = output_format(job.out, job.fmt)
    if job.labels and len(job.labels) != len(job.inputs):
        raise UsageError(f"{len(job.labels)} --label for {len(job.inputs)} file(s): give one per file, in order")
    if list(job.inputs).count("-") > 1:
        raise UsageError("standard input (-) can be read only once")
    if job.x_axis is not None and job.x_axis not in X_AXES:
        raise UsageError(f"--x {job.x_axis}: must be iteration or elapsed")
    check_writable(job.out, "-out")
    if job.out == "-" and fmt == "png" and sys.stdout.isatty():
        raise UsageError("-out -: not writing PNG bytes to a terminal; redirect standard output or name a file")
    _require_matplotlib()
    inputs = [read_plot_input(path) for path in job.inputs]
    labels = list(job.labels) or ["stdin" if p == "-" else str(p) for p in job.inputs]
    image = render(inputs, labels, job, fmt)
    with atomic_output(job.out, binary=True) as f:
        f.write(image)


def render(inputs, labels, job, fmt):
    """The chart of `inputs` (all LearningCurves or all TuneResult) as PNG or SVG bytes."""
    fig = figure(inputs, labels, job)
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format=fmt, dpi=job.dpi, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def figure(inputs, labels, job):
    """The matplotlib Figure of `inputs`, drawn on an Agg canvas (never a screen)."""
    curves = [isinstance(i, LearningCurves) for i in inputs]
    if any(curves) and not all(curves):
        tune = [lab for lab, c in zip(labels, curves) if not c]
        raise UsageError(f"cannot draw learning curves and tune results in one chart ({tune[0]} is a tune result)")
    if not all(curves) and job.x_axis is not None:
        raise UsageError("--x applies to learning curves, not to tune results")
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _style():
        fig = Figure(figsize=(job.width / job.dpi, job.height / job.dpi), dpi=job.dpi, layout="constrained")
        FigureCanvasAgg(fig)
        if all(curves):
            _draw_curves(fig, inputs, labels, job.metric, job.x_axis or "iteration")
        else:
            _draw_tune(fig, inputs, labels, job.metric)
        if job.title:
            fig.suptitle(_plain(job.title))
    return fig


@contextlib.contextmanager
def _style():
    """matplotlib's default style, not the user's matplotlibrc, and fixed SVG ids: the same
    inputs give the same bytes."""
    import matplotlib
    import matplotlib.style

    with matplotlib.style.context("default"), \
            matplotlib.rc_context({"svg.hashsalt": "fmcli", "svg.fonttype": "path"}), warnings.catch_warnings():
        # a tiny canvas makes the layout engine warn; the image is still drawn at the size asked
        warnings.simplefilter("ignore")
        yield


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise FmcliError(NEEDS_MATPLOTLIB) from None
    import logging

    # its font-cache notice on first use would be the only non-error line on stderr
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    return matplotlib


# ---- learning curves --------------------------------------------------------------------------

def _draw_curves(fig, runs, labels, metric, x_axis):
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    ax = fig.subplots()
    metric = metric or MAIN_METRIC[runs[0].task]
    colours = _colours(len(runs))
    handles, drawn_splits, xs = [], [], set()
    for run, label, colour in zip(runs, labels, colours):
        try:
            series = run.series(metric)
        except KeyError:
            raise InputError(run.path, run.first_line,
                             f"no {metric} in this {TASK_NAME[run.task]} log (its metrics: "
                             f"{', '.join(run.metrics)}; or name one of its columns)") from None
        x = run.x_values(x_axis)
        xs.update(x)
        drawn = False
        for split in SPLITS + ("",):
            y = [v if math.isfinite(v) else math.nan for v in series.get(split, ())]
            if not any(v == v for v in y):
                continue  # not measured in this run (no test rows, no -validation)
            _line(ax, x, y, colour, LINE_STYLE[split])
            drawn = True
            if split and split not in drawn_splits:
                drawn_splits.append(split)
        if not drawn:
            raise InputError(run.path, run.first_line, f"{metric} has no finite value in any iteration")
        handles.append(Line2D([], [], color=colour, linewidth=2, label=_plain(label)))
    for split in sorted(drawn_splits, key=SPLITS.index):
        handles.append(Line2D([], [], color="0.35", linestyle=LINE_STYLE[split], label=split))
    ax.legend(handles=handles, loc="best", fontsize="small")
    ax.set_xlabel(X_LABEL[x_axis])
    ax.set_ylabel(_plain(METRIC_LABEL.get(metric, metric)))
    if x_axis == "iteration" and max(xs) - min(xs) < 3:  # too few for the locator to keep to integers
        ax.set_xticks(sorted(xs))
    elif x_axis == "iteration":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _line(ax, x, y, colour, style):
    """A line with gaps at NaN; a point with gaps on both sides becomes a dot."""
    ax.plot(x, y, color=colour, linestyle=style, linewidth=1.5)
    alone = [i for i in range(len(y)) if y[i] == y[i] and (i == 0 or y[i - 1] != y[i - 1])
             and (i == len(y) - 1 or y[i + 1] != y[i + 1])]
    if alone:
        ax.plot([x[i] for i in alone], [y[i] for i in alone], color=colour, linestyle="none", marker="o",
                markersize=3)


# ---- tune results -----------------------------------------------------------------------------

def _draw_tune(fig, results, labels, metric):
    from matplotlib.lines import Line2D

    first = results[0]
    for r in results[1:]:
        if r.metric != first.metric:
            raise UsageError(f"tune results of different metrics: {r.path} has {r.metric}, "
                             f"{first.path} has {first.metric}")
    if metric is not None and metric != first.metric:
        raise UsageError(f"--metric {metric}: {first.path} is a tune result of {first.metric} (leave out --metric)")
    names = list(dict.fromkeys(n for r in results for n in r.hyperparameters()))
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False)
    colours = _colours(len(results))
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        values = [c.params[name] for r in results for c in _scored(r) if name in c.params]
        if not values:  # only failed candidates set it
            values = [c.params[name] for r in results for c in r.candidates if name in c.params]
        numeric = all(_is_number(v) for v in values)
        if numeric:
            low, high = min(values), max(values)
            if low > 0 and high >= 100 * low:
                ax.set_xscale("log")
            place = float
        else:
            categories = list(dict.fromkeys(_category(v) for v in values))
            ax.set_xticks(range(len(categories)), [_plain(c) for c in categories],
                          rotation=30 if max(map(len, categories)) > 6 else 0, fontsize="small")
            ax.set_xlim(-0.5, len(categories) - 0.5)
        for j, (result, colour) in enumerate(zip(results, colours)):
            if not numeric:  # side by side, so that overlaid files do not hide each other
                shift = (j - (len(results) - 1) / 2) * min(0.15, 0.6 / len(results))
                place = lambda v, shift=shift: categories.index(_category(v)) + shift  # noqa: E731
            _candidates(ax, result, name, place, colour)
        ax.set_xlabel(_plain(name))
        ax.grid(True, alpha=0.3)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    better = "higher" if first.better == "max" else "lower"
    for row in axes:
        row[0].set_ylabel(_plain(f"{METRIC_LABEL.get(first.metric, first.metric)} ({better} is better)"))
    handles = [Line2D([], [], color=c, marker="o", linestyle="none", label=_plain(lab))
               for lab, c in zip(labels, colours)]
    handles.append(Line2D([], [], color="0.35", marker="o", markersize=11, markerfacecolor="none",
                          linestyle="none", label="best"))
    failed = sum(len(r.candidates) - len(_scored(r)) for r in results)
    if failed:
        handles.append(Line2D([], [], linestyle="none", label=f"{failed} failed, not shown"))
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4), fontsize="small")


def _candidates(ax, result, name, place, colour):
    """One file's candidates in the panel of `name`: points, sd error bars, the best ringed."""
    shown = [c for c in _scored(result) if name in c.params]
    if not shown:
        return
    with_sd = [c for c in shown if c.sd is not None]
    plain = [c for c in shown if c.sd is None]
    if with_sd:
        ax.errorbar([place(c.params[name]) for c in with_sd], [c.score for c in with_sd],
                    yerr=[c.sd for c in with_sd], fmt="o", color=colour, markersize=5, capsize=3, elinewidth=1)
    if plain:
        ax.plot([place(c.params[name]) for c in plain], [c.score for c in plain], "o", color=colour, markersize=5)
    pick = max if result.better == "max" else min
    best = pick(shown, key=lambda c: c.score)
    ax.plot([place(best.params[name])], [best.score], marker="o", markersize=11, markerfacecolor="none",
            markeredgecolor=colour, markeredgewidth=1.5, linestyle="none")


def _scored(result):
    """The candidates that did not fail."""
    return [c for c in result.candidates if math.isfinite(c.score)]


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _category(v):
    return v if isinstance(v, str) else json.dumps(v)


# ---- shared -----------------------------------------------------------------------------------

def _colours(n):
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    return [matplotlib.colormaps["turbo"](i / (n - 1)) for i in range(n)]


def _plain(text):
    """Text shown as written: a '$' in a file name must not start matplotlib's math mode."""
    return str(text).replace("$", r"\$")

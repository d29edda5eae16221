"""`fmcli plot`: learning curves from real -rlog / --log-json files, tune charts, bad input."""

import gzip
import itertools
import json
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_contract import run_cli, violation
from conftest import TESTDATA

mpl = pytest.importorskip("matplotlib")  # .ci/run installs fmcli[plot], so CI runs these

from fmcli.io.runlog import read_plot_input  # noqa: E402
from fmcli.plot import PlotJob, figure  # noqa: E402

REPO = os.path.dirname(TESTDATA)
MOVIES = ("-train", os.path.join(TESTDATA, "movies.train.libfm"))
CLICKS = ("-task", "c", "-train", os.path.join(TESTDATA, "clicks.train.libfm"),
          "-test", os.path.join(TESTDATA, "clicks.test.libfm"))
SGD = ("-method", "sgd", "-dim", "1,1,4", "-iter", "6", "-learn_rate", "0.02", "-regular", "0,0.1,0.1")
ALS = ("-method", "als", "-dim", "1,1,4", "-iter", "5", "-regular", "0,1,1")
MCMC = ("-method", "mcmc", "-dim", "1,1,4", "-iter", "5")
TAB10 = [mpl.colormaps["tab10"](i)[:3] for i in range(10)]


def train(run, tmp_path, name, *args):
    """A real short training; returns (its -rlog table, its --log-json file)."""
    rlog, log_json = tmp_path / f"{name}.tsv", tmp_path / f"{name}.jsonl"
    code, _, err = run("train", *args, "-rlog", rlog, "--log-json", log_json, "-q", "--no-cache")
    assert code == 0, err
    return rlog, log_json


@pytest.fixture
def split_movies(tmp_path):
    """movies.test.libfm as a test file and a separate validation file."""
    rows = open(os.path.join(TESTDATA, "movies.test.libfm")).read().splitlines(keepends=True)
    test, val = tmp_path / "test.libfm", tmp_path / "val.libfm"
    test.write_text("".join(rows[:1500]))
    val.write_text("".join(rows[1500:]))
    return ("-task", "r") + MOVIES + ("-test", str(test))


@pytest.fixture
def sgd_run(run, tmp_path, split_movies):
    """Regression SGD with test and validation rows."""
    return train(run, tmp_path, "sgd", *split_movies, *SGD, "-validation", str(tmp_path / "val.libfm"))


@pytest.fixture
def mcmc_clicks(run, tmp_path):
    return train(run, tmp_path, "clicks", *CLICKS, *MCMC)


def records(path):
    return [json.loads(line) for line in open(path)]


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def svg_size(data):
    root = ET.fromstring(data)
    assert root.tag.endswith("svg")
    return root.get("width"), root.get("height")


def has_colour(png_path, rgb, tol=0.02):
    """Some pixel of the image is (nearly) this colour: the line was drawn."""
    pixels = mpl.image.imread(png_path)[..., :3]
    return bool(np.any(np.all(np.abs(pixels - np.array(rgb)) < tol, axis=-1)))


def lines_by_style(ax, colour):
    """linestyle -> y data of the lines of one colour (the dots of isolated values left out)."""
    out = {}
    for line in ax.lines:
        if line.get_linestyle() != "None" and np.allclose(mpl.colors.to_rgb(line.get_color()), colour):
            out[line.get_linestyle()] = (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
    return out


def draw(paths, **kw):
    job = PlotJob(inputs=[str(p) for p in paths], out="x.png", **kw)
    labels = list(job.labels) or [str(p) for p in paths]
    return figure([read_plot_input(str(p)) for p in paths], labels, job)


# ---- learning curves --------------------------------------------------------------------------

def test_curves_from_rlog_png(run, tmp_path, sgd_run):
    rlog, log_json = sgd_run
    out = tmp_path / "curves.png"
    code, stdout, err = run("plot", rlog, "-out", out, "--width", 640, "--height", 410)
    assert (code, stdout, err) == (0, "", "")
    data = out.read_bytes()
    assert png_size(data) == (640, 410) and len(data) > 5000
    assert mpl.image.imread(out).shape[:2] == (410, 640)
    assert has_colour(out, TAB10[0])  # the run's lines are drawn, in the first colour
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_rlog_curves_hold_the_logged_values_one_style_per_split(sgd_run):
    rlog, log_json = sgd_run
    recs = records(log_json)
    ax = draw([rlog]).axes[0]
    lines = lines_by_style(ax, TAB10[0])
    assert set(lines) == {"-", "--", ":"}
    for style, split in (("-", "test"), ("--", "train"), (":", "validation")):
        x, y = lines[style]
        assert list(x) == list(range(len(recs)))
        # the table keeps 6 significant digits
        np.testing.assert_allclose(y, [r[split]["rmse"] for r in recs], rtol=1e-5)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(rlog), "train", "test", "validation"]
    assert ax.get_ylabel() == "RMSE" and ax.get_xlabel() == "iteration"


def test_rlog_and_json_of_one_run_give_the_same_curves(sgd_run):
    rlog, log_json = sgd_run
    a = lines_by_style(draw([rlog], metric="mae").axes[0], TAB10[0])
    b = lines_by_style(draw([log_json], metric="mae").axes[0], TAB10[0])
    assert set(a) == {"-", "--"}  # the table has no validation MAE
    assert set(b) == {"-", "--", ":"}  # the JSON record has
    for style in a:
        np.testing.assert_allclose(a[style][1], b[style][1], rtol=1e-5)


def test_curves_from_json_svg_and_dpi(run, tmp_path, sgd_run):
    _, log_json = sgd_run
    out = tmp_path / "curves.svg"
    code, stdout, err = run("plot", log_json, "-out", out, "--width", 640, "--height", 400)
    assert (code, stdout, err) == (0, "", "")
    # 640 x 400 pixels at 96 dpi are declared as 480 x 300 pt (= 640 x 400 CSS pixels)
    assert svg_size(out.read_bytes()) == ("480pt", "300pt")
    big = tmp_path / "big.png"
    code, _, err = run("plot", log_json, "-out", big, "--width", 640, "--height", 400, "--dpi", 192)
    assert code == 0, err
    assert png_size(big.read_bytes()) == (640, 400)
    code, _, err = run("plot", log_json, "-out", out, "--width", 640, "--height", 400, "--dpi", 192)
    assert code == 0, err
    assert svg_size(out.read_bytes()) == ("240pt", "150pt")


def test_overlaid_runs_one_colour_per_file_with_labels(run, tmp_path, split_movies):
    sgd, _ = train(run, tmp_path, "sgd", *split_movies, *SGD)
    _, als = train(run, tmp_path, "als", *split_movies, *ALS)
    mcmc, _ = train(run, tmp_path, "mcmc", *split_movies, *MCMC)
    out = tmp_path / "three.png"
    code, _, err = run("plot", sgd, als, mcmc, "--label", "SGD", "--label", "ALS", "--label", "MCMC $x$",
                       "-out", out, "--title", "movies")
    assert code == 0, err
    assert png_size(out.read_bytes()) == (800, 500)
    assert all(has_colour(out, TAB10[i]) for i in range(3))
    fig = draw([sgd, als, mcmc], labels=("SGD", "ALS", "MCMC $x$"))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SGD", "ALS", r"MCMC \$x\$", "train", "test"]
    for i, path in enumerate((sgd, als, mcmc)):
        lines = lines_by_style(ax, TAB10[i])
        assert set(lines) == {"-", "--"}
        assert len(lines["-"][1]) == (6 if i == 0 else 5)


def test_classification_metrics_hyperparameters_and_elapsed(mcmc_clicks):
    rlog, log_json = mcmc_clicks
    recs = records(log_json)
    ax = draw([log_json]).axes[0]  # default: accuracy
    lines = lines_by_style(ax, TAB10[0])
    np.testing.assert_allclose(lines["-"][1], [r["test"]["accuracy"] for r in recs])
    np.testing.assert_allclose(lines["--"][1], [r["train"]["accuracy"] for r in recs])
    for path, rtol in ((log_json, 1e-12), (rlog, 1e-5)):
        lines = lines_by_style(draw([path], metric="auc", x_axis="elapsed").axes[0], TAB10[0])
        np.testing.assert_allclose(lines["-"][1], [r["test"]["auc"] for r in recs], rtol=rtol)
        np.testing.assert_allclose(lines["--"][1], [r["train"]["auc"] for r in recs], rtol=rtol)
        # the JSON rounds elapsed to 1e-6 s, the table to 6 significant digits
        np.testing.assert_allclose(lines["-"][0], [r["elapsed"] for r in recs], rtol=rtol, atol=1e-6)
        ll = lines_by_style(draw([path], metric="ll").axes[0], TAB10[0])
        # the table logs libFM's ll for the test rows only, the JSON records for train too
        assert set(ll) == ({"-", "--"} if path == log_json else {"-"})
        np.testing.assert_allclose(ll["-"][1], [r["test"]["ll10"] for r in recs], rtol=rtol)
        trace = draw([path], metric="wlambda[0]").axes[0]
        assert trace.get_ylabel() == "wlambda[0]"
        np.testing.assert_allclose(lines_by_style(trace, TAB10[0])["-"][1],
                                   [r["hyper"]["wlambda[0]"] for r in recs], rtol=rtol)


def test_a_run_without_test_rows_draws_its_train_curve(run, tmp_path):
    rlog, _ = train(run, tmp_path, "r", "-task", "r", *MOVIES, *SGD)
    ax = draw([rlog]).axes[0]
    assert set(lines_by_style(ax, TAB10[0])) == {"--"}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(rlog), "train"]


def test_non_finite_values_are_gaps_and_lone_values_dots(tmp_path, sgd_run):
    rlog, _ = sgd_run
    header, *rows = rlog.read_text().splitlines()
    col = header.split("\t").index("rmse")
    for i, value in ((1, "nan"), (2, "1.5"), (3, "inf"), (5, "-nan")):
        fields = rows[i].split("\t")
        fields[col] = value
        rows[i] = "\t".join(fields)
    gaps = tmp_path / "gaps.tsv"
    gaps.write_text("\n".join([header] + rows) + "\n")
    ax = draw([gaps]).axes[0]
    y = lines_by_style(ax, TAB10[0])["-"][1]
    assert np.isnan(y[[1, 3, 5]]).all() and y[2] == 1.5 and np.isfinite(y[[0, 4]]).all()
    dots = [line for line in ax.lines if line.get_linestyle() == "None"]
    # rows 0 (file start), 2 and 4 stand alone; the train line has no gap and no dot
    assert len(dots) == 1 and list(dots[0].get_xdata()) == [0, 2, 4]


def test_one_iteration_is_a_dot_at_iteration_0(tmp_path, sgd_run):
    _, log_json = sgd_run
    one = tmp_path / "one.jsonl"
    one.write_text(log_json.read_text().splitlines()[0] + "\n")
    ax = draw([one]).axes[0]
    dots = [line for line in ax.lines if line.get_linestyle() == "None"]
    assert len(dots) == 3 and all(list(d.get_xdata()) == [0] for d in dots)  # train, test, validation
    assert list(ax.get_xticks()) == [0]


def test_stdout_png_and_svg(sgd_run):
    """-out - through a real pipe: the image's bytes and nothing else."""
    rlog, _ = sgd_run
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "fmcli", "plot", str(rlog), "-out", "-", "--width", "300", "--height", "200"]
    res = subprocess.run(cmd, capture_output=True, env=env)
    assert (res.returncode, res.stderr) == (0, b"")
    assert png_size(res.stdout) == (300, 200)
    res = subprocess.run(cmd + ["--format", "svg"], capture_output=True, env=env)
    assert (res.returncode, res.stderr) == (0, b"")
    assert svg_size(res.stdout) == ("225pt", "150pt")


def test_stdin_and_compressed_inputs(run, tmp_path, sgd_run):
    rlog, log_json = sgd_run
    packed = tmp_path / "log.jsonl.gz"
    packed.write_bytes(gzip.compress(log_json.read_bytes()))
    out = tmp_path / "x.png"
    code, _, err = run("plot", "-", packed, "-out", out, stdin=rlog.read_bytes())
    assert code == 0, err
    ax = draw([packed]).axes[0]
    assert len(lines_by_style(ax, TAB10[0])) == 3


def test_same_inputs_same_bytes(run, tmp_path, sgd_run):
    rlog, log_json = sgd_run
    for suffix in ("png", "svg"):
        images = []
        for name in ("a", "b"):
            out = tmp_path / f"{name}.{suffix}"
            code, _, err = run("plot", rlog, log_json, "-out", out)
            assert code == 0, err
            images.append(out.read_bytes())
        assert images[0] == images[1]


# ---- tune results -----------------------------------------------------------------------------

TUNE = """{"metric": "rmse", "folds": 3,
 "candidates": [
  {"params": {"dim": 4, "regular": "0,1,1", "learn_rate": 0.001, "adam": true}, "score": 0.95, "sd": 0.01},
  {"params": {"dim": 8, "regular": "0,1,1", "learn_rate": 0.01, "adam": false}, "score": 0.93, "sd": 0.012},
  {"params": {"dim": 16, "regular": "0,10,10", "learn_rate": 0.1, "adam": true}, "score": 0.91, "sd": 0.008},
  {"params": {"dim": 32, "regular": "0,10,10", "learn_rate": 0.01, "adam": false}, "score": 0.92},
  {"params": {"dim": 64, "regular": "0,100,100", "learn_rate": 0.001, "adam": true}, "score": null}
 ]}
"""


def test_tune_chart(run, tmp_path):
    tune = tmp_path / "tune.json"
    tune.write_text(TUNE)
    out = tmp_path / "tune.png"
    code, stdout, err = run("plot", tune, "-out", out, "--width", 1200, "--height", 450)
    assert (code, stdout, err) == (0, "", "")
    assert png_size(out.read_bytes()) == (1200, 450) and has_colour(out, TAB10[0])
    svg = tmp_path / "tune.svg"
    code, _, err = run("plot", tune, "-out", svg, "--width", 1200, "--height", 450)
    assert code == 0, err
    assert svg_size(svg.read_bytes()) == ("900pt", "337.5pt")

    fig = draw([tune])
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in panels] == ["dim", "regular", "learn_rate", "adam"]
    dim, regular, rate, adam = panels
    assert dim.get_xscale() == "linear" and rate.get_xscale() == "log"  # 0.001..0.1 spans 100x
    # categories in order of first appearance; the failed candidate's 0,100,100 is not one
    assert [t.get_text() for t in regular.get_xticklabels()] == ["0,1,1", "0,10,10"]
    assert [t.get_text() for t in adam.get_xticklabels()] == ["true", "false"]
    assert dim.get_ylabel() == "RMSE (lower is better)"
    # in the dim panel: four points, three with error bars of one sd, the best (dim 16) ringed
    points = sorted((x, y) for line in dim.lines if line.get_marker() == "o" and line.get_markersize() == 5
                    for x, y in zip(line.get_xdata(), line.get_ydata()))
    assert points == [(4, 0.95), (8, 0.93), (16, 0.91), (32, 0.92)]
    ring = [line for line in dim.lines if line.get_markersize() == 11]
    assert len(ring) == 1 and (ring[0].get_xdata()[0], ring[0].get_ydata()[0]) == (16, 0.91)
    bars = [seg for coll in dim.collections for seg in coll.get_segments()]
    assert sorted((s[0][0], round(s[0][1], 6), round(s[1][1], 6)) for s in bars) == \
        [(4, 0.94, 0.96), (8, 0.918, 0.942), (16, 0.902, 0.918)]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [str(tune), "best", "1 failed, not shown"]


def test_tune_results_overlaid_and_better_max(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"metric": "auc", "candidates": [
        {"params": {"reg": r}, "score": s} for r, s in ((0.1, 0.7), (1, 0.8), (10, 0.75))]}))
    b.write_text(json.dumps({"metric": "auc", "better": "min", "candidates": [
        {"params": {"reg": r, "method": "als"}, "score": s} for r, s in ((0.1, 0.72), (1, 0.71))]}))
    fig = draw([a, b], labels=("A", "B"))
    reg = fig.axes[0]
    rings = {mpl.colors.to_hex(line.get_markeredgecolor()): (line.get_xdata()[0], line.get_ydata()[0])
             for line in reg.lines if line.get_markersize() == 11}
    # auc: larger is better by default; b says min
    assert rings == {mpl.colors.to_hex(TAB10[0]): (1, 0.8), mpl.colors.to_hex(TAB10[1]): (1, 0.71)}
    assert reg.get_xscale() == "log"
    assert [ax.get_xlabel() for ax in fig.axes if ax.get_visible()] == ["reg", "method"]


# ---- without matplotlib -----------------------------------------------------------------------

def test_without_matplotlib_one_clear_line(tmp_path, sgd_run):
    rlog, _ = sgd_run
    out = tmp_path / "x.png"
    code = ("import sys\n"
            "sys.modules['matplotlib'] = None  # as if it were not installed\n"
            "from fmcli.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "try:\n    main(['plot', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('HELP OK', flush=True)\n"
            "main(['plot', sys.argv[1], '-out', sys.argv[2]])\n")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code, str(rlog), str(out)], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 1
    assert res.stdout.endswith("HELP OK\n")
    assert res.stderr == "fmcli: error: fmcli plot needs matplotlib: pip install 'fmcli[plot]'\n"
    assert not out.exists()


def test_importing_the_cli_and_the_plot_module_loads_no_matplotlib():
    code = ("import sys, fmcli.cli, fmcli.plot, fmcli.io.runlog\n"
            "heavy = {'numba', 'numpy', 'matplotlib'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr


# ---- bad input --------------------------------------------------------------------------------

RLOG = ("rmse\tmae\ttime_learn\trmse_train\tmae_train\telapsed\n"
        "0.9\t0.7\t0.1\t0.8\t0.6\t0.1\n0.8\t0.6\t0.1\t0.7\t0.5\t0.2\n")
REC = {"iteration": 0, "elapsed": 0.1, "time_learn": 0.1, "train": {"rmse": 0.8, "mae": 0.6},
       "test": {"rmse": 0.9, "mae": 0.7}, "validation": None, "hyper": {}}


def jl(*recs):
    return "".join(json.dumps(dict(REC, **r)) + "\n" for r in recs)


BAD_FILES = [
    ("", None, "empty file: expected an -rlog table, --log-json lines or a tune result"),
    ("\n  \n\n", None, "empty file: expected an -rlog table, --log-json lines or a tune result"),
    ("5 0:1 3:1\n4 1:1\n", 1, "not an -rlog table (a tab-separated header with an rmse or accuracy column), "
                            "--log-json lines or a tune result"),
    ("rmse\tmae\n", 1, "no rows after the header (no iteration finished)"),
    ("rmse\tmae\trmse\n1\t2\t3\n", 1, "column 'rmse' appears twice in the header"),
    ("rmse\t\tmae\n1\t2\t3\n", 1, "empty column name in the header (column 2)"),
    (RLOG + "0.7\t0.5\n", 4, "2 fields, the header has 6"),
    (RLOG.replace("0.5\t0.2", "abc\t0.2"), 3, "column mae_train: 'abc' is not a number"),
    ("\n\nrmse\tmae\n0.9\t0.7\n\n0.8\t0.6\t1\n", 6, "3 fields, the header has 2"),
    (jl({}, {"iteration": 1}) + "{not json\n", 3, "not a JSON object: Expecting property name enclosed in "
                                                  "double quotes"),
    (jl({}) + "[1, 2]\n", 2, "not a JSON object"),
    (jl({}, {"iteration": 0}), 2, "iteration 0 after iteration 0"),
    (jl({"iteration": -1}), 1, "iteration -1: not a non-negative integer"),
    (jl({}, {"iteration": 1.5}), 2, "iteration 1.5: not a non-negative integer"),
    (jl({}, {"iteration": 1, "train": {"rmse": "0.7"}}), 2, 'train.rmse: "0.7" is not a number'),
    (jl({}, {"iteration": 1, "test": {"rmse": True}}), 2, "test.rmse: true is not a number"),
    (jl({}, {"iteration": 1, "train": None}), 2, "no train metrics"),
    (jl({}, {"iteration": 1, "test": [0.5]}), 2, "test: not an object of metrics"),
    (jl({}, {"iteration": 1, "hyper": 3}), 2, "hyper: not an object"),
    (jl({"train": {"auc": 0.5}}), 1, "a --log-json record whose train metrics have neither rmse nor accuracy"),
    ('{"a": 1}\n{"b": 2}\n', 1, "a JSON object without iteration: not a --log-json record (and the file is not "
                                "one tune result object)"),
    ('{"a": 1}\n', 1, "a JSON document that is neither --log-json lines (objects with an iteration) nor a tune "
                      "result (an object with candidates)"),
    ('{"metric": "rmse",\n "candidates": [\n  {"params": {"dim": 4}, "score": 0.9},\n  {"params": }\n]}\n', 4,
     "not valid JSON: Expecting value"),
    ('{"metric": "rmse", "candidates": []}', 1, "tune result: candidates must be a non-empty list"),
    ('{"metric": 3, "candidates": []}', 1, 'tune result: metric must be a non-empty string such as "rmse"'),
    ('{"metric": "rmse", "better": "up", "candidates": [1]}', 1,
     'tune result: better "up": must be "min" or "max"'),
    ('{"metric": "rmse",\n "candidates": [\n  {"params": {"dim": 4}, "score": 0.9},\n'
     '  {"params": {"dim": 8}, "score": 0.8, "sd": -1}\n]}\n', 4, "candidate: sd -1.0 must be finite and >= 0"),
    ('{"metric": "rmse", "candidates": [\n{"params": {"dim": 4}, "score": 0.9},\n{"params": {"dim": [4]}, '
     '"score": 1}]}', 3, "candidate: params.dim: [4] is not a number, a string or true/false"),
    ('{"metric": "rmse", "candidates": [\n{"params": {"dim": 4}}]}', 2,
     "candidate: no score (write null for a candidate that failed)"),
    ('{"metric": "rmse", "candidates": [\n{"params": {"dim": 4}, "score": "x"}]}', 2,
     'candidate score: "x" is not a number'),
    ('{"metric": "rmse", "candidates": [\n{"params": 4, "score": 1}]}', 2,
     "candidate: params must be an object of name -> value"),
    ('{"metric": "rmse", "candidates": [\n{"params": {"dim": 1e999}, "score": 1}]}', 2,
     "candidate: params.dim is not finite"),
    ('{"metric": "rmse", "candidates": [{"params": {"dim": 4}, "score": null}, {"params": {"dim": 8}, '
     '"score": NaN}]}', 1, "tune result: no candidate has a finite score"),
    ('{"metric": "rmse", "candidates": [{"params": {}, "score": 1}]}', 1, "tune result: no candidate has params"),
]


@pytest.mark.parametrize("content, line, message", BAD_FILES)
def test_bad_files(run, tmp_path, content, line, message):
    bad = tmp_path / "bad.txt"
    bad.write_text(content)
    out = tmp_path / "out.png"
    code, stdout, err = run("plot", bad, "-out", out)
    where = f"{bad}:{line}" if line is not None else str(bad)
    assert (code, stdout) == (2, "")
    assert err == f"fmcli: error: {where}: {message}\n"
    assert os.listdir(tmp_path) == ["bad.txt"]  # no image, no temporary file


def test_unreadable_and_binary_files(run, tmp_path):
    out = tmp_path / "out.png"
    cases = [(tmp_path / "missing.tsv", "file not found"), (tmp_path, "is a directory, not a file")]
    binary = tmp_path / "b.tsv"
    binary.write_bytes(RLOG.encode() + b"0.7\t\xff\n")
    nul = tmp_path / "n.tsv"
    nul.write_bytes(RLOG.encode() + b"\x00")
    for path, message in cases + [(binary, None), (nul, None)]:
        code, stdout, err = run("plot", path, "-out", out)
        assert code == 2 and stdout == "" and not out.exists(), err
        if message:
            assert err == f"fmcli: error: {path}: {message}\n"
    assert run("plot", binary, "-out", out)[2] == f"fmcli: error: {binary}:4: not UTF-8 text\n"
    assert run("plot", nul, "-out", out)[2] == f"fmcli: error: {nul}:4: NUL byte: this is not a text file\n"


def test_metric_and_x_axis_errors(run, tmp_path, mcmc_clicks):
    rlog, log_json = mcmc_clicks
    reg = tmp_path / "reg.tsv"
    reg.write_text(RLOG)
    libfm = tmp_path / "libfm.tsv"  # libFM's table has no elapsed column
    header, *rows = rlog.read_text().splitlines()
    keep = [i for i, h in enumerate(header.split("\t")) if h != "elapsed"]
    libfm.write_text("\n".join("\t".join(line.split("\t")[i] for i in keep) for line in [header] + rows) + "\n")
    no_test, _ = train(run, tmp_path, "notest", "-task", "c", "-train", CLICKS[3], *MCMC)
    backwards = tmp_path / "back.jsonl"
    backwards.write_text(jl({}, {"iteration": 1, "elapsed": 0.05}))
    missing = tmp_path / "noelapsed.jsonl"
    missing.write_text(jl({}, {"iteration": 1, "elapsed": None}))
    out = tmp_path / "out.png"
    cases = [
        ((reg, "--metric", "auc"), f"{reg}:1: no auc in this regression log (its metrics: rmse, mae; or name "
                                   "one of its columns)"),
        ((log_json, reg), f"{reg}:1: no accuracy in this regression log (its metrics: rmse, mae; or name one "
                          "of its columns)"),
        ((log_json, "--metric", "nonesuch"), f"{log_json}:1: no nonesuch in this classification log (its "
                                             "metrics: accuracy, auc, logloss, ll; or name one of its columns)"),
        ((no_test, "--metric", "ll"), f"{no_test}:1: ll has no finite value in any iteration"),
        ((libfm, "--x", "elapsed"), f"{libfm}:1: no elapsed column (libFM's -rlog table has none): use --x "
                                    "iteration"),
        ((backwards, "--x", "elapsed"), f"{backwards}:2: elapsed 0.05: not a finite number of seconds at least "
                                        "the previous row's (0.1)"),
        ((missing, "--x", "elapsed"), f"{missing}:2: elapsed nan: not a finite number of seconds at least the "
                                      "previous row's (0.1)"),
    ]
    for args, message in cases:
        code, stdout, err = run("plot", *args, "-out", out)
        assert (code, stdout, err) == (2, "", f"fmcli: error: {message}\n")
        assert not out.exists()
    code, _, err = run("plot", libfm, "-out", out)  # by iteration, libFM's table is fine
    assert code == 0, err


def test_usage_errors(run, tmp_path):
    reg, tune = tmp_path / "reg.tsv", tmp_path / "tune.json"
    reg.write_text(RLOG)
    tune.write_text(TUNE)
    cases = [
        ((reg, "-out", tmp_path / "x.jpg"), f"-out {tmp_path / 'x.jpg'}: give a name ending in .png or .svg, or "
                                            "--format png|svg"),
        ((reg, "-out", tmp_path / "x.png", "--format", "svg"),
         f"-out {tmp_path / 'x.png'}: the name says png, --format says svg"),
        ((reg, reg, "--label", "a", "-out", tmp_path / "x.png"),
         "1 --label for 2 file(s): give one per file, in order"),
        (("-", "-", "-out", tmp_path / "x.png"), "standard input (-) can be read only once"),
        ((reg, tune, "-out", tmp_path / "x.png"),
         f"cannot draw learning curves and tune results in one chart ({tune} is a tune result)"),
        ((tune, "--x", "elapsed", "-out", tmp_path / "x.png"), "--x applies to learning curves, not to tune results"),
        ((tune, "--metric", "auc", "-out", tmp_path / "x.png"),
         f"--metric auc: {tune} is a tune result of rmse (leave out --metric)"),
        ((reg, "-out", tmp_path / "nodir" / "x.png"),
         f"{tmp_path / 'nodir' / 'x.png'}: cannot write -out: folder {tmp_path / 'nodir'} does not exist"),
    ]
    for args, message in cases:
        code, stdout, err = run("plot", *args)
        assert (code, stdout, err) == (2, "", f"fmcli: error: {message}\n")
    assert sorted(os.listdir(tmp_path)) == ["reg.tsv", "tune.json"]
    other = tmp_path / "other.json"
    other.write_text(TUNE.replace('"rmse"', '"mae"'))
    code, _, err = run("plot", tune, other, "-out", tmp_path / "x.png")
    assert (code, err) == (2, f"fmcli: error: tune results of different metrics: {other} has mae, {tune} has "
                              "rmse\n")
    code, _, err = run("plot", "-out", tmp_path / "x.png")
    assert code == 2 and "Missing argument 'FILE...'" in err


def test_a_failed_plot_leaves_the_old_image(run, tmp_path, sgd_run):
    rlog, _ = sgd_run
    out = tmp_path / "keep.png"
    out.write_bytes(b"old image")
    code, _, err = run("plot", rlog, "--metric", "auc", "-out", out)
    assert code == 2 and out.read_bytes() == b"old image"
    code, _, err = run("plot", rlog, "-out", out)
    assert code == 0 and png_size(out.read_bytes()) == (800, 500)


# ---- fuzz: the error contract holds for any input ---------------------------------------------

def _mutate(data, ops):
    data = bytearray(data)
    for kind, pos, byte in ops:
        if not data:
            break
        pos %= len(data)
        if kind == 0:
            data[pos] = byte
        elif kind == 1:
            del data[pos]
        else:
            data.insert(pos, byte)
    return bytes(data)


OPS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10 ** 6), st.sampled_from(
    b"\t\n{}[]\":,.-0123456789eEnaNIf x\xff\x00")), min_size=1, max_size=4)
SEEDS = {"rlog": RLOG.encode(), "json": jl({}, {"iteration": 1}).encode(), "tune": TUNE.encode()}


EXAMPLE = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(sorted(SEEDS)), ops=OPS, raw=st.binary(max_size=60), use_raw=st.booleans())
def test_plot_on_mutated_files(tmp_path, which, ops, raw, use_raw):
    folder = tmp_path / f"example{next(EXAMPLE)}"
    folder.mkdir()
    src = folder / "in.txt"
    src.write_bytes(raw if use_raw else _mutate(SEEDS[which], ops))
    out = folder / "out.png"
    code, stdout, err = run_cli(["plot", src, "-out", out])
    problem = violation(code, stdout, err, [out], folder)
    assert problem is None, (problem, src.read_bytes(), err)
    if code == 0:
        assert png_size(out.read_bytes()) == (800, 500)
    else:
        assert code == 2 and err.startswith(f"fmcli: error: {src}")

"""fmcli cv, tune and sharded predict: folds, grids, and the same results on one process, on
local worker processes and on a real Dask LocalCluster of two workers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cli_contract import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALS = ["-method", "als", "-dim", "1,1,4", "-iter", "6", "-regular", "0,1,1"]


def fmcli(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "fmcli", *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=600)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    """A small rating file: 60 users x 40 items, a planted low-rank signal; -meta: user 0, item 1."""
    rng = np.random.default_rng(5)
    folder = tmp_path_factory.mktemp("cv")
    U, I = rng.normal(size=(60, 3)), rng.normal(size=(40, 3))
    lines = []
    for _ in range(1500):
        u, i = rng.integers(60), rng.integers(40)
        lines.append(f"{np.clip(3 + U[u] @ I[i] + rng.normal(0, .3), 1, 5):.3f} {u}:1 {60 + i}:1")
    path = folder / "r.libfm"
    path.write_text("\n".join(lines) + "\n")
    meta = folder / "r.meta"
    meta.write_text("0\n" * 60 + "1\n" * 40)
    return path, meta


# ---- folds --------------------------------------------------------------------------------------

def test_fold_ids_plain_stratified_grouped():
    from fmcli.cv import fold_ids

    rng = np.random.default_rng(0)
    f = fold_ids(103, 5, seed=3)
    assert sorted(np.bincount(f)) == [20, 20, 21, 21, 21]
    assert (f == fold_ids(103, 5, seed=3)).all() and not (f == fold_ids(103, 5, seed=4)).all()
    y = rng.integers(1, 6, 500).astype(float)
    fs = fold_ids(500, 4, seed=1, y=y)
    for c in range(1, 6):   # every fold has the same share of each target, to within one row
        per = np.bincount(fs[y == c], minlength=4)
        assert per.max() - per.min() <= 1
    keys = rng.integers(0, 30, 400)
    fg = fold_ids(400, 3, seed=2, keys=keys)
    for key in np.unique(keys):
        assert len(set(fg[keys == key])) == 1            # a group never straddles folds
    assert np.bincount(fg).min() > 400 / 3 * 0.7


def test_take_rows_and_row_keys(ratings):
    from fmcli.cv import row_keys
    from fmcli.data import take_rows
    from fmcli.io.libsvm import read_libfm

    d = read_libfm(str(ratings[0]))
    rows = np.array([5, 0, 1499, 7, 7])
    t = take_rows(d, rows)
    dense = lambda x: np.array([[dict(zip(x.indices[x.indptr[r]:x.indptr[r + 1]], x.data[x.indptr[r]:x.indptr[r + 1]])).get(j, 0)  # noqa: E731
                                 for j in range(100)] for r in range(x.n_rows)])
    np.testing.assert_array_equal(dense(t), dense(d)[rows])
    np.testing.assert_array_equal(t.y, d.y[rows])
    assert t.n_features == max(t.indices) + 1            # as the reader gives for a file of these rows
    groups = np.array([0] * 60 + [1] * 40)
    np.testing.assert_array_equal(row_keys(d, groups, 0), d.indices[d.indptr[:-1]])   # the user id


# ---- cv -----------------------------------------------------------------------------------------

def test_cv_folds_equal_fmcli_train_on_the_fold_files(ratings, tmp_path):
    folds = tmp_path / "folds"
    folds.mkdir()
    summary, oof = tmp_path / "cv.json", tmp_path / "oof.txt"
    code, _, err = fmcli("cv", "-task", "r", "-train", ratings[0], "-k", 3, *ALS, "--work-dir", folds,
                         "--summary", summary, "-out", oof, "-q")
    assert code == 0, err
    doc = json.loads(summary.read_text())
    oof_pred = np.loadtxt(oof)
    assert len(doc["folds"]) == 3 and len(oof_pred) == 1500
    y = np.loadtxt(ratings[0], usecols=0)
    from fmcli.cv import fold_ids
    fold = fold_ids(1500, 3, seed=0)
    for f in range(3):
        pred = tmp_path / f"p{f}"
        code, _, err = fmcli("train", "-task", "r", "-train", folds / f"fold{f}.train.fmbin",
                             "-test", folds / f"fold{f}.test.fmbin", *ALS, "-out", pred, "-q")
        assert code == 0, err
        p = np.loadtxt(pred)
        np.testing.assert_array_equal(p, oof_pred[fold == f])     # out-of-fold rows in input order
        assert doc["folds"][f]["rmse"] == pytest.approx(float(np.sqrt(np.mean((p - y[fold == f]) ** 2))), rel=1e-5)  # -out has 6 digits
    rm = [m["rmse"] for m in doc["folds"]]
    assert doc["mean"]["rmse"] == pytest.approx(np.mean(rm)) and doc["sd"]["rmse"] == pytest.approx(np.std(rm, ddof=1))


def test_cv_on_a_dask_local_cluster_gives_the_same_folds(ratings, tmp_path):
    pytest.importorskip("dask.distributed")
    a, b = tmp_path / "local.json", tmp_path / "dask.json"
    assert fmcli("cv", "-task", "r", "-train", ratings[0], "-k", 3, *ALS, "--summary", a, "-q")[0] == 0
    code, _, err = fmcli("cv", "-task", "r", "-train", ratings[0], "-k", 3, *ALS, "--summary", b, "--workers", 2, "-q")
    assert code == 0 and err == "", err
    assert json.loads(a.read_text()) == json.loads(b.read_text())


def test_cv_grouped_keeps_users_together(ratings, tmp_path):
    oof = tmp_path / "oof"
    code, _, err = fmcli("cv", "-task", "r", "-train", ratings[0], "-k", 3, *ALS, "-meta", ratings[1],
                         "--group-by", 0, "-out", oof, "-q")
    assert code == 0, err
    assert len(np.loadtxt(oof)) == 1500


@pytest.mark.parametrize("args, message", [
    (["-k", "3", "--group-by", "0"], "--group-by needs -meta"),
    (["-k", "3", "--stratify", "--group-by", "0", "-meta", "M"], "exclude each other"),
    (["-k", "3", "-method", "sgda"], "sgda"),
    (["-k", "1"], "1 is not in the range"),
    (["-k", "3", "--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
])
def test_cv_errors(ratings, args, message):
    if "--scheduler" in args:
        pytest.importorskip("dask.distributed")
    code, stdout, err = run_cli(["cv", "-task", "r", "-train", ratings[0], *args])
    assert code in (1, 2) and stdout == "" and message in err, err
    assert err.startswith("fmcli: error: ")


# ---- tune ---------------------------------------------------------------------------------------

def test_grid_parsing_and_checks():
    from fmcli.errors import UsageError
    from fmcli.learners.base import TrainOptions
    from fmcli.tune import parse_grid, with_param

    assert parse_grid("dim=8,16 regular=0,10,10;0,20,20 --init-stdev=0.1") == [
        ("dim", ["8", "16"]), ("regular", ["0,10,10", "0,20,20"]), ("init_stdev", ["0.1"])]
    o = TrainOptions()
    assert with_param(o, "dim", "16").dim == (1, 1, 16) and with_param(o, "dim", "0,1,4").dim == (0, 1, 4)
    assert with_param(o, "learn_rate", "0.1,0.2,0.3").learn_rate == (0.1, 0.2, 0.3)
    for bad in ("bogus=1", "dim=", "dim=8 dim=16", "regular=x", "iter=-1", "method=foo", "dim=1,,2"):
        with pytest.raises(UsageError):
            grid = parse_grid(bad)
            for name, values in grid:
                for v in values:
                    with_param(o, name, v)


def test_tune_ranks_writes_json_and_saves_the_best(ratings, tmp_path):
    out, best = tmp_path / "tune.json", tmp_path / "best.fm"
    train, valid = tmp_path / "tr.libfm", tmp_path / "va.libfm"
    lines = ratings[0].read_text().splitlines()
    train.write_text("\n".join(lines[:1200]) + "\n")
    valid.write_text("\n".join(lines[1200:]) + "\n")
    code, _, err = fmcli("tune", "-task", "r", "-train", train, "-validation", valid, "-method", "als", "-iter", 6,
                         "--grid", "dim=1,4 regular=0,1,1;0,30,30", "--json", out, "--save-best", best)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["metric"] == "rmse" and doc["better"] == "min" and len(doc["candidates"]) == 4
    scores = [c["score"] for c in doc["candidates"]]
    assert doc["best"]["score"] == min(scores)
    ranked = [l for l in err.splitlines() if l.strip()[:1].isdigit()]
    assert [float(l.split("rmse=")[1].split()[0]) for l in ranked] == pytest.approx(sorted(scores), rel=1e-5)
    # each score is what fmcli train gives for the candidate's command line
    command = doc["best"]["command"].split()[1:]
    pred = tmp_path / "p"
    code, _, err = fmcli(*command, "-test", valid, "-out", pred, "-save_model", tmp_path / "again.fm", "-q")
    assert code == 0, err
    yv = np.loadtxt(valid, usecols=0)
    assert float(np.sqrt(np.mean((np.loadtxt(pred) - yv) ** 2))) == pytest.approx(doc["best"]["score"], rel=1e-5)
    assert best.read_bytes() == (tmp_path / "again.fm").read_bytes()
    from fmcli.io.runlog import read_plot_input
    assert len(read_plot_input(str(out)).candidates) == 4        # fmcli plot reads it


def test_tune_by_cross_validation_and_random_draw(ratings, tmp_path):
    out = tmp_path / "t.json"
    code, _, err = fmcli("tune", "-task", "r", "-train", ratings[0], "-k", 3, "-method", "als", "-iter", 4,
                         "--grid", "dim=1,2,4 init_stdev=0.05,0.1", "--random", 3, "--json", out, "-q")
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert len(doc["candidates"]) == 3 and all(c["sd"] is not None and c["sd"] >= 0 for c in doc["candidates"])


@pytest.mark.parametrize("grid, message", [
    ("dim=8 bogus=1", "unknown option 'bogus'"),
    ("regular=0,1;0,1,1", "-regular takes 1 or 3 values"),
    ("optimizer=adam", "applies to -method sgd and bpr only"),
])
def test_tune_bad_grid_exit_2_before_any_task(ratings, grid, message, tmp_path):
    code, stdout, err = run_cli(["tune", "-task", "r", "-train", ratings[0], "-k", "3", "-method", "als",
                                 "--grid", grid, "--json", tmp_path / "t.json"])
    assert code == 2 and message in err and not (tmp_path / "t.json").exists(), err


# ---- sharded predict ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(ratings, tmp_path_factory):
    m = tmp_path_factory.mktemp("model") / "m.fm"
    assert run_cli(["train", "-task", "r", "-train", ratings[0], "-method", "mcmc", "-dim", "1,1,4", "-iter", "20",
                    "-save_model", m, "-q"])[0] == 0
    return m


@pytest.mark.parametrize("window", [1, 2, 3, 1 << 22])
def test_text_spans_cut_at_line_boundaries(tmp_path, monkeypatch, window):
    from fmcli import shards
    from fmcli.shards import text_spans

    monkeypatch.setattr(shards, "COUNT_WINDOW", window)   # lines counted across windows' edges
    p = tmp_path / "x"
    p.write_bytes(b"a\nbb\n\nccc\nd\n\n\nee\nf")
    for n in range(1, 12):
        spans = text_spans(str(p), n)
        assert b"".join(p.read_bytes()[a:b] for a, b, _ in spans) == p.read_bytes()
        for a, b, line in spans:
            assert a == 0 or p.read_bytes()[a - 1:a] == b"\n"
            assert line == p.read_bytes()[:a].count(b"\n") + 1


@pytest.mark.parametrize("shards, workers", [(1, None), (3, None), (7, None), (2, 2)])
def test_sharded_predict_is_the_same_bytes(ratings, model, tmp_path, shards, workers):
    if workers:
        pytest.importorskip("dask.distributed")
    single, sharded = tmp_path / "one", tmp_path / "many"
    assert run_cli(["predict", "-model", model, "-test", ratings[0], "-out", single])[0] == 0
    binary = tmp_path / "r.fmbin"
    assert run_cli(["convert", "--binary", "-in", ratings[0], "-out", binary, "-q"])[0] == 0
    for test in (ratings[0], binary):
        args = ["predict", "-model", model, "-test", test, "-out", sharded, "--shards", shards]
        code, _, err = fmcli(*args, *(["--workers", workers] if workers else []))
        assert code == 0, err
        assert sharded.read_bytes() == single.read_bytes()
        assert "Wrote 1500 predictions" in err


@pytest.mark.parametrize("shards, workers", [(3, None), (2, 2)])
def test_sharded_ordinal_predict_is_the_same_bytes(ratings, tmp_path, shards, workers):
    # a -task o model with kept samples: -out (expected values or classes) and --out-proba
    if workers:
        pytest.importorskip("dask.distributed")
    classes = tmp_path / "c.libfm"
    classes.write_text("".join(f"{round(float(line.split()[0]))} {line.split(' ', 1)[1]}"
                               for line in ratings[0].read_text().splitlines(keepends=True)))
    m = tmp_path / "o.fm"
    assert run_cli(["train", "-task", "o", "-train", classes, "-dim", "1,1,4", "-iter", "8", "--keep-samples", "3",
                    "-save_model", m, "-q"])[0] == 0
    for extra in ((), ("--out-class",)):
        outputs = {}
        for how in ("one", "many"):
            out, proba = tmp_path / f"{how}.out", tmp_path / f"{how}.proba"
            args = ["predict", "-model", m, "-test", classes, "-out", out, "--out-proba", proba, *extra]
            if how == "many":
                code, _, err = fmcli(*args, "--shards", shards, *(["--workers", workers] if workers else []))
            else:
                code, _, err = run_cli(args)
            assert code == 0, err
            assert "Wrote 1500 predictions" in err and "Test\trmse=" in err, err
            outputs[how] = out.read_bytes(), proba.read_bytes()
        assert outputs["many"] == outputs["one"]
        assert len(outputs["one"][1].splitlines()) == 1500


def test_sharded_predict_errors_name_the_line(model, tmp_path):
    bad = tmp_path / "bad.libfm"
    bad.write_text("3 0:1\n" * 500 + "3 0:x\n" + "3 1:1\n" * 500)
    code, stdout, err = fmcli("predict", "-model", model, "-test", bad, "-out", tmp_path / "p", "--shards", 3)
    assert code == 2 and f"{bad}:501:" in err and not (tmp_path / "p").exists(), err


# ---- executors ----------------------------------------------------------------------------------

def _die_once(spec):
    """A task whose first run kills its worker process."""
    if not os.path.exists(spec["marker"]):
        open(spec["marker"], "w").close()
        os._exit(3)
    return spec["value"] * 2


def _fail(spec):
    raise ValueError("bad value")


def test_executor_results_in_task_order_and_failures_named(tmp_path):
    from fmcli.executors import TaskError, executor

    with executor(tasks=4) as ex:
        assert ex.map(abs, [-3, 1, -2, 5], list("abcd")) == [3, 1, 2, 5]
        with pytest.raises(TaskError, match="task a failed: ValueError: bad value"):
            ex.map(_fail, [{}, {}], ["task a", "task b"])
    with pytest.raises(TaskError, match="its worker process died"):
        with executor(tasks=2) as ex:
            ex.map(_die_once, [{"marker": str(tmp_path / "m0"), "value": 1}] * 2, ["t0", "t1"])


def _thread_settings(spec):
    import numba

    from fmcli import config

    return numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS, config._worker_share


@pytest.mark.parametrize("where", ["local processes", "LocalCluster"])
def test_workers_own_their_share_of_the_cores_and_may_use_all(where):
    from fmcli.executors import cores, executor, threads_per_task

    if cores() < 2:
        pytest.skip("one core: tasks run in this process")
    if where == "LocalCluster":
        pytest.importorskip("dask.distributed")
    ceiling = int(os.environ.get("NUMBA_NUM_THREADS") or cores())
    share = threads_per_task(2)
    with executor(tasks=2) if where == "local processes" else executor(workers=2) as ex:
        assert ex.map(_thread_settings, [{}, {}], ["a", "b"]) == [(min(share, ceiling), ceiling, share)] * 2


def test_dask_retries_a_task_whose_worker_died(tmp_path):
    pytest.importorskip("dask.distributed")
    from fmcli.executors import executor

    with executor(workers=2) as ex:
        specs = [{"marker": str(tmp_path / f"m{i}"), "value": i} for i in range(3)]
        assert ex.map(_die_once, specs, [f"t{i}" for i in range(3)]) == [0, 2, 4]


def test_fold_files_load_when_the_largest_id_is_in_one_fold(tmp_path):
    """A fold file's feature count is its own rows' (the binary file's check demands it)."""
    from fmcli.console import Console
    from fmcli.cv import CvJob, write_folds
    from fmcli.io.load import read_binary
    from fmcli.learners.base import TrainOptions

    p = tmp_path / "d.libfm"
    p.write_text("".join(f"{i % 5} {i % 7}:1\n" for i in range(40)) + "3 99:1\n")
    _, paths, _ = write_folds(CvJob(TrainOptions(), str(p), k=4, cache=False), str(tmp_path), Console(quiet=True))
    sizes = [read_binary(f, targets="required").n_features for pair in paths for f in pair]
    assert 100 in sizes and 7 in sizes

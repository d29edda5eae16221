"""The command line end to end: spellings, outputs, exit codes, no partial files."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fmcli.cli import main


@pytest.fixture
def run(capsys):
    """Run `fmcli ARGS` in-process; returns (exit code, stdout, stderr)."""
    def _run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        return e.value.code, out, err
    return _run


@pytest.fixture
def movies(testdata):
    return testdata("movies.train.libfm"), testdata("movies.test.libfm")


SGD = ["-method", "sgd", "-dim", "1,1,4", "-iter", "5", "-learn_rate", "0.01", "-regular", "0,0.01,0.01"]


def files_in(folder):
    return sorted(os.listdir(folder))


def test_train_writes_predictions_and_libfm_lines(run, movies, tmp_path):
    out = tmp_path / "pred.txt"
    code, stdout, err = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD, "-out", out)
    assert code == 0, err
    assert stdout == ""
    lines = [l for l in err.splitlines() if l.startswith("#Iter=")]
    assert len(lines) == 5 and lines[0].startswith("#Iter=  0\tTrain=") and "\tTest=" in lines[0]
    pred = np.loadtxt(out)
    assert len(pred) == sum(1 for _ in open(movies[1])) and pred.min() >= 1 and pred.max() <= 5


def test_both_spellings_same_result(run, movies, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD, "-out", a)
    gnu = [("-" + x if x.startswith("-") and not x[1:2].isdigit() else x) for x in SGD]
    code, _, err = run("train", "--task", "r", "--train", movies[0], "--test", movies[1], *gnu, "--out", b)
    assert code == 0, err
    assert a.read_text() == b.read_text()


def test_stdout_carries_only_predictions_and_quiet_is_silent(run, movies):
    code, stdout, err = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD,
                            "-out", "-", "--quiet")
    assert code == 0 and err == ""
    values = np.array(stdout.split(), float)
    assert len(values) == sum(1 for _ in open(movies[1]))


@pytest.mark.parametrize("method", ["sgd", "als", "mcmc"])
def test_train_save_predict_equals_out(run, movies, tmp_path, method):
    out, model, pred = tmp_path / "out", tmp_path / "m.fm", tmp_path / "pred"
    args = SGD if method == "sgd" else ["-method", method, "-dim", "1,1,4", "-iter", "8", "-regular", "0,5,5"]
    code, _, err = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *args,
                       "-out", out, "-save_model", model)
    assert code == 0, err
    code, _, err = run("predict", "-model", model, "-test", movies[1], "-out", pred)
    assert code == 0, err
    assert out.read_text() == pred.read_text()


def test_same_seed_identical_model_file(run, movies, tmp_path):
    a, b = tmp_path / "a.fm", tmp_path / "b.fm"
    for path in (a, b):
        assert run("train", "-task", "r", "-train", movies[0], *SGD, "-seed", "3", "-save_model", path)[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_warm_start_continues(run, movies, tmp_path):
    m1, m2 = tmp_path / "m1.fm", tmp_path / "m2.fm"
    run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD, "-save_model", m1)
    code, _, err = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD,
                       "-load_model", m1, "-save_model", m2)
    assert code == 0, err
    assert "Warm start" in err
    first = [l for l in err.splitlines() if l.startswith("#Iter=  0")][0]
    cold = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD)[2]
    cold_first = [l for l in cold.splitlines() if l.startswith("#Iter=  0")][0]
    rmse = lambda line: float(line.split("Train=")[1].split()[0])  # noqa: E731
    assert rmse(first) < rmse(cold_first)  # it started from the trained model


def test_warm_start_dim_mismatch(run, movies, tmp_path):
    m = tmp_path / "m.fm"
    run("train", "-task", "r", "-train", movies[0], *SGD, "-save_model", m)
    code, _, err = run("train", "-task", "r", "-train", movies[0], "-method", "sgd", "-dim", "1,1,6", "-load_model", m)
    assert code == 2 and "does not match the loaded model" in err


@pytest.mark.parametrize("args, message", [
    (["-train", "X"], "Missing option '-task'"),
    (["-task", "r", "-train", "X", "-dim", "1,1"], "three non-negative integers"),
    (["-task", "r", "-train", "X", "-dim", "1,1,8,2"], "three non-negative integers"),
    (["-task", "r", "-train", "X", "-dim", "1,1,x"], "three non-negative integers"),
    (["-task", "r", "-train", "X", "-dim", "2,1,8"], "must be 0 or 1"),
    (["-task", "r", "-train", "X", "-iter", "abc"], "is not a valid integer"),
    (["-task", "r", "-train", "X", "-regular", "0,1"], "wrong number of values"),
    (["-task", "r", "-train", "X", "-learn_rate", "0"], "values must be finite and > 0"),
    (["-task", "x", "-train", "X"], "'x' is not one of 'r', 'c'"),
    (["-task", "r", "-train", "X", "-validation", "v"], "-validation is not supported yet"),
    (["-task", "r", "-train", "X", "-relation", "u"], "-relation is not supported yet"),
    (["-task", "r", "-train", "X", "-cache_size", "10"], "-cache_size is not supported yet"),
    (["-task", "r", "-train", "X", "-method", "sgda"], "sgda is not supported yet"),
    (["-task", "r", "-train", "X", "-bogus", "1"], "No such option"),
    (["-task", "r", "-train", "X", "-out", "o"], "-out needs -test"),
])
def test_usage_errors_exit_2(run, args, message):
    code, stdout, err = run("train", *args)
    assert code == 2 and stdout == ""
    assert err.startswith("fmcli: error: ") and message in err, err


def test_negative_seed_is_a_value(run, movies):
    assert run("train", "-task", "r", "-train", movies[0], *SGD, "-seed", "-5")[0] == 0


@pytest.mark.parametrize("bad", ["1 3:1 4\n", "1 3:abc\n", "1 -3:1\n", "nan 3:1\n", "1 3:inf\n"])
def test_bad_input_no_partial_files(run, movies, tmp_path, bad):
    test = tmp_path / "test.libfm"
    test.write_text("4 1:1\n" + bad)
    out, model = tmp_path / "out", tmp_path / "m.fm"
    code, stdout, err = run("train", "-task", "r", "-train", movies[0], "-test", test, *SGD,
                            "-out", out, "-save_model", model, "--quiet")
    assert code == 2 and stdout == ""
    assert err.startswith(f"fmcli: error: {test}:2: ") and len(err.strip().splitlines()) == 1, err
    assert files_in(tmp_path) == ["test.libfm"]


def test_divergence_exit_1_nothing_written(run, movies, tmp_path):
    out = tmp_path / "out"
    code, _, err = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], "-method", "sgd",
                       "-learn_rate", "100", "-iter", "20", "-out", out)
    assert code == 1 and "diverged" in err
    assert files_in(tmp_path) == []


def test_missing_inputs_and_bad_model(run, movies, tmp_path):
    code, _, err = run("train", "-task", "r", "-train", tmp_path / "nope.libfm")
    assert code == 2 and "nope.libfm" in err
    bad = tmp_path / "bad.fm"
    bad.write_text("#fmcli-meta {}\n1 2 3\n")
    code, _, err = run("predict", "-model", bad, "-test", movies[1], "-out", tmp_path / "p")
    assert code == 2 and str(bad) in err
    assert not (tmp_path / "p").exists()
    code, _, err = run("train", "-task", "r", "-train", movies[0], *SGD, "-out", tmp_path / "no" / "dir" / "p",
                       "-test", movies[1])
    assert code == 2 and "does not exist" in err


def test_predict_unlabeled_rows_and_task_check(run, movies, tmp_path):
    model = tmp_path / "m.fm"
    run("train", "-task", "r", "-train", movies[0], *SGD, "-save_model", model)
    rows = tmp_path / "rows.libfm"
    rows.write_text("3:1 450:1\n5 7:1 420:1\n\n# comment\n")
    code, stdout, err = run("predict", "-model", model, "-test", rows, "-out", "-")
    assert code == 0 and len(stdout.split()) == 2
    code, _, err = run("predict", "-model", model, "-test", rows, "-task", "c")
    assert code == 2 and "regression" in err


def test_version_and_help(run):
    code, stdout, _ = run("--version")
    assert code == 0 and stdout.startswith("fmcli ")
    for cmd in ([], ["train"], ["predict"]):
        code, stdout, _ = run(*cmd, "--help")
        assert code == 0 and "Example" in stdout and "Exit codes" in stdout


def test_help_does_not_import_numba():
    code = ("import sys; from fmcli.cli import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'numba' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_python_m_and_stdin_pipeline(movies, tmp_path):
    model = tmp_path / "m.fm"
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "fmcli"]
    res = subprocess.run(cmd + ["train", "-task", "r", "-train", movies[0], *SGD, "-save_model", str(model), "-q"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    data = open(movies[1], "rb").read()
    res = subprocess.run(cmd + ["predict", "-model", str(model), "-test", "-", "-out", "-"], input=data,
                         capture_output=True, env=env)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.split()) == data.count(b"\n")


def test_rlog_table(run, movies, tmp_path):
    rlog = tmp_path / "log.tsv"
    code, _, err = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD, "-rlog", rlog)
    assert code == 0, err
    header, *rows = rlog.read_text().splitlines()
    cols = header.split("\t")
    assert len(rows) == 5 and {"rmse", "mae", "rmse_train", "time_learn", "elapsed"} <= set(cols)
    test_rmse = [float(r.split("\t")[cols.index("rmse")]) for r in rows]
    printed = [float(l.split("Test=")[1]) for l in err.splitlines() if l.startswith("#Iter=")]
    assert np.allclose(test_rmse, printed, rtol=1e-5)


def test_log_json_and_checkpoint(run, movies, tmp_path):
    import json

    log, ckpt, model = tmp_path / "log.jsonl", tmp_path / "ckpt.fm", tmp_path / "m.fm"
    code, _, err = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], "-method", "mcmc",
                       "-dim", "1,1,4", "-iter", "6", "--log-json", log, "--checkpoint", ckpt,
                       "--checkpoint-every", "4", "-save_model", model)
    assert code == 0, err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["iteration"] for r in records] == list(range(6))
    assert {"rmse", "mae"} <= set(records[-1]["test"]) and "alpha" in records[-1]["hyper"]
    printed = [float(l.split("Test=")[1]) for l in err.splitlines() if l.startswith("#Iter=")]
    assert np.allclose([r["test"]["rmse"] for r in records], printed, rtol=1e-5)
    # the last checkpoint is the final model
    code, _, _ = run("predict", "-model", ckpt, "-test", movies[1], "-out", tmp_path / "a")
    code, _, _ = run("predict", "-model", model, "-test", movies[1], "-out", tmp_path / "b")
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text()


def test_threads_option_gives_same_model(run, movies, tmp_path):
    a, b = tmp_path / "a.fm", tmp_path / "b.fm"
    for path, n in ((a, 1), (b, 2)):
        code, _, err = run("train", "-task", "r", "-train", movies[0], "-method", "als", "-dim", "1,1,4",
                           "-iter", "3", "-regular", "0,5,5", "--threads", n, "-save_model", path)
        assert code == 0, err
    assert a.read_bytes() == b.read_bytes()

"""The command line end to end: spellings, outputs, exit codes, no partial files."""

import os
import subprocess
import sys

import numpy as np
import pytest



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
    first = [l for l in err.splitlines() if l.startswith("#Iter=")][0]
    cold = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD)[2]
    cold_first = [l for l in cold.splitlines() if l.startswith("#Iter=  0")][0]
    rmse = lambda line: float(line.split("Train=")[1].split()[0])  # noqa: E731
    assert rmse(first) < rmse(cold_first)  # it started from the trained model


def test_warm_start_numbers_iterations_on(run, movies, tmp_path):
    m1, m2, m3 = tmp_path / "m1.fm", tmp_path / "m2.fm", tmp_path / "m3.fm"
    run("train", "-task", "r", "-train", movies[0], *SGD, "-save_model", m1)
    code, _, err = run("train", "-task", "r", "-train", movies[0], *SGD[:-6], "-iter", "2", "-load_model", m1,
                       "-save_model", m2)
    assert code == 0, err
    assert [l.split("\t")[0] for l in err.splitlines() if l.startswith("#Iter=")] == ["#Iter=  5", "#Iter=  6"]
    code, _, err = run("train", "-task", "r", "-train", movies[0], *SGD[:-6], "-iter", "1", "-load_model", m2,
                       "-save_model", m3)
    assert [l.split("\t")[0] for l in err.splitlines() if l.startswith("#Iter=")] == ["#Iter=  7"]


def test_warm_start_dim_mismatch(run, movies, tmp_path):
    m = tmp_path / "m.fm"
    run("train", "-task", "r", "-train", movies[0], *SGD, "-save_model", m)
    code, _, err = run("train", "-task", "r", "-train", movies[0], "-method", "sgd", "-dim", "1,1,6", "-load_model", m)
    assert code == 2 and "does not match the loaded model" in err


@pytest.mark.parametrize("args, message", [
    (["-train", "X"], "Missing option '-task'"),
    (["-task", "r", "-train", "X", "-dim", "1,1"], "three non-negative integers"),
    (["-task", "r", "-train", "X", "-dim", "1,1,8,0,2"], "order 3 has no factors"),
    (["-task", "r", "-train", "X", "-dim", "1,1,8,2,2,2,2,2"], "beyond the largest supported order 6"),
    (["-task", "r", "-train", "X", "-dim", "1,1,x"], "three non-negative integers"),
    (["-task", "r", "-train", "X", "-dim", "2,1,8"], "must be 0 or 1"),
    (["-task", "r", "-train", "X", "-iter", "abc"], "is not a valid integer"),
    (["-task", "r", "-train", "X", "-regular", "0,1"], "-regular takes 1 or 3 values"),
    (["-task", "r", "-train", "X", "-learn_rate", "0"], "values must be finite and > 0"),
    (["-task", "x", "-train", "X"], "'x' is not one of 'r', 'c'"),
    (["-task", "r", "-train", "X", "--early-stop", "3"], "--early-stop needs -validation"),
    (["-task", "r", "-train", "X", "-method", "als", "--optimizer", "adam"], "applies to -method sgd and bpr only"),
    (["-task", "r", "-train", "X", "-method", "sgd", "-relation", "u"], "relations are not supported with SGD"),
    (["-task", "r", "-train", "X", "-method", "sgda"], "sgda needs -validation"),
    (["-task", "r", "-train", "X", "-bogus", "1"], "No such option"),
    # libFM's single-dash spelling gets click's suggestions, not "No such option '-t'"
    (["-task", "r", "-train", "X", "-tset", "Y"], "No such option '-tset'. (Did you mean one of: '-seed', '-task', '-test'?)"),
    (["-task", "r", "-train", "X", "-iterr", "3"], "No such option '-iterr'. Did you mean '-iter'?"),
    (["-train", "X"], "Missing option '-task' / '--task'. Choose from: r, c, o\n"),
    (["-task", "r", "-train", "-", "-test", "-"], "-train and -test are both '-': only one input can be standard input"),
    (["-task", "r", "-train", "X", "-dim", "0,0,0"], "the model would have no parameters"),
    (["-task", "r", "-train", "X", "-out", "o"], "-out needs -test"),
])
def test_usage_errors_exit_2(run, args, message):
    code, stdout, err = run("train", *args)
    assert code == 2 and stdout == ""
    assert err.startswith("fmcli: error: ") and message in err, err


def test_single_dash_values_and_flag_clusters_are_not_typos(run):
    code, stdout, err = run("train", "-seed", "-3", "-regular", "-0", "-qh")  # -q -h: the help
    assert code == 0 and stdout.startswith("Usage: fmcli train"), err


def test_no_arguments_prints_the_help_on_stderr(run):
    code, stdout, err = run()
    assert code == 2 and stdout == ""
    assert err.startswith("Usage: fmcli [OPTIONS] COMMAND") and "\\n" not in err and "\n  train " in err


def test_sigint_says_what_was_kept(movies, tmp_path):
    import signal

    rlog, out = tmp_path / "log.tsv", tmp_path / "pred"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "fmcli", "train", "-task", "r", "-train", movies[0],
                             "-test", movies[1], "-method", "sgd", "-dim", "1,1,4", "-iter", "100000",
                             "-rlog", str(rlog), "-out", str(out)], stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:
        if line.startswith("#Iter=  2"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fmcli: error: interrupted after ") and "; -out not written; -rlog " in last, last
    assert files_in(tmp_path) == ["log.tsv"]


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
            "for args in (['train', '--help'], ['plot', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "heavy = {'numba', 'numpy', 'matplotlib'} & set(sys.modules)\n"
            "assert not heavy, f'heavy import: {heavy}'\n")
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


# ---- libFM's -rlog columns, convert in pipelines, outputs that are not regular files ------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LIBFM_RLOG = {
    ("sgd", "r"): "rmse mae time_pred time_learn time_learn2 time_learn4 rmse_train",
    ("sgd", "c"): "accuracy time_pred time_learn time_learn2 time_learn4 rmse_train",
    ("mcmc", "r"): "rmse mae time_pred time_learn time_learn2 time_learn4 alpha rmse_mcmc_this "
                   "rmse_mcmc_all rmse_mcmc_all_but5 wmu[0] wlambda[0] vmu[0,0] vlambda[0,0] vmu[0,1] vlambda[0,1]",
    ("als", "c"): "accuracy time_pred time_learn time_learn2 time_learn4 alpha acc_mcmc_this acc_mcmc_all "
                  "acc_mcmc_all_but5 ll_mcmc_this ll_mcmc_all ll_mcmc_all_but5 wmu[0] wlambda[0]",
}


@pytest.mark.parametrize("method, task", sorted(LIBFM_RLOG))
def test_rlog_starts_with_libfm_columns(run, testdata, tmp_path, method, task):
    name = "movies" if task == "r" else "clicks"
    train, test = testdata(f"{name}.train.libfm"), testdata(f"{name}.test.libfm")
    rlog = tmp_path / "log.tsv"
    code, _, err = run("train", "-task", task, "-train", train, "-test", test, "-method", method, "-dim", "1,1,2",
                       "-iter", "3", "-regular", "0,1,1", "-rlog", rlog)
    assert code == 0, err
    header, *rows = rlog.read_text().splitlines()
    cols = header.split("\t")
    libfm = LIBFM_RLOG[(method, task)].split()
    assert cols[:len(libfm)] == libfm and cols[-1] == "elapsed"
    assert len(rows) == 3 and all(len(r.split("\t")) == len(cols) for r in rows)
    table = [dict(zip(cols, map(float, r.split("\t")))) for r in rows]
    key = "rmse" if task == "r" else "accuracy"
    printed = [float(l.split("Test=")[1].split()[0]) for l in err.splitlines() if l.startswith("#Iter=")]
    train_printed = [float(l.split("Train=")[1].split()[0]) for l in err.splitlines() if l.startswith("#Iter=")]
    assert np.allclose([t[key] for t in table], printed, rtol=1e-5)
    assert np.allclose([t["rmse_train"] for t in table], train_printed, rtol=1e-5)  # libFM: train accuracy for c
    assert all(np.isnan(t["time_pred"]) and t["time_learn"] >= 0 for t in table)
    if method != "sgd":
        all_key = "rmse_mcmc_all" if task == "r" else "acc_mcmc_all"
        assert [t[all_key] for t in table] == [t[key] for t in table]
        assert all(t["alpha"] > 0 for t in table)


def test_outputs_to_a_fifo_are_written_in_place(run, movies, tmp_path):
    """An existing non-regular file (a FIFO, /dev/null) is written, never replaced by a rename."""
    import threading

    fifo = tmp_path / "pred.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()), daemon=True)
    reader.start()
    code, _, err = run("train", "-task", "r", "-train", movies[0], "-test", movies[1], *SGD, "-out", fifo, "-q")
    reader.join(10)
    assert code == 0, err
    assert os.path.exists(fifo) and not os.path.isfile(fifo)      # still the FIFO
    assert len(got[0].split()) == sum(1 for _ in open(movies[1]))
    assert files_in(tmp_path) == ["pred.fifo"]


def test_error_message_is_one_line_whatever_the_input(run, tmp_path):
    bad = tmp_path / "x.libfm"
    bad.write_bytes(b"1 2:1\n\x0b\x1b[31m 3:1\n")
    code, _, err = run("train", "-task", "r", "-train", bad)
    assert code == 2 and err.count("\n") == 1 and "\x1b" not in err and "\x0b" not in err, repr(err)
    code, _, err = run("predict", "-model", tmp_path / "no\nsuch.fm", "-test", bad)
    assert code == 2 and err.count("\n") == 1 and "no\\nsuch.fm" in err, repr(err)


def test_convert_help_and_no_heavy_imports(tmp_path):
    src = tmp_path / "u.data"
    src.write_text("1\t10\t5\n2\t20\t3\n")
    code = ("import sys; from fmcli.cli import main\n"
            "for args in (['convert', '--help'], ['convert', '-in', sys.argv[1], '-out', sys.argv[2], "
            "'--target', '2', '--categorical', '0,1', '-q']):\n"
            "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
            "assert 'numba' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'\n")
    res = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "o")], capture_output=True,
                         text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "Example" in res.stdout and "Exit codes" in res.stdout
    assert (tmp_path / "o").read_text() == "5 0:1 2:1\n3 1:1 3:1\n"


def test_convert_predict_shell_pipeline(movies, tmp_path):
    """Raw pairs -> convert with the mapping -> predict, through real pipes: one line per input
    row, in input order, stdout only data, messages on stderr."""
    ratings = tmp_path / "r.tsv"
    rng = np.random.default_rng(7)
    u, i = rng.integers(0, 20, 300), rng.integers(0, 15, 300)
    y = 1 + (u % 5 + i % 3) % 5
    ratings.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in zip(u, i, y)))
    py = f"'{sys.executable}' -m fmcli"
    script = (f"set -e -o pipefail; cd '{tmp_path}'\n"
              f"{py} convert -in r.tsv -out r.libfm --target 2 --categorical 0,1 --mapping map.json -q\n"
              f"{py} train -task r -train r.libfm -method als -dim 1,1,2 -iter 5 -regular 0,1,1 -save_model m.fm -q\n"
              f"printf '3\\t4\\n999\\t1\\n3\\t4\\n' | {py} convert -in - -out - --use-mapping map.json --no-target"
              f" | {py} predict -model m.fm -test - -out - | paste - - - > scored.txt\n")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    scored = (tmp_path / "scored.txt").read_text().split()
    assert len(scored) == 3 and scored[0] == scored[2] != scored[1]
    assert "1 unknown value(s) dropped" in res.stderr


def test_sigterm_keeps_last_complete_checkpoint_and_log(movies, tmp_path):
    import signal
    import time

    ckpt, rlog, out = tmp_path / "ckpt.fm", tmp_path / "log.tsv", tmp_path / "pred"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "fmcli", "train", "-task", "r", "-train", movies[0],
                             "-test", movies[1], "-method", "sgd", "-dim", "1,1,4", "-iter", "100000", "--checkpoint", str(ckpt),
                             "--checkpoint-every", "1", "-rlog", str(rlog), "-out", str(out)],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    for line in proc.stderr:
        if line.startswith("#Iter=  3") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    done = int(last.split("terminated after ")[1].split()[0])
    assert done >= 3 and last == (f"fmcli: error: terminated after {done} of 100000 iterations; -out not written; "
                                  f"-rlog {rlog} holds the {done} iterations done; "
                                  f"--checkpoint {ckpt} holds the model of iteration {done - 1}")
    assert files_in(tmp_path) == ["ckpt.fm", "log.tsv"]          # no -out, no temporary file
    header, *rows = rlog.read_text().splitlines()
    assert len(rows) >= 3 and all(len(r.split("\t")) == len(header.split("\t")) for r in rows)
    code = subprocess.run([sys.executable, "-m", "fmcli", "predict", "-model", str(ckpt), "-test", movies[1],
                           "-out", str(out), "-q"], env=env, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    assert len(out.read_text().split()) == sum(1 for _ in open(movies[1]))

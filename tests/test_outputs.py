"""The output side of fmcli's promises, run as a user would (`python -m fmcli` in a fresh
process): a run publishes all its outputs or none, stale temporaries of killed runs are
cleared, every write to a stream is complete or an error (exit 1 naming the output, 141 when
the reader went away), no output replaces an input, and closed or full standard streams never
change what a run writes or how it ends."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = os.path.join(REPO, "testdata")
MOVIES = ["train", "-task", "r", "-train", f"{T}/movies.train.libfm", "-test", f"{T}/movies.test.libfm"]
ENV = {**os.environ, "PYTHONPATH": REPO}


def fmcli(*args, **kw):
    """Run `fmcli ARGS`; returns the CompletedProcess (stdout and stderr as bytes)."""
    return subprocess.run([sys.executable, "-m", "fmcli", *map(str, args)], env=ENV, capture_output=True,
                          timeout=300, **kw)


def shell(command, **kw):
    """Run a bash command line in which `fmcli` is this checkout's CLI."""
    return subprocess.run(["bash", "-c", f"fmcli() {{ {sys.executable} -m fmcli \"$@\"; }}; {command}"],
                          env=ENV, capture_output=True, timeout=300, **kw)


def error_lines(stderr):
    return [line for line in stderr.decode().splitlines() if line.startswith("fmcli: error:")]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.fm"
    r = fmcli(*MOVIES, "-method", "sgd", "-iter", "2", "-save_model", path, "-q")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def big_test(tmp_path_factory):
    """96,000 rows (about 700 KB of predictions): more than a pipe holds."""
    path = tmp_path_factory.mktemp("big") / "big.libfm"
    with open(f"{T}/movies.test.libfm", "rb") as f:
        rows = f.read()
    path.write_bytes(rows * 40)
    return path


def stdout_commands(model, test):
    return {
        "predict": ["predict", "-model", model, "-test", test, "-out", "-", "-q"],
        "train": ["train", "-task", "r", "-train", f"{T}/movies.train.libfm", "-test", test, "-method", "sgd",
                  "-iter", "1", "-out", "-", "-q"],
        "convert": ["convert", "--to-text", "-in", test, "-out", "-", "-q"],
    }


# ---- item 4: streams --------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["predict", "train", "convert"])
def test_stdout_on_full_disk_is_exit_1_naming_stdout(model, big_test, command):
    args = stdout_commands(model, big_test)[command]
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "fmcli", *map(str, args)], env=ENV, stdout=full,
                           stderr=subprocess.PIPE, timeout=300)
    assert r.returncode == 1
    assert r.stderr.decode() == "fmcli: error: <stdout>: No space left on device\n"


@pytest.mark.parametrize("command", ["predict", "train", "convert"])
@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_reader_that_goes_away_is_exit_141_and_silence(model, big_test, command, reader):
    args = " ".join(f"'{a}'" for a in stdout_commands(model, big_test)[command])
    r = shell(f"fmcli {args} 2>err | {reader} >/dev/null; echo ${{PIPESTATUS[0]}}; cat err",
              cwd=big_test.parent)
    status, *err = r.stdout.decode().splitlines()
    assert (status, err) == ("141", [])


def test_stdout_gets_every_prediction_through_a_slow_pipe(model, big_test):
    """A reader slower than fmcli: nothing lost (short writes are retried), exit 0."""
    r = shell(f"fmcli predict -model '{model}' -test '{big_test}' -out - -q | (sleep 1; wc -l)")
    assert r.returncode == 0 and r.stdout.split() == [b"96000"], r.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KB tmpfs (needs the right to mount, else the test is skipped): a disk that fills
    in the middle of a write, so write(2) first comes back short, then fails."""
    folder = tmp_path / "small"
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(folder)], capture_output=True)
    if r.returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_disk_that_fills_during_the_write(model, big_test, small_disk):
    with open(small_disk / "s.txt", "wb") as f:
        r = subprocess.run([sys.executable, "-m", "fmcli", "predict", "-model", str(model), "-test", str(big_test),
                            "-out", "-"], env=ENV, stdout=f, stderr=subprocess.PIPE, timeout=300)
    assert (r.returncode, r.stderr.decode()) == (1, "fmcli: error: <stdout>: No space left on device\n")
    (small_disk / "s.txt").unlink()
    (small_disk / "p.txt").write_text("old\n")
    r = fmcli("predict", "-model", model, "-test", big_test, "-out", small_disk / "p.txt")
    assert (r.returncode, r.stderr.decode()) == (1, f"fmcli: error: {small_disk / 'p.txt'}: No space left on device\n")
    assert os.listdir(small_disk) == ["p.txt"] and (small_disk / "p.txt").read_text() == "old\n"


@pytest.mark.parametrize("option", ["-out", "-save_model", "-rlog", "--log-json"])
def test_full_disk_names_the_file(tmp_path, option):
    r = fmcli(*MOVIES, "-method", "sgd", "-iter", "1", option, "/dev/full", "-q", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.decode() == "fmcli: error: /dev/full: No space left on device\n"


# ---- item 3: publish together -----------------------------------------------------------------

def _write_old(folder, names):
    for name in names:
        (folder / name).write_bytes(b"old " + name.encode() + b"\n")


def _is_old(folder, name):
    return (folder / name).read_bytes() == b"old " + name.encode() + b"\n"


def test_failed_model_write_publishes_no_predictions(tmp_path):
    _write_old(tmp_path, ["p.txt"])
    r = fmcli(*MOVIES, "-method", "sgd", "-iter", "1", "-out", "p.txt", "-save_model", "/dev/full", "-q",
              cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert _is_old(tmp_path, "p.txt")
    assert sorted(os.listdir(tmp_path)) == ["p.txt"]  # no temporary file left


def test_convert_publishes_nothing_when_meta_cannot_be_written(tmp_path):
    (tmp_path / "in.csv").write_text("u,i,r\n1,2,3\n4,5,1\n")
    _write_old(tmp_path, ["out.libfm"])
    r = fmcli("convert", "-in", "in.csv", "-out", "out.libfm", "--target", "r", "--categorical", "u,i",
              "-meta", "/dev/full", "-q", cwd=tmp_path)
    assert r.returncode == 1
    assert error_lines(r.stderr) == ["fmcli: error: /dev/full: No space left on device"]
    assert _is_old(tmp_path, "out.libfm") and sorted(os.listdir(tmp_path)) == ["in.csv", "out.libfm"]


SIGNAL_RUN = [*MOVIES, "-method", "mcmc", "-dim", "1,1,16", "-iter", "25", "-seed", "3",
              "-out", "p.txt", "-save_model", "m.fm", "-rlog", "r.tsv", "--log-json", "j.jsonl"]


def _check_progress_files(folder):
    """-rlog and --log-json are each the old file or a complete one (a header and whole rows)."""
    if not _is_old(folder, "r.tsv"):
        lines = (folder / "r.tsv").read_text().split("\n")
        assert lines[-1] == "" and all(len(x.split("\t")) == len(lines[0].split("\t")) for x in lines[1:-1])
    if not _is_old(folder, "j.jsonl"):
        text = (folder / "j.jsonl").read_text()
        assert text.endswith("\n") and all("iteration" in json.loads(x) for x in text.splitlines())


def test_sigterm_at_random_moments_leaves_old_or_complete_outputs(tmp_path):
    """SIGTERM at a random moment (seeded) of a run, near its end or while the model is written,
    over several trials:
    -out and -save_model are both the old files or both exactly the new ones (as an undisturbed
    run writes them); no temporary file is left."""
    reference = tmp_path / "reference"
    reference.mkdir()
    t0 = time.perf_counter()
    r = fmcli(*SIGNAL_RUN, "-q", cwd=reference)
    duration = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    new = {name: (reference / name).read_bytes() for name in ("p.txt", "m.fm")}
    rng = random.Random(11)
    seen = set()
    for trial in range(8):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        _write_old(folder, ["p.txt", "m.fm", "r.tsv", "j.jsonl"])
        proc = subprocess.Popen([sys.executable, "-m", "fmcli", *SIGNAL_RUN, "-q"], cwd=folder, env=ENV,
                                stderr=subprocess.PIPE)
        if trial % 2:  # a random moment of the run
            time.sleep(duration * rng.uniform(0.6, 1.1))
        else:  # a random moment of the model's writing: once its temporary file is there
            while proc.poll() is None and not any(n.startswith(".m.fm.") for n in os.listdir(folder)):
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
        # -15: the signal came while Python starts or ends, when fmcli's handler is not installed
        assert proc.returncode in (0, 143, -signal.SIGTERM), err
        state = ["old" if _is_old(folder, n) else "new" if (folder / n).read_bytes() == new[n] else "mixed"
                 for n in ("p.txt", "m.fm")]
        assert state in (["old", "old"], ["new", "new"]), (trial, state, err)
        assert state == (["new", "new"] if proc.returncode == 0 else state)
        _check_progress_files(folder)
        assert sorted(os.listdir(folder)) == ["j.jsonl", "m.fm", "p.txt", "r.tsv"]
        seen.add((proc.returncode, state[0]))
    print("SIGTERM trials (exit status, outputs):", sorted(seen))


def test_concurrent_runs_publish_one_runs_outputs(tmp_path):
    """Two runs into the same -out and -save_model: the result is one run's pair, never a mix."""
    refs = {}
    for seed in (1, 2):
        folder = tmp_path / f"ref{seed}"
        folder.mkdir()
        r = fmcli(*MOVIES, "-method", "sgd", "-iter", "3", "-seed", seed, "-out", "p.txt", "-save_model", "m.fm",
                  "-q", cwd=folder)
        assert r.returncode == 0, r.stderr
        refs[seed] = ((folder / "p.txt").read_bytes(), (folder / "m.fm").read_bytes())
    for trial in range(3):
        folder = tmp_path / f"both{trial}"
        folder.mkdir()
        procs = [subprocess.Popen([sys.executable, "-m", "fmcli", *MOVIES, "-method", "sgd", "-iter", "3",
                                   "-seed", str(seed), "-out", "p.txt", "-save_model", "m.fm", "-q"],
                                  cwd=folder, env=ENV) for seed in (1, 2)]
        assert [p.wait(timeout=300) for p in procs] == [0, 0]
        assert ((folder / "p.txt").read_bytes(), (folder / "m.fm").read_bytes()) in refs.values()


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_runs_are_removed(tmp_path, model):
    host = "%08x" % zlib.crc32(os.uname().nodename.encode())
    stale = f".p.txt.fmcli-{host}-{_dead_pid()}-0a1b2c.tmp"
    live = f".p.txt.fmcli-{host}-{os.getpid()}-0a1b2c.tmp"          # this test's process: alive
    other_host = f".p.txt.fmcli-{'%08x' % (zlib.crc32(host.encode()))}-{_dead_pid()}-0a1b2c.tmp"
    foreign = ".p.txt.Xy12ab.tmp"                                     # not fmcli's naming
    for name in (stale, live, other_host, foreign):
        (tmp_path / name).write_bytes(b"x" * 100)
    r = fmcli("predict", "-model", model, "-test", f"{T}/movies.test.libfm", "-out", "p.txt", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(["p.txt", live, other_host, foreign])


def test_sigkill_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "fmcli", *MOVIES, "-method", "sgd", "-iter", "100000",
                             "-rlog", "r.tsv", "-q"], cwd=tmp_path, env=ENV)
    deadline = time.time() + 120
    while not (tmp_path / "r.tsv").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    # whatever the moment of the kill, plant the temporary such a kill can leave
    (tmp_path / f".r.tsv.fmcli-{'%08x' % zlib.crc32(os.uname().nodename.encode())}-{proc.pid}-00aa11.tmp").write_text("x")
    r = fmcli(*MOVIES, "-method", "sgd", "-iter", "1", "-rlog", "r.tsv", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == ["r.tsv"]


# ---- item 5: outputs that are inputs ----------------------------------------------------------

SAME_FILE_CASES = {
    "train -out = -train": (["train", "-task", "r", "-train", "tr.libfm", "-test", "te.libfm", "-method", "sgd",
                             "-iter", "1", "-out", "./tr.libfm"], "-out", "-train", "tr.libfm"),
    "train -save_model = -test (symlink)": (["train", "-task", "r", "-train", "tr.libfm", "-test", "te.libfm",
                                             "-method", "sgd", "-iter", "1", "-save_model", "link.libfm"],
                                            "-save_model", "-test", "te.libfm"),
    "train -rlog = -train": (["train", "-task", "r", "-train", "tr.libfm", "-method", "sgd", "-iter", "1",
                              "-rlog", "tr.libfm"], "-rlog", "-train", "tr.libfm"),
    "train --log-json = -test (hard link)": (["train", "-task", "r", "-train", "tr.libfm", "-test", "te.libfm",
                                              "-method", "sgd", "-iter", "1", "--log-json", "hard.libfm"],
                                             "--log-json", "-test", "te.libfm"),
    "train -save_model = -load_model": (["train", "-task", "r", "-train", "tr.libfm", "-method", "sgd", "-iter",
                                         "1", "-load_model", "m.fm", "-save_model", "m.fm"],
                                        "-save_model", "-load_model", "m.fm"),
    "train -out = -save_model": (["train", "-task", "r", "-train", "tr.libfm", "-test", "te.libfm", "-method",
                                  "sgd", "-iter", "1", "-out", "new.txt", "-save_model", "sub/../new.txt"],
                                 "-save_model", "-out", None),
    "predict -out = -model": (["predict", "-model", "m.fm", "-test", "te.libfm", "-out", "m.fm"],
                              "-out", "-model", "m.fm"),
    "predict stdout = -test": (["predict", "-model", "m.fm", "-test", "te.libfm", "-out", "-"],
                               "-out", "-test", "te.libfm"),
    "convert -out = -in": (["convert", "-in", "in.csv", "-out", "./in.csv", "--target", "r"], "-out", "-in",
                           "in.csv"),
    "convert -meta = -in": (["convert", "-in", "in.csv", "-out", "o.libfm", "--target", "r", "-meta",
                             "in.csv"], "-meta", "-in", "in.csv"),
    "convert --binary -out = -in": (["convert", "--binary", "-in", "te.libfm", "-out", "hard.libfm"], "-out",
                                    "-in", "te.libfm"),
}


@pytest.mark.parametrize("case", sorted(SAME_FILE_CASES))
def test_output_that_is_an_input_is_refused(tmp_path, model, case):
    args, out_option, in_option, protected = SAME_FILE_CASES[case]
    for name, source in (("tr.libfm", "movies.train.libfm"), ("te.libfm", "movies.test.libfm")):
        with open(f"{T}/{source}", "rb") as f:
            (tmp_path / name).write_bytes(f.read())
    (tmp_path / "m.fm").write_bytes(model.read_bytes())
    (tmp_path / "in.csv").write_text("u,i,r\n1,2,3\n4,5,1\n")
    (tmp_path / "link.libfm").symlink_to("te.libfm")
    os.link(tmp_path / "te.libfm", tmp_path / "hard.libfm")
    (tmp_path / "sub").mkdir()
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    if case == "predict stdout = -test":
        r = shell(f"fmcli {' '.join(args)} >> te.libfm", cwd=tmp_path)
    else:
        r = fmcli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fmcli: error: ") and "same file" in lines[0], lines
    assert f"{out_option} " in lines[0] and f"{in_option} " in lines[0], lines
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert not (tmp_path / "new.txt").exists() and not (tmp_path / "o.libfm").exists()
    assert protected is None or os.path.exists(tmp_path / protected)


def test_symlink_destination_is_followed(tmp_path, model):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "p.txt").write_text("old\n")
    (tmp_path / "p.txt").symlink_to("real/p.txt")
    r = fmcli("predict", "-model", model, "-test", f"{T}/movies.test.libfm", "-out", "p.txt", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.path.islink(tmp_path / "p.txt")
    assert len((tmp_path / "real" / "p.txt").read_text().splitlines()) == 2400
    assert sorted(os.listdir(tmp_path / "real")) == ["p.txt"]


# ---- item 7: closed and full standard streams -------------------------------------------------

def test_closed_and_full_standard_streams(model):
    predict = f"fmcli predict -model '{model}' -test '{T}/movies.test.libfm' -out -"
    normal = shell(f"{predict} 2>/dev/null")
    assert normal.returncode == 0 and len(normal.stdout.splitlines()) == 2400
    closed_err = shell(f"{predict} 2>&-")
    assert (closed_err.returncode, closed_err.stdout) == (0, normal.stdout)
    full_err = shell(f"{predict} 2>/dev/full")
    assert (full_err.returncode, full_err.stdout) == (0, normal.stdout)
    closed_out = shell(f"{predict} >&-")
    assert closed_out.returncode == 1
    assert error_lines(closed_out.stderr) == ["fmcli: error: <stdout>: standard output is closed: "
                                              "cannot write -out -"]
    closed_in = shell(f"fmcli predict -model '{model}' -test - -out - <&-")
    assert closed_in.returncode == 2 and b"internal error" not in closed_in.stderr
    assert len(error_lines(closed_in.stderr)) == 1 and closed_in.stdout == b""


def test_failing_run_with_stderr_closed_keeps_its_exit_status_and_stdout_clean(tmp_path):
    r = shell("fmcli train -task r -train missing.libfm -out - 2>&-", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, b"")
    r = shell("fmcli train -task r -train missing.libfm 2>/dev/full", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, b"")


def test_train_messages_never_reach_stdout_with_stderr_closed(tmp_path):
    r = shell(f"fmcli {' '.join(MOVIES)} -method sgd -iter 2 -out - 2>&-", cwd=tmp_path)
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) == 2400 and b"Iter" not in r.stdout and b"Loading" not in r.stdout


# ---- item 9: -iter 0 --------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["sgd", "mcmc"])
def test_iter_0_writes_rlog_header_and_empty_log_json(tmp_path, method):
    r = fmcli(*MOVIES, "-method", method, "-iter", "0", "-rlog", "r0.tsv", "--log-json", "j0.jsonl", "-q",
              cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r1 = fmcli(*MOVIES, "-method", method, "-iter", "1", "-rlog", "r1.tsv", "-q", cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    header = (tmp_path / "r1.tsv").read_text().split("\n")[0]
    assert (tmp_path / "r0.tsv").read_text() == header + "\n"
    assert (tmp_path / "j0.jsonl").read_bytes() == b""

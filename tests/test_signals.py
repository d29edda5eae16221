"""Stopping a run from outside: exit 130/143 and no output file."""

import os
import signal
import subprocess
import sys
import time

import pytest


def default_stop_signals():
    """In the child: SIGINT and SIGTERM at their defaults. A test run started in the background
    by a shell without job control inherits SIGINT ignored, and fmcli, as any program, keeps an
    ignored SIGINT ignored: that run would never see the signal the test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_cleanly(testdata, tmp_path, sig, code):
    out, model = tmp_path / "out", tmp_path / "m.fm"
    proc = subprocess.Popen([sys.executable, "-m", "fmcli", "train", "-task", "r",
                             "-train", testdata("movies.train.libfm"), "-test", testdata("movies.test.libfm"),
                             "-method", "sgd", "-iter", "100000", "-out", str(out), "-save_model", str(model)],
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)
    deadline = time.time() + 120
    for line in proc.stderr:  # wait until training is under way
        if line.startswith("#Iter=  1") or time.time() > deadline:
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert os.listdir(tmp_path) == []

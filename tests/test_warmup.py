"""First runs: the second process of fmcli.learners.warmup compiles the step kernels a real
`fmcli train` then loads from numba's cache (same types), and nothing starts on a warm cache."""

import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = os.path.join(REPO, "testdata")

# prints the fmcli kernels this process compiles (none loaded from the cache) while it trains
TRAIN_AND_LIST_COMPILES = r"""
import sys
from numba.core import event
compiled = []
class L(event.Listener):
    def on_start(self, ev):
        f = ev.data["dispatcher"].py_func
        if f.__module__.startswith("fmcli"):
            compiled.append(f.__module__ + "." + f.__name__)
    def on_end(self, ev):
        pass
event.register("numba:compile", L())
from fmcli.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print(" ".join(compiled))
"""


def test_tiny_data_are_read_only_rows_like_the_binary_cache_gives():
    from fmcli.learners.warmup import tiny_data

    for task in ("r", "c"):
        d = tiny_data(task)
        assert d.indptr.dtype == np.int64 and d.indices.dtype == np.int32 and d.data.dtype == np.float32
        assert not any(a.flags.writeable for a in (d.indptr, d.indices, d.data, d.y))
        assert d.n_rows == 64 and d.indices.max() < d.n_features
        assert set(np.unique(d.y)) <= ({-1.0, 1.0} if task == "c" else {1.0, 2.0, 3.0, 4.0, 5.0})


def test_no_second_process_for_sgd_warm_starts_or_when_switched_off(monkeypatch):
    from fmcli.learners import warmup
    from fmcli.learners.base import TrainOptions

    monkeypatch.setattr(warmup, "cold", lambda: True)
    assert warmup.start(TrainOptions(method="sgd")).proc is None
    assert warmup.start(TrainOptions(method="mcmc"), warm_start=True).proc is None
    assert warmup.start(TrainOptions(method="mcmc", dim=(1, 1, 32)), relations=True).proc is None
    monkeypatch.setenv("FMCLI_NO_WARMUP", "1")
    assert warmup.start(TrainOptions(method="mcmc")).proc is None
    monkeypatch.delenv("FMCLI_NO_WARMUP")
    monkeypatch.setattr(warmup, "cold", lambda: False)
    assert warmup.start(TrainOptions(method="als")).proc is None
    warmup.Warmup().wait()      # nothing to wait for


@pytest.mark.parametrize("method", ["mcmc"])
def test_the_second_process_compiles_what_the_run_then_loads(tmp_path, method):
    env = dict(os.environ, PYTHONPATH=REPO, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), FMCLI_NO_WARMUP="1")
    spec = '{"task": "r", "method": "%s", "dim": [1, 1, 8]}' % method
    subprocess.run([sys.executable, "-m", "fmcli.warmup_step", spec, str(os.getpid())], env=env, check=True,
                   timeout=300)
    for name in ("movies.train.libfm", "movies.test.libfm"):
        (tmp_path / name).write_bytes(open(os.path.join(T, name), "rb").read())
    out = subprocess.run([sys.executable, "-c", TRAIN_AND_LIST_COMPILES, "train", "-task", "r", "-method", method,
                          "-train", str(tmp_path / "movies.train.libfm"), "-test", str(tmp_path / "movies.test.libfm"),
                          "-meta", os.path.join(T, "movies.meta"), "-iter", "3", "-q"],
                         env=env, check=True, capture_output=True, text=True, timeout=300)
    compiled = out.stdout.split()
    assert any(name.startswith("fmcli.io.") for name in compiled)     # the reader: this process's
    step = ["fmcli.learners.sweep.sweep", "fmcli.learners.mcmc.draw_hyper", "fmcli.learners.mcmc.draw_alpha",
            "fmcli.model.predict_rows", "fmcli.learners.sweep.set_residuals", "fmcli.learners.schedule.colour_features"]
    assert not set(step) & set(compiled), compiled


def test_the_compile_note_comes_once_and_only_for_fmcli_kernels():
    import numba

    from fmcli.config import COMPILE_NOTE, note_compiling

    said = []
    note_compiling(said.append)

    def other(x):
        return x * 2

    numba.njit(other)(1)                 # not a kernel of fmcli's: no note
    assert said == []

    def kernel(x):
        return x + 1

    kernel.__module__ = "fmcli.note_check"
    compiled = numba.njit(kernel)        # not cached: compiles at each new signature
    assert compiled(1) == 2 and compiled(1.5) == 2.5
    assert said == [COMPILE_NOTE]

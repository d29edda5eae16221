"""The first run's second process (fmcli.learners.warmup): it compiles the step's kernels the run
itself calls (the same argument types), and a first run with it writes what one without it
writes."""

import collections
import glob
import os
import shutil
import subprocess
import sys

import pytest

from fmcli.learners.base import TrainOptions
from fmcli.learners.warmup import command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(REPO, "testdata")


def _train(tmp_path, cache, args, **env):
    """`fmcli train` on testdata's movies in a fresh process with numba's cache in `cache`;
    returns the -out bytes."""
    env = dict(_env(cache), **env)
    for name in ("movies.train.libfm", "movies.test.libfm", "movies.meta"):
        shutil.copy(os.path.join(TESTDATA, name), tmp_path / name)
    subprocess.run([sys.executable, "-m", "fmcli", "train", "-train", "movies.train.libfm",
                    "-test", "movies.test.libfm", "-meta", "movies.meta", "-iter", "5", "-out", "p.txt",
                    "--no-cache", "--quiet"] + args, cwd=tmp_path, env=env, check=True, capture_output=True)
    return (tmp_path / "p.txt").read_bytes()


def _env(cache):
    env = {k: v for k, v in os.environ.items() if k != "FMCLI_NO_WARMUP"}
    return dict(env, PYTHONPATH=REPO, NUMBA_CACHE_DIR=str(cache))


def _cold(cache):
    """fmcli.learners.warmup.cold() in a fresh process with numba's cache in `cache`."""
    out = subprocess.run([sys.executable, "-c", "from fmcli.learners.warmup import cold; print(cold())"],
                         env=_env(cache), check=True, capture_output=True, text=True).stdout
    return out.strip() == "True"


def _forms(cache):
    """The compiled forms in numba's cache directory, by kernel: {"sweep.sweep-343": 1, ...}."""
    forms = collections.Counter()
    for path in glob.glob(os.path.join(str(cache), "**", "*.nbc"), recursive=True):
        forms[os.path.basename(path).split(".py")[0]] += 1
    return forms


@pytest.mark.parametrize("task,method,dim", [("r", "mcmc", (1, 1, 8)), ("r", "als", (1, 1, 20))])
def test_the_second_process_compiles_the_sweep_the_run_calls(tmp_path, task, method, dim):
    """The made-up learner's step kernels are the run's: a run after it adds no second compiled
    form of any (it would if an argument's type, layout or flags differed; -dim 1,1,20 sweeps
    factor blocks; testdata's -meta has several groups)."""
    cache = tmp_path / "numba-cache"
    assert _cold(cache)
    subprocess.run(command(TrainOptions(task=task, method=method, dim=dim), groups=2), env=_env(cache), check=True,
                   capture_output=True, timeout=300)
    child = _forms(cache)
    assert any(name.startswith("sweep.sweep-") for name in child) and not _cold(cache)
    if method == "mcmc":
        assert any(name.startswith("mcmc.draw_hyper-") for name in child)
    _train(tmp_path, cache, ["-task", task, "-method", method, "-dim", ",".join(map(str, dim))],
           FMCLI_NO_WARMUP="1")
    after = _forms(cache)
    assert {name: after[name] for name in child} == child


def test_a_first_run_with_the_second_process_writes_what_one_without_it_writes(tmp_path):
    args = ["-task", "r", "-method", "mcmc", "-dim", "1,1,8"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with_it = _train(tmp_path / "a", tmp_path / "cache-a", args)
    without_it = _train(tmp_path / "b", tmp_path / "cache-b", args, FMCLI_NO_WARMUP="1")
    assert with_it == without_it
    assert _forms(tmp_path / "cache-a") == _forms(tmp_path / "cache-b")

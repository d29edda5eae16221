"""First runs: the ALS/MCMC step kernels compile in a second process while this one reads data.

A first `fmcli train -method mcmc` (an empty numba cache) spends most of its time compiling:
the reader's kernels, then the learner's set-up kernels, the train refresh and the step
(the parallel sweep alone takes several seconds). These are independent, and numba's cache is
shared by the processes of one installation, so when the sweep kernel is not in the cache
(cold), `start` runs a second Python process (fmcli.warmup_step) that builds the same learner on a few rows of
made-up data (the same array types: read-only rows, as the memory-mapped binary cache gives)
and runs one step, which compiles those kernels into the cache, while this process reads and
checks the data (compiling the reader's kernels). `Warmup.wait`, before the learner is built,
waits for it: the kernels then load from the cache instead of compiling twice (on a busy
machine the second process gets the core this one leaves).

Nothing depends on the second process: if it fails, is slow (WAIT_SECONDS) or the cache is
not writable, this process compiles what it still needs itself. It ends when its parent does.
Warm runs (the sweep kernel is cached) start nothing.
"""

import json
import os
import subprocess
import sys

WAIT_SECONDS = 120


def cold():
    """True when numba's cache holds no compiled sweep kernel for the current sources."""
    try:
        from fmcli.learners.sweep import sweep

        return not sweep._cache._cache_file._load_index()
    except Exception:       # another numba's internals: no warm-up
        return False


class Warmup:
    """The second process (or none)."""

    def __init__(self, proc=None):
        self.proc = proc

    def wait(self):
        """Wait until the second process has compiled the learner's kernels (at most WAIT_SECONDS)."""
        if self.proc is None:
            return
        try:
            self.proc.wait(WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def start(opts, relations=False, warm_start=False):
    """A Warmup compiling the step kernels of opts' learner (ALS and MCMC; cold cache only)."""
    from fmcli.learners.coord import FACTOR_BLOCK

    # with relations and more than FACTOR_BLOCK factors the sweep's arrays have other layouts
    # (no factor blocks) than on the made-up rows, which have no relation
    if (opts.method not in ("als", "mcmc") or warm_start or (relations and opts.dim[2] > FACTOR_BLOCK)
            or os.environ.get("FMCLI_NO_WARMUP") or not cold()):
        return Warmup()
    spec = {"task": opts.task, "method": opts.method, "dim": list(opts.dim)}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "fmcli.warmup_step", json.dumps(spec), str(os.getpid())],
                                env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
    except OSError:
        return Warmup()
    return Warmup(proc)


def tiny_data(task, n_rows=64, users=6, items=5, seed=0):
    """A few rows like a recommender's (user, item, a numeric feature), read-only arrays."""
    import numpy as np

    from fmcli.data import SparseData

    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n_rows)
    i = users + rng.integers(0, items, n_rows)
    indptr = np.arange(0, 3 * n_rows + 1, 3, dtype=np.int64)
    indices = np.stack([u, i, np.full(n_rows, users + items)], axis=1).ravel().astype(np.int32)
    data = np.stack([np.ones(n_rows), np.ones(n_rows), rng.random(n_rows)], axis=1).ravel().astype(np.float32)
    y = (rng.integers(1, 6, n_rows) if task == "r" else rng.choice([-1.0, 1.0], n_rows)).astype(np.float32)
    arrays = [indptr, indices, data, y]
    for a in arrays:
        a.flags.writeable = False
    return SparseData(*arrays, users + items + 1)

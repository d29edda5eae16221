"""First runs: the step's kernels compile in a second process while this one reads the data.

The kernels of an ALS or MCMC step (the coordinate sweep, fmcli.learners.sweep.sweep, above
all; MCMC's hyperparameter draws) are most of the compiling of a first `fmcli train -method
als|mcmc`, and they depend on nothing this process does before its first step, only on the
types of their arguments. When numba's cache has no sweep for the current sources (cold),
`start` runs a second Python process that builds the run's learner (its task, method and -dim)
on a few made-up rows with every fmcli kernel run as plain Python (tiny inputs: nothing
compiles) and runs one step, which compiles the step's kernels into the cache the processes of
one installation share. Meanwhile this process compiles the reader's, the set-up's and the
train refresh's kernels, and those of the train metrics (fmcli.train computes them once on the
starting state while `Warmup.running`); `Warmup.wait`, before the first step, waits for the
second process, and the step's kernels then load from the cache. It gains on a machine with a free core; on a
full one the two processes share the cores and the run takes about as long as compiling
everything here.

Nothing depends on the second process: if it fails, is slow (WAIT_SECONDS), or the run's step
has other argument types (data with duplicated entries, relations with more than FACTOR_BLOCK
factors), this process compiles what it needs itself. The second process ends when its parent
does. Warm runs start nothing; FMCLI_NO_WARMUP=1 starts nothing either (benchmarks' A/B runs).
"""

import json
import os
import subprocess
import sys
import threading
import time

WAIT_SECONDS = 60


def cold():
    """True when numba's cache holds no compiled sweep kernel for the current sources."""
    try:
        from fmcli.learners.sweep import sweep

        return not sweep._cache._cache_file._load_index()
    except Exception:       # another numba's internals: no warm-up
        return False


class Warmup:
    """The second process (or none); as a context, it is stopped on leaving."""

    def __init__(self, proc=None):
        self.proc = proc

    @property
    def running(self):
        """Whether a second process is compiling (so this one has time before its first step)."""
        return self.proc is not None and self.proc.poll() is None

    def wait(self):
        """Wait until the second process has compiled the step's kernels (at most WAIT_SECONDS)."""
        if self.proc is not None:
            try:
                self.proc.wait(WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        self.stop()

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(plan):
    """A Warmup compiling the step's kernels of the run's learner (plan: fmcli.plan's; ALS and
    MCMC with a cold cache; else none)."""
    opts, job = plan.opts, plan.job
    if opts.method not in ("als", "mcmc") or plan.loaded is not None or os.environ.get("FMCLI_NO_WARMUP"):
        return Warmup()
    from fmcli.learners.coord import FACTOR_BLOCK

    # with relations and more than FACTOR_BLOCK factors the sweep's V is the whole factor
    # matrix, not a block's columns as on the made-up rows, which have no relation
    if (job.relations and opts.dim[2] > FACTOR_BLOCK) or not cold():
        return Warmup()
    try:
        proc = subprocess.Popen(command(opts, 2 if job.meta else 1), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
    except OSError:
        return Warmup()
    return Warmup(proc)


def command(opts, groups=1):
    """The second process's command line: this fmcli (first on its path, whatever the working
    directory holds), opts' task, method and -dim, the number of feature groups (with factor
    blocks, the groups' factor priors are a block's columns, whose layout depends on whether
    there are several: one without -meta, several with it), and this process's id."""
    spec = json.dumps({"task": opts.task, "method": opts.method, "dim": list(opts.dim), "groups": groups})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import sys; sys.path.insert(0, {root!r}); from fmcli.learners.warmup import main; "
            "from fmcli.train import build_learner, learner_class; main(build_learner, learner_class)")
    return [sys.executable, "-c", code, spec, str(os.getpid())]


def main(build_learner, learner_class):
    """The second process (command): one step of the made-up learner, then exit
    (fmcli.train's functions are given: it imports this module)."""
    spec, parent = json.loads(sys.argv[1]), int(sys.argv[2])

    def watch():        # end with the parent (a finished, failed or killed run)
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    import numpy as np

    from fmcli.learners.base import TrainOptions

    opts = TrainOptions(task=spec["task"], method=spec["method"], dim=tuple(spec["dim"]), iterations=1,
                        regular=(0.0, 1.0, 1.0), save_samples=False)
    learner_class(opts.method, len(opts.dim) > 3)      # its modules, imported before they are plain Python
    train = tiny_data(opts.task)
    groups = np.arange(train.n_features) % spec["groups"] if spec["groups"] > 1 else None
    with plain_python():
        learner = build_learner(opts, train, {}, groups)
    learner.step(0)
    os._exit(0)


class plain_python:
    """A context in which every fmcli kernel of the imported modules is its Python function
    (numba's py_func; a module's calls of its kernels go through its globals)."""

    def __enter__(self):
        from numba.core.registry import CPUDispatcher

        self.kernels = [(module, name, value) for module in list(sys.modules.values())
                        if getattr(module, "__name__", "").startswith("fmcli")
                        for name, value in list(vars(module).items()) if isinstance(value, CPUDispatcher)]
        for module, name, value in self.kernels:
            setattr(module, name, value.py_func)

    def __exit__(self, *exc):
        for module, name, value in self.kernels:
            setattr(module, name, value)


def tiny_data(task, n_rows=64, users=6, items=5):
    """A few rows like a recommender's (user, item, a numeric feature), with targets of `task`."""
    import numpy as np

    from fmcli.data import SparseData

    rng = np.random.default_rng(0)
    u = rng.integers(0, users, n_rows)
    i = users + rng.integers(0, items, n_rows)
    indptr = np.arange(0, 3 * n_rows + 1, 3, dtype=np.int64)
    indices = np.stack([u, i, np.full(n_rows, users + items)], axis=1).ravel().astype(np.int32)
    data = np.stack([np.ones(n_rows), np.ones(n_rows), rng.random(n_rows)], axis=1).ravel().astype(np.float32)
    y = (rng.choice([-1.0, 1.0], n_rows) if task == "c" else rng.integers(1, 6, n_rows)).astype(np.float32)
    return SparseData(indptr, indices, data, y, users + items + 1)

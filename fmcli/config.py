"""Numeric types and the one decorator policy for compiled kernels.

Kernels are compiled lazily (first call) and cached on disk, so `fmcli --help`
never pays for numba and a second run does not recompile. fastmath leaves out
nnan/ninf so that comparisons with inf and NaN inside kernels keep working; numba's
math.isfinite does not (it tests x − x, which reassoc + nsz fold to 0): kernels use
fmcli.learners.sweep.finite. A kernel that must give the same bits compiled cold (in this
process) and warm (from the cache) takes fastmath=EXACT_FLOAT.
"""

import contextlib

import numpy as np

VALUE_DTYPE = np.float32   # feature values and targets, as libFM reads them
INDEX_DTYPE = np.int32     # feature ids (column indices)
INDPTR_DTYPE = np.int64    # row pointers: nnz may exceed 2**31
PARAM_DTYPE = np.float64   # model parameters w0, w, V

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# for kernels whose bits must not depend on whether they were compiled in this process or
# loaded from numba's cache (fmcli.learners.relation_sweep: with FASTMATH they differ)
EXACT_FLOAT = False
MAX_FEATURE_ID = 2**31 - 2   # ids are stored as int32


def _import_numba():
    """import numba, answering numba's BLAS probe with 'none': numba.np.arraymath, which numba
    loads before its first compile or cache load, imports scipy.linalg (about 0.1 s of every
    run's start) only to decide whether the inner product of np.convolve/np.correlate may call
    BLAS. fmcli's kernels use neither, and np.dot and np.linalg still import scipy themselves
    when a kernel uses them."""
    import sys

    if "numba.np.arraymath" not in sys.modules and "scipy.linalg" not in sys.modules:
        sys.modules["scipy.linalg"] = None      # `import scipy.linalg...` raises ImportError
        try:
            import numba.np.arraymath  # noqa: F401
        finally:
            if sys.modules.get("scipy.linalg", 0) is None:
                del sys.modules["scipy.linalg"]
    import numba

    return numba


def njit(*args, **kwargs):
    """numba.njit with fmcli's policy: cache=True, fastmath without nnan/ninf."""
    numba = _import_numba()

    kwargs.setdefault("cache", True)
    kwargs.setdefault("fastmath", FASTMATH)
    kwargs.setdefault("nogil", True)
    return numba.njit(*args, **kwargs)


@contextlib.contextmanager
def threads(n):
    """Run compiled kernels on n threads (0: all cores); numba's setting is restored after."""
    if not n:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(before)


PARALLEL_MIN_NNZ = 1 << 20   # smaller train sets: each iteration on one thread or all (ThreadChoice)


class ThreadChoice:
    """Per iteration of a small run: one thread or all (`n`), whichever the clock says is faster now.

    On a small data set a step's parallel regions last well under a millisecond, and whether a
    second thread helps depends on the cores actually free: on a quiet machine it does, next to
    another CPU-bound process a thread pool that waits for a descheduled thread makes the step
    slower than one thread. The kernels give the same bits for any thread count, so the choice
    may follow the clock: after a first step (kernels loaded, thread pool started) the steps
    alternate between 1 and n for PROBES steps, then run on the one whose fastest of its last
    WINDOW steps is faster, trying the other one again every PROBE_EVERY steps (a busy core can
    come or go)."""

    PROBES = 4
    WINDOW = 3
    PROBE_EVERY = 16

    def __init__(self, n):
        self.n = max(1, int(n))
        self.times = {1: [], self.n: []}
        self.steps = 0

    @classmethod
    def for_run(cls, nnz):
        """The choice of a run whose train set (with its relations) has nnz entries: None (every
        iteration on numba's thread count) from PARALLEL_MIN_NNZ entries on or with one thread."""
        import numba

        n = numba.get_num_threads()
        return cls(n) if nnz < PARALLEL_MIN_NNZ and n > 1 else None

    @contextlib.contextmanager
    def step(self):
        """A with block run on the next thread count (numba's setting restored after); its wall
        time is recorded when it completes."""
        import time

        import numba

        n = self.next()
        before = numba.get_num_threads()
        numba.set_num_threads(n)
        start = time.perf_counter()
        try:
            yield n
        finally:
            numba.set_num_threads(before)
        self.record(n, time.perf_counter() - start)

    def best(self):
        """The option whose fastest recent step was faster (n until both were measured)."""
        t1, tn = (min(self.times[c], default=float("inf")) for c in (1, self.n))
        return 1 if t1 < tn else self.n

    def next(self):
        """The thread count of the next step."""
        s = self.steps
        if self.n == 1 or s == 0:
            return self.n
        if s <= self.PROBES:
            return 1 if s % 2 else self.n
        best = self.best()
        if s % self.PROBE_EVERY == 0:
            return self.n if best == 1 else 1
        return best

    def record(self, n, seconds):
        """The wall time of a step on n threads (the first step is not counted)."""
        if self.steps:
            t = self.times[n]
            t.append(seconds)
            del t[:-self.WINDOW]
        self.steps += 1


COMPILE_NOTE = ("Compiling the numba kernels this run needs (first run only, about 10 s; later runs "
                "load them from numba's cache)")


def note_compiling(say):
    """say(COMPILE_NOTE) once, when a kernel of fmcli's starts to compile in this process:
    numba compiles only on a cache miss (the first run, or after the kernel's source changed),
    so warm runs say nothing."""
    from numba.core import event

    class _Note(event.Listener):
        done = False

        def on_start(self, ev):
            func = getattr(ev.data.get("dispatcher"), "py_func", None)
            if not self.done and getattr(func, "__module__", "").startswith("fmcli"):
                self.done = True
                say(COMPILE_NOTE)

        def on_end(self, ev):
            pass

    event.register("numba:compile", _Note())

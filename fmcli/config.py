"""Numeric types and the one decorator policy for compiled kernels.

Kernels are compiled lazily (first call) and cached on disk, so `fmcli --help`
never pays for numba and a second run does not recompile. fastmath leaves out
nnan/ninf so that comparisons with inf and NaN inside kernels keep working; numba's
math.isfinite does not (it tests x − x, which reassoc + nsz fold to 0): kernels use
fmcli.learners.sweep.finite. A kernel that must give the same bits compiled cold (in this
process) and warm (from the cache) takes fastmath=EXACT_FLOAT.
"""

import contextlib
import os

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
MAX_ORDER = 6                # largest interaction order (-dim k0,k1,k2,...,k6; fmcli.anova)


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
_worker_share = 0             # share_cores: this process's share of the cores (0: not a worker)


def share_cores(share):
    """Make this process one of several worker processes of a run (fmcli.executors) that each
    own `share` of the cores: compiled kernels run on `share` threads unless told otherwise,
    with numba's ceiling (NUMBA_NUM_THREADS, set before numba is imported) left at all cores
    for ThreadChoice.for_run."""
    global _worker_share
    numba = _import_numba()
    numba.set_num_threads(max(1, min(share, numba.config.NUMBA_NUM_THREADS)))
    _worker_share = share


def busy_cores():
    """How many cores other processes keep busy right now: the runnable tasks of /proc/loadavg
    less this process's running threads (None where there is no /proc)."""
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as fh:
                own += fh.read().rsplit(")", 1)[1].split()[0] == "R"
        return max(0, running - own)
    except (OSError, ValueError, IndexError):
        return None


class ThreadChoice:
    """Per iteration of a small run: one thread or all (`n`), whichever the clock says is faster now.

    On a small data set an iteration's parallel regions last well under a millisecond, and
    whether a second thread helps depends on the cores actually free: on a quiet machine it
    does; next to other CPU-bound processes a thread pool that waits for a descheduled thread
    makes the iteration slower than one thread. The kernels give the same bits for any thread
    count, so the choice may follow the clock: after a first step (kernels loaded, thread pool
    started) the steps alternate between 1 and n for PROBES steps, then run on the one whose
    fastest of its last WINDOW steps is faster, trying the other one again after PROBE_EVERY
    steps, then after twice as many each time the choice stands (up to MAX_PROBE_EVERY; a
    change of choice starts over at PROBE_EVERY). A step on n threads is tried only while
    fewer than n of the machine's cores are busy with other processes (busy_cores): when the
    other processes fill the cores such a step costs several serial ones."""

    PROBES = 4
    WINDOW = 3
    PROBE_EVERY = 16
    MAX_PROBE_EVERY = 128

    def __init__(self, n, busy=busy_cores, cores=None):
        self.n = max(1, int(n))
        self.times = {1: [], self.n: []}
        self.steps = 0
        self.every = self.PROBE_EVERY
        self.next_probe = self.PROBES + 1 + self.PROBE_EVERY
        self.busy = busy
        self.cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())

    @classmethod
    def for_run(cls, nnz, threads=0):
        """The choice of a run whose train set (with its relations) has nnz entries and whose
        --threads is `threads` (0: not given): None (every iteration on numba's thread count)
        from PARALLEL_MIN_NNZ entries on or with one thread. In a worker process that shares
        the cores with other workers (share_cores) a run without --threads chooses at any size,
        between one thread and all cores: a task still running when the others are done takes
        the cores they leave free."""
        import numba

        if _worker_share and not threads:
            n = numba.config.NUMBA_NUM_THREADS
            return cls(n) if n > 1 else None
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

    def _free(self):
        """n threads may be tried: fewer than n cores are busy with other processes (or unknown)."""
        busy = self.busy()
        return busy is None or busy + self.n <= max(self.cores, self.n)

    def next(self):
        """The thread count of the next step."""
        s = self.steps
        if self.n == 1:
            return 1
        if s <= self.PROBES:
            want = self.n if s % 2 == 0 else 1
            return want if want == 1 or self._free() else 1
        best = self.best()
        if s >= self.next_probe:
            self.next_probe = s + self.every
            self.every = min(2 * self.every, self.MAX_PROBE_EVERY)
            other = self.n if best == 1 else 1
            if other == 1 or self._free():
                return other
        return best

    def record(self, n, seconds):
        """The wall time of a step on n threads (the first step is not counted)."""
        if self.steps:
            before = self.best()
            t = self.times[n]
            t.append(seconds)
            del t[:-self.WINDOW]
            if self.steps > self.PROBES and self.best() != before:     # a new choice: probe soon again
                self.every = self.PROBE_EVERY
                self.next_probe = self.steps + 1 + self.every
        self.steps += 1


COMPILE_NOTE = ("Compiling the numba kernels this run needs (first run only, several seconds; later runs "
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

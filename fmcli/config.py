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
MAX_ORDER = 6                # largest interaction order (-dim k0,k1,k2,...,k6; fmcli.anova)


def njit(*args, **kwargs):
    """numba.njit with fmcli's policy: cache=True, fastmath without nnan/ninf."""
    import numba

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

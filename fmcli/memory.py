"""Memory hints for memory-mapped arrays: dropping the resident pages of data that has been
copied and will not be read again. Imports nothing of fmcli, so every module may use it."""

import mmap

import numpy as np


def _mapping(a):
    """The mmap object under a memory-mapped array (through views), or None for heap memory."""
    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "_mmap", None) if isinstance(base, np.memmap) else getattr(base, "base", None)
    return base


def release_pages(a, lo=0, hi=None):
    """Drop the resident pages of elements lo..hi (of the flat array) of a memory-mapped
    (read-only, file-backed) array: a learner that has copied them would otherwise keep them
    in its peak RSS although it never reads them again (a later read faults them back in, so
    this is only a hint). Heap arrays are left alone."""
    m = _mapping(a)
    if m is None or not hasattr(m, "madvise") or not hasattr(mmap, "MADV_DONTNEED") or a.size == 0 \
            or not a.flags.c_contiguous:
        return
    hi = a.size if hi is None else hi       # element offsets in the (flat) array
    base = np.frombuffer(m, np.uint8).ctypes.data
    start = a.ctypes.data + lo * a.itemsize - base
    end = a.ctypes.data + hi * a.itemsize - base
    start = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE       # whole pages inside the range only
    if end < len(m):        # (the mapping's last page may be released whole)
        end = end // mmap.PAGESIZE * mmap.PAGESIZE
    if end > start:
        try:
            m.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass

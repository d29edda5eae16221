"""Reading `-meta` group files: the group id of every feature.

Format (as libFM's): whitespace-separated non-negative integers, usually one per
line; the j-th number is the group of feature j. The number of groups G is the
largest id + 1 (ids need not be contiguous; empty groups are allowed, up to MAX_GROUP:
every group costs the learners memory, G x k numbers for MCMC's hyperparameters).

Unlike libFM (which reads exactly n numbers and silently repeats the last value
of a short file), the count must match the number of features: a short or long
file is an InputError naming the line.
"""

import numpy as np

from fmcli.errors import InputError
from fmcli.io.sources import read_values

MAX_GROUP = 2**20 - 1



def read_meta(path, n_features):
    """int32 array of length n_features: feature -> group id."""
    def parse(text, shown, line_no):
        # int() accepts '+5', '_' separators and unicode digits: accept only plain digits
        if text is None or not text.isdigit():
            raise InputError(path, line_no, f"group id {shown!r} is not a non-negative integer")
        g = int(text)
        if g > MAX_GROUP:
            raise InputError(path, line_no, f"group id {g} is too large (at most {MAX_GROUP}: groups are "
                                            "numbered from 0, a few per kind of feature)")
        return g

    return np.asarray(read_values(path, "meta", "group id", "feature", n_features, parse), dtype=np.int32)


def n_groups(groups):
    """G = largest group id + 1 (1 for no groups)."""
    if groups is None or len(groups) == 0:
        return 1
    return int(groups.max()) + 1

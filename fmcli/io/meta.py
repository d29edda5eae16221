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

MAX_GROUP = 2**20 - 1



def read_meta(path, n_features):
    """int32 array of length n_features: feature -> group id."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(path, None, f"cannot read meta file: {exc.strerror or exc}") from None
    groups = []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        for tok in line.split():
            try:
                text = tok.decode("ascii")
                # int() accepts '+5', '_' separators and unicode digits: accept only plain digits
                if not text.isdigit():
                    raise ValueError
                g = int(text)
            except (UnicodeDecodeError, ValueError):
                shown = tok.decode("utf-8", "replace")
                raise InputError(path, line_no,
                                 f"group id {shown!r} is not a non-negative integer") from None
            if g > MAX_GROUP:
                raise InputError(path, line_no, f"group id {g} is too large (at most {MAX_GROUP}: groups are "
                                                "numbered from 0, a few per kind of feature)")
            groups.append(g)
            if len(groups) > n_features:
                raise InputError(path, line_no,
                                 f"more group ids than features: expected {n_features}")
    if len(groups) < n_features:
        n_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
        raise InputError(path, n_lines if n_lines else None,
                         f"{len(groups)} group ids for {n_features} features: "
                         f"the meta file needs one group id per feature")
    return np.asarray(groups, dtype=np.int32)


def n_groups(groups):
    """G = largest group id + 1 (1 for no groups)."""
    if groups is None or len(groups) == 0:
        return 1
    return int(groups.max()) + 1

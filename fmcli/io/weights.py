"""Reading `-weights` files: one non-negative finite number per train row.

Format: whitespace-separated numbers, usually one per line; the i-th number is the weight of
the i-th train row (row i's loss is scaled by it; ALS and MCMC: its noise precision). A weight
of 0 is the same as leaving the row out; an integer weight c the same as c copies of the row
(ALS, MCMC). The count must match the train rows; a negative, non-finite or non-numeric
weight is an InputError naming the line.
"""

import math

from fmcli.errors import InputError
from fmcli.io.sources import read_values


class BadWeight(ValueError):
    """A weight that is not a non-negative finite number (the message says why)."""


def parse_weight(text, shown=None):
    """The float of one weight's text; raises BadWeight. `shown`: the text as quoted in the
    message (default: `text`)."""
    shown = text if shown is None else shown
    try:
        if text is None or "_" in text:     # float() takes '1_000'
            raise ValueError
        v = float(text)
    except ValueError:
        raise BadWeight(f"weight {shown!r} is not a number") from None
    if not math.isfinite(v):
        raise BadWeight(f"weight {text} is not finite")
    if v < 0:
        raise BadWeight(f"weight {text} is negative (weights are >= 0)")
    return v


def read_weights(path, n_rows):
    """float64 array of length n_rows: train row -> weight."""
    import numpy as np     # here: fmcli convert checks weights with parse_weight and never loads numpy

    def parse(text, shown, line_no):
        try:
            return parse_weight(text, shown)
        except BadWeight as why:
            raise InputError(path, line_no, str(why)) from None

    return np.asarray(read_values(path, "weights", "weight", "train row", n_rows, parse), np.float64)

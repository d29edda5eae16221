"""Reading `-weights` files: one non-negative finite number per train row.

Format: whitespace-separated numbers, usually one per line; the i-th number is the weight of
the i-th train row (row i's loss is scaled by it; ALS and MCMC: its noise precision). A weight
of 0 is the same as leaving the row out; an integer weight c the same as c copies of the row
(ALS, MCMC). The count must match the train rows; a negative, non-finite or non-numeric
weight is an InputError naming the line.
"""

import math

import numpy as np

from fmcli.errors import InputError
from fmcli.io.sources import read_values


def read_weights(path, n_rows):
    """float64 array of length n_rows: train row -> weight."""
    def parse(text, shown, line_no):
        try:
            if text is None or "_" in text:     # float() takes '1_000'
                raise ValueError
            v = float(text)
        except ValueError:
            raise InputError(path, line_no, f"weight {shown!r} is not a number") from None
        if not math.isfinite(v):
            raise InputError(path, line_no, f"weight {text} is not finite")
        if v < 0:
            raise InputError(path, line_no, f"weight {text} is negative (weights are >= 0)")
        return v

    return np.asarray(read_values(path, "weights", "weight", "train row", n_rows, parse), np.float64)

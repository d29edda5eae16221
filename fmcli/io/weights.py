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


def read_weights(path, n_rows):
    """float64 array of length n_rows: train row -> weight."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(path, None, f"cannot read weights file: {exc.strerror or exc}") from None
    out = []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        for tok in line.split():
            try:
                text = tok.decode("ascii")
                v = float(text)
                if "_" in text:       # float() takes '1_000'
                    raise ValueError
            except (UnicodeDecodeError, ValueError):
                shown = tok.decode("utf-8", "replace")
                raise InputError(path, line_no, f"weight {shown!r} is not a number") from None
            if not math.isfinite(v):
                raise InputError(path, line_no, f"weight {text} is not finite")
            if v < 0:
                raise InputError(path, line_no, f"weight {text} is negative (weights are >= 0)")
            out.append(v)
            if len(out) > n_rows:
                raise InputError(path, line_no, f"more weights than train rows: expected {n_rows}")
    if len(out) < n_rows:
        n_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
        raise InputError(path, n_lines if n_lines else None,
                         f"{len(out)} weights for {n_rows} train rows: the weights file needs one "
                         f"weight per train row")
    return np.asarray(out, np.float64)

"""Writing predictions: one value per row, in input order, '%.6g' as libFM writes them."""

import numpy as np

from fmcli.io.atomic import atomic_output


COMPILED_MIN = 65536   # values below which Python formats (a small run need not compile format_g6)


def format_predictions(pred):
    """'%.6g' of each value, a line each."""
    values = np.ascontiguousarray(pred, np.float64)
    if len(values) >= COMPILED_MIN:
        from fmcli.io.format_g import MAX_BYTES, format_g6

        out = np.empty(len(values) * MAX_BYTES, np.uint8)
        n = format_g6(values, out)
        if n >= 0:
            return out[:n].tobytes().decode("ascii")
    if len(values) == 0:
        return ""
    return "\n".join(["%.6g" % v for v in values.tolist()]) + "\n"


def write_predictions(path, pred):
    """Write all predictions to `path` atomically ("-" = standard output)."""
    if not np.isfinite(pred).all():
        raise ValueError("refusing to write non-finite predictions")
    with atomic_output(path) as f:
        f.write(format_predictions(pred))

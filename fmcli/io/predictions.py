"""Writing predictions: one value per row, in input order, '%.6g' as libFM writes them."""

import numpy as np

from fmcli.io.atomic import atomic_output


def format_predictions(pred):
    if len(pred) == 0:
        return ""
    return "\n".join(["%.6g" % v for v in np.asarray(pred, np.float64).tolist()]) + "\n"


def write_predictions(path, pred):
    """Write all predictions to `path` atomically ("-" = standard output)."""
    if not np.isfinite(pred).all():
        raise ValueError("refusing to write non-finite predictions")
    with atomic_output(path) as f:
        f.write(format_predictions(pred))

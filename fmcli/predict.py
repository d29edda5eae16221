"""`fmcli predict`: score rows with a saved model, streaming in chunks.

Memory stays flat whatever the input size: rows are parsed, scored and
written one block at a time. A file output is written to a temporary file and
renamed at the end; standard output receives each block as it is scored.
"""

import numpy as np

from fmcli import metrics
from fmcli.console import Console
from fmcli.io.atomic import atomic_output, check_writable
from fmcli.io.predictions import format_predictions


def run_predict(model_path, test_path, out_path="-", task=None, console=None, chunk_bytes=32 << 20):
    """Write one prediction per row of `test_path`; returns the number of rows scored."""
    from fmcli.errors import TrainingError
    from fmcli.io.modelfile import load_model

    console = console or Console()
    check_writable(out_path, "-out")
    model = load_model(model_path, task=task)
    classes = model.task == "c"
    n_rows, labeled, sums = 0, True, np.zeros(2)
    with atomic_output(out_path) as out:
        for chunk in _chunks(test_path, chunk_bytes):
            pred = model.predict(*chunk.csr())
            if not np.isfinite(pred).all():
                raise TrainingError(f"{model_path}: the model gives NaN or inf predictions")
            out.write(format_predictions(pred))
            n_rows += chunk.n_rows
            labeled = labeled and bool(np.isfinite(chunk.y).all())
            if labeled:  # running sums keep memory flat; AUC needs all rows, so it is left out here
                y = np.where(chunk.y > 0, 1.0, -1.0) if classes else chunk.y
                sums += _metric_sums(model.task, pred, y)
    what = "values clipped to the training target range" if model.task == "r" else "probabilities of class +1"
    where = "stdout" if out_path == "-" else out_path
    console.info(f"Wrote {n_rows} predictions ({what}) to {where}")
    if labeled and n_rows:
        a, b = sums / n_rows
        m = {"rmse": np.sqrt(a), "mae": b} if model.task == "r" else {"accuracy": a, "logloss": b}
        console.info("Test\t" + "\t".join(f"{k}={v:.6g}" for k, v in m.items()))
    return n_rows


def _chunks(path, chunk_bytes):
    """Blocks of rows: parsed text, or slices of a memory-mapped binary data file."""
    from fmcli.data import SparseData
    from fmcli.io.cache import is_binary, read_binary
    from fmcli.io.libsvm import iter_libfm_chunks

    if path == "-" or not is_binary(path):
        yield from iter_libfm_chunks(path, chunk_bytes=chunk_bytes, targets="optional")
        return
    d = read_binary(path, targets="optional")
    rows = max(1, chunk_bytes // 64)
    for a in range(0, d.n_rows, rows):
        b = min(a + rows, d.n_rows)
        p, q = d.indptr[a], d.indptr[b]
        yield SparseData(np.asarray(d.indptr[a:b + 1]) - p, d.indices[p:q], d.data[p:q], d.y[a:b],
                         d.n_features, d.source)


def _metric_sums(task, pred, y):
    """Per-chunk sums whose means are (MSE, MAE) or (accuracy, log-loss)."""
    n = len(y)
    if task == "r":
        return np.array([metrics.rmse(pred, y) ** 2 * n, metrics.mae(pred, y) * n])
    return np.array([metrics.accuracy(pred, y) * n, metrics.log_loss(pred, y) * n])

"""Scoring rows with a loaded model, chunk by chunk: what `fmcli predict` and its shards
(fmcli.shards) share."""

import numpy as np

from fmcli import metrics


def check_finite(pred, model_path):
    from fmcli.errors import TrainingError

    if not np.isfinite(pred).all():
        raise TrainingError(f"{model_path}: the model gives NaN or inf predictions")


def chunks(path, chunk_bytes, span=None, rows=None):
    """Chunks of rows: parsed text, or slices of a memory-mapped binary data file; span: a byte
    range of a text file (fmcli.shards), rows: a row range of a binary one."""
    from fmcli.data import SparseData
    from fmcli.io.cache import is_binary
    from fmcli.io.load import read_binary
    from fmcli.io.libsvm import iter_libfm_chunks

    if path == "-" or not is_binary(path):
        yield from iter_libfm_chunks(path, chunk_bytes=chunk_bytes, targets="optional", span=span)
        return
    d = read_binary(path, targets="optional")
    step = max(1, chunk_bytes // 64)
    first, last = rows or (0, d.n_rows)
    for a in range(first, last, step):
        b = min(a + step, last)
        p, q = d.indptr[a], d.indptr[b]
        yield SparseData(np.asarray(d.indptr[a:b + 1]) - p, d.indices[p:q], d.data[p:q], d.y[a:b],
                         d.n_features, d.source)


def model_predictions(model, indptr, indices, data, relations=()):
    """A model's predictions of CSR rows: a -task o model's OrdinalPrediction (fmcli.ordinal:
    class probabilities, expected values), any other model's values."""
    if model.task != "o":
        return model.predict(indptr, indices, data, relations=relations)
    from fmcli.ordinal import model_prediction

    return model_prediction(model, indptr, indices, data, relations=relations)


def score_chunk(model, chunk, relations=(), out_class=False, proba=False):
    """(the values -out writes, the --out-proba text or None) for one chunk: a -task o model's
    expected values (or most probable classes) and class probabilities, any other model's
    predictions."""
    pred = model_predictions(model, *chunk.csr(), relations=relations)
    if model.task != "o":
        return pred, None
    from fmcli.ordinal import format_probabilities, output_values

    return output_values(pred, out_class), format_probabilities(pred.proba) if proba else None


class RunningMetrics:
    """Metric sums over chunks of scored rows, while every row so far has a target (memory stays
    flat; AUC needs all rows, so it is left out). Classification targets > 0 count as +1; the
    values of a -task o model are scored as regression (RMSE, MAE)."""

    def __init__(self, task):
        self.task, self.labeled, self.sums = "r" if task == "o" else task, True, np.zeros(2)

    def add(self, pred, y):
        self.labeled = self.labeled and bool(np.isfinite(y).all())
        if self.labeled:
            self.sums += metric_sums(self.task, pred, np.where(y > 0, 1.0, -1.0) if self.task == "c" else y)


def metric_sums(task, pred, y):
    """Per-chunk sums whose means are (MSE, MAE) or (accuracy, log-loss)."""
    n = len(y)
    if task == "r":
        return np.array(metrics.regression_sums(pred, y))
    return np.array([metrics.accuracy(pred, y) * n, metrics.log_loss(pred, y) * n])

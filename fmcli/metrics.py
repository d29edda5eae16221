"""Evaluation metrics. Predictions are already link-applied (clipped values or probabilities).

Classification targets are in {-1, +1} (the reader maps 0 to -1).
log-loss uses the natural log, with probabilities clipped to [1e-15, 1 - 1e-15];
libFM's `Test(ll)` is a base-10 variant clipped to [0.01, 0.99] (see `libfm_ll`).
"""

import numpy as np


CHUNK = 1 << 16   # rows per numpy step: temporaries stay small whatever the data size


def _mean(term, pred, y):
    """Mean of term(pred, y) over all rows, computed chunk by chunk (a 10M-row train set would
    otherwise allocate several 80 MB temporaries per metric). pred may be any object that
    gives arrays for slices (a learner's lazily computed predictions)."""
    n = len(y)
    if n == 0:
        return float("nan")
    total = 0.0
    for a in range(0, n, CHUNK):
        total += float(np.sum(term(np.asarray(pred[a:a + CHUNK], np.float64), y[a:a + CHUNK])))
    return total / n


def rmse(pred, y):
    return float(np.sqrt(_mean(lambda p, t: (p - t) ** 2, pred, y)))


def mae(pred, y):
    return _mean(lambda p, t: np.abs(p - t), pred, y)


def accuracy(prob, y):
    return _mean(lambda p, t: (p >= 0.5) == (t > 0), prob, y)


def log_loss(prob, y):
    def term(p, t):
        p = np.clip(p, 1e-15, 1 - 1e-15)
        return -np.where(t > 0, np.log(p), np.log1p(-p))
    return _mean(term, prob, y)


def libfm_ll(prob, y):
    """libFM's Test(ll): mean negative log10 likelihood, p clipped to [0.01, 0.99]."""
    def term(p, t):
        p = np.clip(p, 0.01, 0.99)
        return -np.where(t > 0, np.log10(p), np.log10(1 - p))
    return _mean(term, prob, y)


def auc(score, y):
    """Area under the ROC curve, ties counted half (Mann-Whitney U)."""
    from scipy.stats import rankdata

    pos = y > 0
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ordinal(pred, y):
    """-task o: RMSE and MAE of the expected value, accuracy of the most probable class, and
    the multi-class log-loss (natural log, P clipped to [1e-15, 1]; a target that is none of
    the classes counts as probability 0). pred: a fmcli.ordinal.OrdinalPrediction or
    OrdinalSample (its scores())."""
    return pred.scores(y)


def evaluate(task, pred, y):
    """Ordered dict of metric name -> value for one prediction vector."""
    if task == "o":
        return ordinal(pred, y)
    if task == "r":
        return {"rmse": rmse(pred, y), "mae": mae(pred, y)}
    return {"accuracy": accuracy(pred, y), "auc": auc(pred, y), "logloss": log_loss(pred, y)}

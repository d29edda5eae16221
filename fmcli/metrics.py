"""Evaluation metrics. Predictions are already link-applied (clipped values or probabilities).

Classification targets are in {-1, +1} (the reader maps 0 to -1).
log-loss uses the natural log, with probabilities clipped to [1e-15, 1 - 1e-15];
libFM's `Test(ll)` is a base-10 variant clipped to [0.01, 0.99] (see `libfm_ll`).
"""

import numpy as np


def rmse(pred, y):
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - y) ** 2)))


def mae(pred, y):
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - y)))


def accuracy(prob, y):
    return float(np.mean((prob >= 0.5) == (y > 0)))


def log_loss(prob, y):
    p = np.clip(np.asarray(prob, np.float64), 1e-15, 1 - 1e-15)
    return float(-np.mean(np.where(y > 0, np.log(p), np.log1p(-p))))


def libfm_ll(prob, y):
    """libFM's Test(ll): mean negative log10 likelihood, p clipped to [0.01, 0.99]."""
    p = np.clip(np.asarray(prob, np.float64), 0.01, 0.99)
    return float(-np.mean(np.where(y > 0, np.log10(p), np.log10(1 - p))))


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


def evaluate(task, pred, y):
    """Ordered dict of metric name -> value for one prediction vector."""
    if task == "r":
        return {"rmse": rmse(pred, y), "mae": mae(pred, y)}
    return {"accuracy": accuracy(pred, y), "auc": auc(pred, y), "logloss": log_loss(pred, y)}

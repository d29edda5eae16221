"""Evaluation metrics. Predictions are already link-applied (clipped values or probabilities).

Classification targets are in {-1, +1} (the reader maps 0 to -1).
log-loss uses the natural log, with probabilities clipped to [1e-15, 1 - 1e-15];
libFM's `Test(ll)` is a base-10 variant clipped to [0.01, 0.99] (see `libfm_ll`).
"""

import math

import numpy as np

from fmcli.config import njit

CHUNK = 1 << 16   # rows per numpy step: temporaries stay small whatever the data size


def _mean(term, pred, y):
    """Mean of term(pred, y) over all rows, computed chunk by chunk (a 10M-row train set would
    otherwise allocate several 80 MB temporaries per metric)."""
    n = len(y)
    if n == 0:
        return float("nan")
    total = 0.0
    for a in range(0, n, CHUNK):
        total += float(np.sum(term(np.asarray(pred[a:a + CHUNK], np.float64), y[a:a + CHUNK])))
    return total / n


@njit
def difference_sums(pred, y, add_target, lo, hi):
    """(Σ (p − t)², Σ |p − t|) over the rows, p = clip(pred + (t if add_target else 0), lo, hi):
    link-applied predictions (lo, hi = ±inf), or a learner's residuals ŷ − t with its clip
    (one pass, no temporaries)."""
    s2 = 0.0
    s1 = 0.0
    for i in range(len(y)):
        t = np.float64(y[i])      # float64 arithmetic whatever the arrays' types
        p = np.float64(pred[i]) + t if add_target else np.float64(pred[i])
        d = min(max(p, lo), hi) - t
        s2 += d * d
        s1 += abs(d)
    return s2, s1


def regression_sums(pred, y):
    """(Σ squared error, Σ absolute error): pred an array, or an object that computes its
    predictions' sums itself (its difference_sums(y): a learner's train rows)."""
    if isinstance(pred, np.ndarray):
        return difference_sums(pred, y, False, -math.inf, math.inf)
    return pred.difference_sums(y)


def rmse(pred, y):
    return math.sqrt(regression_sums(pred, y)[0] / len(y)) if len(y) else float("nan")


def mae(pred, y):
    return regression_sums(pred, y)[1] / len(y) if len(y) else float("nan")


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
    OrdinalSample."""
    from fmcli.ordinal import ordinal_scores

    return ordinal_scores(pred, y)


def evaluate(task, pred, y):
    """Ordered dict of metric name -> value for one prediction vector."""
    if task == "o":
        return ordinal(pred, y)
    if task == "r":
        if not len(y):
            return {"rmse": float("nan"), "mae": float("nan")}
        s2, s1 = regression_sums(pred, y)
        return {"rmse": math.sqrt(s2 / len(y)), "mae": s1 / len(y)}
    return {"accuracy": accuracy(pred, y), "auc": auc(pred, y), "logloss": log_loss(pred, y)}

"""Stochastic gradient descent with libFM's per-case updates (libFM `-method sgd`).

Differences from libFM, each on purpose:
- rows are visited in a seeded random order each epoch (libFM walks the file in
  order and tells the user to shuffle it first). To keep memory access mostly sequential,
  the rows are shuffled once into a private copy (seeded), and each epoch visits blocks of
  BLOCK consecutive rows of that copy in a new seeded random order: each epoch is a
  different order, and rows that were neighbours in the file are not neighbours here.
  (A full permutation each epoch made a 1M-row pass 3-4x slower: random row access);
- the regression gradient uses the unclipped prediction, so a prediction above
  the target range is still pulled back (libFM's clipped gradient is zero there);
- `-learn_rate a,b,c` really gives w0, w and V their own rates (libFM's 3-value
  form silently sets the rate to 0);
- features never seen in train keep w = 0 and V = 0, so they contribute nothing.
"""

import numpy as np

from fmcli.config import njit
from fmcli.data import permute_rows
from fmcli.errors import TrainingError
from fmcli.learners.base import Learner

BLOCK = 64   # rows visited together; small against any data set that needs shuffling


class SGDLearner(Learner):
    def __init__(self, model, train, evals, opts, rng):
        self.model, self.train, self.evals, self.opts, self.rng = model, train, evals, opts, rng
        model.link = "identity" if opts.task == "r" else "logistic"
        if not opts.extra.get("warm_start"):
            unseen = np.bincount(train.indices, minlength=model.n_features)[: model.n_features] == 0
            model.V[unseen] = 0.0
        rates = tuple(opts.learn_rate) if np.ndim(opts.learn_rate) else (opts.learn_rate,) * 3
        self.rates = np.array(rates, np.float64)
        self.reg = np.array(opts.regular[:3], np.float64)
        self._w0 = np.array([model.w0])
        shuffle = rng.permutation(train.n_rows).astype(np.int64)
        self.rows = permute_rows(*train.csr(), shuffle)
        self.y = np.ascontiguousarray(train.y[shuffle])

    def step(self, it):
        m = self.model
        n = self.train.n_rows
        blocks = self.rng.permutation((n + BLOCK - 1) // BLOCK)
        order = (blocks[:, None] * BLOCK + np.arange(BLOCK)).ravel()
        order = order[order < n]
        self._w0[0] = m.w0
        _sgd_epoch(*self.rows, self.y, order, self._w0, m.w, m.V, m.use_w0, m.use_w,
                   self.opts.task == "c", self.rates, self.reg)
        m.w0 = float(self._w0[0])
        if not (np.isfinite(m.w0) and np.isfinite(m.w).all() and np.isfinite(m.V).all()):
            raise TrainingError(f"SGD diverged in epoch {it} (NaN or inf in the model): "
                                f"lower -learn_rate (now {','.join('%g' % r for r in self.rates)})")

    def train_predictions(self):
        return self.model.predict(*self.train.csr())

    def eval_predictions(self, name):
        return self.model.predict(*self.evals[name].csr())

    def final_model(self):
        return self.model


@njit
def _sgd_epoch(indptr, indices, data, y, order, w0, w, V, use_w0, use_w, classify, rates, reg):
    """One pass over the rows in `order`; updates w0[0], w and V in place."""
    k = V.shape[1]
    s = np.empty(k)
    eta0, eta1, eta2 = rates[0], rates[1], rates[2]
    r0, r1, r2 = reg[0], reg[1], reg[2]
    for i in order:
        start, end = indptr[i], indptr[i + 1]
        pred = w0[0] if use_w0 else 0.0
        sq = 0.0
        for f in range(k):
            s[f] = 0.0
        for p in range(start, end):
            j = indices[p]
            x = data[p]
            if use_w:
                pred += w[j] * x
            for f in range(k):
                vx = V[j, f] * x
                s[f] += vx
                sq += vx * vx
        for f in range(k):
            pred += 0.5 * s[f] * s[f]
        pred -= 0.5 * sq
        if classify:
            yi = y[i]
            g = -yi * (1.0 - 1.0 / (1.0 + np.exp(-yi * pred)))
        else:
            g = pred - y[i]
        if use_w0:
            w0[0] -= eta0 * (g + r0 * w0[0])
        # each (j, f) update uses the row's s_f from before the updates, so the
        # order of the loops does not matter: walk each feature's factors contiguously
        for p in range(start, end):
            j = indices[p]
            x = data[p]
            gx = g * x
            if use_w:
                w[j] -= eta1 * (gx + r1 * w[j])
            for f in range(k):
                v = V[j, f]
                V[j, f] = v - eta2 * (gx * (s[f] - v * x) + r2 * v)

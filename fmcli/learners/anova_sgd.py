"""SGD epochs of a model with orders 3 and up (fmcli.anova): libFM's per-case updates of w0, w
and V (the plain-SGD arithmetic of fmcli.learners.sgd, the same formulas) plus each order-t
factor p_{j,c} of the row's features stepped by

    p_{j,c} -= η_V (g ∂ŷ/∂p_{j,c} + λ_V p_{j,c}),   ∂ŷ/∂p_{j,c} = x_j b_{t−1}  (anova.entry_gradient)

with the row's polynomials from before its updates (as the order-2 factors use the row's
factor sums from before them), η_V and λ_V those of V. Plain SGD only (fmcli.plan refuses
AdaGrad/Adam and SGDA with orders above 2). A -dim k0,k1,k2 model never comes here: its
epochs stay sgd._fm_epoch's.
"""

import numpy as np

from fmcli.anova import entry_gradient, row_polynomials
from fmcli.config import njit
from fmcli.learners.base import check_diverged, target_size
from fmcli.learners.prefetch import prefetch_row_features
from fmcli.learners.sgd import SGDLearner, row_score


class HigherOrderSGDLearner(SGDLearner):
    """-method sgd with orders 3 and up (fmcli.train.learner_class picks it)."""

    def __init__(self, model, train, evals, groups, opts, rng):
        super().__init__(model, train, evals, groups, opts, rng)
        if not opts.warm_start:
            seen = np.zeros(model.n_features, bool)
            seen[self.rows[1]] = True
            model.H[~seen] = 0.0

    def step(self, it):
        m = self.model
        order = self._epoch_order()
        self._w0[0] = m.w0
        sq_error = fm_epoch_higher(*self.rows, self.y, order, self._w0, m.w, m.V, m.use_w0, m.use_w,
                                   self.opts.task == "c", self.rates, self.reg, m.H, m.col_order, self.weights)
        m.w0 = float(self._w0[0])
        if self._size is None:
            self._size = target_size(self.opts.task, self.y)
        check_diverged("SGD", it, sq_error, len(self.y), self._size,
                       bool(np.isfinite(m.w0) and np.isfinite(m.w).all() and np.isfinite(m.V).all()
                            and np.isfinite(m.H).all()),
                       f"a smaller -learn_rate (now {','.join('%g' % r for r in self.rates)}) or a larger -regular")


@njit
def fm_epoch_higher(indptr, indices, data, y, order, w0, w, V, use_w0, use_w, classify, rates, reg, H, col_order,
                    weights):
    """One pass over the rows in `order`, updating w0[0], w, V and H in place. Returns Σ (ŷ − y)²
    of the rows, each ŷ as predicted before the row's update. weights: as sgd._fm_epoch's (row
    i's gradient and L2 terms scaled by its weight; weight 0 skipped; empty: all 1)."""
    weighted = weights.shape[0] > 0
    k = V.shape[1]
    K = H.shape[1]
    tmax = col_order.max()
    s = np.empty(k)
    a = np.empty((K, tmax + 1))
    b = np.empty(tmax + 1)
    eta0, eta1, eta2 = rates[0], rates[1], rates[2]
    r0, r1, r2 = reg[0], reg[1], reg[2]
    sq_error = 0.0
    n_order = order.shape[0]
    for q in range(n_order):
        i = order[q]
        if q + 1 < n_order:
            prefetch_row_features(indptr, indices, order[q + 1], V, True)
            prefetch_row_features(indptr, indices, order[q + 1], H, True)
        if weighted:
            u = weights[i]
            if u == 0.0:
                continue
            r0, r1, r2 = reg[0] * u, reg[1] * u, reg[2] * u
        start, end = indptr[i], indptr[i + 1]
        pred = row_score(indices, data, start, end, w0[0] if use_w0 else 0.0, w, V, use_w, s)
        pred += row_polynomials(indices, data, start, end, H, col_order, a)
        sq_error += (pred - y[i]) ** 2
        if classify:
            yi = y[i]
            g = -yi * (1.0 - 1.0 / (1.0 + np.exp(-yi * pred)))
        else:
            g = pred - y[i]
        if weighted:
            g *= u
        if use_w0:
            w0[0] -= eta0 * (g + r0 * w0[0])
        for p in range(start, end):
            j = indices[p]
            x = np.float64(data[p])
            gx = g * x
            if use_w:
                w[j] -= eta1 * (gx + r1 * w[j])
            for f in range(k):
                v = V[j, f]
                V[j, f] = v - eta2 * (gx * (s[f] - v * x) + r2 * v)
            for c in range(K):
                h = H[j, c]
                H[j, c] = h - eta2 * (g * entry_gradient(a, c, col_order[c], h * x, x, b) + r2 * h)
    return sq_error

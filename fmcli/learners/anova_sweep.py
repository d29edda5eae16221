"""ALS and MCMC with orders 3 and up (fmcli.anova): the order-2 sweep of coord.py unchanged,
then a sweep over the higher-order factors, factor (column c of H) by factor.

ŷ is linear in each single p_{j,c} (rows without repeated features), with h_i = ∂ŷ_i/∂p_{j,c} =
x_ij b_{t−1} (anova.entry_gradient, b the row's polynomials without j), so the closed-form
update of sweep.solve applies as for every other parameter:

    P = λ + α Σ_i h_i²,   θ = [α Σ_i h_i (θ_old h_i − e_i) + λ μ] / P  (+ z/√P for MCMC)

Per factor c of order t the rows' polynomials a_1..a_t (t + 1 float64 per row) are computed
from the CSR rows (factor_polynomials, O(t nnz)) and kept up to date after each change by Δ
(a_s += x Δ b_{s−1}; e += h Δ), so a sweep of the higher orders costs O(Σ_c t_c nnz). The
features are visited one after the other in the order of the coloured sweep (one lane): the
result does not depend on the thread count. MCMC draws p_{j,c}'s normal from stream j of
part_seed(sweep seed, HIGHER_PART + c), with per-group hyperparameters (μ, λ) of each factor
(mcmc.draw_hyper on H); ALS uses the groups' λ of V and μ = 0.

Left out: rows with a repeated feature (ŷ is then not linear in p_{j,c}: refused), relations
(fmcli.plan refuses them), and MCMC samples in the saved model (the model is the last draw;
-out averages the predictions as for order 2).
"""

import numpy as np
from numba import prange

from fmcli.anova import ROWS_PER_TASK, add_higher_orders, row_polynomials, without_entry
from fmcli.config import njit
from fmcli.errors import TrainingError, UsageError
from fmcli.learners.als import ALSLearner
from fmcli.learners.mcmc import MCMCLearner, draw_hyper
from fmcli.learners.streams import part_seed, stream_normals
from fmcli.learners.sweep import REJ_V, count_nonfinite, finite, solve
from fmcli.model import FMModel

HIGHER_PART = 1 << 20    # MCMC: the higher-order factors' normals come from parts from here on


@njit(parallel=True)
def factor_polynomials(indptr, indices, data, H, c, t, A):
    """A[i, s] = a_s (s = 0..t) of factor c (order t) for every CSR row i."""
    n_rows = indptr.shape[0] - 1
    Hc = H[:, c:c + 1]
    order = np.array([t], np.int64)
    for r in prange((n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        a = np.empty((1, t + 1))
        for i in range(r * ROWS_PER_TASK, min(n_rows, (r + 1) * ROWS_PER_TASK)):
            row_polynomials(indices, data, indptr[i], indptr[i + 1], Hc, order, a)
            for s in range(t + 1):
                A[i, s] = a[0, s]


@njit
def sweep_factor(cptr, crow, cval, order, groups, cache, H, c, t, A, lam, mu, alpha, sample, seed, rej):
    """p_{j,c} for the features j in `order`, one after the other; e (cache[:, 0]) and A kept
    up to date. lam, mu: per group."""
    b = np.empty(t + 1)
    z = np.zeros(2)
    for idx in range(order.shape[0]):
        j = order[idx]
        g = groups[j]
        old = H[j, c]
        s1 = 0.0
        s2 = 0.0
        for p in range(cptr[j], cptr[j + 1]):
            i = crow[p]
            x = np.float64(cval[p])
            without_entry(A, i, t, x * old, b)
            h = x * b[t - 1]
            s2 += h * h
            s1 += h * (old * h - cache[i, 0])
        if sample:
            stream_normals(seed, j, z)
        new = solve(alpha * s1 + lam[g] * mu[g], lam[g] + alpha * s2, z[0] if sample else 0.0)
        if not finite(new):
            rej[REJ_V] += 1
            continue
        d = new - old
        if d == 0.0:
            continue
        for p in range(cptr[j], cptr[j + 1]):
            i = crow[p]
            x = np.float64(cval[p])
            without_entry(A, i, t, x * old, b)
            cache[i, 0] += x * b[t - 1] * d
            for s in range(1, t + 1):
                A[i, s] += x * d * b[s - 1]
        H[j, c] = new


class _HigherOrders:
    """What ALS and MCMC add for orders 3 and up (mixed in before the learner class)."""

    def _setup_features(self, n):
        super()._setup_features(n)
        if self.has_duplicates:
            raise UsageError("-dim with orders above 2: -method als and mcmc need train rows without "
                             "repeated features (merge the repeats, or use -method sgd)")
        m = self.model
        if not self.opts.warm_start:
            m.H[np.diff(self.cptr) == 0] = 0.0
        self.col_order = m.col_order
        K = m.H.shape[1]
        self.mu_h = np.zeros((self.G, K))
        self.lam_h = np.zeros((self.G, K))
        self._A = np.empty((len(self.indptr) - 1, int(self.col_order.max()) + 1))
        # the sweep's feature order: the coloured order of the order-2 sweep (row-local access)
        self._visit = np.ascontiguousarray(self.order, np.int64)

    def _init_hyper(self):
        super()._init_hyper()
        self.lam_h[:] = self.lam_v[:, :1]

    def _higher_part(self, indptr, indices, data):
        out = np.zeros(len(indptr) - 1)
        add_higher_orders(indptr, indices, data, self.model.H, self.col_order, out)
        return out

    def _refresh_train(self):
        super()._refresh_train()
        hz = self._higher_part(self.indptr, self.indices, self.data)
        if self._yhat is not None:
            self._yhat += hz
        else:
            self.cache[:, 0] += hz
            e = self.cache[:, 0].astype(np.float64)
            self._sq_error = float(e @ e)

    def sweep(self, seed=0):
        super().sweep(seed)
        m = self.model
        rej = np.zeros_like(self.rejected)
        for c in range(m.H.shape[1]):
            t = int(self.col_order[c])
            factor_polynomials(self.indptr, self.indices, self.data, m.H, c, t, self._A)
            sweep_factor(self.cptr, self.crow, self.cval, self._visit, self.groups, self.cache, m.H, c, t,
                         self._A, self.lam_h[:, c].copy(), self.mu_h[:, c].copy(), self.alpha, self.sample,
                         part_seed(seed, HIGHER_PART + c), rej)
        self.rejected += rej

    def _predict(self, d):
        return super()._predict(d) + self._higher_part(d.indptr, d.indices, d.data)

    def train_raw(self):
        raw = super().train_raw()
        if self._yhat is None:
            raw += self._file_order(self._higher_part(self.indptr, self.indices, self.data))
        return raw

    def _check_diverged(self, it):
        super()._check_diverged(it)
        if count_nonfinite(self.model.H):
            raise TrainingError(f"{self.opts.method.upper()} diverged in iteration {it}: NaN or inf in the "
                                "higher-order factors; try a larger -regular or a smaller -init_stdev")


class HigherOrderALSLearner(_HigherOrders, ALSLearner):
    pass


class HigherOrderMCMCLearner(_HigherOrders, MCMCLearner):
    def _before_sweep(self):
        super()._before_sweep()
        m = self.model
        no_w = np.zeros(self.G)
        draw_hyper(self.cols, self.groups, m.w, m.H, False, no_w, no_w.copy(), self.mu_h, self.lam_h,
                   self.rejected)

    def _snapshot(self):
        return ()      # samples are not kept with orders above 2 (module docs)

    def final_model(self):
        m = self.model
        return FMModel(float(self._w0[0]), m.w, m.V, m.use_w0, m.use_w, m.task, m.link, m.y_min, m.y_max,
                       dict(m.meta), H=m.H, orders=m.orders)

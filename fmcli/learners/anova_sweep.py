"""ALS and MCMC with orders 3 and up (fmcli.anova): the order-2 sweep of coord.py unchanged,
then a sweep over the higher-order factors, factor (column c of H) by factor.

ŷ is linear in each single p_{j,c} (rows without repeated features), with h_i = ∂ŷ_i/∂p_{j,c} =
x_ij b_{t−1} (anova.entry_gradient, b the row's polynomials without j), so the closed-form
update of sweep.solve applies as for every other parameter:

    P = λ + α Σ_i h_i²,   θ = [α Σ_i h_i (θ_old h_i − e_i) + λ μ] / P  (+ z/√P for MCMC)

Each row keeps the polynomials a_1..a_{t−1} of every factor c of order t (Σ_c (t_c − 1)
float32 per row, as e and q), computed from the CSR rows with the higher-order part of ŷ in
the train refresh (row_caches, O(Σ t nnz)) and kept up to date after each change by Δ
(a_s += x Δ b_{s−1}; e += h Δ), so a sweep of the higher orders costs O(Σ_c t_c nnz). A row of
fewer than t non-zero values is left out of the factors of order t: its h is exactly 0, and its
order-t polynomials, never read, go stale until the next refresh.
Features are visited feature by feature (all K factors of j on its rows' caches gathered
factor-major into a contiguous buffer; one pass over them per factor), in the colour classes
and parallel lanes of the order-2 sweep; MCMC draws feature j's normals from stream j of
part_seed(sweep seed, HIGHER_PART), so the result does not depend on the thread count. MCMC
has per-group hyperparameters (μ, λ) of each factor (mcmc.draw_hyper on H); ALS uses the
groups' λ of V and μ = 0.

Left out: rows with a repeated feature (ŷ is then not linear in p_{j,c}: refused), relations
(fmcli.plan refuses them). MCMC keeps each kept sample's H as float32 next to its w and V
(FMModel.samples_H), so a saved model predicts the average over its samples as -out does.
"""

import numba
import numpy as np
from numba import prange

from fmcli.anova import ROWS_PER_TASK, add_higher_orders, row_polynomials
from fmcli.config import njit
from fmcli.errors import TrainingError, UsageError
from fmcli.learners.als import ALSLearner
from fmcli.learners.mcmc import MCMCLearner, draw_hyper
from fmcli.learners.streams import part_seed, stream_normals
from fmcli.learners.prefetch import prefetch_row
from fmcli.learners.sweep import CACHE_DTYPE, PREFETCH_AHEAD, REJ_V, finite, solve
from fmcli.model import FMModel

HIGHER_PART = 1 << 20    # MCMC: the higher-order factors' normals come from parts from here on


def cache_offsets(col_order):
    """(col_off (K,), width): factor c keeps a_1 .. a_{t_c − 1} in the polynomial cache's
    columns col_off[c] .. col_off[c] + t_c − 2 (a_0 = 1 and a_t are not needed: e carries ŷ)."""
    sizes = np.asarray(col_order, np.int64) - 1
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return off[:-1].copy(), int(off[-1])


@njit(parallel=True)
def row_caches(indptr, indices, data, H, col_order, col_off, A, out):
    """The polynomial cache of every CSR row: A[i, col_off[c] + s − 1] = a_s of factor c
    (s = 1 .. t_c − 1), from anova.row_polynomials; out[i] += the row's higher-order part of ŷ
    (out empty: not wanted). One pass gives the train refresh both."""
    n_rows = indptr.shape[0] - 1
    K = H.shape[1]
    tmax = col_order.max()
    add = out.shape[0] > 0
    for r in prange((n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        a = np.empty((K, tmax + 1))
        for i in range(r * ROWS_PER_TASK, min(n_rows, (r + 1) * ROWS_PER_TASK)):
            total = row_polynomials(indices, data, indptr[i], indptr[i + 1], H, col_order, a)
            if add:
                out[i] += total
            for c in range(K):
                for s in range(1, col_order[c]):
                    A[i, col_off[c] + s - 1] = a[c, s]


@njit(inline="always")
def _h(buf, q, off, t, x, old, b):
    """h = ∂ŷ/∂p_{j,c} = x b_{t−1} of gathered row q (its a_s in buf[off + s, q], s = 1 .. t−1;
    b: the polynomials without the entry, anova.without_entry's recursion, unrolled for t ≤ 4)."""
    px = x * old
    if t == 3:
        return x * (buf[off + 2, q] - px * (buf[off + 1, q] - px))
    if t == 4:
        return x * (buf[off + 3, q] - px * (buf[off + 2, q] - px * (buf[off + 1, q] - px)))
    b[0] = 1.0
    for s in range(1, t):
        b[s] = buf[off + s, q] - px * b[s - 1]
    return x * b[t - 1]


@njit(inline="always")
def _change(buf, q, off, t, x, old, d, b):
    """After p_{j,c} moved by d: e += h d and a_s += x d b_{s−1} (s = 1 .. t−1) of row q."""
    px = x * old
    xd = x * d
    if t == 3:
        b1 = buf[off + 1, q] - px
        buf[0, q] += x * (buf[off + 2, q] - px * b1) * d
        buf[off + 1, q] += xd
        buf[off + 2, q] += xd * b1
    elif t == 4:
        b1 = buf[off + 1, q] - px
        b2 = buf[off + 2, q] - px * b1
        buf[0, q] += x * (buf[off + 3, q] - px * b2) * d
        buf[off + 1, q] += xd
        buf[off + 2, q] += xd * b1
        buf[off + 3, q] += xd * b2
    else:
        b[0] = 1.0
        for s in range(1, t):
            b[s] = buf[off + s, q] - px * b[s - 1]
        buf[0, q] += x * b[t - 1] * d
        for s in range(1, t):
            buf[off + s, q] += xd * b[s - 1]


@njit(inline="always")
def _pass(buf, lx, ln, m, offp, tp, oldp, dp, off, t, old, b, lw):
    """One pass over the gathered rows: first the change of the previous factor (order tp, at
    offp, moved from oldp by dp; tp = 0: none), then the sums (Σ u h (θ h − e), Σ u h²) of factor
    (t, off) at its value old (t = 0: none; u the rows' -weights lw, empty: every u 1). Fusing
    the two halves one pass per factor instead of two: each row's arithmetic is the one of two
    separate passes, in the same order. A row of fewer than t non-zero values (ln) has no order-t
    interaction: it is skipped for an order-t factor, so its h is exactly 0 (computed, it is 0 only
    up to rounding, and an update with λ = 0 would divide that rounding by its square)."""
    weighted = lw.shape[0] > 0
    s1 = 0.0
    s2 = 0.0
    for q in range(m):
        x = np.float64(lx[q])
        if tp and ln[q] >= tp:
            _change(buf, q, offp, tp, x, oldp, dp, b)
        if t and ln[q] >= t:
            h = _h(buf, q, off, t, x, old, b)
            uh = lw[q] * h if weighted else h
            s2 += uh * h
            s1 += uh * (old * h - buf[0, q])
    return s1, s2


@njit
def _feature(j, cptr, crow, cval, cache, H, col_order, col_off, A, lam, mu, alpha, sample, z, b, buf, rej, jn,
             weights, lw, row_len, ln):
    """p_{j,0} .. p_{j,K−1} of feature j in turn. Its rows' e (cache[:, 0]) and polynomial
    caches are gathered into buf (1 + width, ≥ m), factor-major (row r of buf: one cached value
    of every gathered row, so the passes run along contiguous memory), kept up to date there
    and scattered back: two random passes over the rows per feature; the gathers and scatters
    prefetch PREFETCH_AHEAD rows ahead, and the first rows of the lane's next feature jn (−1:
    none) are prefetched before the arithmetic (hints only: the same bits). The change of
    factor c and the sums of factor c + 1 share one pass over the rows (_pass): K + 1 passes.
    weights: each train row's -weight (empty: none), gathered into lw (≥ m, or empty); row_len:
    each train row's count of non-zero values, gathered into ln (≥ m)."""
    p0 = cptr[j]
    m = cptr[j + 1] - p0
    if m == 0:
        return
    W = A.shape[1]
    last = p0 + m - 1
    lx = cval[p0:p0 + m]
    for q in range(m):
        i = crow[p0 + q]
        ahead = crow[min(p0 + q + PREFETCH_AHEAD, last)]
        prefetch_row(cache, ahead, False)
        prefetch_row(A, ahead, False)
        buf[0, q] = cache[i, 0]
        for u in range(W):
            buf[1 + u, q] = A[i, u]
        ln[q] = row_len[i]
        if lw.shape[0] > 0:
            lw[q] = weights[i]
    if jn >= 0:
        for p in range(cptr[jn], min(cptr[jn] + PREFETCH_AHEAD, cptr[jn + 1])):
            prefetch_row(cache, crow[p], False)
            prefetch_row(A, crow[p], False)
    tp = 0          # the factor whose change is still to be applied (order; 0: none)
    offp = 0
    oldp = 0.0
    dp = 0.0
    for c in range(H.shape[1]):
        t = col_order[c]
        off = col_off[c]
        old = H[j, c]
        if tp == 0:
            if t == 3:
                s1, s2 = _pass(buf, lx, ln, m, 0, 0, 0.0, 0.0, off, 3, old, b, lw)
            elif t == 4:
                s1, s2 = _pass(buf, lx, ln, m, 0, 0, 0.0, 0.0, off, 4, old, b, lw)
            else:
                s1, s2 = _pass(buf, lx, ln, m, 0, 0, 0.0, 0.0, off, t, old, b, lw)
        elif tp == 3 and t == 3:
            s1, s2 = _pass(buf, lx, ln, m, offp, 3, oldp, dp, off, 3, old, b, lw)
        elif tp == 4 and t == 4:
            s1, s2 = _pass(buf, lx, ln, m, offp, 4, oldp, dp, off, 4, old, b, lw)
        else:
            s1, s2 = _pass(buf, lx, ln, m, offp, tp, oldp, dp, off, t, old, b, lw)
        tp = 0
        new = solve(alpha * s1 + lam[c] * mu[c], lam[c] + alpha * s2, z[c] if sample else 0.0)
        if not finite(new):
            rej[REJ_V] += 1
            continue
        if new != old:
            tp, offp, oldp, dp = t, off, old, new - old
        H[j, c] = new
    if tp == 3:
        _pass(buf, lx, ln, m, offp, 3, oldp, dp, 0, 0, 0.0, b, lw)
    elif tp == 4:
        _pass(buf, lx, ln, m, offp, 4, oldp, dp, 0, 0, 0.0, b, lw)
    elif tp:
        _pass(buf, lx, ln, m, offp, tp, oldp, dp, 0, 0, 0.0, b, lw)
    for q in range(m):
        i = crow[p0 + q]
        ahead = crow[min(p0 + q + PREFETCH_AHEAD, last)]
        prefetch_row(cache, ahead, True)
        prefetch_row(A, ahead, True)
        cache[i, 0] = buf[0, q]
        for u in range(W):
            A[i, u] = buf[1 + u, q]


@njit(parallel=True)
def sweep_higher(cptr, crow, cval, order, lane_ptr, n_lanes, groups, cache, H, col_order, col_off, A,
                 lam, mu, alpha, sample, seed, bufs, rej, weights, lws, row_len, lns):
    """The higher-order factors of every feature, feature by feature (p_{j,0..K−1}), in the
    colour classes and lanes of the order-2 sweep (sweep.sweep): features of one class share no
    row, so their lanes run in parallel; feature j's normals come from stream j of `seed`, so
    the result is the same for any number of threads. lam, mu: (G, K); bufs: (n_lanes,
    1 + A.shape[1], longest column) gather buffers; rej: (threads, ·); weights: each train row's
    -weight, or empty; lws: (n_lanes, longest column) buffers of the gathered rows' weights, or
    (n_lanes, 0) without weights; row_len: each train row's count of non-zero values (int32);
    lns: (n_lanes, longest column) int32 buffers of the gathered rows' counts."""
    K = H.shape[1]
    tmax = col_order.max()
    n_classes = (lane_ptr.shape[0] - 1) // n_lanes
    for cl in range(n_classes):
        for lane in prange(n_lanes):
            tid = numba.get_thread_id()
            b = np.empty(tmax + 1)
            z = np.zeros(K + 1)
            t1 = lane_ptr[cl * n_lanes + lane + 1]
            for tt in range(lane_ptr[cl * n_lanes + lane], t1):
                j = order[tt]
                g = groups[j]
                if sample:
                    stream_normals(seed, j, z)
                _feature(j, cptr, crow, cval, cache, H, col_order, col_off, A, lam[g], mu[g], alpha, sample,
                         z, b, bufs[lane], rej[tid], order[tt + 1] if tt + 1 < t1 else -1, weights, lws[lane],
                         row_len, lns[lane])


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
        self.col_off, width = cache_offsets(self.col_order)
        self._A = np.empty((len(self.indptr) - 1, width), CACHE_DTYPE)
        self._bufs = None

    def _init_hyper(self):
        super()._init_hyper()
        self.lam_h[:] = self.lam_v[:, :1]

    def _higher_part(self, indptr, indices, data):
        out = np.zeros(len(indptr) - 1)
        add_higher_orders(indptr, indices, data, self.model.H, self.col_order, out)
        return out

    def _refresh_train(self):
        super()._refresh_train()
        # the higher-order part of ŷ and the rows' polynomial caches (reset exactly, as e and q
        # are) in one pass
        hz = np.zeros(len(self.indptr) - 1)
        row_caches(self.indptr, self.indices, self.data, self.model.H, self.col_order, self.col_off, self._A, hz)
        if self._yhat is not None:
            self._yhat += hz
        else:
            self.cache[:, 0] += hz
            e = self.cache[:, 0].astype(np.float64)
            self._sq_error = float(e @ e)

    def sweep(self, seed=0):
        super().sweep(seed)
        m = self.model
        sc = self._scratch[numba.get_num_threads()]     # the order-2 sweep's lanes (for its thread count)
        before = numba.get_num_threads()
        numba.set_num_threads(sc.threads)
        try:
            rej = np.zeros((sc.threads, len(self.rejected)), np.int64)
            if self._bufs is None or self._bufs.shape[0] != sc.threads:
                self._bufs = np.empty((sc.threads, 1 + self._A.shape[1], self.longest))
                self._lws = np.empty((sc.threads, self.longest if len(self._wt) else 0))
                self._lns = np.empty((sc.threads, self.longest), np.int32)
            sweep_higher(self.cptr, self.crow, self.cval, self.order, sc.lane_ptr, sc.threads, self.groups,
                         self.cache, m.H, self.col_order, self.col_off, self._A, self.lam_h, self.mu_h,
                         self.alpha, self.sample, part_seed(seed, HIGHER_PART), self._bufs, rej, self._wt,
                         self._lws, self._row_len, self._lns)
        finally:
            numba.set_num_threads(before)
        self.rejected += rej.sum(axis=0)

    def _predict(self, d):
        return super()._predict(d) + self._higher_part(d.indptr, d.indices, d.data)

    def train_raw(self):
        raw = super().train_raw()
        if self._yhat is None:
            raw += self._file_order(self._higher_part(self.indptr, self.indices, self.data))
        return raw

    def _check_diverged(self, it):
        super()._check_diverged(it)
        if not np.isfinite(self.model.H).all():
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
        return super()._snapshot() + (self.model.H.astype(np.float32),)   # H kept as V is

    def final_model(self):
        m = self.model
        out = FMModel(float(self._w0[0]), m.w, m.V, m.use_w0, m.use_w, m.task, m.link, m.y_min, m.y_max,
                      dict(m.meta), H=m.H, orders=m.orders)
        self._attach_samples(out)
        return out

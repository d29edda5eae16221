"""Coordinate sweeps shared by ALS and MCMC (libFM behaviour §6.3), compiled with numba.

Both learners go over the transposed train data (CSC: for each feature, its rows) and
keep two per-row caches, exactly as libFM does:

    e[i]    = ŷ_i − t_i            (t = y for regression, the latent target z for probit)
    q[i, f] = Σ_j v_{j,f} x_{ij}   (all k factors, row-major, so q[i, :] is one cache line)

The model is linear in each single parameter θ with h_i = ∂ŷ_i/∂θ (1 for w0, x_ij for w_j,
x_ij (q_{i,f} − x_ij v_{j,f}) for v_{j,f}). With noise precision α and prior N(μ, 1/λ):

    P = λ + α Σ_i h_i²,    m = [α Σ_i h_i (θ h_i − e_i) + λ μ] / P

ALS sets θ = m (α = 1, μ = 0: the exact minimiser of ½Σe² + ½λθ²); MCMC draws θ ~ N(m, 1/P).
After a change by Δ: e_i += h_i Δ, and for v also q_{i,f} += x_ij Δ. P = 0 (no data and no
prior) sets θ = 0, as libFM. A non-finite result is rejected (the old value is kept) and
counted in `rejected` (indices REJ_*).

Order of a sweep. libFM updates all w_j, then for f = 0..k−1 all v_{j,f}. We go feature by
feature instead: for each feature j in train, w_j then v_{j,0} … v_{j,k−1}. Each update is
still the exact conditional minimiser / Gibbs draw given the current values of everything
else (the hyperparameters are drawn before the sweep, as in libFM), so this is an equally
valid coordinate descent / Gibbs scan. It touches the rows of column j (e[i], q[i, :]) k+1
times in a row while they are in cache, instead of once per factor over the whole data.

Features without any train entry are not visited (their values never change). A duplicated
(row, feature) entry makes ŷ quadratic in v_{j,f}; like libFM we treat each entry linearly,
so within such a column the caches are approximate; they are reset exactly after each
sweep anyway (`predict_rows` recomputes ŷ and q from the CSR rows).
"""

import math

import numpy as np

from fmcli.config import njit
from fmcli.learners.base import Learner

# libFM's fixed hyperprior parameters
ALPHA0 = 1.0
GAMMA0 = 1.0
BETA0 = 1.0
MU0 = 0.0

# indices into the `rejected` counter array
REJ_ALPHA, REJ_W0, REJ_W, REJ_V, REJ_WMU, REJ_WLAMBDA, REJ_VMU, REJ_VLAMBDA = range(8)
REJ_NAMES = ("alpha", "w0", "w", "v", "w_mu", "w_lambda", "v_mu", "v_lambda")


@njit
def seed_numba(s):
    """Seed numba's own global random state (separate from numpy's)."""
    np.random.seed(s)


@njit
def _solve(num, P, sample):
    """θ = num/P (ALS) or a draw from N(num/P, 1/P) (MCMC); 0 when P = 0."""
    if P == 0.0:
        return 0.0
    m = num / P
    if sample:
        return m + np.random.standard_normal() / math.sqrt(P)
    return m


@njit
def coord_w0(e, w0a, lam0, alpha, sample, rejected):
    """Update the global bias w0a[0] (prior N(0, 1/lam0)); h_i = 1."""
    n = e.shape[0]
    old = w0a[0]
    s1 = 0.0
    for i in range(n):
        s1 += old - e[i]
    new = _solve(alpha * s1, lam0 + alpha * n, sample)
    if not math.isfinite(new):
        rejected[REJ_W0] += 1
        return
    d = new - old
    if d != 0.0:
        for i in range(n):
            e[i] += d
    w0a[0] = new


@njit
def coord_w(cptr, crow, cval, j, e, w, lam, mu, alpha, sample, rejected):
    """Update w[j]; h_i = x_ij."""
    old = w[j]
    s1 = 0.0
    s2 = 0.0
    for p in range(cptr[j], cptr[j + 1]):
        x = np.float64(cval[p])
        s2 += x * x
        s1 += x * (old * x - e[crow[p]])
    new = _solve(alpha * s1 + lam * mu, lam + alpha * s2, sample)
    if not math.isfinite(new):
        rejected[REJ_W] += 1
        return
    d = new - old
    if d != 0.0:
        for p in range(cptr[j], cptr[j + 1]):
            e[crow[p]] += np.float64(cval[p]) * d
    w[j] = new


@njit
def coord_v(cptr, crow, cval, j, f, e, q, V, lam, mu, alpha, sample, rejected):
    """Update V[j, f]; h_i = x_ij (q_{i,f} − x_ij v_{j,f})."""
    old = V[j, f]
    s1 = 0.0
    s2 = 0.0
    for p in range(cptr[j], cptr[j + 1]):
        i = crow[p]
        x = np.float64(cval[p])
        h = x * (q[i, f] - x * old)
        s2 += h * h
        s1 += h * (old * h - e[i])
    new = _solve(alpha * s1 + lam * mu, lam + alpha * s2, sample)
    if not math.isfinite(new):
        rejected[REJ_V] += 1
        return
    d = new - old
    if d != 0.0:
        for p in range(cptr[j], cptr[j + 1]):
            i = crow[p]
            x = np.float64(cval[p])
            h = x * (q[i, f] - x * old)
            e[i] += h * d
            q[i, f] += x * d
    V[j, f] = new


@njit
def sweep(cptr, crow, cval, cols, groups, e, q, w0a, w, V, use_w0, use_w,
          alpha, lam0, lam_w, mu_w, lam_v, mu_v, sample, rejected):
    """One sweep: w0, then for each feature j in `cols`: w_j, v_{j,0..k-1}."""
    k = V.shape[1]
    if use_w0:
        coord_w0(e, w0a, lam0, alpha, sample, rejected)
    for c in range(cols.shape[0]):
        j = cols[c]
        g = groups[j]
        if use_w:
            coord_w(cptr, crow, cval, j, e, w, lam_w[g], mu_w[g], alpha, sample, rejected)
        for f in range(k):
            coord_v(cptr, crow, cval, j, f, e, q, V, lam_v[g, f], mu_v[g, f], alpha, sample, rejected)


@njit
def sweep_local(cptr, crow, cval, cols, groups, e, q, w0a, w, V, use_w0, use_w,
                alpha, lam0, lam_w, mu_w, lam_v, mu_v, sample, rejected, le, lq, lx):
    """`sweep` for data without duplicated (row, feature) entries: the rows of column j are
    gathered into contiguous buffers (le: e, lq: q transposed (k, m), lx: x), updated there
    for w_j, v_{j,0..k-1}, and scattered back: two random passes per column instead of
    2(k+1). Same arithmetic as coord_w/coord_v. Buffers hold the longest column."""
    k = V.shape[1]
    if use_w0:
        coord_w0(e, w0a, lam0, alpha, sample, rejected)
    for c in range(cols.shape[0]):
        j = cols[c]
        g = groups[j]
        p0 = cptr[j]
        m = cptr[j + 1] - p0
        for t in range(m):
            i = crow[p0 + t]
            le[t] = e[i]
            lx[t] = cval[p0 + t]
            for f in range(k):
                lq[f, t] = q[i, f]
        if use_w:
            old = w[j]
            s1 = 0.0
            s2 = 0.0
            for t in range(m):
                x = lx[t]
                s2 += x * x
                s1 += x * (old * x - le[t])
            new = _solve(alpha * s1 + lam_w[g] * mu_w[g], lam_w[g] + alpha * s2, sample)
            if math.isfinite(new):
                d = new - old
                for t in range(m):
                    le[t] += lx[t] * d
                w[j] = new
            else:
                rejected[REJ_W] += 1
        for f in range(k):
            old = V[j, f]
            s1 = 0.0
            s2 = 0.0
            for t in range(m):
                x = lx[t]
                h = x * (lq[f, t] - x * old)
                s2 += h * h
                s1 += h * (old * h - le[t])
            new = _solve(alpha * s1 + lam_v[g, f] * mu_v[g, f], lam_v[g, f] + alpha * s2, sample)
            if math.isfinite(new):
                d = new - old
                for t in range(m):
                    x = lx[t]
                    h = x * (lq[f, t] - x * old)
                    le[t] += h * d
                    lq[f, t] += x * d
                V[j, f] = new
            else:
                rejected[REJ_V] += 1
        for t in range(m):
            i = crow[p0 + t]
            e[i] = le[t]
            for f in range(k):
                q[i, f] = lq[f, t]


@njit
def draw_alpha(e, alpha_old, rejected):
    """Noise precision α ~ Gamma((α0 + N)/2, rate (γ0 + Σ e²)/2)."""
    ss = 0.0
    for i in range(e.shape[0]):
        ss += e[i] * e[i]
    a = np.random.gamma((ALPHA0 + e.shape[0]) / 2.0, 2.0 / (GAMMA0 + ss))
    if not (math.isfinite(a) and a > 0.0):
        rejected[REJ_ALPHA] += 1
        return alpha_old
    return a


@njit
def _draw_pair(n, s, ss, mu_old, lam_old, rejected, rej_mu, rej_lam):
    """(μ, λ): λ ~ Gamma((α0 + n + 1)/2, rate [γ0 + β0(μ_old − μ0)² + Σ(θ − μ_old)²]/2), then
    μ ~ N((Σθ + β0 μ0)/(n + β0), 1/((n + β0) λ)). s = Σθ, ss = Σ(θ − μ_old)²."""
    lam = np.random.gamma((ALPHA0 + n + 1.0) / 2.0,
                          2.0 / (GAMMA0 + BETA0 * (mu_old - MU0) ** 2 + ss))
    if not (math.isfinite(lam) and lam > 0.0):
        rejected[rej_lam] += 1
        lam = lam_old
    prec = (n + BETA0) * lam
    mu = (s + BETA0 * MU0) / (n + BETA0) + np.random.standard_normal() / math.sqrt(prec)
    if not math.isfinite(mu):
        rejected[rej_mu] += 1
        mu = mu_old
    return mu, lam


@njit
def draw_hyper(cols, groups, w, V, use_w, mu_w, lam_w, mu_v, lam_v, rejected):
    """Gibbs draws of the per-group hyperparameters (μ, λ) of w and of each factor of V,
    each λ with the previous μ (as libFM). Group sizes n_g count the features in `cols`
    (those with train entries)."""
    G = mu_w.shape[0]
    k = V.shape[1]
    n = np.zeros(G)
    sw = np.zeros(G)
    ssw = np.zeros(G)
    sv = np.zeros((G, k))
    ssv = np.zeros((G, k))
    for c in range(cols.shape[0]):
        j = cols[c]
        g = groups[j]
        n[g] += 1.0
        if use_w:
            t = w[j]
            sw[g] += t
            ssw[g] += (t - mu_w[g]) ** 2
        for f in range(k):
            t = V[j, f]
            sv[g, f] += t
            ssv[g, f] += (t - mu_v[g, f]) ** 2
    if use_w:
        for g in range(G):
            mu_w[g], lam_w[g] = _draw_pair(n[g], sw[g], ssw[g], mu_w[g], lam_w[g],
                                           rejected, REJ_WMU, REJ_WLAMBDA)
    for f in range(k):
        for g in range(G):
            mu_v[g, f], lam_v[g, f] = _draw_pair(n[g], sv[g, f], ssv[g, f], mu_v[g, f], lam_v[g, f],
                                                 rejected, REJ_VMU, REJ_VLAMBDA)


@njit
def _tn_lower(a):
    """One draw of N(0, 1) truncated to [a, ∞): plain rejection for a ≤ 0 (acceptance ≥ 1/2),
    otherwise Robert's (1995) exponential proposal with the optimal rate (acceptance ≥ 0.76)."""
    if a <= 0.0:
        while True:
            x = np.random.standard_normal()
            if x >= a:
                return x
    lam = 0.5 * (a + math.sqrt(a * a + 4.0))
    while True:
        x = a + np.random.exponential(1.0 / lam)
        if np.random.random() <= math.exp(-0.5 * (x - lam) ** 2):
            return x


@njit
def draw_latent(yhat, y, z):
    """Probit latent targets: z_i ~ N(ŷ_i, 1) truncated to z ≥ 0 (y > 0) or z < 0 (y ≤ 0)."""
    for i in range(yhat.shape[0]):
        if y[i] > 0:
            z[i] = yhat[i] + _tn_lower(-yhat[i])
        else:
            z[i] = yhat[i] - _tn_lower(yhat[i])


@njit
def predict_rows(indptr, indices, data, w0, w, V, use_w, out, q, store_q):
    """Raw FM scores of CSR rows into `out`; with store_q also q[i, f] = Σ_j v_{j,f} x_ij."""
    n_rows = indptr.shape[0] - 1
    n_features, k = V.shape
    s = np.empty(k)
    for i in range(n_rows):
        acc = w0
        for f in range(k):
            s[f] = 0.0
        sq = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j >= n_features:
                continue
            x = np.float64(data[p])
            if use_w:
                acc += w[j] * x
            for f in range(k):
                vx = V[j, f] * x
                s[f] += vx
                sq += vx * vx
        pair = 0.0
        for f in range(k):
            pair += s[f] * s[f]
            if store_q:
                q[i, f] = s[f]
        out[i] = acc + 0.5 * (pair - sq)


@njit
def count_nonfinite(a):
    c = 0
    for x in a.ravel():
        if not math.isfinite(x):
            c += 1
    return c


# ---------------------------------------------------------------------------------------
# The Python side shared by ALSLearner and MCMCLearner.

class CoordinateLearner(Learner):
    """Shared state of ALS and MCMC: CSC train data, caches e and q, hyperparameters.

    Subclasses set `sample` (MCMC) and implement `_init_hyper`, `_before_sweep`,
    `_latent` and `_after_eval`.
    """

    sample = False

    def __init__(self, model, train, evals, opts, rng):
        from fmcli.errors import UsageError

        self.opts = opts
        self.rng = rng
        self.task = opts.task
        n = max([model.n_features, train.n_features] + [d.n_features for d in evals.values()])
        if n > model.n_features:
            model = model.resized(n, rng=rng, init_stdev=opts.init_stdev)
        model.task = opts.task
        model.link = "identity" if opts.task == "r" else "probit"
        y = np.asarray(train.y, np.float64)
        if not np.all(np.isfinite(y)):
            raise UsageError(f"{train.source}: every train row needs a finite target")
        if opts.task == "r" and len(y):
            model.y_min, model.y_max = float(y.min()), float(y.max())
        model.w0 = float(model.w0)
        model.w = np.ascontiguousarray(model.w, np.float64).copy()
        model.V = np.ascontiguousarray(model.V, np.float64).copy()
        self.model = model
        self.k = model.k
        self.use_w0, self.use_w = bool(model.use_w0), bool(model.use_w)

        groups = opts.groups
        if groups is None:
            groups = np.zeros(n, np.int32)
        groups = np.asarray(groups)
        if len(groups) < n:
            raise UsageError(f"-meta gives {len(groups)} group ids but the data have {n} features")
        if len(groups) and groups.min() < 0:
            raise UsageError("-meta: group ids must be non-negative")
        self.groups = np.ascontiguousarray(groups[:n], np.int64)
        self.G = int(self.groups.max()) + 1 if n else 1

        self.cptr, self.crow, self.cval = train.to_csc(n)
        self.active = np.diff(self.cptr) > 0
        self.cols = np.flatnonzero(self.active).astype(np.int64)
        self.n_g = np.bincount(self.groups[self.cols], minlength=self.G)
        # duplicated (row, feature) entries are adjacent in a CSC column
        starts = np.zeros(len(self.crow), bool)
        starts[self.cptr[:-1][self.active]] = True
        self.has_duplicates = bool(np.any((self.crow[1:] == self.crow[:-1]) & ~starts[1:]))
        longest = int(np.diff(self.cptr).max()) if len(self.cols) else 0
        if not self.has_duplicates:
            self.buf_e = np.empty(longest)
            self.buf_q = np.empty((model.k, longest))
            self.buf_x = np.empty(longest)

        if not opts.extra.get("warm_start"):
            # libFM: V ~ N(0, σ²) (done by the caller), then w ~ N(0, σ²). Features without
            # train entries are kept at 0 so that they contribute nothing (see module docs).
            if opts.init_stdev > 0 and self.use_w:
                model.w[:] = rng.normal(0.0, opts.init_stdev, n)
            model.w[~self.active] = 0.0
            model.V[~self.active] = 0.0
        if not self.use_w:
            model.w[:] = 0.0
        self.w0a = np.array([model.w0 if self.use_w0 else 0.0])

        self.train = train
        self.y = y
        self.z = y.copy()                       # latent targets (probit); = y for regression
        self.evals = evals
        self.yhat = np.empty(train.n_rows)
        self.q = np.zeros((train.n_rows, self.k))
        self.e = np.empty(train.n_rows)
        self.rejected = np.zeros(len(REJ_NAMES), np.int64)
        self.alpha = 1.0
        self.lam0 = float(opts.regular[0]) if len(opts.regular) else 0.0
        self.mu_w = np.zeros(self.G)
        self.lam_w = np.zeros(self.G)
        self.mu_v = np.zeros((self.G, self.k))
        self.lam_v = np.zeros((self.G, self.k))
        self._init_hyper()
        self.n_steps = 0
        self._refresh_train()
        self.e[:] = self.yhat - self.z
        self.eval_raw = {name: self._predict(d) for name, d in evals.items()}

    # -- hooks ------------------------------------------------------------------------
    def _init_hyper(self):
        pass

    def _before_sweep(self):
        pass

    def _latent(self):
        """Classification: new latent targets self.z from self.yhat."""
        raise NotImplementedError

    def _after_eval(self):
        pass

    # -- helpers ----------------------------------------------------------------------
    def _predict(self, d, q=None):
        out = np.empty(d.n_rows)
        store = q is not None
        predict_rows(d.indptr, d.indices, d.data, float(self.w0a[0]), self.model.w, self.model.V,
                     self.use_w, out, q if store else np.empty((0, self.k)), store)
        return out

    def _sweep(self):
        """The coordinate sweep alone (caches e and q kept up to date incrementally)."""
        m = self.model
        args = (self.cptr, self.crow, self.cval, self.cols, self.groups, self.e, self.q, self.w0a,
                m.w, m.V, self.use_w0, self.use_w, self.alpha, self.lam0, self.lam_w, self.mu_w,
                self.lam_v, self.mu_v, self.sample, self.rejected)
        if self.has_duplicates:
            sweep(*args)
        else:
            sweep_local(*args, self.buf_e, self.buf_q, self.buf_x)
        m.w0 = float(self.w0a[0])

    def _refresh_train(self):
        """ŷ and q of all train rows from scratch (resets the caches exactly)."""
        self.yhat = self._predict(self.train, self.q)

    def _link(self, raw):
        m = self.model
        if self.task == "r":
            return np.clip(raw, m.y_min, m.y_max)
        from scipy.special import ndtr

        return ndtr(raw)

    def _check_finite(self, it):
        from fmcli.errors import TrainingError

        bad = count_nonfinite(self.yhat)
        if bad or not math.isfinite(self.w0a[0]) or count_nonfinite(self.model.w) \
                or count_nonfinite(self.model.V):
            raise TrainingError(
                f"{type(self).__name__[:-7].upper()} diverged in iteration {it}: "
                f"{bad} of {len(self.yhat)} train predictions are not finite "
                f"(rejected draws so far: {self.rejected_draws()}); "
                f"try a larger -regular or a smaller -init_stdev")

    # -- Learner interface ------------------------------------------------------------
    def step(self, it):
        seed_numba(int(self.rng.integers(0, 2**31 - 1)))
        self._before_sweep()
        self._sweep()
        self._refresh_train()
        self._check_finite(it)
        if self.task == "c":
            self._latent()
        self.e[:] = self.yhat - self.z
        self.eval_raw = {name: self._predict(d) for name, d in self.evals.items()}
        self.n_steps += 1
        self._after_eval()

    def train_predictions(self):
        return self._link(self.yhat)

    def rejected_draws(self):
        """Non-finite draws or updates rejected so far, by parameter kind (libFM's #nans)."""
        return {name: int(c) for name, c in zip(REJ_NAMES, self.rejected) if c}

    def log_values(self):
        out = {"alpha": float(self.alpha)}
        for g in range(self.G):
            out[f"wmu[{g}]"] = float(self.mu_w[g])
            out[f"wlambda[{g}]"] = float(self.lam_w[g])
            for f in range(self.k):
                out[f"vmu[{g},{f}]"] = float(self.mu_v[g, f])
                out[f"vlambda[{g},{f}]"] = float(self.lam_v[g, f])
        return out

"""Coordinate sweeps shared by ALS and MCMC (libFM behaviour §6.3), compiled with numba.

Both learners go over the transposed train data (CSC: for each feature, its rows) and
keep two per-row caches, exactly as libFM does:

    e[i]    = ŷ_i − t_i            (t = y for regression, the latent target z for probit)
    q[i, f] = Σ_j v_{j,f} x_{ij}   (all k factors)

The model is linear in each single parameter θ with h_i = ∂ŷ_i/∂θ (1 for w0, x_ij for w_j,
x_ij (q_{i,f} − x_ij v_{j,f}) for v_{j,f}). With noise precision α and prior N(μ, 1/λ):

    P = λ + α Σ_i h_i²,    m = [α Σ_i h_i (θ h_i − e_i) + λ μ] / P

ALS sets θ = m (α = 1, μ = 0: the exact minimiser of ½Σe² + ½λθ²); MCMC draws θ ~ N(m, 1/P).
After a change by Δ: e_i += h_i Δ, and for v also q_{i,f} += x_ij Δ. P = 0 (no data and no
prior) sets θ = 0, as libFM. A non-finite result is rejected (the old value is kept) and
counted in `rejected` (indices REJ_*).

Order of a sweep. libFM updates all w_j, then for f = 0..k−1 all v_{j,f}. We go feature by
feature instead: w0, then for each feature j: w_j, v_{j,0} … v_{j,k−1}. Each update is still
the exact conditional minimiser / Gibbs draw given the current values of everything else (the
hyperparameters are drawn before the sweep, as in libFM), so this is an equally valid
coordinate descent / Gibbs scan, and it touches the rows of column j k+1 times in a row.

Parallel and exact. The features are coloured once per data set so that two features of one
colour never occur in the same row (colour_features); a sweep visits the colour classes in
turn. Within a class the features touch disjoint rows of the caches, so their updates do not
interact: they run in parallel (numba prange, one lane of about equal work per thread), and
MCMC's normal draws come from a stream per feature (stream_normals, from a seed drawn per
sweep), so the model is the same, bit for bit, whatever the number of threads.

Caches. e and q are float32, side by side in one array C (n, k+1): column 0 is e, columns
1..k are q, so one gather brings a row's whole cache. The train rows are reordered inside the
learner (rows of one user together); all outputs are in the user's row order.

Features without any train entry are not visited (their values never change). A duplicated
(row, feature) entry makes ŷ quadratic in v_{j,f}; like libFM we treat each entry linearly,
so within such a column the caches are approximate; they are reset exactly after each
sweep anyway (`predict_rows` recomputes ŷ and q from the CSR rows).
"""

import math

import numba
import numpy as np
from numba import prange

from fmcli.config import njit
from fmcli.data import permute_rows, transpose
from fmcli.model import predict_rows
from fmcli.learners.base import Learner

# libFM's fixed hyperprior parameters
ALPHA0 = 1.0
GAMMA0 = 1.0
BETA0 = 1.0
MU0 = 0.0

# indices into the `rejected` counter array
REJ_ALPHA, REJ_W0, REJ_W, REJ_V, REJ_WMU, REJ_WLAMBDA, REJ_VMU, REJ_VLAMBDA = range(8)
REJ_NAMES = ("alpha", "w0", "w", "v", "w_mu", "w_lambda", "v_mu", "v_lambda")

PARALLEL_MIN_NNZ = 1 << 20   # smaller train sets are swept on one thread (same result)
CACHE_DTYPE = np.float32   # e and q: half the memory traffic of float64; reset exactly every sweep


@njit
def seed_numba(s):
    """Seed numba's own global random state (separate from numpy's); used by the sequential
    draws (α, hyperparameters, latent targets)."""
    np.random.seed(s)


# ---------------------------------------------------------------------------------------
# Counter-based random streams: the draws of feature j in a sweep come from stream j of the
# sweep's seed, whatever thread runs it and in whatever order, so parallel results do not
# depend on the number of threads. splitmix64 (Steele et al. 2014) of (seed, stream, counter),
# normals by Box-Muller.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit
def stream_normals(seed, stream, out):
    """Fill `out` with N(0, 1) draws from stream `stream` of `seed` (both non-negative ints)."""
    key = _mix64(np.uint64(seed) ^ _mix64(np.uint64(stream) * _GOLDEN + _GOLDEN))
    c = np.uint64(0)
    for t in range(0, out.shape[0], 2):
        c += np.uint64(2)
        # 53-bit uniforms; u1 in (0, 1] so that log(u1) is finite
        u1 = np.float64((_mix64(key + c * _GOLDEN) >> np.uint64(11)) + np.uint64(1)) * 2.0 ** -53
        u2 = np.float64(_mix64(key + (c + np.uint64(1)) * _GOLDEN) >> np.uint64(11)) * 2.0 ** -53
        r = math.sqrt(-2.0 * math.log(u1))
        out[t] = r * math.cos(2.0 * math.pi * u2)
        if t + 1 < out.shape[0]:
            out[t + 1] = r * math.sin(2.0 * math.pi * u2)


@njit
def _solve(num, P, z):
    """θ = num/P + z/√P: the ALS minimiser (z = 0) or a draw from N(num/P, 1/P) (z ~ N(0, 1));
    0 when P = 0."""
    if P == 0.0:
        return 0.0
    return num / P + z / math.sqrt(P)


@njit
def _update_w0(C, w0a, lam0, alpha, z, rej):
    """The global bias w0a[0] (prior N(0, 1/lam0)); h_i = 1."""
    n = C.shape[0]
    old = w0a[0]
    s1 = 0.0
    for i in range(n):
        s1 += old - C[i, 0]
    new = _solve(alpha * s1, lam0 + alpha * n, z)
    if not math.isfinite(new):
        rej[REJ_W0] += 1
        return
    d = new - old
    if d != 0.0:
        for i in range(n):
            C[i, 0] += d
    w0a[0] = new


@njit
def _column_plain(j, cptr, crow, cval, C, w, V, lam_w, mu_w, lam_v, mu_v, alpha, use_w, z, rej):
    """w_j, then v_{j,0..k-1}, reading and updating the caches C entry by entry (works with
    duplicated (row, feature) entries: each later entry sees the earlier ones' updates)."""
    k = V.shape[1]
    p0, p1 = cptr[j], cptr[j + 1]
    if use_w:
        old = w[j]
        s1 = 0.0
        s2 = 0.0
        for p in range(p0, p1):
            x = np.float64(cval[p])
            s2 += x * x
            s1 += x * (old * x - C[crow[p], 0])
        new = _solve(alpha * s1 + lam_w * mu_w, lam_w + alpha * s2, z[0])
        if math.isfinite(new):
            d = new - old
            for p in range(p0, p1):
                C[crow[p], 0] += cval[p] * d
            w[j] = new
        else:
            rej[REJ_W] += 1
    for f in range(k):
        old = V[j, f]
        s1 = 0.0
        s2 = 0.0
        for p in range(p0, p1):
            i = crow[p]
            x = np.float64(cval[p])
            h = x * (C[i, 1 + f] - x * old)
            s2 += h * h
            s1 += h * (old * h - C[i, 0])
        new = _solve(alpha * s1 + lam_v[f] * mu_v[f], lam_v[f] + alpha * s2, z[1 + f])
        if math.isfinite(new):
            d = new - old
            for p in range(p0, p1):
                i = crow[p]
                x = np.float64(cval[p])
                C[i, 0] += x * (C[i, 1 + f] - x * old) * d
                C[i, 1 + f] += x * d
            V[j, f] = new
        else:
            rej[REJ_V] += 1


@njit
def _column_local(j, cptr, crow, cval, C, w, V, lam_w, mu_w, lam_v, mu_v, alpha, use_w, z, rej,
                  lx, B):
    """`_column_plain` for columns without duplicated rows: the rows' caches are gathered into
    the contiguous buffers B (k+1, m) and lx (m,), updated there, and scattered back: two
    random passes over C per column instead of 2(k+1). Same arithmetic. (Fusing each update
    pass with the next coordinate's statistics pass was tried: slower, see bench/notes.md.)"""
    k = V.shape[1]
    p0 = cptr[j]
    m = cptr[j + 1] - p0
    for t in range(m):
        i = crow[p0 + t]
        lx[t] = cval[p0 + t]
        for c in range(k + 1):
            B[c, t] = C[i, c]
    if use_w:
        old = w[j]
        s1 = 0.0
        s2 = 0.0
        for t in range(m):
            x = np.float64(lx[t])
            s2 += x * x
            s1 += x * (old * x - B[0, t])
        new = _solve(alpha * s1 + lam_w * mu_w, lam_w + alpha * s2, z[0])
        if math.isfinite(new):
            d = new - old
            for t in range(m):
                B[0, t] += lx[t] * d
            w[j] = new
        else:
            rej[REJ_W] += 1
    for f in range(k):
        old = V[j, f]
        s1 = 0.0
        s2 = 0.0
        for t in range(m):
            x = np.float64(lx[t])
            h = x * (B[1 + f, t] - x * old)
            s2 += h * h
            s1 += h * (old * h - B[0, t])
        new = _solve(alpha * s1 + lam_v[f] * mu_v[f], lam_v[f] + alpha * s2, z[1 + f])
        if math.isfinite(new):
            d = new - old
            for t in range(m):
                x = np.float64(lx[t])
                B[0, t] += x * (B[1 + f, t] - x * old) * d
                B[1 + f, t] += x * d
            V[j, f] = new
        else:
            rej[REJ_V] += 1
    for t in range(m):
        i = crow[p0 + t]
        for c in range(k + 1):
            C[i, c] = B[c, t]


@njit(parallel=True)
def sweep(cptr, crow, cval, order, lane_ptr, n_lanes, groups, C, w0a, w, V, use_w0, use_w,
          alpha, lam0, lam_w, mu_w, lam_v, mu_v, sample, seed, local, lx, B, Z, rej):
    """One sweep: w0, then the colour classes in turn. The features of one class never share a
    row, so they touch disjoint rows of C and are updated in parallel: class c is cut into
    n_lanes lanes of about equal work, lane l = order[lane_ptr[c*n_lanes + l] : ... + 1],
    one lane per thread. With each feature's draws from its own stream, the result is the
    same for any number of lanes and threads. lx, B, Z, rej: one slice per thread (scratch
    buffers, normals, rejection counts)."""
    if use_w0:
        z0 = 0.0
        if sample:
            stream_normals(seed, w.shape[0], Z[0, :1])
            z0 = Z[0, 0]
        _update_w0(C, w0a, lam0, alpha, z0, rej[0])
    n_classes = (lane_ptr.shape[0] - 1) // n_lanes
    for c in range(n_classes):
        for lane in prange(n_lanes):
            tid = numba.get_thread_id()
            for t in range(lane_ptr[c * n_lanes + lane], lane_ptr[c * n_lanes + lane + 1]):
                j = order[t]
                g = groups[j]
                if sample:
                    stream_normals(seed, j, Z[tid])
                if local:
                    _column_local(j, cptr, crow, cval, C, w, V, lam_w[g], mu_w[g], lam_v[g],
                                  mu_v[g], alpha, use_w, Z[tid], rej[tid], lx[tid], B[tid])
                else:
                    _column_plain(j, cptr, crow, cval, C, w, V, lam_w[g], mu_w[g], lam_v[g],
                                  mu_v[g], alpha, use_w, Z[tid], rej[tid])


def lanes(order, class_ptr, work, n_lanes):
    """Cut each class order[class_ptr[c]:class_ptr[c+1]] into n_lanes contiguous pieces of about
    equal total `work` (per feature); returns lane_ptr (n_classes * n_lanes + 1,)."""
    cum = np.concatenate([[0.0], np.cumsum(work[order], dtype=np.float64)])
    ptr = [0]
    for c in range(len(class_ptr) - 1):
        a, b = class_ptr[c], class_ptr[c + 1]
        cuts = cum[a] + (cum[b] - cum[a]) * np.arange(1, n_lanes) / n_lanes
        ptr.extend(np.clip(np.searchsorted(cum, cuts), a, b).tolist() + [b])
    return np.array(ptr, np.int64)


@njit
def colour_features(cptr, crow, indptr, indices, cols):
    """Greedy colouring of the co-occurrence graph: features sharing a row get different
    colours. Visits `cols` in the given order (Welsh-Powell: longest columns first), giving
    each the smallest colour none of its co-occurring features has. Returns colour per
    feature (-1 for features not in `cols`). Cost Σ_rows nnz_i², without building the graph."""
    n = cptr.shape[0] - 1
    colour = np.full(n, -1, np.int64)
    seen = np.full(n + 1, -1, np.int64)     # seen[c] == j: colour c is taken by a neighbour of j
    for t in range(cols.shape[0]):
        j = cols[t]
        for p in range(cptr[j], cptr[j + 1]):
            i = crow[p]
            for r in range(indptr[i], indptr[i + 1]):
                c = colour[indices[r]]
                if c >= 0:
                    seen[c] = j
        c = 0
        while seen[c] == j:
            c += 1
        colour[j] = c
    return colour


@njit(parallel=True)
def set_residuals(C, yhat, z):
    """e_i = ŷ_i − t_i into the cache's column 0."""
    for i in prange(C.shape[0]):
        C[i, 0] = yhat[i] - z[i]


@njit
def draw_alpha(e, alpha_old, rejected):
    """Noise precision α ~ Gamma((α0 + N)/2, rate (γ0 + Σ e²)/2)."""
    ss = 0.0
    for i in range(e.shape[0]):
        x = np.float64(e[i])
        ss += x * x
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
def count_nonfinite(a):
    c = 0
    for x in a.ravel():
        if not math.isfinite(x):
            c += 1
    return c


# ---------------------------------------------------------------------------------------
# The Python side shared by ALSLearner and MCMCLearner.

class CoordinateLearner(Learner):
    """Shared state of ALS and MCMC: CSC train data, the caches, hyperparameters.

    Set-up, once per data set: the features with train entries are coloured (colour_features);
    the train rows are reordered internally so that the rows of each feature of the largest
    colour class (typically the users) are contiguous, which makes the gathers of the sweep
    nearly sequential; the CSC is built from the reordered rows. `yhat`, `z`, `y`, `e` and `q`
    are offered in the user's row order; predictions always are.

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

        self._setup_order(train, n)
        self.active = np.diff(self.cptr) > 0
        self.cols = np.flatnonzero(self.active).astype(np.int64)
        self.n_g = np.bincount(self.groups[self.cols], minlength=self.G)
        # duplicated (row, feature) entries are adjacent in a CSC column
        starts = np.zeros(len(self.crow), bool)
        starts[self.cptr[:-1][self.active]] = True
        self.has_duplicates = bool(np.any((self.crow[1:] == self.crow[:-1]) & ~starts[1:]))
        self.longest = int(np.diff(self.cptr).max()) if len(self.cols) else 0
        self.work = np.diff(self.cptr) + 8.0     # cost of a feature: its entries + a constant
        self._scratch = None

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
        self._y = y[self.perm]
        self._z = self._y.copy()                # latent targets (probit); = y for regression
        self.evals = evals
        self._yhat = np.empty(train.n_rows)
        # e (column 0) and q (columns 1..k) of a row side by side: one gather per row
        self.C = np.zeros((train.n_rows, self.k + 1), CACHE_DTYPE)
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
        set_residuals(self.C, self._yhat, self._z)
        self.eval_raw = {name: self._predict(d) for name, d in evals.items()}

    def _setup_order(self, train, n):
        """Colour classes (self.order, self.class_ptr), the internal row order (self.perm:
        internal row -> user row) and the reordered CSR and CSC."""
        indptr, indices, data = train.csr()
        cptr, crow, _ = transpose(indptr, indices, data, n)
        counts = np.diff(cptr)
        cols = np.flatnonzero(counts).astype(np.int64)
        cols = cols[np.argsort(-counts[cols], kind="stable")]
        colour = colour_features(cptr, crow, indptr, indices, cols)
        self.perm = np.arange(train.n_rows, dtype=np.int64)
        if len(cols):
            # rows sorted by their feature in the colour class with the most features
            big = np.bincount(colour[cols]).argmax()
            key = np.full(train.n_rows, n, np.int64)
            in_big = colour[indices] == big
            key[np.repeat(np.arange(train.n_rows), np.diff(indptr))[in_big]] = indices[in_big]
            self.perm = np.argsort(key, kind="stable")
        del cptr, crow
        self.indptr, self.indices, self.data = permute_rows(indptr, indices, data, self.perm)
        self.cptr, self.crow, self.cval = transpose(self.indptr, self.indices, self.data, n)
        # within a class, features by their first row: the gathers walk the rows forwards
        first = np.where(counts > 0, self.crow[np.minimum(self.cptr[:-1], len(self.crow) - 1)], 0)
        self.order = cols[np.lexsort((first[cols], colour[cols]))]
        self.class_ptr = np.searchsorted(colour[self.order], np.arange(colour.max() + 2)).astype(np.int64) \
            if len(cols) else np.zeros(1, np.int64)

    # -- the caches and targets in the user's row order (inspection and tests) ------
    def _user_order(self, a):
        out = np.empty_like(a)
        out[self.perm] = a
        return out

    @property
    def yhat(self):
        return self._user_order(self._yhat)

    @property
    def y(self):
        return self._user_order(self._y)

    @property
    def z(self):
        return self._user_order(self._z)

    @property
    def e(self):
        return self._user_order(self.C[:, 0])

    @property
    def q(self):
        return self._user_order(self.C[:, 1:])

    # -- hooks ------------------------------------------------------------------------
    def _init_hyper(self):
        pass

    def _before_sweep(self):
        pass

    def _latent(self):
        """Classification: new latent targets self._z from self._yhat."""
        raise NotImplementedError

    def _after_eval(self):
        pass

    # -- helpers ----------------------------------------------------------------------
    def _predict(self, d):
        out = np.empty(d.n_rows)
        predict_rows(d.indptr, d.indices, d.data, float(self.w0a[0]), self.model.w, self.model.V,
                     self.use_w, out, np.empty((0, self.k + 1), CACHE_DTYPE))
        return out

    def _sweep(self, seed=0, order=None, class_ptr=None):
        """The coordinate sweep alone (caches kept up to date incrementally); the normal draws
        of MCMC come from the streams of `seed`. order/class_ptr: the features to visit by
        class (default: all, by colour class)."""
        # below PARALLEL_MIN_NNZ a sweep takes milliseconds, and waiting for a second thread
        # (on a shared machine, often descheduled) costs more than it saves
        threads = numba.get_num_threads() if len(self.crow) >= PARALLEL_MIN_NNZ else 1
        if self._scratch is None or self._scratch[0].shape[0] != threads:
            L = 0 if self.has_duplicates else self.longest
            self._scratch = (np.empty((threads, L), CACHE_DTYPE),
                             np.empty((threads, self.k + 1, L), CACHE_DTYPE),
                             np.zeros((threads, self.k + 1)),
                             np.zeros((threads, len(REJ_NAMES)), np.int64),
                             lanes(self.order, self.class_ptr, self.work, threads))
        lx, B, Z, rej, lane_ptr = self._scratch
        if order is not None:
            lane_ptr = lanes(order, class_ptr, self.work, threads)
        rej[:] = 0
        m = self.model
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            sweep(self.cptr, self.crow, self.cval, self.order if order is None else order,
                  lane_ptr, threads, self.groups, self.C, self.w0a, m.w, m.V, self.use_w0, self.use_w,
                  self.alpha, self.lam0, self.lam_w, self.mu_w, self.lam_v, self.mu_v,
                  self.sample, seed, not self.has_duplicates, lx, B, Z, rej)
        finally:
            numba.set_num_threads(before)
        self.rejected += rej.sum(axis=0)
        m.w0 = float(self.w0a[0])

    def _refresh_train(self):
        """ŷ and q of all train rows from scratch, row by row from the CSR (resets the caches
        exactly)."""
        predict_rows(self.indptr, self.indices, self.data, float(self.w0a[0]), self.model.w,
                     self.model.V, self.use_w, self._yhat, self.C)

    def _link(self, raw):
        m = self.model
        if self.task == "r":
            return np.clip(raw, m.y_min, m.y_max)
        from scipy.special import ndtr

        return ndtr(raw)

    def _check_finite(self, it):
        from fmcli.errors import TrainingError

        bad = count_nonfinite(self._yhat)
        if bad or not math.isfinite(self.w0a[0]) or count_nonfinite(self.model.w) \
                or count_nonfinite(self.model.V):
            raise TrainingError(
                f"{type(self).__name__[:-7].upper()} diverged in iteration {it}: "
                f"{bad} of {len(self._yhat)} train predictions are not finite "
                f"(rejected draws so far: {self.rejected_draws()}); "
                f"try a larger -regular or a smaller -init_stdev")

    # -- Learner interface ------------------------------------------------------------
    def step(self, it):
        seed_numba(int(self.rng.integers(0, 2**31 - 1)))
        self._before_sweep()
        self._sweep(int(self.rng.integers(0, 2**63 - 1)))
        self._refresh_train()
        self._check_finite(it)
        if self.task == "c":
            self._latent()
        set_residuals(self.C, self._yhat, self._z)
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

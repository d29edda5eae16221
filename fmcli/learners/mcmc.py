"""Bayesian FM by Gibbs sampling (`-method mcmc`, the default), libFM behaviour §6.3, §6.5-6.6.

Each iteration draws, in order: the noise precision α (regression), the per-group
hyperparameters (λ then μ of w for every group; of every factor of V for every group), then
w0 and every w_j, v_{j,f} from their conditional posteriors (kernels shared with ALS in
sweep.py, driven by coord.py). Priors as libFM: w0 ~ N(0, 1/r0) with r0 = opts.regular[0] (0 = flat); w_j ~
N(μw_g, 1/λw_g), v_{j,f} ~ N(μv_{g,f}, 1/λv_{g,f}); hyperpriors α0 = γ0 = β0 = 1, μ0 = 0:

    α    ~ Gamma((α0 + N)/2, rate (γ0 + Σ e²)/2)
    λ_g  ~ Gamma((α0 + n_g + 1)/2, rate [γ0 + β0 (μ_g − μ0)² + Σ_{j∈g} (θ_j − μ_g)²]/2)
    μ_g  ~ N((Σ_{j∈g} θ_j + β0 μ0)/(n_g + β0), 1/((n_g + β0) λ_g))

Classification (probit): after each sweep the latent targets are drawn,
z_i ~ N(ŷ_i, 1) truncated to z ≥ 0 (y = +1) or z < 0 (y = −1) (draw_latent); the first sweep
uses z = y.

Predictions. `eval_predictions` averages the link-applied predictions of the samples of
iterations burn_in, burn_in+1, ... (opts.burn_in, default 0 = libFM: every sample counts,
the first one included): clip(mean_t clip(ŷ_t)) for regression, mean_t Φ(ŷ_t) for
classification. While no sample is averaged yet (iterations < burn_in) it returns the current
sample's prediction.

Saved model. `final_model()` returns an FMModel whose `samples` hold every keep_samples-th
averaged sample (the keep_samples-th, 2·keep_samples-th, ... one; if fewer than keep_samples
were averaged, the last one), w and V stored as float32: about 4·n·(k+1) bytes per sample
(ml-100k, k = 8, 200 samples: 19 MB; 1M synthetic set, 121k features: 4.4 MB per sample);
with orders 3 and up (fmcli.learners.anova_sweep) each sample also keeps its H as float32
(FMModel.samples_H, 4·n·Σk_t bytes more).
With keep_samples = 1, final_model().predict(...) equals eval_predictions(...) up to the
float32 rounding of the parameters (~1e-6). With opts.save_samples off (the CLI's choice when
no model file will be written) no sample is kept and final_model() is the last state alone.

Differences from libFM, on purpose:
- Features without train entries stay at w = 0, V = 0 (libFM draws them from the group prior
  every sweep, which only adds noise to test predictions). They are not counted in the group
  sizes n_g either (libFM counts them): they carry no information about the group's prior.
  On a warm start they keep their loaded values.
- Classification fixes α = 1 (standard probit: z ~ N(ŷ, 1)); libFM also draws α for
  classification, which makes the posterior over-confident.
- opts.burn_in (libFM has none) and the per-feature sweep order (see coord.py).
- The sampler is seeded per iteration from the learner's numpy Generator, so a run is
  reproducible and independent of other learners in the same process.
"""

import math

import numpy as np
from numba import prange

from fmcli.config import njit
from fmcli.learners.coord import CoordinateLearner
from fmcli.learners.sweep import (REJ_ALPHA, REJ_VLAMBDA, REJ_VMU, REJ_WLAMBDA, REJ_WMU, finite, set_residuals,
                                 store_residual)
from fmcli.model import FMModel
from fmcli.learners.streams import chunk_seed, counter_uniform, stream_key
from fmcli.ordinal import (BLOCK_ROWS, CHUNK_ROWS, INV_SQRT_2PI, interval_log_prob, log_product, normal_quantile,
                           phi_cdf_array)

# libFM's fixed hyperprior parameters
ALPHA0 = 1.0
GAMMA0 = 1.0
BETA0 = 1.0
MU0 = 0.0


@njit
def draw_alpha(e, alpha_old, rejected, weights):
    """Noise precision α ~ Gamma((α0 + N)/2, rate (γ0 + Σ e²)/2); with row weights u_i
    (row i's precision u_i α; empty: all 1) N is Σ u_i and Σ e² is Σ u_i e_i², so a row of weight
    0 counts as absent and one of weight 2 as two copies."""
    ss = 0.0
    n = 0.0
    if weights.shape[0]:
        for i in range(e.shape[0]):
            x = np.float64(e[i])
            ss += weights[i] * (x * x)
            n += weights[i]
    else:
        for i in range(e.shape[0]):
            x = np.float64(e[i])
            ss += x * x
        n = e.shape[0]
    a = _gamma_or_nan((ALPHA0 + n) / 2.0, GAMMA0 + ss)
    if not (finite(a) and a > 0.0):
        rejected[REJ_ALPHA] += 1
        return alpha_old
    return a


@njit
def _gamma_or_nan(shape, twice_rate):
    """A draw of Gamma(shape, rate twice_rate/2), NaN (a rejected draw) when the rate is not a
    positive finite number: residuals or parameters of a diverging sampler overflow Σ²,
    and numba's gamma raises on a zero scale."""
    if not (finite(twice_rate) and twice_rate > 0.0):
        return np.nan
    return np.random.gamma(shape, 2.0 / twice_rate)


@njit(inline="always")
def _draw_pair(n, s, ss, mu_old, lam_old, rejected, rej_mu, rej_lam):
    """(μ, λ): λ ~ Gamma((α0 + n + 1)/2, rate [γ0 + β0(μ_old − μ0)² + Σ(θ − μ_old)²]/2), then
    μ ~ N((Σθ + β0 μ0)/(n + β0), 1/((n + β0) λ)). s = Σθ, ss = Σ(θ − μ_old)²."""
    lam = _gamma_or_nan((ALPHA0 + n + 1.0) / 2.0, GAMMA0 + BETA0 * (mu_old - MU0) ** 2 + ss)
    if not (finite(lam) and lam > 0.0):
        rejected[rej_lam] += 1
        lam = lam_old
    prec = (n + BETA0) * lam
    # prec = 0 (λ = 0 kept from a rejected draw) would divide by zero: μ rejected too
    mu = (s + BETA0 * MU0) / (n + BETA0) + np.random.standard_normal() / math.sqrt(prec) \
        if prec > 0.0 and finite(prec) else np.nan
    if not finite(mu):
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
def truncated_normal_lower(a):
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
            z[i] = yhat[i] + truncated_normal_lower(-yhat[i])
        else:
            z[i] = yhat[i] - truncated_normal_lower(yhat[i])


@njit
def truncated_normal(a, b):
    """One draw of N(0, 1) truncated to [a, b] (a < b; either may be infinite): mirrored so
    that b > 0; an interval of width <= 1: uniform proposal accepted with
    exp((m² − x²)/2), m the interval's point nearest 0 (acceptance >= exp(−(b² − m²)/2));
    a > 0: the one-sided tail draw (truncated_normal_lower) until it is <= b (width > 1:
    acceptance >= 1 − e^{−a} or >= 0.68 near 0); otherwise plain normals until inside."""
    if b <= 0.0:
        return -truncated_normal(-b, -a)
    if b - a <= 1.0:
        m = a if a > 0.0 else 0.0
        while True:
            x = a + (b - a) * np.random.random()
            if np.random.random() <= math.exp(0.5 * (m * m - x * x)):
                return x
    if a > 0.0:
        while True:
            x = truncated_normal_lower(a)
            if x <= b:
                return x
    while True:
        x = np.random.standard_normal()
        if a <= x <= b:
            return x


FAST_TAIL = 30.0       # the fast path: the interval's nearer end within 30 of ŷ
CURVATURE_ROWS = 1 << 16   # rows enough for the curvature of the cutpoints' log-likelihood


@njit(inline="always")
def _mirrored(lo, hi):
    """(flip, lo, hi): the interval (lo, hi] mirrored so that lo + hi <= 0 (its mass nearer the
    lower tail, where Φ and its inverse have full relative precision); flip says whether it was."""
    # (min(lo, −hi), min(hi, −lo)) is (−hi, −lo) when flipped, (lo, hi) otherwise: no branch
    return lo + hi > 0.0, min(lo, -hi), min(hi, -lo)


@njit(inline="always")
def _interval_args(lo, hi):
    """The two arguments of Φ that _interval_mass needs for (lo, hi]: the lower end of the
    mirrored interval and −|its upper end| (both <= 0)."""
    _, lo, hi = _mirrored(lo, hi)
    return lo, -abs(hi)


@njit
def _interval_mass(lo, hi, f_lo, g, u):
    """(fast, P, q) for the interval (lo, hi] of N(0, 1) (lo < hi, either may be infinite), given
    Φ of _interval_args(lo, hi) (f_lo, g): P = Φ(hi) − Φ(lo), and q the signed argument of the
    u-quantile of N(0, 1) truncated to it (inversion, x = Φ⁻¹(Φ(lo) + u P), finished by
    _interval_point). Taken on the mirrored interval (_mirrored); where its upper end is > 0
    the tail Φ(−hi) is used, and the quantile is taken from the nearer end:
    q = −(Φ(−hi) + (1 − u) P) < 0 (x = −Φ⁻¹(−q)) when Φ(lo) + u P > 1/2. fast is False (P, q
    unset) when the interval lies wholly beyond −FAST_TAIL (Φ near underflow): the caller
    takes the exact log-space path (interval_log_prob, truncated_normal)."""
    if not _is_fast(lo, hi):
        return False, 0.0, 0.0
    _, lo, hi = _mirrored(lo, hi)
    # both cases computed, one kept by factors of 1 and 0 (x·1 + y·0 is x, for finite y): the
    # case varies from row to row, and a branch on it is mispredicted half the time
    a = 1.0 if hi > 0.0 else 0.0
    P = a * (1.0 - (g + f_lo)) + (1.0 - a) * (g - f_lo)
    p = f_lo + u * P
    b = a if p > 0.5 else 0.0
    return True, P, b * -(g + (1.0 - u) * P) + (1.0 - b) * p


@njit(inline="always")
def _is_fast(lo, hi):
    """Whether _interval_mass takes the fast path on (lo, hi]."""
    _, lo, hi = _mirrored(lo, hi)
    return hi >= -FAST_TAIL


@njit(inline="always")
def _interval_point(lo, hi, q):
    """The draw x in (lo, hi] from _interval_mass's quantile argument q (clamped to the
    interval: the inversion's last bit may fall outside it)."""
    flip, lo, hi = _mirrored(lo, hi)
    # signs as factors of ±1 (exact), not branches: each varies from row to row
    x = (1.0 if q >= 0.0 else -1.0) * normal_quantile(abs(q))
    return (-1.0 if flip else 1.0) * min(max(x, lo), hi)


@njit
def _row_curvature(lo, hi, P, acc, m, u):
    """Add row's terms of −∂² log P, times its weight u, to acc[m, 0:3]: (lower end, upper end,
    cross), P = Φ(hi) − Φ(lo)."""
    c = math.exp(-0.5 * lo * lo) * INV_SQRT_2PI / P if lo > -math.inf else 0.0
    a = math.exp(-0.5 * hi * hi) * INV_SQRT_2PI / P if hi < math.inf else 0.0
    if lo > -math.inf:
        acc[m, 0] += u * (c * c - lo * c)
    if hi < math.inf:
        acc[m, 1] += u * (a * a + hi * a)
    acc[m, 2] -= u * (a * c)


@njit
def _fill_args(yhat, cls, bnd, b0, b1, args, first, width):
    """The Φ arguments (_interval_args) of rows b0..b1's class intervals under the bounds bnd, row
    i's two at args[width (i − b0) + first] and the next."""
    for i in range(b0, b1):
        t = yhat[i]
        m = cls[i]
        r = width * (i - b0) + first
        args[r], args[r + 1] = _interval_args(bnd[m] - t, bnd[m + 1] - t)


@njit
def _pass_chunk(c, yhat, cls, bnd, bnd2, z, z2, key, pcurv, wt, stride):
    """ordinal_pass on chunk c: its rows' z, z2 and curvature terms (pcurv[c]) written, its sum
    returned (a function of its own: the parallel loop's body is one call, which numba lowers in
    a fraction of the time it takes for the whole body)."""
    n = yhat.shape[0]
    weighted = wt.shape[0] > 0
    want = pcurv.shape[0] > 0
    seeded = False
    s = 0.0
    ratio = 1.0
    sampled = (c * CHUNK_ROWS + stride - 1) // stride * stride     # the next row of the curvature's
    args = np.empty(4 * BLOCK_ROWS)
    phis = np.empty(4 * BLOCK_ROWS)
    for b0 in range(c * CHUNK_ROWS, min(n, (c + 1) * CHUNK_ROWS), BLOCK_ROWS):
        b1 = min(n, (c + 1) * CHUNK_ROWS, b0 + BLOCK_ROWS)
        _fill_args(yhat, cls, bnd, b0, b1, args, 0, 4)
        _fill_args(yhat, cls, bnd2, b0, b1, args, 2, 4)
        phi_cdf_array(args[:4 * (b1 - b0)], phis)
        for i in range(b0, b1):
            t = yhat[i]
            m = cls[i]
            r = 4 * (i - b0)
            u = counter_uniform(key, i)
            lo, hi = bnd[m] - t, bnd[m + 1] - t
            lo2, hi2 = bnd2[m] - t, bnd2[m + 1] - t
            fast, P, z[i] = _interval_mass(lo, hi, phis[r], phis[r + 1], u)
            fast2, P2, z2[i] = _interval_mass(lo2, hi2, phis[r + 2], phis[r + 3], u)
            w = wt[i] if weighted else 1.0
            if want and i == sampled:
                sampled += stride
                if fast:
                    _row_curvature(lo, hi, P, pcurv[c], m, w * stride)
            if fast and fast2:
                if weighted:
                    s += w * math.log(P2 / P)
                else:
                    s, ratio = log_product(s, ratio, P2 / P)      # one log for many rows
                continue
            if not seeded:
                np.random.seed(chunk_seed(key, c))
                seeded = True
            if fast:
                s -= w * math.log(P)
            else:
                s -= w * interval_log_prob(lo, hi)
                z[i] = t + truncated_normal(lo, hi)
            if fast2:
                s += w * math.log(P2)
            else:
                s += w * interval_log_prob(lo2, hi2)
                z2[i] = t + truncated_normal(lo2, hi2)
    return s + math.log(ratio)


@njit(parallel=True)
def ordinal_pass(yhat, cls, bnd, bnd2, z, z2, seed, curv, wt):
    """One pass over the rows for the cutpoints' Metropolis–Hastings step: Σ_i u_i log(P2_i / P_i)
    (u_i: the row's weight wt[i], 1 when wt is empty; -weights),
    P_i = P(cls_i | ŷ_i) under the bounds bnd (`ordinal.bounds`) and P2_i under the proposed
    bounds bnd2, and the latent targets of both outcomes half-drawn: z_i (z2_i)
    receives the quantile argument of z_i ~ N(ŷ_i, 1) truncated to class cls_i's interval
    under bnd (bnd2), both from the same uniform u_i (_interval_mass); finish_latent completes
    the outcome kept, so only one quantile a row is taken. u_i is number i of seed's stream,
    so the draws do not depend on the thread count, and they are independent of the MH
    decision (which uses only ŷ and the bounds): the z of the outcome kept is a draw from its
    conditional. Φ is taken BLOCK_ROWS rows at a time (ordinal.phi_cdf_array, vectorised), and
    the unweighted rows' ratios are multiplied, one log for many rows. Rows whose interval lies
    beyond FAST_TAIL take the exact log-space path (interval_log_prob, truncated_normal from
    numba's generator seeded per chunk of ordinal.CHUNK_ROWS rows) and receive their z itself.
    Summed per chunk, the chunks added in order: the same bits on any thread count.
    With curv of shape (C, 3) (C classes; shape (0, 3): none) it also receives, per class, the
    weighted sums of −∂² log P over its rows at bnd (fast-path rows): lower end, upper end,
    cross term; over 2 CURVATURE_ROWS rows or more, estimated from every s-th row
    (s = rows // CURVATURE_ROWS) times s (the proposal's shape needs no more: the estimate's
    relative error is about 1/√CURVATURE_ROWS). A row of weight 0 still gets its z (finite:
    its residual enters the sweep's sums, times 0)."""
    n = yhat.shape[0]
    C = bnd.shape[0] - 1
    n_chunks = max(1, (n + CHUNK_ROWS - 1) // CHUNK_ROWS)
    want = curv.shape[0] > 0
    stride = max(1, n // CURVATURE_ROWS)
    part = np.zeros(n_chunks)
    pcurv = np.zeros((n_chunks if want else 0, C, 3))
    key = stream_key(seed)
    for c in prange(n_chunks):
        # (c cast: numba types a prange index int64, and uint64 in the parallel lowering,
        # which would compile the callee twice)
        part[c] = _pass_chunk(np.int64(c), yhat, cls, bnd, bnd2, z, z2, key, pcurv, wt, stride)
    total = 0.0
    for c in range(n_chunks):
        total += part[c]
        if want:
            curv += pcurv[c]
    return total


@njit(parallel=True)
def finish_latent(yhat, cls, bnd, z, cache):
    """Finish ordinal_pass's latent targets for the bounds bnd in place: each fast-path row's
    quantile argument becomes its z (the exact-path rows hold theirs already); and each row's
    residual ŷ − z into the cache (sweep.store_residual: no pass of its own)."""
    for i in prange(yhat.shape[0]):
        t = yhat[i]
        lo, hi = bnd[cls[i]] - t, bnd[cls[i] + 1] - t
        if _is_fast(lo, hi):
            z[i] = t + _interval_point(lo, hi, z[i])
        store_residual(cache, i, t, z[i])


class OrdinalSampler:
    """The cutpoints of the ordered probit (fmcli.ordinal) by Metropolis–Hastings on α given ŷ,
    the latent z integrated out (the target is Π_i P(c_i | ŷ_i, γ(α)) times the prior
    α_m ~ N(α_m at the start, ALPHA_PRIOR_SD²), which pins the location ŷ and γ share); then
    z | γ, ŷ from its truncated normal. Together a blocked Gibbs draw of (γ, z) given the FM.

    One proposal a sweep, a random walk α' = α + s L⁻ᵀ ε (ε ~ N(0, I), s = 2.38/√d, d = C − 1):
    L Lᵀ is the curvature of the log target at α (Laplace: −∂² of the log-likelihood through
    γ(α), Jᵀ H_γ J, plus the prior's 1/ALPHA_PRIOR_SD²), so the proposal has the shape of the
    posterior and the scale that is optimal for a Gaussian target (acceptance near 0.3). One
    pass (ordinal_pass) gives the log-likelihood at α and at α' and draws z for both outcomes;
    the outcome's z is kept (the other buffer swapped out: no copy, no allocation per sweep).

    Validity: L is measured (in the same pass, at the current state) only during the first
    `adapt` sweeps (ADAPT_SWEEPS or the burn-in, the larger), each measurement used from the
    next sweep on; before the first one the walk is isotropic with s = 1/√rows. After the
    adaptation window L and s are fixed, so each sweep's step is a plain random-walk
    Metropolis–Hastings step with a symmetric proposal fixed in advance: it leaves the
    conditional posterior of α given ŷ exactly invariant, and the chain is a valid Gibbs
    sampler from then on (the adaptation sweeps are, like the first sweeps of any run, part
    of its transient; a burn-in covers them). Draws come from the learner's seeded generator
    (ε, the MH uniform, the pass's seed) and counter-based streams: the same on any thread
    count."""

    ADAPT_SWEEPS = 16
    ALPHA_PRIOR_SD = 10.0

    def __init__(self, classes, cls, rng, adapt=0, gamma=None, weights=None):
        from fmcli.ordinal import alphas

        self.classes = np.asarray(classes, np.float64)
        self.cls = cls
        self.weights = np.empty(0) if weights is None else weights     # -weights' (empty: all 1)
        self.rng = rng
        self.adapt = max(self.ADAPT_SWEEPS, int(adapt))
        # start: the given cutpoints (a warm start), or halfway between the class values (the
        # first sweep fits z = y); the prior is centred on the start
        self.gamma = (self.classes[1:] + self.classes[:-1]) / 2.0 if gamma is None else gamma
        self.alpha = alphas(self.gamma)
        self.prior_mean = self.alpha.copy()
        d = len(self.alpha)
        # s L⁻ᵀ (before the first measurement: the posterior's width for that many rows)
        self.step = np.eye(d) / math.sqrt(max(float(self.weights.sum()) if len(self.weights) else len(cls), 1.0))
        self.scale = 2.38 / math.sqrt(d)
        self.z_spare = np.empty(len(cls))
        self.curv = np.zeros((len(self.classes), 3))
        self.no_curv = np.zeros((0, 3))
        self.n_draws = 0
        self.accepted = 0
        self.proposed = 0

    def _log_prior(self, alpha):
        d = (alpha - self.prior_mean) / self.ALPHA_PRIOR_SD
        return -0.5 * float(d @ d)

    def proposal_factor(self, curv, alpha):
        """s L⁻ᵀ from the per-class curvature sums of ordinal_pass at α (None if not positive
        definite)."""
        d = len(alpha)
        H = np.zeros((d, d))          # −∂² log-likelihood in γ: tridiagonal
        for j in range(d):
            H[j, j] = curv[j, 1] + curv[j + 1, 0]
            if j + 1 < d:
                H[j, j + 1] = H[j + 1, j] = curv[j + 1, 2]
        J = np.zeros((d, d))          # ∂γ_m/∂α_k: 1 for k = 0, exp(α_k) for 1 <= k <= m
        J[:, 0] = 1.0
        for m in range(1, d):
            J[m, 1:m + 1] = np.exp(alpha[1:m + 1])
        Ha = J.T @ H @ J + np.eye(d) / self.ALPHA_PRIOR_SD ** 2
        try:
            L = np.linalg.cholesky(Ha)
        except np.linalg.LinAlgError:
            return None
        return self.scale * np.linalg.inv(L).T

    def draw(self, yhat, z, cache):
        """One MH step of α and the latent targets, their residuals into the cache: returns the
        array holding the new z (z itself or the sampler's other buffer; the one not returned
        becomes the spare)."""
        from fmcli.ordinal import bounds, cutpoints

        self.n_draws += 1
        adapting = self.n_draws <= self.adapt
        prop = self.alpha + self.step @ self.rng.standard_normal(len(self.alpha))
        seed = int(self.rng.integers(0, 2**63 - 1))
        if adapting:
            self.curv[:] = 0.0
        b, b2 = bounds(self.gamma), bounds(cutpoints(prop))
        log_ratio = ordinal_pass(yhat, self.cls, b, b2, z, self.z_spare, seed, self.curv if adapting else self.no_curv,
                                 self.weights)
        if adapting:
            f = self.proposal_factor(self.curv, self.alpha)
            if f is not None:
                self.step = f
        self.proposed += 1
        if math.log(self.rng.random()) < log_ratio + self._log_prior(prop) - self._log_prior(self.alpha):
            self.alpha = prop
            self.gamma = cutpoints(prop)
            self.accepted += 1
            z, self.z_spare, b = self.z_spare, z, b2
        finish_latent(yhat, self.cls, b, z, cache)
        return z


class MCMCLearner(CoordinateLearner):
    sample = True

    def _init_hyper(self):
        self.lam_w[:] = float(self.opts.regular[1]) if len(self.opts.regular) > 1 else 0.0
        self.lam_v[:] = float(self.opts.regular[-1]) if len(self.opts.regular) > 1 else 0.0
        self.sample_alpha = self.task == "r"
        if self.task == "o":
            classes = np.unique(self._y)
            self.classes = classes.astype(np.float64)
            cls = np.searchsorted(classes, self._y).astype(np.int64)
        self.burn_in = max(0, int(self.opts.burn_in or 0))
        if self.task == "o":
            start = self.model.meta.get("ordinal")      # a warm start's (train.settle_model)
            self.ordinal = OrdinalSampler(self.classes, cls, self.rng, self.burn_in,
                                          None if start is None else np.asarray(start["cutpoints"], np.float64),
                                          self._wt)
        self.keep = max(1, int(self.opts.keep_samples or 1))
        self.n_avg = 0
        C = len(self.classes) if self.task == "o" else 0
        self.sums = {name: np.zeros((d.n_rows, C) if C else d.n_rows) for name, d in self.evals.items()}
        self.kept = []          # _snapshot()s

    def _before_sweep(self):
        m = self.model
        if self.sample_alpha:
            self.alpha = draw_alpha(self.cache[:, 0], self.alpha, self.rejected, self._wt)
        draw_hyper(self.cols, self.groups, m.w, m.V, self.use_w, self.mu_w, self.lam_w,
                   self.mu_v, self.lam_v, self.rejected)

    def _latent(self):
        if self.task == "o":
            self._z = self.ordinal.draw(self._yhat, self._z, self.cache)
        else:
            draw_latent(self._yhat, self._y, self._z)
            set_residuals(self.cache, self._yhat, self._z)

    def _ordinal(self, proba):
        from fmcli.ordinal import OrdinalPrediction

        return OrdinalPrediction(proba, self.classes)

    def _proba(self, raw):
        from fmcli.ordinal import probabilities

        return probabilities(raw, self.ordinal.gamma)

    def train_scores(self):
        if self.task == "o":
            from fmcli.ordinal import OrdinalSample

            return OrdinalSample(self._yhat, self.ordinal.gamma, self.classes, self.ordinal.cls), self._y
        return super().train_scores()

    def log_values(self):
        out = super().log_values()
        if self.task == "o":
            out.update({f"cutpoint[{m}]": float(g) for m, g in enumerate(self.ordinal.gamma, start=1)})
            out["mh_acceptance"] = self.ordinal.accepted / max(self.ordinal.proposed, 1)
        return out

    def _after_eval(self):
        if self.n_steps <= self.burn_in:       # n_steps already counts this sweep
            return
        for name, raw in self.eval_raw.items():
            if self.task == "o":
                from fmcli.ordinal import add_probabilities, bounds

                add_probabilities(np.ascontiguousarray(raw, np.float64), bounds(self.ordinal.gamma), self.sums[name])
            else:
                self.sums[name] += self._link(raw)
        self.n_avg += 1
        if not self.opts.save_samples:
            return      # nothing will be saved: no snapshots (-out uses the running sums)
        self.last_sample = self._snapshot()
        if self.n_avg % self.keep == 0:
            self.kept.append(self.last_sample)

    def _snapshot(self):
        """(w0, w float32, V float32, the cutpoints of -task o or None); subclasses append."""
        m = self.model
        gamma = self.ordinal.gamma.copy() if self.task == "o" else None
        return (float(self._w0[0]), m.w.astype(np.float32), m.V.astype(np.float32), gamma)

    def eval_predictions(self, name):
        if self.task == "o":
            return self._ordinal(self.sums[name] / self.n_avg if self.n_avg else self._proba(self.eval_raw[name]))
        if self.n_avg == 0:
            return self._link(self.eval_raw[name])
        mean = self.sums[name] / self.n_avg
        return self._link(mean) if self.task == "r" else mean

    def final_model(self):
        m = self.model
        # w and V are the learner's own arrays, as ALS's final_model (copy before stepping on:
        # EarlyStop does); a copy here cost n k 8 bytes at the end of every run
        out = FMModel(float(self._w0[0]), m.w, m.V, m.use_w0, m.use_w, m.task,
                      m.link, m.y_min, m.y_max, dict(m.meta))
        self._attach_samples(out)
        return out

    def _attach_samples(self, out):
        """out.samples (and, with orders 3 and up, out.samples_H) from the kept snapshots."""
        kept = self.kept or ([self.last_sample] if self.n_avg and self.opts.save_samples else [])
        if kept:
            out.samples = (np.array([s[0] for s in kept]), np.stack([s[1] for s in kept]),
                           np.stack([s[2] for s in kept]))
            if len(kept[0]) > 4:
                out.samples_H = np.stack([s[4] for s in kept])
        if self.task == "o":
            from fmcli.ordinal import ordinal_meta

            out.meta["ordinal"] = ordinal_meta(self.classes, self.ordinal.gamma,
                                               [s[3] for s in kept] if kept else None)

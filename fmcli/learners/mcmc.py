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
from fmcli.learners.sweep import REJ_ALPHA, REJ_VLAMBDA, REJ_VMU, REJ_WLAMBDA, REJ_WMU, finite
from fmcli.model import FMModel
from fmcli.ordinal import CHUNK_ROWS

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


@njit
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


@njit(parallel=True)
def draw_latent_ordinal(yhat, cls, bnd, z, seeds):
    """Ordered probit latent targets: z_i ~ N(ŷ_i, 1) truncated to (bnd[c_i], bnd[c_i + 1]].
    In parallel chunks of ordinal.CHUNK_ROWS rows, chunk c's draws from numba's generator
    seeded with seeds[c] (the thread's own state): the same on any thread count."""
    n = yhat.shape[0]
    for c in prange(seeds.shape[0]):
        np.random.seed(seeds[c])
        for i in range(c * CHUNK_ROWS, min(n, (c + 1) * CHUNK_ROWS)):
            m = cls[i]
            z[i] = yhat[i] + truncated_normal(bnd[m] - yhat[i], bnd[m + 1] - yhat[i])


def chunk_seeds(rng, n_rows):
    """A seed per ordinal.CHUNK_ROWS rows, from the generator rng."""
    return rng.integers(0, 2**31 - 1, max(1, -(-n_rows // CHUNK_ROWS))).astype(np.int64)


class OrdinalSampler:
    """The cutpoints of the ordered probit (fmcli.ordinal) by random-walk Metropolis–Hastings
    on α given ŷ, the latent z integrated out (the target is Π_i P(c_i | ŷ_i, γ(α)) times the
    prior α_m ~ N(α_m at the start, ALPHA_PRIOR_SD²), which pins the location ŷ and γ share);
    then z | γ, ŷ from its truncated normal. Together a blocked Gibbs draw of (γ, z) given the
    FM. MH_STEPS proposals a sweep, all α moved at once by N(0, s²); s adapts to an acceptance
    of MH_TARGET with a gain 1/√(sweep) that vanishes (diminishing adaptation). Every draw
    comes from the learner's seeded generator (α) and numba's seeded stream (z), serially:
    the same on any thread count."""

    MH_STEPS = 2
    MH_TARGET = 0.3
    ALPHA_PRIOR_SD = 10.0

    def __init__(self, classes, cls, rng):
        from fmcli.ordinal import alphas

        self.classes = np.asarray(classes, np.float64)
        self.cls = cls
        self.rng = rng
        # start: cutpoints halfway between the class values (the first sweep fits z = y)
        self.gamma = (self.classes[1:] + self.classes[:-1]) / 2.0
        self.alpha = alphas(self.gamma)
        self.prior_mean = self.alpha.copy()
        self.log_step = math.log(1.0 / math.sqrt(max(len(cls), 1)))
        self.n_draws = 0
        self.accepted = 0
        self.proposed = 0

    def _log_target(self, yhat, alpha):
        from fmcli.ordinal import bounds, cutpoints, log_likelihood

        d = (alpha - self.prior_mean) / self.ALPHA_PRIOR_SD
        return log_likelihood(yhat, self.cls, bounds(cutpoints(alpha))) - 0.5 * float(d @ d)

    def draw(self, yhat, z):
        from fmcli.ordinal import bounds, cutpoints

        self.n_draws += 1
        cur = self._log_target(yhat, self.alpha)
        acc = 0
        for _ in range(self.MH_STEPS):
            prop = self.alpha + math.exp(self.log_step) * self.rng.standard_normal(len(self.alpha))
            new = self._log_target(yhat, prop)
            if math.log(self.rng.random()) < new - cur:
                self.alpha, cur = prop, new
                acc += 1
        self.proposed += self.MH_STEPS
        self.accepted += acc
        self.log_step += (acc / self.MH_STEPS - self.MH_TARGET) / math.sqrt(self.n_draws)
        self.gamma = cutpoints(self.alpha)
        draw_latent_ordinal(yhat, self.cls, bounds(self.gamma), z, chunk_seeds(self.rng, len(yhat)))


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
            self.ordinal = OrdinalSampler(self.classes, cls, self.rng)
        self.burn_in = max(0, int(self.opts.burn_in or 0))
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
            self.ordinal.draw(self._yhat, self._z)
        else:
            draw_latent(self._yhat, self._y, self._z)

    def _ordinal(self, proba):
        from fmcli.ordinal import OrdinalPrediction

        return OrdinalPrediction(proba, self.classes)

    def _proba(self, raw):
        from fmcli.ordinal import probabilities

        return probabilities(raw, self.ordinal.gamma)

    def train_scores(self):
        if self.task == "o":
            from fmcli.ordinal import OrdinalSample

            return OrdinalSample(self._yhat, self.ordinal.gamma, self.classes), self._y
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

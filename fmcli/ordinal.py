"""Ordered probit (`-task o`): classes c_0 < c_1 < ... < c_{C-1} (the distinct integer train
targets), a latent z = ŷ(x) + N(0, 1) and cutpoints γ_1 < ... < γ_{C-1}: class index m when
γ_m < z ≤ γ_{m+1} (γ_0 = −∞, γ_C = +∞), so

    P(class m | ŷ) = Φ(γ_{m+1} − ŷ) − Φ(γ_m − ŷ).

The cutpoints are ordered by construction from unconstrained α (γ_1 = α_1,
γ_m = γ_{m−1} + exp(α_m)); the MCMC learner draws α by Metropolis–Hastings
(fmcli.learners.mcmc.OrdinalSampler). Predictions: the probabilities averaged over the
samples, the expected value Σ_m c_m P(m), the most probable class (ties: the lower one).
"""

import math
from fractions import Fraction

import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from fmcli.config import njit

SQRT1_2 = 1.0 / math.sqrt(2.0)


def cutpoints(alpha):
    """γ_1..γ_{C−1} from α_1..α_{C−1}: γ_1 = α_1, γ_m = γ_{m−1} + exp(α_m)."""
    alpha = np.asarray(alpha, np.float64)
    if not len(alpha):
        return alpha.copy()
    return np.concatenate([alpha[:1], alpha[0] + np.cumsum(np.exp(alpha[1:]))])


def alphas(gamma):
    """The α of increasing cutpoints γ (the inverse of `cutpoints`)."""
    gamma = np.asarray(gamma, np.float64)
    return np.concatenate([gamma[:1], np.log(np.diff(gamma))])


def bounds(gamma):
    """[−∞, γ_1, ..., γ_{C−1}, +∞]: class m's interval is (b[m], b[m+1]]."""
    return np.concatenate([[-np.inf], np.asarray(gamma, np.float64), [np.inf]])


INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Φ(x) = 1/2 + x φ(0) Σ_n S_n x^{2n}, S_n = (−1)^n / (n! (2n + 1) 2^n) (the Maclaurin series of
# erf(x/√2)); 24 terms on |x| <= 2: the first term left out is below 1e-18, the error is
# rounding (about 2e-16, a relative 1e-14 at Φ(−2) = 0.023). Plain arithmetic, so a loop of it
# is vectorised (phi_cdf_array), where erfc is a library call a value.
PHI_SERIES_LIMIT = 2.0
PHI_SERIES = np.array([float(Fraction((-1) ** n, math.factorial(n) * (2 * n + 1) * 2 ** n)) for n in range(24)])


@intrinsic
def _fma(typingctx, a, b, c):
    """a b + c rounded once (LLVM's fma: IEEE-exact, so the same bits scalar or vectorised, on
    any CPU; the series' Horner steps at half the instructions of a multiply and an add)."""
    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return types.float64(types.float64, types.float64, types.float64), codegen


@njit(inline="always")
def _phi_series(x):
    s = x * x
    p = 0.0
    for n in range(PHI_SERIES.shape[0] - 1, -1, -1):
        p = _fma(p, s, PHI_SERIES[n])
    return 0.5 + x * INV_SQRT_2PI * p


@njit
def phi_cdf(x):
    """Φ(x), the standard normal CDF: the series on |x| <= PHI_SERIES_LIMIT, erfc beyond."""
    if abs(x) <= PHI_SERIES_LIMIT:
        return _phi_series(x)
    return 0.5 * math.erfc(-x * SQRT1_2)


@njit
def phi_cdf_array(x, out):
    """out[i] = phi_cdf(x[i]), the same bits: the series on every value clamped to its range (a
    loop without branches or calls, which LLVM vectorises), then erfc for the values beyond."""
    n = x.shape[0]
    for i in range(n):
        out[i] = _phi_series(min(max(x[i], -PHI_SERIES_LIMIT), PHI_SERIES_LIMIT))
    for i in range(n):
        if not abs(x[i]) <= PHI_SERIES_LIMIT:
            out[i] = phi_cdf(x[i])


@njit
def _rational(r, a0, a1, a2, a3, a4, a5, a6, a7, b1, b2, b3, b4, b5, b6, b7):
    num = ((((((a7 * r + a6) * r + a5) * r + a4) * r + a3) * r + a2) * r + a1) * r + a0
    den = ((((((b7 * r + b6) * r + b5) * r + b4) * r + b3) * r + b2) * r + b1) * r + 1.0
    return num / den


@njit
def normal_quantile(p):
    """Φ⁻¹(p) for 0 < p < 1: Wichura's AS 241 (PPND16, relative error about 1e-16). Its value
    is accurate in the lower tail, where p itself is exact: callers that need x > 0 near p = 1
    pass the upper tail mass instead (−Φ⁻¹(1 − p))."""
    q = p - 0.5
    if abs(q) <= 0.425:
        return q * _rational(0.180625 - q * q,
                             3.3871328727963666080, 1.3314166789178437745e2, 1.9715909503065514427e3,
                             1.3731693765509461125e4, 4.5921953931549871457e4, 6.7265770927008700853e4,
                             3.3430575583588128105e4, 2.5090809287301226727e3,
                             4.2313330701600911252e1, 6.8718700749205790830e2, 5.3941960214247511077e3,
                             2.1213794301586595867e4, 3.9307895800092710610e4, 2.8729085735721942674e4,
                             5.2264952788528545610e3)
    r = math.sqrt(-math.log(p if q < 0.0 else 1.0 - p))
    if r <= 5.0:
        x = _rational(r - 1.6,
                      1.42343711074968357734, 4.63033784615654529590, 5.76949722146069140550,
                      3.64784832476320460504, 1.27045825245236838258, 2.41780725177450611770e-1,
                      2.27238449892691845833e-2, 7.74545014278341407640e-4,
                      2.05319162663775882187, 1.67638483018380384940, 6.89767334985100004550e-1,
                      1.48103976427480074590e-1, 1.51986665636164571966e-2, 5.47593808499534494600e-4,
                      1.05075007164441684324e-9)
    else:
        x = _rational(r - 5.0,
                      6.65790464350110377720, 5.46378491116411436990, 1.78482653991729133580,
                      2.96560571828504891230e-1, 2.65321895265761230930e-2, 1.24266094738807843860e-3,
                      2.71155556874348757815e-5, 2.01033439929228813265e-7,
                      5.99832206555887937690e-1, 1.36929880922735805310e-1, 1.48753612908506148525e-2,
                      7.86869131145613259100e-4, 1.84631831751005468180e-5, 1.42151175831644588870e-7,
                      2.04426310338993978564e-15)
    return -x if q < 0.0 else x


@njit
def log_phi_cdf(x):
    """log Φ(x); below −30 (where erfc heads for underflow) the asymptotic series
    −x²/2 − log(−x) − log(2π)/2 + log(1 − 1/x² + 3/x⁴ − 15/x⁶) (error < 1e-10 there)."""
    if x > -30.0:
        return math.log(0.5 * math.erfc(-x * SQRT1_2))
    t = 1.0 / (x * x)
    return -0.5 * x * x - math.log(-x) - 0.5 * math.log(2.0 * math.pi) + math.log(1.0 - t + 3.0 * t * t - 15.0 * t * t * t)


@njit
def interval_log_prob(lo, hi):
    """log(Φ(hi) − Φ(lo)) for lo < hi, accurate in both tails: mirrored so that lo <= 0, then
    log Φ(hi) + log1p(−exp(log Φ(lo) − log Φ(hi)))."""
    if lo > 0.0:
        lo, hi = -hi, -lo
    if hi > 0.0:
        return math.log(phi_cdf(hi) - phi_cdf(lo))
    top = log_phi_cdf(hi)
    if lo == -math.inf:
        return top
    d = log_phi_cdf(lo) - top
    return top + math.log1p(-math.exp(d)) if d < 0.0 else -math.inf


CHUNK_ROWS = 1 << 14     # rows of one parallel task (fixed: the sums and draws do not depend on threads)


@njit(parallel=True)
def log_likelihood(yhat, cls, b):
    """Σ_i log P(cls_i | ŷ_i) for the bounds b (`bounds`), cls the class indices: summed per
    chunk of CHUNK_ROWS rows in parallel, the chunks' sums added in order (the same bits
    on any thread count)."""
    n = yhat.shape[0]
    n_chunks = (n + CHUNK_ROWS - 1) // CHUNK_ROWS
    part = np.zeros(n_chunks)
    for c in prange(n_chunks):
        s = 0.0
        for i in range(c * CHUNK_ROWS, min(n, (c + 1) * CHUNK_ROWS)):
            m = cls[i]
            s += interval_log_prob(b[m] - yhat[i], b[m + 1] - yhat[i])
        part[c] = s
    total = 0.0
    for c in range(n_chunks):
        total += part[c]
    return total


@njit(inline="always")
def log_product(s, prod, q):
    """(s, prod) with log q added to the sum s + log(prod): q multiplied into prod while it is
    within 1e±150, prod kept within 1e±100 (no overflow, no underflow; its log taken into s when
    it leaves), otherwise log q into s. One log for many factors; a NaN q makes s NaN."""
    if not 1e-150 <= q <= 1e150:
        return s + math.log(q), prod
    prod *= q
    if not 1e-100 <= prod <= 1e100:
        return s + math.log(prod), 1.0
    return s, prod


BLOCK_ROWS = 256     # rows a block (here and in the MCMC sampler's pass): their Φ arguments, then Φ in one loop


@njit
def _block_probabilities(raw, b, b0, b1, args, cdfs, out, first):
    """out[first + i − b0, m] += P(class m | ŷ_i = raw[i]) for the bounds b, rows i of b0..b1:
    Φ(b[m+1] − ŷ_i) of the whole block in one phi_cdf_array (args, cdfs: scratch of at least
    (b1 − b0)(C − 1)), then each row's differences."""
    C = b.shape[0] - 1
    for i in range(b0, b1):
        for m in range(C - 1):
            args[(i - b0) * (C - 1) + m] = b[m + 1] - raw[i]
    phi_cdf_array(args[:(b1 - b0) * (C - 1)], cdfs)
    for i in range(b0, b1):
        r = first + i - b0
        prev = 0.0
        for m in range(C - 1):
            cdf = cdfs[(i - b0) * (C - 1) + m]
            out[r, m] += cdf - prev
            prev = cdf
        out[r, C - 1] += 1.0 - prev


@njit(parallel=True)
def add_probabilities(raw, b, out):
    """out[i, m] += P(class m | ŷ_i = raw[i]) for the bounds b (chunks of CHUNK_ROWS rows in
    parallel; each row's arithmetic is its own, so the same bits on any thread count)."""
    for c in prange((raw.shape[0] + CHUNK_ROWS - 1) // CHUNK_ROWS):
        _probabilities_chunk(np.int64(c), raw, b, out)     # (c cast: as in mcmc.ordinal_pass)


@njit
def _probabilities_chunk(c, raw, b, out):
    """add_probabilities on chunk c (a function of its own, as the parallel loops' bodies here:
    numba lowers a one-call body in a fraction of the time)."""
    n = raw.shape[0]
    C = b.shape[0] - 1
    args = np.empty(BLOCK_ROWS * (C - 1))
    cdfs = np.empty(BLOCK_ROWS * (C - 1))
    for b0 in range(c * CHUNK_ROWS, min(n, (c + 1) * CHUNK_ROWS), BLOCK_ROWS):
        _block_probabilities(raw, b, b0, min(n, b0 + BLOCK_ROWS), args, cdfs, out, b0)


@njit
def _metric_chunk(c, proba, raw, b, cls, y, classes, out):
    """metric_sums on chunk c, its four sums into out."""
    n = y.shape[0]
    C = classes.shape[0]
    from_raw = proba.shape[0] == 0
    block = np.zeros((BLOCK_ROWS if from_raw else 0, C))
    args = np.empty(BLOCK_ROWS * (C - 1) if from_raw else 0)
    cdfs = np.empty(BLOCK_ROWS * (C - 1) if from_raw else 0)
    sse = sae = hits = ll = 0.0      # ll: Σ log P(y), as ll + log(prod)
    prod = 1.0
    for b0 in range(c * CHUNK_ROWS, min(n, (c + 1) * CHUNK_ROWS), BLOCK_ROWS):
        b1 = min(n, b0 + BLOCK_ROWS, (c + 1) * CHUNK_ROWS)
        if from_raw:
            block[:] = 0.0
            _block_probabilities(raw, b, b0, b1, args, cdfs, block, 0)
            p = block
        else:
            p = proba[b0:b1]
        for i in range(b0, b1):
            r = i - b0
            e = 0.0
            best = 0
            for m in range(C):
                e += classes[m] * p[r, m]
                # the first most probable class, by arithmetic (which class wins varies
                # from row to row: a branch on it is mispredicted)
                best += (m - best) * np.int64(p[r, m] > p[r, best])
            d = y[i] - e
            sse += d * d
            sae += abs(d)
            hits += np.float64(classes[best] == y[i])
            q = p[r, cls[i]] if cls[i] >= 0 else 0.0
            if q < 1e-15:
                q = 1e-15
            elif q > 1.0:
                q = 1.0
            ll, prod = log_product(ll, prod, q)      # one log for many rows
    out[0], out[1], out[2], out[3] = sse, sae, hits, -(ll + math.log(prod))


@njit(parallel=True)
def metric_sums(proba, raw, b, cls, y, classes):
    """Σ (y − E)², Σ |y − E|, the count of most probable class == y, and Σ −log P(y) (P clipped
    to [1e-15, 1], NaN kept; P = 0 where cls is −1: y is none of the classes) over the rows,
    E = Σ_m c_m P(m). P per row: proba's row, or, when proba has no rows, one sample's
    probabilities from raw and the bounds b (a block of rows at a time: no array of all the
    rows' probabilities is made). Summed per chunk of CHUNK_ROWS rows, the chunks added in
    order: the same on any thread count."""
    n_chunks = (y.shape[0] + CHUNK_ROWS - 1) // CHUNK_ROWS
    part = np.zeros((n_chunks, 4))
    for c in prange(n_chunks):
        _metric_chunk(np.int64(c), proba, raw, b, cls, y, classes, part[c])     # (c cast: as in mcmc.ordinal_pass)
    total = np.zeros(4)
    for c in range(n_chunks):
        total += part[c]
    return total


def class_indices(y, classes):
    """Each target's index among the (sorted) classes, −1 for a target that is none of them."""
    y = np.asarray(y, np.float64)
    idx = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    return np.where(classes[idx] == y, idx, -1).astype(np.int64)


def ordinal_scores(pred, y):
    """RMSE and MAE of the expected value, accuracy of the most probable class, multi-class
    log-loss of pred (an OrdinalPrediction or an OrdinalSample) against the targets y."""
    n = len(y)
    if n == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "accuracy": float("nan"), "logloss": float("nan")}
    y = np.ascontiguousarray(y, np.float64)
    cls = class_indices(y, pred.classes) if pred.cls is None else pred.cls
    sse, sae, hits, nll = metric_sums(*pred.metric_inputs(), cls, y, pred.classes)
    return {"rmse": math.sqrt(sse / n), "mae": sae / n, "accuracy": hits / n, "logloss": nll / n}


def probabilities(raw, gamma):
    """(rows, C) class probabilities of one sample's ŷ."""
    raw = np.ascontiguousarray(raw, np.float64)
    out = np.zeros((len(raw), len(gamma) + 1))
    add_probabilities(raw, bounds(gamma), out)
    return out


def expected_value(proba, classes):
    """Σ_m c_m P(m) per row."""
    return np.asarray(proba, np.float64) @ np.asarray(classes, np.float64)


def most_probable(proba, classes):
    """The most probable class per row (ties: the lower class)."""
    return np.asarray(classes)[np.argmax(proba, axis=1)]


class OrdinalPrediction:
    """Class probabilities (rows, C) with their classes: what `-task o` predicts. Slices
    (the metrics go chunk by chunk) and len() are of the expected values."""

    cls = None      # the rows' class indices: not known (ordinal_scores finds them)

    def __init__(self, proba, classes):
        self.proba = np.asarray(proba, np.float64)
        self.classes = np.asarray(classes, np.float64)

    def __len__(self):
        return self.proba.shape[0]

    def __getitem__(self, rows):
        return expected_value(self.proba[rows], self.classes)

    def __array__(self, dtype=None, copy=None):
        # np.asarray, np.isfinite, ...: the expected values in one product (without this,
        # numpy builds the array row by row through __getitem__)
        out = self.expected
        return out if dtype is None else out.astype(dtype, copy=False)

    @property
    def expected(self):
        return expected_value(self.proba, self.classes)

    def most_probable(self):
        return most_probable(self.proba, self.classes)

    def metric_inputs(self):
        return self.proba, np.empty(0), np.empty(0)


class OrdinalSample:
    """One sample's prediction (ŷ per row and the cutpoints γ), for the train metrics of each
    iteration: metric_sums computes each row's probabilities as it goes. cls: the rows' class
    indices, when known (the learner's train rows; otherwise None)."""

    def __init__(self, raw, gamma, classes, cls=None):
        self.raw = np.ascontiguousarray(raw, np.float64)
        self.bounds = bounds(gamma)
        self.classes = np.asarray(classes, np.float64)
        self.cls = cls

    def __len__(self):
        return self.raw.shape[0]

    def metric_inputs(self):
        return np.empty((0, len(self.classes))), self.raw, self.bounds


def ordinal_meta(classes, gamma, sample_gammas=None):
    """The model file's record of an ordinal model: its classes and cutpoints (the last
    state's), and each kept sample's cutpoints."""
    out = {"classes": [int(c) for c in classes], "cutpoints": [float(g) for g in gamma]}
    if sample_gammas is not None:
        out["sample_cutpoints"] = [[float(g) for g in s] for s in sample_gammas]
    return out


def model_prediction(model, indptr, indices, data, relations=()):
    """The OrdinalPrediction of a -task o model (its meta's "ordinal": classes, cutpoints and
    each sample's) for CSR rows: the class probabilities of every stored sample averaged, or
    of the model itself when it has no samples. `fmcli train -out` with a model file and
    `fmcli predict` both go through here, so they write the same text."""
    o = model.meta["ordinal"]
    classes = np.asarray(o["classes"], np.float64)
    out = np.zeros((len(indptr) - 1, len(classes)))
    if model.samples is None:
        add_probabilities(model.predict_raw(indptr, indices, data, relations=relations),
                          bounds(o["cutpoints"]), out)
        return OrdinalPrediction(out, classes)
    for params, gamma in zip(model.sample_params(), o["sample_cutpoints"]):
        add_probabilities(model.predict_raw(indptr, indices, data, params, relations), bounds(gamma), out)
    return OrdinalPrediction(out / len(o["sample_cutpoints"]), classes)


def format_probabilities(proba):
    """--out-proba's text: one row a line, the classes' probabilities (sorted classes) tab-separated."""
    if len(proba) == 0:
        return ""
    return "\n".join("\t".join("%.6g" % p for p in row) for row in np.asarray(proba, np.float64).tolist()) + "\n"


def output_values(pred, out_class):
    """What -out writes: the expected values, or the most probable classes (--out-class)."""
    return pred.most_probable() if out_class else pred.expected

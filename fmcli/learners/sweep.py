"""The coordinate kernels shared by ALS and MCMC (libFM behaviour §6.3): one sweep over the
features of the main rows, in parallel colour classes.

Caches, as libFM keeps them, float32, side by side in one array `cache` (rows, 1 + kb):

    column 0:          e[i]    = ŷ_i − t_i            (t = y, or the probit latent target z)
    columns 1 .. kb:   q[i, f] = Σ_j v_{j,f} x_ij     (the factors of the current factor block)

The model is linear in each single parameter θ with h_i = ∂ŷ_i/∂θ (1 for w0, x_ij for w_j,
x_ij (q_{i,f} − x_ij v_{j,f}) for v_{j,f}). With noise precision α and prior N(μ, 1/λ):

    P = λ + α Σ_i h_i²,    m = [α Σ_i h_i (θ h_i − e_i) + λ μ] / P

ALS sets θ = m (α = 1, μ = 0: the exact minimiser of ½Σe² + ½λθ²); MCMC draws θ ~ N(m, 1/P).
After a change by Δ: e_i += h_i Δ, and for v also q_{i,f} += x_ij Δ. P = 0 (no data and no
prior) sets θ = 0, as libFM. A non-finite result is rejected (the old value is kept) and
counted in `rejected` (indices REJ_*).

A column (feature j) is updated in one of two layouts with the same arithmetic (_terms, _v_h,
_v_change): in place, entry by entry, for data with duplicated (row, feature) entries: a
row's copies of j add up to the row's one h = ∂ŷ_i/∂θ (for w exact; for v the derivative at
the current θ, ŷ being quadratic in v_{j,f} there), and the cache updates stay exact (each
later entry sees the earlier ones' updates); or gathered: its rows' caches copied into a
contiguous buffer, updated there and scattered back, which makes two random passes over the
cache per column instead of 2(k+1).
"""

import math

import numba
import numpy as np
from numba import prange

from fmcli.config import njit
from fmcli.learners.prefetch import prefetch_row
from fmcli.learners.streams import stream_normals
from fmcli.model import row_sums

# indices into the `rejected` counter array
REJ_ALPHA, REJ_W0, REJ_W, REJ_V, REJ_WMU, REJ_WLAMBDA, REJ_VMU, REJ_VLAMBDA = range(8)
REJ_NAMES = ("alpha", "w0", "w", "v", "w_mu", "w_lambda", "v_mu", "v_lambda")

CACHE_DTYPE = np.float32   # e, q, the higher orders' polynomials: half the traffic of float64; reset by the refresh
PREFETCH_AHEAD = 16        # cache rows requested ahead of the column kernels' gathers and scatters


@njit(inline="always")
def finite(x):
    """math.isfinite for kernels: numba's isfinite tests that x − x is ordered, which fastmath's
    reassoc + nsz fold to 0 == 0, true even for inf and NaN; a comparison with the largest
    double is not folded (no nnan/ninf in the policy) and is false for both."""
    return abs(x) <= 1.7976931348623157e308


@njit
def solve(num, P, z):
    """θ = num/P + z/√P: the ALS minimiser (z = 0) or a draw from N(num/P, 1/P) (z ~ N(0, 1));
    0 when P = 0."""
    if P == 0.0:
        return 0.0
    return num / P + z / math.sqrt(P)


@njit
def _update_w0(cache, w0, lam0, alpha, z, rej, weights):
    """The global bias w0[0] (prior N(0, 1/lam0)); h_i = 1. weights: the rows' weights (their
    precision is scaled by them), or empty: every row weighs 1."""
    n = cache.shape[0]
    old = w0[0]
    s1 = 0.0
    if weights.shape[0]:
        sw = 0.0
        for i in range(n):
            s1 += weights[i] * (old - cache[i, 0])
            sw += weights[i]
        new = solve(alpha * s1, lam0 + alpha * sw, z)
    else:
        for i in range(n):
            s1 += old - cache[i, 0]
        new = solve(alpha * s1, lam0 + alpha * n, z)
    if not finite(new):
        rej[REJ_W0] += 1
        return
    d = new - old
    if d != 0.0:
        for i in range(n):
            cache[i, 0] += d
    w0[0] = new


@njit(inline="always")
def _terms(h, e, old):
    """One row's (h², h (θ h − e)) for a parameter θ with ∂ŷ/∂θ = h."""
    return h * h, h * (old * h - e)


@njit(inline="always")
def _w_terms(x, e, old):
    """One entry's (h², h (θ h − e)) for w_j: h = x."""
    return _terms(x, e, old)


@njit(inline="always")
def _v_h(x, q, old):
    """One entry's h = ∂ŷ/∂v_{j,f} = x (q − x θ)."""
    return x * (q - x * old)


@njit(inline="always")
def _v_terms(x, q, e, old):
    """One entry's (h², h (θ h − e)) for v_{j,f}: h = x (q − x θ)."""
    return _terms(_v_h(x, q, old), e, old)


@njit(inline="always")
def _v_change(x, q, old, d):
    """The changes (of e, of q) of one entry after v_{j,f} moved by d."""
    return _v_h(x, q, old) * d, x * d


@njit(inline="always")
def _paired(guarded, length):
    """Whether a row of `length` non-zero values takes part in a factor's update: a row of fewer
    than two has no pairwise interaction, so its h = x (q − x θ) is exactly 0 (computed from the
    float32 q it is 0 only up to rounding, and an update with λ = 0 would divide that rounding
    by its square: the factor of a feature seen only alone grew without bound)."""
    return not guarded or length >= 2


@njit
def _column_in_place(j, cptr, crow, cval, cache, w, V, lam_w, mu_w, lam_v, mu_v, alpha, use_w, z, rej,
                     lx, buf, jn, weights, lw, row_len, guarded, ln):
    """w_j and v_{j,0..k−1} of feature j, reading and updating the cache entry by entry.
    A row's entries of j (adjacent in the column) make one term: h of the row is the sum of
    its entries' h (∂ŷ_i/∂θ), so P and m weigh a row once, however often it holds j (a term
    per entry would make the step c times too long for c copies: a long row of repeated
    features diverged). weights (by row; empty: all 1) scale each row's terms. guarded: j has
    rows of fewer than two non-zero values (row_len): their h of v is exactly 0 (_paired).
    lx, buf, jn, lw, ln: _column_gathered's scratch, not used here (the two kernels take one
    argument list, the sweep's)."""
    weighted = weights.shape[0] > 0
    p0, p1 = cptr[j], cptr[j + 1]
    if use_w:
        old = w[j]
        s1 = 0.0
        s2 = 0.0
        p = p0
        while p < p1:
            i = crow[p]
            h = np.float64(cval[p])
            p += 1
            while p < p1 and crow[p] == i:
                h += np.float64(cval[p])
                p += 1
            a, b = _terms(h, cache[i, 0], old)
            if weighted:
                a, b = weights[i] * a, weights[i] * b
            s2 += a
            s1 += b
        new = solve(alpha * s1 + lam_w * mu_w, lam_w + alpha * s2, z[0])
        if finite(new):
            d = new - old
            for p in range(p0, p1):
                cache[crow[p], 0] += cval[p] * d
            w[j] = new
        else:
            rej[REJ_W] += 1
    for f in range(V.shape[1]):
        old = V[j, f]
        s1 = 0.0
        s2 = 0.0
        p = p0
        while p < p1:
            i = crow[p]
            q = cache[i, 1 + f]
            h = _v_h(np.float64(cval[p]), q, old)
            p += 1
            while p < p1 and crow[p] == i:
                h += _v_h(np.float64(cval[p]), q, old)
                p += 1
            if not _paired(guarded, row_len[i]):
                continue
            a, b = _terms(h, cache[i, 0], old)
            if weighted:
                a, b = weights[i] * a, weights[i] * b
            s2 += a
            s1 += b
        new = solve(alpha * s1 + lam_v[f] * mu_v[f], lam_v[f] + alpha * s2, z[1 + f])
        if finite(new):
            d = new - old
            for p in range(p0, p1):
                i = crow[p]
                de, dq = _v_change(np.float64(cval[p]), cache[i, 1 + f], old, d)
                if _paired(guarded, row_len[i]):
                    cache[i, 0] += de
                cache[i, 1 + f] += dq
            V[j, f] = new
        else:
            rej[REJ_V] += 1


@njit
def _column_gathered(j, cptr, crow, cval, cache, w, V, lam_w, mu_w, lam_v, mu_v, alpha, use_w, z, rej,
                     lx, buf, jn, weights, lw, row_len, guarded, ln):
    """_column_in_place for columns without duplicated rows: the rows' caches are gathered into
    the contiguous buffers buf (k+1, m) and lx (m,), updated there, and scattered back; both
    passes prefetch the row PREFETCH_AHEAD entries ahead, and the first rows of the lane's next
    column jn (-1: none) are prefetched before the arithmetic (hints only: the same bits).
    weights (by row; empty: all 1): gathered into lw (m,) and scaling each row's terms.
    guarded: j has rows too short for a pair; their lengths (row_len) are gathered into ln (m,)."""
    weighted = weights.shape[0] > 0
    k = V.shape[1]
    p0 = cptr[j]
    m = cptr[j + 1] - p0
    last = p0 + m - 1
    for t in range(m):
        i = crow[p0 + t]
        prefetch_row(cache, crow[min(p0 + t + PREFETCH_AHEAD, last)], False)
        lx[t] = cval[p0 + t]
        if weighted:
            lw[t] = weights[i]
        if guarded:
            ln[t] = row_len[i]
        for c in range(k + 1):
            buf[c, t] = cache[i, c]
    if jn >= 0:
        # the next column's first rows arrive while this one is computed
        for p in range(cptr[jn], min(cptr[jn] + PREFETCH_AHEAD, cptr[jn + 1])):
            prefetch_row(cache, crow[p], False)
    if use_w:
        old = w[j]
        s1 = 0.0
        s2 = 0.0
        if weighted:
            for t in range(m):
                a, b = _w_terms(np.float64(lx[t]), buf[0, t], old)
                s2 += lw[t] * a
                s1 += lw[t] * b
        else:
            for t in range(m):
                a, b = _w_terms(np.float64(lx[t]), buf[0, t], old)
                s2 += a
                s1 += b
        new = solve(alpha * s1 + lam_w * mu_w, lam_w + alpha * s2, z[0])
        if finite(new):
            d = new - old
            for t in range(m):
                buf[0, t] += lx[t] * d
            w[j] = new
        else:
            rej[REJ_W] += 1
    for f in range(k):
        old = V[j, f]
        s1 = 0.0
        s2 = 0.0
        if guarded:
            for t in range(m):
                if _paired(True, ln[t]):
                    a, b = _v_terms(np.float64(lx[t]), buf[1 + f, t], buf[0, t], old)
                    u = lw[t] if weighted else 1.0
                    s2 += u * a
                    s1 += u * b
        elif weighted:
            for t in range(m):
                a, b = _v_terms(np.float64(lx[t]), buf[1 + f, t], buf[0, t], old)
                s2 += lw[t] * a
                s1 += lw[t] * b
        else:
            for t in range(m):
                a, b = _v_terms(np.float64(lx[t]), buf[1 + f, t], buf[0, t], old)
                s2 += a
                s1 += b
        new = solve(alpha * s1 + lam_v[f] * mu_v[f], lam_v[f] + alpha * s2, z[1 + f])
        if finite(new):
            d = new - old
            if guarded:
                for t in range(m):
                    de, dq = _v_change(np.float64(lx[t]), buf[1 + f, t], old, d)
                    if _paired(True, ln[t]):
                        buf[0, t] += de
                    buf[1 + f, t] += dq
            else:
                for t in range(m):
                    de, dq = _v_change(np.float64(lx[t]), buf[1 + f, t], old, d)
                    buf[0, t] += de
                    buf[1 + f, t] += dq
            V[j, f] = new
        else:
            rej[REJ_V] += 1
    for t in range(m):
        i = crow[p0 + t]
        prefetch_row(cache, crow[min(p0 + t + PREFETCH_AHEAD, last)], True)
        for c in range(k + 1):
            cache[i, c] = buf[c, t]


@njit(inline="always")
def _sweep(column, cptr, crow, cval, order, lane_ptr, n_lanes, groups, cache, w0, w, V, use_w0, use_w,
           alpha, lam0, hyper, sample, seed, lx, buf, buf_off, Z, rej, weights, lw, row_len, guard, ln):
    """One sweep: w0, then the colour classes in turn, each feature's w_j and v_{j,0..k−1} by
    `column` (_column_gathered or _column_in_place); hyper = (lam_w, mu_w, lam_v, mu_v), the
    groups' priors, in a tuple (a call of over 30 arguments is one numba cannot inline).
    The features of one class never share a row, so they touch disjoint rows of the cache and
    are updated in parallel: class c is cut into n_lanes lanes of about equal work, lane l =
    order[lane_ptr[c*n_lanes + l] : ... + 1], one lane per thread. With each feature's draws
    from its own stream (of `seed`), the result is the same for any number of lanes and
    threads. lx, Z, rej: one slice per thread (scratch, normals, rejection counts); buf: one
    (k+1, cap_l) gather buffer per lane l, buf[buf_off[l]:buf_off[l+1]], sized by the longest
    column lane l ever gets (schedule.lane_buffers). Factor blocks: V, lam_v and mu_v may be
    the column views [:, f0:f1] of one block, and the cache then holds e and that block's q in
    its first 1 + f1 − f0 columns (further columns, if any, are not touched); k below is the
    block's width.
    weights: each row's weight (its precision scaled by it; -weights), or empty (all 1); lw: a
    per-thread gather buffer for them (shape (threads, 0) without weights). row_len: each row's
    count of non-zero values (its relation rows' included); guard: by feature, whether its rows
    include one of fewer than two (_paired); ln: a per-thread gather buffer for their lengths
    (shape (threads, 0) when no feature is guarded)."""
    lam_w, mu_w, lam_v, mu_v = hyper
    k = V.shape[1]
    if use_w0:
        z0 = 0.0
        if sample:
            stream_normals(seed, w.shape[0], Z[0, :1])
            z0 = Z[0, 0]
        _update_w0(cache, w0, lam0, alpha, z0, rej[0], weights)
    n_classes = (lane_ptr.shape[0] - 1) // n_lanes
    for c in range(n_classes):
        for lane in prange(n_lanes):
            tid = numba.get_thread_id()
            cap = (buf_off[lane + 1] - buf_off[lane]) // (k + 1)
            lane_buf = buf[buf_off[lane]:buf_off[lane + 1]].reshape((k + 1, cap))
            t1 = lane_ptr[c * n_lanes + lane + 1]
            for t in range(lane_ptr[c * n_lanes + lane], t1):
                j = order[t]
                g = groups[j]
                z = Z[tid, :k + 1]
                if sample:
                    stream_normals(seed, j, z)
                column(j, cptr, crow, cval, cache, w, V, lam_w[g], mu_w[g], lam_v[g], mu_v[g], alpha, use_w, z,
                       rej[tid], lx[tid], lane_buf, order[t + 1] if t + 1 < t1 else -1, weights, lw[tid],
                       row_len, guard[j], ln[tid])


@njit(parallel=True)
def sweep(cptr, crow, cval, order, lane_ptr, n_lanes, groups, cache, w0, w, V, use_w0, use_w,
          alpha, lam0, lam_w, mu_w, lam_v, mu_v, sample, seed, lx, buf, buf_off, Z, rej,
          weights, lw, row_len, guard, ln):
    """_sweep with the gathered column kernel: the columns have no duplicated rows."""
    _sweep(_column_gathered, cptr, crow, cval, order, lane_ptr, n_lanes, groups, cache, w0, w, V, use_w0, use_w,
           alpha, lam0, (lam_w, mu_w, lam_v, mu_v), sample, seed, lx, buf, buf_off, Z, rej,
           weights, lw, row_len, guard, ln)


@njit(parallel=True)
def sweep_in_place(cptr, crow, cval, order, lane_ptr, n_lanes, groups, cache, w0, w, V, use_w0, use_w,
                   alpha, lam0, lam_w, mu_w, lam_v, mu_v, sample, seed, lx, buf, buf_off, Z, rej,
                   weights, lw, row_len, guard, ln):
    """_sweep with the in-place column kernel (data with duplicated (row, feature) entries).
    Two compiled entry points, so that a run compiles only the column kernel it uses."""
    _sweep(_column_in_place, cptr, crow, cval, order, lane_ptr, n_lanes, groups, cache, w0, w, V, use_w0, use_w,
           alpha, lam0, (lam_w, mu_w, lam_v, mu_v), sample, seed, lx, buf, buf_off, Z, rej,
           weights, lw, row_len, guard, ln)


@njit(parallel=True)
def factor_block_sums(indptr, indices, data, V, f0, f1, cache):
    """The cache's q of factor block [f0, f1) from the CSR rows: cache[i, 1 + f − f0] =
    Σ_j v_{j,f} x_ij (model.row_sums in float64, stored as float32), 4096 rows per parallel
    task (each row's arithmetic is fixed: the same for any number of threads). The cache's
    columns after the block's are left alone. (Block 0 and the exact ŷ come from
    model.predict_rows, in the train refresh.)"""
    n_rows = indptr.shape[0] - 1
    Vb = V[:, f0:f1]
    rows = 4096
    no_w = np.empty(0)
    for r in prange((n_rows + rows - 1) // rows):
        s = np.empty(f1 - f0)
        for i in range(r * rows, min(n_rows, (r + 1) * rows)):
            s[:] = 0.0
            row_sums(indices, data, indptr[i], indptr[i + 1], 0.0, no_w, Vb, False, s)
            for f in range(f1 - f0):
                cache[i, 1 + f] = s[f]


@njit(inline="always")
def store_residual(cache, i, yhat, t):
    """Row i's residual e = ŷ − t into the cache's column 0 (set_residuals' arithmetic, for a
    kernel that makes the target t itself: the ordinal latent draw)."""
    cache[i, 0] = yhat - t


@njit
def set_residuals(cache, yhat, t):
    """e_i = ŷ_i − t_i into the cache's column 0; returns Σ e_i² of the stored (float32) e:
    inf or NaN when some ŷ_i is, or is beyond float32's range (the divergence check). This and
    the two below are one pass over a column, a small part of a sweep's time, and on one thread
    (a parallel kernel costs a first run about 0.4 s more to compile, and its sum would depend
    on the thread count)."""
    sq = 0.0
    for i in range(cache.shape[0]):
        store_residual(cache, i, yhat[i], t[i])
        e = np.float64(cache[i, 0])
        sq += e * e
    return sq


@njit
def predictions_from_residuals(cache, t, yhat):
    """ŷ_i = e_i + t_i from the cache's e (set_residuals' inverse; float64 ŷ, e as float32 keeps it)."""
    for i in range(cache.shape[0]):
        yhat[i] = np.float64(cache[i, 0]) + t[i]


@njit
def residual_square_sum(cache):
    """Σ e_i² of the cache's e (column 0), in float64: inf or NaN when some e_i is."""
    sq = 0.0
    for i in range(cache.shape[0]):
        e = np.float64(cache[i, 0])
        sq += e * e
    return sq


@njit
def squared_error(yhat, y):
    """Σ (ŷ_i − y_i)²."""
    sq = 0.0
    for i in range(yhat.shape[0]):
        d = yhat[i] - y[i]
        sq += d * d
    return sq

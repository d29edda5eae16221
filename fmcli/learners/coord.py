"""Coordinate sweeps shared by ALS and MCMC (libFM behaviour §6.3), compiled with numba.

Both learners go over the transposed train data (CSC: for each feature, its rows) and
keep two per-row caches, as libFM does:

    e[i]    = ŷ_i − t_i            (t = y for regression, the latent target z for probit)
    q[i, f] = Σ_j v_{j,f} x_{ij}   (the factors f of the current factor block, see below)

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
For k > FACTOR_BLOCK the factors are cut into blocks [f0, f1) of FACTOR_BLOCK (the last one
may be narrower), and a sweep goes block by block: w0, then block 0 feature by feature (w_j,
v_{j,0} … v_{j,f1−1}), then each later block feature by feature over its own factors only
(v_{j,f0} … v_{j,f1−1}), each block in the same order of colour classes and features. Still
every update is exact given everything else. MCMC's normals of block b come from the streams
of their own seed, block_seed(sweep seed, b) (block 0: the sweep seed itself); a feature
draws 1 + (block width) of them per block, the first unused after block 0. With
k <= FACTOR_BLOCK there is one block and the sweep is the unblocked one, bit for bit.

Parallel and exact. The features are coloured once per data set so that two features of one
colour never occur in the same row (colour_features); a sweep visits the colour classes in
turn. Within a class the features touch disjoint rows of the caches, so their updates do not
interact: they run in parallel (numba prange, one lane of about equal work per thread), and
MCMC's normal draws come from a stream per feature (stream_normals, from a seed drawn per
sweep), so the model is the same, bit for bit, whatever the number of threads.

Caches. e and q are float32, side by side in one array C (n, 1 + kb): column 0 is e,
columns 1..kb are q of the current block's factors (kb = k without factor blocks, else
FACTOR_BLOCK), so one gather brings what a row's updates need. With factor blocks, C keeps
q of one block at a time (at k = 64, 1M rows: 68 MB instead of 260 MB, and the gather
buffers shrink alike): before each later block its q is computed from the CSR rows
(block_rows: float64 sums per row, stored as float32, rows in parallel) while e is carried
over from block to block, updated incrementally as within a block. After the sweep the
train refresh recomputes ŷ exactly (all factors) and leaves q of block 0 in C, ready for
the next sweep (so `q` means the current block's factors, CoordinateLearner.block). The train
rows are reordered inside the learner (rows of one user together); all outputs are in the
user's row order.

Relations (libFM's block structure, fmcli.data.Relation). A relation's features are swept
after all main features, coordinate by coordinate (all w_j, then all v_{j,0}, ...), from
per-relation-row sums of the linked rows' caches (sweep_relation): O(k (train rows +
relation entries)) per sweep instead of O(k × rows × block width). Each relation is coloured on
its own, so its features run in parallel lanes too. The flat twin -- the same rows with the
relation features written out, swept with opts.extra["blocks"] = the relation offsets
(block 0 feature by feature, later blocks coordinate by coordinate, each block coloured on its
own, the same per-feature streams) -- gives the same model to the rounding of the float32
caches (tests/test_relation.py). fmcli's default order on flat rows is another, equally valid,
path (colour classes mixing main and relation features). With relations and with
opts.extra["blocks"] there are no factor blocks: C keeps q of all k factors, whatever k.

Features without any train entry are not visited (their values never change). A duplicated
(row, feature) entry makes ŷ quadratic in v_{j,f}; like libFM we treat each entry linearly,
so within such a column the caches are approximate; they are reset exactly after each
sweep anyway (`predict_rows` recomputes ŷ and q from the CSR rows, `block_rows` a later block's q).
"""

import math
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from fmcli.config import njit
from fmcli.data import block_groups, permute_rows, transpose
from fmcli.io.cache import release_pages
from fmcli.model import predict_rows, relation_map, relation_terms
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
REFRESH_ROWS = 1 << 18   # regression refresh: rows of ŷ at a time (2 MB), e into the cache
FACTOR_BLOCK = 16   # k > FACTOR_BLOCK: a sweep goes over blocks of this many factors (module docs)


PREFETCH_AHEAD = 16   # rows of C requested ahead of the column kernels' gathers and scatters
PREFETCH_LAST_BELOW = 32   # rows of C with last column < this: their last line is prefetched too


def _prefetch_intrinsic(rw):
    @intrinsic
    def prefetch(typingctx, arr, i, c):
        """Ask the CPU to bring the cache line of arr[i, c] (a 2-D array) into the cache
        (llvm.prefetch: a hint, no effect on any value)."""
        def codegen(context, builder, sig, args):
            aryty = sig.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            idx = [context.cast(builder, args[1], sig.args[1], types.intp),
                   context.cast(builder, args[2], sig.args[2], types.intp)]
            ptr = cgutils.get_item_pointer2(context, builder, ary.data,
                                            cgutils.unpack_tuple(builder, ary.shape),
                                            cgutils.unpack_tuple(builder, ary.strides), aryty.layout,
                                            idx)
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(), i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [builder.bitcast(ptr, ir.PointerType()), i32(rw), i32(3), i32(1)])
            return context.get_dummy_value()
        return types.void(arr, i, c), codegen
    return prefetch


_prefetch_read = _prefetch_intrinsic(0)
_prefetch_write = _prefetch_intrinsic(1)


@njit
def _prefetch_row(C, i, write):
    """The first cache line of row i of C, and for rows of up to PREFETCH_LAST_BELOW columns
    its last one (a row of k + 1 = 9 float32 spans two lines half the time, a factor block's
    17 always: with the last line, one 16-factor block's sweep of the 1M set took 0.29 s
    instead of 0.34 s, 1 thread). At large k the hardware streams the rest: prefetching the
    last or every line of a k = 64 row was slower (bench/notes.md)."""
    last = C.shape[1] - 1
    if write:
        _prefetch_write(C, i, 0)
        if last < PREFETCH_LAST_BELOW:
            _prefetch_write(C, i, last)
    else:
        _prefetch_read(C, i, 0)
        if last < PREFETCH_LAST_BELOW:
            _prefetch_read(C, i, last)


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
def _column_plain(j, cptr, crow, cval, C, w, V, lam_w, mu_w, lam_v, mu_v, alpha, use_w, z, rej,
                  c0, c1):
    """Coordinates c0 <= c < c1 of feature j (c = 0: w_j, c = 1 + f: v_{j,f}), reading and
    updating the caches C entry by entry (works with duplicated (row, feature) entries: each
    later entry sees the earlier ones' updates)."""
    p0, p1 = cptr[j], cptr[j + 1]
    if use_w and c0 == 0:
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
    for f in range(max(c0, 1) - 1, c1 - 1):
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
                  c0, c1, lx, B, jn):
    """`_column_plain` for columns without duplicated rows: the rows' caches are gathered into
    the contiguous buffers B (k+1, m) and lx (m,), updated there, and scattered back: two
    random passes over C per column instead of 2(k+1); both prefetch the row PREFETCH_AHEAD
    entries ahead, and the first rows of the lane's next column jn (-1: none) are prefetched
    before the arithmetic (hints only: the same bits). Same arithmetic. (Fusing each update
    pass with the next coordinate's statistics pass was tried: slower, see bench/notes.md.)"""
    k = V.shape[1]
    p0 = cptr[j]
    m = cptr[j + 1] - p0
    last = p0 + m - 1
    for t in range(m):
        i = crow[p0 + t]
        _prefetch_row(C, crow[min(p0 + t + PREFETCH_AHEAD, last)], False)
        lx[t] = cval[p0 + t]
        for c in range(k + 1):
            B[c, t] = C[i, c]
    if jn >= 0:
        # the next column's first rows arrive while this one is computed
        for p in range(cptr[jn], min(cptr[jn] + PREFETCH_AHEAD, cptr[jn + 1])):
            _prefetch_row(C, crow[p], False)
    if use_w and c0 == 0:
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
    for f in range(max(c0, 1) - 1, c1 - 1):
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
        _prefetch_row(C, crow[min(p0 + t + PREFETCH_AHEAD, last)], True)
        for c in range(k + 1):
            C[i, c] = B[c, t]


@njit(parallel=True)
def block_rows(indptr, indices, data, V, f0, f1, C):
    """The caches of factor block [f0, f1) from the CSR rows: C[i, 1 + f − f0] =
    Σ_j v_{j,f} x_ij (float64 sums per row, stored as float32), blocks of rows in parallel
    (each row's arithmetic is fixed: the same for any number of threads). Ids ≥ n_features
    contribute nothing. C's columns after the block's are left alone. (Block 0 and the exact
    ŷ come from predict_rows, in the train refresh.) The block's part of the row of V of the
    entry PREFETCH_AHEAD ahead is prefetched (a hint; 1M set, 16 factors: 0.115 -> 0.092 s,
    1 thread)."""
    n_rows = indptr.shape[0] - 1
    n_features = V.shape[0]
    last = indptr[n_rows] - 1
    rows = 4096
    for r in prange((n_rows + rows - 1) // rows):
        s = np.empty(f1 - f0)
        for i in range(r * rows, min(n_rows, (r + 1) * rows)):
            s[:] = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                ja = indices[min(p + PREFETCH_AHEAD, last)]
                if ja < n_features and f0 < f1:
                    _prefetch_read(V, ja, f0)
                j = indices[p]
                if j >= n_features:
                    continue
                x = np.float64(data[p])
                for f in range(f0, f1):
                    s[f - f0] += V[j, f] * x
            for f in range(f0, f1):
                C[i, 1 + f - f0] = s[f - f0]


def block_seed(seed, b):
    """The seed of factor block b's normal draws within a sweep of seed `seed`: the sweep's own
    seed for block 0 (so one block draws what an unblocked sweep draws), a splitmix64 hash of
    (seed, b) otherwise; a non-negative int64."""
    if b == 0:
        return seed
    mask = (1 << 64) - 1
    z = (seed + b * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 1


@njit(parallel=True)
def sweep(cptr, crow, cval, order, lane_ptr, n_lanes, pass_coord, groups, C, w0a, w, V, use_w0,
          use_w, alpha, lam0, lam_w, mu_w, lam_v, mu_v, sample, seed, local, lx, B, B_off, Z, rej):
    """One sweep: w0, then the passes in turn. A pass is a colour class with either all
    coordinates of each feature (pass_coord −1: w_j, v_{j,0..k−1}) or one (pass_coord c).
    The features of one class never share a row, so they touch disjoint rows of C and are
    updated in parallel: pass c is cut into n_lanes lanes of about equal work, lane l =
    order[lane_ptr[c*n_lanes + l] : ... + 1], one lane per thread. With each feature's draws
    from its own stream, the result is the same for any number of lanes and threads. lx, Z,
    rej: one slice per thread (scratch buffer, normals, rejection counts); B: one (k+1, cap_l)
    gather buffer per lane l, B[B_off[l]:B_off[l+1]], sized by the longest column lane l ever
    gets (CoordinateLearner._lane_buffers), so only one lane pays for the longest column.
    Factor blocks: V, lam_v and mu_v may be the column views [:, f0:f1] of one block, and C
    then holds e and that block's q in its first 1 + f1 − f0 columns (further columns, if any,
    are not touched); k below is the block's width."""
    k = V.shape[1]
    if use_w0:
        z0 = 0.0
        if sample:
            stream_normals(seed, w.shape[0], Z[0, :1])
            z0 = Z[0, 0]
        _update_w0(C, w0a, lam0, alpha, z0, rej[0])
    n_passes = (lane_ptr.shape[0] - 1) // n_lanes
    for c in range(n_passes):
        c0, c1 = (0, k + 1) if pass_coord[c] < 0 else (pass_coord[c], pass_coord[c] + 1)
        for lane in prange(n_lanes):
            tid = numba.get_thread_id()
            cap = (B_off[lane + 1] - B_off[lane]) // (k + 1)
            Bl = B[B_off[lane]:B_off[lane + 1]].reshape((k + 1, cap))
            t1 = lane_ptr[c * n_lanes + lane + 1]
            for t in range(lane_ptr[c * n_lanes + lane], t1):
                j = order[t]
                g = groups[j]
                Zt = Z[tid, :k + 1]
                if sample:
                    stream_normals(seed, j, Zt)
                if local:
                    _column_local(j, cptr, crow, cval, C, w, V, lam_w[g], mu_w[g], lam_v[g],
                                  mu_v[g], alpha, use_w, Zt, rej[tid], c0, c1, lx[tid], Bl,
                                  order[t + 1] if t + 1 < t1 else -1)
                else:
                    _column_plain(j, cptr, crow, cval, C, w, V, lam_w[g], mu_w[g], lam_v[g],
                                  mu_v[g], alpha, use_w, Zt, rej[tid], c0, c1)


# ---------------------------------------------------------------------------------------
# Relations (libFM's block structure, libfm-behaviour §4). The features of relation row r
# are shared by the m_r train rows linked to it, so a relation feature's column in the flat
# data is the union of those rows. Its updates need only per-relation-row sums of the linked
# rows' caches: with a_i = q_{i,f} − Q_{r,f} (the part of q not from this relation, fixed
# while the relation's v_{·,f} are updated) and Q' = Q_{r,f} − x v_{j,f}:
#
#     w_j:     Σ_i h_i² = x² m_r,                            Σ_i h_i e_i = x E_r
#     v_{j,f}: Σ_i h_i² = x² (Q'² m_r + 2 Q' A_r + AA_r),     Σ_i h_i e_i = x (Q' E_r + AE_r)
#
# (m = Σ1, A = Σa, AA = Σa², E = Σe, AE = Σae over the linked rows). A change Δ moves every
# linked e_i by x Δ (Q' + a_i): E and AE follow in O(1) per relation entry, and the change is
# kept per relation row (D0 + D1 a_i) and written into the rows' caches after the
# coordinate's pass. Feature by feature this would need the k×k moments Σ a_f a_g per
# relation row (the e changes of v_{j,f} move Σ a_g e); coordinate by coordinate, as libFM
# sweeps relation features (all w_j, then all v_{j,0}, ...), one factor's moments suffice.
# Cost of a relation per sweep: O(k (train rows + relation entries)).

# columns of the per-relation-row statistics array St
_M, _A, _AA, _E, _AE, _D0, _D1, _Q0 = range(8)


@njit
def _relation_w(j, J, cptr, crow, cval, St, w, lam, mu, alpha, z, rej):
    """w_J (J = offset + j, the model id of relation feature j) from the relation rows'
    statistics; the change goes into E and D0."""
    old = w[J]
    s1 = 0.0
    s2 = 0.0
    for p in range(cptr[j], cptr[j + 1]):
        r = crow[p]
        x = np.float64(cval[p])
        s2 += x * x * St[r, _M]
        s1 += x * (old * x * St[r, _M] - St[r, _E])
    new = _solve(alpha * s1 + lam * mu, lam + alpha * s2, z)
    if not math.isfinite(new):
        rej[REJ_W] += 1
        return
    d = new - old
    for p in range(cptr[j], cptr[j + 1]):
        r = crow[p]
        xd = np.float64(cval[p]) * d
        St[r, _E] += xd * St[r, _M]
        St[r, _D0] += xd
    w[J] = new


@njit
def _relation_v(j, J, f, cptr, crow, cval, St, Q, V, lam, mu, alpha, z, rej):
    """v_{J,f} from the relation rows' statistics of factor f; Q[r, f] follows the change."""
    old = V[J, f]
    s1 = 0.0
    s2 = 0.0
    for p in range(cptr[j], cptr[j + 1]):
        r = crow[p]
        x = np.float64(cval[p])
        qp = Q[r, f] - x * old
        hh = x * x * (qp * qp * St[r, _M] + 2.0 * qp * St[r, _A] + St[r, _AA])
        s2 += hh
        s1 += old * hh - x * (qp * St[r, _E] + St[r, _AE])
    new = _solve(alpha * s1 + lam * mu, lam + alpha * s2, z)
    if not math.isfinite(new):
        rej[REJ_V] += 1
        return
    d = new - old
    for p in range(cptr[j], cptr[j + 1]):
        # entry by entry, as _column_plain: a duplicated entry sees the earlier one's change
        r = crow[p]
        x = np.float64(cval[p])
        qp = Q[r, f] - x * old
        xd = x * d
        St[r, _E] += xd * (qp * St[r, _M] + St[r, _A])
        St[r, _AE] += xd * (qp * St[r, _A] + St[r, _AA])
        St[r, _D0] += xd * qp
        St[r, _D1] += xd
        Q[r, f] += xd
    V[J, f] = new


@njit
def _relation_feature(j, offset, c, cptr, crow, cval, St, Q, groups, w, V, alpha, lam_w, mu_w,
                      lam_v, mu_v, sample, seed, z, rej):
    """Coordinate c (0: w, 1 + f: v_{·,f}) of relation feature j (model id offset + j)."""
    J = offset + j
    g = groups[J]
    if sample:
        stream_normals(seed, J, z)
    if c == 0:
        _relation_w(j, J, cptr, crow, cval, St, w, lam_w[g], mu_w[g], alpha, z[0], rej)
    else:
        _relation_v(j, J, c - 1, cptr, crow, cval, St, Q, V, lam_v[g, c - 1], mu_v[g, c - 1],
                    alpha, z[c], rej)


@njit(parallel=True)
def sweep_relation(cptr, crow, cval, order, lane_ptr, n_lanes, offset, link_ptr, link_rows,
                   groups, C, Q, St, w, V, use_w, alpha, lam_w, mu_w, lam_v, mu_v, sample, seed,
                   Z, rej):
    """The features of one relation, coordinate by coordinate (w, then v_{·,0}, ...); for each:
    the statistics of the linked train rows per relation row (rows link_rows[link_ptr[r] :
    link_ptr[r+1]] of C), the colour classes in parallel lanes (lane_ptr as in `sweep`; the
    features of a class share no linked relation row), then the changes written into C (in the
    same pass over the rows as the next coordinate's statistics).
    cptr/crow/cval: the relation's CSC over its linked rows, local feature ids (model id =
    offset + id); Q (relation rows, k): the rows' factor sums, current on entry."""
    k = V.shape[1]
    n_rows = Q.shape[0]
    n_classes = (lane_ptr.shape[0] - 1) // n_lanes
    first = 0 if use_w else 1
    for c in range(first, k + 2):
        # one pass over the linked rows: the previous coordinate's changes into C, then the
        # statistics of this one (none after the last)
        f = c - 1
        for r in prange(n_rows):
            d0 = St[r, _D0] if c > first else 0.0
            d1 = St[r, _D1] if c > first else 0.0
            qold = St[r, _Q0]
            m = 0.0
            sa = 0.0
            saa = 0.0
            se = 0.0
            sae = 0.0
            q0 = Q[r, f] if 0 <= f < k else 0.0
            for t in range(link_ptr[r], link_ptr[r + 1]):
                i = link_rows[t]
                if c == 1:                  # after w
                    C[i, 0] += d0
                elif c > first:             # after v_{·,c−2}: C column c − 1
                    a = np.float64(C[i, c - 1]) - qold
                    C[i, 0] += d0 + d1 * a
                    C[i, c - 1] += d1
                if c <= k:
                    e = np.float64(C[i, 0])
                    m += 1.0
                    se += e
                    if f >= 0:
                        a = np.float64(C[i, 1 + f]) - q0
                        sa += a
                        saa += a * a
                        sae += a * e
            St[r, _M], St[r, _A], St[r, _AA], St[r, _E], St[r, _AE] = m, sa, saa, se, sae
            St[r, _D0], St[r, _D1], St[r, _Q0] = 0.0, 0.0, q0
        if c > k:
            break
        if n_lanes == 1:
            # one lane: the classes one after the other without a parallel launch per class
            # (a relation of long rows has hundreds of small classes)
            for t in range(lane_ptr[0], lane_ptr[n_classes]):
                _relation_feature(order[t], offset, c, cptr, crow, cval, St, Q, groups, w, V, alpha,
                                  lam_w, mu_w, lam_v, mu_v, sample, seed, Z[0], rej[0])
        else:
            for cl in range(n_classes):
                for lane in prange(n_lanes):
                    tid = numba.get_thread_id()
                    for t in range(lane_ptr[cl * n_lanes + lane], lane_ptr[cl * n_lanes + lane + 1]):
                        _relation_feature(order[t], offset, c, cptr, crow, cval, St, Q, groups, w, V,
                                          alpha, lam_w, mu_w, lam_v, mu_v, sample, seed, Z[tid], rej[tid])


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


@njit
def row_keys(indptr, indices, colour, big, n):
    """Per row: its (last) feature of colour class `big`, n for none (the row-order key)."""
    key = np.full(indptr.shape[0] - 1, n, np.int64)
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i], indptr[i + 1]):
            if colour[indices[p]] == big:
                key[i] = indices[p]
    return key


@njit(parallel=True)
def set_residuals(C, yhat, z):
    """e_i = ŷ_i − t_i into the cache's column 0; returns how many ŷ_i are not finite."""
    bad = 0
    for i in prange(C.shape[0]):
        C[i, 0] = yhat[i] - z[i]
        bad += 0 if math.isfinite(yhat[i]) else 1
    return bad


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

@dataclass
class _RelationState:
    relation: object        # fmcli.data.Relation
    links: np.ndarray       # relation row of each train row, internal row order
    cols: np.ndarray        # the relation's features in linked rows (local ids, ascending)
    cptr: np.ndarray        # CSC of the relation over its linked rows
    crow: np.ndarray
    cval: np.ndarray
    order: np.ndarray       # cols by colour class
    class_ptr: np.ndarray
    link_ptr: np.ndarray    # train rows of relation row r: link_rows[link_ptr[r]:link_ptr[r+1]]
    link_rows: np.ndarray
    work: np.ndarray        # per feature, for the lanes
    St: np.ndarray          # (relation rows, 8) statistics scratch (sweep_relation)

    @property
    def offset(self):
        return self.relation.offset


class _ScoresFromResiduals:
    """Regression predictions clip(e + y, lo, hi) of the train rows as slices are asked for
    (the metrics go chunk by chunk), so no array of the train set's size is made. e is float32:
    the predictions are exact to about 1e-7, for the printed metrics."""

    def __init__(self, C, y, lo, hi):
        self.C, self.y, self.lo, self.hi = C, y, lo, hi

    def __len__(self):
        return self.C.shape[0]

    def __getitem__(self, rows):
        return np.clip(self.C[rows, 0].astype(np.float64) + self.y[rows], self.lo, self.hi)


def _index_dtype(n):
    """int32 for indices below n when they fit: half the memory of int64 (perm, indptr)."""
    return np.int32 if n < 2**31 else np.int64


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
        n = max([model.n_features, train.n_model_features] + [d.n_model_features for d in evals.values()])
        rels = [r for r, _ in train.relations]
        for d in evals.values():
            if [r for r, _ in d.relations] != rels:
                raise UsageError(f"{d.source}: the rows need the same relations as the train rows")
        # main features are the ids below the first relation's
        n_main = min([r.offset for r in rels] + [n])
        if n > model.n_features:
            model = model.resized(n, rng=rng, init_stdev=opts.init_stdev)
        model.task = opts.task
        model.link = "identity" if opts.task == "r" else "probit"
        # targets as read (float32 from the reader: exact in every float64 use, half the memory)
        y = np.asarray(train.y)
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
        if groups is None and not rels:
            groups = np.zeros(n, np.int32)
        groups = block_groups(groups, n_main, rels, n)
        if len(groups) < n:
            raise UsageError(f"-meta gives {len(groups)} group ids but the data have {n} features")
        if len(groups) and groups.min() < 0:
            raise UsageError("-meta: group ids must be non-negative")
        self.groups = np.ascontiguousarray(groups[:n], np.int64)
        self.G = int(self.groups.max()) + 1 if n else 1

        self._setup_order(train, n)
        self.active = np.diff(self.cptr) > 0
        self._setup_relations(train, n)
        for rs in self.rel:
            self.active[rs.offset + rs.cols] = True
        self.cols = np.flatnonzero(self.active).astype(np.int64)
        self.n_g = np.bincount(self.groups[self.cols], minlength=self.G)
        # duplicated (row, feature) entries are adjacent in a CSC column
        starts = np.zeros(len(self.crow), bool)
        starts[self.cptr[:-1][np.diff(self.cptr) > 0]] = True
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
        del y
        release_pages(train.y)
        # latent targets: a float64 copy for probit (drawn or set every sweep); regression
        # reads y itself
        self._z = self._y.astype(np.float64) if self.task == "c" else self._y
        self.evals = evals
        # ŷ of the train rows: kept for probit (the latent targets need it); regression keeps
        # only e = ŷ − y in the cache, ŷ passing through a small buffer (_refresh_train)
        self._yhat = np.empty(train.n_rows) if self.task == "c" else None
        self._rowbuf = np.empty(min(train.n_rows, REFRESH_ROWS)) if self._yhat is None else None
        # factor blocks (module docs): all k factors in one block with relations or
        # opts.extra["blocks"], or when k <= FACTOR_BLOCK
        kb = self.k if self.rel or self.opts.extra.get("blocks") or self.k <= FACTOR_BLOCK \
            else FACTOR_BLOCK
        self.factor_blocks = [(f0, min(f0 + kb, self.k))
                              for f0 in range(0, self.k, max(kb, 1))] or [(0, 0)]
        self.block = self.factor_blocks[0]     # the factors whose q the cache holds now
        # e (column 0) and q of the block's factors (columns 1..kb) of a row side by side: one
        # gather per row
        self.C = np.zeros((train.n_rows, kb + 1), CACHE_DTYPE)
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
        if self.task == "c":
            set_residuals(self.C, self._yhat, self._z)
        self.eval_raw = {name: self._predict(d) for name, d in evals.items()}

    def _setup_order(self, train, n):
        """Colour classes (self.order, self.class_ptr), the passes of a sweep (self.pass_order,
        self.pass_ptr, self.pass_coord), the internal row order (self.perm: internal row ->
        user row) and the reordered CSR and CSC.

        opts.extra["blocks"] (feature ids where blocks start, e.g. the relation offsets) makes a
        flat data set sweep like its relations would: each block is coloured on its own, block
        0 goes feature by feature, later blocks coordinate by coordinate (all w_j, then all
        v_{j,0}, ...) -- the flat twin of a run with relations (same model to rounding)."""
        indptr, indices, data = train.csr()
        cptr, crow, cval = transpose(indptr, indices, data, n)
        del cval
        counts = np.diff(cptr)
        cols = np.flatnonzero(counts).astype(np.int64)
        cols = cols[np.argsort(-counts[cols], kind="stable")]
        bounds = np.unique(np.clip([0, n] + [int(b) for b in self.opts.extra.get("blocks", ())], 0, n))
        block = np.searchsorted(bounds, np.arange(n), side="right") - 1
        colour = np.full(n, -1, np.int64)
        class_block = []
        for b in range(len(bounds) - 1):
            cb = cols[block[cols] == b]
            if len(cb):
                cc = colour_features(cptr, crow, indptr, indices, cb)[cb]
                colour[cb] = cc + len(class_block)
                class_block += [b] * int(cc.max() + 1)
        self.perm = np.arange(train.n_rows, dtype=_index_dtype(train.n_rows))
        if len(cols):
            # rows sorted by their feature in the colour class with the most features
            big = np.bincount(colour[cols]).argmax()
            key = row_keys(indptr, indices, colour, big, n)
            self.perm = np.argsort(key, kind="stable").astype(_index_dtype(train.n_rows))
            del key
        del cptr, crow
        # read in file order, each chunk's memory-mapped pages dropped once copied
        self.indptr, self.indices, self.data = permute_rows(indptr, indices, data, self.perm,
                                                            release_source=True)
        self.indptr = self.indptr.astype(_index_dtype(len(self.indices)), copy=False)
        self.cptr, self.crow, self.cval = transpose(self.indptr, self.indices, self.data, n)
        # within a class, features by their first row: the gathers walk the rows forwards
        first = np.where(counts > 0, self.crow[np.minimum(self.cptr[:-1], len(self.crow) - 1)], 0)
        self.order = cols[np.lexsort((first[cols], colour[cols]))]
        self.class_ptr = np.searchsorted(colour[self.order], np.arange(len(class_block) + 1)).astype(np.int64)
        # passes: block 0's classes feature by feature, later blocks coordinate by coordinate
        classes = [c for c in range(len(class_block)) if class_block[c] == 0]
        passes = [(c, -1) for c in classes]
        for b in range(1, len(bounds) - 1):
            bc = [c for c in range(len(class_block)) if class_block[c] == b]
            passes += [(c, q) for q in range(self.k + 1) for c in bc]
        parts = [self.order[self.class_ptr[c]:self.class_ptr[c + 1]] for c, _ in passes]
        self.pass_order = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        self.pass_ptr = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        self.pass_coord = np.array([q for _, q in passes], np.int64)

    def _setup_relations(self, train, n):
        """Per relation (self.rel): the train rows grouped by their relation row, the relation's
        CSC over the rows some train row links to, and its colour classes, coloured as the flat
        twin colours that block (same visiting order: most flat entries first)."""
        self.rel = []
        for rel, links in train.relations:
            links = np.asarray(links, np.int64)[self.perm]          # internal row order
            m = np.bincount(links, minlength=rel.n_rows)
            link_rows = np.argsort(links, kind="stable").astype(np.int64)
            link_ptr = np.concatenate([[0], np.cumsum(m)]).astype(np.int64)
            # the relation rows no train row links to take no part in training
            keep = np.repeat(m > 0, np.diff(rel.indptr))
            lens = np.where(m > 0, np.diff(rel.indptr), 0)
            indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            indices, data = rel.indices[keep], rel.data[keep]
            cptr, crow, cval = transpose(indptr, indices, data, rel.n_features)
            flat_count = np.bincount(indices, weights=m[np.repeat(np.arange(rel.n_rows), lens)],
                                     minlength=rel.n_features)
            cols = np.flatnonzero(np.diff(cptr)).astype(np.int64)
            cols = cols[np.argsort(-flat_count[cols], kind="stable")]
            colour = colour_features(cptr, crow, indptr, indices, cols)
            order = cols[np.argsort(colour[cols], kind="stable")]
            class_ptr = np.searchsorted(colour[order], np.arange(colour.max() + 2)).astype(np.int64) \
                if len(cols) else np.zeros(1, np.int64)
            self.rel.append(_RelationState(
                rel, links, np.sort(cols), cptr, crow, cval, order, class_ptr, link_ptr, link_rows,
                np.diff(cptr) + 8.0, np.zeros((rel.n_rows, 8))))
        self._train_rel = [(rs.relation, rs.links) for rs in self.rel]
        self._train_rel_map = relation_map(self._train_rel, train.n_rows)

    # -- the caches and targets in the user's row order (inspection and tests) ------
    def _user_order(self, a):
        out = np.empty_like(a)
        out[self.perm] = a
        return out

    @property
    def yhat(self):
        """ŷ of the train rows for the current parameters (regression: computed afresh)."""
        if self._yhat is not None:
            return self._user_order(self._yhat)
        m = self.model
        raw = np.empty(self.C.shape[0])
        predict_rows(self.indptr, self.indices, self.data, float(self.w0a[0]), m.w, m.V, self.use_w,
                     raw, np.empty((0, self.k + 1), CACHE_DTYPE), self._train_rel_map,
                     relation_terms(self._train_rel, m.w, m.V, self.use_w))
        return self._user_order(raw)

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
        """The factor sums the cache holds: q[i, f] = Σ_j v_{j,f0+f} x_ij for the factors
        [f0, f1) = self.block. Without factor blocks (k <= FACTOR_BLOCK, relations) all k
        factors; with them, the current block's: block 0 after a step (the train refresh),
        the last block after a bare _sweep."""
        f0, f1 = self.block
        return self._user_order(self.C[:, 1:1 + f1 - f0])

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
        m = self.model
        predict_rows(d.indptr, d.indices, d.data, float(self.w0a[0]), m.w, m.V, self.use_w, out,
                     np.empty((0, self.k + 1), CACHE_DTYPE), relation_map(d.relations, d.n_rows),
                     relation_terms(d.relations, m.w, m.V, self.use_w))
        return out

    def _sweep(self, seed=0, order=None, class_ptr=None, coords=None):
        """The coordinate sweep alone (caches kept up to date incrementally); the normal draws
        of MCMC come from the streams of `seed` (of block_seed(seed, b) in factor block b).
        order/class_ptr/coords: the main features to visit by pass (default: self.pass_*;
        coords default to all coordinates per feature), block by block (module docs); then
        each relation's features. With factor blocks, C holds the last block's q afterwards
        (self.block); if it does not hold block 0's on entry, that is computed first."""
        # below PARALLEL_MIN_NNZ a sweep takes milliseconds, and waiting for a second thread
        # (on a shared machine, often descheduled) costs more than it saves
        nnz = len(self.crow) + sum(len(rs.crow) for rs in self.rel)
        threads = numba.get_num_threads() if nnz >= PARALLEL_MIN_NNZ else 1
        if self._scratch is None or self._scratch[0].shape[0] != threads:
            L = 0 if self.has_duplicates else self.longest
            lane_ptr = lanes(self.pass_order, self.pass_ptr, self.work, threads)
            self._scratch = (np.empty((threads, L), CACHE_DTYPE),
                             self._lane_buffers(self.pass_order, lane_ptr, threads),
                             # normals: each thread's row padded to its own cache lines
                             # (the threads write them for every feature)
                             np.zeros((threads, (self.k + 1 + 7) // 8 * 8 + 8)),
                             np.zeros((threads, len(REJ_NAMES)), np.int64),
                             lane_ptr,
                             [lanes(rs.order, rs.class_ptr, rs.work, threads) for rs in self.rel])
        lx, (B, B_off), Z, rej, lane_ptr, rel_lanes = self._scratch
        if order is None:
            order, coords = self.pass_order, self.pass_coord
        else:
            lane_ptr = lanes(order, class_ptr, self.work, threads)
            B, B_off = self._lane_buffers(order, lane_ptr, threads, reuse=B)
            coords = np.full(len(class_ptr) - 1, -1, np.int64) if coords is None else coords
        rej[:] = 0
        m = self.model
        kb = self.C.shape[1] - 1
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            for b, (f0, f1) in enumerate(self.factor_blocks):
                if (f0, f1) != self.block:
                    # the block's q from the CSR rows (e is carried over from the last block)
                    block_rows(self.indptr, self.indices, self.data, m.V, f0, f1, self.C)
                    self.block = (f0, f1)
                # a narrower last block: the same lane buffers, cut for its width
                off = B_off if f1 - f0 == kb else B_off // (kb + 1) * (f1 - f0 + 1)
                # block 0 updates w0 and w too; the slices are the whole arrays with one block
                sweep(self.cptr, self.crow, self.cval, order, lane_ptr, threads, coords,
                      self.groups, self.C, self.w0a, m.w, m.V[:, f0:f1], self.use_w0 and b == 0,
                      self.use_w and b == 0, self.alpha, self.lam0, self.lam_w, self.mu_w,
                      self.lam_v[:, f0:f1], self.mu_v[:, f0:f1], self.sample, block_seed(seed, b),
                      not self.has_duplicates, lx, B, off, Z, rej)
            for rs, rl in zip(self.rel, rel_lanes):
                # the relation rows' factor sums as they are now (rows no train row links to
                # are computed too, and ignored)
                Q = relation_terms([(rs.relation, None)], m.w, m.V, self.use_w)[:, 1:]
                sweep_relation(rs.cptr, rs.crow, rs.cval, rs.order, rl, threads, rs.offset,
                               rs.link_ptr, rs.link_rows, self.groups, self.C, Q, rs.St, m.w, m.V,
                               self.use_w, self.alpha, self.lam_w, self.mu_w, self.lam_v, self.mu_v,
                               self.sample, seed, Z[:, :self.k + 1], rej)
        finally:
            numba.set_num_threads(before)
        self.rejected += rej.sum(axis=0)
        m.w0 = float(self.w0a[0])

    def _lane_buffers(self, order, lane_ptr, n_lanes, reuse=None):
        """The sweep's gather buffers, one per lane (flat, B[B_off[l]:B_off[l+1]] is lane l's
        (kb+1, cap_l), kb + 1 = the cache's width), each sized by the longest column the lane
        gets in any pass: the longest column (e.g. a numeric feature in half the rows) is paid
        for once, not once per thread (with per-thread buffers, whichever thread ran that lane
        touched all of its own). Size 0 with duplicated entries (the plain kernel needs no
        buffer)."""
        caps = np.zeros(n_lanes, np.int64)
        if not self.has_duplicates:
            length = np.diff(self.cptr)[order]
            for t in range(len(lane_ptr) - 1):
                a, b = lane_ptr[t], lane_ptr[t + 1]
                if b > a:
                    caps[t % n_lanes] = max(caps[t % n_lanes], int(length[a:b].max()))
        B_off = np.concatenate([[0], np.cumsum(caps * self.C.shape[1])]).astype(np.int64)
        if reuse is not None and len(reuse) >= B_off[-1]:
            return reuse[:B_off[-1]], B_off
        return np.empty(B_off[-1], CACHE_DTYPE), B_off

    def _refresh_train(self):
        """ŷ and q of all train rows from scratch, row by row from the CSR (resets the caches
        exactly); with factor blocks, q of block 0 (ready for the next sweep). Regression: ŷ
        goes through a buffer of REFRESH_ROWS rows and e = ŷ − y straight into the cache
        (the same bits as a whole ŷ array, 8 bytes per row less); classification: ŷ into
        self._yhat, e is set after the latent targets."""
        m = self.model
        w0 = float(self.w0a[0])
        terms = relation_terms(self._train_rel, m.w, m.V, self.use_w)
        n = self.C.shape[0]
        step = n if self._yhat is not None else REFRESH_ROWS
        self._nonfinite = 0     # regression: counted while e is written (_check_finite)
        for a in range(0, max(n, 1), max(step, 1)):
            b = min(a + step, n)
            out = self._yhat[a:b] if self._yhat is not None else self._rowbuf[:b - a]
            # q of the cache's width: all k factors, or block 0's
            predict_rows(self.indptr[a:b + 1], self.indices, self.data, w0, m.w, m.V, self.use_w, out,
                         self.C[a:b], np.ascontiguousarray(self._train_rel_map[:, a:b]), terms)
            if self._yhat is None:
                self._nonfinite += set_residuals(self.C[a:b], out, self._z[a:b])
        self.block = self.factor_blocks[0]

    def _link(self, raw):
        m = self.model
        if self.task == "r":
            return np.clip(raw, m.y_min, m.y_max)
        from scipy.special import ndtr

        return ndtr(raw)

    def _check_finite(self, it):
        from fmcli.errors import TrainingError

        # regression: the non-finite ŷ were counted as e was written (_refresh_train)
        bad = count_nonfinite(self._yhat) if self._yhat is not None else self._nonfinite
        if bad or not math.isfinite(self.w0a[0]) or count_nonfinite(self.model.w) \
                or count_nonfinite(self.model.V):
            raise TrainingError(
                f"{type(self).__name__[:-7].upper()} diverged in iteration {it}: "
                f"{bad} of {self.C.shape[0]} train predictions are not finite "
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

    def train_scores(self):
        # internal row order (no reordered copy); regression: computed chunk by chunk from e
        if self.task == "r":
            return _ScoresFromResiduals(self.C, self._y, self.model.y_min, self.model.y_max), self._y
        return self._link(self._yhat), self._y

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

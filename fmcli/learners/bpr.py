"""Learning to rank from positives only: `-method bpr` (Rendle et al. 2009), with uniform or
WARP negative sampling and the step rules of -method sgd (fmcli.learners.sgd).

Each train row is a positive (u, i): the user side and the item side of a convert mapping
(fmcli.recommend.load_sides: each side's features, its relation row joined). A step draws a
negative item j for u, uniformly among the items u has no positive for, and descends

    L = −ln σ(d) + lazy L2,    d = ŷ(u, i) − ŷ(u, j) = b_i − b_j + <q_u, q_i − q_j>

(b_x: the item side's own part, its linear terms and the pairs within it; q: a side's factor
sums Σ v_l x_l; w0 and the user side's own part cancel). With g = ∂L/∂d = −σ(−d):

    user feature l:          ∂d/∂v_l = x_l (q_i − q_j)                  (w_l: 0)
    feature l of item i:     ∂d/∂v_l = x_l (q_u + q_i − v_l x_l),       ∂d/∂w_l = x_l
    feature l of item j:     ∂d/∂v_l = −x_l (q_u + q_j − v_l x_l),      ∂d/∂w_l = −x_l

(a feature of both items, e.g. a shared genre, gets the sum). Every gradient is taken at the
parameters before the step, then applied by the step rule (sgd, adagrad, adam: the lazy
per-feature state of fmcli.learners.sgd; λ of -regular on the step's features only).

WARP (Weston et al. 2011, as LightFM): negatives are drawn until one scores above the
positive minus a margin of 1 (d < 1), at most --max-sampled; found after N draws among
the user's C candidate negatives, the rank estimate is K = ⌊C / N⌋ and the step descends
Φ(K)·(1 − d), Φ(K) = Σ_{r ≤ K} 1/r (no violating negative: no step).

Negatives: a user with at most half of the items positive draws uniform items until one is
not a positive (a bitset of the positives, one bit per user and item, when it takes at most
BITSET_BYTES); else, with the user's positives sorted p_0 < p_1 < ..., the r-th non-positive
item (r uniform in [0, n_items − n_pos)) is r + t, t = #{s : p_s − s ≤ r} (a binary search).
Both are exact, never a positive. The kernel is sequential and seeded by the run's
generator (the visit order and the draws: splitmix64 sequences, fmcli.learners.streams): the
result does not depend on --threads.
"""

import numpy as np

from fmcli.config import njit
from fmcli.errors import UsageError
from fmcli.learners.base import Learner, check_diverged
from fmcli.learners.streams import next_below, permutation, stream_key
from fmcli.learners.sgd import ADAGRAD, ADAM, ADAM_BETA1, ADAM_BETA2, OPTIMIZERS, SGD, _adagrad, _adam, \
    optimizer_state
from fmcli.model import row_sums

SAMPLINGS = ("uniform", "warp")
UNIFORM, WARP = 0, 1
WARP_MARGIN = 1.0
LOSS_SCALE_BITS = 600
LOSS_SCALE = 2.0 ** LOSS_SCALE_BITS   # _bpr_step's product of 1 + e^{−|d|} is rescaled above it
BITSET_BYTES = 64 * 2**20   # the positives' bitset at most (else every draw is by rank)


# ---- the data of a run: positives as (user row, item row) pairs of the mapping's sides --------

def key_index(side, column_ids, n_features):
    """(n_features,) int64: the side row whose key one-hot feature each feature is, or -1."""
    out = np.full(n_features, -1, np.int64)
    for raw, r in side.index.items():
        f = column_ids.get(raw)
        if f is not None and 0 <= f < n_features:
            out[f] = r
    return out


def row_keys(indptr, indices, key, what, path):
    """The side row of each CSR row, from its key feature (key_index); a row without one is bad input."""
    n = len(indptr) - 1
    ids = np.asarray(indices, np.int64)
    ids = np.where(ids < len(key), ids, 0)
    hit = np.where(np.asarray(indices, np.int64) < len(key), key[ids], -1)
    out = np.full(n, -1, np.int64)
    nz = np.flatnonzero(np.diff(indptr) > 0)
    if len(nz):
        out[nz] = np.maximum.reduceat(hit, np.asarray(indptr[:-1], np.int64)[nz])
    bad = np.flatnonzero(out < 0)
    if len(bad):
        raise UsageError(f"{path}: row {bad[0] + 1} has no {what} feature of the mapping "
                         f"({len(bad)} such rows): -method bpr needs a user and an item in every row")
    return out


def positives_csr(users, items, n_users):
    """(indptr, items) of each user's distinct positive items, sorted."""
    key = np.unique(users * np.int64(2**31) + items)
    u, i = key // np.int64(2**31), key % np.int64(2**31)
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
    return indptr, i.astype(np.int64)


def check_negatives(pos_indptr, n_items, user_ids):
    """Every user with a positive needs an item to draw as its negative."""
    full = np.flatnonzero(np.diff(pos_indptr) >= n_items)
    if len(full):
        raise UsageError(f"-method bpr: user {user_ids[full[0]]!r} has a positive for every one of the "
                         f"{n_items} items ({len(full)} such users): no negative to draw")


def harmonic(n):
    """H[K] = Σ_{r=1..K} 1/r for K = 0..n (WARP's Φ)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


# ---- kernels ----------------------------------------------------------------------------------

@njit(inline="always")
def _side(indices, data, a, b, w, V, use_w, q):
    """q = a side's factor sums; returns its own part (linear terms + pairs within it)."""
    q[:] = 0.0
    acc, sq = row_sums(indices, data, a, b, 0.0, w, V, use_w, q)
    pair = 0.0
    for f in range(q.shape[0]):
        pair += q[f] * q[f]
    return acc + 0.5 * (pair - sq)


@njit(inline="always")
def _diff(bi, bj, qu, qi, qj):
    d = bi - bj
    for f in range(qu.shape[0]):
        d += qu[f] * (qi[f] - qj[f])
    return d


@njit(inline="always")
def _step_w(w, f, grad, eta, mode, a_w, b_w, c1, c2):
    """One step rule on w[f] (the state arrays of the other rules may be empty)."""
    if mode == SGD:
        w[f] -= eta * grad
    elif mode == ADAGRAD:
        w[f], a_w[f] = _adagrad(w[f], grad, eta, a_w[f])
    else:
        w[f], a_w[f], b_w[f] = _adam(w[f], grad, eta, a_w[f], b_w[f], c1, c2)


@njit(inline="always")
def _step_v(V, f, c, grad, eta, mode, a_V, b_V, c1, c2):
    """One step rule on V[f, c]."""
    if mode == SGD:
        V[f, c] -= eta * grad
    elif mode == ADAGRAD:
        V[f, c], a_V[f, c] = _adagrad(V[f, c], grad, eta, a_V[f, c])
    else:
        V[f, c], a_V[f, c], b_V[f, c] = _adam(V[f, c], grad, eta, a_V[f, c], b_V[f, c], c1, c2)


@njit(inline="always")
def _clock(pw, f, mode):
    """Adam's bias corrections after ticking feature f's clock (1, 1 for the others)."""
    if mode != ADAM:
        return 1.0, 1.0
    pw[f, 0] *= ADAM_BETA1
    pw[f, 1] *= ADAM_BETA2
    return 1.0 / (1.0 - pw[f, 0]), 1.0 / (1.0 - pw[f, 1])


@njit(inline="always")
def _w_step(w, f, gx, r1, eta1, mode, a_w, b_w, c1, c2):
    """The step on w[f] of a feature with ∂d/∂w_f·g = gx (a user feature: 0), + λ w_f."""
    _step_w(w, f, gx + r1 * w[f], eta1, mode, a_w, b_w, c1, c2)


@njit(inline="always")
def _user_v(V, f, c, gx, qi_c, qj_c, r2, eta2, mode, a_V, b_V, c1, c2):
    """A user feature's step on V[f, c]: ∂d/∂v = x (q_i − q_j) (gx = g·x), + λ v."""
    _step_v(V, f, c, gx * (qi_c - qj_c) + r2 * V[f, c], eta2, mode, a_V, b_V, c1, c2)


@njit(inline="always")
def _item_v(V, f, c, gx, qu_c, q_c, x, r2, eta2, mode, a_V, b_V, c1, c2):
    """An item feature's step on V[f, c] (read here, before its update): ∂d/∂v = ±x (q_u + q −
    v x) with q the item's factor sum (gx = ±g·x: + for the positive, − for the negative), + λ v."""
    v = V[f, c]
    _step_v(V, f, c, gx * (qu_c + q_c - v * x) + r2 * v, eta2, mode, a_V, b_V, c1, c2)


@njit(inline="always")
def _disjoint(it_ind, ia, ib, ja, jb, nf, mark, stamp):
    """Whether the item rows ia..ib and ja..jb have no feature twice (in one or across both):
    mark[f] = stamp for their features (stamp new for each call)."""
    ok = True
    for p in range(ia, ib):
        f = it_ind[p]
        if f < nf:
            if mark[f] == stamp:
                ok = False
            mark[f] = stamp
    for p in range(ja, jb):
        f = it_ind[p]
        if f < nf:
            if mark[f] == stamp:
                ok = False
            mark[f] = stamp
    return ok


@njit
def _step_shared(g, it_ind, it_dat, ia, ib, ja, jb, qu, qi, qj, w, V, use_w, eta1, eta2, r1, r2, mode,
                 a_w, a_V, b_w, b_V, pw, slot, slot_f, gw, gV):
    """The item rows' step when a feature is in both (or twice in one): each feature's
    gradients summed at the parameters before the step, then one update per feature. slot:
    (nf,) −1 (restored on return); slot_f, gw, gV: scratch of the two rows' sizes."""
    nf, k = V.shape
    ns = 0
    for side in range(2):
        a, b = (ia, ib) if side == 0 else (ja, jb)
        sgn = 1.0 if side == 0 else -1.0
        for p in range(a, b):
            f = it_ind[p]
            if f >= nf:
                continue
            x = np.float64(it_dat[p])
            s = slot[f]
            if s < 0:
                s = ns
                slot[f] = s
                slot_f[s] = f
                gw[s] = 0.0
                for c in range(k):
                    gV[s, c] = 0.0
                ns += 1
            gx = sgn * g * x
            gw[s] += gx
            for c in range(k):
                gV[s, c] += gx * (qu[c] + (qi[c] if side == 0 else qj[c]) - V[f, c] * x)
    for s in range(ns):
        f = slot_f[s]
        slot[f] = -1
        c1, c2 = _clock(pw, f, mode)
        if use_w:
            _step_w(w, f, gw[s] + r1 * w[f], eta1, mode, a_w, b_w, c1, c2)
        for c in range(k):
            _step_v(V, f, c, gV[s, c] + r2 * V[f, c], eta2, mode, a_V, b_V, c1, c2)


@njit
def _is_positive(bits, u, j):
    """Whether item j is a positive of user u in the bitset of the positives (positive_bits)."""
    return (bits[u, j >> 6] >> np.uint64(j & 63)) & np.uint64(1) != 0


@njit
def _by_rejection(bits, a, b, n_items):
    """Whether user u's negative (positives pos_items[a:b]) is drawn by rejection from the bitset."""
    return bits.shape[0] > 0 and 2 * (b - a) <= n_items


@njit
def _by_rank(pos_items, a, b, n_items, s):
    """(state, a uniform item among those not in the sorted pos_items[a:b]) from the draws'
    state s: the r-th non-positive, r + t with t = #{m : pos[a + m] − m ≤ r} (pos[a + m] − m
    is non-decreasing), by a binary search whose steps do not branch on the data."""
    n = b - a
    s, r = next_below(s, n_items - n)
    base = 0
    while n > 1:
        half = n >> 1
        m = base + half
        base = m if pos_items[a + m] - m <= r else base
        n -= half
    if n > 0 and pos_items[a + base] - base <= r:
        base += 1
    return s, r + base


@njit(inline="always")
def _draw_negative(pos_items, a, b, n_items, bits, u, s):
    """(state, a uniform item among those that are not in the sorted pos_items[a:b]) (user
    u's; s: the draws' state).
    With the bitset of the positives (positive_bits) and at most half of the items positive:
    uniform items until one is not a positive (rejection; under 2 draws expected); else by
    rank (_by_rank). bpr_epoch_one_hot writes this loop out (the same draws): numba's inlined
    copy of `bits` costs a reference count pair per call when the inlined body loops."""
    if _by_rejection(bits, a, b, n_items):
        s, j = next_below(s, n_items)
        while _is_positive(bits, u, j):
            s, j = next_below(s, n_items)
        return s, j
    return _by_rank(pos_items, a, b, n_items, s)


@njit
def draw_negatives(pos_indptr, pos_items, users, n_items, seed, bits):
    """One negative per entry of `users` (tests; the epochs draw the same way)."""
    s = stream_key(seed)
    out = np.empty(len(users), np.int64)
    for t in range(len(users)):
        u = users[t]
        s, out[t] = _draw_negative(pos_items, pos_indptr[u], pos_indptr[u + 1], n_items, bits, u, s)
    return out


def positive_bits(pos_indptr, pos_items, n_items, limit=BITSET_BYTES):
    """(n_users, ⌈n_items / 64⌉) uint64: bit i of row u set for u's positive items (the
    rejection sampler's test), or (0, 0) when it would take more than `limit` bytes."""
    n_users = len(pos_indptr) - 1
    words = (n_items + 63) // 64
    if n_users * words * 8 > limit:
        return np.zeros((0, 0), np.uint64)
    bits = np.zeros((n_users, words), np.uint64)
    users = np.repeat(np.arange(n_users), np.diff(pos_indptr))
    items = np.asarray(pos_items, np.int64)
    np.bitwise_or.at(bits, (users, items >> 6), np.left_shift(np.uint64(1), (items & 63).astype(np.uint64)))
    return bits


@njit(inline="always")
def _bpr_step(d, uw, lin, prod, scaled):
    """A uniform step's loss and gradient: −ln σ(d) = max(−d, 0) + ln(1 + e^{−|d|}) from one
    exp, without overflow, added to the epoch's sums (lin, prod, scaled; _epoch_loss): a
    positive of weight uw = 1 adds max(−d, 0) to lin and multiplies prod by 1 + e^{−|d|}
    (at most 2; rescaled by 2^−LOSS_SCALE_BITS, counted in scaled, before it could overflow),
    so the epoch takes one log instead of one a step; another weight adds uw·(−ln σ(d)) to lin.
    Returns (uw·∂/∂d, with ∂/∂d = −σ(−d); lin; prod; scaled)."""
    e = np.exp(-abs(d))
    g = -(e if d >= 0.0 else 1.0) / (1.0 + e)
    if uw == 1.0:
        lin += max(-d, 0.0)
        prod *= 1.0 + e
        if prod > LOSS_SCALE:
            prod /= LOSS_SCALE      # exact: a power of two
            scaled += 1
    else:
        lin += uw * (max(-d, 0.0) + np.log1p(e))
    return uw * g, lin, prod, scaled


@njit(inline="always")
def _epoch_loss(lin, prod, scaled):
    """Σ loss of an epoch from _bpr_step's sums (WARP's steps add to lin)."""
    return lin + np.log(prod) + scaled * LOSS_SCALE_BITS * np.log(2.0)


@njit(inline="always")
def _epoch(order, pair_u, pair_i, pos_indptr, pos_items, u_ptr, u_ind, u_dat, it_ptr, it_ind, it_dat,
           w, V, use_w, rates, reg, mode, a_w, a_V, b_w, b_V, pw, sampling, n_neg, max_sampled, H,
           seed, fixed_j, bits, weights):
    """bpr_epoch's pass. Each step reads the factor
    sums q_u, q_i, q_j at the parameters before it: q_u and q_i once per positive (again after a step when another
    negative follows), q_j once per draw; the user row's and, when no feature is in both item
    rows, the items' parameters are updated in place as their gradients are read."""
    rs = stream_key(seed)
    nf, k = V.shape
    n_items = it_ptr.shape[0] - 1
    eta1, eta2 = rates[1], rates[2]
    r1, r2 = reg[1], reg[2]
    qu, qi, qj = np.empty(k), np.empty(k), np.empty(k)
    mark = np.full(nf, -1, np.int64)
    slot = np.full(nf, -1, np.int64)
    width = 0
    for r in range(n_items):
        width = max(width, it_ptr[r + 1] - it_ptr[r])
    slot_f = np.empty(2 * width, np.int64)
    gw = np.empty(2 * width)
    gV = np.empty((2 * width, k))
    use_fixed = fixed_j.shape[0] > 0
    uniform = sampling == UNIFORM
    weighted = weights.shape[0] > 0
    lin, prod, scaled, steps = 0.0, 1.0, 0, 0
    for t in range(order.shape[0]):
        e = order[t]
        uw = 1.0
        if weighted:
            uw = weights[e]
            if uw == 0.0:
                continue
            r1, r2 = reg[1] * uw, reg[2] * uw
        u, i = pair_u[e], pair_i[e]
        ua, ub = u_ptr[u], u_ptr[u + 1]
        pa, pb = pos_indptr[u], pos_indptr[u + 1]
        ia, ib = it_ptr[i], it_ptr[i + 1]
        _side(u_ind, u_dat, ua, ub, w, V, use_w, qu)
        bi = _side(it_ind, it_dat, ia, ib, w, V, use_w, qi)
        for s in range(n_neg if uniform else 1):
            if uniform:
                if s:   # the last step moved them
                    _side(u_ind, u_dat, ua, ub, w, V, use_w, qu)
                    bi = _side(it_ind, it_dat, ia, ib, w, V, use_w, qi)
                if use_fixed:
                    j = fixed_j[t]
                else:
                    rs, j = _draw_negative(pos_items, pa, pb, n_items, bits, u, rs)
                bj = _side(it_ind, it_dat, it_ptr[j], it_ptr[j + 1], w, V, use_w, qj)
                g, lin, prod, scaled = _bpr_step(_diff(bi, bj, qu, qi, qj), uw, lin, prod, scaled)
            else:
                steps += 1
                found = 0
                d = 0.0
                j = 0
                for n in range(1, max_sampled + 1):
                    rs, j = _draw_negative(pos_items, pa, pb, n_items, bits, u, rs)
                    bj = _side(it_ind, it_dat, it_ptr[j], it_ptr[j + 1], w, V, use_w, qj)
                    d = _diff(bi, bj, qu, qi, qj)
                    if d < WARP_MARGIN:
                        found = n
                        break
                if not found:
                    continue
                phi = H[(n_items - (pb - pa)) // found]
                lin += uw * phi * (WARP_MARGIN - d)
                g = -phi * uw
            ja, jb = it_ptr[j], it_ptr[j + 1]
            # the user row: ∂d/∂v_l = x_l (q_i − q_j), w_l only regularised
            for p in range(ua, ub):
                f = u_ind[p]
                if f >= nf:
                    continue
                gx = g * np.float64(u_dat[p])
                c1, c2 = _clock(pw, f, mode)
                if use_w:
                    _w_step(w, f, 0.0, r1, eta1, mode, a_w, b_w, c1, c2)
                for c in range(k):
                    _user_v(V, f, c, gx, qi[c], qj[c], r2, eta2, mode, a_V, b_V, c1, c2)
            stamp = steps if uniform else steps - 1
            if _disjoint(it_ind, ia, ib, ja, jb, nf, mark, stamp):
                # feature l of item i (sign +) and of item j (sign −), each in no other row:
                # ∂d/∂v_l = ±x_l (q_u + q − v_l x_l), ∂d/∂w_l = ±x_l, read before its update
                for p in range(ia, ib):
                    f = it_ind[p]
                    if f >= nf:
                        continue
                    x = np.float64(it_dat[p])
                    gx = g * x
                    c1, c2 = _clock(pw, f, mode)
                    if use_w:
                        _w_step(w, f, gx, r1, eta1, mode, a_w, b_w, c1, c2)
                    for c in range(k):
                        _item_v(V, f, c, gx, qu[c], qi[c], x, r2, eta2, mode, a_V, b_V, c1, c2)
                for p in range(ja, jb):
                    f = it_ind[p]
                    if f >= nf:
                        continue
                    x = np.float64(it_dat[p])
                    gx = -g * x
                    c1, c2 = _clock(pw, f, mode)
                    if use_w:
                        _w_step(w, f, gx, r1, eta1, mode, a_w, b_w, c1, c2)
                    for c in range(k):
                        _item_v(V, f, c, gx, qu[c], qj[c], x, r2, eta2, mode, a_V, b_V, c1, c2)
            else:
                _step_shared(g, it_ind, it_dat, ia, ib, ja, jb, qu, qi, qj, w, V, use_w, eta1, eta2, r1, r2,
                             mode, a_w, a_V, b_w, b_V, pw, slot, slot_f, gw, gV)
            if uniform:
                steps += 1
    return _epoch_loss(lin, prod, scaled), steps


@njit
def bpr_epoch(order, pair_u, pair_i, pos_indptr, pos_items, u_ptr, u_ind, u_dat, it_ptr, it_ind, it_dat,
              w, V, use_w, rates, reg, mode, a_w, a_V, b_w, b_V, pw, sampling, n_neg, max_sampled, H,
              seed, fixed_j, bits, weights):
    """One pass over the positives in `order` (indices of pair_u, pair_i); returns (Σ loss, steps).
    weights (by positive, -weights; empty: all 1): a positive's steps (the loss's gradient and
    the L2 terms) and its loss are scaled by its weight; a positive of weight 0 is skipped (no
    draw, no step).
    sampling UNIFORM: n_neg steps per positive, each with its own uniform negative; WARP: one
    step per positive (see the module). fixed_j (len(order),) ≥ 0: the negative of each visit
    (uniform, n_neg 1; tests), else drawn (bits: positive_bits, weights). The epoch (_epoch) is inlined
    once per step rule with `mode` a constant: its switches fold away (SGD: 0.7x the time)."""
    if mode == SGD:
        return _epoch(order, pair_u, pair_i, pos_indptr, pos_items, u_ptr, u_ind, u_dat, it_ptr, it_ind, it_dat, w, V,
                      use_w, rates, reg, SGD, a_w, a_V, b_w, b_V, pw, sampling, n_neg, max_sampled, H, seed, fixed_j,
                      bits, weights)
    elif mode == ADAGRAD:
        return _epoch(order, pair_u, pair_i, pos_indptr, pos_items, u_ptr, u_ind, u_dat, it_ptr, it_ind, it_dat, w, V,
                      use_w, rates, reg, ADAGRAD, a_w, a_V, b_w, b_V, pw, sampling, n_neg, max_sampled, H, seed,
                      fixed_j, bits, weights)
    return _epoch(order, pair_u, pair_i, pos_indptr, pos_items, u_ptr, u_ind, u_dat, it_ptr, it_ind, it_dat, w, V,
                  use_w, rates, reg, ADAM, a_w, a_V, b_w, b_V, pw, sampling, n_neg, max_sampled, H, seed, fixed_j, bits, weights)


# ---- the one-hot fast path: each user and each item one feature of value 1 --------------------

def one_hot_features(indptr, indices, data, n_features):
    """(n_rows,) int64: each CSR row's one feature, when every row is exactly one feature
    < n_features of value 1; else None."""
    indptr = np.asarray(indptr, np.int64)
    if not (np.diff(indptr) == 1).all():
        return None
    f = np.asarray(indices, np.int64)[indptr[:-1]]
    if len(f) and (f.max() >= n_features or f.min() < 0):
        return None
    if not (np.asarray(data)[indptr[:-1]] == 1).all():
        return None
    return f


def one_hot_sides(user_rows, item_rows, n_features):
    """(user_f, item_f): the feature of each user row and of each item row when bpr_epoch_one_hot
    computes what bpr_epoch does: every row one feature of value 1 (no side features, no
    relations), no two items of one feature (two items of a step share none) and no feature
    both a user's and an item's; else None."""
    uf = one_hot_features(*user_rows, n_features)
    itf = one_hot_features(*item_rows, n_features)
    if uf is None or itf is None:
        return None
    if len(np.unique(itf)) < len(itf) or np.isin(uf, itf).any():
        return None
    return uf, itf


@njit(inline="always")
def _epoch_one_hot(order, pair_u, pair_i, pos_indptr, pos_items, user_f, item_f, w, V, use_w, rates, reg, mode,
                   a_w, a_V, b_w, b_V, pw, sampling, n_neg, max_sampled, H, seed, bits, weights):
    """_epoch on one-hot sides (one_hot_sides): q_u, q_i, q_j are the rows V[f_u], V[f_i], V[f_j]
    and b = w_f; the three rows' steps in one loop over the factors, each read before its
    update. The same draws, loss and steps as _epoch, in the same order, by its helpers."""
    rs = stream_key(seed)
    k = V.shape[1]
    n_items = item_f.shape[0]
    eta1, eta2 = rates[1], rates[2]
    r1, r2 = reg[1], reg[2]
    uniform = sampling == UNIFORM
    n_steps, n_draws = (n_neg, 1) if uniform else (1, max_sampled)
    weighted = weights.shape[0] > 0
    lin, prod, scaled, steps = 0.0, 1.0, 0, 0
    for t in range(order.shape[0]):
        e = order[t]
        uw = 1.0
        if weighted:            # as _epoch
            uw = weights[e]
            if uw == 0.0:
                continue
            r1, r2 = reg[1] * uw, reg[2] * uw
        u, i = pair_u[e], pair_i[e]
        pa, pb = pos_indptr[u], pos_indptr[u + 1]
        rejection = _by_rejection(bits, pa, pb, n_items)
        fu, fi = user_f[u], item_f[i]
        for s in range(n_steps):
            bi = w[fi] if use_w else 0.0
            found = 0
            d = 0.0
            fj = 0
            for n in range(1, n_draws + 1):    # uniform: one draw; WARP: until d < margin
                if rejection:                  # _draw_negative
                    rs, j = next_below(rs, n_items)
                    while _is_positive(bits, u, j):
                        rs, j = next_below(rs, n_items)
                else:
                    rs, j = _by_rank(pos_items, pa, pb, n_items, rs)
                fj = item_f[j]
                d = _diff(bi, w[fj] if use_w else 0.0, V[fu], V[fi], V[fj])
                if uniform or d < WARP_MARGIN:
                    found = n
                    break
            if uniform:
                g, lin, prod, scaled = _bpr_step(d, uw, lin, prod, scaled)
                steps += 1
            else:
                steps += 1
                if not found:
                    continue
                phi = H[(n_items - (pb - pa)) // found]
                lin += uw * phi * (WARP_MARGIN - d)
                g = -phi * uw
            cu1, cu2 = _clock(pw, fu, mode)
            ci1, ci2 = _clock(pw, fi, mode)
            cj1, cj2 = _clock(pw, fj, mode)
            if use_w:
                _w_step(w, fu, 0.0, r1, eta1, mode, a_w, b_w, cu1, cu2)
                _w_step(w, fi, g, r1, eta1, mode, a_w, b_w, ci1, ci2)
                _w_step(w, fj, -g, r1, eta1, mode, a_w, b_w, cj1, cj2)
            for c in range(k):
                vu, vi, vj = V[fu, c], V[fi, c], V[fj, c]
                _user_v(V, fu, c, g, vi, vj, r2, eta2, mode, a_V, b_V, cu1, cu2)
                _item_v(V, fi, c, g, vu, vi, 1.0, r2, eta2, mode, a_V, b_V, ci1, ci2)
                _item_v(V, fj, c, -g, vu, vj, 1.0, r2, eta2, mode, a_V, b_V, cj1, cj2)
    return _epoch_loss(lin, prod, scaled), steps


@njit
def bpr_epoch_one_hot(order, pair_u, pair_i, pos_indptr, pos_items, user_f, item_f, w, V, use_w, rates, reg, mode,
                      a_w, a_V, b_w, b_V, pw, sampling, n_neg, max_sampled, H, seed, bits, weights):
    """bpr_epoch when one_hot_sides holds (user_f, item_f: its arrays; no fixed_j): the same
    result, the same random stream. Inlined once per step rule and sampling, both constants."""
    if sampling == UNIFORM:
        if mode == SGD:
            return _epoch_one_hot(order, pair_u, pair_i, pos_indptr, pos_items, user_f, item_f, w, V, use_w, rates,
                                  reg, SGD, a_w, a_V, b_w, b_V, pw, UNIFORM, n_neg, max_sampled, H, seed, bits, weights)
        elif mode == ADAGRAD:
            return _epoch_one_hot(order, pair_u, pair_i, pos_indptr, pos_items, user_f, item_f, w, V, use_w, rates,
                                  reg, ADAGRAD, a_w, a_V, b_w, b_V, pw, UNIFORM, n_neg, max_sampled, H, seed, bits, weights)
        return _epoch_one_hot(order, pair_u, pair_i, pos_indptr, pos_items, user_f, item_f, w, V, use_w, rates,
                              reg, ADAM, a_w, a_V, b_w, b_V, pw, UNIFORM, n_neg, max_sampled, H, seed, bits, weights)
    if mode == SGD:
        return _epoch_one_hot(order, pair_u, pair_i, pos_indptr, pos_items, user_f, item_f, w, V, use_w, rates,
                              reg, SGD, a_w, a_V, b_w, b_V, pw, WARP, n_neg, max_sampled, H, seed, bits, weights)
    elif mode == ADAGRAD:
        return _epoch_one_hot(order, pair_u, pair_i, pos_indptr, pos_items, user_f, item_f, w, V, use_w, rates,
                              reg, ADAGRAD, a_w, a_V, b_w, b_V, pw, WARP, n_neg, max_sampled, H, seed, bits, weights)
    return _epoch_one_hot(order, pair_u, pair_i, pos_indptr, pos_items, user_f, item_f, w, V, use_w, rates,
                          reg, ADAM, a_w, a_V, b_w, b_V, pw, WARP, n_neg, max_sampled, H, seed, bits, weights)

# ---- the learner ------------------------------------------------------------------------------

class BPRLearner(Learner):
    """-method bpr: the positives of the train rows, the sides of opts.mapping (the convert
    mapping); predictions are raw scores (the model is a ranking model: no clipping)."""

    ranking = True

    def __init__(self, model, train, evals, groups, opts, rng):
        from fmcli.recommend import load_sides

        self.model, self.train, self.evals, self.opts, self.rng = model, train, evals, opts, rng
        self.rates = np.array(tuple(opts.learn_rate) if np.ndim(opts.learn_rate) else (opts.learn_rate,) * 3,
                              np.float64)
        self.reg = np.array(opts.regular[:3], np.float64)
        model.y_min, model.y_max = -np.inf, np.inf     # scores, not ratings
        model.meta["ranking"] = {"loss": "bpr", "sampling": opts.sampling, "negatives": opts.negatives,
                                 "max_sampled": opts.max_sampled}
        from fmcli.convert.mapping import read_mapping_json

        if read_mapping_json(opts.mapping).get("entities") is None:
            raise UsageError(f"--mapping {opts.mapping}: no user and item sides (entities): -method bpr needs "
                             "the mapping of fmcli convert --user COL --item COL")
        self.mapping = load_sides(opts.mapping, model)
        self.pair_u, self.pair_i = rows_pairs(train, self.mapping, opts.mapping, train.source)
        m = self.mapping
        self.n_items = m.item.n_rows
        # -weights: one per train row, i.e. per positive (pair_u, pair_i); empty: all 1. A
        # positive of weight 0 is left out, also of the user's positives (it may be a negative)
        w = getattr(train, "weights", None)
        self.weights = np.ascontiguousarray(w, np.float64) if w is not None else np.empty(0)
        kept = self.weights > 0 if len(self.weights) else np.ones(len(self.pair_u), bool)
        self.pos = positives_csr(self.pair_u[kept], self.pair_i[kept], m.user.n_rows)
        check_negatives(self.pos[0], self.n_items, m.user.ids)
        self.bits = positive_bits(*self.pos, self.n_items)
        self.user_rows = (m.user.indptr, m.user.indices, m.user.data)
        self.item_rows = (m.item.indptr, m.item.indices, m.item.data)
        self.one_hot = one_hot_sides(self.user_rows, self.item_rows, model.n_features)   # the fast path's
        self.H = harmonic(self.n_items)
        self.order = np.empty(len(self.pair_u), np.int64)
        self.mode = OPTIMIZERS[opts.optimizer]
        self.state = optimizer_state(self.mode, model.n_features, model.k)
        self.loss = float("nan")
        self.n_users_trained = int((np.diff(self.pos[0]) > 0).sum())
        if not opts.warm_start:   # features no step touches keep V = 0 (as -method sgd)
            seen = np.zeros(model.n_features, bool)
            trained = np.repeat(np.diff(self.pos[0]) > 0, np.diff(self.user_rows[0]))
            for ind in (self.user_rows[1][trained], self.item_rows[1]):
                seen[ind[ind < model.n_features]] = True
            model.V[~seen] = 0.0
        self.notes = run_notes(m, self.pos, train.y, opts.mapping)
        self.validation = None
        if "validation" in evals:
            v = evals["validation"]
            vu, vi = rows_pairs(v, m, opts.mapping, v.source)
            self.validation = positives_csr(vu, vi, m.user.n_rows)

    def step(self, it):
        m = self.model
        permutation(int(self.rng.integers(2**63 - 1)), self.order)   # the epoch's visit order
        order, seed = self.order, int(self.rng.integers(2**31 - 1))
        sampling = UNIFORM if self.opts.sampling == "uniform" else WARP
        if self.one_hot is not None:
            total, steps = bpr_epoch_one_hot(order, self.pair_u, self.pair_i, *self.pos, *self.one_hot, m.w, m.V,
                                             m.use_w, self.rates, self.reg, self.mode, *self.state[1:3],
                                             *self.state[4:6], self.state[6], sampling, self.opts.negatives,
                                             self.opts.max_sampled, self.H, seed, self.bits, self.weights)
        else:
            total, steps = bpr_epoch(order, self.pair_u, self.pair_i, *self.pos, *self.user_rows, *self.item_rows,
                                     m.w, m.V, m.use_w, self.rates, self.reg, self.mode, *self.state[1:3],
                                     *self.state[4:6], self.state[6], sampling, self.opts.negatives,
                                     self.opts.max_sampled, self.H, seed, np.empty(0, np.int64), self.bits,
                                     self.weights)
        self.loss = total / steps if steps else 0.0
        check_diverged(f"BPR ({self.opts.optimizer})", it, total, max(steps, 1), 2.0,
                       bool(np.isfinite(m.w).all() and np.isfinite(m.V).all()),
                       f"a smaller -learn_rate (now {','.join('%g' % r for r in self.rates)}) or a larger -regular")

    def ranking_metrics(self, k):
        """fmcli recommend --evaluate's metrics at cut-off k on -validation's positives, the train
        positives excluded."""
        from fmcli.recommend import Scorer, evaluate_scorer, parameter_sets, side_terms

        rel_ptr, rel_items = self.validation
        excl_ptr, excl_items = self.pos
        # a train positive is not relevant (it is excluded from the lists)
        users_of = np.repeat(np.arange(len(rel_ptr) - 1), np.diff(rel_ptr))
        keep = ~np.isin(users_of * self.n_items + rel_items,
                        np.repeat(np.arange(len(excl_ptr) - 1), np.diff(excl_ptr)) * self.n_items + excl_items)
        relevant = positives_csr(users_of[keep], rel_items[keep], len(rel_ptr) - 1)
        users = np.flatnonzero(np.diff(relevant[0]) > 0)
        scorer = Scorer.of_model(self.model, self.item_rows)
        params = parameter_sets(self.model)

        def chunks():
            step = scorer.users_per_chunk()
            for a in range(0, len(users), step):
                which = users[a:a + step]
                yield which, side_terms(self.model, *self.mapping.user.rows(which), params)

        return evaluate_scorer(scorer, chunks(), (excl_ptr, excl_items), relevant, k)

    def train_scores(self):
        return self.model.predict(*self.train.csr(), relations=self.train.relations), self.train.y

    def eval_predictions(self, name):
        d = self.evals[name]
        return self.model.predict(*d.csr(), relations=d.relations)

    def final_model(self):
        return self.model

    def log_values(self):
        return {"bpr_loss": self.loss} if self.opts.sampling == "uniform" else {"warp_loss": self.loss}


def run_notes(mapping, pos, y, mapping_file):
    """What a run tells the user about its positives: users of the mapping without any (not
    trained), and targets that look like ratings given as positives."""
    from fmcli.convert.mapping import read_mapping_json

    notes = []
    missing = int((np.diff(pos[0]) == 0).sum())
    if missing:
        notes.append(f"{missing} of the mapping's {mapping.user.n_rows} users have no positive in -train: "
                     "their factors are not trained (their lists follow the items' scores)")
    finite = y[np.isfinite(y)]
    values = np.unique(finite)
    if len(values) > 1 and read_mapping_json(mapping_file).get("min_rating") is None:
        notes.append(f"-method bpr takes every train row as a positive; its targets ({len(values)} values, "
                     f"{values.min():g} to {values.max():g}) are ignored: to keep only the high ratings, convert "
                     "with --min-rating R")
    return notes


def rows_pairs(data, mapping, mapping_file, path):
    """(user rows, item rows) of the mapping's sides for each row of `data`, found by the
    user's and the item's key one-hot (the column's value -> id table of the mapping file)."""
    from fmcli.convert.mapping import read_mapping_json

    cols = {c["name"]: c for c in read_mapping_json(mapping_file)["columns"]}
    n = max(int(data.indices.max()) + 1 if len(data.indices) else 0, 1)
    out = []
    for side, what in ((mapping.user, "user"), (mapping.item, "item")):
        key = key_index(side, cols[side.column]["ids"], n)
        out.append(row_keys(data.indptr, data.indices, key, f"{what} ({side.column})", path))
    return tuple(out)

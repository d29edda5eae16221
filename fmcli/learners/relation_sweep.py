"""The relation kernels of ALS and MCMC: the features of a relation (libFM's block structure,
libfm-behaviour §4), swept coordinate by coordinate from per-relation-row statistics of the
linked rows' caches (fmcli.learners.sweep describes the caches and the update).

The features of relation row r are shared by the m_r train rows linked to it, so a relation
feature's column in the flat data is the union of those rows. Its updates need only per-relation-row sums of the linked
rows' caches: with a_i = q_{i,f} − Q_{r,f} (the part of q not from this relation, fixed
while the relation's v_{·,f} are updated) and Q' = Q_{r,f} − x v_{j,f}:

    w_j:     Σ_i h_i² = x² m_r,                            Σ_i h_i e_i = x E_r
    v_{j,f}: Σ_i h_i² = x² (Q'² m_r + 2 Q' A_r + AA_r),     Σ_i h_i e_i = x (Q' E_r + AE_r)

(m = Σ1, A = Σa, AA = Σa², E = Σe, AE = Σae over the linked rows; with -weights each linked
row's terms are scaled by its weight u_i: m = Σu, A = Σ u a, ..., and the formulas hold as
they are, E and AE moving by x Δ (Q' m + A) and x Δ (Q' A + AA) in the weighted sums too). A change Δ moves every
linked e_i by x Δ (Q' + a_i): E and AE follow in O(1) per relation entry, and the change is
kept per relation row (D0 + D1 a_i) and written into the rows' caches after the
coordinate's pass. Feature by feature this would need the k×k moments Σ a_f a_g per
relation row (the e changes of v_{j,f} move Σ a_g e); coordinate by coordinate, as libFM
sweeps relation features (all w_j, then all v_{j,0}, ...), one factor's moments suffice.
Cost of a relation per sweep: O(k (train rows + relation entries)).

Compiled without fastmath (EXACT_FLOAT): with reassoc/contract, these kernels compiled in the
running process and the same kernels loaded from numba's cache gave models that differed in
the last bits (the first run after a cache wipe against every later one); without, cold and
warm runs agree (tests/test_robust.py). The main sweep's kernels agree either way.
"""


import numba
import numpy as np
from numba import prange

from fmcli.config import EXACT_FLOAT, njit
from fmcli.learners.streams import stream_normals
from fmcli.learners.sweep import REJ_V, REJ_W, finite, solve

# columns of the per-relation-row statistics array `stats`
_M, _A, _AA, _E, _AE, _D0, _D1, _Q0 = range(8)


@njit(fastmath=EXACT_FLOAT)
def _relation_w(j, J, cptr, crow, cval, stats, w, lam, mu, alpha, z, rej):
    """w_J (J = offset + j, the model id of relation feature j) from the relation rows'
    statistics; the change goes into E and D0."""
    old = w[J]
    s1 = 0.0
    s2 = 0.0
    for p in range(cptr[j], cptr[j + 1]):
        r = crow[p]
        x = np.float64(cval[p])
        s2 += x * x * stats[r, _M]
        s1 += x * (old * x * stats[r, _M] - stats[r, _E])
    new = solve(alpha * s1 + lam * mu, lam + alpha * s2, z)
    if not finite(new):
        rej[REJ_W] += 1
        return
    d = new - old
    for p in range(cptr[j], cptr[j + 1]):
        r = crow[p]
        xd = np.float64(cval[p]) * d
        stats[r, _E] += xd * stats[r, _M]
        stats[r, _D0] += xd
    w[J] = new


@njit(fastmath=EXACT_FLOAT)
def _relation_v(j, J, f, cptr, crow, cval, stats, qf, V, lam, mu, alpha, z, rej):
    """v_{J,f} from the relation rows' statistics of factor f; qf[r], the rows' current factor
    sums of factor f, follows the change."""
    old = V[J, f]
    s1 = 0.0
    s2 = 0.0
    for p in range(cptr[j], cptr[j + 1]):
        r = crow[p]
        x = np.float64(cval[p])
        qp = qf[r] - x * old
        hh = x * x * (qp * qp * stats[r, _M] + 2.0 * qp * stats[r, _A] + stats[r, _AA])
        s2 += hh
        s1 += old * hh - x * (qp * stats[r, _E] + stats[r, _AE])
    new = solve(alpha * s1 + lam * mu, lam + alpha * s2, z)
    if not finite(new):
        rej[REJ_V] += 1
        return
    d = new - old
    for p in range(cptr[j], cptr[j + 1]):
        # entry by entry, as sweep._column_in_place: a duplicated entry sees the earlier one's change
        r = crow[p]
        x = np.float64(cval[p])
        qp = qf[r] - x * old
        xd = x * d
        stats[r, _E] += xd * (qp * stats[r, _M] + stats[r, _A])
        stats[r, _AE] += xd * (qp * stats[r, _A] + stats[r, _AA])
        stats[r, _D0] += xd * qp
        stats[r, _D1] += xd
        qf[r] += xd
    V[J, f] = new


@njit(fastmath=EXACT_FLOAT)
def _relation_feature(j, offset, c, cptr, crow, cval, stats, qf, groups, w, V, alpha, lam_w, mu_w,
                      lam_v, mu_v, z, rej):
    """Coordinate c (0: w, 1 + f: v_{·,f}) of relation feature j (model id offset + j); z: its
    normal draws (stream offset + j of the sweep's seed; zeros for ALS)."""
    J = offset + j
    g = groups[J]
    if c == 0:
        _relation_w(j, J, cptr, crow, cval, stats, w, lam_w[g], mu_w[g], alpha, z[0], rej)
    else:
        _relation_v(j, J, c - 1, cptr, crow, cval, stats, qf, V, lam_v[g, c - 1], mu_v[g, c - 1],
                    alpha, z[c], rej)


@njit(parallel=True, fastmath=EXACT_FLOAT)
def sweep_relation(cptr, crow, cval, order, lane_ptr, n_lanes, offset, link_ptr, link_rows,
                   groups, cache, Q, stats, w, V, use_w, alpha, lam_w, mu_w, lam_v, mu_v, sample, seed,
                   rej, weights, row_len):
    """The features of one relation, coordinate by coordinate (w, then v_{·,0}, ...); for each:
    the statistics of the linked train rows per relation row (rows link_rows[link_ptr[r] :
    link_ptr[r+1]] of the cache), the colour classes in parallel lanes (lane_ptr as in
    sweep.sweep; the features of a class share no linked relation row), then the changes
    written into the cache (in the same pass over the rows as the next coordinate's
    statistics).
    cptr/crow/cval: the relation's CSC over its linked rows, local feature ids (model id =
    offset + id); Q (relation rows, k): the rows' factor sums, current on entry, read only:
    factor f's column is copied into a contiguous vector when coordinate f starts, and the
    feature updates keep that copy current (a column of Q is 8k bytes a row apart; no later
    coordinate reads the column again).
    The row passes work on a copy of the linked rows' cache entries, column by column in
    link order (buf[col, t] = cache[link_rows[t], col]; link_rows is a permutation of the train
    rows, so the copy aliases nothing): each pass then reads two contiguous columns instead of
    gathering a cache row per linked row; the copy goes back into the cache at the end. Same
    dtype, same operations in the same order: the same bits as updating the cache in place.
    weights: each cache row's weight (-weights), or empty: every row 1. row_len: each cache row's
    count of non-zero values (its relation rows' included): a row of fewer than two has no
    pairwise interaction, and is left out of the factors' statistics and changes (its h is
    exactly 0, as sweep._paired), not of the linear terms'."""
    k = V.shape[1]
    n_rows = Q.shape[0]
    n_cols = cache.shape[1]
    buf = np.empty((n_cols, link_rows.shape[0]), cache.dtype)
    weighted = weights.shape[0] > 0
    lw = np.empty(link_rows.shape[0] if weighted else 0)     # the linked rows' weights, link order
    qf = np.empty(n_rows)          # the current coordinate's factor sums, Q[:, f] as it changes
    paired = np.empty(link_rows.shape[0], np.bool_)           # the linked rows with a pair, link order
    # each feature's k + 1 normals, drawn once for all its coordinates (the stream is the same
    # for every coordinate; coordinate c uses draw c)
    n_features = cptr.shape[0] - 1
    zs = np.zeros((n_features, k + 1))
    if sample:
        for j in prange(n_features):
            stream_normals(seed, offset + j, zs[j])
    for r in prange(n_rows):
        for t in range(link_ptr[r], link_ptr[r + 1]):
            i = link_rows[t]
            for col in range(n_cols):
                buf[col, t] = cache[i, col]
            if weighted:
                lw[t] = weights[i]
            paired[t] = row_len[i] >= 2
    n_classes = (lane_ptr.shape[0] - 1) // n_lanes
    first = 0 if use_w else 1
    for c in range(first, k + 2):
        # one pass over the linked rows: the previous coordinate's changes into the cache, then the
        # statistics of this one (none after the last)
        f = c - 1
        for r in prange(n_rows):
            d0 = stats[r, _D0] if c > first else 0.0
            d1 = stats[r, _D1] if c > first else 0.0
            qold = stats[r, _Q0]
            m = 0.0
            sa = 0.0
            saa = 0.0
            se = 0.0
            sae = 0.0
            q0 = Q[r, f] if 0 <= f < k else 0.0
            qf[r] = q0
            for t in range(link_ptr[r], link_ptr[r + 1]):
                if c == 1:                  # after w
                    buf[0, t] += d0
                elif c > first:             # after v_{·,c−2}: cache column c − 1
                    a = np.float64(buf[c - 1, t]) - qold
                    if paired[t]:
                        buf[0, t] += d0 + d1 * a
                    buf[c - 1, t] += d1
                if c <= k and (f < 0 or paired[t]):
                    e = np.float64(buf[0, t])
                    u = lw[t] if weighted else 1.0    # u = 1: the same bits as no factor at all
                    m += u
                    se += u * e
                    if f >= 0:
                        a = np.float64(buf[1 + f, t]) - q0
                        sa += u * a
                        saa += u * a * a
                        sae += u * a * e
            stats[r, _M], stats[r, _A], stats[r, _AA], stats[r, _E], stats[r, _AE] = m, sa, saa, se, sae
            stats[r, _D0], stats[r, _D1], stats[r, _Q0] = 0.0, 0.0, q0
        if c > k:
            break
        if n_lanes == 1:
            # one lane: the classes one after the other without a parallel launch per class
            # (a relation of long rows has hundreds of small classes)
            for t in range(lane_ptr[0], lane_ptr[n_classes]):
                j = order[t]
                _relation_feature(j, offset, c, cptr, crow, cval, stats, qf, groups, w, V, alpha,
                                  lam_w, mu_w, lam_v, mu_v, zs[j], rej[0])
        else:
            for cl in range(n_classes):
                for lane in prange(n_lanes):
                    tid = numba.get_thread_id()
                    for t in range(lane_ptr[cl * n_lanes + lane], lane_ptr[cl * n_lanes + lane + 1]):
                        j = order[t]
                        _relation_feature(j, offset, c, cptr, crow, cval, stats, qf, groups, w, V,
                                          alpha, lam_w, mu_w, lam_v, mu_v, zs[j], rej[tid])
    for r in prange(n_rows):
        for t in range(link_ptr[r], link_ptr[r + 1]):
            i = link_rows[t]
            for col in range(n_cols):
                cache[i, col] = buf[col, t]

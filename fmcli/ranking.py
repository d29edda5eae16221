"""Ranking metrics of top-N lists against each user's set of relevant items.

Per user u with relevant set R_u (|R_u| > 0) and ranked list L_u (best first, at most k
items, no repeats), with hits h = |L_u[:k] ∩ R_u|:

    precision@k = h / k                      recall@k = h / |R_u|
    hit rate@k  = 1 if h > 0 else 0
    NDCG@k      = Σ_{r < k, L_u[r] ∈ R_u} 1/log2(r + 2)  /  Σ_{r < min(k, |R_u|)} 1/log2(r + 2)
    MAP@k       = Σ_{r < k, L_u[r] ∈ R_u} precision@(r + 1)  /  min(k, |R_u|)
    AUC         = P(score of a relevant candidate > score of a non-relevant one), ties ½,
                  over the user's candidates (the items that were not excluded)
    capped_precision@k = Σ_u h_u / Σ_u min(k, |R_u|)

Each metric is the mean over the users that have at least one relevant item (AUC: at least
one relevant and one non-relevant candidate), but capped precision, a ratio of sums over
them: the precision of the `implicit` library's ranking_metrics_at_k (a user with fewer than
k relevant items can reach 1), to compare figures with that library's. Items are indices 0..n_items-1; a list is
padded with -1 where a user had fewer than k candidates. Relevant sets are CSR
(rel_indptr, rel_items), each user's items sorted ascending.
"""

import numpy as np

from numba import prange

from fmcli.config import njit

TOPK_METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "capped_precision")
_MEANS = 5   # the first five are means over the users; capped precision a ratio of sums


def topk_metrics(ranked, rel_indptr, rel_items, k):
    """{name: mean over users with a relevant item} for TOPK_METRICS at cut-off k, and
    "users": how many users were counted. ranked: (n_users, >= k) int64, -1 padded."""
    if k <= 0:
        raise ValueError("k must be positive")
    per_user = np.full((_MEANS + 2, len(rel_indptr) - 1), np.nan)
    _topk_rows(np.ascontiguousarray(ranked[:, :k], np.int64), np.asarray(rel_indptr, np.int64),
               np.asarray(rel_items, np.int64), per_user)
    counted = ~np.isnan(per_user[0])
    nan = float("nan")
    out = {name: float(per_user[t, counted].mean()) if counted.any() else nan
           for t, name in enumerate(TOPK_METRICS[:_MEANS])}
    out["capped_precision"] = float(per_user[_MEANS, counted].sum() / per_user[_MEANS + 1, counted].sum()) \
        if counted.any() else nan
    out["users"] = int(counted.sum())
    return out


@njit(parallel=True)
def _topk_rows(ranked, rel_indptr, rel_items, out):
    """out[:, u] = (precision, recall, ndcg, map, hit, hits, min(k, |R_u|)) of user u; NaN for
    a user without relevant items."""
    k = ranked.shape[1]
    for u in prange(ranked.shape[0]):
        a, b = rel_indptr[u], rel_indptr[u + 1]
        n_rel = b - a
        if n_rel == 0:
            continue
        hits = 0
        dcg = 0.0
        ap = 0.0
        for r in range(k):
            item = ranked[u, r]
            if item < 0:
                break
            # binary search in the user's sorted relevant items
            lo, hi = a, b
            while lo < hi:
                mid = (lo + hi) // 2
                if rel_items[mid] < item:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < b and rel_items[lo] == item:
                hits += 1
                dcg += 1.0 / np.log2(r + 2.0)
                ap += hits / (r + 1.0)
        ideal = 0.0
        for r in range(min(k, n_rel)):
            ideal += 1.0 / np.log2(r + 2.0)
        out[0, u] = hits / k
        out[1, u] = hits / n_rel
        out[2, u] = dcg / ideal
        out[3, u] = ap / min(k, n_rel)
        out[4, u] = 1.0 if hits > 0 else 0.0
        out[5, u] = hits
        out[6, u] = min(k, n_rel)


def auc_rows(scores, candidate, relevant):
    """Per-row AUC (NaN where a row has no relevant or no non-relevant candidate).
    scores: (n_rows, n_items) float64; candidate, relevant: (n_rows, n_items) bool (a relevant
    item that is not a candidate is left out)."""
    out = np.empty(scores.shape[0])
    _auc_rows(np.ascontiguousarray(scores, np.float64), np.ascontiguousarray(candidate),
              np.ascontiguousarray(relevant), out)
    return out


@njit(parallel=True)
def _auc_rows(scores, candidate, relevant, out):
    """Mann-Whitney: (sum of the relevant candidates' average ranks − n_r (n_r + 1) / 2) / (n_r n_n)."""
    n_items = scores.shape[1]
    for u in prange(scores.shape[0]):
        n_cand = 0
        for i in range(n_items):
            n_cand += candidate[u, i]
        vals = np.empty(n_cand)
        rel = np.empty(n_cand, np.bool_)
        c = 0
        for i in range(n_items):
            if candidate[u, i]:
                vals[c] = scores[u, i]
                rel[c] = relevant[u, i]
                c += 1
        order = np.argsort(vals, kind="mergesort")
        rank_sum = 0.0
        n_rel = 0
        t = 0
        while t < n_cand:   # tie groups share their average rank (1-based)
            e = t
            while e + 1 < n_cand and vals[order[e + 1]] == vals[order[t]]:
                e += 1
            avg = 0.5 * (t + e) + 1.0
            for p in range(t, e + 1):
                if rel[order[p]]:
                    rank_sum += avg
                    n_rel += 1
            t = e + 1
        n_non = n_cand - n_rel
        if n_rel == 0 or n_non == 0:
            out[u] = np.nan
        else:
            out[u] = (rank_sum - 0.5 * n_rel * (n_rel + 1.0)) / (n_rel * n_non)

"""fmcli recommend: ranking metrics, the top-N engine and the command."""

import math

import numpy as np
import pytest

from fmcli import ranking


# ---- ranking metrics against brute-force references ---------------------------------------------

def reference_topk(ranked, relevant, k):
    """The metrics of fmcli.ranking's docstring, written out with Python sets."""
    sums, users = {name: 0.0 for name in ranking.TOPK_METRICS}, 0
    for items, rel in zip(ranked, relevant):
        if not rel:
            continue
        users += 1
        top = [i for i in items[:k] if i >= 0]
        hit_ranks = [r for r, i in enumerate(top) if i in rel]
        sums["precision"] += len(hit_ranks) / k
        sums["recall"] += len(hit_ranks) / len(rel)
        sums["hit_rate"] += bool(hit_ranks)
        sums["ndcg"] += sum(1 / math.log2(r + 2) for r in hit_ranks) / \
            sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
        sums["map"] += sum((h + 1) / (r + 1) for h, r in enumerate(hit_ranks)) / min(k, len(rel))
    return {name: v / users for name, v in sums.items()}, users


def reference_auc(scores, candidate, relevant):
    out = []
    for s, c, r in zip(scores, candidate, relevant):
        pos = [s[i] for i in range(len(s)) if c[i] and r[i]]
        neg = [s[i] for i in range(len(s)) if c[i] and not r[i]]
        if not pos or not neg:
            out.append(np.nan)
            continue
        out.append(sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg)))
    return np.array(out)


def csr_of_sets(sets):
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    items = np.array([i for s in sets for i in sorted(s)], np.int64)
    return indptr, items


@pytest.mark.parametrize("seed", range(8))
def test_topk_metrics_match_reference(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 12, 15, int(rng.integers(1, 8))
    ranked = np.full((n_users, k + 2), -1, np.int64)
    relevant = []
    for u in range(n_users):
        n = int(rng.integers(0, k + 3))   # some users have fewer than k candidates
        ranked[u, :n] = rng.choice(n_items, n, replace=False)
        relevant.append(set(rng.choice(n_items, int(rng.integers(0, 6)), replace=False).tolist()))
    relevant[0] = set()                   # a user without relevant items is not counted
    got = ranking.topk_metrics(ranked, *csr_of_sets(relevant), k)
    want, users = reference_topk(ranked.tolist(), relevant, k)
    assert got["users"] == users
    for name in ranking.TOPK_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-15), name


def test_topk_metrics_perfect_and_empty():
    ranked = np.array([[3, 1, -1]])
    got = ranking.topk_metrics(ranked, np.array([0, 2]), np.array([1, 3]), 2)
    assert got == {"precision": 1.0, "recall": 1.0, "ndcg": 1.0, "map": 1.0, "hit_rate": 1.0, "users": 1}
    got = ranking.topk_metrics(ranked, np.array([0, 1]), np.array([7]), 2)
    assert got["ndcg"] == got["map"] == got["hit_rate"] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_pair_counting(seed):
    rng = np.random.default_rng(100 + seed)
    n_users, n_items = 9, 13
    scores = rng.integers(0, 5, (n_users, n_items)).astype(np.float64)   # many ties
    candidate = rng.random((n_users, n_items)) < 0.8
    relevant = rng.random((n_users, n_items)) < 0.3
    relevant[1] = False                                                 # no relevant: NaN
    got = ranking.auc_rows(scores, candidate, relevant)
    want = reference_auc(scores, candidate, relevant)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert np.isnan(got[1])

"""-method bpr's kernel against plain numpy references: the step is the gradient of the BPR
loss (central finite differences on small random FMs, features shared by the two items
included), negatives are uniform among the user's non-positives and never a positive, and on
planted data the learned ranking approaches the planted one."""

import numpy as np
import pytest
from naive import fm_predict_rows

from fmcli.learners.bpr import SGD, UNIFORM, WARP, bpr_epoch, draw_negatives, harmonic, positive_bits, \
    positives_csr
from fmcli.learners.sgd import ADAGRAD, ADAM, optimizer_state


def csr(rows):
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    ind = np.array([f for r in rows for f, _ in r], np.int32)
    dat = np.array([x for r in rows for _, x in r], np.float32)
    return indptr, ind, dat


def random_sides(rng, n_users=3, n_items=4, n_user_f=5, n_item_f=6):
    """Users' features 0..n_user_f-1, items' n_user_f.. (some shared between items)."""
    users = [[(int(f), float(np.float32(rng.uniform(0.5, 1.5)))) for f in
              sorted(rng.choice(n_user_f, rng.integers(1, 4), replace=False))] for _ in range(n_users)]
    items = [[(int(n_user_f + f), float(np.float32(rng.uniform(0.5, 1.5)))) for f in
              sorted(rng.choice(n_item_f, rng.integers(1, 4), replace=False))] for _ in range(n_items)]
    return users, items, n_user_f + n_item_f


def naive_loss(users, items, u, i, j, w, V):
    rows = [users[u] + items[i], users[u] + items[j]]
    yi, yj = fm_predict_rows(rows, 0.0, w, V)
    return np.log1p(np.exp(-(yi - yj)))


def one_step(users, items, u, i, j, w, V, eta, reg=(0, 0, 0), mode=SGD, use_w=True):
    w, V = w.copy(), V.copy()
    uptr, uind, udat = csr(users)
    iptr, iind, idat = csr(items)
    pos = positives_csr(np.array([u]), np.array([i]), len(users))
    state = optimizer_state(mode, len(w), V.shape[1])
    total, steps = bpr_epoch(np.zeros(1, np.int64), np.array([u]), np.array([i]), *pos, uptr, uind, udat,
                             iptr, iind, idat, w, V, use_w, np.array([0, eta, eta]), np.array(reg, float),
                             mode, state[1], state[2], state[4], state[5], state[6], UNIFORM, 1, 1,
                             harmonic(len(items)), 0, np.array([j], np.int64),
                             positive_bits(*pos, len(items)))
    return w, V, total


@pytest.mark.parametrize("seed", range(6))
def test_step_is_the_bpr_gradient(seed):
    rng = np.random.default_rng(seed)
    users, items, n = random_sides(rng)
    k = 3
    w, V = rng.normal(0, 0.5, n), rng.normal(0, 0.5, (n, k))
    u, i, j = int(rng.integers(3)), 0, 1 + int(rng.integers(3))
    eta = 1e-7
    w1, V1, loss = one_step(users, items, u, i, j, w, V, eta)
    assert loss == pytest.approx(naive_loss(users, items, u, i, j, w, V), rel=1e-9)
    h = 1e-6
    for theta, stepped in ((w, w1), (V, V1)):
        flat = theta.reshape(-1)
        for p in range(flat.size):
            old = flat[p]
            flat[p] = old + h
            up = naive_loss(users, items, u, i, j, w, V)
            flat[p] = old - h
            down = naive_loss(users, items, u, i, j, w, V)
            flat[p] = old
            fd = (up - down) / (2 * h)
            got = (flat[p] - stepped.reshape(-1)[p]) / eta
            assert got == pytest.approx(fd, abs=1e-5, rel=1e-4), (p, got, fd)


def test_shared_item_feature_gets_both_gradients():
    """A feature of both the positive and the negative item: the two parts add up."""
    users = [[(0, 1.0)]]
    items = [[(1, 1.0), (3, 0.75)], [(2, 1.0), (3, 0.75)]]
    rng = np.random.default_rng(3)
    w, V = rng.normal(0, 0.5, 4), rng.normal(0, 0.5, (4, 2))
    eta, h = 1e-7, 1e-6
    w1, V1, _ = one_step(users, items, 0, 0, 1, w, V, eta)
    for f in range(2):
        Vp, Vm = V.copy(), V.copy()
        Vp[3, f] += h
        Vm[3, f] -= h
        fd = (naive_loss(users, items, 0, 0, 1, w, Vp) - naive_loss(users, items, 0, 0, 1, w, Vm)) / (2 * h)
        assert (V[3, f] - V1[3, f]) / eta == pytest.approx(fd, rel=1e-4, abs=1e-6)
        assert abs(fd) > 1e-3   # the check can fail: the shared feature has a gradient


def test_regularisation_on_the_steps_features_only():
    rng = np.random.default_rng(5)
    users, items, n = random_sides(rng, n_items=5)
    w, V = rng.normal(0, 0.5, n), rng.normal(0, 0.5, (n, 2))
    eta, lam = 1e-7, 0.3
    w0_, V0_, _ = one_step(users, items, 0, 0, 1, w, V, eta)
    w1_, V1_, _ = one_step(users, items, 0, 0, 1, w, V, eta, reg=(0, lam, lam))
    touched = sorted({f for f, _ in users[0] + items[0] + items[1]})
    untouched = [f for f in range(n) if f not in touched]
    np.testing.assert_allclose((w0_ - w1_)[touched] / eta, lam * w[touched], rtol=1e-5)
    np.testing.assert_allclose((V0_ - V1_)[touched] / eta, lam * V[touched], rtol=1e-5)
    assert np.array_equal(V1_[untouched], V[untouched]) and np.array_equal(w1_[untouched], w[untouched])


@pytest.mark.parametrize("mode", [ADAGRAD, ADAM])
def test_step_rules_move_against_the_gradient(mode):
    """AdaGrad's and Adam's first step: -η·sign(g) per parameter (|γ|/(√γ² + ε) ≈ 1)."""
    rng = np.random.default_rng(11)
    users, items, n = random_sides(rng)
    w, V = rng.normal(0, 0.5, n), rng.normal(0, 0.5, (n, 2))
    eta = 1e-3
    g_w, g_V, _ = one_step(users, items, 1, 0, 2, w, V, 1e-8)
    w1, V1, _ = one_step(users, items, 1, 0, 2, w, V, eta, mode=mode)
    gV = (V - g_V) / 1e-8
    big = np.abs(gV) > 1e-3
    np.testing.assert_allclose((V - V1)[big], eta * np.sign(gV[big]), rtol=1e-3)


@pytest.mark.parametrize("sampler", ["rejection", "rank"])
def test_negatives_are_uniform_non_positives(sampler):
    """Both samplers (rejection from the bitset; the rank mapping, for users with more than
    half of the items positive or without the bitset): every non-positive, uniformly, no positive."""
    rng = np.random.default_rng(0)
    n_users, n_items = 9, 12
    users = np.repeat(np.arange(n_users), rng.integers(1, n_items, n_users))
    items = rng.integers(0, n_items, len(users))
    ptr, pos = positives_csr(users, items, n_users)
    counts_per_user = np.diff(ptr)
    assert (2 * counts_per_user <= n_items).any() and (2 * counts_per_user > n_items).any()
    bits = positive_bits(ptr, pos, n_items, limit=0 if sampler == "rank" else 2**20)
    assert bits.shape == ((0, 0) if sampler == "rank" else (n_users, 1))
    draws_for = np.repeat(np.arange(n_users), 6000)
    neg = draw_negatives(ptr, pos, draws_for, n_items, 42, bits)
    for u in range(n_users):
        mine = set(pos[ptr[u]:ptr[u + 1]].tolist())
        got = neg[draws_for == u]
        assert not mine & set(got.tolist())
        counts = np.bincount(got, minlength=n_items)
        allowed = [i for i in range(n_items) if i not in mine]
        assert set(np.flatnonzero(counts)) == set(allowed)       # every non-positive is drawn
        expected = 6000 / len(allowed)
        assert np.abs(counts[allowed] - expected).max() < 5 * np.sqrt(expected)
    assert np.array_equal(neg, draw_negatives(ptr, pos, draws_for, n_items, 42, bits))


def test_positive_bits():
    ptr, pos = positives_csr(np.array([0, 0, 1, 1, 1]), np.array([3, 64, 0, 69, 69]), 3)
    bits = positive_bits(ptr, pos, 70)
    want = np.zeros((3, 70), bool)
    want[0, [3, 64]] = want[1, [0, 69]] = True
    got = (bits[:, np.arange(70) >> 6] >> (np.arange(70) & 63).astype(np.uint64)) & np.uint64(1)
    assert np.array_equal(got.astype(bool), want)
    assert positive_bits(ptr, pos, 70, limit=3 * 2 * 8 - 1).shape == (0, 0)


def planted(seed, n_users=60, n_items=50, k=3, per_user=12):
    """A planted FM ranking (one-hot users and items): each user's positives are its top-scored items."""
    rng = np.random.default_rng(seed)
    Vu, Vi, bi = rng.normal(0, 1, (n_users, k)), rng.normal(0, 1, (n_items, k)), rng.normal(0, 0.5, n_items)
    scores = Vu @ Vi.T + bi
    top = np.argsort(-scores, axis=1)[:, :per_user]
    return scores, top


def auc_of(scores, top):
    aucs = []
    for u in range(scores.shape[0]):
        rel = np.zeros(scores.shape[1], bool)
        rel[top[u]] = True
        s_r, s_n = scores[u, rel], scores[u, ~rel]
        aucs.append(((s_r[:, None] > s_n[None, :]) + 0.5 * (s_r[:, None] == s_n[None, :])).mean())
    return float(np.mean(aucs))


@pytest.mark.parametrize("sampling", [UNIFORM, WARP])
def test_planted_ranking_is_learned(sampling):
    scores, top = planted(0, n_users=200, n_items=50, per_user=16)
    n_users, n_items = scores.shape
    # half of each user's positives to train, the other half held out
    train = top[:, ::2]
    users = np.repeat(np.arange(n_users), train.shape[1])
    items = train.ravel()
    uptr, uind, udat = csr([[(u, 1.0)] for u in range(n_users)])
    iptr, iind, idat = csr([[(n_users + i, 1.0)] for i in range(n_items)])
    n = n_users + n_items
    rng = np.random.default_rng(1)
    w, V = np.zeros(n), rng.normal(0, 0.1, (n, 3))
    pos = positives_csr(users, items, n_users)
    state = optimizer_state(ADAGRAD, n, 3)
    for it in range(200):
        bpr_epoch(rng.permutation(len(users)).astype(np.int64), users, items, *pos, uptr, uind, udat, iptr, iind,
                  idat, w, V, True, np.array([0, 0.1, 0.1]), np.array([0, 0.01, 0.01]), ADAGRAD, state[1],
                  state[2], state[4], state[5], state[6], sampling, 1, 50, harmonic(n_items), it,
                  np.empty(0, np.int64), positive_bits(*pos, n_items))
    learned = V[:n_users] @ V[n_users:].T + w[n_users:]
    # the held-out half against the items that are not positives at all
    held = top[:, 1::2]
    aucs = []
    for u in range(n_users):
        neg = np.setdiff1d(np.arange(n_items), top[u])
        s_r, s_n = learned[u, held[u]], learned[u, neg]
        aucs.append((s_r[:, None] > s_n[None, :]).mean())
    assert auc_of(scores, top) == 1.0
    assert np.mean(aucs) > 0.93, np.mean(aucs)   # (untrained factors: 0.5)

"""-method bpr's kernel against plain numpy references: the step is the gradient of the BPR
loss (central finite differences on small random FMs, features shared by the two items
included), negatives are uniform among the user's non-positives and never a positive, and on
planted data the learned ranking approaches the planted one. The one-hot fast path
(bpr_epoch_one_hot) against the general kernel on one-hot data, and against finite differences."""

import numpy as np
import pytest
from naive import fm_predict_rows

from fmcli.learners.bpr import SGD, UNIFORM, WARP, bpr_epoch, bpr_epoch_one_hot, draw_negatives, harmonic, \
    one_hot_sides, positive_bits, positives_csr
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
                             positive_bits(*pos, len(items)), np.empty(0))
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
                  np.empty(0, np.int64), positive_bits(*pos, n_items), np.empty(0))
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


# ---- the one-hot fast path ------------------------------------------------------------------

def one_hot_problem(seed, n_users=40, n_items=60, n_pos=800, spare=3):
    """One-hot users and items (features shuffled, `spare` features of neither) and random positives."""
    rng = np.random.default_rng(seed)
    uf = rng.permutation(n_users)
    itf = n_users + spare + rng.permutation(n_items)
    users = csr([[(int(f), 1.0)] for f in uf])
    items = csr([[(int(f), 1.0)] for f in itf])
    key = np.unique(rng.integers(0, n_users, n_pos) * n_items + rng.integers(0, n_items, n_pos))
    return users, items, n_users + n_items + spare, key // n_items, key % n_items


@pytest.mark.parametrize("mode", [SGD, ADAGRAD, ADAM])
@pytest.mark.parametrize("sampling,n_neg", [(UNIFORM, 1), (UNIFORM, 2), (WARP, 1)])
@pytest.mark.parametrize("use_w,sampler", [(True, "rejection"), (False, "rejection"), (True, "rank")])
def test_one_hot_fast_path_is_the_general_kernel(mode, sampling, n_neg, use_w, sampler):
    """On one-hot data, bpr_epoch_one_hot and bpr_epoch give the same parameters, optimizer
    state, losses and step counts after some epochs from the same seeds (the same draws)."""
    users, items, n, pu, pi = one_hot_problem(mode + 3 * sampling + n_neg)
    n_items = len(items[0]) - 1
    sides = one_hot_sides(users, items, n)
    assert sides is not None and np.array_equal(sides[0], users[1]) and np.array_equal(sides[1], items[1])
    pos = positives_csr(pu, pi, len(users[0]) - 1)
    bits = positive_bits(*pos, n_items, limit=0 if sampler == "rank" else 2**20)
    assert bits.shape[0] == (0 if sampler == "rank" else len(users[0]) - 1)
    k = 5
    runs = []
    for fast in (True, False):
        rng = np.random.default_rng(1)
        w, V = rng.normal(0, 0.1, n), rng.normal(0, 0.3, (n, k))
        st = optimizer_state(mode, n, k)
        out = []
        for e in range(6):
            order = np.random.default_rng(e).permutation(len(pu))
            args = (w, V, use_w, np.array([0, 0.05, 0.05]), np.array([0, 0.01, 0.02]), mode, st[1], st[2], st[4],
                    st[5], st[6], sampling, n_neg, 10, harmonic(n_items), 100 + e)
            if fast:
                out.append(bpr_epoch_one_hot(order, pu, pi, *pos, *sides, *args, bits, np.empty(0)))
            else:
                out.append(bpr_epoch(order, pu, pi, *pos, *users, *items, *args, np.empty(0, np.int64), bits,
                                     np.empty(0)))
        runs.append((w, V, st, out))
    (w1, V1, st1, out1), (w2, V2, st2, out2) = runs
    np.testing.assert_allclose(w1, w2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(V1, V2, rtol=0, atol=1e-12)
    for a, b in zip(st1, st2):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert [s for _, s in out1] == [s for _, s in out2]
    np.testing.assert_allclose([t for t, _ in out1], [t for t, _ in out2], rtol=1e-12)
    rng = np.random.default_rng(1)
    rng.normal(0, 0.1, n)
    assert np.abs(V1 - rng.normal(0, 0.3, (n, k))).max() > 0.01    # the epochs moved the factors


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_epoch_loss_is_the_sum_of_its_steps_losses(fast, weighted):
    """The epoch's loss (a running product of the 1 + e^{−|d|}, rescaled by powers of two, and
    one log) is Σ −ln σ(d) of its steps: with learning rates 0 every visit sees the same
    parameters; two users with item 0 positive, item 1 their only negative; 6,000 visits (a
    product of about 2^5000, rescaled several times), weights 1 and 0.5 mixed or none."""
    users, items = csr([[(0, 1.0)], [(1, 1.0)]]), csr([[(2, 1.0)], [(3, 1.0)]])
    n, k = 4, 3
    rng = np.random.default_rng(5)
    w, V = rng.normal(0, 0.1, n), rng.normal(0, 0.2, (n, k))
    pu, pi = np.array([0, 1]), np.array([0, 0])
    pos = positives_csr(pu, pi, 2)
    bits = positive_bits(*pos, 2)
    order = np.arange(6000, dtype=np.int64) % 2
    weights = np.array([1.0, 0.5]) if weighted else np.empty(0)
    st = optimizer_state(SGD, n, k)
    args = (w, V, True, np.zeros(3), np.zeros(3), SGD, st[1], st[2], st[4], st[5], st[6], UNIFORM, 1, 10,
            harmonic(2), 3)
    if fast:
        sides = one_hot_sides(users, items, n)
        total, steps = bpr_epoch_one_hot(order, pu, pi, *pos, *sides, *args, bits, weights)
    else:
        total, steps = bpr_epoch(order, pu, pi, *pos, *users, *items, *args, np.empty(0, np.int64), bits, weights)
    per_user = [naive_loss([[(0, 1.0)], [(1, 1.0)]], [[(2, 1.0)], [(3, 1.0)]], u, 0, 1, w, V) for u in (0, 1)]
    scale = weights if weighted else np.ones(2)
    assert steps == 6000
    assert total == pytest.approx(3000 * (scale[0] * per_user[0] + scale[1] * per_user[1]), rel=1e-12)


def test_one_hot_sides_only_when_the_fast_path_computes_the_same():
    users, items, n, _, _ = one_hot_problem(0, n_users=4, n_items=5)
    assert one_hot_sides(users, items, n) is not None
    uptr, uind, udat = users
    iptr, iind, idat = items
    two = csr([[(0, 1.0)], [(1, 1.0), (2, 1.0)], [(3, 1.0)], [(4, 1.0)]])    # a side feature
    assert one_hot_sides(two, items, n) is None
    assert one_hot_sides(users, (iptr, iind, np.where(np.arange(len(idat)) == 2, 0.5, idat).astype(np.float32)),
                         n) is None                                            # a value other than 1
    shared = iind.copy()
    shared[1] = shared[0]                                                      # two items of one feature
    assert one_hot_sides(users, (iptr, shared, idat), n) is None
    both = uind.copy()
    both[0] = iind[0]                                                          # a user's and an item's feature
    assert one_hot_sides((uptr, both, udat), items, n) is None
    assert one_hot_sides(users, items, int(iind.max())) is None               # a feature past the model's


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", [SGD, ADAGRAD])
def test_one_hot_fast_path_step_is_the_bpr_gradient(seed, mode):
    """One user with one positive of two items (the negative is the other item): the fast
    path's step is −η × the finite-difference gradient of the BPR loss + λ θ (SGD), and
    AdaGrad's first step is −η·sign of it."""
    rng = np.random.default_rng(seed)
    users, items = [[(1, 1.0)]], [[(2, 1.0)], [(0, 1.0)]]
    n, k = 4, 3
    w, V = rng.normal(0, 0.5, n), rng.normal(0, 0.5, (n, k))
    eta, lam = (1e-7, 0.3) if mode == SGD else (1e-3, 0.0)
    pos = positives_csr(np.array([0]), np.array([0]), 1)
    sides = one_hot_sides(csr(users), csr(items), n)
    assert sides is not None
    w1, V1 = w.copy(), V.copy()
    st = optimizer_state(mode, n, k)
    total, steps = bpr_epoch_one_hot(np.zeros(1, np.int64), np.array([0]), np.array([0]), *pos, *sides, w1, V1, True,
                                     np.array([0, eta, eta]), np.array([0, lam, lam]), mode, st[1], st[2], st[4],
                                     st[5], st[6], UNIFORM, 1, 1, harmonic(2), seed, positive_bits(*pos, 2),
                                     np.empty(0))
    assert steps == 1
    assert total == pytest.approx(naive_loss(users, items, 0, 0, 1, w, V), rel=1e-9)
    h = 1e-6
    for theta, stepped in ((w, w1), (V, V1)):
        flat = theta.reshape(-1)
        for p in range(flat.size):
            old = flat[p]
            flat[p] = old + h
            up = naive_loss(users, items, 0, 0, 1, w, V)
            flat[p] = old - h
            down = naive_loss(users, items, 0, 0, 1, w, V)
            flat[p] = old
            fd = (up - down) / (2 * h)
            touched = theta is V and p // k != 3 or theta is w and p != 3
            if mode == SGD:
                want = fd + (lam * old if touched else 0.0)
                assert (old - stepped.reshape(-1)[p]) / eta == pytest.approx(want, abs=1e-5, rel=1e-4), (p, fd)
            elif abs(fd) > 1e-3:
                assert (old - stepped.reshape(-1)[p]) / eta == pytest.approx(np.sign(fd), rel=1e-3), (p, fd)
    assert np.array_equal(V1[3], V[3]) and w1[3] == w[3]    # feature 3: no side's


# ---- -weights ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("sampling,n_neg", [(UNIFORM, 2), (WARP, 1)])
@pytest.mark.parametrize("mode", [SGD, ADAM])
def test_weight_zero_skips_the_positive_and_weights_scale_its_steps(fast, sampling, n_neg, mode):
    """A positive of weight 0 is the same as leaving it out of the pass (the same draws for the
    rest); weights of 1 are the unweighted pass; other weights change the result."""
    users, items, n, pu, pi = one_hot_problem(7)
    n_items = len(items[0]) - 1
    sides = one_hot_sides(users, items, n)
    pos = positives_csr(pu, pi, len(users[0]) - 1)
    bits = positive_bits(*pos, n_items)
    order = np.random.default_rng(3).permutation(len(pu))
    zero = np.where(np.arange(len(pu)) % 3 == 0, 0.0, 1.0)

    def run(rows, weights):
        rng = np.random.default_rng(1)
        w, V = rng.normal(0, 0.1, n), rng.normal(0, 0.3, (n, 4))
        st = optimizer_state(mode, n, 4)
        args = (w, V, True, np.array([0, 0.05, 0.05]), np.array([0, 0.01, 0.02]), mode, st[1], st[2], st[4],
                st[5], st[6], sampling, n_neg, 10, harmonic(n_items), 11)
        if fast:
            out = bpr_epoch_one_hot(rows, pu, pi, *pos, *sides, *args, bits, weights)
        else:
            out = bpr_epoch(rows, pu, pi, *pos, *users, *items, *args, np.empty(0, np.int64), bits, weights)
        return w, V, st, out

    for a, b in zip(run(order, zero), run(order[zero[order] > 0], np.empty(0))):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
    for a, b in zip(run(order, np.ones(len(pu))), run(order, np.empty(0))):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
    w2, V2, _, _ = run(order, np.random.default_rng(4).uniform(0.5, 2, len(pu)))
    assert np.abs(V2 - run(order, np.empty(0))[1]).max() > 1e-3


@pytest.mark.parametrize("u", [0.3, 2.0])
def test_weighted_sgd_step_is_the_step_with_scaled_rates(u):
    """Plain SGD: a positive of weight u steps by u times its gradient (loss and L2): the
    unweighted step with u times the learning rates (fixed negative)."""
    users = csr([[(0, 1.0), (5, 0.5)], [(1, 1.0)]])
    items = csr([[(2, 1.0), (6, 0.7)], [(3, 1.0)], [(4, 1.0), (6, 0.2)]])
    pos = positives_csr(np.array([0]), np.array([0]), 2)
    outs = []
    for weights, eta in ((np.array([u]), 0.05), (np.empty(0), 0.05 * u)):
        w, V = np.random.default_rng(2).normal(0, 0.1, 7), np.random.default_rng(3).normal(0, 0.3, (7, 3))
        st = optimizer_state(SGD, 7, 3)
        total, _ = bpr_epoch(np.zeros(1, np.int64), np.array([0]), np.array([0]), *pos, *users, *items, w, V, True,
                             np.array([0, eta, eta]), np.array([0, 0.01, 0.02]), SGD, st[1], st[2], st[4], st[5],
                             st[6], UNIFORM, 1, 1, harmonic(3), 0, np.array([2], np.int64),
                             positive_bits(*pos, 3), weights)
        outs.append((w, V, total))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-15)

"""SGD: the compiled epoch against a plain-Python reference, and learning on planted data."""

import numpy as np
import pytest
from conftest import random_csr

from fmcli.config import njit
from fmcli.data import SparseData
from fmcli.errors import TrainingError, UsageError
from fmcli.learners.base import TrainOptions
from fmcli.learners.sgd import SGDLearner, _sgd_epoch
from fmcli.model import FMModel


def reference_epoch(indptr, indices, data, y, order, w0, w, V, classify, rates, reg):
    """libFM's per-case update (with the unclipped gradient), written plainly."""
    w, V = w.copy(), V.copy()
    for i in order:
        ids, xs = indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]].astype(np.float64)
        s = (V[ids] * xs[:, None]).sum(0)
        pred = w0 + w[ids] @ xs + 0.5 * (s @ s - ((V[ids] * xs[:, None]) ** 2).sum())
        g = -y[i] * (1 - 1 / (1 + np.exp(-y[i] * pred))) if classify else pred - y[i]
        w0 -= rates[0] * (g + reg[0] * w0)
        for j, x in zip(ids, xs):
            w[j] -= rates[1] * (g * x + reg[1] * w[j])
        for f in range(V.shape[1]):
            for j, x in zip(ids, xs):
                V[j, f] -= rates[2] * (g * x * (s[f] - V[j, f] * x) + reg[2] * V[j, f])
    return w0, w, V


@pytest.mark.parametrize("classify", [False, True])
def test_epoch_matches_reference(rng, classify):
    n = 15
    indptr, indices, data = random_csr(rng, 60, n)
    y = np.sign(rng.normal(size=60)) if classify else rng.normal(0, 1, 60)
    order = rng.permutation(60).astype(np.int64)
    w, V = rng.normal(0, 0.1, n), rng.normal(0, 0.1, (n, 3))
    rates, reg = np.array([0.05, 0.04, 0.03]), np.array([0.01, 0.02, 0.03])
    w0_ref, w_ref, V_ref = reference_epoch(indptr, indices, data, y, order, 0.2, w, V, classify, rates, reg)
    w0 = np.array([0.2])
    _sgd_epoch(indptr, indices, data, y.astype(np.float32), order, w0, w, V, True, True, classify, rates, reg)
    assert np.allclose(w0[0], w0_ref) and np.allclose(w, w_ref) and np.allclose(V, V_ref)


def _learn(rng_seed, train, test, **kw):
    opts = TrainOptions(method="sgd", **kw)
    model = FMModel.init(max(train.n_features, test.n_features), opts.dim[2],
                         init_stdev=opts.init_stdev, rng=np.random.default_rng(rng_seed))
    model.y_min, model.y_max = float(train.y.min()), float(train.y.max())
    learner = SGDLearner(model, train, {"test": test}, opts, np.random.default_rng(rng_seed))
    for it in range(opts.iterations):
        learner.step(it)
    return learner


def _planted(rng, n_rows, n_features, k, noise):
    indptr, indices, data = random_csr(rng, n_rows, n_features, max_nnz=5)
    data[:] = 1.0
    w, V = rng.normal(0, 0.5, n_features), rng.normal(0, 0.4, (n_features, k))
    y = FMModel(1.0, w, V).predict_raw(indptr, indices, data) + rng.normal(0, noise, n_rows)
    return SparseData(indptr, indices, data, y.astype(np.float32), n_features)


def test_learns_planted_regression(rng):
    full = _planted(rng, 6000, 50, 3, noise=0.1)
    cut = 5400
    train = SparseData(full.indptr[:cut + 1], full.indices, full.data, full.y[:cut], 50)
    test = SparseData(full.indptr[cut:] - full.indptr[cut], full.indices[full.indptr[cut]:],
                      full.data[full.indptr[cut]:], full.y[cut:], 50)
    learner = _learn(1, train, test, iterations=60, learn_rate=0.02, regular=(0, 0.001, 0.001), dim=(1, 1, 3))
    pred = learner.eval_predictions("test")
    baseline = np.sqrt(np.mean((test.y - train.y.mean()) ** 2))
    rmse = np.sqrt(np.mean((pred - test.y) ** 2))
    assert rmse < 0.3 * baseline and rmse < 0.3, (rmse, baseline)


def test_classification_probabilities(rng):
    full = _planted(rng, 4000, 40, 2, noise=0.0)
    y = np.where(full.y > np.median(full.y), 1.0, -1.0).astype(np.float32)
    data = SparseData(full.indptr, full.indices, full.data, y, 40)
    learner = _learn(2, data, data, task="c", iterations=30, learn_rate=0.05, dim=(1, 1, 2))
    p = learner.eval_predictions("test")
    assert ((p >= 0) & (p <= 1)).all()
    assert np.mean((p >= 0.5) == (y > 0)) > 0.85


def test_same_seed_same_model_and_unseen_features_zero(rng):
    train = _planted(rng, 500, 30, 2, noise=0.1)
    test = SparseData(np.array([0, 1]), np.array([33], np.int32), np.ones(1, np.float32), np.ones(1, np.float32), 34)
    a = _learn(7, train, test, iterations=3).model
    b = _learn(7, train, test, iterations=3).model
    c = _learn(8, train, test, iterations=3).model
    assert a.w0 == b.w0 and np.array_equal(a.w, b.w) and np.array_equal(a.V, b.V)
    assert not np.array_equal(a.V, c.V)
    unseen = np.bincount(train.indices, minlength=34) == 0
    assert (a.V[unseen] == 0).all() and (a.w[unseen] == 0).all()


def test_divergence_is_an_error(rng):
    train = _planted(rng, 500, 30, 2, noise=0.1)
    with pytest.raises(TrainingError, match="diverged"):
        _learn(1, train, train, iterations=50, learn_rate=50.0)


# --- optimizers (--optimizer adagrad | adam) ---

from fmcli.learners.sgd import (ADAGRAD, ADAGRAD_EPS, ADAM, ADAM_BETA1, ADAM_BETA2, ADAM_EPS,  # noqa: E402
                                OPTIMIZERS, SGD, _fm_epoch, optimizer_state)


def reference_optimizer_epoch(indptr, indices, data, y, order, w0, w, V, classify, rates, reg, mode, state):
    """The same per-case gradients as reference_epoch, stepped by AdaGrad or Adam, written plainly.
    state: dicts keyed by parameter: G (AdaGrad) or m, v and each feature's clock t (Adam)."""
    w, V = w.copy(), V.copy()

    def step(key, theta, grad, eta, t):
        if mode == ADAGRAD:
            state["G"][key] = state["G"].get(key, 0.0) + grad ** 2
            return theta - eta * grad / (np.sqrt(state["G"][key]) + ADAGRAD_EPS)
        m = ADAM_BETA1 * state["m"].get(key, 0.0) + (1 - ADAM_BETA1) * grad
        v = ADAM_BETA2 * state["v"].get(key, 0.0) + (1 - ADAM_BETA2) * grad ** 2
        state["m"][key], state["v"][key] = m, v
        return theta - eta * (m / (1 - ADAM_BETA1 ** t)) / (np.sqrt(v / (1 - ADAM_BETA2 ** t)) + ADAM_EPS)

    for i in order:
        ids, xs = indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]].astype(np.float64)
        s = (V[ids] * xs[:, None]).sum(0)
        pred = w0 + w[ids] @ xs + 0.5 * (s @ s - ((V[ids] * xs[:, None]) ** 2).sum())
        g = -y[i] * (1 - 1 / (1 + np.exp(-y[i] * pred))) if classify else pred - y[i]
        clock = state.get("t", {})      # Adam's clocks: w0's, and one per feature
        clock["w0"] = clock.get("w0", 0) + 1
        w0 = step("w0", w0, g + reg[0] * w0, rates[0], clock["w0"])
        old_V = V.copy()
        for j, x in zip(ids, xs):
            clock[j] = clock.get(j, 0) + 1
            w[j] = step(("w", j), w[j], g * x + reg[1] * w[j], rates[1], clock[j])
            for f in range(V.shape[1]):
                v = old_V[j, f]
                V[j, f] = step(("V", j, f), v, g * x * (s[f] - v * x) + reg[2] * v, rates[2], clock[j])
    return w0, w, V


def _state_dicts(st, n, k):
    """The compiled state arrays as the reference's dicts."""
    a_w0, a_w, a_V, b_w0, b_w, b_V, pw = st
    first = {"w0": a_w0[0], **{("w", j): a_w[j] for j in range(n)},
             **{("V", j, f): a_V[j, f] for j in range(n) for f in range(k)}}
    if len(pw) == 0:
        return {"G": first}
    second = {"w0": b_w0[0], **{("w", j): b_w[j] for j in range(n)},
              **{("V", j, f): b_V[j, f] for j in range(n) for f in range(k)}}
    t = {j: int(round(np.log(pw[j, 0]) / np.log(ADAM_BETA1))) for j in range(n)}
    t["w0"] = int(round(np.log(pw[n, 0]) / np.log(ADAM_BETA1)))
    return {"m": first, "v": second, "t": t}


@pytest.mark.parametrize("mode", [ADAGRAD, ADAM])
@pytest.mark.parametrize("classify", [False, True])
def test_optimizer_epoch_matches_reference(rng, classify, mode):
    n, k = 15, 3
    indptr, indices, data = random_csr(rng, 60, n)
    y = np.sign(rng.normal(size=60)) if classify else rng.normal(0, 1, 60)
    w, V = rng.normal(0, 0.1, n), rng.normal(0, 0.1, (n, k))
    rates, reg = np.array([0.05, 0.04, 0.03]), np.array([0.01, 0.02, 0.03])
    st = optimizer_state(mode, n, k)
    state = {"G": {}} if mode == ADAGRAD else {"m": {}, "v": {}, "t": {}}
    w0_ref, w_ref, V_ref, w0 = 0.2, w.copy(), V.copy(), np.array([0.2])
    for _ in range(3):     # three epochs: the state carries over
        order = rng.permutation(60).astype(np.int64)
        w0_ref, w_ref, V_ref = reference_optimizer_epoch(indptr, indices, data, y, order, w0_ref, w_ref, V_ref,
                                                         classify, rates, reg, mode, state)
        _fm_epoch(indptr, indices, data, y.astype(np.float32), order, w0, w, V, True, True, classify,
                  rates, reg, mode, *st)
    assert np.allclose(w0[0], w0_ref) and np.allclose(w, w_ref) and np.allclose(V, V_ref)
    got = _state_dicts(st, n, k)
    for name, ref in state.items():
        for key, value in ref.items():
            assert np.isclose(got[name][key], value), (name, key)


@pytest.mark.parametrize("mode", [SGD, ADAGRAD, ADAM])
def test_lazy_updates_touch_only_the_rows_features(rng, mode):
    """A feature absent from every row keeps its parameters and its optimizer state."""
    n, k = 12, 3
    indptr, indices, data = random_csr(rng, 40, n)
    absent = [3, 7]
    keep = ~np.isin(indices, absent)
    counts = np.add.reduceat(np.r_[keep, False].astype(int), indptr[:-1]) * (np.diff(indptr) > 0)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices, data = indices[keep], data[keep]
    w, V = rng.normal(0, 0.1, n), rng.normal(0, 0.1, (n, k))
    st = optimizer_state(mode, n, k)
    for a in st[:6]:
        a[...] = rng.uniform(0.1, 1.0, a.shape)      # some earlier state
    if mode == ADAM:
        st[6][...] = rng.uniform(0.1, 0.9, st[6].shape)
    w1, V1, st1 = w.copy(), V.copy(), [a.copy() for a in st]
    y = rng.normal(0, 1, 40).astype(np.float32)
    _fm_epoch(indptr, indices, data, y, rng.permutation(40).astype(np.int64), np.array([0.1]), w1, V1,
              True, True, False, np.array([0.05] * 3), np.array([0.01] * 3), mode, *st1)
    present = np.unique(indices)
    assert np.array_equal(w1[absent], w[absent]) and np.array_equal(V1[absent], V[absent])
    assert not np.isin(present, absent).any() and (w1[present] != w[present]).all()
    for before, after in zip(st[1:3] + st[4:6] + st[6:], st1[1:3] + st1[4:6] + st1[6:]):
        if len(before):
            assert np.array_equal(after[absent], before[absent])
            assert (after[present] != before[present]).all()


@njit
def _sgd_epoch_before_optimizers(indptr, indices, data, y, order, w0, w, V, use_w0, use_w, classify, rates, reg):
    """The plain SGD kernel as it was before --optimizer, verbatim: the learner must give its bits."""
    k = V.shape[1]
    s = np.empty(k)
    eta0, eta1, eta2 = rates[0], rates[1], rates[2]
    r0, r1, r2 = reg[0], reg[1], reg[2]
    for i in order:
        start, end = indptr[i], indptr[i + 1]
        pred = w0[0] if use_w0 else 0.0
        sq = 0.0
        for f in range(k):
            s[f] = 0.0
        for p in range(start, end):
            j = indices[p]
            x = data[p]
            if use_w:
                pred += w[j] * x
            for f in range(k):
                vx = V[j, f] * x
                s[f] += vx
                sq += vx * vx
        for f in range(k):
            pred += 0.5 * s[f] * s[f]
        pred -= 0.5 * sq
        if classify:
            yi = y[i]
            g = -yi * (1.0 - 1.0 / (1.0 + np.exp(-yi * pred)))
        else:
            g = pred - y[i]
        if use_w0:
            w0[0] -= eta0 * (g + r0 * w0[0])
        for p in range(start, end):
            j = indices[p]
            x = data[p]
            gx = g * x
            if use_w:
                w[j] -= eta1 * (gx + r1 * w[j])
            for f in range(k):
                v = V[j, f]
                V[j, f] = v - eta2 * (gx * (s[f] - v * x) + r2 * v)


@pytest.mark.parametrize("classify", [False, True])
@pytest.mark.parametrize("use_w", [False, True])
def test_plain_sgd_bits_unchanged(rng, classify, use_w):
    """The learner's kernel in mode SGD (and _sgd_epoch) give the same bits as before the optimizers."""
    n, k = 40, 8
    indptr, indices, data = random_csr(rng, 500, n)
    y = (np.sign(rng.normal(size=500)) if classify else rng.normal(0, 1, 500)).astype(np.float32)
    w, V = rng.normal(0, 0.1, n), rng.normal(0, 0.1, (n, k))
    args = (classify, np.array([0.05, 0.04, 0.03]), np.array([0.01, 0.02, 0.03]))
    runs = [[np.array([0.2]), w.copy(), V.copy()] for _ in range(3)]
    for _ in range(3):
        order = rng.permutation(500).astype(np.int64)
        _sgd_epoch_before_optimizers(indptr, indices, data, y, order, *runs[0], True, use_w, *args)
        _fm_epoch(indptr, indices, data, y, order, *runs[1], True, use_w, *args, SGD, *optimizer_state(SGD, n, k))
        _sgd_epoch(indptr, indices, data, y, order, *runs[2], True, use_w, *args)
    for run in runs[1:]:
        assert all(np.array_equal(p, q) for p, q in zip(runs[0], run))


@pytest.mark.parametrize("optimizer,rate", [("adagrad", 0.05), ("adam", 0.01)])
def test_optimizers_learn_planted_regression(rng, optimizer, rate):
    full = _planted(rng, 6000, 50, 3, noise=0.1)
    cut = 5400
    train = SparseData(full.indptr[:cut + 1], full.indices, full.data, full.y[:cut], 50)
    test = SparseData(full.indptr[cut:] - full.indptr[cut], full.indices[full.indptr[cut]:],
                      full.data[full.indptr[cut]:], full.y[cut:], 50)
    learner = _learn(1, train, test, iterations=40, learn_rate=rate, regular=(0, 0.001, 0.001), dim=(1, 1, 3),
                     optimizer=optimizer)
    assert learner.optimizer == optimizer and len(learner.state[0]) == 1
    pred = learner.eval_predictions("test")
    baseline = np.sqrt(np.mean((test.y - train.y.mean()) ** 2))
    rmse = np.sqrt(np.mean((pred - test.y) ** 2))
    assert rmse < 0.3 * baseline and rmse < 0.3, (rmse, baseline)


@pytest.mark.parametrize("optimizer,rate", [("adagrad", 0.1), ("adam", 0.01)])
def test_optimizers_learn_planted_classification(rng, optimizer, rate):
    full = _planted(rng, 4000, 40, 2, noise=0.0)
    y = np.where(full.y > np.median(full.y), 1.0, -1.0).astype(np.float32)
    data = SparseData(full.indptr, full.indices, full.data, y, 40)
    learner = _learn(2, data, data, task="c", iterations=30, learn_rate=rate, dim=(1, 1, 2), optimizer=optimizer)
    p = learner.eval_predictions("test")
    assert ((p >= 0) & (p <= 1)).all()
    assert np.mean((p >= 0.5) == (y > 0)) > 0.85


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_optimizers_same_seed_same_model_and_unseen_features_kept(rng, optimizer):
    train = _planted(rng, 500, 30, 2, noise=0.1)
    test = SparseData(np.array([0, 1]), np.array([33], np.int32), np.ones(1, np.float32), np.ones(1, np.float32), 34)
    runs = [_learn(seed, train, test, iterations=3, optimizer=optimizer, learn_rate=0.01) for seed in (7, 7, 8)]
    a, b, c = (r.model for r in runs)
    assert a.w0 == b.w0 and np.array_equal(a.w, b.w) and np.array_equal(a.V, b.V)
    assert all(np.array_equal(p, q) for p, q in zip(runs[0].state, runs[1].state))
    assert not np.array_equal(a.V, c.V)
    unseen = np.bincount(train.indices, minlength=34) == 0
    assert (a.V[unseen] == 0).all() and (a.w[unseen] == 0).all()
    assert all((s[unseen] == 0).all() for s in runs[0].state[1:3])
    plain = _learn(7, train, test, iterations=3, learn_rate=0.01).model
    assert not np.array_equal(a.V, plain.V)


def test_optimizer_choice_is_checked(rng):
    train = _planted(rng, 100, 10, 2, noise=0.1)
    with pytest.raises(UsageError, match="optimizer"):
        _learn(1, train, train, iterations=1, optimizer="rmsprop")
    assert set(OPTIMIZERS) == {"sgd", "adagrad", "adam"}


def test_sgda_keeps_plain_sgd(rng):
    from fmcli.learners.sgda import SGDALearner
    train = _planted(rng, 100, 10, 2, noise=0.1)
    opts = TrainOptions(method="sgda", optimizer="adam")
    model = FMModel.init(10, 2, rng=np.random.default_rng(0))
    with pytest.raises(UsageError, match="sgd only"):
        SGDALearner(model, train, {"validation": train}, opts, np.random.default_rng(0))

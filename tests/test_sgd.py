"""SGD: the compiled epoch with every step rule against plain-Python references, lazy
optimizer state, divergence, and the optimizers on planted data. (What every learner does:
tests/test_learners.py.)"""

import numpy as np
import pytest
from conftest import fit, make_learner, random_csr, recsys

from fmcli import metrics
from fmcli.errors import TrainingError
from fmcli.learners.sgd import (ADAGRAD, ADAGRAD_EPS, ADAM, ADAM_BETA1, ADAM_BETA2, ADAM_EPS,
                                SGD, _fm_epoch, optimizer_state)


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
    _fm_epoch(indptr, indices, data, y.astype(np.float32), order, w0, w, V, True, True, classify, rates, reg,
              SGD, *optimizer_state(SGD, n, 3), np.empty(0))
    assert np.allclose(w0[0], w0_ref) and np.allclose(w, w_ref) and np.allclose(V, V_ref)


def test_divergence_is_an_error():
    p = recsys(1, n=500, n_test=10)
    with pytest.raises(TrainingError, match="diverged"):
        fit(make_learner("sgd", p.train, learn_rate=50.0), 50)


# --- optimizers (--optimizer adagrad | adam) ---

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
                  rates, reg, mode, *st, np.empty(0))
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
              True, True, False, np.array([0.05] * 3), np.array([0.01] * 3), mode, *st1, np.empty(0))
    present = np.unique(indices)
    assert np.array_equal(w1[absent], w[absent]) and np.array_equal(V1[absent], V[absent])
    assert not np.isin(present, absent).any() and (w1[present] != w[present]).all()
    for before, after in zip(st[1:3] + st[4:6] + st[6:], st1[1:3] + st1[4:6] + st1[6:]):
        if len(before):
            assert np.array_equal(after[absent], before[absent])
            assert (after[present] != before[present]).all()


@pytest.mark.parametrize("optimizer,rate", [("adagrad", 0.05), ("adam", 0.01)])
def test_optimizers_learn_planted_regression(optimizer, rate):
    p = recsys(1, n=6000, n_test=600, users=30, items=20, ctx=4, noise=0.1)
    lrn = fit(make_learner("sgd", p.train, {"test": p.test}, k=2, learn_rate=rate, regular=(0, 0.001, 0.001),
                           optimizer=optimizer), 40)
    assert metrics.rmse(lrn.eval_predictions("test"), p.test.y) < 0.13     # noise 0.1


@pytest.mark.parametrize("optimizer,rate", [("adagrad", 0.3), ("adam", 0.01)])
def test_optimizers_learn_planted_classification(optimizer, rate):
    p = recsys(2, n=4000, n_test=1000, users=30, items=20, ctx=4, task="c")
    lrn = fit(make_learner("sgd", p.train, {"test": p.test}, k=2, task="c", learn_rate=rate, optimizer=optimizer,
                           regular=(0, 0.01, 0.01)), 30)
    prob = lrn.eval_predictions("test")
    assert ((prob >= 0) & (prob <= 1)).all()
    best = metrics.auc(p.planted.predict_raw(*p.test.csr()), p.test.y)
    assert metrics.auc(prob, p.test.y) > best - 0.04


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_optimizers_differ_from_plain_sgd(optimizer):
    p = recsys(3, n=500, n_test=10)
    a = fit(make_learner("sgd", p.train, optimizer=optimizer, learn_rate=0.01), 3).final_model()
    plain = fit(make_learner("sgd", p.train, learn_rate=0.01), 3).final_model()
    assert not np.array_equal(a.V, plain.V)

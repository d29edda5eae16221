"""SGDA: the compiled epoch against a plain transcription of the update rules."""

import numpy as np
import pytest
from conftest import fit, make_learner, random_csr

from fmcli.data import SparseData
from fmcli.learners.sgda import _sgda_epoch
from fmcli.model import FMModel


def deriv(pred, y, classify):
    return y * (1 / (1 + np.exp(-y * pred)) - 1) if classify else 2 * (pred - y)


def fm(ids, xs, w0, w, V):
    s = V[ids].T @ xs
    return w0 + w[ids] @ xs + 0.5 * (s @ s - ((V[ids] * xs[:, None]) ** 2).sum())


def reference_epoch(train, y, order, val, vy, adapt, w0, w, V, classify, eta, groups, lam_w, lam_v, gw, gv):
    rows = lambda d, i: (d[1][d[0][i]:d[0][i + 1]], d[2][d[0][i]:d[0][i + 1]].astype(np.float64))  # noqa
    pos = 0
    for i in order:
        ids, xs = rows(train, i)
        s = V[ids].T @ xs
        g = deriv(fm(ids, xs, w0, w, V), y[i], classify)
        w0 -= eta * g
        for j, x in zip(ids, xs):
            gw[j] = g * x
            w[j] -= eta * (gw[j] + 2 * lam_w[groups[j]] * w[j])
            for f in range(V.shape[1]):
                gv[j, f] = g * x * (s[f] - V[j, f] * x)
                V[j, f] -= eta * (gv[j, f] + 2 * lam_v[groups[j], f] * V[j, f])
        if not adapt:
            continue
        ids, xs = rows(val, pos)
        r, pos = pos, (pos + 1) % (len(val[0]) - 1)
        w_ahead, V_ahead = w.copy(), V.copy()
        for j in ids:
            w_ahead[j] = w[j] - eta * (gw[j] + 2 * lam_w[groups[j]] * w[j])
            V_ahead[j] = V[j] - eta * (gv[j] + 2 * lam_v[groups[j]] * V[j])
        lg = 2 * eta ** 2 * deriv(fm(ids, xs, w0, w_ahead, V_ahead), vy[r], classify)
        s_ahead = V_ahead[ids].T @ xs
        for grp in set(groups[ids].tolist()):
            m = groups[ids] == grp
            lam_w[grp] = max(0.0, lam_w[grp] + lg * (xs[m] @ w[ids[m]]))
            for f in range(V.shape[1]):
                a = xs[m] @ V[ids[m], f]
                b = (xs[m] ** 2) @ (V[ids[m], f] * V_ahead[ids[m], f])
                lam_v[grp, f] = max(0.0, lam_v[grp, f] + lg * (s_ahead[f] * a - b))
    return w0


@pytest.mark.parametrize("classify", [False, True])
def test_epoch_matches_reference(rng, classify):
    n, k = 20, 3
    train, val = random_csr(rng, 80, n), random_csr(rng, 30, n)
    sign = lambda m: np.sign(rng.normal(size=m))  # noqa: E731
    y = sign(80) if classify else rng.normal(0, 1, 80)
    vy = sign(30) if classify else rng.normal(0, 1, 30)
    groups = rng.integers(0, 3, n).astype(np.int32)
    order = rng.permutation(80).astype(np.int64)
    state = dict(w=rng.normal(0, 0.1, n), V=rng.normal(0, 0.1, (n, k)), lam_w=np.full(3, 0.01),
                 lam_v=np.full((3, k), 0.02), gw=np.zeros(n), gv=np.zeros((n, k)))
    ref = {key: v.copy() for key, v in state.items()}
    eta = 0.05
    w0 = 0.1
    for epoch in range(3):
        w0 = reference_epoch(train, y, order, val, vy, epoch > 0, w0, ref["w"], ref["V"], classify, eta, groups,
                             ref["lam_w"], ref["lam_v"], ref["gw"], ref["gv"])
    w0a = np.array([0.1])
    for epoch in range(3):
        _sgda_epoch(*train, y.astype(np.float32), order, *val, vy.astype(np.float32), epoch > 0, w0a, state["w"],
                    state["V"], True, True, classify, eta, groups, state["lam_w"], state["lam_v"], state["gw"],
                    state["gv"], np.empty(0))
    assert np.isclose(w0a[0], w0)
    for key in state:
        assert np.allclose(state[key], ref[key], atol=1e-10), key
    assert (ref["lam_v"] != 0.02).any()   # the lambda-step really ran


def test_learner_learns_the_regularisation(rng):
    n = 30
    indptr, indices, data = random_csr(rng, 3000, n, max_nnz=4)
    truth = FMModel(0.5, rng.normal(0, 1, n), rng.normal(0, 0.5, (n, 2)))
    y = (truth.predict_raw(indptr, indices, data) + rng.normal(0, 0.3, 3000)).astype(np.float32)
    full = SparseData(indptr, indices, data, y, n)
    train = SparseData(indptr[:2701], indices, data, y[:2700], n)
    val = SparseData(indptr[2700:] - indptr[2700], indices[indptr[2700]:], data[indptr[2700]:], y[2700:], n)
    learner = fit(make_learner("sgda", train, {"validation": val, "test": full}, k=2, learn_rate=0.01), 15)
    logged = learner.log_values()
    assert set(logged) == {"regw[0]", "regv[0,0]", "regv[0,1]"}
    assert all(v >= 0 for v in logged.values()) and any(v > 0 for v in logged.values())
    pred = learner.eval_predictions("validation")
    assert np.sqrt(np.mean((pred - val.y) ** 2)) < 0.6

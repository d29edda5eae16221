"""SGD: the compiled epoch against a plain-Python reference, and learning on planted data."""

import numpy as np
import pytest
from conftest import random_csr

from fmcli.data import SparseData
from fmcli.errors import TrainingError
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

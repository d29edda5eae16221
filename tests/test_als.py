"""ALS learner: single coordinate updates, monotone loss, exact caches, options."""

import numpy as np
import pytest

from fmcli.data import SparseData
from fmcli.errors import TrainingError, UsageError
from fmcli.learners.als import ALSLearner, als_lambdas, probit_expected_latent
from fmcli.learners.base import TrainOptions
from fmcli.model import FMModel

from naive import (brute_force_minimiser, dense_to_rows, factor_sums, fm_predict_dense,
                   regularised_loss)


def dense_problem(seed, n=40, p=12, k=3, density=0.3, task="r", n_features=None):
    rng = np.random.default_rng(seed)
    X = np.where(rng.random((n, p)) < density, rng.normal(1.0, 0.5, (n, p)), 0.0).astype(np.float32)
    X[:, 0] = 1.0                      # every row has an entry
    y = rng.normal(3.0, 1.0, n).astype(np.float32)
    if task == "c":
        y = np.where(y > 3.0, 1.0, -1.0).astype(np.float32)
    indptr, indices, data = dense_to_rows(X)
    d = SparseData(indptr, indices, data, y, n_features or p)
    return X.astype(np.float64), d


def make(d, k=3, seed=0, task="r", regular=(0.5, 1.0, 2.0), groups=None, evals=None, dim01=(1, 1)):
    opts = TrainOptions(task=task, method="als", dim=(*dim01, k), regular=regular, seed=seed,
                        groups=groups)
    rng = np.random.default_rng(seed)
    n = max([d.n_features] + [e.n_features for e in (evals or {}).values()])
    model = FMModel.init(n, k, use_w0=bool(dim01[0]), use_w=bool(dim01[1]), init_stdev=0.3, rng=rng)
    return ALSLearner(model, d, evals if evals is not None else {"test": d}, opts, rng)


def per_feature_lambdas(lrn):
    return lrn.lam_w[lrn.groups], lrn.lam_v[lrn.groups, 0]


def loss(lrn, X):
    m = lrn.model
    lw, lv = per_feature_lambdas(lrn)
    return regularised_loss(X, lrn.z, lrn.w0a[0], m.w, m.V, lrn.lam0, lw, lv)


GROUPS = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2], np.int32)
REG_G = (0.5, 1.0, 0.2, 3.0, 0.7, 2.0, 0.1)     # λ0, λw per group, λv per group


def test_coordinate_updates_match_brute_force_minimiser():
    X, d = dense_problem(1)
    lrn = make(d, groups=GROUPS, regular=REG_G)
    m = lrn.model
    lw, lv = per_feature_lambdas(lrn)

    def L(w0=None, j=None, wj=None, f=None, vjf=None):
        w, V = m.w.copy(), m.V.copy()
        if j is not None and f is None:
            w[j] = wj
        if f is not None:
            V[j, f] = vjf
        return regularised_loss(X, d.y, lrn.w0a[0] if w0 is None else w0, w, V, lrn.lam0, lw, lv)

    # a sweep over one feature j (group 2) updates w0, then w_j, then v_{j,0..k-1}, each to
    # the exact minimiser given the current values of all the others
    j = 9
    one = (np.array([j], np.int64), np.array([0, 1], np.int64))
    expect_w0 = brute_force_minimiser(lambda t: L(w0=t), lrn.w0a[0])
    w0 = expect_w0
    ref_w, ref_V = m.w.copy(), m.V.copy()

    def Lref(w0, w, V):
        return regularised_loss(X, d.y, w0, w, V, lrn.lam0, lw, lv)

    def set_w(t):
        w = ref_w.copy()
        w[j] = t
        return w

    ref_w[j] = brute_force_minimiser(lambda t: Lref(w0, set_w(t), ref_V), ref_w[j])
    for f in range(m.k):
        def set_v(t, f=f):
            V = ref_V.copy()
            V[j, f] = t
            return V
        ref_V[j, f] = brute_force_minimiser(lambda t: Lref(w0, ref_w, set_v(t)), ref_V[j, f])
    lrn._sweep(0, *one)
    # the caches are float32: minimisers agree to about 1e-6
    assert lrn.w0a[0] == pytest.approx(expect_w0, abs=1e-6)
    np.testing.assert_allclose(m.w, ref_w, atol=1e-6)
    np.testing.assert_allclose(m.V, ref_V, atol=1e-6)
    # the caches followed the updates
    np.testing.assert_allclose(lrn.e, fm_predict_dense(X, lrn.w0a[0], m.w, m.V) - d.y, atol=1e-5)
    np.testing.assert_allclose(lrn.q, factor_sums(X, m.V), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sweep_never_increases_regularised_loss(seed):
    X, d = dense_problem(10 + seed)
    lrn = make(d, seed=seed, groups=GROUPS, regular=REG_G if seed % 2 else (0.0, 0.1, 0.1))
    before = loss(lrn, X)
    for it in range(6):
        lrn.step(it)
        after = loss(lrn, X)
        assert after <= before + 1e-9 * max(1.0, before)
        before = after


@pytest.mark.parametrize("duplicates_path", [False, True])
def test_caches_exact_after_sweep(duplicates_path):
    X, d = dense_problem(5)
    lrn = make(d, groups=GROUPS, regular=REG_G)
    lrn.has_duplicates = duplicates_path      # force the plain (per-entry) kernel
    lrn._sweep()                              # sweep only: caches kept incrementally
    m = lrn.model
    # float32 caches: exact to float32 rounding
    np.testing.assert_allclose(lrn.e, fm_predict_dense(X, lrn.w0a[0], m.w, m.V) - d.y, atol=1e-5)
    np.testing.assert_allclose(lrn.q, factor_sums(X, m.V), atol=1e-5)


def test_local_and_plain_kernels_agree():
    X, d = dense_problem(6)
    a, b = make(d, seed=3), make(d, seed=3)
    b.has_duplicates = True
    for it in range(3):
        a.step(it)
        b.step(it)
    np.testing.assert_allclose(a.model.V, b.model.V, atol=1e-10)
    np.testing.assert_allclose(a.model.w, b.model.w, atol=1e-10)


def test_duplicated_entries_use_plain_kernel_and_predict_exactly():
    # feature 2 twice in row 0: kept as two entries (libFM)
    indptr = np.array([0, 3, 5, 7], np.int64)
    indices = np.array([0, 2, 2, 1, 2, 0, 1], np.int32)
    data = np.ones(7, np.float32)
    d = SparseData(indptr, indices, data, np.array([1.0, 2.0, 3.0], np.float32), 3)
    lrn = make(d, k=2)
    assert lrn.has_duplicates
    lrn.step(0)
    from naive import fm_predict_rows
    rows = [[(0, 1.0), (2, 1.0), (2, 1.0)], [(1, 1.0), (2, 1.0)], [(0, 1.0), (1, 1.0)]]
    m = lrn.model
    np.testing.assert_allclose(lrn.yhat, fm_predict_rows(rows, m.w0, m.w, m.V), atol=1e-12)
    np.testing.assert_allclose(lrn.e, lrn.yhat - d.y, atol=1e-6)   # e is float32


def test_predictions_match_naive_and_model():
    X, d = dense_problem(7)
    lrn = make(d)
    lrn.step(0)
    m = lrn.final_model()
    raw = fm_predict_dense(X, m.w0, m.w, m.V)
    np.testing.assert_allclose(lrn.yhat, raw, atol=1e-10)
    np.testing.assert_allclose(lrn.eval_predictions("test"),
                               np.clip(raw, d.y.min(), d.y.max()), atol=1e-10)
    np.testing.assert_allclose(m.predict(*d.csr()), lrn.eval_predictions("test"), atol=1e-10)
    np.testing.assert_allclose(lrn.train_predictions(), lrn.eval_predictions("test"))


@pytest.mark.parametrize("task", ["r", "c"])
def test_train_scores_give_the_train_metrics_of_the_user_order(task):
    """train_scores: the learner's own row order (and, for regression, clip(e + y) from the
    float32 cache, chunk by chunk) gives the metrics of train_predictions() against the user's
    targets."""
    from fmcli import metrics

    X, d = dense_problem(9, n=300, task=task)
    lrn = make(d, task=task)
    lrn.step(0)
    lrn.step(1)
    pred, y = lrn.train_scores()
    assert isinstance(pred, np.ndarray) == (task == "c")     # regression: computed lazily
    want = metrics.evaluate(task, lrn.train_predictions(), d.y)
    got = metrics.evaluate(task, pred, y)
    assert want.keys() == got.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6 if task == "r" else 1e-12)


def test_regular_forms_three_vs_one_plus_2g_identical():
    X, d = dense_problem(8)
    a = make(d, groups=GROUPS, regular=(0.5, 2.0, 3.0))
    b = make(d, groups=GROUPS, regular=(0.5, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0))
    for it in range(3):
        a.step(it)
        b.step(it)
    np.testing.assert_array_equal(a.model.V, b.model.V)
    assert a.log_values() == b.log_values()
    assert a.log_values()["wlambda[1]"] == 2.0 and a.log_values()["vlambda[2,1]"] == 3.0


def test_als_lambdas_parsing():
    lam0, lw, lv = als_lambdas((4.0,), 2)
    assert lam0 == 4.0 and list(lw) == [4.0, 4.0] and list(lv) == [4.0, 4.0]
    lam0, lw, lv = als_lambdas((0, 1, 2, 3, 4), 2)
    assert lam0 == 0 and list(lw) == [1, 2] and list(lv) == [3, 4]
    with pytest.raises(UsageError, match="1, 3 or 1\\+2G = 5"):
        als_lambdas((0, 1, 2, 3), 2)
    with pytest.raises(UsageError, match="non-negative"):
        als_lambdas((0, -1, 2), 1)


def test_features_only_in_eval_stay_zero():
    X, d = dense_problem(9, n_features=12)
    ev = SparseData(np.array([0, 2, 4], np.int64), np.array([0, 14, 3, 13], np.int32),
                    np.ones(4, np.float32), np.array([3.0, 3.0], np.float32), 15)
    lrn = make(d, evals={"test": ev})
    assert lrn.model.n_features == 15
    for it in range(2):
        lrn.step(it)
    m = lrn.final_model()
    assert (m.w[12:] == 0).all() and (m.V[12:] == 0).all()
    # row 0 = feature 0 and feature 14: predicted as feature 0 alone
    alone = m.predict_raw(np.array([0, 1], np.int64), np.array([0], np.int32), np.ones(1, np.float32))
    assert lrn.eval_predictions("test")[0] == pytest.approx(np.clip(alone[0], d.y.min(), d.y.max()), abs=1e-9)


def test_same_seed_same_model_different_seed_differs():
    X, d = dense_problem(11)
    runs = []
    for seed in (4, 4, 5):
        lrn = make(d, seed=seed)
        for it in range(3):
            lrn.step(it)
        runs.append((lrn.final_model(), lrn.eval_predictions("test")))
    np.testing.assert_array_equal(runs[0][0].V, runs[1][0].V)
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0].V, runs[2][0].V)


def test_warm_start_keeps_parameters():
    X, d = dense_problem(12)
    model = FMModel.init(12, 3, init_stdev=0.3, rng=np.random.default_rng(1))
    model.w[:] = 0.25
    w_before = model.w.copy()
    opts = TrainOptions(method="als", dim=(1, 1, 3), regular=(0, 1, 1), extra={"warm_start": True})
    lrn = ALSLearner(model, d, {}, opts, np.random.default_rng(0))
    np.testing.assert_array_equal(lrn.model.w, w_before)


def test_classification_runs_and_uses_expected_latent():
    X, d = dense_problem(13, task="c")
    lrn = make(d, task="c", regular=(0, 1, 1))
    assert lrn.model.link == "probit"
    for it in range(5):
        lrn.step(it)
    p = lrn.eval_predictions("test")
    assert ((p >= 0) & (p <= 1)).all()
    assert np.mean((p >= 0.5) == (d.y > 0)) > 0.7
    np.testing.assert_allclose(lrn.z, probit_expected_latent(lrn.yhat, lrn.y))
    np.testing.assert_allclose(lrn.e, lrn.yhat - lrn.z, rtol=1e-6, atol=1e-6)   # e is float32


def test_probit_expected_latent_matches_truncnorm_mean():
    from scipy.stats import truncnorm

    yhat = np.array([-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0])
    for label in (1.0, -1.0):
        z = probit_expected_latent(yhat, np.full(len(yhat), label))
        for m, zi in zip(yhat, z):
            a, b = (-m, np.inf) if label > 0 else (-np.inf, -m)
            assert zi == pytest.approx(m + truncnorm.mean(a, b), rel=1e-6, abs=1e-6)
        assert np.all(z >= 0) if label > 0 else np.all(z <= 0)


def test_non_finite_data_raise_training_error():
    X, d = dense_problem(14)
    d.data = d.data.copy()
    d.data[3] = np.inf
    lrn = make(d)
    with pytest.raises(TrainingError, match="diverged in iteration 0"):
        lrn.step(0)


def test_dim_without_w0_w_and_k0():
    X, d = dense_problem(15)
    lrn = make(d, k=0, dim01=(0, 0))
    lrn.step(0)
    assert lrn.model.w0 == 0 and (lrn.model.w == 0).all()
    assert np.allclose(lrn.yhat, 0)
    lrn = make(d, k=2, dim01=(0, 1))
    lrn.step(0)
    assert lrn.model.w0 == 0
    np.testing.assert_allclose(lrn.yhat, fm_predict_dense(X, 0.0, lrn.model.w, lrn.model.V), atol=1e-10)


def test_model_smaller_than_data_is_resized():
    X, d = dense_problem(16)
    opts = TrainOptions(method="als", dim=(1, 1, 2), regular=(0, 1, 1))
    model = FMModel.init(5, 2, rng=np.random.default_rng(0))
    lrn = ALSLearner(model, d, {"test": d}, opts, np.random.default_rng(0))
    lrn.step(0)
    assert lrn.final_model().n_features == 12
    np.testing.assert_allclose(lrn.yhat, fm_predict_dense(X, lrn.model.w0, lrn.model.w, lrn.model.V),
                               atol=1e-10)


def test_meta_shorter_than_features_is_a_usage_error():
    X, d = dense_problem(17)
    with pytest.raises(UsageError, match="-meta gives 3 group ids but the data have 12 features"):
        make(d, groups=np.zeros(3, np.int32))

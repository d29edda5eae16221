"""MCMC learner: planted data, calibration, reproducibility, saved samples, samplers."""

import numpy as np
import pytest

from fmcli import metrics
from fmcli.data import SparseData
from fmcli.learners import coord
from fmcli.learners.base import TrainOptions
from fmcli.learners.mcmc import MCMCLearner
from fmcli.model import FMModel

from naive import dense_to_rows, factor_sums, fm_predict_dense


def planted(seed, n_train=3000, n_test=1000, n_users=60, n_items=50, k=2, noise=0.5, task="r"):
    """User + item one-hot rows, target from a planted FM (+ N(0, noise²) or a probit label)."""
    rng = np.random.default_rng(seed)
    p = n_users + n_items
    w = rng.normal(0, 0.5, p)
    V = rng.normal(0, 0.7, (p, k))
    n = n_train + n_test
    u = rng.integers(0, n_users, n)
    i = n_users + rng.integers(0, n_items, n)
    f = 1.0 + w[u] + w[i] + np.sum(V[u] * V[i], 1)
    if task == "r":
        y = f + rng.normal(0, noise, n)
    else:
        f = f - np.median(f)
        y = np.where(f + rng.normal(0, 1, n) > 0, 1.0, -1.0)
    idx = np.stack([u, i], 1).astype(np.int32)

    def part(sl):
        m = sl.stop - sl.start
        return SparseData(np.arange(0, 2 * m + 1, 2, dtype=np.int64), idx[sl].ravel(),
                          np.ones(2 * m, np.float32), y[sl].astype(np.float32), p)

    from scipy.special import ndtr
    return part(slice(0, n_train)), part(slice(n_train, n)), ndtr(f[n_train:])


def make(train, evals, k=4, seed=1, task="r", groups=None, **kw):
    opts = TrainOptions(task=task, method="mcmc", dim=(1, 1, k), seed=seed, groups=groups, **kw)
    rng = np.random.default_rng(seed)
    model = FMModel.init(train.n_features, k, init_stdev=0.1, rng=rng)
    return MCMCLearner(model, train, evals, opts, rng)


def run(lrn, iters):
    for it in range(iters):
        lrn.step(it)
    return lrn


def test_planted_regression_reaches_noise_level():
    train, test, _ = planted(0)
    groups = np.array([0] * 60 + [1] * 50, np.int32)
    lrn = run(make(train, {"test": test}, groups=groups), 150)
    rmse = metrics.rmse(lrn.eval_predictions("test"), test.y)
    # noise 0.5; 3000 ratings of 60 x 50 rank-2 plus biases: within 12% of the noise
    assert rmse < 0.56, rmse
    assert lrn.log_values()["alpha"] == pytest.approx(1 / 0.25, rel=0.25)
    assert not lrn.rejected_draws()


def test_planted_classification_is_calibrated():
    train, test, p_true = planted(1, n_train=4000, n_test=2000, task="c")
    lrn = run(make(train, {"test": test}, task="c", k=2), 150)
    p = lrn.eval_predictions("test")
    assert ((p > 0) & (p < 1)).all()
    observed = np.mean(test.y > 0)
    # mean predicted probability within 0.03 of the observed positive rate
    assert abs(p.mean() - observed) < 0.03, (p.mean(), observed)
    # and per decile of predicted probability within 0.08 of the observed rate
    order = np.argsort(p)
    for chunk in np.array_split(order, 10):
        assert abs(p[chunk].mean() - np.mean(test.y[chunk] > 0)) < 0.08
    assert metrics.auc(p, test.y) > 0.72      # planted probabilities give 0.79
    assert lrn.alpha == 1.0          # probit noise precision fixed


def test_probit_alpha_sample_option_draws_alpha():
    train, test, _ = planted(2, n_train=500, n_test=100, task="c")
    lrn = run(make(train, {"test": test}, task="c", extra={"probit_alpha": "sample"}), 3)
    assert lrn.alpha != 1.0


def test_same_seed_identical_different_seed_differs():
    train, test, _ = planted(3, n_train=600, n_test=200)
    a = run(make(train, {"test": test}, seed=7), 5)
    other = run(make(train, {"test": test}, seed=99), 2)   # interleaved learner in between
    b = run(make(train, {"test": test}, seed=7), 5)
    c = run(make(train, {"test": test}, seed=8), 5)
    np.testing.assert_array_equal(a.model.V, b.model.V)
    np.testing.assert_array_equal(a.eval_predictions("test"), b.eval_predictions("test"))
    assert a.log_values() == b.log_values()
    assert not np.array_equal(a.model.V, c.model.V)
    assert other.n_steps == 2


def test_same_seed_identical_classification():
    train, test, _ = planted(4, n_train=400, n_test=100, task="c")
    a = run(make(train, {"test": test}, seed=3, task="c"), 4)
    b = run(make(train, {"test": test}, seed=3, task="c"), 4)
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.eval_predictions("test"), b.eval_predictions("test"))


@pytest.mark.parametrize("task", ["r", "c"])
def test_final_model_predicts_like_training(task):
    train, test, _ = planted(5, n_train=800, n_test=300, task=task)
    lrn = run(make(train, {"test": test}, task=task, keep_samples=1), 20)
    fm = lrn.final_model()
    assert len(fm.samples[0]) == 20 and fm.samples[1].dtype == np.float32
    np.testing.assert_allclose(fm.predict(*test.csr()), lrn.eval_predictions("test"), atol=2e-5)
    # keep every 5th sample (after a burn-in): an approximation of the full average
    lrn5 = run(make(train, {"test": test}, task=task, keep_samples=5, burn_in=10), 40)
    fm5 = lrn5.final_model()
    assert len(fm5.samples[0]) == 6
    full, kept = lrn5.eval_predictions("test"), fm5.predict(*test.csr())
    # 6 of 30 samples: per-row differences of the order of the posterior sd / sqrt(6)
    assert np.sqrt(np.mean((kept - full) ** 2)) < (0.25 if task == "r" else 0.1)
    if task == "r":
        assert abs(metrics.rmse(kept, test.y) - metrics.rmse(full, test.y)) < 0.03
    else:
        assert abs(metrics.auc(kept, test.y) - metrics.auc(full, test.y)) < 0.02
    # the last kept sample is the current one
    np.testing.assert_allclose(fm5.samples[2][-1], lrn5.model.V, atol=1e-6)


def test_no_samples_kept_when_nothing_will_be_saved():
    """save_samples off (the CLI's choice without -save_model/--checkpoint/--early-stop): the
    same predictions and state, no snapshots held (they cost 4 n (k+1) bytes each)."""
    train, test, _ = planted(6, n_train=500, n_test=200)
    kept = run(make(train, {"test": test}), 8)
    lean = run(make(train, {"test": test}, save_samples=False), 8)
    assert len(kept.kept) == 8 and lean.kept == []
    np.testing.assert_array_equal(lean.eval_predictions("test"), kept.eval_predictions("test"))
    fm = lean.final_model()
    assert fm.samples is None
    np.testing.assert_array_equal(fm.V, kept.model.V)


def test_cli_keeps_samples_only_for_a_saved_model(monkeypatch, testdata, tmp_path, run):
    seen = {}
    original = MCMCLearner.final_model

    def spy(self):
        seen["kept"] = len(self.kept)
        return original(self)

    monkeypatch.setattr(MCMCLearner, "final_model", spy)
    args = ("train", "-task", "r", "-train", testdata("movies.train.libfm"), "-test",
            testdata("movies.test.libfm"), "-method", "mcmc", "-iter", "4", "--quiet", "--no-cache")
    assert run(*args, "-out", str(tmp_path / "p"))[0] == 0 and seen["kept"] == 0
    assert run(*args, "-save_model", str(tmp_path / "m.fm"))[0] == 0 and seen["kept"] == 4


def test_burn_in_excludes_first_samples():
    train, test, _ = planted(6, n_train=300, n_test=100)
    lrn = make(train, {"test": test}, burn_in=3)
    run(lrn, 2)
    assert lrn.n_avg == 0
    np.testing.assert_allclose(lrn.eval_predictions("test"), lrn._link(lrn.eval_raw["test"]))
    assert lrn.final_model().samples is None
    run(lrn, 3)
    assert lrn.n_avg == 2 and len(lrn.final_model().samples[0]) == 2


def test_caches_exact_after_mcmc_sweep():
    rng = np.random.default_rng(8)
    X = np.where(rng.random((50, 10)) < 0.4, rng.normal(1, 0.3, (50, 10)), 0.0).astype(np.float32)
    X[:, 0] = 1
    indptr, indices, data = dense_to_rows(X)
    y = rng.normal(0, 1, 50).astype(np.float32)
    d = SparseData(indptr, indices, data, y, 10)
    lrn = make(d, {}, k=3, groups=np.array([0] * 5 + [1] * 5, np.int32))
    lrn.step(0)
    lrn._before_sweep()
    lrn._sweep()
    m = lrn.model
    X = X.astype(np.float64)
    # float32 caches: exact to float32 rounding
    np.testing.assert_allclose(lrn.e, fm_predict_dense(X, lrn.w0a[0], m.w, m.V) - y, atol=1e-5)
    np.testing.assert_allclose(lrn.q, factor_sums(X, m.V), atol=1e-5)
    lv = lrn.log_values()
    assert set(lv) >= {"alpha", "wmu[0]", "wlambda[1]", "vmu[1,2]", "vlambda[0,0]"}
    assert all(np.isfinite(v) for v in lv.values())


def test_features_only_in_eval_stay_zero_and_not_in_group_sizes():
    train, test, _ = planted(9, n_train=300, n_test=50)
    ev = SparseData(np.array([0, 2], np.int64), np.array([3, 115], np.int32),
                    np.ones(2, np.float32), np.array([1.0], np.float32), 116)
    lrn = run(make(train, {"test": ev}), 3)
    assert lrn.model.n_features == 116
    assert (lrn.model.w[110:] == 0).all() and (lrn.model.V[110:] == 0).all()
    assert lrn.n_g.sum() == len(lrn.cols) <= 110


def test_non_finite_draws_are_rejected_and_counted():
    train, test, _ = planted(10, n_train=200, n_test=10)
    lrn = make(train, {})
    m = lrn.model
    w_before, V_before = m.w.copy(), m.V.copy()
    coord.seed_numba(1)
    lrn.alpha = np.inf                        # P = inf, m = nan: every draw is rejected
    lrn._sweep()
    np.testing.assert_array_equal(m.w, w_before)
    np.testing.assert_array_equal(m.V, V_before)
    r = lrn.rejected_draws()
    assert r["w0"] == 1 and r["w"] == len(lrn.cols) and r["v"] == len(lrn.cols) * m.k


@pytest.mark.parametrize("a", [-3.0, -0.5, 0.0, 0.4, 2.5, 9.0])
def test_truncated_normal_sampler_matches_scipy(a):
    from scipy.stats import kstest, truncnorm

    coord.seed_numba(123)
    n = 20000
    yhat = np.full(n, -a)
    z = np.empty(n)
    coord.draw_latent(yhat, np.ones(n), z)
    t = z - yhat                         # N(0, 1) truncated to [a, inf)
    assert t.min() >= a
    assert kstest(t, truncnorm(a, np.inf).cdf).pvalue > 1e-3
    # negative labels: z < 0
    coord.draw_latent(np.full(n, a), -np.ones(n), z)
    assert (z <= 0).all()
    assert kstest(a - z, truncnorm(a, np.inf).cdf).pvalue > 1e-3

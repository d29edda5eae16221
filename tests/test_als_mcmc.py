"""What ALS and MCMC do beyond the shared behaviour suite (test_learners.py): probit latent
targets, calibration, the noise precision, MCMC's samples and burn-in, their random streams,
and a few shapes of model."""

import numba
import numpy as np
import pytest
from conftest import dense_problem, fit, make_learner, recsys, rows_of

from fmcli import metrics
from fmcli.errors import TrainingError
from fmcli.learners.als import probit_expected_latent
from fmcli.learners.mcmc import MCMCLearner
from fmcli.learners.streams import stream_normals

from naive import fm_predict_dense, fm_predict_rows


def test_probit_expected_latent_matches_truncnorm_mean():
    from scipy.stats import truncnorm

    yhat = np.array([-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0])
    for label in (1.0, -1.0):
        z = probit_expected_latent(yhat, np.full(len(yhat), label))
        for m, zi in zip(yhat, z):
            a, b = (-m, np.inf) if label > 0 else (-np.inf, -m)
            assert zi == pytest.approx(m + truncnorm.mean(a, b), rel=1e-6, abs=1e-6)
        assert np.all(z >= 0) if label > 0 else np.all(z <= 0)


def test_als_classification_targets_the_expected_latent():
    X, d = dense_problem(13, task="c")
    lrn = fit(make_learner("als", d, k=3, task="c", regular=(0, 1, 1)), 5)
    assert lrn.final_model().link == "probit"
    p = lrn.eval_predictions("test")
    assert ((p >= 0) & (p <= 1)).all() and np.mean((p >= 0.5) == (d.y > 0)) > 0.7
    np.testing.assert_allclose(lrn.latent_targets(), probit_expected_latent(lrn.train_raw(), d.y))
    np.testing.assert_allclose(lrn.residuals(), lrn.train_raw() - lrn.latent_targets(), rtol=1e-6, atol=1e-6)


def test_mcmc_regression_finds_the_noise_precision():
    p = recsys(0, n=4000, n_test=1000, users=50, items=40, ctx=3, k=2, noise=0.5)
    lrn = fit(make_learner("mcmc", p.train, {"test": p.test}, k=4, seed=1, groups=p.groups(), regular=(0, 0, 0)), 120)
    assert metrics.rmse(lrn.eval_predictions("test"), p.test.y) < 0.56    # noise 0.5
    assert lrn.log_values()["alpha"] == pytest.approx(1 / 0.25, rel=0.25)
    assert not lrn.rejected_draws()


def test_mcmc_classification_is_calibrated():
    p = recsys(1, n=5000, n_test=3000, users=50, items=40, ctx=3, k=2, task="c")
    lrn = fit(make_learner("mcmc", p.train, {"test": p.test}, k=2, seed=1, task="c", regular=(0, 0, 0)), 150)
    prob = lrn.eval_predictions("test")
    assert ((prob > 0) & (prob < 1)).all()
    observed = np.mean(p.test.y > 0)
    assert abs(prob.mean() - observed) < 0.03, (prob.mean(), observed)
    order = np.argsort(prob)
    for chunk in np.array_split(order, 10):          # per decile of predicted probability
        assert abs(prob[chunk].mean() - np.mean(p.test.y[chunk] > 0)) < 0.08
    assert lrn.log_values()["alpha"] == 1.0          # probit noise precision fixed


@pytest.mark.parametrize("task", ["r", "c"])
def test_mcmc_saved_samples_reproduce_the_averaged_predictions(task):
    p = recsys(5, n=800, n_test=300, task=task)
    lrn = fit(make_learner("mcmc", p.train, {"test": p.test}, k=3, task=task, keep_samples=1), 20)
    fm = lrn.final_model()
    assert len(fm.samples[0]) == 20 and fm.samples[1].dtype == np.float32
    np.testing.assert_allclose(fm.predict(*p.test.csr()), lrn.eval_predictions("test"), atol=2e-5)
    # keep every 5th sample after a burn-in: an approximation of the full average
    lrn5 = fit(make_learner("mcmc", p.train, {"test": p.test}, k=3, task=task, keep_samples=5, burn_in=10), 40)
    fm5 = lrn5.final_model()
    assert len(fm5.samples[0]) == 6
    full, kept = lrn5.eval_predictions("test"), fm5.predict(*p.test.csr())
    assert np.sqrt(np.mean((kept - full) ** 2)) < (0.25 if task == "r" else 0.1)
    # the last kept sample is the current state
    np.testing.assert_allclose(fm5.samples[2][-1], fm5.V, atol=1e-6)


def test_mcmc_keeps_no_samples_when_nothing_will_be_saved():
    p = recsys(6, n=500, n_test=200)
    kept = fit(make_learner("mcmc", p.train, {"test": p.test}), 8)
    lean = fit(make_learner("mcmc", p.train, {"test": p.test}, save_samples=False), 8)
    assert len(kept.final_model().samples[0]) == 8 and lean.final_model().samples is None
    np.testing.assert_array_equal(lean.eval_predictions("test"), kept.eval_predictions("test"))
    np.testing.assert_array_equal(lean.final_model().V, kept.final_model().V)


def test_cli_keeps_samples_only_for_a_saved_model(monkeypatch, testdata, tmp_path, run):
    seen = {}
    original = MCMCLearner.final_model

    def spy(self):
        model = original(self)
        seen["kept"] = 0 if model.samples is None else len(model.samples[0])
        return model

    monkeypatch.setattr(MCMCLearner, "final_model", spy)
    args = ("train", "-task", "r", "-train", testdata("movies.train.libfm"), "-test",
            testdata("movies.test.libfm"), "-method", "mcmc", "-iter", "4", "--quiet", "--no-cache")
    assert run(*args, "-out", str(tmp_path / "p"))[0] == 0 and seen["kept"] == 0
    assert run(*args, "-save_model", str(tmp_path / "m.fm"))[0] == 0 and seen["kept"] == 4


def test_mcmc_burn_in_leaves_out_the_first_samples():
    p = recsys(6, n=300, n_test=100)
    lrn = fit(make_learner("mcmc", p.train, {"test": p.test}, burn_in=3), 2)
    current = lrn.final_model()
    assert current.samples is None           # nothing averaged yet: the current sample
    np.testing.assert_allclose(lrn.eval_predictions("test"), current.predict(*p.test.csr()), atol=1e-12)
    fit(lrn, 3)
    assert len(lrn.final_model().samples[0]) == 2


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_predictions_in_the_file_order_although_rows_are_reordered_inside(method):
    from fmcli import config
    from fmcli.config import threads

    p = recsys(5, n=1500, n_test=10)
    with threads(min(2, numba.config.NUMBA_NUM_THREADS)):
        lrn = fit(make_learner(method, p.train, k=3), 2)
    assert not np.array_equal(lrn.perm, np.arange(p.train.n_rows))     # grouped by user inside
    m = lrn.model
    raw = fm_predict_rows(rows_of(p.train), m.w0, m.w, m.V)
    np.testing.assert_allclose(lrn.train_raw(), raw, atol=1e-9)
    np.testing.assert_allclose(lrn.residuals(), raw - p.train.y, atol=1e-5)
    if method == "als":
        np.testing.assert_allclose(lrn.eval_predictions("test"), np.clip(raw, p.train.y.min(), p.train.y.max()),
                                   atol=1e-9)
    assert config.PARALLEL_MIN_NNZ > 0


def test_thread_count_is_restored():
    from fmcli.config import threads

    before = numba.get_num_threads()
    with threads(1):
        fit(make_learner("als", recsys(2, n=300).train), 1)
    assert numba.get_num_threads() == before


def test_non_finite_data_are_a_training_error():
    X, d = dense_problem(14)
    d.data = d.data.copy()
    d.data[3] = np.inf
    with pytest.raises(TrainingError, match="ALS diverged in iteration 0"):
        fit(make_learner("als", d), 1)


def test_models_without_bias_linear_terms_or_factors():
    X, d = dense_problem(15)
    lrn = fit(make_learner("als", d, k=0, dim01=(0, 0)), 1)
    m = lrn.final_model()
    assert m.w0 == 0 and (m.w == 0).all() and np.allclose(lrn.train_raw(), 0)
    lrn = fit(make_learner("mcmc", d, k=2, dim01=(0, 1)), 1)
    m = lrn.final_model()
    assert m.w0 == 0
    np.testing.assert_allclose(lrn.train_raw(), fm_predict_dense(X, 0.0, m.w, m.V), atol=1e-10)


def test_stream_normals_reproducible_independent_and_standard():
    from scipy.stats import kstest

    a, b, c = np.empty(10001), np.empty(10001), np.empty(10001)
    stream_normals(42, 7, a)
    stream_normals(42, 7, b)
    stream_normals(42, 8, c)
    np.testing.assert_array_equal(a, b)
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.05
    assert kstest(a, "norm").pvalue > 1e-3
    # the first draws of many streams (what a sweep uses) are standard normal too
    first = np.empty(5000)
    one = np.empty(1)
    for s in range(5000):
        stream_normals(3, s, one)
        first[s] = one[0]
    assert kstest(first, "norm").pvalue > 1e-3


def test_thread_choice_follows_the_clock():
    from fmcli.config import ThreadChoice

    def run(cost, steps=150, busy=0):
        c = ThreadChoice(2, busy=lambda: busy, cores=2)
        seen = []
        for s in range(steps):
            n = c.next()
            seen.append(n)
            c.record(n, cost(n, s))
        return seen

    def probes(seen, of):
        return [s for s, n in enumerate(seen) if s > 4 and n == of]

    # first step on all threads, then 1, 2, 1, 2 (PROBES), then the faster one, the other one
    # tried after 16 steps, then after 32, 64, 128 while the choice stands
    fast_pair = run(lambda n, s: 1.0 / n)
    assert fast_pair[:5] == [2, 1, 2, 1, 2]
    assert probes(fast_pair, 1) == [21, 37, 69, 133]
    busy = run(lambda n, s: 1.0 if n == 1 else 3.0)
    assert busy[:5] == [2, 1, 2, 1, 2] and probes(busy, 2) == [21, 37, 69, 133]
    # the machine gets busy after step 40: the window of the parallel steps moves the run to one
    # thread at once, and the probes start again at 16 steps
    later = run(lambda n, s: (1.0 / n) if s < 40 else (1.0 if n == 1 else 3.0))
    assert later[38:41] == [2, 2, 2] and set(later[43:59]) == {1}
    assert probes(later[:100], 2)[-2:] == [59, 75]
    # other processes keep both cores busy: no step on two threads at all
    assert set(run(lambda n, s: 1.0, busy=2)) == {1}
    # one of two cores busy: two threads would share a core with it, not tried either; one of
    # four: tried
    assert set(run(lambda n, s: 1.0, busy=1)) == {1}
    c = ThreadChoice(2, busy=lambda: 1, cores=4)
    assert [c.next() for _ in range(1)] == [2]
    assert ThreadChoice(2, busy=lambda: None, cores=2).next() == 2     # no /proc: the clock alone
    c = ThreadChoice(1)
    assert [c.next() for _ in range(3)] == [1, 1, 1]


@pytest.mark.parametrize("task", ["r", "c"])
def test_steps_on_changing_thread_counts_give_the_bits_of_one_thread(task):
    """A small set's iterations switch between one thread and two (config.ThreadChoice, as
    fmcli.train drives them); the model is the one a run on one thread gives, bit for bit."""
    from fmcli.config import ThreadChoice, threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two threads")
    p = recsys(8, n=2000, n_test=300, task=task)
    with threads(2):
        assert ThreadChoice.for_run(p.train.nnz).n == 2
        choice = ThreadChoice(2, busy=lambda: 0, cores=2)      # both options tried, whatever the load
        mixed = make_learner("mcmc", p.train, {"test": p.test}, k=4, task=task)
        seen = []
        for it in range(8):
            with choice.step() as n:
                assert numba.get_num_threads() == n
                seen.append(n)
                mixed.step(it)
        assert numba.get_num_threads() == 2
    assert set(seen) == {1, 2}
    with threads(1):
        assert ThreadChoice.for_run(p.train.nnz) is None
        one = fit(make_learner("mcmc", p.train, {"test": p.test}, k=4, task=task), 8)
    a, b = mixed.final_model(), one.final_model()
    assert a.w0 == b.w0
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(mixed.eval_predictions("test"), one.eval_predictions("test"))


def test_large_train_sets_run_every_iteration_on_all_threads(monkeypatch):
    from fmcli import config

    monkeypatch.setattr(config, "PARALLEL_MIN_NNZ", 100)
    assert config.ThreadChoice.for_run(99) is not None or numba.get_num_threads() == 1
    assert config.ThreadChoice.for_run(100) is None


def test_a_worker_sharing_the_cores_chooses_threads_at_any_size(monkeypatch):
    """In a worker process of fmcli.executors (config.share_cores) a run without --threads
    chooses every step between one thread and numba's ceiling, whatever its size (a task left
    alone takes the cores the other workers freed); with --threads the usual rule holds."""
    from fmcli import config

    monkeypatch.setattr(config, "PARALLEL_MIN_NNZ", 100)
    monkeypatch.setattr(config, "_worker_share", 1)
    ceiling = numba.config.NUMBA_NUM_THREADS
    choice = config.ThreadChoice.for_run(10**9)
    if ceiling > 1:
        assert choice.n == ceiling
    else:
        assert choice is None
    assert config.ThreadChoice.for_run(10**9, threads=2) is None
    monkeypatch.setattr(config, "_worker_share", 0)
    assert config.ThreadChoice.for_run(10**9) is None


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_train_metrics_from_the_residual_cache_match_numpy(method):
    p = recsys(4, n=3000, n_test=500, users=30, items=20, ctx=3, k=2, noise=0.5)
    lrn = fit(make_learner(method, p.train, {"test": p.test}, k=3, seed=2, regular=(0, 1, 1)), 3)
    scores, y = lrn.train_scores()
    m = lrn.final_model()
    pred = np.clip(lrn.cache[:, 0].astype(np.float64) + y, m.y_min, m.y_max)
    got = metrics.evaluate("r", scores, y)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((pred - y) ** 2)), rel=1e-12)
    assert got["mae"] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-12)


def test_regression_metrics_match_numpy_and_clip_only_residuals():
    rng = np.random.default_rng(5)
    pred, y = rng.normal(3, 2, 1001), rng.integers(1, 6, 1001).astype(np.float64)
    assert metrics.rmse(pred, y) == pytest.approx(np.sqrt(np.mean((pred - y) ** 2)), rel=1e-12)
    assert metrics.mae(pred, y) == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-12)
    s2, s1 = metrics.difference_sums(pred - y, y, True, 1.0, 5.0)
    clipped = np.clip(pred, 1, 5)
    assert s2 == pytest.approx(np.sum((clipped - y) ** 2), rel=1e-12)
    assert s1 == pytest.approx(np.sum(np.abs(clipped - y)), rel=1e-12)
    assert np.isnan(metrics.rmse(pred[:0], y[:0])) and np.isnan(metrics.evaluate("r", pred[:0], y[:0])["mae"])

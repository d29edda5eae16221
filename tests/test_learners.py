"""One suite of behaviour every learner must have (as implicit runs one mixin against every
model): it recovers a planted model, the same seed gives the same model, features never seen
in training stay zero, a saved model predicts what training predicted, a warm start keeps the
loaded parameters, and the thread count does not change the model. Each learner is reached
through its public interface only (construct, step, train_scores, eval_predictions,
final_model)."""

import numpy as np
import pytest
from conftest import fit, make_learner, recsys

from fmcli import metrics
from fmcli.data import SparseData

# per learner: options that fit the planted data below, and iterations
SETTINGS = {
    "sgd": (dict(learn_rate=0.02, regular=(0, 0.001, 0.001)), 60),
    "sgda": (dict(learn_rate=0.02), 60),
    "als": (dict(regular=(0, 0.5, 0.5)), 25),
    "mcmc": (dict(regular=(0, 0, 0)), 120),
}
METHODS = list(SETTINGS)


def learner(method, problem, *, seed=0, k=2, task="r", model=None, evals=None, **kw):
    options, _ = SETTINGS[method]
    options = dict(options, **kw)
    if evals is None:
        evals = {"test": problem.test}
        if method == "sgda":
            evals["validation"] = problem.test
    groups = None
    if method in ("mcmc", "sgda"):       # -meta's groups, features beyond the layout in group 0
        n = max(d.n_features for d in evals.values())
        groups = np.concatenate([problem.groups(), np.zeros(max(0, n - problem.n_features), np.int32)])
    return make_learner(method, problem.train, evals, k=k, seed=seed, task=task, model=model,
                        groups=groups, **options)


def grid(problem):
    """Every (user, item, context) row, without the numeric feature: where the planted
    function is compared with the learned one."""
    U, I, C = problem.users, problem.items, problem.ctx
    u, i, c = np.meshgrid(np.arange(U), U + np.arange(I), U + I + np.arange(C), indexing="ij")
    ids = np.stack([u.ravel(), i.ravel(), c.ravel()], 1).astype(np.int32)
    n = len(ids)
    return np.arange(0, 3 * n + 1, 3, dtype=np.int64), ids.ravel(), np.ones(3 * n, np.float32)


def double_centred(M):
    return M - M.mean(0) - M.mean(1, keepdims=True) + M.mean()


@pytest.mark.parametrize("method", METHODS)
def test_recovers_the_planted_model(method):
    """The learned w0, w, V define the planted function on every (user, item, context) row,
    most of them never seen together in training, and the user-item interactions V_U V_Iᵀ
    (double-centred: the part that rows identify) are the planted ones."""
    p = recsys(1, n=8000, n_test=500, users=30, items=20, ctx=4, k=2, noise=0.1)
    lrn = fit(learner(method, p), SETTINGS[method][1])
    m, truth = lrn.final_model(), p.planted
    rows = grid(p)
    f_true = truth.predict_raw(*rows)
    f_got = m.predict_raw(*rows) if m.samples is None else \
        np.mean([m.predict_raw(*rows, params=(w0, w, V)) for w0, w, V in zip(*m.samples)], 0)
    rel = np.sqrt(np.mean((f_got - f_true) ** 2)) / np.std(f_true)
    assert rel < 0.08, rel
    U, I = p.users, p.items
    users, items = slice(0, U), slice(U, U + I)
    want = double_centred(truth.V[users] @ truth.V[items].T)
    if m.samples is None:
        got = double_centred(m.V[users] @ m.V[items].T)
    else:
        got = np.mean([double_centred(V[users] @ V[items].T) for V in m.samples[2]], 0)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.1
    # test error near the noise level (0.1)
    assert metrics.rmse(lrn.eval_predictions("test"), p.test.y) < 0.12


@pytest.mark.parametrize("method", METHODS)
def test_classification_ranks_like_the_planted_model(method):
    p = recsys(2, n=4000, n_test=1000, users=30, items=20, ctx=4, k=2, task="c")
    options = {"sgd": dict(learn_rate=0.05), "sgda": dict(learn_rate=0.05)}.get(method, {})
    lrn = fit(learner(method, p, task="c", **options), 30)
    prob = lrn.eval_predictions("test")
    assert ((prob >= 0) & (prob <= 1)).all()
    planted = p.planted.predict_raw(*p.test.csr())
    best = metrics.auc(planted, p.test.y)
    assert metrics.auc(prob, p.test.y) > best - 0.04


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_model_other_seed_another(method):
    p = recsys(3, n=600, n_test=100)
    a, b, c = (fit(learner(method, p, seed=s), 3) for s in (4, 4, 5))
    for x, y in ((a, b),):
        mx, my = x.final_model(), y.final_model()
        assert mx.w0 == my.w0
        np.testing.assert_array_equal(mx.w, my.w)
        np.testing.assert_array_equal(mx.V, my.V)
        np.testing.assert_array_equal(x.eval_predictions("test"), y.eval_predictions("test"))
    assert not np.array_equal(a.final_model().V, c.final_model().V)


@pytest.mark.parametrize("method", METHODS)
def test_features_never_seen_in_training_stay_zero(method):
    p = recsys(4, n=600, n_test=100)
    n = p.n_features
    # two extra features only in the test rows: the model has room for them, learns nothing
    test = SparseData(np.array([0, 2, 3], np.int64), np.array([0, n + 1, n], np.int32),
                      np.ones(3, np.float32), np.array([3.0, 3.0], np.float32), n + 2)
    lrn = fit(learner(method, p, evals={"test": test, "validation": test}), 3)
    m = lrn.final_model()
    assert m.n_features == n + 2
    assert (m.w[n:] == 0).all() and (m.V[n:] == 0).all()
    # row 0 is feature 0 and an unseen feature: predicted as feature 0 alone
    alone = m.predict(np.array([0, 1], np.int64), np.array([0], np.int32), np.ones(1, np.float32))
    if m.samples is None:
        assert lrn.eval_predictions("test")[0] == pytest.approx(alone[0], abs=1e-9)


@pytest.mark.parametrize("suffix", [".fm", ".npz"])
@pytest.mark.parametrize("method", METHODS)
def test_saved_model_predicts_what_training_predicted(method, suffix, tmp_path):
    from fmcli.io.modelfile import load_model, save_model

    p = recsys(5, n=600, n_test=200)
    lrn = fit(learner(method, p), 5)
    save_model(tmp_path / f"m{suffix}", lrn.final_model())
    back = load_model(str(tmp_path / f"m{suffix}"))
    # MCMC stores its samples as float32
    np.testing.assert_allclose(back.predict(*p.test.csr()), lrn.eval_predictions("test"),
                               atol=2e-5 if method == "mcmc" else 0)


@pytest.mark.parametrize("method", METHODS)
def test_warm_start_keeps_the_loaded_parameters(method):
    p = recsys(6, n=600, n_test=100)
    first = fit(learner(method, p), 4).final_model()
    w0, w, V = first.w0, first.w.copy(), first.V.copy()
    first.samples = None     # as -load_model does: continue from the last state
    lrn = learner(method, p, model=first, seed=9)
    m = lrn.final_model()
    assert m.w0 == w0
    np.testing.assert_array_equal(m.w, w)
    np.testing.assert_array_equal(m.V, V)
    before = metrics.rmse(lrn.eval_predictions("test"), p.test.y)
    fit(lrn, 4)
    after = metrics.rmse(lrn.eval_predictions("test"), p.test.y)
    assert not np.array_equal(lrn.final_model().V, V) and after < before + 0.05


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", ["r", "c"])
def test_thread_count_does_not_change_the_model(method, task, monkeypatch):
    from fmcli.config import threads

    p = recsys(7, n=2000, n_test=300, task=task, duplicate=method == "als")
    runs = []
    for n_threads in (1, 2):
        with threads(n_threads):
            runs.append(fit(learner(method, p, task=task, k=4), 3))
    a, b = (r.final_model() for r in runs)
    assert a.w0 == b.w0
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(runs[0].eval_predictions("test"), runs[1].eval_predictions("test"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", ["r", "c"])
def test_train_scores_match_the_train_rows(method, task):
    """train_scores may come in the learner's own row order (and, for ALS/MCMC, from the
    float32 residual cache): its metrics are those of the final model on the train rows."""
    p = recsys(8, n=800, n_test=100, task=task)
    lrn = fit(learner(method, p, task=task), 2)
    pred, y = lrn.train_scores()
    m = lrn.final_model()
    if m.samples is not None:      # the current sample, not the average
        m.samples = None
    want = metrics.evaluate(task, m.predict(*p.train.csr()), p.train.y)
    got = metrics.evaluate(task, pred, y)
    assert want.keys() == got.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-5)

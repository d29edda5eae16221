"""Parallel ALS and MCMC: colour classes, per-feature random streams, results independent of
the number of threads, predictions in the user's row order."""

import numba
import numpy as np
import pytest

from fmcli.data import SparseData
from fmcli.learners import coord
from fmcli.learners.als import ALSLearner
from fmcli.learners.base import TrainOptions
from fmcli.learners.mcmc import MCMCLearner
from fmcli.model import FMModel
from fmcli.train import threads

from naive import fm_predict_rows

TWO = min(2, numba.config.NUMBA_NUM_THREADS)


@pytest.fixture(autouse=True)
def parallel_even_for_small_data(monkeypatch):
    monkeypatch.setattr(coord, "PARALLEL_MIN_NNZ", 0)


def recsys(seed, n=2000, users=80, items=40, ctx=5, task="r", duplicate=False):
    """One-hot user, item and context ids plus a numeric feature in half the rows: several
    colour classes, long and short columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        r = [(int(rng.integers(users)), 1.0), (users + int(rng.integers(items)), 1.0),
             (users + items + int(rng.integers(ctx)), 1.0)]
        if rng.random() < 0.5:
            r.append((users + items + ctx, float(rng.random())))
        rows.append(r)
    if duplicate:
        rows[0].append(rows[0][0])
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    indices = np.array([j for r in rows for j, _ in r], np.int32)
    data = np.array([x for r in rows for _, x in r], np.float32)
    y = rng.normal(3, 1, n)
    if task == "c":
        y = np.where(y > 3, 1.0, -1.0)
    return SparseData(indptr, indices, data, y.astype(np.float32), users + items + ctx + 1), rows


def train(method, d, n_threads, task="r", iters=3, seed=5, groups=None, k=4):
    cls = ALSLearner if method == "als" else MCMCLearner
    opts = TrainOptions(task=task, method=method, dim=(1, 1, k), regular=(0, 1, 1), seed=seed,
                        groups=groups)
    with threads(n_threads):
        rng = np.random.default_rng(seed)
        lrn = cls(FMModel.init(d.n_features, k, rng=rng), d, {"test": d}, opts, rng)
        for it in range(iters):
            lrn.step(it)
    return lrn


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("task", ["r", "c"])
@pytest.mark.parametrize("duplicate", [False, True])
def test_same_model_with_one_and_two_threads(method, task, duplicate):
    d, _ = recsys(1, task=task, duplicate=duplicate)
    a = train(method, d, 1, task)
    b = train(method, d, TWO, task)
    assert a.has_duplicates == duplicate
    # the features of a class touch disjoint rows and draw from their own streams: the
    # arithmetic is the same whatever thread runs it, so the models are identical
    np.testing.assert_array_equal(a.model.V, b.model.V)
    np.testing.assert_array_equal(a.model.w, b.model.w)
    assert a.model.w0 == b.model.w0
    np.testing.assert_array_equal(a.eval_predictions("test"), b.eval_predictions("test"))


def test_thread_count_is_restored():
    before = numba.get_num_threads()
    train("als", recsys(2)[0], 1, iters=1)
    assert numba.get_num_threads() == before


def test_colour_classes_never_share_a_row():
    d, rows = recsys(3)
    lrn = train("als", d, 1, iters=0)
    assert len(lrn.class_ptr) - 1 >= 4          # user, item, context, numeric at least
    assert sorted(lrn.order) == sorted(lrn.cols)
    colour = np.full(d.n_features, -1)
    for c in range(len(lrn.class_ptr) - 1):
        colour[lrn.order[lrn.class_ptr[c]:lrn.class_ptr[c + 1]]] = c
    for r in rows:
        cs = [colour[j] for j, _ in r]
        assert len(set(cs)) == len(cs)


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_parallel_sweep_equals_sequential_sweep(method):
    """Visiting each class's features backwards (or in any order) gives the same model: the
    updates within a class are independent, which is what makes the parallel sweep exact."""
    d, _ = recsys(4)
    a = train(method, d, 1, iters=1)
    b = train(method, d, 1, iters=1)
    rev = np.concatenate([a.order[a.class_ptr[c]:a.class_ptr[c + 1]][::-1]
                          for c in range(len(a.class_ptr) - 1)])
    for lrn, order in ((a, a.order), (b, rev)):
        coord.seed_numba(11)                    # the same hyperparameter draws
        lrn._before_sweep()
        with threads(1):
            lrn._sweep(7, order, a.class_ptr)
    np.testing.assert_array_equal(a.model.V, b.model.V)
    np.testing.assert_array_equal(a.model.w, b.model.w)
    np.testing.assert_array_equal(a.C, b.C)


def test_rows_reordered_inside_predictions_in_user_order():
    d, rows = recsys(5)
    lrn = train("als", d, TWO, iters=2)
    assert lrn._scratch[0].shape[0] == TWO          # the sweep ran in TWO lanes
    assert not np.array_equal(lrn.perm, np.arange(d.n_rows))   # rows grouped by user inside
    m = lrn.model
    raw = fm_predict_rows(rows, m.w0, m.w, m.V)
    np.testing.assert_allclose(lrn.yhat, raw, atol=1e-9)
    np.testing.assert_allclose(lrn.train_predictions(), np.clip(raw, d.y.min(), d.y.max()), atol=1e-9)
    np.testing.assert_allclose(lrn.eval_predictions("test"), lrn.train_predictions(), atol=1e-12)
    np.testing.assert_allclose(lrn.e, raw - d.y, atol=1e-5)


def test_stream_normals_reproducible_independent_and_standard():
    from scipy.stats import kstest

    a, b, c = np.empty(10001), np.empty(10001), np.empty(10001)
    coord.stream_normals(42, 7, a)
    coord.stream_normals(42, 7, b)
    coord.stream_normals(42, 8, c)
    np.testing.assert_array_equal(a, b)
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.05
    assert kstest(a, "norm").pvalue > 1e-3
    # the first draws of many streams (what a sweep uses) are standard normal too
    first = np.empty(5000)
    one = np.empty(1)
    for s in range(5000):
        coord.stream_normals(3, s, one)
        first[s] = one[0]
    assert kstest(first, "norm").pvalue > 1e-3

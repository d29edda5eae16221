"""Factor blocks (k > coord.FACTOR_BLOCK): the sweep goes over blocks of factors with a cache of
e and one block's q. A dense float64 transcription of a blocked ALS sweep, monotone ALS loss,
exact caches, the same model for 1 and 2 threads, and no blocks where there should be none."""

import numba
import numpy as np
import pytest

from fmcli.data import SparseData
from fmcli.learners import coord
from fmcli.learners.als import ALSLearner
from fmcli.learners.base import TrainOptions
from fmcli.learners.mcmc import MCMCLearner
from fmcli.model import FMModel

from naive import dense_to_rows, factor_sums, fm_predict_dense, regularised_loss
from test_parallel import recsys, train

TWO = min(2, numba.config.NUMBA_NUM_THREADS)
K = 20


def dense_problem(seed, n=300, p=30, density=0.15, task="r"):
    rng = np.random.default_rng(seed)
    X = np.where(rng.random((n, p)) < density, rng.normal(1.0, 0.5, (n, p)), 0.0).astype(np.float32)
    X[:, 0] = 1.0                      # every row has an entry
    X[:, 1] = rng.random(n) < 0.5      # a binary feature in half the rows
    X[:, p - 1] = 0.0                  # a feature without entries
    y = rng.normal(3.0, 1.0, n).astype(np.float32)
    if task == "c":
        y = np.where(y > 3.0, 1.0, -1.0).astype(np.float32)
    d = SparseData(*dense_to_rows(X), y, p)
    return X.astype(np.float64), d


def make(d, method="als", k=K, seed=0, task="r", regular=(0.5, 1.0, 2.0), groups=None, **extra):
    cls = ALSLearner if method == "als" else MCMCLearner
    opts = TrainOptions(task=task, method=method, dim=(1, 1, k), regular=regular, seed=seed,
                        groups=groups, extra=extra)
    rng = np.random.default_rng(seed)
    model = FMModel.init(d.n_features, k, init_stdev=0.3, rng=rng)
    return cls(model, d, {"test": d}, opts, rng)


def blocks_of(k, width):
    return [(f0, min(f0 + width, k)) for f0 in range(0, k, width)]


def dense_blocked_als_sweep(X, y, w0, w, V, lam0, lam_w, lam_v, features, blocks):
    """One blocked ALS sweep written out densely in float64, every statistic from scratch
    (no caches): w0; then for each block [f0, f1): for each feature in `features`, w_j (first
    block only), then v_{j,f0} ... v_{j,f1-1}, each set to the exact minimiser of
    ½ Σ e² + ½ λ θ² given all the others (lam_w, lam_v: per feature)."""
    w, V = w.copy(), V.copy()
    X2 = X * X

    def solve(h, theta, lam):
        # ŷ by the sum-of-squares identity (the pairwise form, naive.fm_predict_dense, is too
        # slow for a ŷ per coordinate; the caches are checked against it below)
        Q = X @ V
        e = w0 + X @ w + 0.5 * np.sum(Q * Q - X2 @ (V * V), axis=1) - y
        P = lam + h @ h
        return 0.0 if P == 0 else (h @ (theta * h - e)) / P

    w0 = solve(np.ones(len(X)), w0, lam0)
    for b, (f0, f1) in enumerate(blocks):
        for j in features:
            x = X[:, j]
            if b == 0:
                w[j] = solve(x, w[j], lam_w[j])
            for f in range(f0, f1):
                q = X @ V[:, f]
                V[j, f] = solve(x * (q - x * V[j, f]), V[j, f], lam_v[j])
    return w0, w, V


@pytest.mark.parametrize("width", [8, 16])
@pytest.mark.parametrize("duplicates_path", [False, True])
def test_blocked_als_sweep_matches_dense_transcription(monkeypatch, width, duplicates_path):
    monkeypatch.setattr(coord, "FACTOR_BLOCK", width)
    X, d = dense_problem(1)
    groups = (np.arange(X.shape[1]) % 3).astype(np.int32)
    lrn = make(d, groups=groups, regular=(0.5, 1.0, 0.2, 3.0, 0.7, 2.0, 0.1))
    assert lrn.factor_blocks == blocks_of(K, width) and len(lrn.factor_blocks) >= 2
    assert lrn.C.shape == (d.n_rows, width + 1)
    lrn.has_duplicates = duplicates_path      # the plain (in-place) kernel too
    # the colour classes share no rows, so the order within a class does not matter: the
    # transcription may visit the features in the learner's order, one at a time
    for c in range(len(lrn.pass_ptr) - 1):
        cls = lrn.pass_order[lrn.pass_ptr[c]:lrn.pass_ptr[c + 1]]
        assert ((X[:, cls] != 0).sum(axis=1) <= 1).all()
    m = lrn.model
    lam_w, lam_v = lrn.lam_w[lrn.groups], lrn.lam_v[lrn.groups, 0]
    ref = dense_blocked_als_sweep(X, lrn.z, lrn.w0a[0], m.w, m.V, lrn.lam0, lam_w, lam_v,
                                  lrn.pass_order, blocks_of(K, width))
    lrn._sweep()
    assert lrn.w0a[0] == pytest.approx(ref[0], abs=1e-5)
    np.testing.assert_allclose(m.w, ref[1], atol=1e-5)
    np.testing.assert_allclose(m.V, ref[2], atol=1e-5)
    assert m.w[-1] == 0 and (m.V[-1] == 0).all()        # no entries: never visited


@pytest.mark.parametrize("width", [8, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_als_loss_never_increases_with_blocks(monkeypatch, width, seed):
    monkeypatch.setattr(coord, "FACTOR_BLOCK", width)
    X, d = dense_problem(10 + seed)
    lrn = make(d, seed=seed, regular=(0.0, 0.1, 0.1) if seed else (0.5, 1.0, 2.0))
    assert len(lrn.factor_blocks) >= 2
    m = lrn.model

    def loss():
        return regularised_loss(X, lrn.z, lrn.w0a[0], m.w, m.V, lrn.lam0, lrn.lam_w[lrn.groups],
                                lrn.lam_v[lrn.groups, 0])

    before = loss()
    for it in range(6):
        lrn.step(it)
        after = loss()
        assert after <= before + 1e-9 * max(1.0, before)
        before = after


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("duplicates_path", [False, True])
def test_caches_exact_after_blocked_sweep(monkeypatch, method, duplicates_path):
    monkeypatch.setattr(coord, "FACTOR_BLOCK", 8)
    X, d = dense_problem(5)
    lrn = make(d, method)
    lrn.has_duplicates = duplicates_path
    m = lrn.model
    last = lrn.factor_blocks[-1]
    assert last == (16, 20)                   # a narrower last block
    for it in range(2):
        lrn._before_sweep()
        lrn._sweep(it + 1)                    # sweep only: caches kept incrementally
        # e carried over all blocks; q of the last block
        assert lrn.block == last
        np.testing.assert_allclose(lrn.e, fm_predict_dense(X, lrn.w0a[0], m.w, m.V) - d.y, atol=1e-5)
        np.testing.assert_allclose(lrn.q, factor_sums(X, m.V)[:, 16:20], atol=1e-5)
        # the train refresh: exact ŷ and q of block 0, ready for the next sweep
        lrn._refresh_train()
        assert lrn.block == (0, 8)
        np.testing.assert_allclose(lrn.yhat, fm_predict_dense(X, lrn.w0a[0], m.w, m.V), atol=1e-10)
        np.testing.assert_allclose(lrn.q, factor_sums(X, m.V)[:, :8], atol=1e-5)
        if lrn._yhat is not None:             # probit: e is set after the latent targets
            coord.set_residuals(lrn.C, lrn._yhat, lrn._z)
        np.testing.assert_allclose(lrn.e, lrn.yhat - lrn.z, atol=1e-5)
    lrn.step(2)
    np.testing.assert_allclose(lrn.e, lrn.yhat - lrn.z, atol=1e-5)
    np.testing.assert_allclose(lrn.q, factor_sums(X, m.V)[:, :8], atol=1e-5)
    # a sweep started with another block's q in the cache computes block 0's first
    lrn._sweep(5)
    np.testing.assert_allclose(lrn.q, factor_sums(X, m.V)[:, 16:20], atol=1e-5)
    lrn._sweep(6)
    np.testing.assert_allclose(lrn.e, fm_predict_dense(X, lrn.w0a[0], m.w, m.V) - lrn.z, atol=1e-5)


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("task", ["r", "c"])
@pytest.mark.parametrize("duplicate", [False, True])
@pytest.mark.parametrize("width", [8, None])
def test_same_model_with_one_and_two_threads(monkeypatch, method, task, duplicate, width):
    monkeypatch.setattr(coord, "PARALLEL_MIN_NNZ", 0)
    if width:
        monkeypatch.setattr(coord, "FACTOR_BLOCK", width)
    d, _ = recsys(1, task=task, duplicate=duplicate)
    a = train(method, d, 1, task, k=K)
    b = train(method, d, TWO, task, k=K)
    assert len(a.factor_blocks) >= 2 and a.has_duplicates == duplicate
    assert b._scratch[0].shape[0] == TWO
    np.testing.assert_array_equal(a.model.V, b.model.V)
    np.testing.assert_array_equal(a.model.w, b.model.w)
    assert a.model.w0 == b.model.w0
    np.testing.assert_array_equal(a.eval_predictions("test"), b.eval_predictions("test"))
    np.testing.assert_array_equal(a.C, b.C)


def test_mcmc_blocks_draw_from_their_own_streams():
    seeds = [coord.block_seed(12345, b) for b in range(4)]
    assert seeds[0] == 12345 and len(set(seeds)) == 4
    assert all(0 <= s < 2**63 for s in seeds)
    assert coord.block_seed(12346, 1) != seeds[1]


def test_no_blocks_at_small_k_or_with_feature_blocks():
    X, d = dense_problem(3)
    small = make(d, k=coord.FACTOR_BLOCK)
    assert small.factor_blocks == [(0, coord.FACTOR_BLOCK)]
    assert small.C.shape == (d.n_rows, coord.FACTOR_BLOCK + 1)
    small.step(0)
    np.testing.assert_allclose(small.q, factor_sums(X, small.model.V), atol=1e-5)
    # the flat twin of relations: the full-k cache
    flat = make(d, k=coord.FACTOR_BLOCK + 4, blocks=[10])
    assert len(flat.factor_blocks) == 1 and flat.C.shape[1] == coord.FACTOR_BLOCK + 5
    flat.step(0)
    np.testing.assert_allclose(flat.q, factor_sums(X, flat.model.V), atol=1e-5)


def test_relations_keep_the_full_cache():
    from test_relation import dataset

    d, test = dataset(3)
    k = coord.FACTOR_BLOCK + 3
    opts = TrainOptions(task="r", method="als", dim=(1, 1, k), regular=(0, 2, 2), seed=1)
    rng = np.random.default_rng(1)
    lrn = ALSLearner(FMModel.init(d.n_model_features, k, rng=rng), d, {"test": test}, opts, rng)
    assert lrn.factor_blocks == [(0, k)] and lrn.C.shape == (d.n_rows, k + 1)
    lrn.step(0)
    assert np.isfinite(lrn.eval_predictions("test")).all()

"""-task o: the ordered probit MCMC (issue 15). The two-sided truncated normal against scipy
(KS), the class probabilities and likelihood against scipy's normal CDF, the cutpoints and
class probabilities recovered on data planted from known cutpoints, thread independence,
the rules."""

import numpy as np
import pytest
from conftest import fit, make_learner
from scipy import stats

from fmcli import ordinal
from fmcli.data import SparseData
from fmcli.learners.mcmc import finish_latent, ordinal_pass

INTERVALS = [(-np.inf, -0.5), (0.3, np.inf), (-1.0, 2.0), (2.5, 3.0), (4.0, 6.0), (-0.2, 0.4),
             (-6.0, -5.0), (-3.0, -2.9), (0.1, 5.0), (-np.inf, np.inf), (-9.0, 7.0), (-40.0, -39.5),
             (35.0, 36.0), (31.0, np.inf)]      # the last three: beyond FAST_TAIL, the exact path


NO_WEIGHTS = np.empty(0)


def elementwise(fn):
    """A compiled loop out[i] = fn(x[i]), fn one of fmcli's compiled scalar functions."""
    from fmcli.config import njit

    @njit
    def loop(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])
    return loop


def tail_log_prob(a, b):
    """log(Φ(b) − Φ(a)) by scipy, accurate in the tails."""
    from scipy.special import log_ndtr

    if a + b > 0:
        a, b = -b, -a
    top, low = log_ndtr(b), log_ndtr(a)
    return top + np.log1p(-np.exp(low - top))


@pytest.mark.parametrize("a,b", INTERVALS)
def test_truncated_draws_follow_the_truncated_normal(a, b):
    n = 40000       # three parallel chunks
    mean = 0.7
    z, z2 = np.empty(n), np.empty(n)
    # z ~ N(mean, 1) truncated to (mean + a, mean + b]: bounds [mean + a, mean + b] for class 0;
    # the proposal's bounds (z2) the interval shifted by 0.25
    yhat = np.full(n, mean)
    cls = np.zeros(n, np.int64)
    bnd, bnd2 = np.array([mean + a, mean + b]), np.array([mean + a + 0.25, mean + b + 0.25])
    log_ratio = ordinal_pass(yhat, cls, bnd, bnd2, z, z2, 7, np.zeros((0, 3)), NO_WEIGHTS)
    want = tail_log_prob(a + 0.25, b + 0.25) - tail_log_prob(a, b)
    assert log_ratio == pytest.approx(n * want, rel=1e-11, abs=1e-12 * n)
    cache = np.full((n, 3), 7.0, np.float32)       # column 0 receives the residuals ŷ − z
    finish_latent(yhat, cls, bnd, z, cache)
    np.testing.assert_array_equal(cache[:, 0], (yhat - z).astype(np.float32))
    assert (cache[:, 1:] == 7.0).all()
    finish_latent(yhat, cls, bnd2, z2, cache)
    for x, (lo, hi) in ((z, (a, b)), (z2, (a + 0.25, b + 0.25))):
        assert np.all((x >= mean + lo) & (x <= mean + hi))
        p = stats.kstest(x - mean, stats.truncnorm(lo, hi).cdf).pvalue
        assert p > 1e-3
        # the test can fail: the untruncated normal is rejected on a truncated interval
        if np.exp(tail_log_prob(lo, hi)) < 0.99:
            assert stats.kstest(x - mean, stats.norm.cdf).pvalue < 1e-6
    # the same draws on one thread (the uniforms are counter-based, the slow path seeded per chunk)
    from fmcli.config import threads

    with threads(1):
        w, w2 = np.empty(n), np.empty(n)
        ordinal_pass(yhat, cls, bnd, bnd2, w, w2, 7, np.zeros((0, 3)), NO_WEIGHTS)
        finish_latent(yhat, cls, bnd, w, cache)
        finish_latent(yhat, cls, bnd2, w2, cache)
    np.testing.assert_array_equal(w, z)
    np.testing.assert_array_equal(w2, z2)


def test_phi_matches_scipy_and_the_array_form_the_scalar():
    # the series on |x| <= 2 and erfc beyond, on both sides of the switch and far in the tails
    from scipy.special import ndtr

    rng = np.random.default_rng(2)
    x = np.concatenate([np.linspace(-3, 3, 6001), rng.normal(0, 3, 5000), [-2.0, 2.0, np.nextafter(-2.0, -3),
                        np.nextafter(2.0, 3), -37.0, 9.0, 0.0, -np.inf, np.inf, np.nan]])
    a, s = np.empty_like(x), np.empty_like(x)
    ordinal.phi_cdf_array(x, a)
    elementwise(ordinal.phi_cdf)(x, s)
    np.testing.assert_array_equal(a, s)
    series = np.abs(x) <= ordinal.PHI_SERIES_LIMIT
    np.testing.assert_allclose(s[series], ndtr(x[series]), rtol=2e-14, atol=0)
    np.testing.assert_allclose(s[~series], ndtr(x[~series]), rtol=1e-12, atol=0)    # erfc's own error
    assert np.isnan(s[-1])


def test_normal_quantile_matches_scipy():
    from scipy.special import ndtri

    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(20000), 10.0 ** -rng.uniform(0, 300, 20000), 1 - 10.0 ** -rng.uniform(1, 15, 200)])
    out = np.empty_like(p)
    elementwise(ordinal.normal_quantile)(p, out)
    np.testing.assert_allclose(out, ndtri(p), rtol=1e-14, atol=1e-300)


def test_pass_likelihood_and_curvature_match_references():
    # several classes, random ŷ and bounds: the pass's sums against the per-row log-space kernel
    # and scipy; its curvature sums against finite differences of the log-likelihood
    rng = np.random.default_rng(11)
    gamma = np.array([-1.0, -0.2, 0.5, 1.6])
    b = ordinal.bounds(gamma)
    b2 = ordinal.bounds(gamma + rng.normal(0, 0.05, 4))
    n = 40000
    yhat = rng.normal(0.2, 1.2, n)
    yhat[:4] = [45.0, -45.0, 33.0, -31.5]        # rows on the exact path
    cls = rng.integers(0, 5, n)
    z, z2 = np.empty(n), np.empty(n)
    curv = np.zeros((5, 3))
    log_ratio = ordinal_pass(yhat, cls, b, b2, z, z2, 3, curv, NO_WEIGHTS)
    cur, new = ordinal.log_likelihood(yhat, cls, b), ordinal.log_likelihood(yhat, cls, b2)
    assert log_ratio == pytest.approx(new - cur, rel=1e-11, abs=1e-14 * abs(cur))
    want = sum(tail_log_prob(b2[m] - t, b2[m + 1] - t) - tail_log_prob(b[m] - t, b[m + 1] - t)
               for t, m in zip(yhat[:300], cls[:300]))
    assert ordinal_pass(yhat[:300], cls[:300], b, b2, z[:300], z2[:300], 3, np.zeros((0, 3)), NO_WEIGHTS) \
        == pytest.approx(want, rel=1e-11, abs=1e-12)
    # −∂² of Σ log P in γ from the curvature sums (as OrdinalSampler.proposal_factor assembles them)
    keep = np.abs(yhat) < 20           # the curvature leaves out the exact-path rows
    curv_k = np.zeros((5, 3))
    ordinal_pass(yhat[keep], cls[keep], b, b2, z[keep], z2[keep], 3, curv_k, NO_WEIGHTS)
    H = np.zeros((4, 4))
    for j in range(4):
        H[j, j] = curv_k[j, 1] + curv_k[j + 1, 0]
        if j < 3:
            H[j, j + 1] = H[j + 1, j] = curv_k[j + 1, 2]

    def ll(g):
        return ordinal.log_likelihood(yhat[keep], cls[keep], ordinal.bounds(g))

    h = 1e-4
    num = np.zeros((4, 4))
    for j in range(4):
        for k in range(4):
            ej, ek = np.eye(4)[j] * h, np.eye(4)[k] * h
            num[j, k] = -(ll(gamma + ej + ek) - ll(gamma + ej - ek) - ll(gamma - ej + ek) + ll(gamma - ej - ek)) / (4 * h * h)
    np.testing.assert_allclose(H, num, rtol=1e-4, atol=1e-3 * np.abs(num).max())
    assert np.abs(H[0, 2]) == 0 and np.abs(num[0, 2]) < 1e-3 * np.abs(num).max()     # tridiagonal
    # -weights: each row's terms times its weight (0 included), against the per-row reference;
    # integer weights give the sums of the rows repeated
    u = rng.choice([0.0, 0.5, 1.0, 2.0, 3.0], n)
    want = sum(w * (tail_log_prob(b2[m] - t, b2[m + 1] - t) - tail_log_prob(b[m] - t, b[m + 1] - t))
               for t, m, w in zip(yhat[:300], cls[:300], u[:300]))
    assert ordinal_pass(yhat[:300], cls[:300], b, b2, z[:300], z2[:300], 3, np.zeros((0, 3)), u[:300]) \
        == pytest.approx(want, rel=1e-11, abs=1e-12)
    c = rng.integers(0, 4, n)
    rep = np.repeat(np.arange(n), c)
    curv_w, curv_r = np.zeros((5, 3)), np.zeros((5, 3))
    zr, zr2 = np.empty(len(rep)), np.empty(len(rep))
    weighted = ordinal_pass(yhat, cls, b, b2, z, z2, 3, curv_w, c.astype(np.float64))
    repeated = ordinal_pass(yhat[rep], cls[rep], b, b2, zr, zr2, 3, curv_r, NO_WEIGHTS)
    assert weighted == pytest.approx(repeated, rel=1e-10)
    np.testing.assert_allclose(curv_w, curv_r, rtol=1e-10)
    assert np.isfinite(z).all()         # rows of weight 0 get a latent target too


def test_curvature_of_many_rows_is_estimated_from_a_sample():
    # beyond 2 CURVATURE_ROWS rows the curvature comes from every s-th row, times s: close to the
    # sums over every row (four passes of 100,000 rows, each taking every row); the log ratio exact
    from fmcli.learners.mcmc import CURVATURE_ROWS

    rng = np.random.default_rng(5)
    b = ordinal.bounds(np.array([-1.0, 0.0, 1.2]))
    b2 = ordinal.bounds(np.array([-1.02, 0.01, 1.19]))
    n = 400000
    assert n // CURVATURE_ROWS > 1 and 100000 // CURVATURE_ROWS == 1
    yhat = rng.normal(0.1, 1.0, n)
    cls = rng.integers(0, 4, n)
    z, z2 = np.empty(n), np.empty(n)
    est, exact = np.zeros((4, 3)), np.zeros((4, 3))
    log_ratio = ordinal_pass(yhat, cls, b, b2, z, z2, 3, est, NO_WEIGHTS)
    parts = 0.0
    for a in range(0, n, 100000):
        s = slice(a, a + 100000)
        parts += ordinal_pass(yhat[s], cls[s], b, b2, z[s], z2[s], 3, exact, NO_WEIGHTS)
    assert log_ratio == pytest.approx(parts, rel=1e-11)
    np.testing.assert_allclose(est, exact, rtol=0.03, atol=0.03 * np.abs(exact).max())
    assert not np.array_equal(est, exact)


def test_pass_log_ratio_of_extreme_rows():
    # fast-path rows whose ratio P2/P is about 1e163 (P = Φ(−29.5), P2 = Φ(−11)) and about 1e-163,
    # among ordinary ones: the multiplied ratios neither overflow nor underflow
    rng = np.random.default_rng(8)
    b = ordinal.bounds(np.array([-1.0]))
    b2 = ordinal.bounds(np.array([17.5]))
    n = 30000
    yhat = rng.normal(0, 1, n)
    cls = rng.integers(0, 2, n)
    yhat[:3000], cls[:3000] = 28.5, 0
    yhat[3000:4000], cls[3000:4000] = -30.0, 1
    z, z2 = np.empty(n), np.empty(n)
    log_ratio = ordinal_pass(yhat, cls, b, b2, z, z2, 3, np.zeros((0, 3)), NO_WEIGHTS)
    want = ordinal.log_likelihood(yhat, cls, b2) - ordinal.log_likelihood(yhat, cls, b)
    assert np.isfinite(log_ratio)
    assert log_ratio == pytest.approx(want, rel=1e-11)


def test_probabilities_and_likelihood_match_scipy():
    rng = np.random.default_rng(0)
    gamma = np.sort(rng.normal(0, 2, 4))
    raw = rng.normal(0, 3, 200)
    raw[:3] = [40.0, -40.0, 0.0]
    P = ordinal.probabilities(raw, gamma)
    b = ordinal.bounds(gamma)
    want = stats.norm.cdf(b[None, 1:] - raw[:, None]) - stats.norm.cdf(b[None, :-1] - raw[:, None])
    np.testing.assert_allclose(P, want, atol=1e-12)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    assert (P >= 0).all()
    cls = rng.integers(0, 5, 200)
    got = np.array([ordinal.log_likelihood(raw[i:i + 1], cls[i:i + 1], b) for i in range(200)])
    p = want[np.arange(200), cls]
    ok = p > 1e-8            # where scipy's difference of CDFs is accurate
    np.testing.assert_allclose(got[ok], np.log(p[ok]), rtol=1e-7)
    assert ordinal.log_likelihood(raw, cls, b) == pytest.approx(got.sum(), rel=1e-12)
    # the far tails, where the difference of CDFs underflows: the end classes against log_ndtr
    from scipy.special import log_ndtr

    far = np.array([40.0, -40.0, 12.0])
    for c, x in ((0, 40.0), (4, -40.0), (0, 12.0)):
        want_tail = log_ndtr(b[1] - x) if c == 0 else log_ndtr(x - b[4])
        assert ordinal.log_likelihood(np.array([x]), np.array([c]), b) == pytest.approx(want_tail, rel=1e-9)
    assert np.isfinite(ordinal.log_likelihood(far, np.array([2, 2, 2]), b))
    # α <-> γ
    np.testing.assert_allclose(ordinal.cutpoints(ordinal.alphas(gamma)), gamma, atol=1e-12)


GAMMA = np.array([-1.2, -0.3, 0.4, 1.5])      # planted cutpoints of classes 1..5


def planted(seed, n=6000, items=30):
    """One-hot items with planted w (w0 = 0): z = w_j + N(0, 1), class 1..5 from GAMMA."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.8, items)
    j = rng.integers(0, items, n)
    z = w[j] + rng.standard_normal(n)
    y = (1 + np.searchsorted(GAMMA, z)).astype(np.float32)
    d = SparseData(np.arange(n + 1, dtype=np.int64), j.astype(np.int32), np.ones(n, np.float32), y, items)
    return d, w, j


def test_cutpoints_and_probabilities_recovered_from_planted_data():
    d, w, j = planted(1)
    lrn = make_learner("mcmc", d, {"test": d}, k=2, seed=3, task="o", regular=(0.0, 0.0, 0.0), burn_in=50)
    gammas = []
    for it in range(250):
        lrn.step(it)
        if it >= 50:
            gammas.append(lrn.ordinal.gamma - lrn.model.w0)
    g = np.mean(gammas, axis=0)
    # the gaps are identified; the location only up to the shift w0 and the mean of w share
    np.testing.assert_allclose(np.diff(g), np.diff(GAMMA), atol=0.08)
    shift = np.mean(g - GAMMA)
    np.testing.assert_allclose(g - shift, GAMMA, atol=0.08)
    pred = lrn.eval_predictions("test")
    np.testing.assert_allclose(pred.proba.sum(axis=1), 1.0, atol=1e-9)
    true = ordinal.probabilities(w[j], GAMMA)
    assert np.abs(pred.proba - true).mean() < 0.02
    # and the metrics: the expected value beats the constant prediction
    from fmcli.metrics import ordinal as ordinal_metrics

    m = ordinal_metrics(pred, d.y)
    assert m["rmse"] < np.std(d.y) * 0.95
    assert 0 < m["logloss"] < np.log(5)
    acc = lrn.ordinal.accepted / lrn.ordinal.proposed
    assert 0.05 < acc < 0.8


def test_ordinal_runs_are_thread_independent():
    from fmcli.config import threads

    d, _, _ = planted(2, n=40000)     # three chunks of the latent draws and likelihood sums
    out = []
    for n in (1, 2):
        with threads(n):
            lrn = fit(make_learner("mcmc", d, {"test": d}, k=3, seed=5, task="o"), 5)
        out.append((lrn.ordinal.gamma.copy(), lrn.model.V.copy(), lrn.eval_predictions("test").proba))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def write_libfm(path, d):
    with open(path, "w") as f:
        for i in range(d.n_rows):
            a, b = d.indptr[i], d.indptr[i + 1]
            f.write(f"{d.y[i]:g} " + " ".join(f"{j}:{v:g}" for j, v in zip(d.indices[a:b], d.data[a:b])) + "\n")


@pytest.fixture
def files(tmp_path):
    d, _, _ = planted(4, n=1200)
    tr, te = tmp_path / "tr.libfm", tmp_path / "te.libfm"
    write_libfm(tr, d)
    t, _, _ = planted(5, n=300)
    write_libfm(te, t)
    return tr, te


@pytest.mark.parametrize("keep", ["1", "3"])
def test_predict_reproduces_train_outputs_from_the_model_file(run, files, tmp_path, keep):
    tr, te = files
    o = {name: tmp_path / name for name in ("out", "proba", "cls", "m.fm", "out2", "proba2", "cls2")}
    code, _, err = run("train", "-task", "o", "-train", tr, "-test", te, "-iter", "6", "-dim", "1,1,3",
                       "--keep-samples", keep, "-out", o["out"], "--out-proba", o["proba"], "-save_model", o["m.fm"])
    assert code == 0, err
    lines = [l for l in err.splitlines() if l.startswith("#Iter=")]
    assert all(f"\t{k}=" in lines[-1] for k in ("Test", "Test(mae)", "Test(acc)", "Test(logloss)"))
    code, _, err = run("train", "-task", "o", "-train", tr, "-test", te, "-iter", "6", "-dim", "1,1,3",
                       "--keep-samples", keep, "-out", o["cls"], "--out-class")
    assert code == 0, err
    for args, out, proba in (((), o["out2"], o["proba2"]), (("--out-class",), o["cls2"], None)):
        code, _, err = run("predict", "-model", o["m.fm"], "-test", te, "-out", out, *args,
                           *(("--out-proba", proba) if proba else ()))
        assert code == 0, err
    assert o["out"].read_text() == o["out2"].read_text()
    assert o["proba"].read_text() == o["proba2"].read_text()
    P = np.loadtxt(o["proba"])
    assert P.shape == (300, 5)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.loadtxt(o["out"]), P @ np.arange(1, 6), atol=1e-4)
    cls = np.loadtxt(o["cls"])
    assert set(np.unique(cls)) <= {1, 2, 3, 4, 5}
    if keep == "1":      # every sample kept: the most probable class of the same probabilities
        assert o["cls"].read_text() == o["cls2"].read_text()
        np.testing.assert_array_equal(cls, 1 + np.argmax(P, axis=1))


def test_bad_input_and_rules(run, files, tmp_path):
    tr, te = files
    bad = tmp_path / "bad.libfm"
    bad.write_text("1 0:1\n2.5 1:1\n3 0:1\n")
    out = tmp_path / "out"
    code, _, err = run("train", "-task", "o", "-train", bad, "-test", te, "-iter", "1", "-out", out)
    assert code == 2 and "-task o: the train targets must be integer classes; train row 2 has target 2.5" in err
    assert not out.exists()
    one = tmp_path / "one.libfm"
    one.write_text("2 0:1\n2 1:1\n")
    code, _, err = run("train", "-task", "o", "-train", one, "-iter", "1")
    assert code == 2 and "fewer than two distinct classes" in err
    for method in ("als", "sgd"):
        code, _, err = run("train", "-task", "o", "-method", method, "-train", tr, "-iter", "1")
        assert code == 2 and "-task o (ordered classes) needs -method mcmc" in err
    code, _, err = run("train", "-task", "r", "-train", tr, "-test", te, "-iter", "1", "--out-class")
    assert code == 2 and "--out-class applies to -task o only" in err


def test_metric_sums_match_a_numpy_reference():
    # the fused kernel (rows' probabilities from one sample, or given) against plain numpy
    rng = np.random.default_rng(3)
    classes = np.array([1.0, 2.0, 4.0, 5.0])
    gamma = np.array([-0.7, 0.1, 1.2])
    raw = rng.normal(0.2, 1.3, 40000)      # three chunks
    raw[::7] *= 6.0                        # P(y) down to the 1e-15 clip: the product of P flushed often
    y = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], len(raw))      # 3 is no class: P = 0
    P = ordinal.probabilities(raw, gamma)
    e = P @ classes
    hit = classes[None, :] == y[:, None]
    p = np.where(hit.any(axis=1), (P * hit).sum(axis=1), 0.0)
    want = {"rmse": np.sqrt(np.mean((y - e) ** 2)), "mae": np.mean(np.abs(y - e)),
            "accuracy": np.mean(classes[np.argmax(P, axis=1)] == y),
            "logloss": np.mean(-np.log(np.clip(p, 1e-15, 1.0)))}
    for pred in (ordinal.OrdinalPrediction(P, classes), ordinal.OrdinalSample(raw, gamma, classes),
                 ordinal.OrdinalSample(raw, gamma, classes, ordinal.class_indices(y, classes))):
        got = ordinal.ordinal_scores(pred, y)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-12), name
    bad = raw.copy()
    bad[5] = np.nan
    assert np.isnan(ordinal.ordinal_scores(ordinal.OrdinalSample(bad, gamma, classes), y)["logloss"])
    # as an array (np.asarray, np.isfinite): the expected values, all rows at once
    pred = ordinal.OrdinalPrediction(P, classes)
    np.testing.assert_array_equal(np.asarray(pred), e)
    assert np.isfinite(pred).all() and np.asarray(pred, np.float32).dtype == np.float32


def test_warm_start_continues_the_model_and_its_cutpoints(run, files, tmp_path):
    from fmcli.io.modelfile import load_model

    tr, te = files
    a, b, c = (tmp_path / f"{name}.fm" for name in "abc")
    assert run("train", "-task", "o", "-train", tr, "-iter", "30", "-dim", "1,1,3", "-save_model", a)[0] == 0
    # -iter 0: the loaded state itself is saved again, cutpoints included
    code, _, err = run("train", "-task", "o", "-train", tr, "-load_model", a, "-iter", "0", "-save_model", b)
    assert code == 0, err
    A, B = load_model(a), load_model(b)
    assert B.meta["ordinal"]["cutpoints"] == A.meta["ordinal"]["cutpoints"]
    assert B.meta["ordinal"]["classes"] == A.meta["ordinal"]["classes"] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(B.V, A.V)
    np.testing.assert_array_equal(B.w, A.w)
    # two more sweeps: the iterations count on from 30, the cutpoints move on from the loaded
    # ones (a fresh start is halfway between the classes, far from them)
    code, _, err = run("train", "-task", "o", "-train", tr, "-test", te, "-load_model", a, "-iter", "2",
                       "-save_model", c)
    assert code == 0, err
    assert [l.split("\t")[0] for l in err.splitlines() if l.startswith("#Iter=")] == ["#Iter= 30", "#Iter= 31"]
    loaded, fresh = np.array(A.meta["ordinal"]["cutpoints"]), np.array([1.5, 2.5, 3.5, 4.5])
    now = np.array(load_model(c).meta["ordinal"]["cutpoints"])
    assert np.abs(now - loaded).max() < 0.1 < np.abs(loaded - fresh).max()


def test_warm_start_errors(run, files, tmp_path):
    tr, te = files
    o, r, libfm = tmp_path / "o.fm", tmp_path / "r.fm", tmp_path / "libfm.txt"
    assert run("train", "-task", "o", "-train", tr, "-iter", "2", "-dim", "1,1,2", "-save_model", o)[0] == 0
    assert run("train", "-task", "r", "-train", tr, "-iter", "2", "-dim", "1,1,2", "-save_model", r)[0] == 0
    libfm.write_text("".join(l for l in r.read_text().splitlines(keepends=True) if not l.startswith("#fmcli")))
    fewer = tmp_path / "fewer.libfm"
    fewer.write_text("".join(l for l in tr.read_text().splitlines(keepends=True) if not l.startswith("1 ")))
    out = tmp_path / "out"
    for train, model, message in ((fewer, o, f"{o}: the model's classes are 1,2,3,4,5, the train rows' 2,3,4,5"),
                                  (tr, r, f"{r}: model was trained for regression, not ordered classes"),
                                  (tr, libfm, f"{libfm}: a libFM-layout model file records no classes or cutpoints")):
        code, _, err = run("train", "-task", "o", "-train", train, "-test", te, "-load_model", model, "-iter", "1",
                           "-out", out)
        assert code == 2 and message in err, err
        assert not out.exists()
    code, _, err = run("predict", "-task", "o", "-model", libfm, "-test", te, "-out", out)
    assert code == 2 and "records no classes or cutpoints" in err and not out.exists(), err


def test_weights_count_rows_as_copies():
    # class-1 rows weighted 3: the cutpoints' posterior means are those of the file with those
    # rows written three times, and far from the unweighted run's
    import dataclasses

    from test_weights import subset

    d, _, _ = planted(1, n=3000)
    c = np.where(d.y == 1, 3, 1)
    gaps = {}
    for name, data in (("weighted", dataclasses.replace(d, weights=c.astype(np.float64))),
                       ("repeated", subset(d, np.repeat(np.arange(d.n_rows), c))), ("plain", d)):
        lrn = make_learner("mcmc", data, {"test": d}, k=2, seed=3, task="o", regular=(0.0, 0.0, 0.0), burn_in=30)
        g = []
        for it in range(100):
            lrn.step(it)
            if it >= 30:
                g.append(np.diff(lrn.ordinal.gamma))
        gaps[name] = np.mean(g, axis=0)
    np.testing.assert_allclose(gaps["weighted"], gaps["repeated"], atol=0.04)
    assert gaps["plain"][0] - gaps["weighted"][0] > 0.15


def test_weights_of_one_give_the_unweighted_run(run, files, tmp_path):
    tr, te = files
    wf = tmp_path / "w.txt"
    wf.write_text("1\n" * 1200)
    outs = []
    for extra in ((), ("-weights", wf)):
        out = tmp_path / f"out{len(extra)}"
        code, _, err = run("train", "-task", "o", "-train", tr, "-test", te, "-iter", "5", "-dim", "1,1,2",
                           "-out", out, *extra)
        assert code == 0, err
        outs.append(np.loadtxt(out))
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-4)


def test_higher_orders_saved_samples_predict_the_running_average():
    # -dim 1,1,3,2 (order 3 too): the saved model's probabilities, each sample with its own
    # higher-order factors, are the average the learner kept while sampling
    from fmcli.learners.base import TrainOptions
    from fmcli.train import build_learner

    rng = np.random.default_rng(2)
    p, w = 30, rng.normal(0, 0.7, 30)

    def rows(n):
        idx = np.stack([rng.choice(p, 4, replace=False) for _ in range(n)]).astype(np.int32)
        z = w[idx].sum(axis=1) + rng.standard_normal(n)
        y = (1 + np.searchsorted(GAMMA, z)).astype(np.float32)
        return SparseData(np.arange(0, 4 * n + 1, 4, dtype=np.int64), idx.reshape(-1), np.ones(4 * n, np.float32),
                          y, p)

    train, test = rows(1500), rows(200)
    opts = TrainOptions(task="o", method="mcmc", dim=(1, 1, 3, 2), seed=1, init_stdev=0.1, regular=(0.0, 1.0, 1.0),
                        save_samples=True)
    lrn = fit(build_learner(opts, train, {"test": test}), 6)
    final = lrn.final_model()
    assert final.samples_H.shape[0] == 6 and np.abs(final.samples_H[0] - final.samples_H[-1]).max() > 1e-2
    got = ordinal.model_prediction(final, *test.csr()).proba
    np.testing.assert_allclose(got, lrn.eval_predictions("test").proba, rtol=0, atol=1e-5)

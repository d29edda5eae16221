"""Orders 3 and up (fmcli.anova): prediction by the DP against brute-force subset
enumeration, -dim rules, model files."""

import numpy as np
import pytest
from conftest import random_csr
from naive import anova_rows, higher_order_predict_rows

from fmcli.model import FMModel


def rows_from_csr(indptr, indices, data):
    return [list(zip(indices[indptr[i]:indptr[i + 1]].tolist(), data[indptr[i]:indptr[i + 1]].astype(np.float64)))
            for i in range(len(indptr) - 1)]


def higher_model(rng, n, dim, scale=0.5):
    orders = tuple((t, k) for t, k in enumerate(dim[3:], start=3))
    K = sum(dim[3:])
    return FMModel(float(rng.normal()), rng.normal(0, 1, n), rng.normal(0, scale, (n, dim[2])),
                   bool(dim[0]), bool(dim[1]), H=rng.normal(0, scale, (n, K)), orders=orders)


def split_orders(model):
    Ps, off = [], 0
    for _, k in model.orders:
        Ps.append(model.H[:, off:off + k])
        off += k
    return Ps


@pytest.mark.parametrize("dim", [(1, 1, 3, 2), (1, 1, 2, 3, 2), (1, 0, 4, 1, 1, 2)])
@pytest.mark.parametrize("repeats", [False, True])
def test_predict_matches_subset_enumeration(rng, dim, repeats):
    n = 15
    indptr, indices, data = random_csr(rng, 120, n, max_nnz=7, repeats=repeats)
    model = higher_model(rng, n, dim)
    got = model.predict_raw(indptr, indices, data)
    rows = rows_from_csr(indptr, indices, data)
    want = higher_order_predict_rows(rows, model.w0 if model.use_w0 else 0.0, model.w if model.use_w else 0 * model.w,
                                     model.V, split_orders(model))
    assert np.allclose(got, want, atol=1e-9)
    # the higher-order part is really there: without H the prediction differs
    plain = FMModel(model.w0, model.w, model.V, model.use_w0, model.use_w).predict_raw(indptr, indices, data)
    assert np.abs(plain - got).max() > 1e-3


def test_unknown_features_count_nothing(rng):
    n = 10
    indptr, indices, data = random_csr(rng, 60, n + 4, max_nnz=6)
    model = higher_model(rng, n, (1, 1, 2, 3))
    rows = [[(j, x) for j, x in r if j < n] for r in rows_from_csr(indptr, indices, data)]
    want = higher_order_predict_rows(rows, model.w0, model.w, model.V, split_orders(model))
    assert np.allclose(model.predict_raw(indptr, indices, data), want, atol=1e-9)


def test_anova_reference_small_case():
    # one row, three features with value 1 and one factor: A^3 = p0 p1 p2, A^2 = p0p1 + p0p2 + p1p2
    P = np.array([[2.0], [3.0], [5.0]])
    row = [[(0, 1.0), (1, 1.0), (2, 1.0)]]
    assert anova_rows(row, P, 3)[0] == 30.0
    assert anova_rows(row, P, 2)[0] == 6 + 10 + 15


# ---- -dim rules ----------------------------------------------------------------------------------

def test_dim_parsing_and_rules(tmp_path):
    from fmcli.errors import UsageError
    from fmcli.learners.base import TrainOptions
    from fmcli.options import parse_dim
    from fmcli.plan import TrainJob, resolve

    assert parse_dim("1,1,8,4") == (1, 1, 8, 4) and parse_dim("1,1,8") == (1, 1, 8)

    def plan(dim, **kw):
        opts = dict(method=kw.pop("method", "sgd"), dim=dim, **kw.pop("opts", {}))
        return resolve(TrainJob(opts=TrainOptions(**opts), train="unused.libfm", **kw))

    assert plan((1, 1, 8, 4, 2)).opts.dim == (1, 1, 8, 4, 2)
    for dim, message in [((1, 1, 8, 0, 4), "order 3 has no factors"), ((1, 1, 0, 4), "order 2 has no factors"),
                         ((1, 1, 8, 4, 0), "order 4 has no factors"),
                         ((1, 1, 2, 2, 2, 2, 2, 2), "beyond the largest supported order 6")]:
        with pytest.raises(UsageError, match=message):
            plan(dim)
    with pytest.raises(UsageError, match="-relation supports interaction orders up to 2"):
        plan((1, 1, 8, 4), method="mcmc", relations=("rel",))
    with pytest.raises(UsageError, match="--optimizer adam supports interaction orders up to 2"):
        plan((1, 1, 8, 4), opts=dict(optimizer="adam"))


def test_loading_a_model_of_another_order_is_an_error(tmp_path, rng):
    from fmcli.errors import UsageError
    from fmcli.io.modelfile import save_model
    from fmcli.learners.base import TrainOptions
    from fmcli.plan import TrainJob, resolve

    save_model(tmp_path / "m3.fm", higher_model(rng, 5, (1, 1, 4, 2)))
    save_model(tmp_path / "m2.fm", FMModel.init(5, 4))
    for path, dim, theirs in [("m3.fm", (1, 1, 4), "1,1,4,2"), ("m2.fm", (1, 1, 4, 2), "1,1,4"),
                              ("m3.fm", (1, 1, 4, 2, 1), "1,1,4,2")]:
        with pytest.raises(UsageError, match=f"does not match the loaded model's {theirs} "):
            resolve(TrainJob(opts=TrainOptions(method="sgd", dim=dim), train="unused.libfm",
                             load_model=str(tmp_path / path)))
    plan = resolve(TrainJob(opts=TrainOptions(method="sgd"), train="unused.libfm", dim_given=False,
                            load_model=str(tmp_path / "m3.fm")))
    assert plan.opts.dim == (1, 1, 4, 2)


# ---- model files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".fm", ".npz"])
def test_model_file_round_trip(tmp_path, rng, suffix):
    from fmcli.io.modelfile import load_model, save_model

    model = higher_model(rng, 7, (1, 1, 3, 2, 4))
    model.meta = {"method": "sgd", "options": {"dim": [1, 1, 3, 2, 4]}}
    save_model(tmp_path / f"m{suffix}", model)
    back = load_model(tmp_path / f"m{suffix}")
    assert back.orders == ((3, 2), (4, 4)) and np.array_equal(back.H, model.H)
    assert np.array_equal(back.V, model.V) and np.array_equal(back.w, model.w) and back.w0 == model.w0


def test_model_file_keeps_libfm_sections(tmp_path, rng):
    from fmcli.io.modelfile import save_model

    model = higher_model(rng, 4, (1, 1, 2, 3))
    save_model(tmp_path / "m.fm", model)
    lines = (tmp_path / "m.fm").read_text().splitlines()
    headers = [line for line in lines if line.startswith("#") and not line.startswith("#fmcli")]
    assert headers == ["#global bias W0", "#unary interactions Wj", "#pairwise interactions Vj,f"]
    assert len(lines) == 2 + 5 + 5 + 3     # the three libFM sections, '#fmcli-order 3', meta, sha
    assert lines[12].startswith("#fmcli-order 3 ") and '"orders": [[3, 3]]' in lines[13]


def test_damaged_order_lines_are_refused(tmp_path, rng):
    import hashlib

    from fmcli.errors import InputError
    from fmcli.io.modelfile import load_model, save_model

    model = higher_model(rng, 4, (1, 1, 2, 3))
    save_model(tmp_path / "m.fm", model)
    lines = (tmp_path / "m.fm").read_text().splitlines(keepends=True)
    lines[12] = lines[12][:-10] + "\n"       # a cut base64 payload, checksum recomputed
    body = "".join(lines[:-1])
    (tmp_path / "bad.fm").write_text(body + "#fmcli-sha256 " + hashlib.sha256(body.encode()).hexdigest() + "\n")
    with pytest.raises(InputError, match="order 3"):
        load_model(tmp_path / "bad.fm")


# ---- gradients and SGD ---------------------------------------------------------------------------

def numeric_gradient(f, theta, eps=1e-6):
    g = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        old = theta[idx]
        theta[idx] = old + eps
        hi = f()
        theta[idx] = old - eps
        lo = f()
        theta[idx] = old
        g[idx] = (hi - lo) / (2 * eps)
    return g


@pytest.mark.parametrize("dim", [(1, 1, 2, 3), (1, 1, 2, 2, 2)])
@pytest.mark.parametrize("repeats", [False, True])
def test_row_gradients_match_finite_differences(rng, dim, repeats):
    from fmcli.anova import row_gradients

    n = 8
    indptr, indices, data = random_csr(rng, 6, n, max_nnz=6, repeats=repeats)
    model = higher_model(rng, n, dim)
    col_order = model.col_order
    for i in range(len(indptr) - 1):
        a, b = indptr[i], indptr[i + 1]
        got = np.zeros((b - a, model.H.shape[1]))
        row_gradients(indices, data, a, b, model.H, col_order, got)
        row = rows_from_csr(indptr[i:i + 2] - a, indices[a:b], data[a:b])

        def higher():
            return sum(anova_rows(row, P, t)[0] for t, P in enumerate(split_orders(model), start=3))
        want = numeric_gradient(higher, model.H)
        # per feature: the entries' gradients add up (a repeated feature shares its parameters)
        per_feature = np.zeros_like(want)
        for p in range(b - a):
            per_feature[indices[a + p]] += got[p]
        assert np.allclose(per_feature, want, atol=1e-6)


@pytest.mark.parametrize("task", ["r", "c"])
def test_sgd_epoch_is_one_gradient_step_per_row(rng, task):
    """Each row's update is θ -= η (g ∂ŷ/∂θ + λ θ) with ∂ŷ/∂θ by finite differences of the
    subset-enumeration prediction, for w0, w, V and every higher-order factor."""
    from fmcli.learners.anova_sgd import fm_epoch_higher

    n = 6
    indptr = np.array([0, 5, 9, 12])
    indices = np.array([0, 1, 2, 3, 4, 1, 2, 3, 5, 0, 4, 5], np.int32)
    data = rng.normal(0, 1, 12).astype(np.float32)
    y = np.array([1.0, -1.0, 1.0]) if task == "c" else rng.normal(0, 1, 3)
    model = higher_model(rng, n, (1, 1, 2, 2, 1))
    rates, reg = np.array([0.05, 0.04, 0.03]), np.array([0.1, 0.2, 0.3])
    w0, w, V, H = np.array([model.w0]), model.w.copy(), model.V.copy(), model.H.copy()
    ref = [w0.copy(), w.copy(), V.copy(), H.copy()]
    order = np.array([2, 0, 1])
    fm_epoch_higher(indptr, indices, data, y, order, w0, w, V, True, True, task == "c", rates, reg, H,
                    model.col_order, np.empty(0))
    rows = rows_from_csr(indptr, indices, data)
    for i in order:
        rw0, rw, rV, rH = ref

        def pred():
            Ps = [rH[:, :2], rH[:, 2:]]
            return higher_order_predict_rows([rows[i]], rw0[0], rw, rV, Ps)[0]
        p = pred()
        g = -y[i] * (1 - 1 / (1 + np.exp(-y[i] * p))) if task == "c" else p - y[i]
        grads = [numeric_gradient(pred, a) for a in ref]
        active = np.zeros(n, bool)
        active[[j for j, _ in rows[i]]] = True
        for a, grad, eta, lam in zip(ref, grads, rates[[0, 1, 2, 2]], reg[[0, 1, 2, 2]]):
            step = eta * (g * grad + lam * a)
            if a.ndim and a.shape[0] == n:   # the lazy L2 term: on the row's features only
                step[~active] = 0.0
            a -= step
    for got, want in zip([w0, w, V, H], ref):
        assert np.allclose(got, want, atol=1e-6)


# ---- ALS / MCMC coordinate updates ---------------------------------------------------------------

SWEEP_CASES = [(dim, sample, lanes, False) for dim in [(1, 1, 2, 2), (1, 1, 2, 1, 2), (1, 1, 1, 2, 2, 2)]
               for sample in (False, True) for lanes in (1, 2)] \
    + [((1, 1, 2, 1, 2), sample, 2, True) for sample in (False, True)]     # -weights: orders 3 and 4


@pytest.mark.parametrize("dim, sample, lanes, weighted", SWEEP_CASES)
def test_sweep_is_the_exact_coordinate_update(rng, dim, sample, lanes, weighted):
    """Every p_{j,c} update, in turn (feature by feature, each feature's factors in order),
    against the brute-force 1-D problem: ALS the minimiser of α/2 Σ u (ŷ − y)² + λ/2 (θ − μ)²
    (u the rows' -weights, or 1), MCMC the Gaussian conditional (vertex m, curvature P of that
    parabola) drawn with the feature stream's normal, m + z/√P. Two lanes: two features of one
    class that share no row."""
    from naive import brute_force_minimiser

    from fmcli.data import transpose
    from fmcli.anova import add_higher_orders
    from fmcli.learners.anova_sweep import cache_offsets, row_caches, sweep_higher
    from fmcli.learners.streams import stream_normals

    n = 7
    indptr, indices, data = random_csr(rng, 40, n, max_nnz=6)
    if lanes == 2:   # features 5 and 6 never share a row: one class, two lanes
        keep = ~np.isin(np.repeat(np.arange(40), np.diff(indptr)), np.flatnonzero(
            [5 in indices[indptr[i]:indptr[i + 1]] for i in range(40)])) | (indices != 6)
        indices, data = indices[keep], data[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(np.repeat(np.arange(40), np.diff(indptr))[keep],
                                                            minlength=40))])
    model = higher_model(rng, n, dim)
    K = model.H.shape[1]
    y = rng.normal(0, 1, 40)
    rows = rows_from_csr(indptr, indices, data)
    alpha = 1.7
    lam, mu = rng.uniform(0.2, 1.0, (2, K)), rng.normal(0, 0.3, (2, K))
    groups = np.array([0, 1, 0, 1, 0, 1, 1], np.int64)
    u = rng.uniform(0, 3, 40) * (rng.random(40) > 0.2) if weighted else np.ones(40)

    def predict():
        return higher_order_predict_rows(rows, model.w0, model.w, model.V, split_orders(model))

    cache = np.zeros((40, 1), np.float32)
    cache[:, 0] = predict() - y
    col_order = model.col_order
    col_off, width = cache_offsets(col_order)
    A = np.empty((40, width), np.float32)     # as the learner keeps it (CACHE_DTYPE, as e)
    row_caches(indptr, indices, data, model.H, col_order, col_off, A, np.empty(0))
    cptr, crow, cval = transpose(indptr, indices, data, n)
    order = np.array([3, 0, 1, 2, 4, 5, 6], np.int64)
    # one class in one lane, or two classes of two lanes: {3, 0, 1, 2, 4} | {} then {5} | {6}
    lane_ptr = np.array([0, 7]) if lanes == 1 else np.array([0, 5, 5, 6, 7])
    H0 = model.H.copy()
    seed = 12345
    longest = int(np.diff(cptr).max())
    row_len = np.diff(indptr).astype(np.int32)   # no zero values: a row's count of non-zeros
    sweep_higher(cptr, crow, cval, order, lane_ptr, lanes, groups, cache, model.H, col_order, col_off, A,
                 lam, mu, alpha, sample, seed, np.empty((lanes, 1 + width, longest)), np.zeros((8, 8), np.int64),
                 u if weighted else np.empty(0), np.empty((lanes, longest if weighted else 0)), row_len,
                 np.empty((lanes, longest), np.int32))
    got = model.H.copy()
    model.H[:] = H0
    for j in order:
        z = np.zeros(K + 1)
        stream_normals(seed, j, z)
        g = groups[j]
        for c in range(K):
            def loss(theta):
                model.H[j, c] = theta
                r = predict() - y
                return 0.5 * alpha * (u * r) @ r + 0.5 * lam[g, c] * (theta - mu[g, c]) ** 2
            old = model.H[j, c]
            vertex = brute_force_minimiser(loss, old)
            if sample:
                L = np.array([loss(v) for v in (old - 1, old, old + 1)])
                vertex += z[c] / np.sqrt(L[0] - 2 * L[1] + L[2])   # P: the parabola's curvature
            model.H[j, c] = vertex
    assert np.allclose(got, model.H, atol=1e-5)
    # the caches were kept up to date: e = ŷ − y and the polynomials of the new factors (of
    # factor c on the rows of at least t_c values: the others are left out of it)
    model.H[:] = got
    assert np.allclose(cache[:, 0], predict() - y, atol=1e-4)
    fresh = np.empty_like(A)
    part = np.full(40, 0.25)
    row_caches(indptr, indices, data, model.H, col_order, col_off, fresh, part)
    for c, t in enumerate(col_order):
        used = row_len >= t
        cols = slice(col_off[c], col_off[c] + t - 1)
        assert used.any() and not used.all()
        assert np.allclose(A[used, cols], fresh[used, cols], atol=1e-5)
    # the refresh's pass adds the rows' higher-order part of ŷ, as the prediction does
    want = np.full(40, 0.25)
    add_higher_orders(indptr, indices, data, model.H, col_order, want)
    assert np.array_equal(part, want)
    assert np.allclose(part - 0.25, predict() - FMModel(model.w0, model.w, model.V).predict_raw(indptr, indices, data),
                       atol=1e-9)


def planted_order3(seed, n=3000, n_test=1000, noise=0.1):
    """One-hot user, item, context rows with a planted order-3 FM (orders 2 and 3, k = 2)."""
    from conftest import csr_of
    from fmcli.data import SparseData

    r = np.random.default_rng(seed)
    users, items, ctx = 30, 20, 6
    p = users + items + ctx
    planted = FMModel(0.5, r.normal(0, 0.3, p), r.normal(0, 0.3, (p, 2)), H=r.normal(0, 1.0, (p, 2)),
                      orders=((3, 2),))
    rows = [[(int(r.integers(users)), 1.0), (users + int(r.integers(items)), 1.0),
             (users + items + int(r.integers(ctx)), 1.0)] for _ in range(n + n_test)]
    f = planted.predict_raw(*csr_of(rows))
    y = (f + r.normal(0, noise, len(rows))).astype(np.float32)
    part = lambda sl: SparseData(*csr_of(rows[sl]), y[sl], p)   # noqa: E731
    return part(slice(0, n)), part(slice(n, None)), float(np.std(f))


@pytest.mark.parametrize("method,iters", [("als", 30), ("mcmc", 60), ("sgd", 100)])
def test_order3_recovers_a_planted_order3_model_where_order2_cannot(method, iters):
    """Noise 0.1: order 3 comes within 3x the noise (test RMSE), order 2 stays above 1."""
    from fmcli.learners.base import TrainOptions
    from fmcli.train import build_learner

    train, test, _ = planted_order3(0)
    rmse = {}
    for dim in [(1, 1, 4), (1, 1, 4, 4)]:
        opts = TrainOptions(method=method, dim=dim, regular=(0.0, 1.0, 1.0) if method == "mcmc" else (0.0, 0.01, 0.01),
                            learn_rate=0.01)
        learner = build_learner(opts, train, {"test": test})
        for it in range(iters):
            learner.step(it)
        rmse[len(dim)] = float(np.sqrt(np.mean((learner.eval_predictions("test") - test.y) ** 2)))
    assert rmse[4] < 0.3 and rmse[3] > 1.0, rmse


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_rows_too_short_for_an_order_leave_its_factors_alone(method):
    """Rows of two features have no order-3 interaction: with λ = 0 (ALS -regular 0) the order-3
    factors of items seen only in such rows have no data and no prior, and stay exactly 0
    (their h is exactly 0, not rounding to divide by its square); the run stays finite over
    several train refreshes."""
    from conftest import csr_of
    from fmcli.data import SparseData
    from fmcli.learners.base import TrainOptions
    from fmcli.train import build_learner

    r = np.random.default_rng(4)
    users, items, ctx = 12, 10, 3
    rows = []
    for _ in range(600):
        u, i = int(r.integers(users)), int(r.integers(items))
        row = [(u, 1.0), (users + i, 1.0)]
        if i >= 3:      # items 0-2: only in rows of two features
            row.append((users + items + int(r.integers(ctx)), float(r.uniform(0.5, 1.5))))
        rows.append(row)
    y = r.normal(3, 1, len(rows)).astype(np.float32)
    train = SparseData(*csr_of(rows), y, users + items + ctx)
    learner = build_learner(TrainOptions(method=method, dim=(1, 1, 2, 2), regular=(0.0, 0.0, 0.0), seed=2),
                            train, {"train": train})
    for it in range(20):
        learner.step(it)
    H = learner.model.H
    if method == "als":
        assert np.array_equal(H[users:users + 3], np.zeros((3, 2)))
    assert np.isfinite(H).all() and np.abs(H).max() < 100
    assert np.isfinite(learner.eval_predictions("train")).all()


def test_coordinate_results_do_not_depend_on_threads():
    import numba

    from fmcli.learners.base import TrainOptions
    from fmcli.train import build_learner

    train, test, _ = planted_order3(1, n=1500, n_test=100)
    out = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        with __import__("fmcli.config", fromlist=["threads"]).threads(threads):
            learner = build_learner(TrainOptions(method="mcmc", dim=(1, 1, 3, 2, 2), seed=3), train, {"test": test})
            for it in range(3):
                learner.step(it)
        out.append((learner.model.H.copy(), learner.eval_predictions("test")))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("method", ["sgd", "als", "mcmc"])
def test_cli_trains_saves_and_predicts_order3(run, tmp_path, method):
    from fmcli.io.modelfile import load_model

    train, test, _ = planted_order3(2, n=600, n_test=100)
    for name, d in (("train", train), ("test", test)):
        with open(tmp_path / f"{name}.libfm", "w") as f:
            for i in range(d.n_rows):
                a, b = d.indptr[i], d.indptr[i + 1]
                f.write(f"{d.y[i]:.6g} " + " ".join(f"{j}:{x:g}" for j, x in zip(d.indices[a:b], d.data[a:b])) + "\n")
    code, _, err = run("train", "-task", "r", "-train", str(tmp_path / "train.libfm"), "-test", str(tmp_path / "test.libfm"),
                       "-method", method, "-dim", "1,1,2,2", "-iter", "5", "-out", str(tmp_path / "pred.txt"),
                       "-save_model", str(tmp_path / "m.fm"), "-learn_rate", "0.01", "-regular", "0,0.01,0.01")
    assert code == 0, err
    model = load_model(tmp_path / "m.fm")
    assert model.orders == ((3, 2),) and model.dim == (1, 1, 2, 2)
    code, _, err = run("predict", "-model", str(tmp_path / "m.fm"), "-test", str(tmp_path / "test.libfm"),
                       "-out", str(tmp_path / "again.txt"))
    assert code == 0, err
    again = np.loadtxt(tmp_path / "again.txt")   # MCMC: the file's samples, averaged as -out
    assert np.allclose(again, np.loadtxt(tmp_path / "pred.txt"), atol=1e-5)
    code, _, err = run("train", "-task", "r", "-train", str(tmp_path / "train.libfm"), "-method", method,
                       "-dim", "1,1,2", "-iter", "1", "-load_model", str(tmp_path / "m.fm"))
    assert code == 2 and "does not match the loaded model's 1,1,2,2" in err


# ---- MCMC samples with orders above 2 ----------------------------------------------------------

def write_libfm(path, d):
    with open(path, "w") as f:
        for i in range(d.n_rows):
            a, b = d.indptr[i], d.indptr[i + 1]
            f.write(f"{d.y[i]:.6g} " + " ".join(f"{j}:{x:g}" for j, x in zip(d.indices[a:b], d.data[a:b])) + "\n")


def test_mcmc_keeps_the_higher_order_factors_of_every_sample():
    """Each kept sample holds its own H (float32, as V); the saved model's prediction is the mean
    of the samples' predictions, as the learner's averaged -out."""
    from fmcli.learners.base import TrainOptions
    from fmcli.train import build_learner

    train, test, _ = planted_order3(4, n=500, n_test=150)
    lrn = build_learner(TrainOptions(method="mcmc", dim=(1, 1, 2, 2), seed=5, keep_samples=1, iterations=12,
                                     regular=(0.0, 1.0, 1.0)), train, {"test": test})
    Hs = []
    for it in range(12):
        lrn.step(it)
        Hs.append(lrn.model.H.astype(np.float32))
    fm = lrn.final_model()
    assert fm.samples_H.shape == (12, train.n_features, 2) and fm.samples_H.dtype == np.float32
    assert np.array_equal(fm.samples_H, np.stack(Hs))        # every draw's own H, not the last one
    assert not np.allclose(fm.samples_H[0], fm.samples_H[-1])
    # the mean over samples of each sample's clipped prediction, by hand from the pieces
    per = [np.clip(FMModel(w0, w, V, H=H, orders=fm.orders).predict_raw(*test.csr()), fm.y_min, fm.y_max)
           for w0, w, V, H in zip(*fm.samples, fm.samples_H)]
    want = np.clip(np.mean(per, 0), fm.y_min, fm.y_max)
    np.testing.assert_allclose(fm.predict(*test.csr()), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fm.predict(*test.csr()), lrn.eval_predictions("test"), atol=2e-5)
    last_only = FMModel(fm.w0, fm.w, fm.V, H=fm.H, orders=fm.orders, y_min=fm.y_min, y_max=fm.y_max)
    assert np.abs(last_only.predict(*test.csr()) - lrn.eval_predictions("test")).max() > 1e-3


@pytest.mark.parametrize("suffix", [".fm", ".npz"])
def test_cli_predict_of_a_saved_order3_mcmc_model_is_its_out(run, tmp_path, suffix):
    from fmcli.io.modelfile import load_model

    train, test, _ = planted_order3(3, n=600, n_test=200)
    write_libfm(tmp_path / "train.libfm", train)
    write_libfm(tmp_path / "test.libfm", test)
    model = tmp_path / f"m{suffix}"
    code, _, err = run("train", "-task", "r", "-train", tmp_path / "train.libfm", "-test", tmp_path / "test.libfm",
                       "-method", "mcmc", "-dim", "1,1,4,2", "-iter", "15", "-out", tmp_path / "pred.txt",
                       "-save_model", model, "-regular", "0,1,1", "-seed", "7")
    assert code == 0, err
    m = load_model(model)
    assert len(m.samples[0]) == 15 and m.samples_H.shape == (15, m.n_features, 2)
    assert m.samples_H.dtype == np.float32
    code, _, err = run("predict", "-model", model, "-test", tmp_path / "test.libfm", "-out", tmp_path / "again.txt")
    assert code == 0, err
    assert (tmp_path / "again.txt").read_bytes() == (tmp_path / "pred.txt").read_bytes()


def test_damaged_higher_order_sample_lines_are_refused(tmp_path, rng):
    import hashlib

    from fmcli.errors import InputError
    from fmcli.io.modelfile import load_model, save_model

    model = higher_model(rng, 5, (1, 1, 2, 3))
    model.samples = (rng.normal(size=3), rng.normal(size=(3, 5)).astype(np.float32),
                     rng.normal(size=(3, 5, 2)).astype(np.float32))
    model.samples_H = rng.normal(size=(3, 5, 3)).astype(np.float32)
    save_model(tmp_path / "m.fm", model)
    back = load_model(tmp_path / "m.fm")
    assert np.array_equal(back.samples_H, model.samples_H) and np.array_equal(back.samples[2], model.samples[2])
    assert np.array_equal(back.H, model.H)
    save_model(tmp_path / "m.npz", model)
    assert np.array_equal(load_model(tmp_path / "m.npz").samples_H, model.samples_H)
    lines = (tmp_path / "m.fm").read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("#fmcli-sample "))
    assert lines[first - 1].startswith("#fmcli-order 3 ")

    def resealed(edit):
        body = "".join(edit(list(lines))[:-1])
        (tmp_path / "bad.fm").write_text(body + "#fmcli-sha256 " + hashlib.sha256(body.encode()).hexdigest() + "\n")
        return tmp_path / "bad.fm"

    def cut(ls):          # a sample line without its H: the size of an order-2 sample
        ls[first + 1] = ls[first + 1][:-17] + "\n"
        return ls

    def nan_h(ls):        # sample 2's last H value NaN (float32 bytes 00 00 c0 7f)
        import base64
        head, payload = ls[first + 2].rsplit(" ", 1)
        raw = bytearray(base64.b64decode(payload))
        raw[-4:] = b"\x00\x00\xc0\x7f"
        ls[first + 2] = f"{head} {base64.b64encode(bytes(raw)).decode()}\n"
        return ls

    def dropped(ls):
        del ls[first + 2]
        return ls

    for edit, line, what in ((cut, first + 2, "sample 1 holds"), (nan_h, first + 3, "sample 2: H holds non-finite"),
                             (dropped, first + 3, "expected the line '#fmcli-sample 2")):
        with pytest.raises(InputError, match=what) as e:
            load_model(resealed(edit))
        assert e.value.line == line, str(e.value)
    # a model whose samples lack H is not written (its predictions would be silently wrong)
    model.samples_H = None
    with pytest.raises(ValueError, match="samples_H"):
        save_model(tmp_path / "x.fm", model)

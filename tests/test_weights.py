"""-weights: per-row weights for SGD, SGDA, ALS and MCMC, with relations and higher orders too
(issue 15; BPR's in test_bpr.py). Each row's loss (ALS,
MCMC: its noise precision) is scaled by its weight: checked against the dense weighted least
squares, against leaving rows out (weight 0) and against repeating them (integer weights)."""

import dataclasses

import numpy as np
import pytest
from conftest import dense_problem, fit, make_learner, recsys
from test_coordinate import column_problem, lambdas, stream_normal, sweep_coords, update_column

from fmcli.data import SparseData
from fmcli.learners import coord, sweep
from fmcli.learners.mcmc import draw_alpha
from fmcli.learners.sgd import OPTIMIZERS, _fm_epoch, optimizer_state
from fmcli.learners.sgda import _sgda_epoch

from naive import dense_coordinate_sweep


def subset(d, rows, weights=None):
    """The rows `rows` (in that order, repeats allowed) of d as a new SparseData."""
    parts = [(d.indices[d.indptr[i]:d.indptr[i + 1]], d.data[d.indptr[i]:d.indptr[i + 1]]) for i in rows]
    indptr = np.cumsum([0] + [len(p[0]) for p in parts]).astype(np.int64)
    return SparseData(indptr, np.concatenate([p[0] for p in parts]).astype(np.int32),
                      np.concatenate([p[1] for p in parts]).astype(np.float32), d.y[rows], d.n_features,
                      weights=None if weights is None else np.asarray(weights, np.float64))


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("width", [None, 3])
@pytest.mark.parametrize("task", ["r", "c"])
def test_weighted_sweep_equals_the_dense_weighted_least_squares(method, width, task, monkeypatch):
    if width:
        monkeypatch.setattr(coord, "FACTOR_BLOCK", width)
    X, d = dense_problem(5, n=200, p=20, density=0.25, task=task)
    u = np.random.default_rng(1).choice([0.0, 0.5, 1.0, 3.0], d.n_rows)
    d = dataclasses.replace(d, weights=u)
    lrn = make_learner(method, d, {}, k=8, seed=2, task=task, regular=(0.5, 1.0, 2.0), init_stdev=0.3)
    fit(lrn, 1)
    m = lrn.model
    lw, mw, lv, mv, alpha = lambdas(lrn)
    normal = stream_normal(lrn, 77) if lrn.sample else None
    want = dense_coordinate_sweep(X, lrn.latent_targets(), m.w0, m.w.copy(), m.V.copy(), sweep_coords(lrn),
                                  float(lrn.opts.regular[0]), lw, lv, mw, mv, alpha, normal, weights=u)
    unweighted = dense_coordinate_sweep(X, lrn.latent_targets(), m.w0, m.w.copy(), m.V.copy(),
                                        sweep_coords(lrn), float(lrn.opts.regular[0]), lw, lv, mw, mv,
                                        alpha, normal)
    lrn.sweep(77)
    assert m.w0 == pytest.approx(want[0], abs=1e-5)
    np.testing.assert_allclose(m.w, want[1], atol=2e-5)
    np.testing.assert_allclose(m.V, want[2], atol=2e-5)
    assert np.abs(m.V - unweighted[2]).max() > 1e-2     # the weights do matter


def test_both_layouts_weigh_rows_alike():
    X, d, csc, w0, w, V, cache = column_problem(2)
    k, j = V.shape[1], 4
    z = np.array([0.3, -1.2, 0.8, 2.0])
    u = np.random.default_rng(3).uniform(0, 2, cache.shape[0])
    out = []
    for layout in ("in_place", "gathered"):
        w_, V_, c_ = w.copy(), V.copy(), cache.copy()
        rej = np.zeros(len(sweep.REJ_NAMES), np.int64)
        args = (j, *csc, c_, w_, V_, 0.5, 0.1, np.array([1.0, 2.0, 0.5]), np.zeros(3), 1.7, True, z, rej)
        update_column(layout, args, csc[0][j + 1] - csc[0][j], u)
        out.append((w_, V_))
    np.testing.assert_allclose(out[0][0], out[1][0], atol=1e-12)
    np.testing.assert_allclose(out[0][1], out[1][1], atol=1e-12)
    lw = np.full(len(w), 0.5)
    lv = np.tile([1.0, 2.0, 0.5], (len(w), 1))
    mw = np.full(len(w), 0.1)
    normals = {("w", j): z[0], **{("v", j, f): z[1 + f] for f in range(k)}}
    _, w_ref, V_ref = dense_coordinate_sweep(X, d.y, w0, w, V, [("w", j)] + [("v", j, f) for f in range(k)],
                                             0.0, lw, lv, mw, None, 1.7, normals.get, weights=u)
    np.testing.assert_allclose(out[0][0], w_ref, atol=1e-6)
    np.testing.assert_allclose(out[0][1], V_ref, atol=1e-6)


@pytest.mark.parametrize("task", ["r", "c"])
def test_als_weight_zero_equals_leaving_the_rows_out(task):
    """Rows of weight 0 change nothing: the same model as without them, up to the float32
    caches' rounding (the rows' order inside the learner differs, hence the sums' order). The
    sweep order (colour classes, from the rows) is the weighted run's in both: coordinate
    descent in another order is another path."""
    p = recsys(4, n=600, n_test=100, task=task)
    n = p.train.n_rows
    extra = recsys(5, n=300, n_test=1, task=task).train     # same layout, other rows
    both = subset(SparseData(np.concatenate([p.train.indptr, extra.indptr[1:] + p.train.indptr[-1]]),
                             np.concatenate([p.train.indices, extra.indices]),
                             np.concatenate([p.train.data, extra.data]),
                             np.concatenate([p.train.y, extra.y]), p.train.n_features),
                  np.arange(n + extra.n_rows), [1.0] * n + [0.0] * extra.n_rows)
    a = make_learner("als", both, {"test": p.test}, k=3, task=task, regular=(0, 2, 2))
    b = make_learner("als", p.train, {"test": p.test}, k=3, task=task, regular=(0, 2, 2))
    assert np.array_equal(a.cols, b.cols)
    b.order, b.class_ptr, b.sequential, b._scratch = a.order, a.class_ptr, a.sequential, {}
    fit(a, 6)
    fit(b, 6)
    np.testing.assert_allclose(a.model.V, b.model.V, rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.eval_predictions("test"), b.eval_predictions("test"), rtol=0, atol=1e-5)
    # the same rows with weight 1 give another model
    c = fit(make_learner("als", dataclasses.replace(both, weights=None), {"test": p.test}, k=3, task=task,
                         regular=(0, 2, 2)), 6)
    assert np.abs(c.eval_predictions("test") - b.eval_predictions("test")).max() > 1e-2


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_integer_weights_equal_repeated_rows(method):
    p = recsys(6, n=500, n_test=100)
    c = np.random.default_rng(0).integers(1, 4, p.train.n_rows)
    weighted = dataclasses.replace(p.train, weights=c.astype(float))
    repeated = subset(p.train, np.repeat(np.arange(p.train.n_rows), c))
    a = fit(make_learner(method, weighted, {"test": p.test}, k=3, regular=(0, 2, 2)), 4)
    b = fit(make_learner(method, repeated, {"test": p.test}, k=3, regular=(0, 2, 2)), 4)
    np.testing.assert_allclose(a.eval_predictions("test"), b.eval_predictions("test"), rtol=0, atol=1e-4)
    if method == "mcmc":
        assert a.log_values()["alpha"] == pytest.approx(b.log_values()["alpha"], rel=1e-4)


def test_alpha_draw_counts_weights_as_copies():
    from fmcli.learners.streams import seed_numba

    e = np.array([0.5, -1.0, 2.0], np.float32)
    seed_numba(3)
    a = draw_alpha(e, 1.0, np.zeros(8, np.int64), np.array([2.0, 0.0, 1.0]))
    seed_numba(3)
    b = draw_alpha(np.array([0.5, 0.5, 2.0], np.float32), 1.0, np.zeros(8, np.int64), np.empty(0))
    assert a == b


def sgd_problem():
    rng = np.random.default_rng(8)
    _, d = dense_problem(9, n=30, p=8)
    return d, rng.normal(0, 0.1, 8), rng.normal(0, 0.1, (8, 3))


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam"])
def test_sgd_weight_zero_equals_leaving_the_rows_out(optimizer):
    d, w, V = sgd_problem()
    order = np.random.default_rng(1).permutation(d.n_rows).astype(np.int64)
    u = np.where(np.arange(d.n_rows) % 3 == 0, 0.0, 1.0)
    mode = OPTIMIZERS[optimizer]
    runs = []
    for weights, rows in ((u, order), (np.empty(0), order[u[order] > 0])):
        w0, w_, V_ = np.array([0.2]), w.copy(), V.copy()
        _fm_epoch(*d.csr(), d.y, rows, w0, w_, V_, True, True, False, np.array([0.05] * 3),
                  np.array([0.01, 0.02, 0.03]), mode, *optimizer_state(mode, 8, 3), weights)
        runs.append((w0, w_, V_))
    for x, y in zip(*runs):
        assert np.array_equal(x, y)


def test_sgd_weighted_step_scales_the_row_gradient():
    """Plain SGD: a row of weight u steps by u times its gradient (loss and lazy L2): one row at
    a time, the same as the unweighted step with u times the rates."""
    d, w, V = sgd_problem()
    u = np.random.default_rng(2).uniform(0, 3, d.n_rows)
    rates, reg = np.array([0.05, 0.04, 0.03]), np.array([0.01, 0.02, 0.03])
    a = (np.array([0.2]), w.copy(), V.copy())
    b = (np.array([0.2]), w.copy(), V.copy())
    for i in range(d.n_rows):
        row = np.array([i], np.int64)
        _fm_epoch(*d.csr(), d.y, row, *a, True, True, False, rates, reg, 0, *optimizer_state(0, 8, 3), u)
        _fm_epoch(*d.csr(), d.y, row, *b, True, True, False, rates * u[i], reg, 0, *optimizer_state(0, 8, 3),
                  np.empty(0))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_sgda_weight_zero_equals_leaving_the_rows_out():
    d, w, V = sgd_problem()
    _, val = dense_problem(10, n=10, p=8)
    order = np.random.default_rng(1).permutation(d.n_rows).astype(np.int64)
    u = np.where(np.arange(d.n_rows) % 4 == 1, 0.0, 1.0)
    groups = np.zeros(8, np.int64)
    runs = []
    for weights, rows in ((u, order), (np.empty(0), order[u[order] > 0])):
        st = [np.array([0.2]), w.copy(), V.copy(), np.zeros(1), np.zeros((1, 3)), np.zeros(8), np.zeros((8, 3))]
        for epoch in range(2):
            _sgda_epoch(*d.csr(), d.y, rows, *val.csr(), val.y, epoch > 0, st[0], st[1], st[2], True, True,
                        False, 0.02, groups, st[3], st[4], st[5], st[6], weights)
        runs.append(st)
    for x, y in zip(*runs):
        assert np.array_equal(x, y)


# ---- the CLI -----------------------------------------------------------------------------------

def _train(run, tmp_path, testdata, method, extra):
    out = tmp_path / f"out-{method}-{len(extra)}.txt"
    args = ["train", "-task", "r", "-train", testdata("movies.train.libfm"), "-test",
            testdata("movies.test.libfm"), "-method", method, "-iter", "5", "-out", str(out), "-q",
            "-learn_rate", "0.01", "-regular", "0,0.05,0.05", "--no-cache"] + extra
    if method == "sgda":
        args += ["-validation", testdata("movies.test.libfm")]
    code, _, err = run(*args)
    return code, out, err


def n_train_rows(testdata):
    with open(testdata("movies.train.libfm")) as f:
        return sum(1 for line in f if line.strip())


@pytest.mark.parametrize("method", ["sgd", "sgda", "als", "mcmc"])
def test_weights_of_one_give_the_unweighted_run(run, tmp_path, testdata, method):
    wf = tmp_path / "w.txt"
    wf.write_text("1\n" * n_train_rows(testdata))
    code_a, a, _ = _train(run, tmp_path, testdata, method, ["-weights", str(wf)])
    code_b, b, _ = _train(run, tmp_path, testdata, method, [])
    assert code_a == code_b == 0
    if method in ("sgd", "sgda"):
        assert a.read_bytes() == b.read_bytes()
    else:   # the weighted sums round h² before scaling it (the unweighted ones may fuse it)
        np.testing.assert_allclose(np.loadtxt(a), np.loadtxt(b), rtol=0, atol=1e-4)
    # and weights that differ change the run
    wf.write_text("".join(f"{(i % 3) * 0.5}\n" for i in range(n_train_rows(testdata))))
    code_c, c, _ = _train(run, tmp_path, testdata, method, ["-weights", str(wf), "-seed", "0"])
    assert code_c == 0 and c.read_bytes() != b.read_bytes()


@pytest.mark.parametrize("content, message", [
    ("short", "weights for"), ("long", "more weights than train rows"), ("neg", "is negative"),
    ("nan", "is not finite"), ("inf", "is not finite"), ("word", "is not a number")])
def test_bad_weights_are_named_with_their_line(run, tmp_path, testdata, content, message):
    n = n_train_rows(testdata)
    lines = ["1"] * n
    if content == "short":
        lines = lines[:-1]
    elif content == "long":
        lines.append("1")
    else:
        lines[4] = {"neg": "-0.5", "nan": "nan", "inf": "inf", "word": "heavy"}[content]
    wf = tmp_path / "w.txt"
    wf.write_text("\n".join(lines) + "\n")
    code, out, err = _train(run, tmp_path, testdata, "als", ["-weights", str(wf)])
    assert code == 2 and message in err and not out.exists()
    line = {"short": n - 1, "long": n + 1}.get(content, 5)
    assert f"{wf}:{line}:" in err


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_integer_weights_equal_repeated_rows_with_relations(method):
    """The relation features' statistics weigh each linked row by its weight: integer weights
    are the same as repeating the rows (and their relation links); weights of 1 as none."""
    from conftest import relation_problem

    p = relation_problem(3, n=600, n_test=100)
    c = np.random.default_rng(1).integers(1, 4, p.train.n_rows)
    rows = np.repeat(np.arange(p.train.n_rows), c)
    repeated = dataclasses.replace(subset(p.train, rows),
                                   relations=tuple((rel, links[rows]) for rel, links in p.train.relations))
    runs = {}
    for name, data in (("weighted", dataclasses.replace(p.train, weights=c.astype(float))), ("repeated", repeated),
                       ("ones", dataclasses.replace(p.train, weights=np.ones(p.train.n_rows))), ("plain", p.train)):
        runs[name] = make_learner(method, data, {"test": p.test}, k=3, regular=(0, 2, 2))
    # the relation features are visited in the order of their linked rows' counts: give the
    # repeated rows' run the weighted run's order (coordinate descent in another order is
    # another path)
    a, b = runs["weighted"], runs["repeated"]
    b.relations = [dataclasses.replace(rb, order=ra.order, class_ptr=ra.class_ptr, work=ra.work)
                   for ra, rb in zip(a.relations, b.relations)]
    b._scratch = {}
    for lrn in runs.values():
        fit(lrn, 4)
    pred = {name: lrn.eval_predictions("test") for name, lrn in runs.items()}
    np.testing.assert_allclose(pred["weighted"], pred["repeated"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(pred["ones"], pred["plain"], rtol=0, atol=1e-5)
    assert np.abs(pred["weighted"] - pred["plain"]).max() > 1e-2
    rel = runs["weighted"].model.w[p.train.n_features:]        # the relation features moved
    assert np.abs(rel - runs["repeated"].model.w[p.train.n_features:]).max() < 1e-4 and np.abs(rel).max() > 0


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_integer_weights_equal_repeated_rows_with_higher_orders(method):
    """The higher-order factors' sums weigh each row by its weight: integer weights are the
    same as repeating the rows; weights of 1 the same as none."""
    from fmcli.learners.base import TrainOptions
    from fmcli.train import build_learner

    p = recsys(6, n=500, n_test=100)
    c = np.random.default_rng(0).integers(1, 4, p.train.n_rows)
    runs = {}
    for name, data in (("weighted", dataclasses.replace(p.train, weights=c.astype(float))),
                       ("repeated", subset(p.train, np.repeat(np.arange(p.train.n_rows), c))),
                       ("ones", dataclasses.replace(p.train, weights=np.ones(p.train.n_rows))), ("plain", p.train)):
        opts = TrainOptions(method=method, dim=(1, 1, 3, 2, 2), seed=0, regular=(0.0, 0.1, 0.1), init_stdev=0.3)
        runs[name] = fit(build_learner(opts, data, {"test": p.test}), 4)
    runs["repeated"].order, runs["repeated"].class_ptr = runs["weighted"].order, runs["weighted"].class_ptr
    pred = {k: r.eval_predictions("test") for k, r in runs.items()}
    np.testing.assert_allclose(pred["weighted"], pred["repeated"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(runs["weighted"].model.H, runs["repeated"].model.H, rtol=0, atol=1e-4)
    np.testing.assert_allclose(pred["ones"], pred["plain"], rtol=0, atol=1e-6)
    assert np.abs(pred["weighted"] - pred["plain"]).max() > 1e-2
    assert np.abs(runs["weighted"].model.H).max() > 1e-3       # the higher orders moved


def test_higher_order_sgd_weight_zero_equals_leaving_the_rows_out_and_scales_the_step():
    from fmcli.learners.anova_sgd import fm_epoch_higher

    d, w, V = sgd_problem()
    rng = np.random.default_rng(2)
    H0, col_order = rng.normal(0, 0.1, (8, 3)), np.array([3, 3, 4], np.int64)
    order = rng.permutation(d.n_rows).astype(np.int64)
    rates, reg = np.array([0.05] * 3), np.array([0.01, 0.02, 0.03])

    def epoch(weights, rows, rates=rates, reg=reg):
        w0, w_, V_, H = np.array([0.2]), w.copy(), V.copy(), H0.copy()
        fm_epoch_higher(*d.csr(), d.y, rows, w0, w_, V_, True, True, False, rates, reg, H, col_order, weights)
        return w0, w_, V_, H

    u = np.where(np.arange(d.n_rows) % 3 == 0, 0.0, 1.0)
    for x, y in zip(epoch(u, order), epoch(np.empty(0), order[u[order] > 0])):
        assert np.array_equal(x, y)
    # one row of weight 2.5: the step of the unweighted row at 2.5 times the rates
    one = order[:1]
    for x, y in zip(epoch(np.full(d.n_rows, 2.5), one), epoch(np.empty(0), one, rates=rates * 2.5)):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)
    assert not np.array_equal(epoch(np.full(d.n_rows, 2.5), one)[3], H0)


@pytest.mark.parametrize("method", ["sgd", "als", "mcmc"])
def test_weights_of_one_give_the_unweighted_run_with_higher_orders(run, tmp_path, testdata, method):
    wf = tmp_path / "w.txt"
    wf.write_text("1\n" * n_train_rows(testdata))
    code_a, a, err = _train(run, tmp_path, testdata, method, ["-weights", str(wf), "-dim", "1,1,2,2"])
    assert code_a == 0, err
    code_b, b, err = _train(run, tmp_path, testdata, method, ["-dim", "1,1,2,2"])
    assert code_b == 0, err
    np.testing.assert_allclose(np.loadtxt(a), np.loadtxt(b), rtol=0, atol=1e-5)

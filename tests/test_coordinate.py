"""The ALS/MCMC coordinate kernels against dense references: one coordinate update against a
brute-force 1-D minimiser, whole sweeps (factor blocks, relations, MCMC's draws) against a
dense float64 transcription in the learner's order, exact caches, monotone ALS loss, the
schedule (colouring, row order, lanes) and the MCMC samplers."""

import dataclasses

import numba
import numpy as np
import pytest
from conftest import dense_problem, fit, make_learner, recsys, relation_problem, rows_of

from fmcli.data import flatten, transpose
from fmcli.learners import coord, schedule, sweep
from fmcli.learners.mcmc import draw_hyper, draw_latent
from fmcli.learners.streams import part_seed, seed_numba, stream_normals

from naive import (brute_force_minimiser, dense_coordinate_sweep, factor_sums, fm_predict_dense,
                   fm_predict_rows, regularised_loss)

GROUPS = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2], np.int32)
REG_G = (0.5, 1.0, 0.2, 3.0, 0.7, 2.0, 0.1)     # λ0, λw per group, λv per group
NO_ROW_LEN = np.empty(0, np.int32)      # the column kernels' row lengths, unread when not guarded


def lambdas(lrn):
    """Per-feature λ of w and V (n,), (n, k), and μ, from the learner's reported hyperparameters."""
    hyper = lrn.log_values()
    g = lrn.groups
    lw = np.array([hyper[f"wlambda[{x}]"] for x in range(lrn.G)])[g]
    mw = np.array([hyper[f"wmu[{x}]"] for x in range(lrn.G)])[g]
    lv = np.array([[hyper[f"vlambda[{x},{f}]"] for f in range(lrn.k)] for x in range(lrn.G)])[g]
    mv = np.array([[hyper[f"vmu[{x},{f}]"] for f in range(lrn.k)] for x in range(lrn.G)])[g]
    return lw, mw, lv, mv, hyper["alpha"]


# ---- one column ------------------------------------------------------------------------------

def update_column(layout, args, m, weights=np.empty(0)):
    """One feature's update by the layout's column kernel (both take the sweep's argument list):
    args, then gather scratch for the column's m rows, unused by the in-place kernel."""
    kernel = sweep._column_in_place if layout == "in_place" else sweep._column_gathered
    k = args[6].shape[1]
    kernel(*args, np.empty(m, np.float32), np.empty((k + 1, m), np.float32), -1, weights,
           np.empty(m if weights.size else 0), NO_ROW_LEN, False, NO_ROW_LEN)


def column_problem(seed, k=3):
    """A dense problem with its CSC, a model and the exact caches e, q of that model."""
    X, d = dense_problem(seed)
    rng = np.random.default_rng(seed)
    w0, w, V = 0.3, rng.normal(0, 0.3, X.shape[1]), rng.normal(0, 0.3, (X.shape[1], k))
    cptr, crow, cval = transpose(*d.csr(), X.shape[1])
    cache = np.empty((X.shape[0], k + 1), np.float32)
    cache[:, 0] = fm_predict_dense(X, w0, w, V) - d.y
    cache[:, 1:] = factor_sums(X, V)
    return X, d, (cptr, crow, cval), w0, w, V, cache


@pytest.mark.parametrize("layout", ["in_place", "gathered"])
def test_one_feature_update_is_the_exact_minimiser_of_each_coordinate(layout):
    """w_j, then v_{j,0}, ..., v_{j,k−1} of one feature, each the brute-force minimiser of the
    regularised loss along its coordinate given all the others."""
    X, d, (cptr, crow, cval), w0, w, V, cache = column_problem(1)
    k, j, lam_w, lam_v = V.shape[1], 7, 0.7, np.array([0.4, 1.1, 2.0])
    lw_all, lv_all = np.full(len(w), lam_w), np.tile(lam_v, (len(w), 1))

    def loss(w_, V_):
        r = fm_predict_dense(X, w0, w_, V_) - d.y
        return 0.5 * r @ r + 0.5 * np.sum(lw_all * w_ ** 2) + 0.5 * np.sum(lv_all * V_ ** 2)

    ref_w, ref_V = w.copy(), V.copy()

    def with_w(t):
        x = ref_w.copy()
        x[j] = t
        return x

    ref_w[j] = brute_force_minimiser(lambda t: loss(with_w(t), ref_V), ref_w[j])
    for f in range(k):
        def with_v(t, f=f):
            x = ref_V.copy()
            x[j, f] = t
            return x
        ref_V[j, f] = brute_force_minimiser(lambda t: loss(ref_w, with_v(t)), ref_V[j, f])
    z = np.zeros(k + 1)
    rej = np.zeros(len(sweep.REJ_NAMES), np.int64)
    args = (j, cptr, crow, cval, cache, w, V, lam_w, 0.0, lam_v, np.zeros(k), 1.0, True, z, rej)
    update_column(layout, args, cptr[j + 1] - cptr[j])
    np.testing.assert_allclose(w, ref_w, atol=1e-6)     # float32 caches
    np.testing.assert_allclose(V, ref_V, atol=1e-6)
    assert not rej.any()
    # the caches followed the updates
    np.testing.assert_allclose(cache[:, 0], fm_predict_dense(X, w0, w, V) - d.y, atol=1e-5)
    np.testing.assert_allclose(cache[:, 1:], factor_sums(X, V), atol=1e-5)


def test_both_layouts_give_the_same_update_and_mcmc_draws_m_plus_z_over_root_p():
    X, d, csc, w0, w, V, cache = column_problem(2)
    k, j = V.shape[1], 4
    z = np.array([0.3, -1.2, 0.8, 2.0])
    lam_w, mu_w, lam_v, mu_v, alpha = 0.5, 0.1, np.array([1.0, 2.0, 0.5]), np.array([0.0, -0.1, 0.2]), 1.7
    results = []
    for layout in ("in_place", "gathered"):
        w_, V_, c_ = w.copy(), V.copy(), cache.copy()
        rej = np.zeros(len(sweep.REJ_NAMES), np.int64)
        args = (j, *csc, c_, w_, V_, lam_w, mu_w, lam_v, mu_v, alpha, True, z, rej)
        update_column(layout, args, csc[0][j + 1] - csc[0][j])
        results.append((w_, V_, c_))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-12)
    np.testing.assert_allclose(results[0][2], results[1][2], atol=1e-6)
    # the dense Gibbs draw of the same coordinates with the same normals
    coords = [("w", j)] + [("v", j, f) for f in range(k)]
    normals = {("w", j): z[0], **{("v", j, f): z[1 + f] for f in range(k)}}
    lw, mw = np.full(len(w), lam_w), np.full(len(w), mu_w)
    lv, mv = np.tile(lam_v, (len(w), 1)), np.tile(mu_v, (len(w), 1))
    _, w_ref, V_ref = dense_coordinate_sweep(X, d.y, w0, w, V, coords, 0.0, lw, lv, mw, mv, alpha,
                                             normal=normals.get)
    np.testing.assert_allclose(results[0][0], w_ref, atol=1e-6)
    np.testing.assert_allclose(results[0][1], V_ref, atol=1e-6)


# ---- whole sweeps against the dense transcription ----------------------------------------------

def sweep_coords(lrn):
    """The coordinates of one sweep in the learner's order: w0; each factor block's features in
    colour-class order (w_j with the first block only); then each relation's features,
    coordinate by coordinate."""
    out = [("w0",)] if lrn.use_w0 else []
    for b, (f0, f1) in enumerate(lrn.factor_blocks):
        for j in lrn.order:
            if b == 0 and lrn.use_w:
                out.append(("w", int(j)))
            out += [("v", int(j), f) for f in range(f0, f1)]
    for rs in lrn.relations:
        for c in range(0 if lrn.use_w else 1, lrn.k + 1):
            for j in rs.order:
                J = rs.offset + int(j)
                out.append(("w", J) if c == 0 else ("v", J, c - 1))
    return out


def stream_normal(lrn, seed):
    """The normal each coordinate of a sweep of `seed` draws (MCMC), as the kernels draw them."""
    n, k = lrn.model.n_features, lrn.k
    blocks = lrn.factor_blocks
    relation = np.zeros(n, bool)
    for rs in lrn.relations:
        relation[rs.offset + rs.cols] = True

    def normal(c):
        z = np.zeros(k + 1)
        if c[0] == "w0":
            stream_normals(seed, n, z[:1])
            return z[0]
        j = c[1]
        f = -1 if c[0] == "w" else c[2]
        b = next(b for b, (f0, f1) in enumerate(blocks) if f0 <= max(f, 0) < f1)
        if relation[j]:
            stream_normals(seed, j, z)
            return z[f + 1]
        f0, f1 = blocks[b]
        zb = np.zeros(f1 - f0 + 1)
        stream_normals(part_seed(seed, b), j, zb)
        return zb[0] if f < 0 else zb[1 + f - f0]
    return normal


def check_sweep_against_dense(lrn, X, t, seed):
    m = lrn.model
    lw, mw, lv, mv, alpha = lambdas(lrn)
    w0, w, V = m.w0, m.w.copy(), m.V.copy()
    normal = stream_normal(lrn, seed) if lrn.sample else None
    lam0 = float(lrn.opts.regular[0])
    want = dense_coordinate_sweep(X, t, w0, w, V, sweep_coords(lrn), lam0, lw, lv, mw, mv, alpha, normal)
    lrn.sweep(seed)
    assert m.w0 == pytest.approx(want[0], abs=1e-5)
    np.testing.assert_allclose(m.w, want[1], atol=2e-5)       # float32 caches
    np.testing.assert_allclose(m.V, want[2], atol=2e-5)


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("width", [None, 3])
@pytest.mark.parametrize("task", ["r", "c"])
def test_sweep_equals_the_dense_transcription(method, width, task, monkeypatch):
    """A whole sweep (factor blocks of 3 when width is set: k = 8 gives blocks 3, 3, 2) equals
    the dense float64 coordinate updates in the same order, with the same normals (MCMC)."""
    if width:
        monkeypatch.setattr(coord, "FACTOR_BLOCK", width)
    X, d = dense_problem(3, n=200, p=20, density=0.25, task=task)
    lrn = make_learner(method, d, {}, k=8, seed=2, task=task, regular=(0.5, 1.0, 2.0), init_stdev=0.3)
    assert len(lrn.factor_blocks) == (3 if width else 1)
    fit(lrn, 1)    # hyperparameters drawn (MCMC), latent targets set (classification)
    check_sweep_against_dense(lrn, X, lrn.latent_targets(), seed=77)


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("task", ["r", "c"])
@pytest.mark.parametrize("use_w", [True, False])
def test_sweep_with_relations_equals_the_dense_transcription(method, task, use_w):
    """The relation features swept from per-relation-row statistics equal the dense coordinate
    updates on the rows with the relations written out (libFM's block structure)."""
    p = relation_problem(1, task=task)
    d, test, groups = p.train, p.test, p.groups()
    lrn = make_learner(method, d, {"test": test}, k=4, seed=7, task=task, groups=groups, regular=(0, 2, 2),
                       dim01=(1, int(use_w)))
    assert lrn.G == 3 + 1 + 2 and lrn.factor_blocks == [(0, 4)]
    fit(lrn, 1)
    X = np.zeros((d.n_rows, d.n_model_features))
    for i, row in enumerate(rows_of(flatten(d))):
        for j, x in row:
            X[i, j] += x
    check_sweep_against_dense(lrn, X, lrn.latent_targets(), seed=5)
    assert np.abs(lrn.model.V[d.n_features:]).max() > 0.01     # the relation features were learned


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_relations_predict_what_the_flat_rows_predict(method):
    p = relation_problem(2)
    d, test, groups = p.train, p.test, p.groups()
    lrn = fit(make_learner(method, d, {"test": test}, k=4, groups=groups, regular=(0, 2, 2)), 2)
    m = lrn.final_model()
    m.samples = None
    flat = flatten(test)
    np.testing.assert_allclose(m.predict(*test.csr(), relations=test.relations), m.predict(*flat.csr()), atol=1e-10)
    if method == "als":
        np.testing.assert_allclose(lrn.eval_predictions("test"), m.predict(*flat.csr()), atol=1e-10)


def short_rows_problem(layout):
    """Rows of a user and an item, rows of a user alone, and rows of one feature (`lone`) seen
    only alone; duplicates: also a row of one feature twice (a pair, in the in-place layout);
    relations: a user's items as a relation (empty for some users), so that a user's row alone
    has pairs when its relation row is not empty, the lone rows linked to an empty relation row,
    and rows without features of their own linked to a relation row of one relation feature
    seen nowhere else. (SparseData, dense flat X, the model ids of the features seen only alone)."""
    from conftest import csr_of
    from fmcli.data import Relation, SparseData

    r = np.random.default_rng(5)
    users, items = 10, 8
    lone = users + items
    kinds = 4 if layout == "relations" else 3
    rows, links = [], []
    for _ in range(300):
        kind, u = int(r.integers(kinds)), int(r.integers(users))
        rows.append([[(u, 1.0), (users + int(r.integers(items)), 1.0)], [(u, 1.0)],
                     [(lone, float(r.uniform(0.5, 2.0)))], []][kind])
        links.append(u if kind < 2 else users + kind - 2)
    if layout == "duplicates":
        rows.append([(users, 0.5), (users, 1.5)])
    y = r.normal(3, 1, len(rows)).astype(np.float32)
    relations, alone = (), [lone]
    if layout == "relations":
        hist = [[(int(i), 1.0) for i in r.choice(items, int(r.integers(0, 3)), replace=False)]
                for _ in range(users)] + [[], [(items, 1.5)]]
        relations = ((Relation("hist", *csr_of(hist), items + 1, offset=lone + 1), np.array(links, np.int64)),)
        alone.append(lone + 1 + items)
    d = SparseData(*csr_of(rows), y, lone + 1, relations=relations)
    X = np.zeros((d.n_rows, d.n_model_features))
    for i, row in enumerate(rows_of(flatten(d))):
        for j, x in row:
            X[i, j] += x
    return d, X, alone


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("layout", ["plain", "duplicates", "relations"])
def test_rows_without_a_pair_sweep_as_the_dense_transcription(method, layout):
    """The factor updates skip only the rows of fewer than two non-zero values, counting the
    relation rows' features (those rows' h is 0 in the dense float64 transcription too) and a
    repeated feature twice (the in-place layout's step is not the dense one for a repeated
    feature: there the sweep equals the unguarded one up to rounding, as it could not if the
    row of one feature twice were skipped)."""
    d, X, _ = short_rows_problem(layout)
    lrn = make_learner(method, d, {}, k=3, seed=4, regular=(0.5, 1.0, 2.0), init_stdev=0.3)
    assert lrn.has_duplicates == (layout == "duplicates")
    assert lrn._guard.any()
    fit(lrn, 1)
    if layout != "duplicates":
        check_sweep_against_dense(lrn, X, lrn.latent_targets(), seed=9)
        return
    unguarded = make_learner(method, d, {}, k=3, seed=4, regular=(0.5, 1.0, 2.0), init_stdev=0.3)
    unguarded._guard[:] = False
    fit(unguarded, 1)
    for learner in (lrn, unguarded):
        learner.sweep(9)
    np.testing.assert_allclose(lrn.model.w, unguarded.model.w, atol=1e-6)
    np.testing.assert_allclose(lrn.model.V, unguarded.model.V, atol=1e-6)


@pytest.mark.parametrize("layout", ["plain", "duplicates", "relations"])
def test_rows_without_a_pair_leave_the_factors_alone(layout):
    """ALS with λ = 0 (-regular 0): the factors of a feature seen only in rows of one non-zero
    value (a main feature, or a relation feature linked only by rows without features of their
    own) have no data and no prior and are set to exactly 0 (their h is exactly 0, not the
    rounding of the float32 q, which divided by its square made |v| grow to 7e8); the run
    stays finite over several train refreshes."""
    d, _, alone = short_rows_problem(layout)
    lrn = fit(make_learner("als", d, {"train": d}, k=3, seed=4, regular=(0.0, 0.0, 0.0), init_stdev=0.3), 20)
    assert np.array_equal(lrn.model.V[alone], np.zeros((len(alone), 3)))
    assert np.isfinite(lrn.model.V).all() and np.abs(lrn.model.V).max() < 100
    assert np.isfinite(lrn.eval_predictions("train")).all()


# ---- caches, loss, layouts ---------------------------------------------------------------------

def caches_exact(lrn, rows, t):
    m = lrn.model
    f0, f1 = lrn.cached_factors
    yhat = fm_predict_rows(rows, m.w0, m.w, m.V)
    q = np.array([[sum(m.V[j, f] * x for j, x in r) for f in range(f0, f1)] for r in rows])
    np.testing.assert_allclose(lrn.residuals(), yhat - t, atol=5e-5)
    np.testing.assert_allclose(lrn.factor_sums(), q.reshape(len(rows), f1 - f0), atol=5e-5)


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("layout", ["plain", "duplicates", "factor_blocks", "relations", "long_rows"])
def test_caches_are_exact_after_a_sweep(method, layout, monkeypatch):
    """e and q kept incrementally through a bare sweep equal a recomputation from the rows
    (duplicated entries: the in-place layout; factor blocks: q of the last block; relations:
    through the relation statistics; long rows: the sequential classes, here of the main and
    relation rows longer than 2)."""
    k = 4
    if layout == "long_rows":
        monkeypatch.setattr(schedule, "LONG_ROW", 2)
    if layout in ("relations", "long_rows"):
        p = relation_problem(4, duplicate=True)
        d, test, groups = p.train, p.test, p.groups()
        rows = rows_of(flatten(d))
    else:
        if layout == "factor_blocks":
            monkeypatch.setattr(coord, "FACTOR_BLOCK", 3)
            k = 8
        p = recsys(4, n=600, n_test=50, duplicate=layout == "duplicates")
        d, test, groups = p.train, p.test, p.groups()
        rows = rows_of(d)
    lrn = make_learner(method, d, {"test": test}, k=k, groups=groups, regular=(0.1, 1, 1))
    fit(lrn, 1)
    lrn.sweep(3)
    caches_exact(lrn, rows, lrn.latent_targets())
    if layout == "factor_blocks":
        assert lrn.cached_factors == lrn.factor_blocks[-1] == (6, 8)
    # a step between refreshes: the caches as the sweep left them, still exact
    lrn.step(1)
    assert lrn.n_steps % coord.REFRESH_SWEEPS
    caches_exact(lrn, rows, lrn.latent_targets())
    # the step of the train refresh: exact ŷ, and q of block 0 ready for the next sweep
    while lrn.n_steps % coord.REFRESH_SWEEPS:
        lrn.step(lrn.n_steps)
    assert lrn.cached_factors == lrn.factor_blocks[0]
    m = lrn.model
    np.testing.assert_allclose(lrn.train_raw(), fm_predict_rows(rows, m.w0, m.w, m.V), atol=1e-9)
    caches_exact(lrn, rows, lrn.latent_targets())
    before = lrn.cache.copy()
    lrn._refresh_train()
    np.testing.assert_array_equal(lrn.cache, before)


@pytest.mark.parametrize("method, task", [("als", "r"), ("als", "c"), ("mcmc", "c"), ("mcmc", "o")])
def test_train_refresh_cadence(method, task):
    # the refresh every REFRESH_SWEEPS steps, the sweeps' own caches in between; latent targets
    # drawn around ŷ = e + t, which is the exact ŷ up to float32's rounding of e
    p = recsys(6, n=800, n_test=50)
    y = {"r": p.train.y, "c": np.where(p.train.y > 3, 1.0, -1.0),
         "o": np.clip(np.round(p.train.y), 1, 5)}[task].astype(np.float32)
    lrn = make_learner(method, dataclasses.replace(p.train, y=y), {"test": p.test}, k=4, task=task,
                       regular=(0.1, 1, 1))
    refreshed = []
    for it in range(2 * coord.REFRESH_SWEEPS):
        lrn.step(it)
        if task != "r":     # before the step's latent draw
            np.testing.assert_allclose(lrn.train_raw(), lrn.model.predict_raw(*p.train.csr()), rtol=0, atol=1e-5)
        before = lrn.cache.copy(), None if lrn._yhat is None else lrn._yhat.copy()
        lrn._refresh_train()
        if task != "r":
            sweep.set_residuals(lrn.cache, lrn._yhat, lrn._z)
        refreshed.append(bool((lrn.cache == before[0]).all()))
        lrn.cache[:] = before[0]
        if task != "r":
            lrn._yhat[:] = before[1]
    assert refreshed == [(i + 1) % coord.REFRESH_SWEEPS == 0 for i in range(len(refreshed))]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("width", [None, 2])
def test_als_sweeps_never_increase_the_regularised_loss(seed, width, monkeypatch):
    if width:
        monkeypatch.setattr(coord, "FACTOR_BLOCK", width)
    X, d = dense_problem(10 + seed)
    lrn = make_learner("als", d, {}, k=5, seed=seed, groups=GROUPS, regular=REG_G if seed % 2 else (0, 0.1, 0.1),
                       init_stdev=0.3)

    def loss():
        m = lrn.model
        lw, _, lv, _, _ = lambdas(lrn)
        return regularised_loss(X, d.y, m.w0, m.w, m.V, float(lrn.opts.regular[0]), lw, lv[:, 0])

    before = loss()
    for it in range(5):
        lrn.step(it)
        after = loss()
        assert after <= before + 1e-9 * max(1.0, before)
        before = after


def test_regular_per_group_equals_three_values_when_the_groups_agree():
    X, d = dense_problem(8)
    a = fit(make_learner("als", d, {}, groups=GROUPS, regular=(0.5, 2.0, 3.0)), 3)
    b = fit(make_learner("als", d, {}, groups=GROUPS, regular=(0.5, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0)), 3)
    np.testing.assert_array_equal(a.model.V, b.model.V)
    assert a.log_values() == b.log_values()
    assert a.log_values()["wlambda[1]"] == 2.0 and a.log_values()["vlambda[2,1]"] == 3.0


def test_no_factor_blocks_at_small_k_or_with_relations():
    X, d = dense_problem(3)
    small = make_learner("als", d, {}, k=coord.FACTOR_BLOCK)
    assert small.factor_blocks == [(0, coord.FACTOR_BLOCK)]
    big = make_learner("als", d, {}, k=coord.FACTOR_BLOCK + 4)
    assert big.factor_blocks == [(0, 16), (16, 20)]
    rp = relation_problem(3)
    rd, k = rp.train, coord.FACTOR_BLOCK + 3
    lrn = make_learner("als", rd, {"test": rp.test}, k=k, groups=rp.groups())
    assert lrn.factor_blocks == [(0, k)]
    fit(lrn, 1)
    assert lrn.factor_sums().shape == (rd.n_rows, k)


def test_factor_blocks_draw_from_streams_of_their_own():
    seeds = [part_seed(12345, b) for b in range(4)]
    assert seeds[0] == 12345 and len(set(seeds)) == 4
    assert all(0 <= s < 2**63 for s in seeds)
    assert part_seed(12346, 1) != seeds[1]
    # splitmix64 of seed + b·golden, as a plain Python reference
    mask = (1 << 64) - 1
    z = (12345 + 3 * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    assert seeds[3] == (z ^ (z >> 31)) >> 1


@pytest.mark.parametrize("layout", ["factor_blocks", "relations"])
@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_thread_count_does_not_change_the_model(layout, method, monkeypatch):
    from fmcli.config import threads

    if layout == "factor_blocks":
        monkeypatch.setattr(coord, "FACTOR_BLOCK", 3)
        p = recsys(5, n=1500, n_test=100)
        d, test, groups, k = p.train, p.test, p.groups(), 8
    else:
        p = relation_problem(5)
        d, test, groups, k = p.train, p.test, p.groups(), 4
    runs = []
    for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        with threads(n):
            runs.append(fit(make_learner(method, d, {"test": test}, k=k, groups=groups), 3))
    a, b = (r.final_model() for r in runs)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(runs[0].eval_predictions("test"), runs[1].eval_predictions("test"))


def test_non_finite_draws_are_rejected_and_counted():
    p = recsys(10, n=200, n_test=10)
    lrn = make_learner("mcmc", p.train, {})
    m = lrn.model
    w_before, V_before = m.w.copy(), m.V.copy()
    seed_numba(1)
    lrn.alpha = np.inf                        # P = inf, m = nan: every draw is rejected
    lrn.sweep()
    np.testing.assert_array_equal(m.w, w_before)
    np.testing.assert_array_equal(m.V, V_before)
    r = lrn.rejected_draws()
    n_active = len(np.unique(p.train.indices))
    assert r["w0"] == 1 and r["w"] == n_active and r["v"] == n_active * m.k


# ---- schedule ----------------------------------------------------------------------------------

def test_colour_classes_share_no_row_and_rows_are_grouped_by_the_largest_class():
    p = recsys(6, n=800, n_test=10, duplicate=True)
    indptr, indices, data = p.train.csr()
    n = p.n_features
    cols, colour, sequential = schedule.colouring(indptr, indices, data, n)
    assert sequential == -1
    for i in range(p.train.n_rows):
        c = colour[indices[indptr[i]:indptr[i + 1]]]
        ids = indices[indptr[i]:indptr[i + 1]]
        # distinct features of a row have distinct colours (a duplicated entry is one feature)
        assert len(set(zip(c.tolist(), ids.tolist()))) == len(set(c.tolist()))
    perm = schedule.row_order(indptr, indices, cols, colour, n)
    big = np.bincount(colour[cols]).argmax()
    key = schedule.row_keys(indptr, indices, colour, big, n)
    assert np.all(np.diff(key[perm]) >= 0) and sorted(perm.tolist()) == list(range(p.train.n_rows))


def test_row_keys_matches_numpy():
    rng = np.random.default_rng(0)
    n_rows, n = 200, 30
    lens = rng.integers(0, 5, n_rows)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    indices = np.concatenate([rng.choice(n, l, replace=False) for l in lens]).astype(np.int32)
    colour = rng.integers(0, 4, n).astype(np.int64)
    key = np.full(n_rows, n, np.int64)
    in_big = colour[indices] == 2
    key[np.repeat(np.arange(n_rows), lens)[in_big]] = indices[in_big]
    np.testing.assert_array_equal(schedule.row_keys(indptr, indices, colour, 2, n), key)


def test_lanes_cut_each_class_into_pieces_of_about_equal_work_and_buffers_fit_them():
    rng = np.random.default_rng(1)
    order = rng.permutation(50).astype(np.int64)
    class_ptr = np.array([0, 10, 35, 50], np.int64)
    work = rng.integers(1, 100, 50).astype(float)
    ptr = schedule.lanes(order, class_ptr, work, 3)
    assert len(ptr) == 3 * 3 + 1 and ptr[0] == 0 and ptr[-1] == 50
    for c in range(3):
        a, b = class_ptr[c], class_ptr[c + 1]
        assert ptr[3 * c] == a and ptr[3 * c + 3] == b
        pieces = [work[order[ptr[3 * c + t]:ptr[3 * c + t + 1]]].sum() for t in range(3)]
        assert max(pieces) - min(pieces) <= 2 * work.max()
    length = rng.integers(1, 1000, 50)
    buf, off = schedule.lane_buffers(length, order, ptr, 3, 5)
    caps = np.diff(off) // 5
    for t in range(len(ptr) - 1):
        if ptr[t + 1] > ptr[t]:
            assert caps[t % 3] >= length[order[ptr[t]:ptr[t + 1]]].max()
    assert len(buf) == off[-1] and caps.max() == length.max() and caps.sum() < 3 * length.max()
    assert len(schedule.lane_buffers(None, order, ptr, 3, 5)[0]) == 0


# ---- MCMC samplers -----------------------------------------------------------------------------

@pytest.mark.parametrize("a", [-3.0, -0.5, 0.0, 0.4, 2.5, 9.0])
def test_truncated_normal_sampler_matches_scipy(a):
    from scipy.stats import kstest, truncnorm

    seed_numba(123)
    n = 20000
    yhat = np.full(n, -a)
    z = np.empty(n)
    draw_latent(yhat, np.ones(n), z)
    t = z - yhat                         # N(0, 1) truncated to [a, inf)
    assert t.min() >= a
    assert kstest(t, truncnorm(a, np.inf).cdf).pvalue > 1e-3
    # negative labels: z < 0
    draw_latent(np.full(n, a), -np.ones(n), z)
    assert (z <= 0).all()
    assert kstest(a - z, truncnorm(a, np.inf).cdf).pvalue > 1e-3


def test_hyperparameter_draws_follow_their_gamma_normal_conditionals():
    """λ ~ Gamma((α0 + n + 1)/2, rate (γ0 + β0 (μ_old − μ0)² + Σ(θ − μ_old)²)/2) and μ | λ: the
    mean of many draws for one group matches the conditional's mean."""
    rng = np.random.default_rng(0)
    n, k = 400, 2
    w, V = rng.normal(0.3, 0.5, n), rng.normal(-0.2, 0.8, (n, k))
    cols, groups = np.arange(n, dtype=np.int64), np.zeros(n, np.int64)
    seed_numba(3)
    lams, mus = [], []
    for _ in range(3000):
        mu_w, lam_w, mu_v, lam_v = np.zeros(1), np.ones(1), np.zeros((1, k)), np.ones((1, k))
        draw_hyper(cols, groups, w, V, True, mu_w, lam_w, mu_v, lam_v, np.zeros(8, np.int64))
        lams.append(lam_w[0])
        mus.append(mu_w[0])
    rate = (1.0 + 0.0 + np.sum(w ** 2)) / 2        # μ_old = 0
    assert np.mean(lams) == pytest.approx(((1 + n + 1) / 2) / rate, rel=0.02)
    assert np.mean(mus) == pytest.approx(w.sum() / (n + 1), abs=0.01)


@pytest.mark.parametrize("min_work", [0, None])
def test_relation_lanes_by_class_work_keep_the_bits(min_work, monkeypatch):
    """A relation's colour classes run in `threads` lanes when they hold enough work, else in
    one lane (coord.relation_lanes); the model is the same on 1 and 2 threads either way."""
    from fmcli.config import threads

    if min_work is not None:
        monkeypatch.setattr(coord, "PARALLEL_MIN_CLASS_WORK", min_work)
    p = relation_problem(5)
    n2 = min(2, numba.config.NUMBA_NUM_THREADS)
    runs = []
    for n in (1, n2):
        with threads(n):
            lrn = make_learner("mcmc", p.train, {"test": p.test}, k=4, groups=p.groups())
            lrn.sweep(1)
            expected = n if min_work == 0 else 1     # the problem's classes are small
            assert [coord.relation_lanes(rs, n) for rs in lrn.relations] == [expected] * len(lrn.relations)
            assert [nl for _, nl in lrn._scratch[n].relation_lanes] == [expected] * len(lrn.relations)
            runs.append(fit(lrn, 3))
    a, b = (r.final_model() for r in runs)
    np.testing.assert_array_equal(a.V, b.V)
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(runs[0].eval_predictions("test"), runs[1].eval_predictions("test"))

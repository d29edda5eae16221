"""The learners under hostile input (issue 11, items 6 and 8): data and options that used to
end in `internal error`, divergence that went unnoticed, time quadratic in a row's length."""

import numpy as np
import pytest
from conftest import csr_of, fit, make_learner, recsys

from fmcli.data import SparseData
from fmcli.errors import TrainingError


def write_rows(path, rows, targets):
    with open(path, "w") as f:
        for y, r in zip(targets, rows):
            f.write(f"{y:g} " + " ".join(f"{j}:{x:g}" for j, x in r) + "\n")
    return path


def one_line_error(err):
    """stderr ends in one `fmcli: error:` line, and it is not an internal error (the lines
    before are the progress lines)."""
    errors = [line for line in err.strip().splitlines() if line.startswith("fmcli: error")]
    return errors == err.strip().splitlines()[-1:] and "internal error" not in err


# --- a train set without features (item 6) ------------------------------------------------

@pytest.mark.parametrize("method", ["als", "mcmc", "sgd"])
def test_train_without_features_trains_the_bias(run, tmp_path, method):
    """As libFM: only w0 has data; the test rows' features have none, so they add nothing."""
    train = write_rows(tmp_path / "train.libfm", [[]] * 4, [1, 2, 3, 1.5])
    test = write_rows(tmp_path / "test.libfm", [[(0, 1.0), (3, 2.0)], [(1, 0.5)]], [0, 0])
    out = tmp_path / "pred"
    code, _, err = run("train", "-task", "r", "-method", method, "-train", train, "-test", test,
                       "-iter", "20", "-out", out, "--no-cache")
    assert code == 0, err
    pred = np.loadtxt(out)
    assert pred[0] == pred[1]
    if method == "als":
        assert pred[0] == pytest.approx(1.875)     # the mean target: the exact minimiser of w0
    assert 1.0 <= pred[0] <= 3.0


# --- repeated features in a row (the long row of item 6) -------------------------------------

def repeated_feature_rows(copies):
    """Rows that each hold their own feature `copies` times (value 1), and the targets."""
    rows = [[(j, 1.0)] * copies for j in range(5)]
    return SparseData(*csr_of(rows), np.arange(1, 6, dtype=np.float32), 5)


@pytest.mark.parametrize("copies", [1, 3, 50])
def test_a_rows_copies_of_a_feature_count_once(copies):
    """ŷ is linear in w_j whatever the copies: one ALS sweep puts each w_j at its exact
    minimiser, w_j = y/copies (a term per copy overshot by the factor copies: e -> (1 − c) e)."""
    d = repeated_feature_rows(copies)
    lrn = fit(make_learner("als", d, {}, k=0, dim01=(0, 1), regular=(0, 0, 0)), 1)
    np.testing.assert_allclose(lrn.model.w, d.y / copies, rtol=1e-6)
    np.testing.assert_allclose(lrn.residuals(), 0.0, atol=1e-5)


def long_row_of_repeats(path, n_entries=20000, n_features=30, seed=2):
    """The train set of the report: one row of 20,000 entries over 30 features (each repeated
    ~670 times), then ordinary rows."""
    rng = np.random.default_rng(seed)
    long_row = list(zip(rng.integers(0, n_features, n_entries).tolist(),
                        np.round(rng.uniform(-1, 1, n_entries), 3).tolist()))
    p = recsys(3, n=600, n_test=10, users=10, items=10, ctx=5)
    rows = [long_row] + [list(zip(p.train.indices[a:b].tolist(), p.train.data[a:b].tolist()))
                         for a, b in zip(p.train.indptr[:-1], p.train.indptr[1:])]
    return write_rows(path, rows, [4.0] + p.train.y.tolist())


@pytest.mark.parametrize("method", ["mcmc", "als"])
def test_a_long_row_of_repeats_is_not_an_internal_error(run, tmp_path, method):
    train = long_row_of_repeats(tmp_path / "long.libfm")
    out = tmp_path / "pred"
    code, _, err = run("train", "-task", "r", "-method", method, "-train", train, "-test", train,
                       "-iter", "10", "-out", out, "--no-cache")
    if code == 0:
        assert np.isfinite(np.loadtxt(out)).all()
    else:
        assert code == 1 and one_line_error(err) and "diverged" in err and "repeat" in err, err
        assert not out.exists()


def test_hyperprior_draws_reject_overflowing_sums():
    """Σ (θ − μ)² or Σ e² of a diverging sampler overflow: the draw is rejected (old value kept,
    counted), never a gamma with scale 0 (numba's ValueError) or a division by zero."""
    from fmcli.learners.mcmc import _draw_pair, draw_alpha
    from fmcli.learners.sweep import REJ_ALPHA, REJ_VLAMBDA, REJ_VMU

    rejected = np.zeros(8, np.int64)
    for ss in (np.inf, np.nan, 1e308 * 10):
        assert _draw_pair(30.0, 1.0, ss, 0.5, 0.0, rejected, REJ_VMU, REJ_VLAMBDA) == (0.5, 0.0)
    assert rejected[REJ_VLAMBDA] == 3 and rejected[REJ_VMU] == 3
    assert draw_alpha(np.array([1.0, np.inf], np.float32), 2.5, rejected, np.empty(0)) == 2.5
    assert rejected[REJ_ALPHA] == 1


def test_finite_is_not_folded_by_fastmath():
    """numba's math.isfinite (x − x is ordered) is folded to true under reassoc + nsz; the
    kernels' finite() is not."""
    import math

    from fmcli.config import njit
    from fmcli.learners.sweep import finite

    @njit(cache=False)
    def both(a, b):
        t = 1.0 + a * a + b
        return finite(t), math.isfinite(t)

    assert not both(0.0, np.inf)[0] and not both(1e200, 0.0)[0] and not both(np.nan, 0.0)[0]
    assert both(1.0, 2.0)[0]


# --- absurd parameters (item 6) --------------------------------------------------------------

def test_absurd_init_stdev_is_an_input_error(run, tmp_path, testdata):
    out = tmp_path / "pred"
    for value in ("1e200", "inf"):
        code, stdout, err = run("train", "-task", "r", "-method", "als", "-train", testdata("regression.train.libfm"),
                                "-test", testdata("regression.test.libfm"), "-iter", "0", "-init_stdev", value,
                                "-out", out)
        assert code == 2 and one_line_error(err) and "-init_stdev" in err, err
        assert stdout == "" and not out.exists()


@pytest.mark.parametrize("method", ["sgd", "als", "mcmc"])
@pytest.mark.parametrize("iterations", ["0", "3"])
def test_a_warm_start_from_an_overflowing_model_is_an_input_error(run, tmp_path, testdata, method, iterations):
    train, test = testdata("regression.train.libfm"), testdata("regression.test.libfm")
    good, big = tmp_path / "m.fm", tmp_path / "big.fm"
    assert run("train", "-task", "r", "-method", "als", "-train", train, "-iter", "1", "-dim", "1,1,4",
               "-save_model", good, "--quiet", "--no-cache")[0] == 0
    # fmcli refuses to save such a model; a libFM model file (no checksum) can hold anything
    libfm = good.read_text().split("\n#fmcli")[0].splitlines()
    v = libfm.index("#pairwise interactions Vj,f") + 4
    libfm[v] = " ".join(["1e200"] + libfm[v].split()[1:])
    big.write_text("\n".join(libfm) + "\n")
    out = tmp_path / "pred"
    code, _, err = run("train", "-task", "r", "-method", method, "-train", train, "-test", test,
                       "-load_model", big, "-iter", iterations, "-out", out, "--no-cache")
    assert code == 2 and one_line_error(err) and str(big) in err and "1e+200" in err, err
    assert not out.exists()


# --- divergence: every learner and optimizer (item 6) ----------------------------------------

@pytest.mark.parametrize("method,optimizer", [("sgd", "sgd"), ("sgd", "adagrad"), ("sgd", "adam"),
                                              ("sgda", "sgd")])
@pytest.mark.parametrize("task", ["r", "c"])
def test_every_sgd_step_rule_detects_divergence(method, optimizer, task):
    """AdaGrad and Adam keep every parameter finite at -learn_rate 1e30 (their steps are about η),
    and the links clip the predictions to the target range or to 0 and 1: the error of the raw
    predictions shows the divergence."""
    p = recsys(5, n=500, n_test=50, task=task)
    lrn = make_learner(method, p.train, {"test": p.test, "validation": p.test}, task=task,
                       learn_rate=1e30, optimizer=optimizer)
    with pytest.raises(TrainingError, match=r"diverged in iteration 0: .*smaller -learn_rate"):
        fit(lrn, 3)


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("task", ["r", "c"])
def test_coordinate_learners_detect_divergence(method, task):
    """Initial factors of 1e200 (past fmcli.plan's check) overflow ŷ: a TrainingError, not the
    gamma draw's ValueError; 1e25 keeps ŷ finite in float64 but beyond float32's range in the
    cache, which the check sees as well."""
    p = recsys(5, n=500, n_test=50, task=task)
    for init in (1e200, 1e25):
        lrn = make_learner(method, p.train, task=task, init_stdev=init, regular=(0, 0, 0))
        with pytest.raises(TrainingError, match=r"diverged in iteration 0: .*-regular"):
            fit(lrn, 3)


def test_ordinary_runs_do_not_count_as_diverged():
    p = recsys(6, n=1500, n_test=100)
    for method, opt, rate in (("sgd", "sgd", 0.05), ("sgd", "adagrad", 0.1), ("sgd", "adam", 0.01),
                              ("als", "sgd", 0.01), ("mcmc", "sgd", 0.01)):
        fit(make_learner(method, p.train, learn_rate=rate, optimizer=opt), 10)


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_divergence_on_the_command_line_writes_nothing(run, tmp_path, testdata, optimizer):
    out, model = tmp_path / "pred", tmp_path / "m.fm"
    code, stdout, err = run("train", "-task", "r", "-method", "sgd", "--optimizer", optimizer,
                            "-learn_rate", "1e30", "-train", testdata("regression.train.libfm"),
                            "-test", testdata("regression.test.libfm"), "-iter", "3", "-out", out,
                            "-save_model", model)
    assert code == 1 and one_line_error(err) and "diverged" in err and "-learn_rate" in err, err
    assert stdout == "" and not out.exists() and not model.exists()


# --- long rows: time linear in nnz (item 8) --------------------------------------------------

def one_long_row(length, n_short=300, seed=4):
    """n_short rows of a one-hot user and item (30 + 30 features), then one row of `length`
    distinct features (the first ones of the short rows' among them)."""
    rng = np.random.default_rng(seed)
    rows = [[(int(rng.integers(30)), 1.0), (30 + int(rng.integers(30)), 1.0)] for _ in range(n_short)]
    rows.append([(j, float(np.float32(rng.uniform(0.5, 1.5)))) for j in range(40, 40 + length)])
    y = rng.normal(3.0, 1.0, len(rows)).astype(np.float32)
    return SparseData(*csr_of(rows), y, 40 + length)


def test_a_long_row_makes_one_sequential_class():
    """Its features are not coloured (that cost Σ nnz_i², and made one class per entry, each a
    parallel launch every sweep): one class, swept in one lane. The short rows keep their
    colouring, free of shared rows."""
    from fmcli.learners import schedule

    d = one_long_row(5000)
    lrn = make_learner("als", d, {})
    assert len(lrn.class_ptr) - 1 <= 10
    seq = lrn.order[lrn.class_ptr[lrn.sequential]:lrn.class_ptr[lrn.sequential + 1]]
    assert sorted(seq.tolist()) == list(range(40, 5040))
    colour = np.full(d.n_features, -1)
    for c in range(len(lrn.class_ptr) - 1):
        colour[lrn.order[lrn.class_ptr[c]:lrn.class_ptr[c + 1]]] = c
    for i in range(d.n_rows - 1):
        c = colour[d.indices[d.indptr[i]:d.indptr[i + 1]]]
        assert len(set(c.tolist())) == len(c)
    ptr = schedule.lanes(lrn.order, lrn.class_ptr, lrn.work, 3, lrn.sequential)
    s = lrn.sequential
    assert ptr[3 * s] == lrn.class_ptr[s] and ptr[3 * s + 1] == ptr[3 * s + 3] == lrn.class_ptr[s + 1]


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("relations", [False, True])
def test_long_rows_keep_the_model_independent_of_the_threads(method, relations, monkeypatch):
    """The sequential classes (main rows, relation rows) give the same bits on 1 and 2 threads."""
    from conftest import relation_problem

    from fmcli.learners import coord, schedule
    from fmcli.config import threads

    monkeypatch.setattr(coord, "PARALLEL_MIN_CLASS_WORK", 0)    # relation classes in parallel lanes
    if relations:
        monkeypatch.setattr(schedule, "LONG_ROW", 2)
        p = relation_problem(5)
        d, groups = p.train, p.groups()
    else:
        d, groups = one_long_row(3000), None
    runs = []
    for n_threads in (1, 2):
        with threads(n_threads):
            lrn = fit(make_learner(method, d, {}, k=4, groups=groups, seed=3), 3)
            assert lrn.sequential >= 0 and (not relations or lrn.relations[0].sequential >= 0)
            runs.append(lrn.final_model())
    a, b = runs
    assert a.w0 == b.w0
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.V, b.V)


def test_als_with_a_long_row_fits_it():
    """The sequential class is a coordinate sweep like the others: the long row's own features
    fit it."""
    d = one_long_row(3000)
    lrn = make_learner("als", d, {}, k=2, regular=(0, 0.1, 0.1))
    for it in range(5):
        lrn.step(it)
    assert abs(lrn.residuals()[-1]) < 1e-3


# --- the same bits compiled cold or loaded from numba's cache ---------------------------------

def test_relation_mcmc_gives_the_same_model_cold_and_warm(tmp_path):
    """The first run after a cache wipe (kernels compiled in the process) and a second one
    (loaded from numba's cache) write the same model (relation_sweep differed in the last bits
    under fastmath)."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(7)
    users, items, n = 60, 40, 900
    u, i = rng.integers(0, users, n), rng.integers(0, items, n)
    y = np.clip(np.round(3 + rng.normal(0, 1, n)), 1, 5)
    write_rows(tmp_path / "train.libfm", [[(a, 1.0), (users + b, 1.0)] for a, b in zip(u, i)], y)
    np.savetxt(tmp_path / "rated.train", u, fmt="%d")
    with open(tmp_path / "rated.x", "w") as f:
        for a in range(users):
            ids = sorted(set(i[u == a].tolist()))
            f.write("0 " + " ".join(f"{j}:{1 / np.sqrt(max(len(ids), 1)):.9g}" for j in ids) + "\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    models = []
    for run_name in ("cold", "warm"):
        model = tmp_path / f"{run_name}.fm"
        subprocess.run([sys.executable, "-m", "fmcli", "train", "-task", "r", "-method", "mcmc",
                        "-train", "train.libfm", "-relation", "rated", "-iter", "10", "-seed", "3",
                        "-save_model", model.name, "--no-cache", "--quiet"],
                       cwd=tmp_path, env=env, check=True, capture_output=True)
        models.append(model.read_bytes())
    assert models[0] == models[1]

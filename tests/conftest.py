import io
import os
import sys

import numpy as np
import pytest

TESTDATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata")


@pytest.fixture
def run(capsys):
    """Run `fmcli ARGS` in-process (stdin: optional bytes); returns (exit code, stdout, stderr)."""
    from fmcli.cli import main

    def _run(*args, stdin=None):
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            with pytest.raises(SystemExit) as e:
                main([str(a) for a in args])
        finally:
            sys.stdin = saved
        out, err = capsys.readouterr()
        return e.value.code, out, err
    return _run


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def testdata():
    return lambda name: os.path.join(TESTDATA, name)


def random_csr(rng, n_rows, n_features, max_nnz=6, repeats=False):
    """Random CSR rows (int64 indptr, int32 ids, float32 values); some rows empty."""
    counts = rng.integers(0, max_nnz + 1, n_rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if repeats:
        indices = rng.integers(0, n_features, indptr[-1])
    else:
        indices = np.concatenate([rng.choice(n_features, c, replace=False) for c in counts] or [[]])
    data = rng.normal(0, 1, indptr[-1])
    return indptr, indices.astype(np.int32), data.astype(np.float32)


# ---- problems and learners shared by the learner tests ----------------------------------------

def csr_of(rows):
    """CSR arrays of rows given as lists of (feature, value) entries."""
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    indices = np.array([j for r in rows for j, _ in r], np.int32)
    data = np.array([x for r in rows for _, x in r], np.float32)
    return indptr, indices, data


def rows_of(d):
    """The rows of a SparseData as lists of (feature, value) entries (float values)."""
    return [list(zip(d.indices[d.indptr[i]:d.indptr[i + 1]].tolist(),
                     d.data[d.indptr[i]:d.indptr[i + 1]].astype(float).tolist())) for i in range(d.n_rows)]


class Problem:
    """Train and test SparseData of a known layout (users 0..U-1, items U..U+I-1, contexts
    after, one numeric feature last), the planted FMModel they come from (or None), and the
    layout's -meta groups (users 0, items 1, then contexts, then the numeric feature)."""

    def __init__(self, train, test, planted, users, items, ctx):
        self.train, self.test, self.planted = train, test, planted
        self.users, self.items, self.ctx = users, items, ctx
        self.n_features = train.n_features

    def groups(self):
        return np.array([0] * self.users + [1] * self.items + [2] * self.ctx + [2 + (self.ctx > 0)], np.int32)


def recsys(seed, n=2000, n_test=500, users=60, items=40, ctx=5, k=2, noise=0.3, task="r",
           numeric=True, duplicate=False, scale=0.6):
    """Recommender-style rows from a planted FM: a one-hot user, item and context in each row
    and, in half of them, a numeric feature (several colour classes, long and short columns).
    Regression targets: the planted FM + N(0, noise²); classification: a probit label of the
    centred planted FM. duplicate: the first row holds one entry twice (libFM counts both)."""
    from fmcli.data import SparseData
    from fmcli.model import FMModel

    rng = np.random.default_rng(seed)
    p = users + items + ctx + 1
    w = np.concatenate([rng.normal(0, 0.5, users + items), rng.normal(0, 0.2, ctx + 1)])
    V = np.vstack([rng.normal(0, scale, (users + items, k)), rng.normal(0, 0.2, (ctx + 1, k))])
    planted = FMModel(1.0, w, V)
    rows = []
    for _ in range(n + n_test):
        r = [(int(rng.integers(users)), 1.0), (users + int(rng.integers(items)), 1.0),
             (users + items + int(rng.integers(ctx)), 1.0)]
        if numeric and rng.random() < 0.5:
            r.append((p - 1, float(np.float32(rng.random()))))
        rows.append(r)
    if duplicate:
        rows[0].append(rows[0][0])
    f = planted.predict_raw(*csr_of(rows))
    if task == "r":
        y = f + rng.normal(0, noise, len(rows))
    else:
        y = np.where(f - np.median(f) + rng.normal(0, 1, len(rows)) > 0, 1.0, -1.0)

    def part(sl):
        return SparseData(*csr_of(rows[sl]), y[sl].astype(np.float32), p)

    return Problem(part(slice(0, n)), part(slice(n, n + n_test)), planted, users, items, ctx)


def dense_problem(seed, n=40, p=12, density=0.3, task="r", n_features=None):
    """Small dense random rows (every row has feature 0) and random targets, for the kernels
    against dense references: (X float64, SparseData)."""
    from fmcli.data import SparseData
    from naive import dense_to_rows

    rng = np.random.default_rng(seed)
    X = np.where(rng.random((n, p)) < density, rng.normal(1.0, 0.5, (n, p)), 0.0).astype(np.float32)
    X[:, 0] = 1.0
    y = rng.normal(3.0, 1.0, n).astype(np.float32)
    if task == "c":
        y = np.where(y > 3.0, 1.0, -1.0).astype(np.float32)
    return X.astype(np.float64), SparseData(*dense_to_rows(X), y, n_features or p)


def make_learner(method, train, evals=None, *, k=3, seed=0, task="r", groups=None, dim01=(1, 1),
                 init_stdev=0.1, model=None, regular=(0.0, 1.0, 1.0), **options):
    """A learner as `fmcli train` builds one (fmcli.train.build_learner), on in-memory data;
    groups: -meta's groups of the main features; model: a warm start. evals default:
    {"test": train}."""
    from fmcli.learners.base import TrainOptions
    from fmcli.train import build_learner

    evals = {"test": train} if evals is None else evals
    opts = TrainOptions(task=task, method=method, dim=(*dim01, k), seed=seed, init_stdev=init_stdev,
                        regular=tuple(regular), warm_start=model is not None, **options)
    return build_learner(opts, train, evals, groups, model)


def fit(learner, iterations):
    for it in range(iterations):
        learner.step(it)
    return learner


def relation_problem(seed, n=1500, n_test=200, users=40, items=25, task="r", duplicate=False):
    """Main rows (user, item one-hot and a numeric feature in some rows) with two relations
    (libFM's block structure): per user a set of items (normalised, some users with none, some
    relation rows used only by test rows), per item two 'genres' with their own groups. A
    Problem without a planted model."""
    from fmcli.data import Relation, SparseData

    rng = np.random.default_rng(seed)
    n_main = users + items + 1
    hist = []
    for _ in range(users + 4):                  # rows users.. are linked by test rows only
        its = rng.choice(items, int(rng.integers(0, 9)), replace=False)
        hist.append([(int(i), 1.0 / max(len(its), 1)) for i in its])
    if duplicate:
        hist[0] = hist[0] + hist[0][:1]         # a (row, feature) entry twice
    genres = [[(int(rng.integers(4)), 1.0), (4 + int(rng.integers(3)), 0.5)] for _ in range(items)]
    r0 = Relation("hist", *csr_of(hist), items, offset=n_main)
    r1 = Relation("genre", *csr_of(genres), 7, offset=n_main + items, groups=np.array([0, 0, 0, 0, 1, 1, 1]))

    def part(m, n_users):
        u = rng.integers(n_users, size=m)
        it = rng.integers(items, size=m)
        rows = [[(int(a), 1.0), (users + int(b), 1.0)] + ([(n_main - 1, float(rng.random()))] if rng.random() < 0.3 else [])
                for a, b in zip(u, it)]
        y = rng.normal(3, 1, m) + 0.3 * np.array([len(hist[a]) for a in u])
        if task == "c":
            y = np.where(y > 3.5, 1.0, -1.0)
        return SparseData(*csr_of(rows), y.astype(np.float32), n_main,
                          relations=((r0, u.astype(np.int64)), (r1, it.astype(np.int64))))

    return Problem(part(n, users), part(n_test, users + 4), None, users, items, 0)

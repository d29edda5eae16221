"""Relations (libFM's block structure, `-relation`): prediction through the relation rows,
the group layout, libFM's text and binary relation files, end to end. (The relation sweeps
against a dense reference: tests/test_coordinate.py.)"""

import os

import numpy as np
import pytest
from conftest import relation_problem

from fmcli.data import Relation, feature_groups, flatten
from fmcli.errors import InputError, UsageError
from fmcli.learners.base import TrainOptions
from fmcli.model import FMModel

ITEMS = 30


def dataset(seed):
    p = relation_problem(seed, n=2500, n_test=300, users=50, items=ITEMS)
    return p.train, p.test


def test_prediction_through_relation_rows_equals_flat_rows():
    d, test = dataset(5)
    rng = np.random.default_rng(0)
    n = d.n_model_features
    model = FMModel(0.3, rng.normal(0, 1, n), rng.normal(0, 0.5, (n, 3)))
    flat = flatten(test)
    np.testing.assert_allclose(model.predict_raw(*test.csr(), relations=test.relations),
                               model.predict_raw(*flat.csr()), atol=1e-10)
    model.samples = (np.array([0.1, 0.2]), rng.normal(0, 1, (2, n)), rng.normal(0, 0.5, (2, n, 3)))
    np.testing.assert_allclose(model.predict(*test.csr(), relations=test.relations),
                               model.predict(*flat.csr()), atol=1e-10)


def test_relation_groups_numbered_after_the_main_groups():
    r0 = Relation("a", np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 3, offset=4)
    r1 = Relation("b", np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 2, offset=7,
                  groups=np.array([1, 0]))
    assert feature_groups(np.array([0, 1, 1, 0]), 4, [r0, r1], 9).tolist() == [0, 1, 1, 0, 2, 2, 2, 4, 3]
    assert feature_groups(None, 4, [r0, r1], 9).tolist() == [0, 0, 0, 0, 1, 1, 1, 3, 2]


# --- files ------------------------------------------------------------------------------

def write_binary_sparse(path, indptr, indices, data, n_cols):
    with open(path, "wb") as fh:
        fh.write(np.array([2, 4], "<u4").tobytes() + np.array([len(indices)], "<u8").tobytes()
                 + np.array([len(indptr) - 1, n_cols], "<u4").tobytes())
        for r in range(len(indptr) - 1):
            a, b = indptr[r], indptr[r + 1]
            pairs = np.empty(2 * (b - a), "<u4")
            pairs[0::2] = indices[a:b]
            pairs[1::2] = np.asarray(data[a:b], "<f4").view("<u4")
            fh.write(np.array([b - a], "<u4").tobytes() + pairs.tobytes())


def write_binary_vector(path, values):
    with open(path, "wb") as fh:
        fh.write(np.array([1, 4, len(values)], "<u4").tobytes() + np.asarray(values, "<u4").tobytes())


def write_relation(base, rel, links, form):
    """R.x text (form "text"), R.x binary ("x") or R.xt binary ("xt"); R.train / R.test text
    for text, libFM binary vectors otherwise; R.groups if the relation has groups."""
    from fmcli.data import transpose

    if form == "text":
        with open(base + ".x", "w") as fh:
            for r in range(rel.n_rows):
                a, b = rel.indptr[r], rel.indptr[r + 1]
                fh.write(" ".join(["0"] + [f"{j}:{x:.9g}" for j, x in zip(rel.indices[a:b], rel.data[a:b])]) + "\n")
    elif form == "x":
        write_binary_sparse(base + ".x", rel.indptr, rel.indices, rel.data, rel.n_features)
    else:
        cptr, crow, cval = transpose(rel.indptr, rel.indices, rel.data, rel.n_features)
        write_binary_sparse(base + ".xt", cptr, crow, cval, rel.n_rows)
    for part, idx in links.items():
        if form == "text":
            np.savetxt(f"{base}.{part}", idx, fmt="%d")
        else:
            write_binary_vector(f"{base}.{part}", idx)
    if rel.groups is not None:
        np.savetxt(base + ".groups", rel.groups, fmt="%d")


def write_main(path, d):
    with open(path, "w") as fh:
        for i in range(d.n_rows):
            a, b = d.indptr[i], d.indptr[i + 1]
            fh.write(" ".join([f"{d.y[i]:.9g}"] + [f"{j}:{x:.9g}" for j, x in zip(d.indices[a:b], d.data[a:b])]) + "\n")


def dense(r):
    out = np.zeros((r.n_rows, r.n_features), np.float32)
    np.add.at(out, (np.repeat(np.arange(r.n_rows), np.diff(r.indptr)), r.indices), r.data)
    return out


@pytest.mark.parametrize("form", ["text", "x", "xt"])
def test_relation_files_read_back(tmp_path, form):
    from fmcli.io.relation import load_relations

    d, test = dataset(6)
    for t, (rel, links) in enumerate(d.relations):
        write_relation(str(tmp_path / rel.name), rel, {"train": links, "test": test.relations[t][1]}, form)
    got = load_relations([str(tmp_path / "hist"), str(tmp_path / "genre")], d.n_features,
                         {"train": d.n_rows, "test": test.n_rows}, cache=False)
    for part, ref in (("train", d), ("test", test)):
        for (a, la), (b, lb) in zip(got[part], ref.relations):
            assert a.offset == b.offset and a.n_features == b.n_features and a.n_rows == b.n_rows
            np.testing.assert_array_equal(a.indptr, b.indptr)     # R.xt lists each row's ids sorted
            np.testing.assert_array_equal(dense(a), dense(b))
            np.testing.assert_array_equal(la, lb)
    assert got["train"][0][0].groups is None and got["train"][1][0].groups.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_relation_file_errors(tmp_path):
    from fmcli.io.relation import load_relations, read_binary_sparse, read_links

    base = str(tmp_path / "r")
    (tmp_path / "r.x").write_text("0 0:1 2:0.5\n0\n0 1:1\n")
    (tmp_path / "r.train").write_text("0\n2\n1\n")
    rel = load_relations([base], 5, {"train": 3})["train"][0][0]
    assert (rel.n_rows, rel.n_features, rel.offset) == (3, 3, 5)
    with pytest.raises(InputError, match="3 relation row indices for 2 train rows"):
        load_relations([base], 5, {"train": 2})
    (tmp_path / "r.train").write_text("0\n3\n1\n")
    with pytest.raises(InputError, match="relation row index 3 .* has 3 rows"):
        load_relations([base], 5, {"train": 3})
    (tmp_path / "r.train").write_text("0\n1\nx\n")
    with pytest.raises(InputError, match=r"r.train:3: relation row index 'x'"):
        read_links(base + ".train", 3, 3, "train")
    write_binary_vector(base + ".test", [0, 1])
    with pytest.raises(InputError, match="2 relation row indices for 3 test rows"):
        read_links(base + ".test", 3, 3, "test")
    write_binary_sparse(base + ".xt", np.array([0, 1, 2]), np.array([0, 5]), np.ones(2), 3)
    with pytest.raises(InputError, match="column id 5 >= 3"):
        read_binary_sparse(base + ".xt")
    with open(base + ".xt", "r+b") as fh:
        fh.truncate(30)
    with pytest.raises(InputError, match="truncated"):
        read_binary_sparse(base + ".xt")
    with pytest.raises(InputError, match="neither"):
        load_relations([str(tmp_path / "missing")], 5, {"train": 3})


# --- end to end -----------------------------------------------------------------------------

def _job(tmp_path, method, **kw):
    from fmcli.plan import TrainJob

    opts = TrainOptions(task="r", method=method, dim=(1, 1, 4), iterations=4, regular=(0, 2, 2), seed=3,
                        learn_rate=0.01)
    return TrainJob(opts=opts, train=str(tmp_path / "train.libfm"), test=str(tmp_path / "test.libfm"),
                    relations=(str(tmp_path / "hist"), str(tmp_path / "genre")), cache=False, **kw)


@pytest.fixture
def files(tmp_path):
    d, test = dataset(8)
    write_main(str(tmp_path / "train.libfm"), d)
    write_main(str(tmp_path / "test.libfm"), test)
    for t, (rel, links) in enumerate(d.relations):
        write_relation(str(tmp_path / rel.name), rel, {"train": links, "test": test.relations[t][1]},
                       "text" if t == 0 else "xt")
    return d, test


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_train_save_and_predict_with_relations(tmp_path, files, method):
    from fmcli.console import Console
    from fmcli.io.modelfile import load_model
    from fmcli.predict import run_predict
    from fmcli.train import run_train

    d, test = files
    job = _job(tmp_path, method, out=str(tmp_path / "pred.txt"), save_model=str(tmp_path / "m.fm"))
    model, pred = run_train(job, Console(quiet=True))
    assert model.n_features == d.n_model_features
    saved = load_model(str(tmp_path / "m.fm"))
    assert saved.meta["relations"] == [{"name": str(tmp_path / "hist"), "offset": d.n_features, "n_features": ITEMS},
                                       {"name": str(tmp_path / "genre"), "offset": d.n_features + ITEMS, "n_features": 7}]
    run_predict(str(tmp_path / "m.fm"), str(tmp_path / "test.libfm"), str(tmp_path / "pred2.txt"),
                console=Console(quiet=True), relations=job.relations, chunk_bytes=2000)
    a = np.loadtxt(tmp_path / "pred.txt")
    b = np.loadtxt(tmp_path / "pred2.txt")
    np.testing.assert_allclose(a, b, atol=2e-5)   # -out is the 6-digit text; MCMC: float32 samples
    with pytest.raises(UsageError, match="trained with relations"):
        run_predict(str(tmp_path / "m.fm"), str(tmp_path / "test.libfm"), str(tmp_path / "p3.txt"),
                    console=Console(quiet=True))
    # warm start with the same relations
    job2 = _job(tmp_path, method, load_model=str(tmp_path / "m.fm"))
    run_train(job2, Console(quiet=True))


@pytest.mark.parametrize("method", ["sgd", "sgda"])
def test_sgd_refuses_relations(tmp_path, files, method):
    from fmcli.console import Console
    from fmcli.train import run_train

    with pytest.raises(UsageError, match="relations are not supported with SGD"):
        run_train(_job(tmp_path, method, validation=str(tmp_path / "test.libfm")), Console(quiet=True))


def test_relation_rows_must_match_the_main_rows(tmp_path, files):
    from fmcli.console import Console
    from fmcli.train import run_train

    with open(tmp_path / "hist.test", "a") as fh:
        fh.write("0\n")
    with pytest.raises(InputError, match="301 relation row indices for 300 test rows"):
        run_train(_job(tmp_path, "als"), Console(quiet=True))
    assert os.path.exists(tmp_path / "hist.x")


def test_relation_from_the_command_line(tmp_path, files, run):
    """Both spellings of -relation reach the learner and the predictor."""
    names = f"{tmp_path / 'hist'},{tmp_path / 'genre'}"
    common = ["-task", "r", "-train", tmp_path / "train.libfm", "-test", tmp_path / "test.libfm", "-method", "als",
              "-dim", "1,1,4", "-iter", "3", "-regular", "0,2,2", "--no-cache"]
    code, _, err = run("train", *common, "-relation", names, "-out", tmp_path / "a", "-save_model", tmp_path / "m.fm")
    assert code == 0, err
    code, _, err = run("train", *common, "--relation", names, "-out", tmp_path / "b")
    assert code == 0, err
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text()
    code, _, err = run("predict", "-model", tmp_path / "m.fm", "-test", tmp_path / "test.libfm", "-relation", names,
                    "-out", tmp_path / "c")
    assert code == 0, err
    np.testing.assert_allclose(np.loadtxt(tmp_path / "a"), np.loadtxt(tmp_path / "c"), atol=2e-5)
    code, _, err = run("predict", "-model", tmp_path / "m.fm", "-test", tmp_path / "test.libfm", "-out", tmp_path / "d")
    assert code == 2 and "give them with -relation" in err and not (tmp_path / "d").exists()

"""-validation, --early-stop and -method sgda from the command line."""

import numpy as np
import pytest



@pytest.fixture
def split(testdata, tmp_path):
    """movies train split into 80% train and 20% validation rows (seeded)."""
    lines = open(testdata("movies.train.libfm")).read().splitlines()
    order = np.random.default_rng(0).permutation(len(lines))
    cut = len(lines) // 5
    (tmp_path / "val.libfm").write_text("\n".join(lines[i] for i in sorted(order[:cut])) + "\n")
    (tmp_path / "tr.libfm").write_text("\n".join(lines[i] for i in sorted(order[cut:])) + "\n")
    return tmp_path / "tr.libfm", tmp_path / "val.libfm", testdata("movies.test.libfm")


def validation_scores(err):
    return [float(l.split("Validation=")[1]) for l in err.splitlines() if l.startswith("#Iter=")]


@pytest.mark.parametrize("method, extra", [
    ("sgd", ["-learn_rate", "0.05", "-regular", "0"]),          # overfits: validation RMSE turns up
    ("als", ["-regular", "0"]),
    ("mcmc", []),
])
def test_early_stop_keeps_the_best_model(run, split, tmp_path, method, extra):
    tr, val, test = split
    out, model = tmp_path / "out", tmp_path / "m.fm"
    code, _, err = run("train", "-task", "r", "-train", tr, "-validation", val, "-test", val, "-method", method,
                       "-dim", "1,1,8", "-iter", "300", "--early-stop", "3", *extra, "-out", out,
                       "-save_model", model, "--no-cache")
    assert code == 0, err
    scores = validation_scores(err)
    best = int(np.argmin(scores))
    if method != "mcmc":  # MCMC's averaged predictions may improve for all 300 samples
        assert len(scores) == best + 4 < 300 and "Early stop" in err, (len(scores), best)
    # -out (here on the validation rows) is the best iteration's model, and so is the saved model
    pred = np.loadtxt(out)
    y = np.array([float(l.split()[0]) for l in open(val)])
    assert np.sqrt(np.mean((pred - y) ** 2)) == pytest.approx(scores[best], abs=2e-5)
    assert run("predict", "-model", model, "-test", val, "-out", tmp_path / "p")[0] == 0
    assert (tmp_path / "p").read_text() == out.read_text()


def test_sgda_adapts_regularisation(run, split, tmp_path):
    tr, val, test = split
    rlog = tmp_path / "log.tsv"
    code, _, err = run("train", "-task", "r", "-train", tr, "-validation", val, "-test", test, "-method", "sgda",
                       "-dim", "1,1,4", "-iter", "15", "-learn_rate", "0.01", "-rlog", rlog, "--no-cache")
    assert code == 0, err
    assert "Final\tTrain=" in err and len(validation_scores(err)) == 15
    header, *rows = rlog.read_text().splitlines()
    cols = header.split("\t")
    assert {"rmse_val", "regw[0]", "regv[0,0]"} <= set(cols)
    last = dict(zip(cols, map(float, rows[-1].split("\t"))))
    assert last["regv[0,0]"] > 0 and last["regw[0]"] >= 0   # the lambda-step moved the penalties

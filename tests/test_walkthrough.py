"""The README's walkthrough "features from the raw tables", step for step on the small
MovieLens-style tables of testdata/ (testdata/make_testdata.py: minilens.*): raw ratings, users
and items (latin-1) -> features, relations and mapping -> an MCMC model -> predictions for new
pairs, a new user's among them."""

import json

import numpy as np


def convert_args(td, tmp):
    return ["convert", "-in", td("minilens.base"), "-in", td("minilens.test"),
            "-out", tmp / "train.libfm", "-out", tmp / "test.libfm",
            "--target", "2", "--categorical", "0,1", "--user", "0", "--item", "1",
            "--join", f"{td('minilens.user')}:0=0:sep=|:name=user", "--drop", "user.4", "--standardize", "user.1",
            "--join", f"{td('minilens.item')}:0=1:sep=|:name=item:encoding=latin-1",
            "--drop", "item.1,item.2,item.3,item.4", "--set-columns", "genres=item.5..item.9",
            "--drop", "3", "--relations", tmp / "rel",
            "-meta", tmp / "meta", "--mapping", tmp / "map.json"]


def rmse_of(err):
    return float(err.rsplit("Test=", 1)[1].split()[0])


def test_walkthrough_raw_tables_to_an_mcmc_model(run, testdata, tmp_path):
    code, _, err = run(*convert_args(testdata, tmp_path))
    assert code == 0, err
    assert "genres: set of 5 indicator columns" in err and "user.2: categorical, 2 ids (inferred)" in err
    m = json.loads((tmp_path / "map.json").read_text())
    assert m["context_columns"] == [] and set(m["entities"]) == {"user", "item"}
    assert "61" in m["entities"]["user"]["features"]          # a user with attributes and no rating
    rels = f"{tmp_path / 'rel'}.users,{tmp_path / 'rel'}.items"
    common = ["train", "-task", "r", "-train", tmp_path / "train.libfm", "-test", tmp_path / "test.libfm",
              "-method", "mcmc", "-dim", "1,1,4", "-iter", "60", "-seed", "0", "--no-cache"]
    code, _, err = run(*common, "-meta", tmp_path / "meta", "-relation", rels, "-save_model", tmp_path / "m.fm")
    assert code == 0, err
    with_features = rmse_of(err)
    # the same ratings with the user and item one-hot only
    code, _, err = run("convert", "-in", testdata("minilens.base"), "-in", testdata("minilens.test"),
                       "-out", tmp_path / "plain.train", "-out", tmp_path / "plain.test", "--target", "2",
                       "--categorical", "0,1", "--drop", "3", "-meta", tmp_path / "plain.meta")
    assert code == 0, err
    code, _, err = run("train", "-task", "r", "-train", tmp_path / "plain.train", "-test", tmp_path / "plain.test",
                       "-method", "mcmc", "-dim", "1,1,4", "-iter", "60", "-seed", "0", "--no-cache",
                       "-meta", tmp_path / "plain.meta")
    assert code == 0, err
    assert with_features < rmse_of(err), (with_features, rmse_of(err))
    # new pairs, one of them the cold-start user 61 (attributes only): same features as the mapping says
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("1\t1\t0\t880000000\n61\t2\t0\t880000000\n")
    code, stdout, err = run("convert", "-in", pairs, "-out", "-", "--use-mapping", tmp_path / "map.json")
    assert code == 0, err
    ent = m["entities"]
    first, second = (line.split()[1:] for line in stdout.splitlines())   # after the target 0
    assert first == [f"{f}:{v:.9g}" for f, v in sorted(ent["user"]["features"]["1"] + ent["item"]["features"]["1"])]
    assert second == [f"{f}:{v:.9g}" for f, v in sorted(ent["user"]["features"]["61"] + ent["item"]["features"]["2"])]
    assert "0: 1" in err
    code, pred, err = run("predict", "-model", tmp_path / "m.fm", "-test", tmp_path / "test.libfm",
                          "-relation", rels, "-out", "-")
    assert code == 0, err
    assert np.isfinite(np.array(pred.split(), float)).all()
    # the recommendation step: top-3 unseen items for user 1, each score what predict gives for
    # the pair converted through the mapping (its relation rows included)
    code, top, err = run("recommend", "-model", tmp_path / "m.fm", "--mapping", tmp_path / "map.json",
                         "-users", "-", "-exclude", testdata("minilens.base"), "-n", "3", "-out", "-", stdin=b"1\n")
    assert code == 0, err
    rows = [line.split("\t") for line in top.splitlines()]
    seen = {l.split("\t")[1] for l in open(testdata("minilens.base")) if l.split("\t")[0] == "1"}
    assert [r[0] for r in rows] == ["1"] * 3 and [r[3] for r in rows] == ["1", "2", "3"]
    assert not seen & {r[1] for r in rows}
    pairs.write_text("".join(f"1\t{r[1]}\t0\t0\n" for r in rows))
    code, _, err = run("convert", "-in", pairs, "-out", tmp_path / "pairs.libfm", "--use-mapping",
                       tmp_path / "map.json", "--relations", tmp_path / "rel")   # rel.*.test: the pairs' links
    assert code == 0, err
    code, pred, err = run("predict", "-model", tmp_path / "m.fm", "-test", tmp_path / "pairs.libfm",
                          "-relation", rels, "-out", "-")
    assert code == 0, err
    assert pred.split() == [r[2] for r in rows]

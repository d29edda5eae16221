"""`fmcli train -method bpr` end to end: convert's mapping gives the sides, the model is a
ranking model whose -out and predict give its unclipped scores, recommend ranks with it,
-validation prints and stops on a ranking metric, the seed decides, and bad input fails
with one line and exit 2."""

import json

import numpy as np
import pytest

from fmcli.io.modelfile import load_model


def planted_pairs(seed=0, n_users=40, n_items=30, per_user=8):
    """Each user's positives: its top items under a planted 2-factor ranking."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 1, (n_users, 2)) @ rng.normal(0, 1, (n_items, 2)).T
    top = np.argsort(-scores, axis=1)[:, :per_user]
    return [(f"u{u}", f"i{i}") for u in range(n_users) for i in top[u]]


@pytest.fixture
def converted(tmp_path, run):
    pairs = planted_pairs()
    train = [p for t, p in enumerate(pairs) if t % 4]
    test = [p for t, p in enumerate(pairs) if t % 4 == 0]
    for name, rows in (("train.tsv", train), ("test.tsv", test)):
        (tmp_path / name).write_text("".join(f"{u}\t{i}\t1\n" for u, i in rows))
    code, _, err = run("convert", "-in", tmp_path / "train.tsv", "-in", tmp_path / "test.tsv",
                       "-out", tmp_path / "train.libfm", "-out", tmp_path / "test.libfm", "--target", "2",
                       "--categorical", "0,1", "--user", "0", "--item", "1", "--mapping", tmp_path / "map.json")
    assert code == 0, err
    return tmp_path


def bpr(run, d, *extra):
    return run("train", "-task", "r", "-method", "bpr", "--mapping", d / "map.json", "-train", d / "train.libfm",
               "-dim", "0,1,4", "-iter", "30", "-learn_rate", "0.05", "-regular", "0,0.001,0.001",
               "--optimizer", "adagrad", "--no-cache", *extra)


def test_train_predict_recommend(converted, run):
    d = converted
    code, out, err = bpr(run, d, "-test", d / "test.libfm", "-out", d / "pred.txt", "-save_model", d / "m.fm",
                         "-validation", d / "test.libfm", "--early-stop-metric", "auc")
    assert code == 0, err
    assert "Train(loss)=" in err and "Validation(auc)=" in err
    losses = [float(line.split("Train(loss)=")[1].split()[0]) for line in err.splitlines() if "Train(loss)" in line]
    assert losses[-1] < 0.6 * losses[0]
    model = load_model(str(d / "m.fm"))
    assert model.meta["ranking"]["loss"] == "bpr" and model.y_min == -np.inf and model.y_max == np.inf
    pred = np.loadtxt(d / "pred.txt")
    code, out, err = run("predict", "-model", d / "m.fm", "-test", d / "test.libfm", "-out", "-")
    assert code == 0, err
    np.testing.assert_allclose(np.array(out.split(), float), pred, rtol=1e-5)
    assert pred.max() > 1 or pred.min() < 0 or np.ptp(pred) > 0   # scores, not clipped to the targets' 1
    code, out, err = run("recommend", "-model", d / "m.fm", "--mapping", d / "map.json", "-exclude",
                         d / "train.tsv", "--evaluate", d / "test.tsv", "-k", "5")
    assert code == 0, err
    auc = float(dict(line.split("\t") for line in out.splitlines())["auc"])
    assert auc > 0.8, out      # planted ranking: held-out positives rank high (untrained: 0.5)


def test_same_seed_same_model_and_threads_do_not_matter(converted, run):
    d = converted
    for name, extra in (("a", ()), ("b", ()), ("c", ("--threads", "1"))):
        code, _, err = bpr(run, d, "-save_model", d / f"{name}.fm", "-iter", "3", "--sampling", "warp", *extra)
        assert code == 0, err
    a, b, c = (load_model(str(d / f"{n}.fm")) for n in "abc")
    assert np.array_equal(a.V, b.V) and np.array_equal(a.V, c.V) and np.array_equal(a.w, c.w)
    code, _, err = bpr(run, d, "-save_model", d / "s.fm", "-iter", "3", "--sampling", "warp", "-seed", "7")
    assert not np.array_equal(a.V, load_model(str(d / "s.fm")).V)


def test_early_stop_on_a_ranking_metric(converted, run):
    d = converted
    code, _, err = bpr(run, d, "-iter", "200", "-learn_rate", "0.5", "-validation", d / "test.libfm",
                       "--early-stop", "2", "--early-stop-metric", "precision@3")
    assert code == 0, err
    assert "Early stop" in err and "Validation(precision@3)=" in err


@pytest.mark.parametrize("extra, message", [
    (("--sampling", "warp", "-method", "sgd"), "--mapping, --sampling apply to -method bpr only"),
    (("--early-stop-metric", "ndcg@x", "-validation", "V"), "--early-stop-metric 'ndcg@x'"),
    (("--sampling", "warp", "--negatives", "3"), "--negatives applies to --sampling uniform"),
])
def test_option_errors(converted, run, extra, message):
    d = converted
    extra = tuple(str(d / "test.libfm") if x == "V" else x for x in extra)
    code, out, err = bpr(run, d, *extra)
    assert code == 2 and message in err and out == ""


def test_needs_a_mapping(converted, run):
    d = converted
    code, _, err = run("train", "-task", "r", "-method", "bpr", "-train", d / "train.libfm")
    assert code == 2 and "-method bpr needs --mapping" in err


def test_user_with_every_item_positive(tmp_path, run):
    rows = [("a", "x"), ("a", "y"), ("b", "x")]
    (tmp_path / "t.tsv").write_text("".join(f"{u}\t{i}\t1\n" for u, i in rows))
    code, _, err = run("convert", "-in", tmp_path / "t.tsv", "-out", tmp_path / "t.libfm", "--target", "2",
                       "--categorical", "0,1", "--user", "0", "--item", "1", "--mapping", tmp_path / "m.json")
    assert code == 0, err
    code, _, err = run("train", "-task", "r", "-method", "bpr", "--mapping", tmp_path / "m.json",
                       "-train", tmp_path / "t.libfm", "-save_model", tmp_path / "m.fm")
    assert code == 2 and "user 'a' has a positive for every one of the 2 items" in err
    assert not (tmp_path / "m.fm").exists()


def test_row_without_an_item(converted, run):
    d = converted
    text = (d / "train.libfm").read_text().splitlines()
    first = text[0].split()
    (d / "bad.libfm").write_text("\n".join([" ".join(first[:2])] + text[1:]) + "\n")   # the item dropped
    code, _, err = run("train", "-task", "r", "-method", "bpr", "--mapping", d / "map.json",
                       "-train", d / "bad.libfm", "--no-cache")
    assert code == 2 and "bad.libfm: row 1 has no item" in err and err.count("error") == 1


def test_convert_min_rating_keeps_positives_and_their_relation_rows(tmp_path, run):
    rows = [("a", "x", 5), ("a", "y", 2), ("b", "x", 4), ("b", "z", 1), ("c", "y", 4)]
    (tmp_path / "r.tsv").write_text("".join(f"{u}\t{i}\t{r}\n" for u, i, r in rows))
    args = ["convert", "-in", tmp_path / "r.tsv", "--target", "2", "--categorical", "0,1", "--user", "0",
            "--item", "1"]
    code, _, err = run(*args, "-out", tmp_path / "all.libfm", "--relations", tmp_path / "all")
    assert code == 0, err
    code, _, err = run(*args, "-out", tmp_path / "pos.libfm", "--relations", tmp_path / "pos", "--min-rating", "4")
    assert code == 0, err
    assert "2 row(s) rated below --min-rating 4 left out" in err
    every = (tmp_path / "all.libfm").read_text().splitlines()
    kept = [k for k, (_, _, r) in enumerate(rows) if r >= 4]
    assert (tmp_path / "pos.libfm").read_text().splitlines() == [every[k] for k in kept]
    for side in ("users", "items"):
        links = (tmp_path / f"all.{side}.train").read_text().splitlines()
        assert (tmp_path / f"pos.{side}.train").read_text().splitlines() == [links[k] for k in kept]
        # the relations themselves hold every rating
        assert (tmp_path / f"pos.{side}.x").read_text() == (tmp_path / f"all.{side}.x").read_text()


def test_notes_for_ratings_as_positives_and_users_without_positives(tmp_path, run):
    rows = [("a", "x", 5), ("a", "y", 2), ("b", "x", 4), ("c", "z", 1)]
    (tmp_path / "r.tsv").write_text("".join(f"{u}\t{i}\t{r}\n" for u, i, r in rows))
    args = ["convert", "-in", tmp_path / "r.tsv", "-out", tmp_path / "r.libfm", "--target", "2",
            "--categorical", "0,1", "--user", "0", "--item", "1"]
    train = ["train", "-task", "r", "-method", "bpr", "-train", tmp_path / "r.libfm", "-iter", "1", "--no-cache"]
    assert run(*args, "--mapping", tmp_path / "m.json")[0] == 0
    code, _, err = run(*train, "--mapping", tmp_path / "m.json")
    assert code == 0, err
    assert "its targets (4 values, 1 to 5) are ignored" in err and "users have no positive" not in err
    # the mapping of --min-rating 3: rows of a and b only, the note on targets is not needed
    assert run(*args, "--mapping", tmp_path / "p.json", "--min-rating", "3")[0] == 0
    code, _, err = run(*train, "--mapping", tmp_path / "p.json")
    assert code == 0, err
    assert "1 of the mapping's 3 users have no positive" in err and "are ignored" not in err


def test_implicit_pairs_without_a_target(tmp_path, run):
    pairs = planted_pairs(n_users=20, n_items=15, per_user=5)
    (tmp_path / "p.tsv").write_text("".join(f"{u}\t{i}\n" for u, i in pairs))
    code, _, err = run("convert", "-in", tmp_path / "p.tsv", "-out", tmp_path / "p.libfm", "--categorical", "0,1",
                       "--user", "0", "--item", "1", "--mapping", tmp_path / "m.json")
    assert code == 0, err
    lines = (tmp_path / "p.libfm").read_text().splitlines()
    assert len(lines) == len(pairs) and all(line.split()[0] == "1" for line in lines)
    code, _, err = run("train", "-task", "r", "-method", "bpr", "--mapping", tmp_path / "m.json", "-train",
                       tmp_path / "p.libfm", "-iter", "5", "-save_model", tmp_path / "m.fm", "--no-cache")
    assert code == 0 and "are ignored" not in err, err
    code, out, err = run("recommend", "-model", tmp_path / "m.fm", "--mapping", tmp_path / "m.json", "-n", "3",
                         "-exclude", tmp_path / "p.tsv")
    assert code == 0, err
    assert len(out.splitlines()) == 20 * 3
    # without --user and --item a target is still required
    code, _, err = run("convert", "-in", tmp_path / "p.tsv", "-out", tmp_path / "q.libfm", "--categorical", "0,1")
    assert code == 2 and "--target is required" in err


def test_mapping_without_an_item_side(tmp_path, run):
    (tmp_path / "r.tsv").write_text("a\tx\t1\nb\ty\t1\n")
    code, _, err = run("convert", "-in", tmp_path / "r.tsv", "-out", tmp_path / "r.libfm", "--target", "2",
                       "--categorical", "0,1", "--mapping", tmp_path / "m.json")
    assert code == 0, err
    code, _, err = run("train", "-task", "r", "-method", "bpr", "--mapping", tmp_path / "m.json",
                       "-train", tmp_path / "r.libfm", "--no-cache")
    assert code == 2 and "no user and item sides" in err and "convert --user COL --item COL" in err


def test_weights_of_one_change_nothing_and_other_weights_do(converted, run):
    d = converted
    n = len((d / "train.tsv").read_text().splitlines())
    (d / "ones.w").write_text("1\n" * n)
    (d / "mixed.w").write_text("".join(f"{(t % 3) * 0.75}\n" for t in range(n)))
    models = {}
    for name, extra in (("plain", ()), ("ones", ("-weights", d / "ones.w")), ("mixed", ("-weights", d / "mixed.w"))):
        code, _, err = bpr(run, d, "-save_model", d / f"{name}.fm", "-iter", "3", *extra)
        assert code == 0, err
        models[name] = load_model(str(d / f"{name}.fm"))
    assert np.array_equal(models["plain"].V, models["ones"].V)
    assert not np.allclose(models["plain"].V, models["mixed"].V)
    (d / "short.w").write_text("1\n" * (n - 1))
    code, _, err = bpr(run, d, "-weights", d / "short.w", "-save_model", d / "bad.fm")
    assert code == 2 and "short.w" in err and not (d / "bad.fm").exists()

"""`fmcli convert --weight COL`: a column of row weights written to OUT.weights (the -weights of
fmcli train), checked as train checks them, recorded in the mapping, never a feature."""

import json

import numpy as np
import pytest


def ratings_csv(n=60, seed=3, weights=True):
    rng = np.random.default_rng(seed)
    lines = ["user,item,rating,w" if weights else "user,item,rating"]
    for _ in range(n):
        u, i, r = rng.integers(8), rng.integers(6), rng.integers(1, 6)
        w = f",{rng.integers(0, 4)}" if weights else ""
        lines.append(f"u{u},i{i},{r}{w}")
    return "\n".join(lines) + "\n"


def convert(run, tmp_path, text, *extra, name="r"):
    src = tmp_path / f"{name}.csv"
    src.write_text(text)
    out = tmp_path / f"{name}.libfm"
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "rating", "--categorical", "user,item",
                       "-q", *extra)
    return code, out, err


def test_weights_beside_the_output_and_not_a_feature(run, tmp_path):
    text = ratings_csv()
    code, out, err = convert(run, tmp_path, text, "--weight", "w", "--mapping", tmp_path / "m.json")
    assert code == 0, err
    expected = [float(line.rsplit(",", 1)[1]) for line in text.splitlines()[1:]]
    written = (tmp_path / "r.libfm.weights").read_text().split("\n")
    assert written[-1] == "" and [float(w) for w in written[:-1]] == expected
    # the rows are the rows converted without the column: the weight is no feature
    code, plain, err = convert(run, tmp_path, "\n".join(line.rsplit(",", 1)[0] for line in text.splitlines()) + "\n",
                               name="plain")
    assert code == 0, err
    assert out.read_text() == plain.read_text()
    roles = {c["name"]: c["role"] for c in json.loads((tmp_path / "m.json").read_text())["columns"]}
    assert roles == {"user": "categorical", "item": "categorical", "rating": "target", "w": "weight"}


def test_train_on_converted_weights_equals_hand_written_weights(run, tmp_path):
    text = ratings_csv(n=80)
    code, out, err = convert(run, tmp_path, text, "--weight", "w")
    assert code == 0, err
    hand = tmp_path / "hand.weights"
    hand.write_text("".join(f"{line.rsplit(',', 1)[1]}\n" for line in text.splitlines()[1:]))
    preds = []
    for weights in (tmp_path / "r.libfm.weights", hand):
        p = tmp_path / f"{weights.name}.pred"
        code, _, err = run("train", "-task", "r", "-train", out, "-test", out, "-method", "als", "-dim", "1,1,2", "-iter", "5",
                           "-seed", "1", "-weights", weights, "-out", p, "-q")
        assert code == 0, err
        preds.append(p.read_text())
    assert preds[0] == preds[1]
    # and the weights matter: unweighted training gives other predictions
    p = tmp_path / "unweighted.pred"
    code, _, err = run("train", "-task", "r", "-train", out, "-test", out, "-method", "als", "-dim", "1,1,2", "-iter", "5",
                       "-seed", "1", "-out", p, "-q")
    assert code == 0, err
    assert p.read_text() != preds[0]


@pytest.mark.parametrize("value, why", [("-1", "is negative"), ("nan", "is not finite"), ("inf", "is not finite"),
                                        ("heavy", "is not a number"), ("", "missing weight")])
def test_bad_weight_names_file_line_and_writes_nothing(run, tmp_path, value, why):
    text = "user,item,rating,w\nu1,i1,5,1\nu2,i1,3," + value + "\nu1,i2,4,2\n"
    code, out, err = convert(run, tmp_path, text, "--weight", "w", "--mapping", tmp_path / "m.json")
    assert code == 2
    assert err.count("\n") == 1 and "r.csv:3:" in err and "column w" in err and why in err
    assert not any(p.name != "r.csv" for p in tmp_path.iterdir())


def test_use_mapping_keeps_the_weight_column(run, tmp_path):
    code, _, err = convert(run, tmp_path, ratings_csv(), "--weight", "w", "--mapping", tmp_path / "m.json")
    assert code == 0, err

    def with_mapping(name, text, *extra):
        """Convert `text` with the mapping; (exit code, stderr, the weights file written or None)."""
        src = tmp_path / f"{name}.csv"
        src.write_text(text)
        code, _, err = run("convert", "-in", src, "-out", tmp_path / f"{name}.libfm", "--use-mapping",
                           tmp_path / "m.json", "-q", *extra)
        weights = tmp_path / f"{name}.libfm.weights"
        return code, err, weights.read_text() if weights.exists() else None

    assert with_mapping("new", "user,item,rating,w\nu1,i2,4,3\nu9,i1,2,0.5\n") == (0, "", "3\n0.5\n")
    # headerless rows in the mapping's column order work too
    assert with_mapping("bare", "u1,i2,4,3\n", "--no-header") == (0, "", "3\n")
    # rows to predict have neither a target nor a weight
    assert with_mapping("p", "user,item\nu1,i2\n", "--no-target") == (0, "", None)
    # a new file without the column is refused, as for any column of the mapping
    code, err, weights = with_mapping("plain", "user,item,rating\nu1,i1,5\n")
    assert code == 2 and "no column 'w'" in err and weights is None


def test_min_rating_leaves_the_weights_of_left_out_rows_out(run, tmp_path):
    text = "user,item,rating,w\nu1,i1,5,1\nu2,i1,3,2\nu1,i2,4,3\nu3,i3,2,4\n"
    code, out, err = convert(run, tmp_path, text, "--weight", "w", "--min-rating", "4")
    assert code == 0, err
    assert out.read_text().count("\n") == 2
    assert (tmp_path / "r.libfm.weights").read_text() == "1\n3\n"


def test_option_errors(run, tmp_path):
    text = ratings_csv()
    code, _, err = convert(run, tmp_path, text, "--weight", "rating")
    assert code == 2 and "both target" in err
    code, _, err = convert(run, tmp_path, text, "--weight", "nosuch")
    assert code == 2 and "no such column" in err
    src = tmp_path / "r.csv"
    code, stdout, err = run("convert", "-in", src, "-out", "-", "--target", "rating", "--categorical", "user,item",
                            "--weight", "w")
    assert code == 2 and stdout == "" and "not -" in err


def test_mapping_with_bad_weight_columns_is_refused(run, tmp_path):
    code, _, err = convert(run, tmp_path, ratings_csv(), "--weight", "w", "--mapping", tmp_path / "m.json")
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    m["columns"].append({"name": "w2", "role": "weight"})
    (tmp_path / "two.json").write_text(json.dumps(m))
    code, _, err = run("convert", "-in", tmp_path / "r.csv", "-out", tmp_path / "y.libfm", "--use-mapping",
                       tmp_path / "two.json", "-q")
    assert code == 2 and "more than one weight column" in err
    assert not (tmp_path / "y.libfm").exists()

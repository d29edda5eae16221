"""`fmcli convert`: delimited files to libFM text, groups and a reusable id mapping."""

import gzip
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st



def rows_of(text):
    """libFM text -> list of (target or None, [(id, value), ...])."""
    out = []
    for line in text.splitlines():
        toks = line.split()
        target = None if ":" in toks[0] else float(toks.pop(0))
        out.append((target, [(int(t.split(":")[0]), float(t.split(":")[1])) for t in toks]))
    return out


TRIPLES = "1\t10\t5\t881250949\n2\t10\t3\t891717742\n1\t20\t4\t878887116\n3\t30\t1\t880606923\n"


def test_triples_one_hot_meta_and_mapping(run, tmp_path):
    src = tmp_path / "u.data"
    src.write_text(TRIPLES)
    out, meta, mapping = tmp_path / "u.libfm", tmp_path / "u.meta", tmp_path / "map.json"
    code, stdout, err = run("convert", "-in", src, "-out", out, "--target", "2", "--categorical", "0,1",
                            "--drop", "3", "-meta", meta, "--mapping", mapping)
    assert code == 0, err
    assert stdout == ""
    # users 1,2,3 get ids 0,1,2 (first appearance); items 10,20,30 follow: 3,4,5
    assert out.read_text() == "5 0:1 3:1\n3 1:1 3:1\n4 0:1 4:1\n1 2:1 5:1\n"
    assert meta.read_text().split() == ["0", "0", "0", "1", "1", "1"]
    m = json.loads(mapping.read_text())
    assert m["n_features"] == 6 and m["separator"] == "\t" and m["header"] is False
    roles = [(c["name"], c["role"]) for c in m["columns"]]
    assert roles == [("0", "categorical"), ("1", "categorical"), ("2", "target"), ("3", "drop")]
    assert m["columns"][1]["ids"] == {"10": 3, "20": 4, "30": 5}
    assert "0: categorical, 3 ids" in err and "Wrote 4 rows" in err


def test_default_output_name_and_libfm_spellings(run, tmp_path):
    src = tmp_path / "u.data"
    src.write_text(TRIPLES)
    code, _, err = run("convert", "-in", src, "-target_column", "2", "-categorical", "0,1", "-delete_column", "3")
    assert code == 0, err
    assert (tmp_path / "u.data.libfm").read_text().startswith("5 0:1 3:1\n")


def test_several_inputs_share_ids(run, tmp_path):
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("a\tx\t1\nb\ty\t2\n")
    test.write_text("c\tx\t3\na\tz\t4\n")
    o1, o2 = tmp_path / "train.libfm", tmp_path / "test.libfm"
    code, _, err = run("convert", "-in", train, "-in", test, "-out", o1, "-out", o2, "--target", "2",
                       "-meta", tmp_path / "g")
    assert code == 0, err
    # inferred: columns 0 and 1 are not numbers -> categorical; ids over both files, column by column
    assert o1.read_text() == "1 0:1 3:1\n2 1:1 4:1\n"
    assert o2.read_text() == "3 2:1 3:1\n4 0:1 5:1\n"
    assert (tmp_path / "g").read_text().split() == ["0", "0", "0", "1", "1", "1"]
    code, _, err = run("convert", "-in", train, "-in", test, "-out", o1, "--target", "2")
    assert code == 2 and "give one -out per -in" in err


def test_csv_header_names_inference_and_numeric_values(run, tmp_path):
    src = tmp_path / "clicks.csv"
    src.write_text('user,age,country,score,clicked\n'
                   'u1,31,"Bonn, DE",0.5,1\n'
                   'u2,0,FR,,0\n'
                   'u1,45.5,FR,2e-3,1\n')
    out, mapping = tmp_path / "c.libfm", tmp_path / "m.json"
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "clicked", "--categorical", "user",
                       "--mapping", mapping)
    assert code == 0, err
    # user: u1 0, u2 1; age numeric id 2 (a 0 is left out); country: "Bonn, DE" 3, FR 4; score id 5
    assert rows_of(out.read_text()) == [
        (1.0, [(0, 1), (2, 31), (3, 1), (5, 0.5)]),
        (0.0, [(1, 1), (4, 1)]),
        (1.0, [(0, 1), (2, 45.5), (4, 1), (5, 0.002)]),
    ]
    assert "age: numeric (inferred)" in err and "country: categorical, 2 ids (inferred)" in err
    assert json.loads(mapping.read_text())["header"] is True


@pytest.mark.parametrize("sep, text", [
    ("auto", "1;a;3\n2;b;4\n"), (";", "1;a;3\n2;b;4\n"), ("space", "1  a\t3\n 2 b 4\n"),
    ("auto", "1 a 3\n2 b 4\n"), ("comma", "1,a,3\n2,b,4\n"), ("|", "1|a|3\n2|b|4\n"),
])
def test_separators(run, tmp_path, sep, text):
    src = tmp_path / "d.txt"
    src.write_text(text)
    code, stdout, err = run("convert", "-in", src, "-out", "-", "--sep", sep, "--target", "2",
                            "--categorical", "0,1")
    assert code == 0, err
    assert stdout == "3 0:1 2:1\n4 1:1 3:1\n"


def test_header_detection(run, tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("# a comment\n\nuser,item,rating\n7,8,5\r\n7,9,4")   # CRLF, no final newline
    code, stdout, err = run("convert", "-in", src, "-out", "-", "--target", "2", "--categorical", "0,1")
    assert code == 0, err
    assert stdout == "5 0:1 1:1\n4 0:1 2:1\n"      # the first row's target is not a number: header
    code, stdout, err = run("convert", "-in", src, "-out", "-", "--target", "2", "--no-header")
    assert code == 2 and f"{src}:3: bad target 'rating'" in err


def test_use_mapping_same_ids_unknown_dropped(run, tmp_path):
    train, new = tmp_path / "train.tsv", tmp_path / "new.tsv"
    train.write_text(TRIPLES)
    mapping = tmp_path / "map.json"
    assert run("convert", "-in", train, "-out", tmp_path / "t.libfm", "--target", "2", "--categorical", "0,1",
               "--drop", "3", "--mapping", mapping)[0] == 0
    # all columns, target present; user 9 and item 99 are new
    new.write_text("3\t20\t2\t1\n9\t10\t4\t1\n9\t99\t1\t1\n")
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping)
    assert code == 0, err
    assert stdout == "2 2:1 4:1\n4 3:1\n1\n"
    assert "3 unknown value(s) dropped" in err and "0: 2" in err and "1: 1" in err
    # only the used columns, no target: rows keep their order; a row with no known id is 0:0
    new.write_text("3\t20\n9\t99\n1\t30\n")
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target")
    assert code == 0, err
    assert stdout == "2:1 4:1\n0:0\n0:1 5:1\n"
    assert "written as '0:0'" in err
    # the mapping file is not changed and options that it fixes are refused
    code, _, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--target", "2")
    assert code == 2 and "come from --use-mapping" in err


def test_use_mapping_matches_header_names(run, tmp_path):
    train, new = tmp_path / "train.csv", tmp_path / "new.csv"
    train.write_text("user,item,rating\nu1,i1,5\nu2,i2,3\n")
    mapping = tmp_path / "map.json"
    assert run("convert", "-in", train, "-out", tmp_path / "t", "--target", "rating",
               "--mapping", mapping)[0] == 0
    new.write_text("item,extra,user\ni2,zz,u1\n")   # other order, an extra column, no target
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target")
    assert code == 0, err
    assert stdout == "0:1 3:1\n"
    new.write_text("item,user\ni2,u1\n")
    code, _, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping)
    assert code == 2 and "no target column 'rating'" in err


def test_stdin_stdout_and_gzip(run, tmp_path):
    code, stdout, err = run("convert", "-in", "-", "-out", "-", "--target", "2", "--categorical", "0,1",
                            "--drop", "3", "-q", stdin=TRIPLES.encode())
    assert code == 0 and err == ""
    assert stdout.splitlines()[0] == "5 0:1 3:1"
    gz = tmp_path / "u.data.gz"
    gz.write_bytes(gzip.compress(TRIPLES.encode()))
    code, stdout2, err = run("convert", "-in", gz, "-out", "-", "--target", "2", "--categorical", "0,1",
                             "--drop", "3")
    assert code == 0 and stdout2 == stdout


@pytest.mark.parametrize("content, args, message", [
    ("1\t10\t5\t0\n1\t10\t\t0\n", [], ":2: missing target"),
    ("1\t10\t5\t0\n2\t10\t4\n", [], ":2: 3 fields, expected 4"),
    ("1\t10\t5\t0\n\n1\t10\tfive\t0\n", [], ":3: bad target 'five'"),
    ("1\t10\t5\tx\n", ["--numeric", "3"], ":1: column 3: bad value 'x'"),
    ("1\t10\t5\t1e999\n", ["--numeric", "3"], ":1: column 3: bad value"),
    ("1\t10\t5\t0\n1\t10\tnan\t0\n", [], "bad target 'nan'"),
    ("user\titem\trating\n", [], "no data rows after the header line"),
    (b"1\t10\t5\t0\n1\t\xff\t5\t0\n", [], ":2: not UTF-8 text"),
    (b"1\t10\t5\t\x00\n", [], ":1: NUL byte"),
    ("", [], "no data rows"),
    ("# only a comment\n\n", [], "no data rows"),
    ('1,"a\n', ["--sep", ","], "bad quoting"),
])
def test_bad_input_exit_2_nothing_written(run, tmp_path, content, args, message):
    src = tmp_path / "in.tsv"
    (src.write_bytes if isinstance(content, bytes) else src.write_text)(content)
    code, stdout, err = run("convert", "-in", src, "-out", tmp_path / "o", "--target", "2",
                            "-meta", tmp_path / "g", "--mapping", tmp_path / "m", *args)
    assert code == 2 and stdout == "", err
    assert err.startswith(f"fmcli: error: {src}") and message in err and len(err.splitlines()) == 1, err
    assert sorted(os.listdir(tmp_path)) == ["in.tsv"]


@pytest.mark.parametrize("args, message", [
    (["--target", "9"], "there are only 4 columns"),
    (["--target", "rating"], "no such column"),
    ([], "--target is required"),
    (["--target", "2", "--categorical", "2"], "cannot be both target"),
    (["--target", "2", "--categorical", "1", "--numeric", "1"], "cannot be both categorical"),
    (["--target", "2", "--sep", "ab"], "--sep 'ab'"),
    (["--target", "2", "--no-target"], "--no-target is for new data"),
    (["--target", "2", "--use-mapping", "nope.json"], "come from --use-mapping"),
    (["--use-mapping", "nope.json"], "mapping file not found"),
])
def test_usage_errors(run, tmp_path, args, message):
    src = tmp_path / "u.data"
    src.write_text(TRIPLES)
    code, _, err = run("convert", "-in", src, "-out", tmp_path / "o", *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"format": "x"}',
    '{"format": "fmcli-convert-mapping", "version": 2}',
    '{"format": "fmcli-convert-mapping", "version": 1, "n_features": 1, "separator": ",", "header": false,'
    ' "columns": [{"name": "0", "role": "categorical", "group": 0, "ids": {"a": 5}}, {"name": "1", "role": "target"}]}',
    '{"format": "fmcli-convert-mapping", "version": 1, "n_features": 1, "separator": ",", "header": false,'
    ' "columns": [{"name": "0", "role": "categorical", "group": 0, "ids": {"a": 0}}]}',
])
def test_bad_mapping_file(run, tmp_path, text):
    src, mapping = tmp_path / "d.csv", tmp_path / "m.json"
    src.write_text("a,1\n")
    mapping.write_text(text)
    code, _, err = run("convert", "-in", src, "-out", tmp_path / "o", "--use-mapping", mapping)
    assert code == 2 and err.startswith(f"fmcli: error: {mapping}: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_convert_train_predict_new_data(run, tmp_path, rng):
    """Rows converted with the mapping predict exactly as the same rows in the training conversion."""
    n_users, n_items = 30, 20
    u = rng.integers(0, n_users, 600)
    i = rng.integers(0, n_items, 600)
    r = np.clip(np.round(3 + rng.normal(0, 1, 600)), 1, 5).astype(int)
    src = tmp_path / "ratings.csv"
    src.write_text("user,item,rating\n" + "".join(f"u{a},i{b},{c}\n" for a, b, c in zip(u, i, r)))
    data, meta, mapping, model = (tmp_path / n for n in ("r.libfm", "r.meta", "m.json", "m.fm"))
    assert run("convert", "-in", src, "-out", data, "--target", "rating", "-meta", meta,
               "--mapping", mapping)[0] == 0
    code, _, err = run("train", "-task", "r", "-train", data, "-method", "als", "-dim", "1,1,3", "-iter", "3",
                       "-regular", "0,1,1", "-meta", meta, "-save_model", model, "-q")
    assert code == 0, err
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("item,user\n" + "".join(f"i{b},u{a}\n" for a, b in zip(u[:50], i[:50])))
    new = tmp_path / "new.libfm"
    assert run("convert", "-in", pairs, "-out", new, "--use-mapping", mapping, "--no-target")[0] == 0
    code, pred_new, _ = run("predict", "-model", model, "-test", new, "-out", "-")
    first = tmp_path / "first.libfm"
    first.write_text("".join(data.read_text().splitlines(keepends=True)[:50]))
    code, pred_old, _ = run("predict", "-model", model, "-test", first, "-out", "-")
    assert pred_new == pred_old and len(pred_new.split()) == 50


values = st.text(alphabet="abcxyz019_-. ", min_size=0, max_size=4).map(str.strip)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.lists(st.tuples(values, values, st.integers(-5, 5)), min_size=1, max_size=25),
       cut=st.integers(0, 25))
def test_round_trip_through_the_mapping(run, tmp_path, table, cut):
    """Every written id maps back to its (column, value); new data gets the same ids or none."""
    src = tmp_path / "t.csv"
    src.write_text("".join(f"{a},{b},{t}\n" for a, b, t in table))
    out, mapping = tmp_path / "t.libfm", tmp_path / "t.json"
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "2", "--no-header",
                       "--categorical", "0,1", "--mapping", mapping, "-q")
    assert code == 0, err
    m = json.loads(mapping.read_text())
    back = {fid: (c["name"], v) for c in m["columns"] if c["role"] == "categorical" for v, fid in c["ids"].items()}
    assert sorted(back) == list(range(m["n_features"]))
    rows = rows_of(out.read_text())
    assert len(rows) == len(table)
    for (a, b, t), (target, pairs) in zip(table, rows):
        assert target == t
        assert sorted(back[i] for i, _ in pairs) == sorted(x for x in (("0", a), ("1", b)) if x[1])
    # a new file: the first rows again plus unseen values; known values keep their ids
    new = tmp_path / "n.csv"
    new.write_text("".join(f"{a},{b}\n" for a, b, _ in table[:cut]) + "NEW,NEW\n")
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target")
    assert code == 0, err
    lines = stdout.splitlines()
    assert len(lines) == min(cut, len(table)) + 1 and lines[-1] == "0:0"
    for line, (_, pairs) in zip(lines[:-1], rows):
        assert rows_of(line)[0][1] == pairs or (not pairs and line == "0:0")


def test_binary_round_trip_train_and_predict(testdata, tmp_path, run):
    """libFM text -> binary -> text is exact; train and predict on binary files equal text runs."""
    from fmcli.io.libsvm import read_libfm

    tr, te = testdata("movies.train.libfm"), testdata("movies.test.libfm")
    btr, bte, back = tmp_path / "tr.fmbin", tmp_path / "te.fmbin", tmp_path / "back.libfm"
    assert run("convert", "--binary", "-in", tr, "-in", te, "-out", btr, "-out", bte)[0] == 0
    assert run("convert", "--to-text", "-in", bte, "-out", back)[0] == 0
    a, b = read_libfm(str(back)), read_libfm(te)
    for name in ("indptr", "indices", "data", "y"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    common = ["-task", "r", "-method", "als", "-iter", "3", "-dim", "1,1,4", "-regular", "0,5,5", "--no-cache"]
    run("train", "-train", btr, "-test", bte, *common, "-out", tmp_path / "o1", "-save_model", tmp_path / "m.fm")
    run("train", "-train", tr, "-test", te, *common, "-out", tmp_path / "o2")
    run("predict", "-model", tmp_path / "m.fm", "-test", bte, "-out", tmp_path / "o3")
    assert (tmp_path / "o1").read_text() == (tmp_path / "o2").read_text() == (tmp_path / "o3").read_text()


def test_binary_errors(testdata, tmp_path, run):
    tr = testdata("movies.train.libfm")
    code, _, err = run("convert", "--binary", "--to-text", "-in", tr, "-out", tmp_path / "x")
    assert code == 2 and "give one of them" in err
    code, _, err = run("convert", "--binary", "-in", tr, "-out", "-")
    assert code == 2 and "not written to stdout" in err
    good = tmp_path / "tr.fmbin"
    run("convert", "--binary", "-in", tr, "-out", good)
    broken = tmp_path / "broken.fmbin"
    broken.write_bytes(good.read_bytes()[:200])
    code, _, err = run("train", "-task", "r", "-train", broken, "-method", "sgd", "-iter", "1")
    assert code == 2 and "corrupt binary data file" in err
    code, _, err = run("train", "-task", "c", "-train", good, "-method", "sgd", "-iter", "1")
    assert code == 2 and str(good) in err   # ratings 1-5 are not classes

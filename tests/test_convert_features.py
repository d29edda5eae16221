"""`fmcli convert` building features: side tables joined on a key (cold start through
--use-mapping), set-valued columns, numeric transforms, TF-IDF, encodings, timestamps, the
user/item entities of the mapping and the implicit-feedback relations."""

import datetime
import json
import math
import os

import numpy as np
import pytest

from test_convert import rows_of

RATINGS = "user,item,rating\nu1,i1,5\nu2,i1,3\nu1,i2,4\nu3,i3,1\n"
USERS = "id|age|gender\nu1|20|F\nu2|40|M\nu3|30|F\nu4|50|M\n"      # u4: no ratings (cold start)
ITEMS = "id|genres\ni1|Action|x\ni2|Comedy\ni3|\n"


def write(tmp_path, name, text):
    p = tmp_path / name
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return p


def test_join_side_tables_groups_mapping_and_cold_start(run, tmp_path):
    ratings = write(tmp_path, "r.csv", RATINGS)
    users = write(tmp_path, "users.txt", USERS)
    items = write(tmp_path, "items.txt", "id;genres\ni1;Action|Comedy\ni2;Comedy\ni3;\n")
    out, meta, mapping = tmp_path / "r.libfm", tmp_path / "r.meta", tmp_path / "m.json"
    code, _, err = run("convert", "-in", ratings, "-out", out, "--target", "rating", "--categorical", "user,item",
                       "--join", f"{users}:id=user:sep=|:name=u", "--join", f"{items}:id=item:name=it",
                       "--set", "it.genres", "--set-norm", "n", "--numeric", "u.age",
                       "--user", "user", "--item", "item", "-meta", meta, "--mapping", mapping)
    assert code == 0, err
    # ids: users 0-2, items 3-5, u.age 6, u.gender F 7 M 8, genres Action 9 Comedy 10
    assert rows_of(out.read_text()) == [
        (5, [(0, 1), (3, 1), (6, 20), (7, 1), (9, 0.5), (10, 0.5)]),
        (3, [(1, 1), (3, 1), (6, 40), (8, 1), (9, 0.5), (10, 0.5)]),
        (4, [(0, 1), (4, 1), (6, 20), (7, 1), (10, 1)]),
        (1, [(2, 1), (5, 1), (6, 30), (7, 1)]),
    ]
    assert meta.read_text().split() == ["0"] * 3 + ["1"] * 3 + ["2", "3", "3", "4", "4"]
    m = json.loads(mapping.read_text())
    assert m["version"] == 2 and [j["name"] for j in m["joins"]] == ["u", "it"]
    users_side = m["entities"]["user"]
    assert users_side["column"] == "user" and m["context_columns"] == []
    assert users_side["features"]["u1"] == [[0, 1.0], [6, 20.0], [7, 1.0]]
    assert users_side["features"]["u4"] == [[6, 50.0], [8, 1.0]]        # side features, no one-hot
    assert m["entities"]["item"]["features"]["i1"] == [[3, 1.0], [9, 0.5], [10, 0.5]]
    # new rows: u4 is unknown to the ratings but its attributes are known; u9 is in a new users file
    new = write(tmp_path, "new.csv", "user,item\nu4,i2\nu9,i1\n")
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target")
    assert code == 0, err
    assert stdout == "4:1 6:50 8:1 10:1\n3:1 9:0.5 10:0.5\n"
    assert "2 unknown value(s) dropped" in err and "1 row(s) have no row in side table u" in err
    more = write(tmp_path, "users2.txt", USERS + "u9|25|F\n")
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target",
                            "--join", f"{more}:id=user:name=u")
    assert code == 0, err
    assert stdout == "4:1 6:50 8:1 10:1\n3:1 6:25 7:1 9:0.5 10:0.5\n"
    code, _, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target",
                       "--join", f"{more}:id=user:name=zz")
    assert code == 2 and "no side table named 'zz'" in err


def test_the_rows_equal_the_entities_features(run, tmp_path, rng):
    """Every converted row is its user's features plus its item's (the contract of the mapping)."""
    n = 200
    ratings = write(tmp_path, "r.tsv", "".join(f"{rng.integers(1, 30)}\t{rng.integers(1, 20)}\t{rng.integers(1, 6)}\n"
                                               for _ in range(n)))
    users = write(tmp_path, "u.user", "".join(f"{u}|{rng.integers(15, 70)}|{'MF'[u % 2]}|job{u % 4}\n"
                                              for u in range(1, 35)))
    items = write(tmp_path, "u.item", "".join(f"{i}|t{i}|" + "|".join(str(int(rng.random() < .3)) for _ in range(5))
                                              + "\n" for i in range(1, 20)))
    out, mapping = tmp_path / "r.libfm", tmp_path / "m.json"
    code, _, err = run("convert", "-in", ratings, "-out", out, "--target", "2", "--categorical", "0,1",
                       "--join", f"{users}:0=0:sep=|:name=user", "--join", f"{items}:0=1:sep=|:name=item",
                       "--standardize", "user.1", "--drop", "item.1", "--set-columns", "g=item.2..item.6",
                       "--set-norm", "sqrt", "--user", "0", "--item", "1", "--mapping", mapping)
    assert code == 0, err
    ent = json.loads(mapping.read_text())["entities"]
    for line, raw in zip(out.read_text().splitlines(), ratings.read_text().splitlines()):
        u, i, r = raw.split("\t")
        want = sorted(ent["user"]["features"][u] + ent["item"]["features"][i])
        assert line == " ".join([r] + [f"{f}:{v:.9g}" for f, v in want])


def test_indicator_and_field_sets(run, tmp_path):
    src = write(tmp_path, "t.csv", "y,tags,a,b,c\n1,x|y| x,1,0,1\n2,,0,0,0\n3,y,1,1,1\n")
    out, meta = tmp_path / "o", tmp_path / "g"
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "y", "--set", "tags",
                       "--set-columns", "abc=a..c", "--set-norm", "sqrt", "-meta", meta)
    assert code == 0, err
    s2, s3 = 1 / math.sqrt(2), 1 / math.sqrt(3)
    got = rows_of(out.read_text())
    want = [(1, [(0, s2), (1, s2), (2, s2), (4, s2)]), (2, []), (3, [(1, 1), (2, s3), (3, s3), (4, s3)])]
    for (t, p), (wt, wp) in zip(got, want):
        assert t == wt and [i for i, _ in p] == [i for i, _ in wp]
        np.testing.assert_allclose([v for _, v in p], [v for _, v in wp], rtol=1e-8)
    assert meta.read_text().split() == ["0", "0", "1", "1", "1"]
    assert "abc: set of 3 indicator columns" in err and "tags: set, 2 values" in err
    src.write_text("y,tags,a,b,c\n1,x,1,0,yes\n")
    code, _, err = run("convert", "-in", src, "-out", tmp_path / "o2", "--target", "y", "--set-columns", "abc=a..c")
    assert code == 2 and f"{src}:2: column abc: indicator column c: 'yes' is not a number" in err
    assert not (tmp_path / "o2").exists()
    code, _, err = run("convert", "-in", src, "-out", tmp_path / "o2", "--target", "y", "--set-columns", "ab=a..b",
                       "--set-columns", "bc=b..c")
    assert code == 2 and "column b cannot be both part of set ab (--set-columns) and part of set bc" in err


def test_numeric_transforms_recorded_and_reproduced(run, tmp_path, rng):
    x = np.round(rng.gamma(2, 10, 60), 2)
    src = write(tmp_path, "t.csv", "y,a,b,c\n" + "".join(f"1,{v},{v},{v}\n" for v in x))
    out, mapping = tmp_path / "o", tmp_path / "m.json"
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "y", "--standardize", "a,b",
                       "--log1p", "b", "--buckets", "c:4", "--mapping", mapping)
    assert code == 0, err
    rows = rows_of(out.read_text())
    a = (x - x.mean()) / x.std()
    lb = np.log1p(x)
    b = (lb - lb.mean()) / lb.std()
    edges = np.quantile(x, [0.25, 0.5, 0.75])
    for k, (_, pairs) in enumerate(rows):
        d = dict(pairs)
        assert d[0] == pytest.approx(a[k], rel=1e-7) and d[1] == pytest.approx(b[k], rel=1e-7)
        assert [f for f in d if f >= 2] == [2 + int(np.searchsorted(edges, x[k], side="right"))]
    # new rows get the same transform (the mapping's mean, sd and bucket bounds)
    new = write(tmp_path, "n.csv", "a,b,c\n" + "".join(f"{v},{v},{v}\n" for v in x[:5]))
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target")
    assert code == 0, err
    assert stdout.splitlines() == [line.split(" ", 1)[1] for line in out.read_text().splitlines()[:5]]
    src.write_text("y,a\n1,-1\n")
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "y", "--log1p", "a")
    assert code == 2 and ":2: column a: --log1p of -1: values must be > -1" in err


def test_tfidf_against_a_hand_computation(run, tmp_path):
    src = write(tmp_path, "t.tsv", "y\ttags\n1\tfunny dark funny\n2\tdark drama\n3\tFunny\n")
    out, mapping = tmp_path / "o", tmp_path / "m.json"
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "y", "--tfidf", "tags",
                       "--mapping", mapping)
    assert code == 0, err
    # N=3 documents; df: funny 2, dark 2, drama 1; ids in order of first appearance
    ln = math.log
    want = [[(0, 2 / 3 * ln(3 / 2)), (1, 1 / 3 * ln(3 / 2))],
            [(1, 1 / 2 * ln(3 / 2)), (2, 1 / 2 * ln(3))],
            [(0, 1 * ln(3 / 2))]]
    for (_, got), w in zip(rows_of(out.read_text()), want):
        assert [i for i, _ in got] == [i for i, _ in w]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in w], rtol=1e-8)
    terms = json.loads(mapping.read_text())["columns"][1]["terms"]
    assert terms["drama"] == [2, pytest.approx(ln(3))]
    new = write(tmp_path, "n.tsv", "tags\ndrama unseen\n")
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target")
    assert code == 0 and rows_of(stdout)[0][1] == [(2, pytest.approx(0.5 * ln(3), rel=1e-8))], err
    assert "tags: 1" in err


def test_encoding_latin1_and_invalid_utf8_in_a_dropped_column(run, tmp_path):
    data = "1|Café (1995)|5\n2|Amélie|3\n".encode("latin-1")
    src = write(tmp_path, "items.txt", data)
    code, stdout, err = run("convert", "-in", src, "-out", "-", "--target", "2", "--categorical", "0",
                            "--drop", "1")
    assert code == 0 and stdout == "5 0:1\n3 1:1\n", err
    code, _, err = run("convert", "-in", src, "-out", tmp_path / "o", "--target", "2", "--categorical", "0,1")
    assert code == 2 and f"{src}:1: not UTF-8 text in column 1" in err and not (tmp_path / "o").exists()
    mapping = tmp_path / "m.json"
    code, _, err = run("convert", "-in", src, "-out", tmp_path / "o", "--target", "2", "--categorical", "0,1",
                       "--encoding", "latin-1", "--mapping", mapping)
    assert code == 0, err
    m = json.loads(mapping.read_text())
    assert m["encoding"] == "iso8859-1" and m["columns"][1]["ids"] == {"Café (1995)": 2, "Amélie": 3}
    code, _, err = run("convert", "-in", src, "-out", "-", "--target", "2", "--encoding", "klingon")
    assert code == 2 and "--encoding 'klingon': unknown encoding" in err


def test_timestamp_parts(run, tmp_path):
    stamps = [881250949, 891717742, 878887116, 0]
    src = write(tmp_path, "t.tsv", "".join(f"{k}\t{s}\n" for k, s in enumerate(stamps)))
    out, meta = tmp_path / "o", tmp_path / "g"
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "0", "--timestamp", "1:day+weekday+hour+days30",
                       "-meta", meta)
    assert code == 0, err
    origin = min(s // 86400 for s in stamps)
    periods = sorted({(s // 86400 - origin) // 30 for s in stamps})
    for (_, pairs), s in zip(rows_of(out.read_text()), stamps):
        t = datetime.datetime.fromtimestamp(s, datetime.timezone.utc)
        want = ([(0, s // 86400 - origin)] if s // 86400 != origin else []) + [
            (1 + t.weekday(), 1), (8 + t.hour, 1), (32 + periods.index((s // 86400 - origin) // 30), 1)]
        assert pairs == want
    assert sorted(set(meta.read_text().split())) == ["0", "1", "2", "3"]
    code, _, err = run("convert", "-in", src, "-out", out, "--target", "0", "--timestamp", "1:minute")
    assert code == 2 and "bad part minute" in err


@pytest.mark.parametrize("users, args, message", [
    ("id|age\nu1|20\nu1|30\n", [], "users.txt:3: column u.id: key 'u1' repeated (first on line 2)"),
    ("id|age\nu1|20\nu2\n", [], "users.txt:3: 1 fields, expected 2"),
    ("id|age\nu1|20\nu2|old\n", ["--numeric", "u.age"], "users.txt:3: column u.age: bad value 'old'"),
    ("id|age\nu1|20\n", ["--standardize", "u.nope"], "no such column"),
    ("id|age|age\nu1|20|3\n", [], "users.txt:1: repeated column name(s) in the header: age"),
    ("id|age\nu1|20\n", ["--user", "rating"], "--user rating: the user column must be categorical"),
])
def test_join_errors_name_file_line_column_nothing_written(run, tmp_path, users, args, message):
    ratings = write(tmp_path, "r.csv", RATINGS)
    side = write(tmp_path, "users.txt", users)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run("convert", "-in", ratings, "-out", out / "r.libfm", "--target", "rating",
                            "--categorical", "user,item", "--join", f"{side}:id=user:sep=|:name=u",
                            "-meta", out / "g", "--mapping", out / "m", "--relations", out / "rel", "--user", "user",
                            "--item", "item", *args)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert os.listdir(out) == []


def test_plain_conversions_keep_mapping_version_1(run, tmp_path):
    src = write(tmp_path, "r.csv", RATINGS)
    mapping = tmp_path / "m.json"
    assert run("convert", "-in", src, "-out", tmp_path / "o", "--target", "rating", "--mapping", mapping)[0] == 0
    m = json.loads(mapping.read_text())
    assert m["version"] == 1 and set(m) == {"format", "version", "fmcli_version", "separator", "header",
                                            "n_features", "columns"}


def ratings_tables(tmp_path, rng, n_users=25, n_items=15, n_train=150, n_test=40):
    """Train and test rating triples (tab-separated, no header) and a users side table."""
    def triples(n):
        return [(f"u{rng.integers(0, n_users)}", f"i{rng.integers(0, n_items)}", int(rng.integers(1, 6)))
                for _ in range(n)]
    train, test = triples(n_train), triples(n_test)
    tr = write(tmp_path, "train.tsv", "".join(f"{u}\t{i}\t{r}\n" for u, i, r in train))
    te = write(tmp_path, "test.tsv", "".join(f"{u}\t{i}\t{r}\n" for u, i, r in test))
    users = write(tmp_path, "users.txt", "".join(f"u{u}|{'MF'[u % 2]}\n" for u in range(n_users + 3)))
    return train, test, tr, te, users


def test_relations_against_a_brute_force_construction(run, tmp_path, rng):
    from fmcli.io.relation import load_relations

    train, test, tr, te, users = ratings_tables(tmp_path, rng)
    base, mapping = tmp_path / "rel", tmp_path / "m.json"
    code, _, err = run("convert", "-in", tr, "-in", te, "-out", tmp_path / "tr.libfm", "-out", tmp_path / "te.libfm",
                       "--target", "2", "--categorical", "0,1", "--join", f"{users}:0=0:sep=|:name=user",
                       "--user", "0", "--item", "1", "--relations", base, "--mapping", mapping)
    assert code == 0, err
    m = json.loads(mapping.read_text())
    user_rows = m["entities"]["user"]["relation"]["rows"]
    item_rows = m["entities"]["item"]["relation"]["rows"]
    assert m["entities"]["user"]["relation"]["name"] == f"{base}.users"
    # brute force: the items of each user in the train rows only, 1/sqrt(n)
    n_main = m["n_features"]
    got = load_relations([f"{base}.users", f"{base}.items"], n_main,
                         {"train": len(train), "test": len(test)}, cache=False)
    for side, (rows, other_rows, k) in enumerate(((user_rows, item_rows, 0), (item_rows, user_rows, 1))):
        rel, links = got["train"][side]
        assert rel.n_rows == len(rows) + 1                    # and the row of unknown keys
        for key, r in rows.items():
            members = sorted({other_rows[t[1 - k]] for t in train if t[k] == key})
            a, b = rel.indptr[r], rel.indptr[r + 1]
            assert rel.indices[a:b].tolist() == members
            np.testing.assert_allclose(rel.data[a:b], 1 / math.sqrt(len(members)) if members else [], rtol=1e-7)
        assert rel.indptr[-1] - rel.indptr[-2] == 0
        for part, rows_of_part in (("train", train), ("test", test)):
            assert got[part][side][1].tolist() == [rows[t[k]] for t in rows_of_part]
    assert sorted(user_rows) == sorted({t[0] for t in train + test} | {f"u{u}" for u in range(28)})


def test_train_reads_the_relations_as_they_are(run, tmp_path, rng):
    """fmcli train -relation BASE.users,BASE.items on convert's output; predict with them gives -out."""
    _, _, tr, te, users = ratings_tables(tmp_path, rng, n_train=300)
    base = tmp_path / "rel"
    trl, tel, meta, model = (tmp_path / n for n in ("tr.libfm", "te.libfm", "g", "m.fm"))
    code, _, err = run("convert", "-in", tr, "-in", te, "-out", trl, "-out", tel, "--target", "2",
                       "--categorical", "0,1", "--join", f"{users}:0=0:sep=|:name=user", "--user", "0",
                       "--item", "1", "--relations", base, "-meta", meta)
    assert code == 0, err
    rels = f"{base}.users,{base}.items"
    code, _, err = run("train", "-task", "r", "-train", trl, "-test", tel, "-method", "mcmc", "-dim", "1,1,2",
                       "-iter", "5", "-meta", meta, "-relation", rels, "-out", tmp_path / "p1", "-save_model", model,
                       "--no-cache", "-seed", "1")
    assert code == 0, err
    assert "Loading relation" in err and "Test=" in err
    code, _, err = run("predict", "-model", model, "-test", tel, "-relation", rels, "-out", tmp_path / "p2")
    assert code == 0, err
    assert (tmp_path / "p1").read_text() == (tmp_path / "p2").read_text()


def test_join_on_a_dropped_column_and_the_side_encoding_is_recorded(run, tmp_path):
    """The key column may be dropped from the features; a side table read with --encoding is read
    the same way again through the mapping."""
    ratings = write(tmp_path, "r.csv", "user,item,rating\nu1,i1,5\nu2,i1,3\n")
    users = write(tmp_path, "users.txt", "id|city\nu1|Köln\nu2|Zürich\n".encode("latin-1"))
    mapping = tmp_path / "m.json"
    code, stdout, err = run("convert", "-in", ratings, "-out", "-", "--target", "rating", "--drop", "user",
                            "--categorical", "item", "--encoding", "latin-1",
                            "--join", f"{users}:id=user:sep=|:name=u", "--mapping", mapping)
    assert code == 0, err
    assert stdout == "5 0:1 1:1\n3 0:1 2:1\n"
    assert json.loads(mapping.read_text())["joins"][0]["encoding"] == "iso8859-1"
    new = write(tmp_path, "n.csv", "user,item\nu2,i1\n")
    code, stdout, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target")
    assert code == 0 and stdout == "0:1 2:1\n", err


def test_new_rows_get_their_relation_rows_from_the_mapping(run, tmp_path, rng):
    """--use-mapping --relations BASE writes BASE.*.test for new rows: predict -relation on them
    gives the predictions of the same pairs in the original conversion; unknown users link to
    the empty last row."""
    train, test, tr, te, users = ratings_tables(tmp_path, rng, n_train=300)
    base, mapping, model = tmp_path / "rel", tmp_path / "m.json", tmp_path / "m.fm"
    trl, tel = tmp_path / "tr.libfm", tmp_path / "te.libfm"
    code, _, err = run("convert", "-in", tr, "-in", te, "-out", trl, "-out", tel, "--target", "2",
                       "--categorical", "0,1", "--user", "0", "--item", "1", "--relations", base, "--mapping", mapping)
    assert code == 0, err
    rels = f"{base}.users,{base}.items"
    code, _, err = run("train", "-task", "r", "-train", trl, "-test", tel, "-method", "als", "-dim", "1,1,2",
                       "-iter", "3", "-relation", rels, "-out", tmp_path / "p1", "-save_model", model, "--no-cache")
    assert code == 0, err
    new = write(tmp_path, "new.tsv", "".join(f"{u}\t{i}\n" for u, i, _ in test) + "nobody\ti0\n")
    newl = tmp_path / "new.libfm"
    code, _, err = run("convert", "-in", new, "-out", newl, "--use-mapping", mapping, "--no-target",
                       "--relations", base)
    assert code == 0, err
    n_users = len(json.loads(mapping.read_text())["entities"]["user"]["relation"]["rows"])
    assert (tmp_path / "rel.users.test").read_text().splitlines()[-1] == str(n_users)
    code, pred, err = run("predict", "-model", model, "-test", newl, "-relation", rels, "-out", "-")
    assert code == 0, err
    assert pred.splitlines()[:-1] == (tmp_path / "p1").read_text().splitlines()
    code, _, err = run("convert", "-in", new, "-out", "-", "--use-mapping", mapping, "--no-target",
                       "--relations", tmp_path / "other")
    assert code == 2 and "the mapping's relations are" in err

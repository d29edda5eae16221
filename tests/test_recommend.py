"""fmcli recommend: ranking metrics, the top-N engine and the command."""

import json
import math
import os

import numpy as np
import pytest

from fmcli import ranking


# ---- ranking metrics against brute-force references ---------------------------------------------

def reference_topk(ranked, relevant, k):
    """The metrics of fmcli.ranking's docstring, written out with Python sets."""
    sums, users = {name: 0.0 for name in ranking.TOPK_METRICS}, 0
    hits = cap = 0
    for items, rel in zip(ranked, relevant):
        if not rel:
            continue
        users += 1
        top = [i for i in items[:k] if i >= 0]
        hit_ranks = [r for r, i in enumerate(top) if i in rel]
        sums["precision"] += len(hit_ranks) / k
        sums["recall"] += len(hit_ranks) / len(rel)
        sums["hit_rate"] += bool(hit_ranks)
        sums["ndcg"] += sum(1 / math.log2(r + 2) for r in hit_ranks) / \
            sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
        sums["map"] += sum((h + 1) / (r + 1) for h, r in enumerate(hit_ranks)) / min(k, len(rel))
        hits += len(hit_ranks)
        cap += min(k, len(rel))
    out = {name: v / users for name, v in sums.items()}
    out["capped_precision"] = hits / cap     # a ratio of sums, as the implicit library's precision
    return out, users


def reference_auc(scores, candidate, relevant):
    out = []
    for s, c, r in zip(scores, candidate, relevant):
        pos = [s[i] for i in range(len(s)) if c[i] and r[i]]
        neg = [s[i] for i in range(len(s)) if c[i] and not r[i]]
        if not pos or not neg:
            out.append(np.nan)
            continue
        out.append(sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg)))
    return np.array(out)


def csr_of_sets(sets):
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    items = np.array([i for s in sets for i in sorted(s)], np.int64)
    return indptr, items


@pytest.mark.parametrize("seed", range(8))
def test_topk_metrics_match_reference(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 12, 15, int(rng.integers(1, 8))
    ranked = np.full((n_users, k + 2), -1, np.int64)
    relevant = []
    for u in range(n_users):
        n = int(rng.integers(0, k + 3))   # some users have fewer than k candidates
        ranked[u, :n] = rng.choice(n_items, n, replace=False)
        relevant.append(set(rng.choice(n_items, int(rng.integers(0, 6)), replace=False).tolist()))
    relevant[0] = set()                   # a user without relevant items is not counted
    got = ranking.topk_metrics(ranked, *csr_of_sets(relevant), k)
    want, users = reference_topk(ranked.tolist(), relevant, k)
    assert got["users"] == users
    for name in ranking.TOPK_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-15), name


def test_topk_metrics_perfect_and_empty():
    ranked = np.array([[3, 1, -1]])
    got = ranking.topk_metrics(ranked, np.array([0, 2]), np.array([1, 3]), 2)
    assert got == {"precision": 1.0, "recall": 1.0, "ndcg": 1.0, "map": 1.0, "hit_rate": 1.0,
                   "capped_precision": 1.0, "users": 1}
    got = ranking.topk_metrics(ranked, np.array([0, 1]), np.array([7]), 2)
    assert got["ndcg"] == got["map"] == got["hit_rate"] == got["capped_precision"] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_pair_counting(seed):
    rng = np.random.default_rng(100 + seed)
    n_users, n_items = 9, 13
    scores = rng.integers(0, 5, (n_users, n_items)).astype(np.float64)   # many ties
    candidate = rng.random((n_users, n_items)) < 0.8
    relevant = rng.random((n_users, n_items)) < 0.3
    relevant[1] = False                                                 # no relevant: NaN
    got = ranking.auc_rows(scores, candidate, relevant)
    want = reference_auc(scores, candidate, relevant)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert np.isnan(got[1])


# ---- the engine: every score is predict's -------------------------------------------------------

from fmcli import recommend
from fmcli.model import FMModel


def random_model(rng, n_features, k, samples=0, link="identity", y=(1.0, 5.0), relations=None):
    """A model with random parameters (a trained one's scale), optionally with stored samples
    (float32, as model files keep them)."""
    m = FMModel(float(rng.normal(3, 0.5)), rng.normal(0, 0.3, n_features), rng.normal(0, 0.4, (n_features, k)),
                task="r" if link == "identity" else "c", link=link,
                y_min=y[0] if link == "identity" else -1.0, y_max=y[1] if link == "identity" else 1.0)
    if samples:
        m.samples = (rng.normal(3, 0.5, samples), rng.normal(0, 0.3, (samples, n_features)).astype(np.float32),
                     rng.normal(0, 0.4, (samples, n_features, k)).astype(np.float32))
    if relations:
        m.meta["relations"] = relations
    return m


def write_mapping_v1(path, n_users, n_items):
    users = {f"u{i}": i for i in range(n_users)}
    items = {f"i{i}": n_users + i for i in range(n_items)}
    m = {"format": "fmcli-convert-mapping", "version": 1, "fmcli_version": "0.1.0", "separator": ",",
         "header": True, "n_features": n_users + n_items,
         "columns": [{"name": "user", "role": "categorical", "group": 0, "ids": users},
                     {"name": "item", "role": "categorical", "group": 1, "ids": items},
                     {"name": "rating", "role": "target"}]}
    path.write_text(json.dumps(m))
    return m


def write_mapping_v2(tmp_path, rng, n_users, n_items, n_side, relation_rows=None):
    """A version-2 mapping: user one-hots, item one-hots, then n_side side features shared at
    random by users and items (values as convert's normalised sets); one user and one item
    from a side table only (no one-hot). relation_rows: a relation keyed by users."""
    n_main = n_users + n_items + n_side
    side = lambda: sorted((n_users + n_items + int(j), float(np.float32(1 / np.sqrt(c))))
                          for c in [int(rng.integers(1, 4))] for j in rng.choice(n_side, c, replace=False))
    ufeat = {f"u{i}": [[i, 1.0]] + [list(p) for p in side()] for i in range(n_users)}
    ufeat["cold_user"] = [list(p) for p in side()]
    ifeat = {f"i{i}": [[n_users + i, 1.0]] + [list(p) for p in side()] for i in range(n_items)}
    ifeat["cold_item"] = [list(p) for p in side()]
    user = {"column": "user", "features": ufeat}
    if relation_rows is not None:
        user["relation"] = {"name": str(tmp_path / "rel"), "rows": relation_rows}
    m = {"format": "fmcli-convert-mapping", "version": 2, "fmcli_version": "0.1.0", "separator": ",",
         "header": True, "n_features": n_main,
         "columns": [{"name": "user", "role": "categorical", "group": 0,
                      "ids": {f"u{i}": i for i in range(n_users)}},
                     {"name": "item", "role": "categorical", "group": 1,
                      "ids": {f"i{i}": n_users + i for i in range(n_items)}},
                     {"name": "rating", "role": "target"}],
         "entities": {"user": user, "item": {"column": "item", "features": ifeat}}}
    (tmp_path / "map.json").write_text(json.dumps(m))
    return m


def pair_rows(m, users, items):
    """The libFM rows convert builds for pairs: the user's features, then the item's."""
    ent = m.get("entities")
    indptr, indices, data = [0], [], []
    for u in users:
        for i in items:
            if ent:
                pairs = ent["user"]["features"][u] + ent["item"]["features"][i]
            else:
                pairs = [[m["columns"][0]["ids"][u], 1.0], [m["columns"][1]["ids"][i], 1.0]]
            indices += [p[0] for p in pairs]
            data += [p[1] for p in pairs]
            indptr.append(len(indices))
    return np.array(indptr, np.int64), np.array(indices, np.int32), np.array(data, np.float32)


def engine_scores(model, mapping):
    scorer = recommend.Scorer.of_model(model, mapping.item.rows(np.arange(mapping.item.n_rows)))
    params = recommend.parameter_sets(model)
    terms = recommend.side_terms(model, *mapping.user.rows(np.arange(mapping.user.n_rows)), params)
    return scorer, terms


CASES = {"plain": {}, "samples": {"samples": 7}, "logistic": {"link": "logistic"},
         "probit samples": {"link": "probit", "samples": 5}, "unclipped": {"y": (-np.inf, np.inf)}}


@pytest.mark.parametrize("case", CASES)
def test_scores_equal_predict_v1(case, tmp_path):
    rng = np.random.default_rng(7)
    m = write_mapping_v1(tmp_path / "map.json", 13, 17)
    model = random_model(rng, 30, 5, **CASES[case])
    mapping = recommend.load_sides(tmp_path / "map.json", model, "user", "item")
    scorer, terms = engine_scores(model, mapping)
    got = scorer.score_all(terms).ravel()
    want = model.predict(*pair_rows(m, mapping.user.ids, mapping.item.ids))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
    assert (got == want).mean() > 0.3   # most are the same bits; the rest differ in the last bits


@pytest.mark.parametrize("case", CASES)
def test_scores_equal_predict_v2_side_features_and_relation(case, tmp_path):
    rng = np.random.default_rng(11)
    n_users, n_items, n_side = 9, 12, 6
    # the relation: 4 rows over 5 relation features, user j's row j % 4; cold_user's row 3
    rel_rows = [" ".join(f"{j}:{v:.6g}" for j, v in zip(rng.choice(5, 2, replace=False), rng.random(2)))
                for _ in range(4)]
    (tmp_path / "rel.x").write_text("".join(f"0 {r}\n" for r in rel_rows))
    rows = {f"u{i}": i % 4 for i in range(n_users)} | {"cold_user": 3}
    m = write_mapping_v2(tmp_path, rng, n_users, n_items, n_side, rows)
    n_main = n_users + n_items + n_side
    rel_meta = [{"name": str(tmp_path / "rel"), "offset": n_main, "n_features": 5}]
    model = random_model(rng, n_main + 5, 4, relations=rel_meta, **CASES[case])
    mapping = recommend.load_sides(tmp_path / "map.json", model)
    assert mapping.user.ids[-1] == "cold_user" and mapping.item.ids[-1] == "cold_item"
    scorer, terms = engine_scores(model, mapping)
    got = scorer.score_all(terms).ravel()

    from fmcli.io.relation import read_design

    rel = read_design(str(tmp_path / "rel"))
    rel.offset = n_main
    links = np.repeat([rows[u] for u in mapping.user.ids], mapping.item.n_rows)
    want = model.predict(*pair_rows(m, mapping.user.ids, mapping.item.ids), relations=((rel, links),))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


# ---- top-N: a partial sort that equals the full sort -------------------------------------------

def brute_top_n(scores, excluded, n):
    out = []
    for u, row in enumerate(scores):
        order = sorted((i for i in range(len(row)) if i not in excluded[u]), key=lambda i: (-row[i], i))
        out.append(order[:n])
    return out


@pytest.mark.parametrize("n", [1, 3, 10, 40])
def test_top_n_equals_full_sort_and_never_returns_excluded(n, tmp_path):
    rng = np.random.default_rng(n)
    write_mapping_v1(tmp_path / "map.json", 70, 33)   # 70 users: more than one parallel task
    model = random_model(rng, 103, 3, y=(1.0, 3.2))   # a low y_max: many ties at 3.2
    mapping = recommend.load_sides(tmp_path / "map.json", model, "user", "item")
    scorer, terms = engine_scores(model, mapping)
    excluded = [set(rng.choice(33, int(rng.integers(0, 33)), replace=False).tolist()) for _ in range(70)]
    excluded[5] = set(range(33))                         # nothing left to recommend
    ptr, items = recommend._csr(np.repeat(np.arange(70), [len(e) for e in excluded]),
                                np.array([i for e in excluded for i in sorted(e)], np.int64), 70)
    got, got_scores = scorer.top_n(terms, ptr, items, n)
    full = scorer.score_all(terms)
    want = brute_top_n(full, excluded, n)
    assert (full == 3.2).sum() > 50
    for u in range(70):
        listed = [i for i in got[u].tolist() if i >= 0]
        assert listed == want[u]
        assert not set(listed) & excluded[u]
        np.testing.assert_array_equal(got_scores[u, :len(listed)], full[u, listed])
    assert (got[5] == -1).all()


def test_results_do_not_depend_on_the_thread_count(tmp_path):
    import numba

    rng = np.random.default_rng(3)
    write_mapping_v1(tmp_path / "map.json", 150, 60)
    model = random_model(rng, 210, 6, samples=4)
    mapping = recommend.load_sides(tmp_path / "map.json", model, "user", "item")
    scorer, terms = engine_scores(model, mapping)
    ptr, items = recommend._csr(rng.integers(0, 150, 500), rng.integers(0, 60, 500), 150)
    saved = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, 2, saved}):
            numba.set_num_threads(threads)
            results.append(scorer.top_n(terms, ptr, items, 7) + (scorer.score_all(terms),))
    finally:
        numba.set_num_threads(saved)
    for r in results[1:]:
        for a, b in zip(results[0], r):
            np.testing.assert_array_equal(a, b)


# ---- the command ------------------------------------------------------------------------------

@pytest.fixture
def rated(tmp_path, run):
    """Generated ratings (user,item,rating CSV with a header: 30 users, 20 items), a train/test
    split, their conversion with a mapping and an MCMC model with its samples."""
    rng = np.random.default_rng(5)
    pairs = [(u, i) for u in range(30) for i in range(20) if rng.random() < 0.35]
    rows = [f"u{u},i{i},{int(np.clip(round(3 + np.sin(u) * np.cos(i) * 2 + rng.normal(0, 0.5)), 1, 5))}"
            for u, i in pairs]
    rng.shuffle(rows)
    train, test = rows[:len(rows) * 4 // 5], rows[len(rows) * 4 // 5:]
    (tmp_path / "train.csv").write_text("user,item,rating\n" + "\n".join(train) + "\n")
    (tmp_path / "test.csv").write_text("user,item,rating\n" + "\n".join(test) + "\n")
    p = lambda name: str(tmp_path / name)
    code, _, err = run("convert", "-in", p("train.csv"), "-in", p("test.csv"), "-out", p("train.libfm"),
                       "-out", p("test.libfm"), "--target", "rating", "--categorical", "user,item",
                       "-meta", p("meta"), "--mapping", p("map.json"), "-q")
    assert code == 0, err
    code, _, err = run("train", "-task", "r", "-train", p("train.libfm"), "-test", p("test.libfm"),
                       "-method", "mcmc", "-dim", "1,1,4", "-iter", "12", "-meta", p("meta"),
                       "-save_model", p("m.fm"), "-q")
    assert code == 0, err
    return p


def read_lines(path):
    return [line.split("\t") for line in open(path).read().splitlines()]


def test_cli_scores_equal_fmcli_predict(rated, run):
    p = rated
    code, _, err = run("recommend", "-model", p("m.fm"), "--mapping", p("map.json"), "--user", "user",
                       "--item", "item", "-n", "20", "-out", p("all.tsv"))
    assert code == 0, err
    lines = read_lines(p("all.tsv"))
    assert len(lines) == 30 * 20 and all(len(l) == 4 for l in lines)
    with open(p("pairs.csv"), "w") as f:
        f.write("user,item\n" + "".join(f"{u},{i}\n" for u, i, _, _ in lines))
    code, _, err = run("convert", "-in", p("pairs.csv"), "-out", p("pairs.libfm"), "--use-mapping", p("map.json"),
                       "--no-target", "-q")
    assert code == 0, err
    code, out, err = run("predict", "-model", p("m.fm"), "-test", p("pairs.libfm"), "-out", "-", "-q")
    assert code == 0, err
    assert out.split() == [s for _, _, s, _ in lines]
    for u in range(30):   # ranks 1..20 by descending score
        block = lines[u * 20:(u + 1) * 20]
        assert [int(r) for *_, r in block] == list(range(1, 21))
        assert [float(s) for _, _, s, _ in block] == sorted((float(s) for _, _, s, _ in block), reverse=True)


def test_cli_users_file_exclusions_and_unknown_users(rated, run):
    p = rated
    with open(p("users.csv"), "w") as f:
        f.write("user\nu3\nnobody\nu7\nu3\n")
    code, out, err = run("recommend", "-model", p("m.fm"), "-mapping", p("map.json"), "-user", "user",
                         "-item", "item", "-users", p("users.csv"), "-exclude", p("train.csv"), "-n", "5")
    assert code == 0, err
    assert "1 unknown user(s) skipped" in err
    lines = [l.split("\t") for l in out.splitlines()]
    assert [l[0] for l in lines] == ["u3"] * 5 + ["u7"] * 5
    seen = {tuple(r.split(",")[:2]) for r in open(p("train.csv")).read().splitlines()[1:]}
    assert not any((u, i) in seen for u, i, _, _ in lines)
    # stdin works as a users file; -q silences the count
    code, out2, err = run("recommend", "--model", p("m.fm"), "--mapping", p("map.json"), "--user", "user",
                          "--item", "item", "--users", "-", "--exclude", p("train.csv"), "--top", "5", "-q",
                          stdin=b"user\nu3\nnobody\nu7\n")
    assert code == 0 and out2 == out and err == ""


def test_cli_evaluate_and_metrics_json(rated, run):
    p = rated
    code, out, err = run("recommend", "-model", p("m.fm"), "--mapping", p("map.json"), "--user", "user",
                         "--item", "item", "-exclude", p("train.csv"), "--evaluate", p("test.csv"),
                         "--min-rating", "4", "-k", "5", "--metrics-json", p("m.json"))
    assert code == 0, err
    names = [l.split("\t")[0] for l in out.splitlines()]
    assert names == ["precision@5", "recall@5", "ndcg@5", "map@5", "hit_rate@5", "capped_precision@5", "auc"]
    got = json.load(open(p("m.json")))
    assert got["k"] == 5 and got["users"] > 0
    for line in out.splitlines():
        name, value = line.split("\t")
        assert float(value) == pytest.approx(got[name], rel=1e-5) and 0 <= got[name] <= 1
    # a test file with unknown ids: a counted note, not an error
    with open(p("test2.csv"), "w") as f:
        f.write(open(p("test.csv")).read() + "ghost,i1,5\nu1,ghost,5\n")
    code, out, err = run("recommend", "-model", p("m.fm"), "--mapping", p("map.json"), "--user", "user",
                         "--item", "item", "-exclude", p("train.csv"), "--evaluate", p("test2.csv"), "-k", "5")
    assert code == 0, err
    assert "1 row(s) of unknown users and 1 of unknown (or non-candidate) items skipped" in err


def test_cli_similar_items(rated, run):
    p = rated
    code, out, err = run("recommend", "-model", p("m.fm"), "--mapping", p("map.json"), "--user", "user",
                         "--item", "item", "--similar", "i4", "-n", "6")
    assert code == 0, err
    lines = [l.split("\t") for l in out.splitlines()]
    assert len(lines) == 6 and all(l[0] == "i4" and l[1] != "i4" for l in lines)
    scores = [float(l[2]) for l in lines]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    code, _, err = run("recommend", "-model", p("m.fm"), "--mapping", p("map.json"), "--user", "user",
                       "--item", "item", "--similar", "nothing")
    assert code == 2 and "not an item of the mapping" in err


@pytest.mark.parametrize("args, message", [
    (["-n", "0"], "-n"),
    (["-k", "0", "--evaluate", "test.csv"], "-k"),
    (["--user", "rating", "--item", "item"], "not categorical"),
    (["--user", "user"], "--user COL --item COL"),
    (["--user", "user", "--item", "nope"], "no such column"),
    (["--user", "user", "--item", "item", "--min-rating", "4"], "--min-rating applies to --evaluate"),
    (["--user", "user", "--item", "item", "-users", "missing.csv"], "missing.csv"),
    (["--user", "user", "--item", "item", "-exclude", "bad.csv"], "bad.csv:3"),
    (["--user", "user", "--item", "item", "--mapping", "small.json"], "not the mapping"),
])
def test_cli_errors_exit_2_without_output(rated, run, args, message):
    p = rated
    m = json.load(open(p("map.json")))
    m["columns"][1]["ids"] = dict(list(m["columns"][1]["ids"].items())[:-3])   # a mapping of fewer items
    m["n_features"] -= 3
    with open(p("small.json"), "w") as f:
        json.dump(m, f)
    with open(p("bad.csv"), "w") as f:
        f.write("user,item,rating\nu1,i1,5\nu1,i2\n")
    args = [p(a) if a.endswith((".csv", ".json")) else a for a in args]
    if "--mapping" not in args:
        args += ["--mapping", p("map.json")]
    code, out, err = run("recommend", "-model", p("m.fm"), *args, "-out", p("out.tsv"))
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (os.path.exists(p("out.tsv")))



@pytest.mark.parametrize("sep", [",", "\t", " "])
def test_id_files_read_as_convert_reads_them(tmp_path, sep):
    """The compiled scan (ASCII without quotes) gives the fields and line numbers of convert's
    reader (used for quoted or non-ASCII text): comments, blank lines and CRLF skipped, fields
    stripped, an empty last field kept."""
    from fmcli.convert.table import Table, text_lines

    mapping = recommend.Mapping(None, None, sep, True, ["user", "item", "rating"], "rating")
    lines = ["user,item,rating", "# a comment", "u1, i2 ,5", "", "  ", "u3,i4,1", "u5,i6,"]
    if sep == " ":
        lines = [l.replace(",", "  ") for l in lines[:-1]]
    text = "\r\n".join(l.replace(",", sep) for l in lines) + "\r\n"
    results = []
    quoted = text.replace("u3", '"u3"') if sep != " " else text   # blank-separated: no quoting
    for variant in (text, quoted, "\ufeff" + text):   # the compiled scan, convert's csv, a BOM
        (tmp_path / "f.csv").write_bytes(variant.encode())
        cols, numbers, _ = recommend.read_id_rows(str(tmp_path / "f.csv"), mapping, ["item", "user", "rating"])
        results.append((cols, list(numbers)))
    table = Table("f", text_lines(text.encode(), "f", None), sep)
    want = [[r[p] for r in table.rows[1:]] for p in (1, 0, 2)]
    assert results[0] == results[1] == results[2] == (want, table.line_numbers[1:])
    assert results[0][0][0][:2] == ["i2", "i4"] and results[0][1][:2] == [3, 6]
    (tmp_path / "f.csv").write_text("user,item,rating\nu1,i2,5\n\nu3,i4\n".replace(",", sep))
    with pytest.raises(recommend.InputError, match="f.csv:4: 2 fields, expected 3"):
        recommend.read_id_rows(str(tmp_path / "f.csv"), mapping, ["user"])


def test_mappings_that_do_not_fit_the_model_are_refused(tmp_path):
    from fmcli.errors import FmcliError

    rng = np.random.default_rng(2)
    (tmp_path / "rel.x").write_text("0 0:1\n0 1:0.5\n")
    m = write_mapping_v2(tmp_path, rng, 4, 5, 3, {f"u{i}": i % 2 for i in range(4)})
    n_main = 12
    rel_meta = [{"name": str(tmp_path / "rel"), "offset": n_main, "n_features": 2}]
    path = tmp_path / "map.json"
    recommend.load_sides(path, random_model(rng, n_main + 2, 3, relations=rel_meta))   # fits

    def refused(model, match, edit=None):
        bad = json.loads(json.dumps(m))
        if edit:
            edit(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(FmcliError, match=match) as e:
            recommend.load_sides(tmp_path / "bad.json", model)
        assert e.value.exit_code == 2

    refused(random_model(rng, n_main, 3), "not trained with")                         # no relations
    refused(random_model(rng, n_main + 2, 3, relations=rel_meta), "do not give",
            lambda d: d["entities"]["user"].pop("relation"))
    refused(random_model(rng, n_main + 5, 3), "has 12 features but the model has 17",
            lambda d: d["entities"]["user"].pop("relation"))
    refused(random_model(rng, n_main + 2, 3, relations=rel_meta), "neither the user nor the item",
            lambda d: d.update(context_columns=["hour"]))
    refused(random_model(rng, n_main + 2, 3, relations=rel_meta), "bad .feature id, value. pair",
            lambda d: d["entities"]["item"]["features"]["i1"].append([99, 1.0]))
    refused(random_model(rng, n_main + 2, 3, relations=rel_meta), "not a row of",
            lambda d: d["entities"]["user"]["relation"]["rows"].update(u1=7))


def test_cli_version2_mapping_with_side_features_and_relation(tmp_path, run):
    """Through the command: a version-2 mapping (no --user/--item), a cold-start user scored
    from its side features, the relation rows joined; scores are predict's."""
    from fmcli.io.modelfile import load_model, save_model
    from fmcli.io.relation import read_design

    rng = np.random.default_rng(21)
    (tmp_path / "rel.x").write_text("0 0:1 2:0.5\n0 1:0.7\n0 3:1\n")
    rows = {f"u{i}": i % 3 for i in range(6)} | {"cold_user": 2}
    m = write_mapping_v2(tmp_path, rng, 6, 8, 4, rows)
    n_main = 18
    model = random_model(rng, n_main + 4, 3, relations=[{"name": str(tmp_path / "rel"), "offset": n_main,
                                                          "n_features": 4}])
    model.meta["method"] = "als"
    save_model(str(tmp_path / "m.fm"), model)
    model = load_model(str(tmp_path / "m.fm"))
    (tmp_path / "users.csv").write_text("user\ncold_user\nu2\n")
    code, out, err = run("recommend", "-model", tmp_path / "m.fm", "--mapping", tmp_path / "map.json",
                         "-users", tmp_path / "users.csv", "-n", "9")
    assert code == 0, err
    lines = [l.split("\t") for l in out.splitlines()]
    assert [l[0] for l in lines] == ["cold_user"] * 9 + ["u2"] * 9
    assert {l[1] for l in lines[:9]} == set(m["entities"]["item"]["features"])
    rel = read_design(str(tmp_path / "rel"))
    rel.offset = n_main
    users, items = [l[0] for l in lines], [l[1] for l in lines]
    indptr, indices, data = [0], [], []
    for u, i in zip(users, items):
        pairs = m["entities"]["user"]["features"][u] + m["entities"]["item"]["features"][i]
        indices += [p[0] for p in pairs]
        data += [p[1] for p in pairs]
        indptr.append(len(indices))
    want = model.predict(np.array(indptr, np.int64), np.array(indices, np.int32), np.array(data, np.float32),
                         relations=((rel, np.array([rows[u] for u in users])),))
    assert [l[2] for l in lines] == ["%.6g" % v for v in want]


def test_cli_refuses_a_higher_order_model(rated, run):
    p = rated
    code, _, err = run("train", "-task", "r", "-train", p("train.libfm"), "-method", "als", "-dim", "1,1,4,2",
                       "-iter", "2", "-save_model", p("m3.fm"), "-q")
    assert code == 0, err
    code, out, err = run("recommend", "-model", p("m3.fm"), "--mapping", p("map.json"), "--user", "user",
                         "--item", "item", "-out", p("out3.tsv"))
    assert code == 2 and "orders above 2" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(p("out3.tsv"))


@pytest.mark.parametrize("samples", [0, 4])
@pytest.mark.parametrize("at_least", [None, 2, 4])
def test_ordinal_scores_are_the_expected_class_or_a_class_probability(samples, at_least, tmp_path):
    from fmcli.ordinal import model_prediction, ordinal_meta

    rng = np.random.default_rng(11)
    m = write_mapping_v1(tmp_path / "map.json", 9, 12)
    model = random_model(rng, 21, 4, samples=samples, link="probit")
    model.task = "o"
    classes = [1, 2, 4, 5]   # a class may be missing (3): the classes are the train targets
    cuts = lambda: np.sort(rng.normal(3, 1, len(classes) - 1))   # noqa: E731
    model.meta["ordinal"] = ordinal_meta(classes, cuts(), [cuts() for _ in range(samples)] if samples else None)
    mapping = recommend.load_sides(tmp_path / "map.json", model, "user", "item")
    scorer = recommend.Scorer.of_model(model, mapping.item.rows(np.arange(mapping.item.n_rows)), at_least)
    terms = recommend.side_terms(model, *mapping.user.rows(np.arange(mapping.user.n_rows)),
                                 recommend.parameter_sets(model))
    got = scorer.score_all(terms).ravel()
    pred = model_prediction(model, *pair_rows(m, mapping.user.ids, mapping.item.ids))
    want = pred.expected if at_least is None else pred.proba[:, np.asarray(classes) >= at_least].sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert np.ptp(want) > 0.1     # the scores differ enough for the check to mean something


def test_cli_ranks_an_ordinal_model_and_checks_at_least(rated, run):
    p = rated
    code, _, err = run("train", "-task", "o", "-train", p("train.libfm"), "-method", "mcmc", "-dim", "1,1,4",
                       "-iter", "10", "-meta", p("meta"), "-save_model", p("o.fm"), "-q")
    assert code == 0, err
    for extra in ([], ["--at-least", "4"]):
        code, _, err = run("recommend", "-model", p("o.fm"), "--mapping", p("map.json"), "--user", "user",
                           "--item", "item", "-n", "20", "-out", p("o.tsv"), *extra)
        assert code == 0, err
        lines = read_lines(p("o.tsv"))
        with open(p("pairs.csv"), "w") as f:
            f.write("user,item\n" + "".join(f"{u},{i}\n" for u, i, _, _ in lines))
        code, _, err = run("convert", "-in", p("pairs.csv"), "-out", p("pairs.libfm"), "--use-mapping",
                           p("map.json"), "--no-target", "-q")
        assert code == 0, err
        code, out, err = run("predict", "-model", p("o.fm"), "-test", p("pairs.libfm"), "-out", "-",
                             "--out-proba", p("proba.tsv"), "-q")
        assert code == 0, err
        if extra:
            proba = np.loadtxt(p("proba.tsv"))
            classes = sorted({int(float(r.split(",")[2])) for r in open(p("train.csv")).read().split()[1:]})
            want = proba[:, np.asarray(classes) >= 4].sum(axis=1)
        else:
            want = np.array(out.split(), float)
        np.testing.assert_allclose([float(s) for _, _, s, _ in lines], want, rtol=1e-5, atol=1e-6)
    for args, message in ((["-model", p("m.fm"), "--at-least", "4"], "not -task o"),
                          (["-model", p("o.fm"), "--at-least", "1"], "above the lowest"),
                          (["-model", p("o.fm"), "--at-least", "3.5"], "above the lowest")):
        code, _, err = run("recommend", *args, "--mapping", p("map.json"), "--user", "user", "--item", "item",
                           "-out", p("bad.tsv"))
        assert code == 2 and message in err and not os.path.exists(p("bad.tsv")), err

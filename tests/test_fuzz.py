"""Random and mutated bytes through the command line: the reader, the model loader, convert.

Whatever the bytes, fmcli either succeeds (exit 0, outputs written) or prints exactly
one line `fmcli: error: ...` with exit code 2 and writes no output file. Never a
traceback, never an "internal error" (exit 1). bench/fuzz.py runs the same checks with a
much larger budget.
"""

import gzip
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_contract import run_cli, violation

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

GOOD_LIBFM = (b"5 0:1 10:1\n3 1:1 11:1 20:0.5\n# comment\n4 2:1 10:1 # trailing\n\n"
              b"1 0:1 12:1\r\n2 3:1e-1 11:1\n4 1:1 12:1")
GOOD_CSV = b"user,item,rating,ts\nu1,i1,5,100\nu2,i1,3,101\nu1,i2,4,102\nu3,i3,1,103\n"
TOKENS = [b":", b" ", b"\t", b"\n", b"\r", b"#", b"-", b"+", b"e", b".", b"nan", b"inf", b"1e999",
          b"99999999999", b"-1:1", b"\xff", b"\xef\xbb\xbf", b"\x00", b",", b'"', b"0:0", b"1e-999"]


def check(args, outputs, stdin=None):
    """Run and check the contract; returns the exit code."""
    for p in outputs:
        if os.path.exists(p):
            os.unlink(p)
    code, stdout, err = run_cli(args, stdin)
    folder = os.path.dirname(outputs[0]) if outputs else os.getcwd()
    problem = violation(code, stdout, err, outputs, folder)
    assert problem is None, (problem, code, err)
    return code


def mutate(data, ops):
    """Apply (kind, position, token) edits to `data`."""
    b = bytearray(data)
    for kind, pos, tok in ops:
        p = pos % (len(b) + 1)
        if kind == 0:                  # insert a token
            b[p:p] = tok
        elif kind == 1 and b:          # delete a few bytes
            del b[p:p + 1 + len(tok) % 4]
        elif kind == 2 and b:          # overwrite with a token
            b[p:p + len(tok)] = tok
        elif kind == 3:                # truncate
            del b[p:]
        elif kind == 4 and b:          # flip a bit
            b[p % len(b)] ^= 1 << (len(tok) % 8)
        elif kind == 5:                # repeat a slice
            b[p:p] = b[p:p + 1 + 7 * len(tok)]
    return bytes(b)


edits = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**6), st.sampled_from(TOKENS)),
                 min_size=1, max_size=6)
raw_bytes = st.one_of(st.binary(max_size=300),
                      st.lists(st.sampled_from(TOKENS + [b"1", b"0", b"3:1", b"5"]), max_size=40).map(b"".join))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small saved model (text) and the same in .npz."""
    folder = tmp_path_factory.mktemp("model")
    data = folder / "d.libfm"
    data.write_bytes(GOOD_LIBFM)
    paths = []
    for name in ("m.fm", "m.npz"):
        p = folder / name
        code, _, err = run_cli(["train", "-task", "r", "-train", data, "-method", "mcmc", "-dim", "1,1,2",
                                "-iter", "2", "-save_model", p, "-q"])
        assert code == 0, err
        paths.append(p)
    return paths


@FUZZ
@given(data=st.one_of(raw_bytes, edits.map(lambda ops: mutate(GOOD_LIBFM, ops))))
def test_train_on_random_bytes(tmp_path, data):
    src = tmp_path / "train.libfm"
    src.write_bytes(data)
    out, saved = str(tmp_path / "pred"), str(tmp_path / "m.fm")
    code = check(["train", "-task", "r", "-train", src, "-test", src, "-method", "sgd", "-dim", "1,1,2",
                  "-iter", "1", "-out", out, "-save_model", saved, "-q"], [out, saved])
    if code == 0:
        assert os.path.exists(out) and os.path.exists(saved)


@FUZZ
@given(data=st.one_of(raw_bytes, edits.map(lambda ops: mutate(GOOD_LIBFM, ops))), gz=st.booleans(),
       stdin=st.booleans())
def test_predict_on_random_bytes(tmp_path, model, data, gz, stdin):
    if gz:
        data = gzip.compress(data, mtime=0)
    src = tmp_path / "test.libfm"
    src.write_bytes(data)
    out = str(tmp_path / "pred")
    code = check(["predict", "-model", model[0], "-test", "-" if stdin else src, "-out", out],
                 [out], stdin=data if stdin else None)
    if code == 0:
        assert os.path.exists(out)


@FUZZ
@given(which=st.integers(0, 1), ops=edits, raw=st.one_of(st.none(), st.binary(max_size=200)))
def test_model_loader_on_mutated_files(tmp_path, model, which, ops, raw):
    data = raw if raw is not None else mutate(model[which].read_bytes(), ops)
    bad = tmp_path / ("bad.npz" if which else "bad.fm")
    bad.write_bytes(data)
    test = tmp_path / "t.libfm"
    test.write_bytes(GOOD_LIBFM)
    out = str(tmp_path / "pred")
    check(["predict", "-model", bad, "-test", test, "-out", out], [out])
    saved = str(tmp_path / "warm.fm")
    check(["train", "-task", "r", "-train", test, "-load_model", bad, "-method", "sgd", "-iter", "1",
           "-save_model", saved, "-q"], [saved])


@FUZZ
@given(data=st.one_of(raw_bytes, edits.map(lambda ops: mutate(GOOD_CSV, ops))),
       sep=st.sampled_from(["auto", ",", "space"]))
def test_convert_on_random_bytes(tmp_path, data, sep):
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    outs = [str(tmp_path / n) for n in ("o.libfm", "g.meta", "m.json")]
    code = check(["convert", "-in", src, "-out", outs[0], "--sep", sep, "--target", "2", "-meta", outs[1],
                  "--mapping", outs[2], "-q"], outs)
    if code == 0:
        # what convert writes, the reader accepts (exit 1: SGD diverged on what it read, e.g. a
        # numeric column of 100s at the default -learn_rate; check() holds it to the contract)
        model_out = str(tmp_path / "p.fm")
        assert check(["train", "-task", "r", "-train", outs[0], "-method", "sgd", "-iter", "1",
                      "-meta", outs[1], "-save_model", model_out, "-q"], [model_out]) in (0, 1)


@FUZZ
@given(ops=edits)
def test_mapping_loader_on_mutated_files(tmp_path, ops):
    src = tmp_path / "in.csv"
    src.write_bytes(GOOD_CSV)
    mapping = tmp_path / "m.json"
    assert run_cli(["convert", "-in", src, "-out", tmp_path / "o", "--target", "rating",
                    "--mapping", mapping, "-q"])[0] == 0
    mapping.write_bytes(mutate(mapping.read_bytes(), ops))
    out = str(tmp_path / "new.libfm")
    check(["convert", "-in", src, "-out", out, "--use-mapping", mapping, "-q"], [out])


# ---- the edge cases named in the issue, through the CLI -----------------------------------------

@pytest.fixture
def sgd_model(tmp_path):
    data = tmp_path / "d.libfm"
    data.write_bytes(GOOD_LIBFM)
    m = tmp_path / "m.fm"
    assert run_cli(["train", "-task", "r", "-train", data, "-method", "sgd", "-dim", "1,1,2", "-iter", "2",
                    "-save_model", m, "-q"])[0] == 0
    return m


@pytest.mark.parametrize("content, message", [
    (b"", "no data rows"),
    (b"# only\n# comments\n\n   \n", "no data rows"),
    (b"1 2:1\n1 \xff\xfe:1\n", ":2: bad feature id"),
    (b"1 2:1\n\xe9t\xe9 2:1\n", ":2: bad target"),
])
def test_refused_clearly(tmp_path, sgd_model, content, message):
    src = tmp_path / "x.libfm"
    src.write_bytes(content)
    out = str(tmp_path / "pred")
    for args in (["predict", "-model", sgd_model, "-test", src, "-out", out],
                 ["train", "-task", "r", "-train", src, "-method", "sgd", "-out", out, "-test", src]):
        code, _, err = run_cli(args)
        assert code == 2 and err.startswith(f"fmcli: error: {src}") and message in err, err
        assert not os.path.exists(out)


def test_last_line_without_newline_and_non_utf8_comment(tmp_path, sgd_model):
    src = tmp_path / "x.libfm"
    src.write_bytes(b"# caf\xe9 latin-1 comment\n3 0:1 10:1\n4 1:1")
    code, stdout, err = run_cli(["predict", "-model", sgd_model, "-test", src, "-out", "-"])
    assert code == 0, err
    assert len(stdout.splitlines()) == 2


def test_very_long_line_and_a_million_features_in_one_row(tmp_path, sgd_model):
    n = 1_000_000
    ids = np.arange(n)
    row = b"1 " + " ".join(f"{i}:1" for i in ids.tolist()).encode() + b"\n"
    src = tmp_path / "wide.libfm"
    src.write_bytes(b"2 0:1\n" + row + b"3 1:1\n")
    # predict streams in blocks: the 12 MB line grows the block; ids beyond the model add nothing
    code, stdout, err = run_cli(["predict", "-model", sgd_model, "-test", src, "-out", "-"])
    assert code == 0, err
    assert len(stdout.split()) == 3
    # train sees all million features
    code, _, err = run_cli(["train", "-task", "r", "-train", src, "-method", "sgd", "-dim", "1,1,1", "-iter", "1"])
    assert code == 0, err
    assert f"num_features={n}" in err


def test_convert_edge_cases(tmp_path):
    src = tmp_path / "in.tsv"
    src.write_bytes(b"\xef\xbb\xbfu1\ti1\t5\r\n# comment\n\nu2\ti1\t3")   # BOM, CRLF, no final newline
    code, stdout, err = run_cli(["convert", "-in", src, "-out", "-", "--target", "2"])
    assert code == 0, err
    assert stdout == "5 0:1 2:1\n3 1:1 2:1\n"
    long_value = "x" * 2_000_000
    src.write_text(f"{long_value}\ti1\t5\n")
    code, stdout, err = run_cli(["convert", "-in", src, "-out", "-", "--target", "2"])
    assert code == 0 and stdout == "5 0:1 1:1\n", err


# ---- the harness of bench/fuzz.py, a fixed-seed sample ------------------------------------------

def test_fuzz_cases_fixed_sample():
    """Every kind of case of tests/fuzz_cases.py (corrupted caches and binary files, models,
    -meta and relation files, options, outputs that are inputs, a full disk): no violation."""
    from fuzz_cases import COUNTS, run_cases

    counts, per_target, failures = run_cases(150, seed=20261203)
    assert counts["cases"] == 150 and len(per_target) == 15
    assert not failures, failures[:5]
    assert all(counts[n] == 0 for n in COUNTS if n != "cases")


def test_fault_trials_fixed_sample():
    """Two runs stopped by SIGKILL or SIGTERM, closed and full streams, a reader that goes away,
    concurrent runs: every destination old or complete, from one run; silence on a broken pipe."""
    from fuzz_cases import fault_trials

    counts, failures = fault_trials(2, seed=7)
    assert counts["cases"] >= 14
    assert not failures, failures

"""Tests of the compiled libFM/libSVM text reader and the writer (fmcli.io.libsvm)."""

import bz2
import gzip
import io
import lzma
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmcli.config import MAX_FEATURE_ID
from fmcli.data import SparseData
from fmcli.errors import InputError
from fmcli.io.libsvm import class_targets, iter_libfm_chunks, read_libfm, write_libfm
from fmcli.io.sources import open_input


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def put(tmp_path, content, name="d.libfm"):
    p = tmp_path / name
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(p)


def reference(text, optional=False):
    """A slow, obviously right parser of well-formed text (no comments mid-row)."""
    indptr, ids, vals, ys = [0], [], [], []
    for line in text.splitlines():
        line = line.split("#", 1)[0].replace(": ", ":").split()
        if not line:
            continue
        if ":" in line[0]:
            assert optional
            ys.append(np.nan)
            pairs = line
        else:
            ys.append(float(line[0]))
            pairs = line[1:]
        for p in pairs:
            a, b = p.split(":")
            ids.append(int(a))
            vals.append(float(b))
        indptr.append(len(ids))
    return (np.array(indptr, np.int64), np.array(ids, np.int32),
            np.array(vals, np.float64).astype(np.float32), np.array(ys, np.float64).astype(np.float32))


def assert_same(a, b):
    """Equal SparseData contents (bitwise for floats, NaN == NaN)."""
    assert a.indptr.dtype == np.int64 and a.indices.dtype == np.int32
    assert a.data.dtype == np.float32 and a.y.dtype == np.float32
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data.view(np.uint32), b.data.view(np.uint32))
    np.testing.assert_array_equal(a.y.view(np.uint32), b.y.view(np.uint32))
    assert a.n_features == b.n_features


def random_data(rng, n_rows=300, n_feat=50, nan_targets=False):
    counts = rng.integers(0, 8, n_rows)
    counts[::17] = 0                       # rows without features
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz = int(indptr[-1])
    indices = rng.integers(0, n_feat, nnz).astype(np.int32)
    indices[1::5] = indices[0:-1:5][: len(indices[1::5])]   # repeated ids within rows
    kinds = rng.integers(0, 4, nnz)
    data = np.where(kinds == 0, 1.0, rng.normal(0, 1, nnz) * 10.0 ** rng.integers(-30, 30, nnz))
    data = data.astype(np.float32)
    y = rng.normal(3, 2, n_rows).astype(np.float32)
    if nan_targets:
        y[(counts > 0) & (rng.random(n_rows) < 0.3)] = np.nan
    n_features = int(indices.max()) + 1 if nnz else 0
    return SparseData(indptr, indices, data, y, n_features)


def err(path_or_text, tmp_path=None, **kw):
    """The InputError raised when reading (text is written to a file first)."""
    path = path_or_text if tmp_path is None else put(tmp_path, path_or_text)
    with pytest.raises(InputError) as e:
        read_libfm(path, **kw)
    return e.value


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_random(tmp_path, seed):
    d = random_data(np.random.default_rng(seed))
    p = str(tmp_path / "rt.libfm")
    write_libfm(p, d)
    back = read_libfm(p)
    assert_same(back, d)
    assert back.source == p
    # max_id_line: 1-based line of the (first) largest id
    row = int(np.searchsorted(d.indptr, int(np.argmax(d.indices)), side="right")) - 1
    assert back.max_id_line == row + 1


def test_round_trip_nan_targets_and_fileobjs(tmp_path):
    d = random_data(np.random.default_rng(5), nan_targets=True)
    text = io.StringIO()
    write_libfm(text, d)
    binary = io.BytesIO()
    write_libfm(binary, d)
    assert binary.getvalue().decode() == text.getvalue()
    p = put(tmp_path, binary.getvalue())
    assert_same(read_libfm(p, targets="optional"), d)
    with pytest.raises(InputError, match="missing target"):
        read_libfm(p)


def test_write_to_stdout(capsysbinary):
    d = SparseData(np.array([0, 2, 2]), np.array([3, 1], np.int32), np.array([0.5, 1], np.float32),
                   np.array([1, -2], np.float32), 4)
    write_libfm("-", d)
    assert capsysbinary.readouterr().out == b"1 3:0.5 1:1\n-2\n"


def test_writer_refuses_row_without_target_and_features():
    d = SparseData(np.array([0, 0]), np.array([], np.int32), np.array([], np.float32),
                   np.array([np.nan], np.float32), 0)
    with pytest.raises(ValueError):
        write_libfm(io.StringIO(), d)


def test_extreme_float32_values_round_trip(tmp_path):
    info = np.finfo(np.float32)
    vals = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, -info.smallest_subnormal,
                     np.float32(1) / 3, np.nextafter(np.float32(1), np.float32(2)), 0.0, -0.0,
                     1e-40, 123456789.0, 0.1, 3.4e38, 1.1754942e-38], np.float32)
    n = len(vals)
    d = SparseData(np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int32), vals, vals.copy(), n)
    p = str(tmp_path / "x.libfm")
    write_libfm(p, d)
    assert_same(read_libfm(p), d)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_property_float32_round_trip(tmp_path, bits):
    vals = np.array(bits, np.uint32).view(np.float32)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return
    n = len(vals)
    d = SparseData(np.array([0, n]), np.zeros(n, np.int32), vals, vals[:1].copy(), 1)
    buf = io.BytesIO()
    write_libfm(buf, d)
    assert_same(read_libfm(put(tmp_path, buf.getvalue())), d)


def test_number_syntax(tmp_path):
    text = "+2 0:1.5e0 1:-3 2:.5 3:5. 4:1E+2 5:-0.25e-1 6:000012 7:1e-50 8:123456789012345678901234567890\n"
    d = read_libfm(put(tmp_path, text))
    np.testing.assert_array_equal(d.y, [2])
    np.testing.assert_array_equal(d.data, np.float32([1.5, -3, .5, 5, 100, -0.025, 12, 0, 1.2345678901234568e29]))


# ---------------------------------------------------------------------------
# layout: comments, blanks, CRLF, tabs, final newline, BOM
# ---------------------------------------------------------------------------

def test_layout(tmp_path):
    text = ("# header comment\n"
            "\n"
            "   \t\n"
            "1 0:1 3:2   # trailing comment 9:9\n"
            "  # indented comment\n"
            "-1\t2:\t0.5\t\t4: 1\r\n"
            "3\r\n"
            "\r\n"
            "0.5 5:2 5:2#comment right after\n"
            "2 1:1")                                    # no final newline
    d = read_libfm(put(tmp_path, text))
    np.testing.assert_array_equal(d.indptr, [0, 2, 4, 4, 6, 7])
    np.testing.assert_array_equal(d.indices, [0, 3, 2, 4, 5, 5, 1])
    np.testing.assert_array_equal(d.data, [1, 2, .5, 1, 2, 2, 1])
    np.testing.assert_array_equal(d.y, [1, -1, 3, .5, 2])
    assert d.n_features == 6 and d.max_id_line == 9
    assert d.n_rows == 5 and d.nnz == 7


def test_bom_is_skipped(tmp_path):
    d = read_libfm(put(tmp_path, b"\xef\xbb\xbf1 2:3\n"))
    np.testing.assert_array_equal(d.indices, [2])


def test_matches_reference_parser(tmp_path):
    rng = np.random.default_rng(11)
    lines = []
    for r in range(500):
        pairs = " ".join(f"{rng.integers(0, 1000)}:{rng.normal():.6g}" for _ in range(rng.integers(0, 6)))
        lines.append(f"{rng.normal() * 5:.7g} {pairs}".rstrip())
    text = "\n".join(lines) + "\n"
    got = read_libfm(put(tmp_path, text))
    ip, ix, dv, ys = reference(text)
    np.testing.assert_array_equal(got.indptr, ip)
    np.testing.assert_array_equal(got.indices, ix)
    np.testing.assert_array_equal(got.data, dv)
    np.testing.assert_array_equal(got.y, ys)


# ---------------------------------------------------------------------------
# compression and stdin
# ---------------------------------------------------------------------------

TEXT = "1 0:1 2:0.5\n-1 1:2\n# c\n0.25\n"


@pytest.mark.parametrize("name,compress", [
    ("a.gz", gzip.compress), ("a.bz2", bz2.compress), ("a.xz", lzma.compress),
    ("no_extension", gzip.compress), ("wrong.bz2", lzma.compress),
])
def test_compressed_by_magic(tmp_path, name, compress):
    plain = read_libfm(put(tmp_path, TEXT, "plain"))
    p = put(tmp_path, compress(TEXT.encode()), name)
    assert_same(read_libfm(p), plain)
    with open_input(p) as f:
        assert f.read() == TEXT.encode()
    chunks = list(iter_libfm_chunks(p, chunk_bytes=5))
    assert sum(c.n_rows for c in chunks) == 3


def test_plain_file_named_gz(tmp_path):
    assert read_libfm(put(tmp_path, TEXT, "plain.gz")).n_rows == 3


class FakeStdin:
    def __init__(self, data):
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, bz2.compress])
def test_stdin(tmp_path, monkeypatch, compress):
    plain = read_libfm(put(tmp_path, TEXT))
    monkeypatch.setattr(sys, "stdin", FakeStdin(compress(TEXT.encode())))
    d = read_libfm("-")
    assert d.source == "<stdin>"
    assert_same(d, plain)
    assert not sys.stdin.buffer.closed


def test_stdin_chunks_and_errors(monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"1 1:1\n2 2:2\n3 x:1\n"))
    with pytest.raises(InputError) as e:
        list(iter_libfm_chunks("-", chunk_bytes=4))
    assert str(e.value).startswith("<stdin>:3: ")
    monkeypatch.setattr(sys, "stdin", FakeStdin(b""))
    with pytest.raises(InputError, match="no data rows"):
        read_libfm("-")


def test_open_input_short_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"1"))
    with open_input("-") as f:
        assert f.read() == b"1"


def test_truncated_gzip(tmp_path):
    blob = gzip.compress((TEXT * 200).encode())
    e = err(put(tmp_path, blob[: len(blob) // 2], "t.gz"))
    assert e.line is None and "truncated or corrupt gzip stream" in e.message
    with pytest.raises(InputError, match="truncated or corrupt gzip stream"):
        list(iter_libfm_chunks(put(tmp_path, blob[:-5], "t2.gz"), chunk_bytes=100))


@pytest.mark.parametrize("compress,kind", [(bz2.compress, "bz2"), (lzma.compress, "xz")])
def test_corrupt_bz2_xz(tmp_path, compress, kind):
    blob = bytearray(compress((TEXT * 50).encode()))
    e = err(put(tmp_path, bytes(blob[: len(blob) - 10])))
    assert e.line is None and f"truncated or corrupt {kind} stream" in e.message
    blob[len(blob) // 2] ^= 0xFF
    blob[len(blob) // 2 + 1] ^= 0xFF
    e = err(put(tmp_path, bytes(blob)))
    assert f"truncated or corrupt {kind} stream" in e.message


# ---------------------------------------------------------------------------
# chunked reading
# ---------------------------------------------------------------------------

def concat(chunks):
    indptr = [np.zeros(1, np.int64)]
    off = 0
    for c in chunks:
        indptr.append(c.indptr[1:] + off)
        off += c.nnz
    return SparseData(np.concatenate(indptr), np.concatenate([c.indices for c in chunks]),
                      np.concatenate([c.data for c in chunks]), np.concatenate([c.y for c in chunks]),
                      max(c.n_features for c in chunks))


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1000, 1 << 20])
def test_chunks_equal_whole_read(tmp_path, chunk_bytes):
    d = random_data(np.random.default_rng(3), n_rows=400, nan_targets=True)
    buf = io.BytesIO()
    write_libfm(buf, d)
    text = b"# head\n\n" + buf.getvalue().replace(b"\n", b"\n\n# c\n", 3)
    p = put(tmp_path, text)
    whole = read_libfm(p, targets="optional")
    chunks = list(iter_libfm_chunks(p, chunk_bytes=chunk_bytes))
    if chunk_bytes < 100:
        assert len(chunks) > 20
    assert all(c.n_rows > 0 and c.source == p for c in chunks)
    assert_same(concat(chunks), whole)
    # the chunk holding the largest id knows its true line
    best = max(chunks, key=lambda c: (c.n_features, -c.max_id_line))
    assert best.max_id_line == whole.max_id_line


def test_chunk_error_names_true_line(tmp_path):
    lines = [f"{i % 3} {i}:1 {i + 1}:0.5" for i in range(2000)]
    lines[1733] = "1 5:1 6:oops"
    p = put(tmp_path, "\n".join(lines) + "\n")
    seen = 0
    with pytest.raises(InputError) as e:
        for c in iter_libfm_chunks(p, chunk_bytes=256):
            seen += c.n_rows
    assert e.value.line == 1734 and "bad value 'oops' (not a number)" in e.value.message
    assert 1000 < seen < 1734
    assert err(p).line == 1734


def test_chunk_lines_with_crlf_and_no_final_newline(tmp_path):
    p = put(tmp_path, "1 1:1\r\n\r\n2 2:2\r\n3 3:x")
    with pytest.raises(InputError) as e:
        list(iter_libfm_chunks(p, chunk_bytes=3))
    assert e.value.line == 4


def test_chunks_long_line_grows_buffer(tmp_path):
    long = "1 " + " ".join(f"{i}:1" for i in range(3000))
    p = put(tmp_path, f"0 1:1\n{long}\n2 2:2\n")
    chunks = list(iter_libfm_chunks(p, chunk_bytes=16))
    assert len(chunks) >= 2 and 3000 in np.diff(concat(chunks).indptr)
    assert_same(concat(chunks), read_libfm(p))


def test_chunks_no_rows(tmp_path):
    with pytest.raises(InputError, match="no data rows"):
        list(iter_libfm_chunks(put(tmp_path, "# only\n\n# comments\n"), chunk_bytes=4))


# ---------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------

def test_optional_targets(tmp_path):
    p = put(tmp_path, "1:1 2:2\n3 1:1\n  4:0.5 # c\n2\n")
    d = read_libfm(p, targets="optional")
    np.testing.assert_array_equal(d.y, [np.nan, 3, np.nan, 2])
    np.testing.assert_array_equal(d.indptr, [0, 2, 3, 4, 4])
    e = err(p)
    assert e.line == 1 and e.message == "missing target: line starts with feature '1:1'"
    with pytest.raises(ValueError):
        read_libfm(p, targets="maybe")


def test_classes(tmp_path):
    d = read_libfm(put(tmp_path, "1 1:1\n0 2:1\n-1 3:1\n+1\n1.0 1:1\n-0 1:1\n"), classes=True)
    np.testing.assert_array_equal(d.y, [1, -1, -1, 1, 1, -1])
    assert d.y.dtype == np.float32
    for bad in ("2", "0.5", "-2", "1e3"):
        e = err(f"1 1:1\n0 1:1\n{bad} 1:1\n", tmp_path, classes=True)
        assert e.line == 3 and e.message == f"bad class target '{bad}' (classification needs -1, 0 or 1)"
    d = read_libfm(put(tmp_path, "1 1:1\n2:1\n"), classes=True, targets="optional")
    np.testing.assert_array_equal(d.y, [1, np.nan])


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

BAD = [
    ("1 2:1 12\n", 1, "token '12' has no ':' (expected id:value)"),
    ("1 2:1\n1 2:1 abc\n", 2, "token 'abc' has no ':' (expected id:value)"),
    ("1 3 :1\n", 1, "token '3' has no ':' (expected id:value)"),
    ("1 2:1,3:1\n", 1, "bad value '1,3:1' (not a number)"),
    ("1 2:abc\n", 1, "bad value 'abc' (not a number)"),
    ("1 2:1.5x\n", 1, "bad value '1.5x' (not a number)"),
    ("1 2:1e\n", 1, "bad value '1e' (not a number)"),
    ("1 2:\n", 1, "missing value after ':'"),
    ("1 2:\r\n", 1, "missing value after ':'"),
    ("1 2: #c\n", 1, "missing value after ':'"),
    ("1 x:1\n", 1, "bad feature id 'x' in 'x:1' (not a non-negative integer)"),
    ("1 1.5:1\n", 1, "bad feature id '1.5' in '1.5:1' (not a non-negative integer)"),
    ("1 :1\n", 1, "missing feature id in ':1'"),
    ("abc 1:1\n", 1, "bad target 'abc' (not a number)"),
    ("1,0 1:1\n", 1, "bad target '1,0' (not a number)"),
    ("# c\n\n1 1:1\nnan 1:1\n", 4, "bad target 'nan' (NaN and infinity are not allowed)"),
    ("inf 1:1\n", 1, "bad target 'inf' (NaN and infinity are not allowed)"),
    ("1 1:NaN\n", 1, "bad value 'NaN' (NaN and infinity are not allowed)"),
    ("1 1:-inf\n", 1, "bad value '-inf' (NaN and infinity are not allowed)"),
    ("1 1:+Infinity\n", 1, "bad value '+Infinity' (NaN and infinity are not allowed)"),
    ("1 1:1e39\n", 1, "value '1e39' is out of range for a 32-bit float"),
    ("1 1:-3.5e38\n", 1, "value '-3.5e38' is out of range for a 32-bit float"),
    ("1e39 1:1\n", 1, "target '1e39' is out of range for a 32-bit float"),
    ("1 1:1e999999999\n", 1, "value '1e999999999' is out of range for a 32-bit float"),
    ("1 1:1\n1 -3:1\n", 2, "negative feature id -3 in '-3:1'"),
    ("1 -x:1\n", 1, "bad feature id '-x' in '-x:1' (not a non-negative integer)"),
    ("1 2147483647:1\n", 1, f"feature id 2147483647 is too large (largest supported id is {MAX_FEATURE_ID})"),
    ("1 99999999999999999999999:1\n", 1,
     f"feature id 99999999999999999999999 is too large (largest supported id is {MAX_FEATURE_ID})"),
    ("1 1:1\n\xe9t\xe9 1:1\n".encode("latin-1"), 2, "bad target '\\xe9t\\xe9' (not UTF-8 text)"),
    (b"1 1:\xff\xfe\n", 1, "bad value '\\xff\\xfe' (not UTF-8 text)"),
    (b"1 \xff:1\n", 1, "bad feature id '\\xff' in '\\xff:1' (not UTF-8 text)"),
    (b"1 1:1 \xc3\xa9t\xc3\xa9\n", 1, "token '\u00e9t\u00e9' has no ':' (expected id:value)"),
    (b"1 1:1\x00\n", 1, "bad value '1\x00' (not a number)"),
]


@pytest.mark.parametrize("text,line,message", BAD)
def test_bad_input(tmp_path, text, line, message):
    e = err(text, tmp_path)
    assert (e.line, e.message) == (line, message)
    assert str(e) == f"{e.path}:{line}: {message}"


def test_max_id_accepted_at_limit(tmp_path):
    d = read_libfm(put(tmp_path, f"1 {MAX_FEATURE_ID}:1\n"))
    assert d.n_features == MAX_FEATURE_ID + 1


def test_max_feature_id(tmp_path):
    p = put(tmp_path, "1 5:1\n1 10:1\n1 11:1\n")
    assert read_libfm(p, max_feature_id=11).n_features == 12
    e = err(p, max_feature_id=10)
    assert e.line == 3
    assert e.message == "feature id 11 is too large: the model would not fit in memory (largest id that fits: 10)"
    with pytest.raises(InputError) as e2:
        list(iter_libfm_chunks(p, max_feature_id=10, chunk_bytes=4))
    assert e2.value.line == 3 and "would not fit in memory" in e2.value.message


@pytest.mark.parametrize("text", ["", "\n\n", "# a\n  # b\n\t\n", "\r\n"])
def test_no_data_rows(tmp_path, text):
    e = err(text, tmp_path)
    assert e.line is None and "no data rows" in e.message


def test_missing_file(tmp_path):
    p = str(tmp_path / "nope.libfm")
    e = err(p)
    assert (e.path, e.line, e.message) == (p, None, "file not found")
    with pytest.raises(InputError, match="file not found"):
        list(iter_libfm_chunks(p))
    with pytest.raises(InputError, match="file not found"):
        open_input(p)


def test_directory(tmp_path):
    e = err(str(tmp_path))
    assert e.line is None and e.message == "is a directory, not a file"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    p = put(tmp_path, TEXT)
    os.chmod(p, 0)
    e = err(p)
    assert e.message == "cannot read file: permission denied"


def test_read_error_mid_file(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    class Failing(io.BufferedReader):
        def read(self, *a):
            raise OSError(5, "Input/output error")

        readinto = read

    def fake_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        if "b" in mode and str(path).endswith("eio.libfm"):
            return Failing(f.raw)
        return f

    p = put(tmp_path, TEXT, "eio.libfm")
    monkeypatch.setattr(builtins, "open", fake_open)
    e = err(p)
    assert e.line is None and e.message == "cannot read file: Input/output error"


# ---------------------------------------------------------------------------
# robustness: random bytes never raise anything but InputError
# ---------------------------------------------------------------------------

ALPHABET = list(b"0123456789:.-+eE \t\r\n#xn") + [0, 0xFF, 0xC3]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200),
                      st.lists(st.sampled_from(ALPHABET), max_size=200).map(bytes)),
       optional=st.booleans(), classes=st.booleans())
def test_random_bytes_only_input_error(tmp_path, data, optional, classes):
    p = put(tmp_path, data, "rnd")
    targets = "optional" if optional else "required"
    try:
        whole = read_libfm(p, targets=targets, classes=classes, max_feature_id=1000)
    except InputError as e:
        whole = e
    try:
        chunks = list(iter_libfm_chunks(p, targets=targets, classes=classes, max_feature_id=1000, chunk_bytes=9))
    except InputError as e:
        chunks = e
    if isinstance(whole, InputError):
        assert isinstance(chunks, InputError)
        assert (chunks.line, chunks.message) == (whole.line, whole.message)
    else:
        joined = concat(chunks)
        if classes:         # the chunks keep the targets as written; read_libfm maps 0 to -1
            joined.y = class_targets(joined.y)
        assert_same(joined, whole)
        assert whole.nnz <= whole.indptr[-1] and len(whole.y) == whole.n_rows

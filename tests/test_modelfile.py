"""Model files: fmcli text / npz round trips, libFM compatibility, corruption handling."""

import hashlib
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fmcli
from fmcli.errors import FmcliError, InputError
from fmcli.io import atomic, modelfile
from fmcli.io.modelfile import FORMAT_VERSION, load_model, save_model
from fmcli.model import FMModel


# ----------------------------------------------------------------------------- helpers

def make_model(n=7, k=3, *, use_w0=True, use_w=True, task="r", link=None, S=0, seed=0,
               y_range=(1.0, 5.0), meta=None):
    rng = np.random.default_rng(seed)
    link = link or ("identity" if task == "r" else "logistic")
    w0s = rng.normal(size=max(S, 1)) * 3
    ws = rng.normal(size=(max(S, 1), n))
    Vs = rng.normal(scale=0.3, size=(max(S, 1), n, k))
    # values that stress the text format: tiny, huge, negative zero, integers
    if n >= 3:
        ws[:, 0] = 1e-300
        ws[:, 1] = -0.0
        ws[:, 2] = 123456789.0
    if n >= 1 and k >= 1:
        Vs[:, 0, 0] = 9.999999999999999e149     # just under modelfile.PARAM_LIMIT
    if not use_w0:
        w0s[:] = 0.0
    if not use_w:
        ws[:] = 0.0
    samples = (w0s, ws, Vs) if S else None
    return FMModel(float(w0s[-1]), ws[-1].copy(), Vs[-1].copy(), use_w0, use_w, task, link,
                   y_range[0], y_range[1],
                   {"method": "mcmc" if S else "sgd", "iter": 10, "dim": [int(use_w0), int(use_w), k],
                    "regular": [0.0, 0.01, 0.5]} if meta is None else meta,
                   samples)


def assert_same(a, b):
    assert a.use_w0 == b.use_w0 and a.use_w == b.use_w
    assert a.task == b.task and a.link == b.link
    assert a.y_min == b.y_min and a.y_max == b.y_max
    assert a.meta == b.meta
    assert a.w0 == b.w0 and type(b.w0) is float
    for x, y in [(a.w, b.w), (a.V, b.V)]:
        assert x.shape == y.shape and y.dtype == np.float64
        assert np.array_equal(x, y)
        assert np.array_equal(np.signbit(x), np.signbit(y))
    assert (a.samples is None) == (b.samples is None)
    if a.samples is not None:
        for x, y in zip(a.samples, b.samples):
            assert x.shape == y.shape and np.array_equal(x, y)


def resign(body: bytes) -> bytes:
    """A text model file with a valid checksum for `body` (everything before the sha line)."""
    return body + b"#fmcli-sha256 " + hashlib.sha256(body).hexdigest().encode() + b"\n"


def body_of(data: bytes) -> bytes:
    return data[:data.rstrip(b"\n").rfind(b"\n") + 1]


def edit_meta(data: bytes, fn) -> bytes:
    """Apply fn to the metadata dict of a text model and re-sign the file."""
    body = body_of(data)
    lines = body.split(b"\n")
    assert lines[-2].startswith(b"#fmcli-meta ")
    meta = json.loads(lines[-2][len(b"#fmcli-meta "):])
    fn(meta)
    lines[-2] = b"#fmcli-meta " + json.dumps(meta).encode()
    return resign(b"\n".join(lines))


def random_csr(n_rows, n_features, rng, density=0.4):
    indptr, indices, data = [0], [], []
    for _ in range(n_rows):
        cols = np.flatnonzero(rng.random(n_features) < density)
        indices += cols.tolist()
        data += rng.normal(size=len(cols)).tolist()
        indptr.append(len(indices))
    return (np.array(indptr, np.int64), np.array(indices, np.int32), np.array(data, np.float32))


def manual_predict(w0, w, V, indptr, indices, data):
    out = []
    for i in range(len(indptr) - 1):
        idx, x = indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]].astype(float)
        y = w0 + np.dot(w[idx], x)
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                y += np.dot(V[idx[a]], V[idx[b]]) * x[a] * x[b]
        out.append(y)
    return np.array(out)


def write(path, data):
    path.write_bytes(data)
    return path


def v1_text(model) -> bytes:
    """The text file fmcli wrote before format version 2 (samples as text sections after the
    pairwise section), as such files exist on users' disks."""
    meta = modelfile._meta_dict(model)
    meta["format_version"] = 1
    meta.pop("sample_dtype", None)
    rows = modelfile._format_rows
    parts = []

    def params(w0, w, V):
        if model.use_w0:
            parts.append(repr(float(w0)) + "\n")
        if model.use_w:
            parts.append(rows(np.asarray(w, float).reshape(-1, 1)))
        parts.append(rows(np.asarray(V, float)))
    for header, present in (("#global bias W0", model.use_w0), ("#unary interactions Wj", model.use_w)):
        if present:
            parts.append(header + "\n")
            parts.append(repr(float(model.w0)) + "\n" if "bias" in header
                         else rows(np.asarray(model.w, float).reshape(-1, 1)))
    parts.append("#pairwise interactions Vj,f\n" + rows(np.asarray(model.V, float)))
    if model.samples is not None:
        parts.append(f"#fmcli samples {len(model.samples[0])}\n")
        for s in range(len(model.samples[0])):
            parts.append(f"#sample {s}\n")
            params(*(a[s] for a in model.samples))
    parts.append("#fmcli-meta " + modelfile._meta_json(meta) + "\n")
    return resign("".join(parts).encode())


def libfm_sections(text):
    """How libFM wrappers read a model file: a '#' line opens a section, every other line is
    data of the last section. Returns [(header, data lines)] of the sections holding data, and
    the number of data lines before the first header."""
    sections, before = [], 0
    for line in text.split("\n")[:-1]:
        if line.startswith("#"):
            sections.append((line, []))
        elif sections:
            sections[-1][1].append(line)
        else:
            before += 1
    return [(h, d) for h, d in sections if d], before


# ----------------------------------------------------------------------------- round trips

DIMS = [
    dict(k=0), dict(k=1), dict(k=8),
    dict(k=3, use_w0=False), dict(k=3, use_w=False), dict(k=2, use_w0=False, use_w=False),
    dict(k=0, use_w0=False, use_w=False), dict(n=0, k=4), dict(n=1, k=1),
]


@pytest.mark.parametrize("suffix", [".txt", ".npz"])
@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "-".join(f"{a}{b}" for a, b in d.items()))
@pytest.mark.parametrize("S", [0, 3])
def test_round_trip_exact(tmp_path, suffix, dims, S):
    model = make_model(S=S, **dims)
    path = tmp_path / f"model{suffix}"
    save_model(path, model)
    assert_same(model, load_model(path))


@pytest.mark.parametrize("suffix", [".txt", ".npz"])
def test_round_trip_metadata(tmp_path, suffix):
    cases = [dict(task="c", link="probit", y_range=(-np.inf, np.inf)),
             dict(task="c", link="logistic", y_range=(-1.0, 1.0)),
             dict(task="r", y_range=(-np.inf, 3.5), meta={}),
             dict(task="r", y_range=(0.1, np.inf),
                  meta={"method": "als", "opts": {"nested": [1, 2.5, None, True, "x\ny é"]}})]
    for i, case in enumerate(cases):
        model = make_model(seed=i, **case)
        path = tmp_path / f"m{i}{suffix}"
        save_model(path, model)
        loaded = load_model(path, task=case["task"])
        assert_same(model, loaded)


def test_format_chosen_by_name_detected_by_content(tmp_path):
    model = make_model(S=2)
    save_model(tmp_path / "a.npz", model)
    save_model(tmp_path / "a.txt", model)
    save_model(tmp_path / "a.NPZ", model)
    assert (tmp_path / "a.npz").read_bytes()[:4] == b"PK\x03\x04"
    assert (tmp_path / "a.NPZ").read_bytes()[:4] == b"PK\x03\x04"
    assert (tmp_path / "a.txt").read_bytes().startswith(b"#global bias W0\n")
    os.rename(tmp_path / "a.npz", tmp_path / "npz-content.txt")
    os.rename(tmp_path / "a.txt", tmp_path / "text-content.npz")
    assert_same(model, load_model(tmp_path / "npz-content.txt"))
    assert_same(model, load_model(str(tmp_path / "text-content.npz")))


def test_text_layout_is_libfm(tmp_path):
    model = make_model(n=3, k=2, S=2, task="c", link="probit", y_range=(-np.inf, np.inf))
    save_model(tmp_path / "m", model)
    text = (tmp_path / "m").read_text()
    lines = text.split("\n")
    assert lines[0] == "#global bias W0" and float(lines[1]) == model.w0
    assert lines[2] == "#unary interactions Wj"
    assert [float(x) for x in lines[3:6]] == model.w.tolist()
    assert lines[6] == "#pairwise interactions Vj,f"
    for j in range(3):
        assert lines[7 + j].split(" ") == [repr(v) for v in model.V[j].tolist()]
    assert lines[10].startswith("#fmcli-sample 0 ") and lines[11].startswith("#fmcli-sample 1 ")
    assert lines[-1] == ""
    assert lines[-2].startswith("#fmcli-sha256 ")
    assert hashlib.sha256(text[:text.rindex("#fmcli-sha256")].encode()).hexdigest() == lines[-2].split()[1]
    meta = json.loads(lines[-3][len("#fmcli-meta "):])
    assert meta["format"] == "fmcli-model" and meta["format_version"] == FORMAT_VERSION == 2
    assert meta["fmcli_version"] == fmcli.__version__ and meta["sample_dtype"] == "float64"
    assert meta["y_min"] == "-inf" and meta["y_max"] == "inf"
    assert (meta["task"], meta["link"], meta["k"], meta["n_features"], meta["n_samples"]) == ("c", "probit", 2, 3, 2)
    # each sample line: base64 of w0 <f8, w and V in sample_dtype (here float64)
    import base64
    raw = base64.b64decode(lines[11].split(" ")[2], validate=True)
    assert np.frombuffer(raw, "<f8").tolist() == [model.samples[0][1], *model.samples[1][1],
                                                  *model.samples[2][1].ravel()]
    # a positional libFM reader (the file with its fmcli trailer cut off) sees the last sample
    libfm_part = text[:text.index("#fmcli-sample")]
    cut = load_model(write(tmp_path / "cut", libfm_part.encode()), task="c")
    assert cut.w0 == model.w0 and np.array_equal(cut.w, model.w) and np.array_equal(cut.V, model.V)
    assert np.array_equal(cut.V, model.samples[2][-1])


def float32_samples(model):
    """The model with its samples' w and V in float32, as MCMC keeps them."""
    w0s, ws, Vs = model.samples
    ws, Vs = (np.clip(a, -3e38, 3e38).astype(np.float32) for a in (ws, Vs))
    model.samples = (w0s, ws, Vs)
    return model


@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "-".join(f"{a}{b}" for a, b in d.items()))
@pytest.mark.parametrize("S", [0, 3])
def test_file_parses_as_exactly_libfms_three_sections(tmp_path, dims, S):
    """Wrappers of libFM read a model by its '#' headers (every other line is data of the
    last section): an fmcli file, with samples too, is exactly libFM's sections to them."""
    model = make_model(S=S, **dims)
    if S:
        float32_samples(model)
    save_model(tmp_path / "m", model)
    sections, before = libfm_sections((tmp_path / "m").read_text())
    n, k = model.V.shape
    want = [("#global bias W0", 1)] * model.use_w0 + [("#unary interactions Wj", n)] * model.use_w \
        + [("#pairwise interactions Vj,f", n)]
    assert before == 0
    assert [(h, len(d)) for h, d in sections] == [(h, c) for h, c in want if c]   # n = 0: no data
    if n and k:
        assert [[float(x) for x in line.split(" ")] for line in sections[-1][1]] == model.V.tolist()


def test_old_version_1_files_still_load(tmp_path):
    """Files written before format version 2 load as they did (samples as text sections)."""
    for S, dims in [(3, {}), (2, dict(use_w0=False)), (2, dict(use_w=False, k=1)), (1, dict(n=0))]:
        model = make_model(S=S, **dims)
        old = v1_text(model)
        assert b"\n#fmcli samples " in old and b'"format_version": 1' in old
        assert_same(model, load_model(write(tmp_path / "old.fm", old)))
    # without samples nothing changed: the file is byte for byte what version 1 wrote
    for dims in DIMS:
        model = make_model(**dims)
        save_model(tmp_path / "new.fm", model)
        assert (tmp_path / "new.fm").read_bytes() == v1_text(model)


def test_float32_samples_are_exact_and_compact(tmp_path):
    model = float32_samples(make_model(n=50, k=8, S=20, seed=3))
    for name in ("m.fm", "m.npz"):
        save_model(tmp_path / name, model)
        loaded = load_model(tmp_path / name)
        assert_same(model, loaded)
        assert [a.dtype for a in loaded.samples] == [np.float64, np.float32, np.float32]
    values = 20 * 50 * 9
    # base64 of 4-byte values plus a line header per sample, not ~20 characters per value
    text_size = (tmp_path / "m.fm").stat().st_size
    assert text_size < 5.5 * values + 20 * (8 * 4 / 3 + 25) + 25 * 51 * 9 + 2000, text_size
    assert len(v1_text(model)) > 3 * text_size


def test_mcmc_model_file_predicts_as_the_trained_model_bit_for_bit(tmp_path):
    from conftest import fit, make_learner, recsys

    for task in ("r", "c"):
        p = recsys(7, n=600, n_test=200, task=task)
        trained = fit(make_learner("mcmc", p.train, {"test": p.test}, k=4, task=task), 12).final_model()
        assert trained.samples[1].dtype == np.float32
        want = trained.predict(*p.test.csr())
        for name in ("m.fm", "m.npz"):
            save_model(tmp_path / name, trained)
            got = load_model(tmp_path / name).predict(*p.test.csr())
            assert np.array_equal(got.view(np.int64), want.view(np.int64)), name
        old = load_model(write(tmp_path / "old.fm", v1_text(trained)))
        np.testing.assert_allclose(old.predict(*p.test.csr()), want, rtol=1e-12, atol=1e-12)


def test_text_k0_writes_empty_v_lines(tmp_path):
    model = make_model(n=3, k=0, use_w0=False)
    save_model(tmp_path / "m", model)
    lines = (tmp_path / "m").read_text().split("\n")
    assert lines[:6] == ["#unary interactions Wj"] + lines[1:4] + ["#pairwise interactions Vj,f", ""]
    assert lines[6:8] == ["", ""]


def test_save_to_stdout(capsysbinary):
    model = make_model(n=2, k=1)
    save_model("-", model)
    out = capsysbinary.readouterr().out
    assert out.startswith(b"#global bias W0\n") and b"#fmcli-sha256 " in out


def test_trailing_blank_lines_are_accepted(tmp_path):
    model = make_model()
    save_model(tmp_path / "m", model)
    data = (tmp_path / "m").read_bytes()
    assert_same(model, load_model(write(tmp_path / "m2", data + b"\n\n  \n")))
    assert_same(model, load_model(write(tmp_path / "m3", data[:-1])))  # no final newline


# ----------------------------------------------------------------------------- libFM files

LIBFM_MODEL = """#global bias W0
0.181718
#unary interactions Wj
0.0996598
-0.233412
1e-05
0.5
#pairwise interactions Vj,f
0.113058 0.219843 -0.0154729
-0.10235 0.0112 0.3
0 -0 0.0416014
0.2 0.1 -0.05
"""


def test_libfm_file_loads_and_predicts(tmp_path):
    path = write(tmp_path / "libfm.model", LIBFM_MODEL.encode())
    model = load_model(path)
    assert model.use_w0 and model.use_w and model.n_features == 4 and model.k == 3
    assert model.task == "r" and model.link == "identity"
    assert model.y_min == -np.inf and model.y_max == np.inf
    assert model.samples is None and model.meta == {"source_format": "libfm"}
    assert model.w0 == 0.181718 and model.w.tolist() == [0.0996598, -0.233412, 1e-05, 0.5]
    assert model.V[0].tolist() == [0.113058, 0.219843, -0.0154729]
    rng = np.random.default_rng(3)
    X = random_csr(30, 5, rng)  # feature 4 is unknown to the model: contributes nothing
    want = manual_predict(model.w0, np.append(model.w, 0.0), np.vstack([model.V, np.zeros(3)]), *X)
    np.testing.assert_allclose(model.predict(*X), want, rtol=1e-12, atol=1e-12)

    clf = load_model(path, task="c")
    assert clf.task == "c" and clf.link == "logistic"
    np.testing.assert_allclose(clf.predict(*X), 1 / (1 + np.exp(-want)), rtol=1e-12)


def test_libfm_file_variants(tmp_path):
    # no global bias, no unary section: n comes from the V lines
    m = load_model(write(tmp_path / "a", b"#pairwise interactions Vj,f\n1 2\n3 4\n5 6\n"))
    assert (m.use_w0, m.use_w, m.n_features, m.k) == (False, False, 3, 2)
    assert m.w0 == 0.0 and np.array_equal(m.w, np.zeros(3))
    # k = 0: empty V lines, n from the unary section
    m = load_model(write(tmp_path / "b", b"#global bias W0\n2\n#unary interactions Wj\n1\n2\n"
                                         b"#pairwise interactions Vj,f\n\n\n"))
    assert (m.n_features, m.k, m.w.tolist()) == (2, 0, [1.0, 2.0])
    # k = 1 (libFM itself cannot reload it), CRLF line endings, extra blank lines at the end
    m = load_model(write(tmp_path / "c", b"#unary interactions Wj\r\n1\r\n2\r\n"
                                         b"#pairwise interactions Vj,f\r\n0.5\r\n-0.5\r\n\r\n\n"))
    assert (m.use_w0, m.n_features, m.k, m.V.ravel().tolist()) == (False, 2, 1, [0.5, -0.5])
    # no trailing newline
    m = load_model(write(tmp_path / "d", b"#pairwise interactions Vj,f\n1 2\n3 4"))
    assert m.V.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("content, line, words", [
    (LIBFM_MODEL.replace("-0.233412", "-0.23x412"), 5, "not a number"),
    (LIBFM_MODEL.replace("-0.10235 0.0112 0.3", "-0.10235 0.0112"), 10, "expected 3 values"),
    (LIBFM_MODEL.replace("0.2 0.1 -0.05\n", ""), 8, "pairwise section has 3 lines"),
    (LIBFM_MODEL + "0.1 0.2 0.3\n", 13, "unexpected line after"),
    (LIBFM_MODEL.replace("0.5\n#pair", "0.5\n\n#pair"), 8, "expected 1 value"),
    (LIBFM_MODEL.split("#pairwise")[0], None, "no '#pairwise"),
    ("1 0:1 3:2\n-1 2:1\n", 1, "not a model file"),
    ("#global bias W0\n1\n2\n#pairwise interactions Vj,f\n1\n", 1, "global bias section has 2 lines"),
    ("#pairwise interactions Vj,f\n1 2\n#unary interactions Wj\n1\n", 3, "order"),
    ("#global bias W0\n1\n#something else\n", 3, "unexpected line"),
    ("#pairwise interactions Vj,f\n1 2\n3 nan\n", 3, "non-finite"),
    ("#pairwise interactions Vj,f\n1 2\n3 1e999\n", 3, "non-finite"),
    ("", None, "empty model file"),
    ("\n \n", None, "empty model file"),
])
def test_malformed_libfm_files(tmp_path, content, line, words):
    path = write(tmp_path / "bad", content.encode())
    with pytest.raises(InputError) as e:
        load_model(path)
    assert e.value.line == line and words in e.value.message, str(e.value)
    assert e.value.path == str(path)


# ----------------------------------------------------------------------------- damaged fmcli files

@pytest.fixture
def text_file(tmp_path):
    model = make_model(n=6, k=3, S=2)
    path = tmp_path / "model.fm"
    save_model(path, model)
    return model, path, path.read_bytes()


def load_bytes(tmp_path, data, name="x", **kw):
    return load_model(write(tmp_path / name, data), **kw)


def test_corrupted_byte_is_detected(tmp_path, text_file):
    model, path, data = text_file
    pos = data.index(b"\n", 40) - 2           # a digit inside the global bias line
    bad = data[:pos] + (b"1" if data[pos:pos + 1] != b"1" else b"2") + data[pos + 1:]
    with pytest.raises(InputError, match="checksum mismatch: file is corrupt or was edited"):
        load_bytes(tmp_path, bad)
    # a changed digit in a sample block and in the metadata
    for marker in (b"#fmcli-sample 1 ", b'"task": "r"'):
        i = data.index(marker) + len(marker) + 1
        bad = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
        with pytest.raises(InputError, match="checksum mismatch"):
            load_bytes(tmp_path, bad)


def test_truncated_text_file(tmp_path, text_file):
    model, path, data = text_file
    meta_at = data.index(b"#fmcli-meta")
    samples_at = data.index(b"#fmcli-sample")
    for length in [len(data) - 1 - 64, len(data) - 20, meta_at + 30, meta_at, samples_at + 25,
                   samples_at + 5]:
        with pytest.raises(InputError, match=r"truncated model file \(no fmcli trailer\)") as e:
            load_bytes(tmp_path, data[:length])
        assert e.value.line is None
    for length in [1, 10, 17, 40, 200]:
        # no '#fmcli' line is left: this is read as a libFM file, and fails where it is cut
        with pytest.raises(InputError):
            load_bytes(tmp_path, data[:length])
    # cut exactly after the libFM part: a valid libFM model (documented). libFM files have
    # no checksum, so a cut inside the last V value would also go unnoticed.
    cut = load_bytes(tmp_path, data[:samples_at])
    assert cut.meta == {"source_format": "libfm"} and np.array_equal(cut.V, model.V)


def test_appended_garbage(tmp_path, text_file):
    model, path, data = text_file
    for junk in [b"x", b"1 2 3\n", b"#fmcli-sha256 " + b"0" * 64 + b"\nmore\n", b"\x00\xff"]:
        with pytest.raises(InputError, match="truncated model file"):
            load_bytes(tmp_path, data + junk)


def test_wrong_format_version(tmp_path, text_file):
    model, path, data = text_file

    def bump(m):
        m["format_version"] = FORMAT_VERSION + 1
    newer = edit_meta(data, bump)
    with pytest.raises(InputError, match=rf"format version {FORMAT_VERSION + 1} is newer.*format "
                                         rf"version {FORMAT_VERSION}") as e:
        load_bytes(tmp_path, newer)
    assert "upgrade fmcli" in e.value.message
    # a newer file says so even when its checksum scheme is not one this version knows
    with pytest.raises(InputError, match=f"format version {FORMAT_VERSION + 1} is newer"):
        load_bytes(tmp_path, body_of(newer) + b"#fmcli-sha256 " + b"f" * 64 + b"\n")
    for bad_version in [0, "1", 1.5, None, True]:
        def setv(m, v=bad_version):
            m["format_version"] = v
        with pytest.raises(InputError, match="format_version"):
            load_bytes(tmp_path, edit_meta(data, setv))

    def other_format(m):
        m["format"] = "something-else"
    with pytest.raises(InputError, match="not an fmcli model file"):
        load_bytes(tmp_path, edit_meta(data, other_format))


def test_bad_metadata(tmp_path, text_file):
    model, path, data = text_file
    body = body_of(data)
    lines = body.split(b"\n")
    for bad in [b'#fmcli-meta {"format": "fmcli-model",', b"#fmcli-meta [1, 2]",
                b"#fmcli-meta {NaN: 1}", b"#fmcli-meta "]:
        with pytest.raises(InputError, match="bad metadata JSON") as e:
            load_bytes(tmp_path, resign(b"\n".join(lines[:-2] + [bad, b""])))
        assert e.value.line == len(lines) - 1
    with pytest.raises(InputError, match="missing '#fmcli-meta' line"):
        load_bytes(tmp_path, resign(b"\n".join(lines[:-2] + [b""])))
    for key, value in [("task", "x"), ("link", "tanh"), ("use_w", 1), ("k", -1), ("k", 2.0),
                       ("n_features", None), ("y_min", "lots"), ("y_max", -1e9), ("meta", [1])]:
        def setk(m, key=key, value=value):
            m[key] = value
        with pytest.raises(InputError, match=key if key != "y_max" else "y_min"):
            load_bytes(tmp_path, edit_meta(data, setk))


@pytest.mark.parametrize("key, delta, words", [
    ("n_features", +1, "ends after 6 rows, expected 7"),
    ("n_features", -1, "expected the '#pairwise interactions Vj,f' header (n_features=5, k=3)"),
    ("k", +1, "expected 4 values"),
    ("k", -1, "expected 2 values"),
    ("n_samples", +1, "expected the line '#fmcli-sample 2 ...' (n_samples=3"),
    ("n_samples", -1, "unexpected line '#fmcli-sample 1 "),
    ("n_samples", -2, "bad model metadata: sample_dtype: only for a model with samples"),
    ("v1 n_samples", +1, "expected '#fmcli samples 3'"),
    ("v1 n_samples", -2, "unexpected line '#fmcli samples 2'"),
    ("v1 n_features", +1, "ends after 6 rows, expected 7"),
    ("v1 k", -1, "expected 2 values"),
])
def test_wrong_shapes(tmp_path, text_file, key, delta, words):
    model, path, data = text_file
    if key.startswith("v1 "):      # a file written before format version 2
        key, data = key[3:], v1_text(model)

    def change(m):
        m[key] += delta
    with pytest.raises(InputError) as e:
        load_bytes(tmp_path, edit_meta(data, change))
    assert words in e.value.message and e.value.line is not None, str(e.value)


def test_non_numeric_value_and_layout_errors(tmp_path, text_file):
    model, path, data = text_file
    lines = body_of(data).split(b"\n")
    for lineno, new, words in [(4, b"0.5x", "not a number"), (4, b"nan", "non-finite"),
                               (12, b"1 2 inf", "non-finite"), (12, b"1  2", "expected 3 values"),
                               (12, b"1\t2\t3 4", "expected 3 values"), (2, b"", "expected 1 value"),
                               (1, b"#global", "global bias"), (3, b"#pairwise interactions Vj,f",
                                                                "unary")]:
        edited = lines.copy()
        edited[lineno - 1] = new
        with pytest.raises(InputError) as e:
            load_bytes(tmp_path, resign(b"\n".join(edited)))
        assert words in e.value.message and e.value.line == lineno, (new, str(e.value))
    # tabs and double spaces are tolerated when the shape is right (slow path)
    edited = lines.copy()
    edited[11] = b"\t" + edited[11].replace(b" ", b"  ") + b" "
    assert_same(model, load_bytes(tmp_path, resign(b"\n".join(edited))))


def test_garbage_and_missing_files(tmp_path):
    rng = np.random.default_rng(5)
    for i in range(20):
        with pytest.raises(InputError):
            load_bytes(tmp_path, rng.bytes(int(rng.integers(1, 3000))))
    with pytest.raises(InputError, match="invalid UTF-8") as e:
        load_bytes(tmp_path, b"#pairwise interactions Vj,f\n1 2\n\xff\xfe 3\n")
    assert e.value.line == 3
    with pytest.raises(InputError, match="not found") as e:
        load_model(tmp_path / "nope")
    assert e.value.line is None and e.value.path == str(tmp_path / "nope")
    with pytest.raises(InputError, match="directory") as e:
        load_model(tmp_path)
    assert e.value.line is None
    with pytest.raises(InputError, match="not a valid .npz"):
        load_bytes(tmp_path, b"PK\x03\x04" + b"\0" * 100)


def test_task_argument(tmp_path):
    for suffix in (".txt", ".npz"):
        save_model(tmp_path / f"r{suffix}", make_model(task="r"))
        save_model(tmp_path / f"c{suffix}", make_model(task="c"))
        assert load_model(tmp_path / f"r{suffix}", task="r").task == "r"
        with pytest.raises(InputError, match="model was trained for regression, not classification"):
            load_model(tmp_path / f"r{suffix}", task="c")
        with pytest.raises(InputError, match="model was trained for classification, not regression"):
            load_model(tmp_path / f"c{suffix}", task="r")


# ----------------------------------------------------------------------------- npz

def npz_entries(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def npz_bytes(entries):
    buf = io.BytesIO()
    np.savez(buf, **entries)
    return buf.getvalue()


def resign_npz(entries):
    arrays = {k: v for k, v in entries.items() if k not in ("meta", "sha256")}
    digest = modelfile._array_digest(entries["meta"].tobytes(), arrays)
    return dict(entries, sha256=np.frombuffer(digest.encode(), np.uint8))


def test_npz_contents(tmp_path):
    model = make_model(n=4, k=2, S=3)
    save_model(tmp_path / "m.npz", model)
    entries = npz_entries((tmp_path / "m.npz").read_bytes())
    assert set(entries) == {"meta", "sha256", "w0", "w", "V", "w0s", "ws", "Vs"}
    meta = json.loads(entries["meta"].tobytes())
    assert meta["format"] == "fmcli-model" and meta["n_samples"] == 3 and meta["y_min"] == 1.0
    assert entries["Vs"].shape == (3, 4, 2) and entries["w0"].shape == ()


def test_npz_damage(tmp_path):
    model = make_model(n=5, k=2, S=2)
    save_model(tmp_path / "m.npz", model)
    data = (tmp_path / "m.npz").read_bytes()
    for length in [3, 4, 30, len(data) // 2, len(data) - 22, len(data) - 1]:
        with pytest.raises(InputError):
            load_bytes(tmp_path, data[:length])
    entries = npz_entries(data)

    def with_meta(fn):
        meta = json.loads(entries["meta"].tobytes())
        fn(meta)
        return resign_npz(dict(entries, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))

    cases = [
        (dict(entries, w=entries["w"] + 1e-9), "checksum mismatch"),
        (resign_npz(dict(entries, w=entries["w"][:-1])), "array w has shape (4,), expected (5,)"),
        (resign_npz(dict(entries, V=np.zeros(entries["V"].shape, np.float32))), "dtype float32"),
        (resign_npz(dict(entries, extra=np.zeros(1))), "unexpected entries"),
        (resign_npz({k: v for k, v in entries.items() if k != "Vs"}), "samples"),
        ({k: v for k, v in entries.items() if k != "meta"}, "missing meta"),
        (dict(entries, meta=np.frombuffer(b"{bad json", np.uint8)), "bad metadata JSON"),
        (dict(entries, meta=np.frombuffer(b"\xff\xfe", np.uint8)), "not UTF-8"),
        (with_meta(lambda m: m.update(format_version=7)), "format version 7 is newer"),
        (with_meta(lambda m: m.update(n_samples=3)), "expected (3,)"),
        (with_meta(lambda m: m.update(k=3)), "expected (5, 3)"),
        (resign_npz(dict(entries, ws=np.full_like(entries["ws"], np.inf))), "non-finite"),
        (dict(entries, w=np.array(["a", "b"])), "dtype"),
    ]
    for i, (bad, words) in enumerate(cases):
        with pytest.raises(InputError) as e:
            load_bytes(tmp_path, npz_bytes(bad), name=f"bad{i}.npz")
        assert words in e.value.message, (i, str(e.value))
    # an object array needs pickle: refused, never unpickled
    obj = dict(entries, w=np.array([{"a": 1}], dtype=object))
    buf = io.BytesIO()
    np.savez(buf, **obj)
    with pytest.raises(InputError, match="not a valid .npz"):
        load_bytes(tmp_path, buf.getvalue())


# ----------------------------------------------------------------------------- mutations

def _small_files():
    import tempfile

    model = make_model(n=4, k=2, S=2, seed=11)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in ("m.txt", "m.npz"):
            save_model(os.path.join(d, name), model)
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
    return model, out


SMALL_MODEL, SMALL_FILES = _small_files()

mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 8)),
    st.tuples(st.just("set"), st.floats(0, 1, exclude_max=True), st.sampled_from(b" \n#.-0123456789e")),
)


def mutate(data, ops):
    for op in ops:
        pos = int(op[1] * len(data)) if data else 0
        if op[0] == "flip" and data:
            data = data[:pos] + bytes([data[pos] ^ (1 << op[2])]) + data[pos + 1:]
        elif op[0] == "truncate":
            data = data[:pos]
        elif op[0] == "insert":
            data = data[:pos] + op[2] + data[pos:]
        elif op[0] == "delete":
            data = data[:pos] + data[pos + op[2]:]
        elif op[0] == "set" and data:
            data = data[:pos] + bytes([op[2]]) + data[pos + 1:]
    return data


@pytest.mark.parametrize("name", ["m.txt", "m.npz"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_mutations_never_crash(tmp_path, name, ops):
    data = mutate(SMALL_FILES[name], ops)
    path = tmp_path / name
    path.write_bytes(data)
    try:
        loaded = load_model(path)
    except InputError:
        return
    if name == "m.txt" and b"#fmcli" not in data:
        # every fmcli line is gone: by definition a libFM file (documented); it loaded cleanly
        assert loaded.meta == {"source_format": "libfm"}
        return
    assert_same(SMALL_MODEL, loaded)


# ----------------------------------------------------------------------------- atomicity

@pytest.mark.parametrize("suffix", [".txt", ".npz"])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"model{suffix}"

    def boom(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        save_model(path, make_model(S=2))
    assert os.listdir(tmp_path) == []
    # an existing file is left as it was
    monkeypatch.undo()
    save_model(path, make_model(seed=1))
    before = path.read_bytes()
    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OSError):
        save_model(path, make_model(seed=2))
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]


def test_failure_midway_through_text(tmp_path, monkeypatch):
    path = tmp_path / "model"
    calls = []
    real = modelfile._format_rows

    def flaky(*args):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("midway")
        return real(*args)
    real = modelfile._sample_bytes
    monkeypatch.setattr(modelfile, "_sample_bytes", flaky)      # in the second sample line
    with pytest.raises(MemoryError):
        save_model(path, make_model(S=3))
    assert len(calls) == 2 and os.listdir(tmp_path) == []


def test_non_finite_model_is_not_saved(tmp_path):
    model = make_model()
    model.V[1, 1] = np.nan
    for name in ("m.txt", "m.npz"):
        with pytest.raises(FmcliError, match="non-finite"):
            save_model(tmp_path / name, model)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- big files

@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    model = make_model(n=600, k=8, S=20, seed=4)   # big enough for numpy's block parser
    path = tmp_path_factory.mktemp("big") / "big.fm"
    save_model(path, model)
    return model, path, path.read_bytes()


def test_big_file_round_trip_and_errors(tmp_path, big_file):
    model, path, data = big_file
    assert_same(model, load_model(path))
    import base64
    lines = body_of(data).split(b"\n")
    target = lines.index(next(x for x in lines if x.startswith(b"#fmcli-sample 13 "))) + 1
    line = lines[target - 1]
    cut = len(b"#fmcli-sample 13 ")
    # the bytes of sample 13's V[77, 0]: after w0 (8 bytes), w (600 values), 77 rows of V
    at = 8 + 8 * (600 + 77 * 8)
    raw = bytearray(base64.b64decode(line[cut:]))
    raw[at:at + 8] = np.array([np.inf]).tobytes()
    inf_line = line[:cut] + base64.b64encode(bytes(raw))
    chars = 4 * -(-8 * (1 + 600 + 600 * 8) // 3)
    for new, words in [(line[:-4], f"holds {chars - 4} base64 characters, expected {chars}"),
                       (line[:cut + 100] + b"!" + line[cut + 101:], "bad base64"),
                       (line[:cut - 3] + b"12 " + line[cut:], "expected the line '#fmcli-sample 13 ...'"),
                       (inf_line, "sample 13: V holds non-finite parameters")]:
        edited = lines.copy()
        edited[target - 1] = new
        with pytest.raises(InputError) as e:
            load_bytes(tmp_path, resign(b"\n".join(edited)))
        assert words in e.value.message and e.value.line == target, str(e.value)
    # the same file as version 1 wrote it: samples as text lines
    lines = body_of(v1_text(model)).split(b"\n")
    target = lines.index(b"#sample 13") + 1 + 1 + 600 + 77   # a V line of sample 13
    for new, words in [(b"1 2 3 4 5 6 7 x", "not a number"), (b"1 2 3 4 5 6 7", "expected 8 values"),
                       (b"1 2 3 4 5 6 7 1e400", "non-finite"), (b"1 2 3 4 5 6 7 8 9", "expected 8 values"),
                       (b"1 2 3 4 5 6 7 1e200", "absurd value")]:
        edited = lines.copy()
        edited[target - 1] = new
        with pytest.raises(InputError) as e:
            load_bytes(tmp_path, resign(b"\n".join(edited)))
        assert words in e.value.message and e.value.line == target, str(e.value)
    # unusual but valid spacing in a big block still loads (general path)
    edited = lines.copy()
    edited[target - 1] = b" " + edited[target - 1].replace(b" ", b"   ")
    assert_same(model, load_bytes(tmp_path, resign(b"\n".join(edited))))


# ----------------------------------------------------------------------------- metadata schema (CLI)

@pytest.fixture(scope="module")
def trained_files(tmp_path_factory):
    """Models written by `fmcli train`: (folder, {name: bytes}) of an SGD classifier, an
    MCMC classifier with samples and an ALS regression model."""
    from cli_contract import run_cli

    d = tmp_path_factory.mktemp("trained")
    data = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata")
    runs = {"sgd-c.fm": ["-task", "c", "-method", "sgd", "-train", f"{data}/clicks.train.libfm"],
            "mcmc-c.fm": ["-task", "c", "-method", "mcmc", "-train", f"{data}/clicks.train.libfm"],
            "als-r.fm": ["-task", "r", "-method", "als", "-train", f"{data}/movies.train.libfm",
                         "-regular", "0,1,1"]}
    files = {}
    for name, args in runs.items():
        code, _, err = run_cli(["train", *args, "-iter", "3", "-dim", "1,1,2", "-save_model",
                                d / name, "-q"])
        assert code == 0, err
        files[name] = (d / name).read_bytes()
    return d, files


def _set(path, value):
    """fn(meta) that sets the field at `path` ("meta.options.dim": meta["meta"]["options"]["dim"])."""
    def fn(m):
        *parents, last = path.split(".")
        for p in parents:
            m = m[p]
        m[last] = value
    return fn


@pytest.mark.parametrize("name, field, value, named", [
    ("sgd-c.fm", "link", "identity", "link: 'identity' is not a link of classification"),
    ("als-r.fm", "link", "probit", "link: 'probit' is not a link of regression"),
    ("als-r.fm", "task", "c", "link: 'identity' is not a link of classification"),
    ("sgd-c.fm", "meta.relations", "r", "meta.relations: expected a list"),
    ("sgd-c.fm", "meta.relations", [{"name": 3, "offset": 0, "n_features": 1}], "meta.relations[0].name"),
    ("sgd-c.fm", "meta.relations", [{"name": "r", "offset": "0", "n_features": 1}], "meta.relations[0].offset"),
    ("sgd-c.fm", "meta.relations", [{"name": "r"}], "meta.relations[0].offset"),
    ("sgd-c.fm", "meta.relations", [{"name": "r", "offset": 0, "n_features": 10 ** 9}],
     "meta.relations[0].n_features: offset 0 + 1000000000 features exceed"),
    ("sgd-c.fm", "meta.relations", [{"name": "a", "offset": 5, "n_features": 5},
                                    {"name": "b", "offset": 7, "n_features": 1}], "meta.relations[1].offset"),
    ("sgd-c.fm", "meta.relations", [None], "meta.relations[0]: expected an object"),
    ("sgd-c.fm", "meta", [], "meta: expected an object"),
    ("sgd-c.fm", "meta.options", 7, "meta.options: expected an object"),
    ("sgd-c.fm", "meta.options.dim", [1, 1], "meta.options.dim: expected three (or more) integers"),
    ("sgd-c.fm", "meta.options.dim", [1, 1, 3], "meta.options.dim: [1, 1, 3] contradicts"),
    ("sgd-c.fm", "meta.options.task", "r", "meta.options.task: 'r' contradicts task 'c'"),
    ("sgd-c.fm", "meta.options.iter", -3, "meta.options.iter"),
    ("sgd-c.fm", "meta.options.learn_rate", "fast", "meta.options.learn_rate"),
    ("sgd-c.fm", "meta.options.optimizer", 3, "meta.options.optimizer: expected a name"),
    ("sgd-c.fm", "meta.method", ["sgd"], "meta.method: expected a name"),
    ("sgd-c.fm", "meta.method", "als", "meta.options.method: 'sgd' contradicts meta.method 'als'"),
    ("sgd-c.fm", "meta.source_format", "csv", "meta.source_format"),
    ("sgd-c.fm", "k", "2", "k: expected an integer"),
    ("sgd-c.fm", "use_w0", 1, "use_w0: expected true or false"),
    ("sgd-c.fm", "y_min", [0], "y_min: expected a finite number"),
    ("sgd-c.fm", "fmcli_version", 1, "fmcli_version"),
    ("sgd-c.fm", "colour", "red", "colour: unknown field"),
    ("mcmc-c.fm", "sample_dtype", "float16", "sample_dtype: expected one of 'float32', 'float64'"),
    ("mcmc-c.fm", "meta.options.keep_samples", 1.5, "meta.options.keep_samples"),
])
def test_edited_metadata_is_refused_naming_the_field(tmp_path, run, trained_files, name, field, value, named):
    """Metadata edited and re-signed: exit 2, one line naming the file and the field, for
    predict and for a warm start (never a TypeError / KeyError / wrong probabilities)."""
    folder, files = trained_files
    path = write(tmp_path / name, edit_meta(files[name], _set(field, value)))
    data = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata")
    test = f"{data}/clicks.test.libfm" if name.endswith("-c.fm") else f"{data}/movies.test.libfm"
    for args in (["predict", "-model", path, "-test", test, "-out", tmp_path / "p"],
                 ["train", "-task", name[-4], "-load_model", path, "-train", test, "-test", test,
                  "-iter", "1", "-out", tmp_path / "p"]):
        code, out, err = run(*args)
        lines = err.strip().split("\n")
        assert code == 2 and len(lines) == 1 and out == "", (args[0], err)
        assert lines[0].startswith(f"fmcli: error: {path}:") and f"bad model metadata: {named}" in lines[0], err
        assert not (tmp_path / "p").exists()


def test_edited_metadata_mcmc_layout(tmp_path, run, trained_files):
    """Shapes in the metadata must match the sample lines."""
    folder, files = trained_files
    for field, value, words in [("n_samples", 2, "unexpected line '#fmcli-sample 2 "),
                                ("n_samples", 9, "expected the line '#fmcli-sample 3 ...'"),
                                ("sample_dtype", "float64", "base64 characters, expected")]:
        path = write(tmp_path / "m.fm", edit_meta(files["mcmc-c.fm"], _set(field, value)))
        code, out, err = run("predict", "-model", path, "-test", path, "-out", tmp_path / "p")
        assert code == 2 and words in err and err.count("\n") == 1, err


@pytest.mark.parametrize("value, words", [("1e200", "absurd value"), ("-1e151", "absurd value"),
                                          ("inf", "non-finite value"), ("nan", "non-finite value")])
def test_absurd_or_non_finite_parameters_are_refused(tmp_path, run, trained_files, value, words):
    folder, files = trained_files
    lines = body_of(files["als-r.fm"]).split(b"\n")
    at = lines.index(b"#pairwise interactions Vj,f") + 3
    lines[at - 1] = value.encode() + b" 0.5"
    path = write(tmp_path / "m.fm", resign(b"\n".join(lines)))
    code, out, err = run("predict", "-model", path, "-test", path, "-out", "-")
    assert code == 2 and out == "" and f"{path}:{at}: {words} in the pairwise section" in err, err
    model = load_model(write(tmp_path / "ok.fm", files["als-r.fm"]))
    model.V[0, 0] = float(value)
    with pytest.raises(FmcliError, match="non-finite|absurd"):
        save_model(tmp_path / "never.fm", model)
    assert not (tmp_path / "never.fm").exists()


def test_predict_defaults_to_the_model_task_and_warns_on_regression_targets(tmp_path, run, trained_files):
    folder, files = trained_files
    data = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata")
    for name in ("sgd-c.fm", "mcmc-c.fm"):
        model = write(tmp_path / name, files[name])
        code, out, err = run("predict", "-model", model, "-test", f"{data}/movies.test.libfm", "-out", "-")
        assert code == 0 and len(out.split()) == 2400
        assert all(0 <= float(p) <= 1 for p in out.split())       # the model's task: probabilities
        warnings = [line for line in err.split("\n") if line.startswith("fmcli: warning:")]
        assert len(warnings) == 1 and f"{data}/movies.test.libfm: row 1 has target 2, not a class" in warnings[0] \
            and str(model) in warnings[0], err
        # class data: no warning
        code, out, err = run("predict", "-model", model, "-test", f"{data}/clicks.test.libfm", "-out", "-")
        assert code == 0 and "warning" not in err and "accuracy=" in err
    # a regression model on class data is fine (0/1 targets are numbers too)
    code, out, err = run("predict", "-model", write(tmp_path / "r.fm", files["als-r.fm"]),
                         "-test", f"{data}/clicks.test.libfm", "-out", tmp_path / "p")
    assert code == 0 and "warning" not in err and "rmse=" in err


def _meta_paths(obj, prefix=()):
    """Every path to a value inside the metadata dict (dict keys and list indices)."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _meta_paths(value, prefix + (key,))


@pytest.mark.parametrize("name", ["sgd-c.fm", "mcmc-c.fm", "als-r.fm"])
def test_any_edited_metadata_field_loads_or_is_an_input_error(tmp_path, trained_files, name):
    """Each field of real metadata (plus relations) set to values of every JSON type and
    re-signed: the file loads and predicts, or is refused with InputError, never anything else."""
    from fmcli.predict import model_relations

    folder, files = trained_files
    base = edit_meta(files[name], lambda m: m["meta"].update(
        relations=[{"name": "rel", "offset": 1, "n_features": 2}]))
    body = body_of(base).split(b"\n")
    meta = json.loads(body[-2][len(b"#fmcli-meta "):])
    rng = np.random.default_rng(0)
    values = [None, True, -1, 0, 3, 2.5, 1e308, "x", "inf", "float32", [], [1, 2, 3], {}, {"a": 1}]
    indptr, indices, data = random_csr(20, meta["n_features"], rng)
    for path in _meta_paths(meta):
        for value in values:
            def setp(m, path=path, value=value):
                for p in path[:-1]:
                    m = m[p]
                m[path[-1]] = value
            f = write(tmp_path / "m.fm", edit_meta(base, setp))
            try:
                model = load_model(f)
            except InputError:
                continue
            try:
                model_relations(model, f, ())
            except FmcliError:
                pass
            assert np.isfinite(model.predict(indptr, indices, data)).all()

"""Binary cache of parsed text files: round trip, reuse, invalidation, damage, option checks."""

import os

import numpy as np
import pytest

from fmcli.errors import InputError
from fmcli.io import cache
from fmcli.io.load import load_dataset
from fmcli.io.libsvm import iter_libfm_chunks, read_libfm

TEXT = "1 0:1 3:0.5\n-1 2:1\n0 1:2 3:1\n"


def same(a, b):
    for name in ("indptr", "indices", "data", "y"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
    assert a.n_features == b.n_features


@pytest.fixture
def text(tmp_path):
    p = tmp_path / "d.libfm"
    p.write_text(TEXT)
    return str(p)


def test_round_trip_is_memory_mapped(text, tmp_path):
    d = read_libfm(text, targets="optional")
    out = str(tmp_path / "x.fmcache")
    cache.write_cache(d, out, cache.text_identity(text))
    back = cache.read_cache(out)
    same(d, back)
    assert isinstance(back.indices, np.memmap) and not back.indices.flags.writeable
    assert back.indices.ctypes.data % 64 == 0


def test_streamed_build_equals_whole_file_read(tmp_path, rng):
    """The cache is written from the reader's chunks (here of a few lines) through temporary
    files: the same arrays,
    n_features and max_id_line as one read of the whole file, and the same file:line errors."""
    lines = ["# a comment: with colons 1:2", ""]
    for i in range(400):
        ids = rng.choice(5000 if i != 123 else 9000, rng.integers(0, 6), replace=False)
        lines.append(" ".join([f"{rng.normal():.6g}"] + [f"{j}:{rng.normal():.5g}" for j in ids]))
    lines[200] = "1"                                  # a row without features
    src = tmp_path / "d.libfm"
    src.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "d.fmcache")
    cache.write_cache_chunks(out, iter_libfm_chunks(str(src), chunk_bytes=300), cache.text_identity(str(src)))
    whole = read_libfm(str(src), targets="optional")
    back = cache.read_cache(out)
    same(whole, back)
    assert (back.n_rows, back.max_id_line) == (whole.n_rows, whole.max_id_line)
    src.write_text("\n".join(lines[:300] + ["1 2:x"] + lines[300:]) + "\n")
    with pytest.raises(InputError) as err:
        cache.write_cache_chunks(str(tmp_path / "bad.fmcache"), iter_libfm_chunks(str(src), chunk_bytes=300), None)
    assert ":301:" in str(err.value) and not os.path.exists(tmp_path / "bad.fmcache")
    assert sorted(os.listdir(tmp_path)) == ["d.fmcache", "d.libfm"]     # no temporary left


def test_built_beside_the_text_then_reused(text, monkeypatch):
    d = load_dataset(text)
    assert os.path.exists(text + ".fmcache")
    same(d, read_libfm(text))

    def no_text(*a, **k):
        raise AssertionError("text read again")
    monkeypatch.setattr("fmcli.io.libsvm.read_libfm", no_text)
    again = load_dataset(text)
    same(d, again)
    assert again.source == text


def test_changed_text_invalidates(text):
    load_dataset(text)
    with open(text, "a") as f:
        f.write("1 4:1\n")
    d = load_dataset(text)
    assert d.n_rows == 4 and d.n_features == 5
    same(d, cache.read_cache(text + ".fmcache", cache.text_identity(text), text_xxh64=lambda: cache.text_xxh64(text)))


def test_same_size_new_content_same_mtime_invalidates(text):
    load_dataset(text)
    st = os.stat(text)
    with open(text, "w") as f:
        f.write(TEXT.replace("0.5", "0.7"))
    os.utime(text, ns=(st.st_atime_ns, st.st_mtime_ns))     # size and mtime unchanged
    assert load_dataset(text).data[1] == np.float32(0.7)


@pytest.mark.parametrize("damage", ["truncate", "magic", "header", "garbage"])
def test_damaged_cache_is_rebuilt(text, damage):
    load_dataset(text)
    path = text + ".fmcache"
    raw = bytearray(open(path, "rb").read())
    if damage == "truncate":
        raw = raw[:-8]
    elif damage == "magic":
        raw[0] ^= 1
    elif damage == "header":
        raw[30] ^= 1
    else:
        raw = bytearray(b"\xff" * 40)
    open(path, "wb").write(bytes(raw))
    with pytest.raises(cache.CorruptCache):
        cache.read_cache(path, cache.text_identity(text))
    same(load_dataset(text), read_libfm(text))
    cache.read_cache(path, cache.text_identity(text), text_xxh64=lambda: cache.text_xxh64(text))  # valid again


def test_options_checked_on_cached_data(text, tmp_path):
    load_dataset(text, targets="optional")             # cache built
    c = load_dataset(text, classes=True)
    same(c, read_libfm(text, classes=True))                  # 0 -> -1
    with pytest.raises(InputError, match=":1:"):             # the reader's file:line error
        load_dataset(text, max_feature_id=2)
    bad = tmp_path / "r.libfm"
    bad.write_text("2 0:1\n")
    load_dataset(str(bad))
    with pytest.raises(InputError, match=":1:"):
        load_dataset(str(bad), classes=True)
    missing = tmp_path / "m.libfm"
    missing.write_text("1 0:1\n0:1\n")
    d = load_dataset(str(missing), targets="optional")
    assert np.isnan(d.y[1])
    with pytest.raises(InputError, match=":2:"):
        load_dataset(str(missing), targets="required")


def test_no_cache_when_disabled_stdin_or_unwritable(text, tmp_path):
    load_dataset(text, cache=False)
    assert not os.path.exists(text + ".fmcache")
    ro = tmp_path / "ro"
    ro.mkdir()
    p = ro / "d.libfm"
    p.write_text(TEXT)
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        same(load_dataset(str(p)), read_libfm(str(p)))
        assert not os.path.exists(str(p) + ".fmcache")
    finally:
        os.chmod(ro, 0o755)

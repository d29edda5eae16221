"""Issue 11, items 1-2: every array of a cache or binary data file is checked before use
(checksums, then the reader's rules), and a cache never stands for a text it does not match
(in-place edits that keep size and mtime, --verify-cache)."""

import json
import os
import time

import numpy as np
import pytest

from fmcli.data import SparseData
from fmcli.io import cache

COMMON = ["-task", "r", "-method", "als", "-dim", "1,1,4", "-iter", "3", "-regular", "0,2,2", "-seed", "7"]


def write_text(path, rng, n_rows, n_features=60):
    lines = []
    for _ in range(n_rows):
        ids = np.sort(rng.choice(n_features, 4, replace=False))
        lines.append(f"{rng.uniform(1, 5):.4f} " + " ".join(f"{j}:{rng.uniform(0.5, 2):.4f}" for j in ids))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def sets(tmp_path):
    rng = np.random.default_rng(11)
    return (write_text(tmp_path / "tr.libfm", rng, 400), write_text(tmp_path / "te.libfm", rng, 100))


def flip(path, region, bit=0x40):
    """Flip one bit of a high byte in the middle of array `region` of the binary file `path`:
    a huge row pointer or feature id, an infinite or NaN value or target."""
    with open(path, "rb") as f:
        header, start, layout = cache._header(f)
    name, dtype, off, count = next(a for a in layout if a[0] == region)
    size = np.dtype(dtype).itemsize
    at = start + off + (count // 2) * size + size // 2 + (1 if size == 4 else 0)
    raw = bytearray(open(path, "rb").read())
    raw[at] ^= bit
    open(path, "wb").write(bytes(raw))


def error_line(err):
    """The one error line on stderr (status lines may come before it)."""
    errors = [line for line in err.splitlines() if line.startswith("fmcli: error:")]
    assert len(errors) == 1 and err.rstrip("\n").endswith(errors[0]), err
    return errors[0]


def predictions(run, tmp_path, train, test, *extra, name="out.txt"):
    out = tmp_path / name
    code, _, err = run("train", "-train", train, "-test", test, *COMMON, "-out", out, *extra)
    assert code == 0, err
    return out.read_text(), err


@pytest.mark.parametrize("region", ["indptr", "indices", "data", "y"])
def test_flipped_byte_in_cache_is_noted_and_rebuilt(run, sets, tmp_path, region):
    train, test = sets
    ref, _ = predictions(run, tmp_path, train, test, "--no-cache", name="ref.txt")
    first, _ = predictions(run, tmp_path, train, test)
    assert first == ref and os.path.exists(train + ".fmcache")
    flip(train + ".fmcache", region)
    again, err = predictions(run, tmp_path, train, test)
    assert again == ref
    notes = [line for line in err.splitlines() if "damaged cache" in line]
    assert len(notes) == 1 and f"checksum of {region}" in notes[0] and train + ".fmcache" in notes[0]
    cache.read_cache(train + ".fmcache")                          # rebuilt, valid again
    _, err = predictions(run, tmp_path, train, test)
    assert "damaged" not in err


@pytest.mark.parametrize("region", ["indptr", "indices", "data", "y"])
def test_flipped_byte_in_binary_data_file_is_an_error(run, sets, tmp_path, region):
    train, test = sets
    btr, bte = tmp_path / "tr.fmbin", tmp_path / "te.fmbin"
    assert run("convert", "--binary", "-in", train, "-in", test, "-out", btr, "-out", bte)[0] == 0
    model = tmp_path / "m.fm"
    assert run("train", "-train", btr, *COMMON, "-save_model", model)[0] == 0
    flip(str(btr), region)
    flip(str(bte), region)
    out = tmp_path / "out.txt"
    for args in (["train", "-train", btr, "-test", test, *COMMON, "-out", out],
                 ["train", "-train", train, "-test", bte, *COMMON, "-out", out],
                 ["train", "-train", train, "-test", test, "-validation", btr, *COMMON, "-out", out],
                 ["predict", "-model", model, "-test", bte, "-out", out]):
        code, _, err = run(*args)
        bad = btr if btr in args else bte
        assert code == 2 and error_line(err).startswith(f"fmcli: error: {bad}: corrupt binary data file "
                                                         f"(checksum of {region})")
        assert not out.exists()


def crafted(tmp_path, **change):
    """A binary data file whose arrays (and checksums) are written as given: only the bound
    check can refuse it."""
    arrays = {"indptr": np.array([0, 2, 3], np.int64), "indices": np.array([0, 4, 2], np.int32),
              "data": np.array([1, 2, 3], np.float32), "y": np.array([1, np.nan], np.float32),
              "n_features": 5}
    arrays.update(change)
    path = str(tmp_path / "crafted.fmbin")
    cache.write_cache(SparseData(arrays["indptr"], arrays["indices"], arrays["data"], arrays["y"],
                                 arrays["n_features"]), path)
    return path


def test_crafted_file_passes_when_valid(tmp_path):
    d = cache.read_cache(crafted(tmp_path))
    assert d.n_rows == 2 and d.n_features == 5 and np.isnan(d.y[1])


@pytest.mark.parametrize("change, message", [
    ({"indices": np.array([0, 5, 2], np.int32)}, "feature id 5 at entry 1 outside 0..4"),
    ({"indices": np.array([0, -1, 2], np.int32), "n_features": 3}, "feature id -1 at entry 1"),
    ({"n_features": 9}, "largest feature id 4 but 9 features"),
    ({"indptr": np.array([0, 4, 3], np.int64)}, "row pointers decrease after row 2"),
    ({"indptr": np.array([1, 2, 3], np.int64)}, "row pointers do not start at 0"),
    ({"indptr": np.array([0, 1, 2], np.int64)}, "row pointers do not end at the number of entries"),
    ({"data": np.array([1, np.inf, 3], np.float32)}, "value inf at entry 1 is not finite"),
    ({"data": np.array([1, 2, np.nan], np.float32)}, "value nan at entry 2 is not finite"),
    ({"y": np.array([1, -np.inf], np.float32)}, "target of row 2 is infinite"),
    ({"indptr": np.array([0], np.int64), "indices": np.empty(0, np.int32), "data": np.empty(0, np.float32),
      "y": np.empty(0, np.float32), "n_features": 0}, "no rows"),
])
def test_bound_check_refuses_what_the_text_reader_refuses(tmp_path, run, change, message):
    path = crafted(tmp_path, **change)
    with pytest.raises(cache.CorruptCache, match=message):
        cache.read_cache(path)
    code, _, err = run("train", "-train", path, "-test", path, *COMMON, "-out", tmp_path / "out.txt")
    assert code == 2 and error_line(err).startswith(f"fmcli: error: {path}: corrupt binary data file ({message}")
    assert not (tmp_path / "out.txt").exists()


def rewrite_header(path, edit, fix_checksum=True):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[8:16], "little")
    header = json.loads(raw[16:16 + n])
    edit(header)
    if fix_checksum:
        header["sha256"] = cache._header_sum(header)
    blob = json.dumps(header, sort_keys=True).encode()
    start = (16 + n + 63) // 64 * 64
    head = cache.MAGIC + len(blob).to_bytes(8, "little") + blob
    open(path, "wb").write(head + b"\0" * ((16 + len(blob) + 63) // 64 * 64 - len(head)) + raw[start:])


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(n_rows=3), "array layout"),
    (lambda h: h.update(nnz=2), "array layout"),
    (lambda h: h.update(n_rows=2.0), "header field n_rows"),
    (lambda h: h.update(n_features=-1), "header field n_features"),
    (lambda h: h.update(n_features=2**31), "header field n_features"),
    (lambda h: h.update(max_id_line=True), "header field max_id_line"),
    (lambda h: h["arrays"][1].__setitem__(1, "<i8"), "array layout"),
    (lambda h: h["arrays"][2].__setitem__(2, 0), "array layout"),
    (lambda h: h["arrays"][3].__setitem__(4, "0" * 16), "checksum of y"),
    (lambda h: h["arrays"][3].__setitem__(4, 17), "array layout"),
    (lambda h: h.update(text={"size": 1}), "header field text"),
])
def test_header_fields_are_checked(tmp_path, edit, message):
    path = crafted(tmp_path)
    rewrite_header(path, edit)
    with pytest.raises(cache.CorruptCache, match=message):
        cache.read_cache(path)


def test_header_checksum_padding_and_size(tmp_path):
    path = crafted(tmp_path)
    rewrite_header(path, lambda h: h.update(max_id_line=3), fix_checksum=False)
    with pytest.raises(cache.CorruptCache, match="header checksum"):
        cache.read_cache(path)
    path = crafted(tmp_path)
    with open(path, "rb") as f:
        header, start, layout = cache._header(f)
    raw = bytearray(open(path, "rb").read())
    raw[start + 3 * 8] = 1                      # the zero bytes after indptr
    open(path, "wb").write(bytes(raw))
    with pytest.raises(cache.CorruptCache, match="padding after indptr"):
        cache.read_cache(path)
    # the bytes between the header and the arrays, and the header's own blanks (a changed blank
    # parses to the same JSON): found by bench/fuzz.py
    path = crafted(tmp_path)
    raw = bytearray(open(path, "rb").read())
    raw[start - 1] = 7
    open(path, "wb").write(bytes(raw))
    with pytest.raises(cache.CorruptCache, match="padding after the header"):
        cache.read_cache(path)
    path = crafted(tmp_path)
    raw = bytearray(open(path, "rb").read())
    blank = raw.index(b": ", 16) + 1
    raw[blank] = ord("\t")
    open(path, "wb").write(bytes(raw))
    with pytest.raises(cache.CorruptCache, match="header bytes"):
        cache.read_cache(path)
    path = crafted(tmp_path)
    open(path, "ab").write(b"\0")
    with pytest.raises(cache.CorruptCache, match="bytes after the arrays"):
        cache.read_cache(path)
    rewrite_header(path, lambda h: h.update(version=1))
    with pytest.raises(cache.CacheMiss, match="format version 1") as e:
        cache.read_cache(path)
    assert not isinstance(e.value, cache.CorruptCache)       # an older cache is rebuilt silently


def test_xxh64_reference_values():
    """The published XXH64 (seed 0) values, and the streaming form over uneven pieces."""
    assert cache.xxh64(b"") == "ef46db3751d8e999"
    assert cache.xxh64(b"a") == "d24ec4f1a98c6e5b"
    assert cache.xxh64(b"abc") == "44bc2cf5ad770999"
    assert cache.xxh64(b"Nobody inspects the spammish repetition") == "fbcea83c8a378bf1"
    data = np.random.default_rng(5).integers(0, 256, 10_007, dtype=np.uint8).tobytes()
    h = cache.XXH64()
    for a, b in [(0, 5), (5, 5), (5, 40), (40, 1000), (1000, 1003), (1003, 10_007)]:
        h.update(data[a:b])
    assert h.hexdigest() == cache.xxh64(data) != cache.xxh64(data[:-1])


def edit_in_place(path):
    """Change targets in the middle of the file, keeping its size, atime and mtime."""
    st = os.stat(path)
    raw = open(path, "rb").read()
    mid = len(raw) // 2
    lines = raw[mid:].split(b"\n")[1:200]
    changed = b"\n".join(line[:1].replace(b"1", b"4").replace(b"2", b"3") + line[1:] for line in lines)
    at = mid + raw[mid:].index(b"\n") + 1
    new = raw[:at] + changed + raw[at + len(changed):]
    assert len(new) == len(raw) and new != raw
    time.sleep(0.05)                            # a later tick of the file system's clock
    open(path, "r+b").write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(path)
    assert (st2.st_size, st2.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("racy_ns", [cache.RACY_NS, 0])
def test_large_text_edited_in_place_with_mtime_restored(run, tmp_path, monkeypatch, racy_ns):
    """> 128 KiB, so the change is in neither checksummed end. With RACY_NS 0 only the
    identity (ctime) can catch it; by default the cache, built just after the text was
    written, also checks the whole text."""
    monkeypatch.setattr(cache, "RACY_NS", racy_ns)
    rng = np.random.default_rng(3)
    train = write_text(tmp_path / "big.libfm", rng, 6000)
    test = write_text(tmp_path / "te.libfm", rng, 100)
    assert os.path.getsize(train) > 2 * (128 << 10)
    predictions(run, tmp_path, train, test)                       # the cache is built
    edit_in_place(train)
    cached, _ = predictions(run, tmp_path, train, test, name="cached.txt")
    fresh, _ = predictions(run, tmp_path, train, test, "--no-cache", name="fresh.txt")
    assert cached == fresh
    identity = cache.text_identity(train)
    assert json.loads(open(train + ".fmcache", "rb").read(1 << 16)[16:].split(b"\0")[0])["text"] == identity


def test_verify_cache_checks_the_whole_text(run, tmp_path, monkeypatch):
    """A change no identity field shows (simulated: the cache's recorded identity set to the
    edited file's, as if the clock and inode had been restored) is caught by --verify-cache
    only."""
    monkeypatch.setattr(cache, "RACY_NS", 0)
    rng = np.random.default_rng(4)
    train = write_text(tmp_path / "big.libfm", rng, 6000)
    test = write_text(tmp_path / "te.libfm", rng, 100)
    predictions(run, tmp_path, train, test)
    edit_in_place(train)
    rewrite_header(train + ".fmcache", lambda h: h.update(text=cache.text_identity(train),
                                                          text_seen_ns=time.time_ns()))
    fresh, _ = predictions(run, tmp_path, train, test, "--no-cache", name="fresh.txt")
    stale, _ = predictions(run, tmp_path, train, test, name="stale.txt")
    assert stale != fresh                       # what the default trusts (README)
    verified, err = predictions(run, tmp_path, train, test, "--verify-cache", name="verified.txt")
    assert verified == fresh and "damaged" not in err
    again, _ = predictions(run, tmp_path, train, test, "--verify-cache", name="again.txt")
    assert again == fresh
    code, _, err = run("train", "-train", train, *COMMON, "--verify-cache", "--no-cache")
    assert code == 2 and "exclude each other" in err

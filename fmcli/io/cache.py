"""Binary cache of a parsed libFM text file, memory-mapped on load.

`load_dataset(path)` reuses `path + ".fmcache"` when it is valid for the text file as it is
now, and otherwise reads the text and writes the cache beside it (atomically; silently
skipped when the folder is not writable). Standard input is never cached.

File layout (little-endian):

    magic  b"FMCACHE\\0"                      8 bytes
    u64    length of the JSON header          8 bytes
    JSON   {"version", "n_rows", "nnz", "n_features", "max_id_line",
            "text": {"size", "mtime_ns", "sha256_ends"}, "arrays": [[name, dtype, offset, count], ...],
            "sha256"}                         the header's own checksum (computed with "sha256": "")
    arrays indptr int64, indices int32, data float32, y float32, each at a 64-byte aligned offset

Valid means: magic, version, header checksum and file size match, and the text file has the
recorded size, modification time and SHA-256 of its first and last 64 KiB. Anything else is
a miss: the cache is rebuilt from the text.

The cache holds what the reader returns with optional targets and without class mapping;
the checks of the caller's options (targets required, -1/0/+1 classes, largest feature id)
run on the loaded arrays, and a failing check reads the text again, so that errors carry the
reader's file:line messages.
"""

import hashlib
import json
import os

import numpy as np

from fmcli.data import SparseData
from fmcli.io.atomic import atomic_output

MAGIC = b"FMCACHE\0"
VERSION = 1
SUFFIX = ".fmcache"
_ENDS = 64 << 10
_ARRAYS = (("indptr", "<i8"), ("indices", "<i4"), ("data", "<f4"), ("y", "<f4"))


class CacheMiss(Exception):
    """The cache file is missing, stale, of another version or damaged."""


def cache_path(path):
    return os.fspath(path) + SUFFIX


def text_identity(path):
    """Size, modification time and a checksum of both ends of the text file."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_ENDS))
        if st.st_size > _ENDS:
            f.seek(max(_ENDS, st.st_size - _ENDS))
            h.update(f.read(_ENDS))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": h.hexdigest()}


def _header_sum(header):
    return hashlib.sha256(json.dumps(dict(header, sha256=""), sort_keys=True).encode()).hexdigest()


def write_cache(data, path, text=None):
    """Write SparseData `data` to the cache file `path` (atomically). text: text_identity()
    of the source file (None: a cache that never matches a text file, for `fmcli convert`)."""
    arrays = [np.ascontiguousarray(getattr(data, name), dtype) for name, dtype in _ARRAYS]
    _write_file(path, data.n_rows, data.nnz, data.n_features, data.max_id_line, text,
                [(a.size, lambda f, a=a: f.write(memoryview(a).cast("B"))) for a in arrays])


def _write_file(path, n_rows, nnz, n_features, max_id_line, text, parts):
    """The cache layout, atomically: parts[i] = (element count of array i, a function writing
    its bytes to the open file)."""
    header = {"version": VERSION, "n_rows": int(n_rows), "nnz": int(nnz),
              "n_features": int(n_features), "max_id_line": int(max_id_line),
              "text": text, "arrays": [], "sha256": ""}
    offset = 0
    for (name, dtype), (count, _) in zip(_ARRAYS, parts):
        header["arrays"].append([name, dtype, offset, int(count)])
        offset = (offset + count * np.dtype(dtype).itemsize + 63) // 64 * 64
    header["sha256"] = _header_sum(header)
    blob = json.dumps(header, sort_keys=True).encode()
    start = (16 + len(blob) + 63) // 64 * 64
    with atomic_output(os.fspath(path), binary=True) as f:
        f.write(MAGIC + len(blob).to_bytes(8, "little") + blob)
        for (name, dtype, off, count), (_, write) in zip(header["arrays"], parts):
            f.write(b"\0" * (start + off - f.tell()))
            write(f)


def build_cache(path, cpath, text, max_feature_id=None, chunk_bytes=64 << 20):
    """Parse the text file `path` chunk by chunk (iter_libfm_chunks) into the cache file
    `cpath`, each array first appended to a temporary file beside it, so that neither the
    text nor the parsed arrays are ever whole in memory (a 10M-row file: 0.5 GB of text and
    0.5 GB of arrays). Parse errors are raised as by read_libfm."""
    import shutil
    import tempfile

    from fmcli.io.libsvm import iter_libfm_chunks

    folder = os.path.dirname(os.path.abspath(cpath))
    temps = [tempfile.TemporaryFile(dir=folder) for _ in _ARRAYS]
    try:
        n_rows = nnz = n_features = max_id_line = 0
        temps[0].write(np.zeros(1, "<i8").tobytes())
        for d in iter_libfm_chunks(path, targets="optional", max_feature_id=max_feature_id,
                                   chunk_bytes=chunk_bytes):
            pieces = (d.indptr[1:] + nnz, d.indices, d.data, d.y)
            for t, (_, dtype), a in zip(temps, _ARRAYS, pieces):
                t.write(memoryview(np.ascontiguousarray(a, dtype)).cast("B"))
            n_rows += d.n_rows
            nnz += d.nnz
            if d.n_features > n_features:        # the first line with the largest id, as read_libfm
                n_features, max_id_line = d.n_features, d.max_id_line
        for t in temps:
            t.seek(0)
        counts = (n_rows + 1, nnz, nnz, n_rows)
        _write_file(cpath, n_rows, nnz, n_features, max_id_line, text,
                    [(c, lambda f, t=t: shutil.copyfileobj(t, f, 16 << 20)) for c, t in zip(counts, temps)])
    finally:
        for t in temps:
            t.close()


def read_cache(path, text=None, source=None):
    """SparseData with memory-mapped (read-only) arrays from the cache file `path`.
    text: the text_identity() the cache must record (None: not checked). Raises CacheMiss."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) < 16 or head[:8] != MAGIC:
                raise CacheMiss("not an fmcli cache")
            n = int.from_bytes(head[8:], "little")
            if n > 1 << 20:
                raise CacheMiss("header too long")
            header = json.loads(f.read(n))
        size = os.path.getsize(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CacheMiss(str(e)) from None
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise CacheMiss("other version")
    if header.get("sha256") != _header_sum(header):
        raise CacheMiss("header checksum")
    if text is not None and header.get("text") != text:
        raise CacheMiss("stale: the text file changed")
    start = (16 + n + 63) // 64 * 64
    arrays = {}
    for name, dtype, off, count in header["arrays"]:
        end = start + off + count * np.dtype(dtype).itemsize
        if end > size:
            raise CacheMiss("truncated")
        arrays[name] = np.memmap(path, dtype, "r", start + off, (count,)) if count else np.empty(0, dtype)
    if len(arrays["indptr"]) != header["n_rows"] + 1 or len(arrays["indices"]) != header["nnz"]:
        raise CacheMiss("sizes")
    return SparseData(arrays["indptr"], arrays["indices"], arrays["data"], arrays["y"],
                      header["n_features"], source or os.fspath(path), header["max_id_line"])


def _fits(d, targets, classes, max_feature_id):
    """`d` read with optional targets and no class mapping, checked against the caller's
    options; None when the text reader has an error to report. Class targets are mapped."""
    y = np.asarray(d.y)
    if targets == "required" and np.isnan(y).any():
        return None
    if max_feature_id is not None and d.n_features - 1 > max_feature_id:
        return None
    if classes:
        known = np.isnan(y) | (y == 1) | (y == 0) | (y == -1)
        if not known.all():
            return None
        y = np.where(y == 0, np.float32(-1), y).astype(np.float32)
        d = SparseData(d.indptr, d.indices, d.data, y, d.n_features, d.source, d.max_id_line)
    return d


def is_binary(path):
    """True for a file written by `fmcli convert --binary` (or a cache file given directly)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_binary(path, *, targets="required", classes=False, max_feature_id=None):
    """A binary data file given by name, checked against the caller's options."""
    from fmcli.errors import InputError

    try:
        d = read_cache(path)
    except CacheMiss as e:
        raise InputError(path, None, f"corrupt binary data file ({e})") from None
    checked = _fits(d, targets, classes, max_feature_id)
    if checked is None:
        what = {"required": "rows without a target"} if targets == "required" and np.isnan(d.y).any() else {}
        raise InputError(path, None, what.get("required", "targets or feature ids do not fit the options "
                                                          "(convert it to text with --to-text to find the row)"))
    return checked


def load_dataset(path, *, cache=True, targets="required", classes=False, max_feature_id=None):
    """read_libfm(path, ...), through the binary cache beside the file when `cache` is true;
    a binary data file (`fmcli convert --binary`) is read directly."""
    from fmcli.io.libsvm import read_libfm

    kw = {"targets": targets, "classes": classes, "max_feature_id": max_feature_id}
    if path != "-" and os.path.isfile(path) and is_binary(path):
        return read_binary(path, **kw)
    if not cache or path == "-" or not os.path.isfile(path):
        return read_libfm(path, **kw)
    text = text_identity(path)
    cpath = cache_path(path)
    try:
        d = _fits(read_cache(cpath, text, source=os.fspath(path)), targets, classes, max_feature_id)
    except CacheMiss:
        d = None
        if os.access(os.path.dirname(os.path.abspath(cpath)), os.W_OK):
            try:
                # file-backed arrays: a learner that copies the rows can drop their pages
                # (release_pages) instead of keeping a second heap copy
                build_cache(path, cpath, text, max_feature_id)
                d = read_cache(cpath, text, source=os.fspath(path))
            except (OSError, CacheMiss):
                pass    # a cache is an optimisation; a full disk must not fail the run
        if d is None:
            d = read_libfm(path, targets="optional", max_feature_id=max_feature_id)
        d = _fits(d, targets, classes, max_feature_id)
    return d if d is not None else read_libfm(path, **kw)


def _mapping(a):
    """The mmap object under a memory-mapped array (through views), or None for heap memory."""
    import mmap

    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "_mmap", None) if isinstance(base, np.memmap) else getattr(base, "base", None)
    return base


def release_pages(a, lo=0, hi=None):
    """Drop the resident pages of elements lo..hi (of the flat array) of a memory-mapped
    (read-only, file-backed) array: a learner that has copied them would otherwise keep them
    in its peak RSS although it never reads them again (a later read faults them back in, so
    this is only a hint). Heap arrays are left alone."""
    import mmap

    m = _mapping(a)
    if m is None or not hasattr(m, "madvise") or not hasattr(mmap, "MADV_DONTNEED") or a.size == 0 \
            or not a.flags.c_contiguous:
        return
    hi = a.size if hi is None else hi       # element offsets in the (flat) array
    base = np.frombuffer(m, np.uint8).ctypes.data
    start = a.ctypes.data + lo * a.itemsize - base
    end = a.ctypes.data + hi * a.itemsize - base
    start = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE       # whole pages inside the range only
    if end < len(m):        # (the mapping's last page may be released whole)
        end = end // mmap.PAGESIZE * mmap.PAGESIZE
    if end > start:
        try:
            m.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass

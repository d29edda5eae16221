"""fmcli's binary data file: the parsed arrays of a libFM text file, memory-mapped on load.

It serves as the cache `FILE.fmcache` beside a text file (fmcli.io.load decides when) and as
the standalone file of `fmcli convert --binary`.

File layout (little-endian):

    magic  b"FMCACHE\\0"                      8 bytes
    u64    length of the JSON header          8 bytes
    JSON   {"version", "n_rows", "nnz", "n_features", "max_id_line",
            "text": {"size", "mtime_ns", "sha256_ends"}, "arrays": [[name, dtype, offset, count], ...],
            "sha256"}                         the header's own checksum (computed with "sha256": "")
    arrays indptr int64, indices int32, data float32, y float32, each at a 64-byte aligned offset

read_cache checks magic, version, header checksum and file size, and, when asked, that the
text file still has the recorded size, modification time and SHA-256 of its first and last
64 KiB (text_identity); anything else is a CacheMiss. The arrays hold what the text reader
returns with optional targets and targets as written (no class mapping), so one file serves
every option a later run may give.
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


def write_cache_chunks(cpath, chunks, text):
    """Write the cache file `cpath` from an iterable of SparseData chunks of consecutive rows
    (the text reader's chunks), each array first appended to a temporary file beside it, so
    that neither the text nor the parsed arrays are ever whole in memory (a 10M-row file:
    0.5 GB of text and 0.5 GB of arrays). An exception from `chunks` (a parse error) leaves
    no file."""
    import shutil
    import tempfile

    folder = os.path.dirname(os.path.abspath(cpath))
    temps = [tempfile.TemporaryFile(dir=folder) for _ in _ARRAYS]
    try:
        n_rows = nnz = n_features = max_id_line = 0
        temps[0].write(np.zeros(1, "<i8").tobytes())
        for d in chunks:
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


def is_binary(path):
    """True for a file written by `fmcli convert --binary` (or a cache file given directly)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False

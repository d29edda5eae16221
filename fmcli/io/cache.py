"""fmcli's binary data file: the parsed arrays of a libFM text file, memory-mapped on load.

It serves as the cache `FILE.fmcache` beside a text file (fmcli.io.load decides when) and as
the standalone file of `fmcli convert --binary`.

File layout (little-endian):

    magic  b"FMCACHE\\0"                      8 bytes
    u64    length of the JSON header          8 bytes
    JSON   {"version", "n_rows", "nnz", "n_features", "max_id_line",
            "text": {"size", "mtime_ns", "ctime_ns", "ino", "dev", "sha256_ends"},
            "text_xxh64", "text_seen_ns",
            "arrays": [[name, dtype, offset, count, xxh64], ...],
            "sha256"}                         the header's own checksum (computed with "sha256": "")
    arrays indptr int64, indices int32, data float32, y float32, each at a 64-byte aligned
           offset after the header, zero bytes between them, nothing after y

Nothing read from the file is used unchecked. read_cache checks, in this order: magic,
version (another one is a plain CacheMiss: the cache is rebuilt), the header's checksum, every
header field (types, ranges, the layout recomputed from the counts, the file's exact size);
when asked, the text file's identity (text_identity: size, modification and change times,
inode, device, SHA-256 of the first and last 64 KiB) and, with verify or when the text had
changed within RACY_NS before the cache read it, the XXH64 of the whole text; then the XXH64
of each array and the zero padding; then, in one compiled pass, the arrays themselves:
row pointers from 0, monotone, ending at nnz; feature ids in 0..n_features-1 with the largest
n_features-1; values finite; targets finite or NaN (no target); at least one row. A failure
of the header or payload is a CorruptCache, anything else a CacheMiss. The arrays hold what
the text reader returns with optional targets and targets as written (no class mapping), so
one file serves every option a later run may give.

XXH64 (seed 0, the reference algorithm of xxHash) runs in a numba kernel over 64-bit words at
several GB/s, so the check costs a few per cent of one ALS iteration (bench/notes.md).
"""

import hashlib
import json
import os

import numpy as np

from fmcli.config import MAX_FEATURE_ID, njit
from fmcli.data import SparseData, read_only
from fmcli.io.atomic import atomic_output

MAGIC = b"FMCACHE\0"
VERSION = 2
SUFFIX = ".fmcache"
_ENDS = 64 << 10
_ARRAYS = (("indptr", "<i8"), ("indices", "<i4"), ("data", "<f4"), ("y", "<f4"))
_IDENTITY = ("size", "mtime_ns", "ctime_ns", "ino", "dev")
# A text file changed this shortly before the cache took its identity could be changed again
# within the same tick of the file system's clock (whole seconds on some) without a new ctime:
# such a cache proves the text's content by its XXH64 on every use.
RACY_NS = 2_000_000_000
_COPY = 16 << 20        # bytes per read when copying and hashing (a multiple of 32)


class CacheMiss(Exception):
    """The cache file is missing, stale or of another version: rebuild it, silently."""


class CorruptCache(CacheMiss):
    """The file is damaged or inconsistent: its header, layout, checksums or arrays."""


def cache_path(path):
    return os.fspath(path) + SUFFIX


def text_identity(path):
    """What a cache records of its text file and compares on every use: size, modification
    and change times (a change time cannot be set back by `touch -r`), inode and device, and
    the SHA-256 of the first and last 64 KiB."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_ENDS))
        if st.st_size > _ENDS:
            f.seek(max(_ENDS, st.st_size - _ENDS))
            h.update(f.read(_ENDS))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino, "dev": st.st_dev, "sha256_ends": h.hexdigest()}


# ---------------------------------------------------------------------------
# XXH64
# ---------------------------------------------------------------------------

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_SEED0_LANES = ((0x9E3779B185EBCA87 + 0xC2B2AE3D27D4EB4F) % 2**64, 0xC2B2AE3D27D4EB4F, 0,
                2**64 - 0x9E3779B185EBCA87)


@njit(inline="always")
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(inline="always")
def _xxh_round(acc, lane):
    return _rotl(acc + lane * _P2, 31) * _P1


@njit
def _xxh_stripes(lanes, words):
    """XXH64's four accumulators `lanes` over words (len a multiple of 4: 32-byte stripes)."""
    v1, v2, v3, v4 = lanes[0], lanes[1], lanes[2], lanes[3]
    for i in range(0, words.shape[0] - 3, 4):
        v1 = _xxh_round(v1, words[i])
        v2 = _xxh_round(v2, words[i + 1])
        v3 = _xxh_round(v3, words[i + 2])
        v4 = _xxh_round(v4, words[i + 3])
    lanes[0], lanes[1], lanes[2], lanes[3] = v1, v2, v3, v4


@njit(inline="always")
def _le_word(tail, i, n):
    """The n-byte little-endian word at tail[i]."""
    k = np.uint64(0)
    for b in range(n):
        k |= np.uint64(tail[i + b]) << np.uint64(8 * b)
    return k


@njit
def _xxh_finish(lanes, total, tail):
    """The XXH64 value from the accumulators, the total length and the last (< 32) bytes."""
    if total >= 32:
        h = _rotl(lanes[0], 1) + _rotl(lanes[1], 7) + _rotl(lanes[2], 12) + _rotl(lanes[3], 18)
        for j in range(4):
            h = (h ^ _xxh_round(np.uint64(0), lanes[j])) * _P1 + _P4
    else:
        h = _P5
    h += np.uint64(total)
    i = 0
    n = tail.shape[0]
    while i + 8 <= n:
        h = _rotl(h ^ _xxh_round(np.uint64(0), _le_word(tail, i, 8)), 27) * _P1 + _P4
        i += 8
    if i + 4 <= n:
        h = _rotl(h ^ (_le_word(tail, i, 4) * _P1), 23) * _P2 + _P3
        i += 4
    while i < n:
        h = _rotl(h ^ (np.uint64(tail[i]) * _P5), 11) * _P1
        i += 1
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


class XXH64:
    """Streaming XXH64 (seed 0) of the bytes given to update(), as 16 hex digits."""

    def __init__(self):
        self._lanes = np.array(_SEED0_LANES, np.uint64)
        self._total = 0
        self._carry = np.empty(0, np.uint8)     # bytes short of a whole stripe

    def update(self, buf):
        a = np.asarray(buf).reshape(-1).view(np.uint8) if isinstance(buf, np.ndarray) else np.frombuffer(buf, np.uint8)
        self._total += a.size
        if self._carry.size:
            need = 32 - self._carry.size
            self._carry = np.concatenate([self._carry, a[:need]])
            a = a[need:]
            if self._carry.size < 32:
                return
            _xxh_stripes(self._lanes, *read_only(self._carry.view("<u8")))
            self._carry = np.empty(0, np.uint8)
        whole = a.size // 32 * 32
        if whole:
            _xxh_stripes(self._lanes, *read_only(a[:whole].view("<u8")))
        self._carry = a[whole:].copy()

    def hexdigest(self):
        return f"{int(_xxh_finish(self._lanes, self._total, self._carry)):016x}"


def xxh64(buf):
    """XXH64 of a bytes-like object or contiguous array, as 16 hex digits."""
    h = XXH64()
    h.update(buf)
    return h.hexdigest()


def text_xxh64(path):
    """XXH64 of the whole file `path` (memory-mapped)."""
    if os.path.getsize(path) == 0:
        return xxh64(b"")
    return xxh64(np.memmap(path, np.uint8, "r"))


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

def _header_sum(header):
    return hashlib.sha256(json.dumps(dict(header, sha256=""), sort_keys=True).encode()).hexdigest()


def _layout(n_rows, nnz):
    """[(name, dtype, offset after the header, count), ...] of the four arrays, and the
    payload's length."""
    out, offset = [], 0
    for (name, dtype), count in zip(_ARRAYS, (n_rows + 1, nnz, nnz, n_rows)):
        out.append((name, dtype, offset, count))
        end = offset + count * np.dtype(dtype).itemsize
        offset = (end + 63) // 64 * 64
    return out, end


def _padding(layout, i):
    """Zero bytes after array i of _layout() (none after the last)."""
    if i + 1 == len(layout):
        return 0
    _, dtype, off, count = layout[i]
    return layout[i + 1][2] - off - count * np.dtype(dtype).itemsize


def write_cache(data, path, text=None, text_xxh64=None, text_seen_ns=None):
    """Write SparseData `data` to the cache file `path` (atomically). text: text_identity()
    of the source file, text_xxh64 its whole-file XXH64 and text_seen_ns the time.time_ns()
    when the identity was taken (text None: a file that never matches a text file, for
    `fmcli convert`)."""
    arrays = [np.ascontiguousarray(getattr(data, name), dtype) for name, dtype in _ARRAYS]
    _write_file(path, data.n_rows, data.nnz, data.n_features, data.max_id_line,
                (text, text_xxh64, text_seen_ns),
                [(xxh64(a), lambda f, a=a: f.write(memoryview(a).cast("B"))) for a in arrays])


def _write_file(path, n_rows, nnz, n_features, max_id_line, text, parts):
    """The cache layout, atomically: parts[i] = (XXH64 of array i, a function writing its
    bytes to the open file); text = (identity, XXH64, seen time) of the text file."""
    layout, _ = _layout(n_rows, nnz)
    identity, digest, seen_ns = text
    header = {"version": VERSION, "n_rows": int(n_rows), "nnz": int(nnz),
              "n_features": int(n_features), "max_id_line": int(max_id_line),
              "text": identity, "text_xxh64": digest if identity else None,
              "text_seen_ns": int(seen_ns) if identity and seen_ns is not None else None,
              "arrays": [[name, dtype, off, int(count), digest_i]
                         for (name, dtype, off, count), (digest_i, _) in zip(layout, parts)],
              "sha256": ""}
    header["sha256"] = _header_sum(header)
    blob = json.dumps(header, sort_keys=True).encode()
    with atomic_output(os.fspath(path), binary=True) as f:
        f.write(MAGIC + len(blob).to_bytes(8, "little") + blob)
        f.write(b"\0" * (_payload_start(len(blob)) - 16 - len(blob)))
        for i, (_, write) in enumerate(parts):
            write(f)
            f.write(b"\0" * _padding(layout, i))


def _payload_start(header_len):
    return (16 + header_len + 63) // 64 * 64


def write_cache_chunks(cpath, chunks, text, text_xxh64=None, text_seen_ns=None):
    """Write the cache file `cpath` from an iterable of SparseData chunks of consecutive rows
    (the text reader's chunks), each array first appended to a temporary file beside it (and
    hashed as it goes), so that neither the text nor the parsed arrays are ever whole in
    memory (a 10M-row file: 0.5 GB of text and 0.5 GB of arrays). An exception from `chunks`
    (a parse error) leaves no file. text, text_xxh64, text_seen_ns: as for write_cache."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(cpath))
    temps = [tempfile.TemporaryFile(dir=folder) for _ in _ARRAYS]
    digests = [XXH64() for _ in _ARRAYS]

    def append(i, a):
        a = np.ascontiguousarray(a, _ARRAYS[i][1])
        temps[i].write(memoryview(a).cast("B"))
        digests[i].update(a)

    try:
        n_rows = nnz = n_features = max_id_line = 0
        append(0, np.zeros(1))
        for d in chunks:
            for i, a in enumerate((d.indptr[1:] + nnz, d.indices, d.data, d.y)):
                append(i, a)
            n_rows += d.n_rows
            nnz += d.nnz
            if d.n_features > n_features:        # the first line with the largest id, as read_libfm
                n_features, max_id_line = d.n_features, d.max_id_line
        for t in temps:
            t.seek(0)
        _write_file(cpath, n_rows, nnz, n_features, max_id_line, (text, text_xxh64, text_seen_ns),
                    [(h.hexdigest(), lambda f, t=t: _copy(t, f)) for h, t in zip(digests, temps)])
    finally:
        for t in temps:
            t.close()


def _copy(src, dst):
    while True:
        b = src.read(_COPY)
        if not b:
            return
        dst.write(b)


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

def _is_count(x, lo=0, hi=2**62):
    return type(x) is int and lo <= x <= hi


def _is_hex(x, n):
    return isinstance(x, str) and len(x) == n and all(c in "0123456789abcdef" for c in x)


def _check_header(header):
    """The header's fields against the layout they imply; returns (layout, payload length).
    Raises CorruptCache."""
    for key, hi in (("n_rows", 2**40), ("nnz", 2**40), ("n_features", MAX_FEATURE_ID + 1), ("max_id_line", 2**62)):
        if not _is_count(header.get(key), 0, hi):
            raise CorruptCache(f"header field {key}")
    text = header.get("text")
    if text is not None:
        if not isinstance(text, dict) or set(text) != set(_IDENTITY) | {"sha256_ends"} \
                or not all(_is_count(text[k], -2**63, 2**64) for k in _IDENTITY) \
                or not _is_hex(text["sha256_ends"], 64):
            raise CorruptCache("header field text")
        if not (header.get("text_xxh64") is None or _is_hex(header["text_xxh64"], 16)) \
                or not (header.get("text_seen_ns") is None or _is_count(header["text_seen_ns"], 0, 2**63)):
            raise CorruptCache("header field text_xxh64 or text_seen_ns")
    layout, length = _layout(header["n_rows"], header["nnz"])
    arrays = header.get("arrays")
    if not isinstance(arrays, list) or len(arrays) != len(layout) \
            or any(not isinstance(a, list) or len(a) != 5 or a[:4] != list(expect) or not _is_hex(a[4], 16)
                   for a, expect in zip(arrays, layout)):
        raise CorruptCache("array layout in the header")
    return layout, length


def _header(f):
    """(header, payload start, array layout) of the open cache file `f`. Raises CacheMiss."""
    head = f.read(16)
    if len(head) < 16 or head[:8] != MAGIC:
        raise CorruptCache("not an fmcli binary data file")
    n = int.from_bytes(head[8:], "little")
    if n > 1 << 20:
        raise CorruptCache("header too long")
    blob = f.read(n)
    size = os.fstat(f.fileno()).st_size
    try:
        header = json.loads(blob)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CorruptCache("header is not JSON") from None
    if not isinstance(header, dict):
        raise CorruptCache("header is not a JSON object")
    if header.get("version") != VERSION:
        raise CacheMiss(f"format version {header.get('version')!r}, this fmcli reads version {VERSION}")
    if header.get("sha256") != _header_sum(header):
        raise CorruptCache("header checksum")
    if blob != json.dumps(header, sort_keys=True).encode():  # e.g. a changed blank: same JSON, other bytes
        raise CorruptCache("header bytes")
    layout, length = _check_header(header)
    start = _payload_start(n)
    if size != start + length:
        raise CorruptCache("truncated" if size < start + length else "bytes after the arrays")
    if f.read(start - 16 - n).strip(b"\0"):
        raise CorruptCache("padding after the header")
    return header, start, layout


def read_cache(path, text=None, source=None, text_xxh64=None, verify=False):
    """SparseData with memory-mapped (read-only) arrays from the cache file `path`, every
    array checked (see the module docs). text: the text_identity() the cache must record
    (None: not checked); text_xxh64: a function returning the whole text's XXH64, called when
    the cache must prove the content too (verify, or a text changed just before the cache
    took its identity). Raises CacheMiss (CorruptCache for a damaged file)."""
    try:
        # one open file for the header and every mapping: a cache renamed over this one
        # meanwhile (another run rebuilding it) cannot mix two files
        with open(path, "rb") as f:
            header, start, layout = _header(f)
            if text is not None:
                _check_text(header, text, text_xxh64, verify)
            arrays = {name: _checked_array(f, start, layout, i, digest)
                      for i, ((name, *_), (*_, digest)) in enumerate(zip(layout, header["arrays"]))}
    except FileNotFoundError:
        raise CacheMiss("no cache") from None
    except OSError as e:
        raise CacheMiss(str(e)) from None
    problem = _array_problem(arrays["indptr"], arrays["indices"], arrays["data"], arrays["y"],
                             header["n_features"])
    if problem:
        raise CorruptCache(problem)
    return SparseData(arrays["indptr"], arrays["indices"], arrays["data"], arrays["y"],
                      header["n_features"], source or os.fspath(path), header["max_id_line"])


def _check_text(header, text, text_xxh64, verify):
    """The cache stands for the text file as it is now. Raises CacheMiss."""
    if header["text"] != text:
        raise CacheMiss("stale: the text file changed")
    seen = header["text_seen_ns"]
    racy = seen is None or seen - text["ctime_ns"] < RACY_NS
    if (verify or racy) and (header["text_xxh64"] is None or text_xxh64 is None
                             or header["text_xxh64"] != text_xxh64()):
        raise CacheMiss("stale: the text's content changed")


def _checked_array(f, start, layout, i, digest):
    """Array i of the open cache file `f`, memory-mapped, with its XXH64 and the zero bytes
    after it checked. Raises CorruptCache."""
    name, dtype, off, count = layout[i]
    a = np.memmap(f, dtype, "r", start + off, (count,)) if count else np.empty(0, dtype)
    if xxh64(a) != digest:
        raise CorruptCache(f"checksum of {name}")
    pad = _padding(layout, i)
    if pad:
        f.seek(start + off + a.nbytes)
        if f.read(pad).strip(b"\0"):
            raise CorruptCache(f"padding after {name}")
    return a


_E_PTR_START, _E_PTR_ORDER, _E_PTR_END, _E_ID, _E_MAX_ID, _E_VALUE, _E_TARGET, _E_NO_ROWS = range(1, 9)


@njit
def _check_arrays(indptr, indices, data, y, n_features):
    """(0, 0) when the arrays are what the text reader returns, else (code, position)."""
    n_rows = y.shape[0]
    if n_rows == 0:
        return _E_NO_ROWS, 0
    if indptr[0] != 0:
        return _E_PTR_START, 0
    for i in range(n_rows):
        if indptr[i + 1] < indptr[i]:
            return _E_PTR_ORDER, i
    if indptr[n_rows] != indices.shape[0]:
        return _E_PTR_END, n_rows
    largest = -1
    for p in range(indices.shape[0]):
        j = indices[p]
        if j < 0 or j >= n_features:
            return _E_ID, p
        if j > largest:
            largest = j
        if not np.isfinite(data[p]):
            return _E_VALUE, p
    if largest + 1 != n_features:
        return _E_MAX_ID, largest
    for i in range(n_rows):
        if np.isinf(y[i]):
            return _E_TARGET, i
    return 0, 0


def _array_problem(indptr, indices, data, y, n_features):
    """A message for the first array entry the text reader could not have produced, or ''."""
    code, at = _check_arrays(np.asarray(indptr), np.asarray(indices), np.asarray(data), np.asarray(y),
                             n_features)
    if code == 0:
        return ""
    return {_E_NO_ROWS: "no rows",
            _E_PTR_START: "row pointers do not start at 0",
            _E_PTR_ORDER: f"row pointers decrease after row {at + 1}",
            _E_PTR_END: "row pointers do not end at the number of entries",
            _E_ID: f"feature id {indices[at] if at < len(indices) else -1} at entry {at} outside "
                   f"0..{n_features - 1}",
            _E_MAX_ID: f"largest feature id {at} but {n_features} features in the header",
            _E_VALUE: f"value {data[at] if at < len(data) else 0} at entry {at} is not finite",
            _E_TARGET: f"target of row {at + 1} is infinite"}[code]


def is_binary(path):
    """True for a file written by `fmcli convert --binary` (or a cache file given directly)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False

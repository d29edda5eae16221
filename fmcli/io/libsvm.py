"""Compiled reader and a writer for libFM / libSVM text data.

Format: one case per line, ``target id:value id:value ...``. Ids are 0-based
integers as written; repeated ids are kept; a line with only a target is a case
without features. Blank lines and lines starting with ``#`` are skipped, a
trailing ``# comment`` is allowed, spaces/tabs separate tokens, whitespace may
follow ``:``, CRLF endings and a missing final newline are accepted.

The parser is a numba kernel over the raw bytes: one pass counts newlines and
``:`` (upper bounds for rows and entries), a second fills pre-sized arrays.
Kernels report an error code, the byte offset of the bad token and its line;
Python turns that into an :class:`InputError` with a short message.
"""

import io
import os

import numpy as np

from fmcli.config import INDEX_DTYPE, INDPTR_DTYPE, MAX_FEATURE_ID, VALUE_DTYPE, njit
from fmcli.data import SparseData, read_only
from fmcli.errors import InputError
from fmcli.io.sources import open_source, read_errors, read_input

__all__ = ["read_libfm", "iter_libfm_chunks", "class_targets", "write_libfm"]

# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------

OK = 0
E_NO_COLON = 1        # token without ':'
E_BAD_ID = 2          # id is not an integer
E_NEG_ID = 3          # id < 0
E_ID_LIMIT = 4        # id above the caller's limit (model would not fit in memory)
E_ID_INT32 = 5        # id above MAX_FEATURE_ID
E_BAD_VALUE = 6       # value is not a number
E_VALUE_RANGE = 7     # value overflows float32
E_BAD_TARGET = 8      # target is not a number
E_TARGET_RANGE = 9    # target overflows float32
E_NO_TARGET = 10      # first token is a feature but targets are required
E_CLASS = 11          # classification target not in {-1, 0, 1}

# correctly rounded powers of ten (exact up to 1e22)
POW10 = np.array([float("1e%d" % k) for k in range(309)], dtype=np.float64)

# the parsing kernels do not use fastmath: division by powers of ten must stay exact
_kernel = njit(fastmath=False, cache=True, nogil=True)


@_kernel
def _count(buf):
    """(number of '\\n', number of ':') in buf."""
    nl = 0
    colons = 0
    for i in range(buf.shape[0]):
        c = buf[i]
        if c == 10:
            nl += 1
        elif c == 58:
            colons += 1
    return nl, colons


@_kernel
def _is_end(buf, i, n):
    """True at a token end: blank, CR, LF, '#' or end of buffer."""
    if i >= n:
        return True
    c = buf[i]
    return c == 32 or c == 9 or c == 13 or c == 10 or c == 35


@_kernel
def _colon_in_token(buf, i, n):
    """The offset of the first ':' in the token starting at i, or -1."""
    while not _is_end(buf, i, n):
        if buf[i] == 58:
            return i
        i += 1
    return -1


@_kernel
def _parse_float(buf, i, n):
    """Parse a decimal float at i: returns (ok, value as float64, end offset)."""
    neg = False
    if i < n and (buf[i] == 43 or buf[i] == 45):
        neg = buf[i] == 45
        i += 1
    mant = np.int64(0)
    nsig = 0
    ndig = 0
    exp10 = 0
    while i < n and 48 <= buf[i] <= 57:
        if nsig < 18:
            mant = mant * 10 + (buf[i] - 48)
            if mant > 0:
                nsig += 1
        else:
            exp10 += 1
        ndig += 1
        i += 1
    if i < n and buf[i] == 46:
        i += 1
        while i < n and 48 <= buf[i] <= 57:
            if nsig < 18:
                mant = mant * 10 + (buf[i] - 48)
                if mant > 0:
                    nsig += 1
                exp10 -= 1
            ndig += 1
            i += 1
    if ndig == 0:
        return False, 0.0, i
    if i < n and (buf[i] == 101 or buf[i] == 69):
        j = i + 1
        eneg = False
        if j < n and (buf[j] == 43 or buf[j] == 45):
            eneg = buf[j] == 45
            j += 1
        if j >= n or not (48 <= buf[j] <= 57):
            return False, 0.0, i
        e = 0
        while j < n and 48 <= buf[j] <= 57:
            if e < 100000:
                e = e * 10 + (buf[j] - 48)
            j += 1
        exp10 += -e if eneg else e
        i = j
    if mant == 0:
        v = 0.0
    elif exp10 >= 0:
        if exp10 > 308:
            v = np.inf
        else:
            v = float(mant) * POW10[exp10]
    else:
        k = -exp10
        if k <= 308:
            v = float(mant) / POW10[k]
        elif k <= 616:
            v = float(mant) / POW10[308] / POW10[k - 308]
        else:
            v = 0.0
    if neg:
        v = -v
    return True, v, i


@_kernel
def _parse(buf, first_line, optional_targets, classes, id_limit, max_supported,
           indptr, indices, data, y):
    """Fill indptr/indices/data/y from buf.

    Returns (code, err_offset, err_line, n_rows, nnz, max_id, max_id_line, next_line).
    """
    n = buf.shape[0]
    line = first_line
    row = 0
    nnz = 0
    max_id = -1
    max_id_line = 0
    indptr[0] = 0
    i = 0
    # a UTF-8 byte order mark at the very start
    if first_line == 1 and n >= 3 and buf[0] == 0xEF and buf[1] == 0xBB and buf[2] == 0xBF:
        i = 3
    while i < n:
        c = buf[i]
        if c == 32 or c == 9 or c == 13:
            i += 1
            continue
        if c == 10:
            line += 1
            i += 1
            continue
        if c == 35:
            while i < n and buf[i] != 10:
                i += 1
            continue
        # a data row: does the first token hold ':'?
        if _colon_in_token(buf, i, n) >= 0:
            if not optional_targets:
                return E_NO_TARGET, i, line, row, nnz, max_id, max_id_line, line
            y[row] = np.nan
        else:
            ok, v, end = _parse_float(buf, i, n)
            if not ok or not _is_end(buf, end, n):
                return E_BAD_TARGET, i, line, row, nnz, max_id, max_id_line, line
            f = np.float32(v)
            if np.isinf(f):
                return E_TARGET_RANGE, i, line, row, nnz, max_id, max_id_line, line
            if classes and not (f == 0.0 or f == -1.0 or f == 1.0):
                return E_CLASS, i, line, row, nnz, max_id, max_id_line, line
            y[row] = f
            i = end
        # id:value pairs
        while True:
            while i < n and (buf[i] == 32 or buf[i] == 9 or buf[i] == 13):
                i += 1
            if i >= n or buf[i] == 10:
                break
            if buf[i] == 35:
                while i < n and buf[i] != 10:
                    i += 1
                break
            tok = i
            if buf[i] == 43:
                i += 1
            fid = np.int64(0)
            nd = 0
            while i < n and 48 <= buf[i] <= 57:
                if fid <= 100000000000:
                    fid = fid * 10 + (buf[i] - 48)
                nd += 1
                i += 1
            if nd == 0 or i >= n or buf[i] != 58:
                # diagnose: no ':' at all, a negative id or a malformed id
                j = _colon_in_token(buf, tok, n)
                if j < 0:
                    return E_NO_COLON, tok, line, row, nnz, max_id, max_id_line, line
                if buf[tok] == 45 and j > tok + 1:
                    k = tok + 1
                    while k < j and 48 <= buf[k] <= 57:
                        k += 1
                    if k == j:
                        return E_NEG_ID, tok, line, row, nnz, max_id, max_id_line, line
                return E_BAD_ID, tok, line, row, nnz, max_id, max_id_line, line
            if fid > id_limit:
                code = E_ID_INT32 if fid > max_supported else E_ID_LIMIT
                return code, tok, line, row, nnz, max_id, max_id_line, line
            i += 1  # ':'
            while i < n and (buf[i] == 32 or buf[i] == 9):
                i += 1
            vstart = i
            ok, v, end = _parse_float(buf, i, n)
            if not ok or not _is_end(buf, end, n):
                return E_BAD_VALUE, vstart, line, row, nnz, max_id, max_id_line, line
            f = np.float32(v)
            if np.isinf(f):
                return E_VALUE_RANGE, vstart, line, row, nnz, max_id, max_id_line, line
            indices[nnz] = fid
            data[nnz] = f
            nnz += 1
            if fid > max_id:
                max_id = fid
                max_id_line = line
            i = end
        row += 1
        indptr[row] = nnz
    return OK, 0, line, row, nnz, max_id, max_id_line, line


# ---------------------------------------------------------------------------
# Python side of the reader
# ---------------------------------------------------------------------------

def _token(buf, pos, stop_at_colon=False):
    """(text, is_utf8) of the token starting at byte `pos`, for messages."""
    raw = bytes(buf[pos:pos + 64])
    end = len(raw)
    for k, b in enumerate(raw):
        if b in (32, 9, 13, 10) or (stop_at_colon and b == 58):
            end = k
            break
    text = raw[:end]
    try:
        text.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = end == 64  # may only be cut inside a character
    s = text.decode("utf-8", errors="backslashreplace")
    if end == 64:
        s += "..."
    return s, utf8


def _reason(tok, utf8):
    if not utf8:
        return "not UTF-8 text"
    t = tok.lower().lstrip("+-")
    if t in ("nan", "inf", "infinity") or t.startswith("nan("):
        return "NaN and infinity are not allowed"
    return "not a number"


def _error(src_name, code, buf, pos, line, id_limit):
    tok, utf8 = _token(buf, pos)
    if code == E_NO_COLON:
        msg = f"token '{tok}' has no ':' (expected id:value)"
        if not utf8:
            msg += " (not UTF-8 text)"
    elif code in (E_BAD_ID, E_NEG_ID, E_ID_LIMIT, E_ID_INT32):
        fid, fid_utf8 = _token(buf, pos, stop_at_colon=True)
        if code == E_BAD_ID:
            if fid == "":
                msg = f"missing feature id in '{tok}'"
            else:
                why = "not UTF-8 text" if not fid_utf8 else "not a non-negative integer"
                msg = f"bad feature id '{fid}' in '{tok}' ({why})"
        elif code == E_NEG_ID:
            msg = f"negative feature id {fid} in '{tok}'"
        elif code == E_ID_INT32:
            msg = f"feature id {fid} is too large (largest supported id is {MAX_FEATURE_ID})"
        else:
            msg = (f"feature id {fid} is too large: the model would not fit in memory "
                   f"(largest id that fits: {id_limit})")
    elif code == E_BAD_VALUE:
        msg = "missing value after ':'" if tok == "" or tok.startswith("#") else f"bad value '{tok}' ({_reason(tok, utf8)})"
    elif code == E_VALUE_RANGE:
        msg = f"value '{tok}' is out of range for a 32-bit float"
    elif code == E_BAD_TARGET:
        msg = f"bad target '{tok}' ({_reason(tok, utf8)})"
    elif code == E_TARGET_RANGE:
        msg = f"target '{tok}' is out of range for a 32-bit float"
    elif code == E_NO_TARGET:
        msg = f"missing target: line starts with feature '{tok}'"
    elif code == E_CLASS:
        msg = f"bad class target '{tok}' (classification needs -1, 0 or 1)"
    else:  # pragma: no cover
        msg = f"cannot parse (error {code})"
    return InputError(src_name, line, msg)


def _as_u8(obj):
    """Read-only uint8 view of a bytes-like object (one numba signature for all inputs)."""
    return read_only(np.frombuffer(obj, dtype=np.uint8))[0]


def _trim(arr, n):
    """arr[:n], copied when the upper bound wasted much memory."""
    if n < arr.shape[0] - max(4096, arr.shape[0] // 8):
        return arr[:n].copy()
    return arr[:n]


def _id_limit(max_feature_id):
    if max_feature_id is None:
        return MAX_FEATURE_ID
    return max(-1, min(int(max_feature_id), MAX_FEATURE_ID))


def _parse_chunk(buf, src_name, first_line, optional, classes, id_limit):
    """Parse a uint8 buffer; returns (SparseData with max_id_line, next line number)."""
    nl, colons = _count(buf)
    rows_ub = nl + 1
    indptr = np.empty(rows_ub + 1, dtype=INDPTR_DTYPE)
    indices = np.empty(colons, dtype=INDEX_DTYPE)
    data = np.empty(colons, dtype=VALUE_DTYPE)
    y = np.empty(rows_ub, dtype=VALUE_DTYPE)
    code, pos, line, rows, nnz, max_id, max_id_line, next_line = _parse(
        buf, first_line, optional, classes, id_limit, MAX_FEATURE_ID, indptr, indices, data, y)
    if code != OK:
        raise _error(src_name, code, buf, pos, line, id_limit)
    sd = SparseData(
        indptr=_trim(indptr, rows + 1),
        indices=_trim(indices, nnz),
        data=_trim(data, nnz),
        y=_trim(y, rows),
        n_features=int(max_id) + 1,
        source=src_name,
        max_id_line=int(max_id_line),
    )
    return sd, next_line


def _check_targets(targets):
    if targets not in ("required", "optional"):
        raise ValueError(f"targets must be 'required' or 'optional', not {targets!r}")
    return targets == "optional"


def read_libfm(path, *, targets="required", classes=False, max_feature_id=None):
    """Read a whole libFM/libSVM text file ("-" = stdin; gzip/bz2/xz allowed) into SparseData.

    targets: "required" or "optional" (a row starting with id:value gets y = NaN).
    classes: targets must be -1, 0 or 1; y is returned as -1/+1 (class_targets).
    max_feature_id: ids above it are refused (the model would not fit in memory).
    """
    optional = _check_targets(targets)
    id_limit = _id_limit(max_feature_id)
    content, name = read_input(path)
    buf = _as_u8(content)
    sd, _ = _parse_chunk(buf, name, 1, optional, bool(classes), id_limit)
    del buf, content
    if sd.n_rows == 0:
        raise InputError(name, None, "no data rows (the file is empty or has only blank lines and comments)")
    if classes:
        sd.y = class_targets(sd.y)
    return sd


def class_targets(y):
    """Classification targets as -1/+1 (0 is negative, as libFM reads them); NaN stays NaN."""
    return np.where(y == 0, np.float32(-1), y).astype(np.float32)


def iter_libfm_chunks(path, *, chunk_bytes=64 << 20, targets="optional", max_feature_id=None, classes=False,
                      span=None):
    """Yield SparseData chunks of whole lines, reading about `chunk_bytes` of text at a time.

    Line numbers in errors (and max_id_line) count from the start of the file;
    each chunk's n_features is its own largest id + 1. Memory stays bounded by
    the chunk size (a single longer line grows the chunk to hold it). classes: targets
    must be -1, 0 or 1; they are returned as written (class_targets maps them).
    span: (start byte, end byte, line number at start) of an uncompressed file: only the
    lines of that range (a shard, cut at line boundaries by fmcli.shards), which may have none.
    """
    optional = _check_targets(targets)
    id_limit = _id_limit(max_feature_id)
    chunk_bytes = max(1, int(chunk_bytes))
    f, src = open_source(path)
    line = 1
    total_rows = 0
    if span is not None:
        start, end, line = span
        f = _Range(f, start, end)
    with f, read_errors(src):
        buf = bytearray(chunk_bytes)
        have = 0
        eof = False
        while not eof:
            if have == len(buf):  # one line longer than the chunk: grow
                buf.extend(bytes(len(buf)))
            view = memoryview(buf)
            while have < len(buf):
                got = f.readinto(view[have:])
                if not got:
                    eof = True
                    break
                have += got
            view.release()
            if eof:
                cut = have
            else:
                cut = buf.rfind(b"\n", 0, have) + 1
                if cut == 0:
                    continue
            if cut == 0:
                break
            arr = _as_u8(buf)[:cut]
            sd, line = _parse_chunk(arr, src.name, line, optional, bool(classes), id_limit)
            del arr
            rest = have - cut
            if len(buf) > chunk_bytes and rest < chunk_bytes:  # shrink after a long line
                buf = buf[cut:have] + bytearray(chunk_bytes - rest)
            else:
                buf[:rest] = buf[cut:have]
            have = rest
            if sd.n_rows:
                total_rows += sd.n_rows
                yield sd
    if total_rows == 0 and span is None:
        raise InputError(src.name, None, "no data rows (the file is empty or has only blank lines and comments)")


class _Range:
    """The bytes start..end of an open uncompressed file, as a file to readinto."""

    def __init__(self, f, start, end):
        self.f, self.left = f, end - start
        f.seek(start)

    def readinto(self, view):
        n = self.f.readinto(view[:max(0, min(len(view), self.left))]) if self.left > 0 else 0
        self.left -= n
        return n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


# ---------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------

def _lines(data, float_format, start, stop):
    indptr, indices, values, y = data.indptr, data.indices, data.data, data.y
    lo, hi = int(indptr[start]), int(indptr[stop])
    ids = indices[lo:hi].tolist()
    vals = [float_format % v for v in values[lo:hi].astype(np.float64).tolist()]
    pairs = [f"{i}:{v}" for i, v in zip(ids, vals)]
    ptr = (indptr[start:stop + 1] - lo).tolist()
    ys = y[start:stop].astype(np.float64).tolist()
    out = []
    for r in range(stop - start):
        row_pairs = pairs[ptr[r]:ptr[r + 1]]
        t = ys[r]
        if t != t:  # NaN: no target
            if not row_pairs:
                raise ValueError(f"row {start + r} has neither a target nor features; it cannot be written")
            out.append(" ".join(row_pairs))
        elif row_pairs:
            out.append(float_format % t + " " + " ".join(row_pairs))
        else:
            out.append(float_format % t)
    out.append("")
    return "\n".join(out)


def _write_rows(fobj, data, float_format, binary):
    step = 50_000
    for start in range(0, data.n_rows, step):
        text = _lines(data, float_format, start, min(start + step, data.n_rows))
        fobj.write(text.encode("ascii") if binary else text)


def write_libfm(path_or_fileobj, data, *, float_format="%.9g"):
    """Write `data` as libFM text: `target id:value ...` per row (no target where y is NaN).

    `path_or_fileobj`: a file name (written atomically), "-" for standard output,
    or an open text or binary file object. The default `%.9g` round-trips float32.
    """
    if isinstance(path_or_fileobj, (str, os.PathLike)):
        from fmcli.io.atomic import atomic_output

        with atomic_output(os.fspath(path_or_fileobj), binary=True) as f:
            if path_or_fileobj == "-":
                binary = not isinstance(f, io.TextIOBase)
            else:
                binary = True
            _write_rows(f, data, float_format, binary)
        return
    f = path_or_fileobj
    binary = not isinstance(f, io.TextIOBase) and "b" in getattr(f, "mode", "b")
    _write_rows(f, data, float_format, binary)

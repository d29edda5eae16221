"""Opening inputs: files, standard input ("-"), and gzip/bz2/xz streams recognised by their
magic bytes. Errors become InputError naming the file. Imports nothing heavy, so commands
that only read text (e.g. `fmcli convert`) stay light.
"""

import bz2
import gzip
import io
import lzma
import os
import sys
import zlib

from fmcli.errors import InputError

STDIN_NAME = "<stdin>"

# ---------------------------------------------------------------------------
# input streams
# ---------------------------------------------------------------------------

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)


def _sniff(head):
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


class _PrefixedRaw(io.RawIOBase):
    """A raw stream that yields `prefix` and then the rest of `stream` (for sniffing pipes)."""

    def __init__(self, prefix, stream, close_stream):
        self._prefix = prefix
        self._stream = stream
        self._close_stream = close_stream

    def readable(self):
        return True

    def readinto(self, b):
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        read1 = getattr(self._stream, "read1", None)
        data = read1(len(b)) if read1 is not None else self._stream.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def readall(self):
        data = self._prefix + (self._stream.read() or b"")
        self._prefix = b""
        return data

    def close(self):
        if not self.closed and self._close_stream:
            self._stream.close()
        super().close()


class _Source:
    """Name for messages and compression kind of an opened input."""

    def __init__(self, name, kind):
        self.name, self.kind = name, kind


def _os_message(err):
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(err, PermissionError):
        return "cannot read file: permission denied"
    return f"cannot read file: {err.strerror or err}"


def open_source(path):
    """Open `path` ("-" = stdin) and return (binary file object, _Source: its name for
    messages and compression kind)."""
    if path == "-":
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
        head = stdin.read(6) or b""
        kind = _sniff(head)
        raw = io.BufferedReader(_PrefixedRaw(head, stdin, close_stream=False), buffer_size=1 << 20)
        src = _Source(STDIN_NAME, kind)
        if kind is None:
            return raw, src
        return _decompressor(kind, raw), src
    path = os.fspath(path)
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(21, "Is a directory", path)
        f = open(path, "rb")
        try:
            head = f.read(6)
            kind = _sniff(head)
            if f.seekable():
                f.seek(0)
            else:  # named pipe, /dev/stdin, process substitution ...
                f = io.BufferedReader(_PrefixedRaw(head, f, close_stream=True), buffer_size=1 << 20)
        except BaseException:
            f.close()
            raise
    except OSError as err:
        raise InputError(path, None, _os_message(err)) from None
    src = _Source(path, kind)
    if kind is None:
        return f, src
    return _decompressor(kind, f, close=True), src


class _Closing(io.BufferedIOBase):
    """Wrap a decompressing reader so closing it also closes the underlying file."""

    def __init__(self, reader, inner):
        self._reader, self._inner = reader, inner

    def readable(self):
        return True

    def read(self, size=-1):
        return self._reader.read(size)

    def read1(self, size=-1):
        return self._reader.read1(size)

    def readinto(self, b):
        return self._reader.readinto(b)

    def close(self):
        if not self.closed:
            try:
                self._reader.close()
            finally:
                self._inner.close()
        super().close()


def _decompressor(kind, fileobj, close=False):
    if kind == "gzip":
        reader = gzip.GzipFile(fileobj=fileobj, mode="rb")
    elif kind == "bz2":
        reader = bz2.BZ2File(fileobj, mode="rb")
    else:
        reader = lzma.LZMAFile(fileobj, mode="rb")
    return _Closing(reader, fileobj) if close else reader


def open_input(path):
    """Binary file object for `path`: "-" is standard input; gzip, bz2 and xz are
    recognised by their magic bytes and decompressed on the fly.

    Raises InputError for a missing file, a directory or an unreadable file.
    """
    return open_source(path)[0]


def read_input(path):
    """(all bytes of `path`, decompressed; the name for messages): "-" is standard input.

    Raises InputError for a missing file, a directory, an unreadable file or a truncated
    or corrupt compressed stream.
    """
    f, src = open_source(path)
    with f, read_errors(src):
        return f.read(), src.name


def read_errors(src):
    """Context of exceptions raised while reading `src` (an open_source result), mapped to
    InputError."""
    return _ReadGuard(src)


class _ReadGuard:
    def __init__(self, src):
        self.src = src

    def __enter__(self):
        return self

    def __exit__(self, etype, err, tb):
        if err is None or isinstance(err, InputError):
            return False
        kind = self.src.kind
        corrupt = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
        if kind is not None and (isinstance(err, corrupt) or (isinstance(err, OSError) and err.errno is None)):
            raise InputError(self.src.name, None, f"truncated or corrupt {kind} stream") from None
        if isinstance(err, OSError):
            raise InputError(self.src.name, None, _os_message(err)) from None
        return False


def read_values(path, kind, name, per, n, parse):
    """The n values of a small text file of whitespace-separated tokens, the i-th for the i-th
    `per` (-meta's group ids, -weights' weights): parse(text, shown, line_no) -> the value, or
    an InputError (text: the token in ASCII, or None; shown: the token as printable text). Too
    few or too many tokens are an InputError naming the line."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(path, None, f"cannot read {kind} file: {exc.strerror or exc}") from None
    out = []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        for tok in line.split():
            try:
                text = tok.decode("ascii")
            except UnicodeDecodeError:
                text = None
            out.append(parse(text, tok.decode("utf-8", "replace"), line_no))
            if len(out) > n:
                raise InputError(path, line_no, f"more {name}s than {per}s: expected {n}")
    if len(out) < n:
        n_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
        raise InputError(path, n_lines if n_lines else None,
                         f"{len(out)} {name}s for {n} {per}s: the {kind} file needs one {name} per {per}")
    return out

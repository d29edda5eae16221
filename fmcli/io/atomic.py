"""Outputs that appear whole or not at all, published together, and writes that are complete or
an error.

Every file fmcli writes goes to a temporary file `.NAME.fmcli-HOST-PID-XXXXXX.tmp` in the
destination folder and is renamed into place only when complete, so a cron job never sees
half a file. Inside `publish_together()` the renames wait until every output of the block is
complete, then happen together (signals held, destination folders locked against a
concurrent fmcli publishing there), so a run publishes all its outputs or none. A temporary
file left by a killed run (SIGKILL) is removed by the next run writing into that folder once
its process is gone (the pid in the name says which; another live run's file is never
touched). A destination that is a symbolic link is followed: the file it points to is
replaced. `-` means standard output, written as data comes.

Every write goes through `OutputFile`: short writes are retried, and a failure is
OutputError naming the output (`<stdout>` for `-`), except a reader that went away (EPIPE),
which is ReaderGone (exit 141, silence).
"""

import contextlib
import contextvars
import errno
import fcntl
import os
import re
import signal
import stat
import sys
import zlib

from fmcli.errors import FmcliError, UsageError

STDOUT_NAME = "<stdout>"
_CHUNK = 1 << 20                      # buffered bytes before a write(2)
_HOST = "%08x" % zlib.crc32(os.uname().nodename.encode("utf-8", "replace"))  # pids are per host
_TEMP_RE = re.compile(r"\..*\.fmcli-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{6}\.tmp", re.S)
_publication = contextvars.ContextVar("publication", default=None)
_swept_folders = set()                # folders already cleared of stale temporaries by this process
_stdout_closed = False                # fd 1 was closed when fmcli started (see protect_standard_fds)
published = False                     # a publish_together block of this process has renamed its outputs
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class OutputError(FmcliError, OSError):
    """Writing an output failed (disk full, I/O error): exit 1, the message names the output.
    Also an OSError (errno and strerror of the failure), as the write's own error was."""

    exit_code = 1

    def __init__(self, name, err):
        if isinstance(err, OSError):
            OSError.__init__(self, err.errno, err.strerror or str(err), name)
            self.message = f"{name}: {err.strerror or err}"
        else:
            OSError.__init__(self, None, str(err), name)
            self.message = f"{name}: {err}"
        self.name = name

    def __str__(self):
        return self.message


class ReaderGone(Exception):
    """The reader of an output went away (EPIPE: `| head -1`): exit 141, and nothing to say.
    Not an OSError, so that nothing on the way (click turns EPIPE into exit 1) takes it for
    another failure."""


def protect_standard_fds():
    """Give every closed standard descriptor (`<&-`, `>&-`, `2>&-`) /dev/null, before fmcli opens
    anything: else the first file opened would become fd 0, 1 or 2, and predictions or messages
    would land in it. A closed stdin then reads as empty; `-out -` with stdout closed is an
    error (exit 1), not a silent loss; messages to a closed stderr are dropped."""
    global _stdout_closed
    for fd, flags, name in ((0, os.O_RDONLY, "stdin"), (1, os.O_WRONLY, "stdout"), (2, os.O_WRONLY, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, flags)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if fd == 1:
            _stdout_closed = True
        if getattr(sys, name) is None:  # Python leaves sys.stdin/stdout/stderr None for a closed fd
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False, errors="backslashreplace"))


def _special(path):
    """True for an existing file that is not a regular one (/dev/null, a FIFO, /dev/stdout):
    it is written in place, never replaced by a rename."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path)
    except OSError:
        return False


def destination(path):
    """The file a write to `path` replaces: a symbolic link (also a dangling one) is followed."""
    return os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)


def check_writable(path, what="output"):
    """Fail before any work if `path` cannot be created (missing or read-only folder)."""
    if path == "-" and _stdout_closed:
        raise OutputError(STDOUT_NAME, f"standard output is closed: cannot write {what} -")
    if path is None or path == "-":
        return
    if _special(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{path}: cannot write {what}: permission denied")
        return
    real = destination(path)
    folder = os.path.dirname(real) or "."
    if os.path.isdir(real):
        raise UsageError(f"{path}: {what} path is a directory")
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: cannot write {what}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: cannot write {what}: folder {folder} is not writable")


# ---- outputs that are inputs ------------------------------------------------------------------

def _identity(path):
    """(device, inode) of the regular file `path` names, links followed; None if there is none
    (a device, a pipe, a file not yet created: nothing an output could destroy)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def check_distinct(inputs, outputs):
    """Refuse (UsageError, exit 2) an output that is the same file as an input or as another
    output, before anything is read: files are compared by device and inode, links followed,
    and outputs not yet created by their resolved path. inputs, outputs: (option, path) pairs
    (path None: not given); `-` as an output is standard output, compared when it is a file."""
    ins = [(o, p, _identity(p)) for o, p in inputs if p and p != "-"]
    outs = []
    for option, path in outputs:
        if not path:
            continue
        if path == "-":
            st = os.fstat(1) if not _stdout_closed else None
            if st is not None and stat.S_ISREG(st.st_mode):
                outs.append((option, "- (stdout)", (st.st_dev, st.st_ino), None))
            continue
        if _special(path):
            continue
        outs.append((option, path, _identity(path), destination(path)))
    for i, (option, path, ident, real) in enumerate(outs):
        for in_option, in_path, in_ident in ins:
            if ident is not None and ident == in_ident:
                raise UsageError(f"{option} {path} is the same file as {in_option} {in_path}: "
                                 "an output must not replace an input")
        for other_option, other_path, other_ident, other_real in outs[:i]:
            if (ident is not None and ident == other_ident) or (real is not None and real == other_real):
                raise UsageError(f"{option} {path} is the same file as {other_option} {other_path}: "
                                 "give each output its own file")


# ---- writing ------------------------------------------------------------------------------------

class OutputFile:
    """A file object for one output: `write` takes str (UTF-8) or bytes; every byte reaches the
    descriptor (short writes are retried) or OutputError names the output."""

    mode = "wb"

    def __init__(self, fd, name, stream=None):
        """fd: the descriptor written with write(2); or fd None and `stream`, a Python file
        object (sys.stdout replaced, as by a test's capture or a notebook) written through."""
        self.fd, self.name, self.stream = fd, name, stream
        self._buf = bytearray()
        self._written = 0

    def write(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        size = memoryview(data).nbytes
        if len(self._buf) + size < _CHUNK:
            self._buf += data
            return size
        self.flush()
        self._write_all(data)
        return size

    def flush(self):
        if self._buf:
            self._write_all(self._buf)
            self._buf.clear()

    def tell(self):
        return self._written + len(self._buf)

    def fileno(self):
        return self.fd

    def writable(self):
        return True

    def _write_all(self, data):
        view = memoryview(data).cast("B")
        try:
            if self.fd is None:
                self._write_stream(view)
            while view and self.fd is not None:
                n = os.write(self.fd, view[:1 << 30])
                view = view[n:]
                self._written += n
        except BrokenPipeError:
            raise ReaderGone(self.name) from None
        except OSError as e:
            raise OutputError(self.name, e) from None


    def _write_stream(self, view):
        binary = getattr(self.stream, "buffer", None)
        if binary is not None:
            binary.write(view)
            binary.flush()
        else:
            self.stream.write(bytes(view).decode("utf-8"))
            self.stream.flush()
        self._written += len(view)


def _stdout():
    """An OutputFile on standard output: fd 1 itself when sys.stdout is on it (after flushing
    what Python buffered), else whatever sys.stdout is now."""
    stream = sys.stdout
    try:
        on_fd1 = stream is None or stream.fileno() == 1
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        on_fd1 = False
    if on_fd1:
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        return OutputFile(1, STDOUT_NAME)
    return OutputFile(None, STDOUT_NAME, stream)


def _close(fd, name):
    try:
        os.close(fd)
    except OSError as e:  # NFS reports a full disk at close
        raise OutputError(name, e) from None


def _temp_name(folder, base):
    return os.path.join(folder, f".{base[:200]}.fmcli-{_HOST}-{os.getpid()}-{os.urandom(3).hex()}.tmp")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder):
    """Remove the temporary files of fmcli runs on this host whose process is gone (killed
    before it could clean up). Once per folder and process."""
    if folder in _swept_folders:
        return
    _swept_folders.add(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = _TEMP_RE.fullmatch(entry.name)
        if m and m.group(1) == _HOST and int(m.group(2)) != os.getpid() and not _alive(int(m.group(2))):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)


@contextlib.contextmanager
def publish_together():
    """Outputs written by atomic_output inside the block are renamed into place together, when
    the whole block succeeded; on any failure or signal every temporary file is removed and
    every destination keeps its old content. Standard output and special files cannot wait:
    write them last in the block. Nested in another such block, it is part of the outer one."""
    if _publication.get(None) is not None:
        yield
        return
    pending = []
    token = _publication.set(pending)
    try:
        yield
    except BaseException:
        _publication.reset(token)
        _discard(pending)
        raise
    _publication.reset(token)
    _commit(pending, final=True)


def _discard(pending):
    for tmp, _, _ in pending:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    pending.clear()


@contextlib.contextmanager
def _stop_signals_held():
    """SIGINT and SIGTERM that arrive in the block are recorded (yielded list) and act when it
    ends. The handlers are swapped rather than the signals masked: a mask is per thread, and a
    compiled kernel's worker thread would take the signal and have its handler run at once."""
    import threading

    arrived = []
    if threading.current_thread() is not threading.main_thread():  # only there can handlers change
        yield arrived
        return
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in _STOP_SIGNALS}
    try:
        yield arrived
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _deliver(signals):
    """Let the held signals act now, with the handlers fmcli (or the default) had."""
    for s in dict.fromkeys(signals):
        signal.raise_signal(s)


def _commit(pending, final=False):
    """Rename every (temporary, destination, name for messages) into place with SIGINT and
    SIGTERM held and the destination folders locked (flock, in a fixed order), so that two runs
    publishing the same outputs do not interleave and a signal cannot split the renames: a
    signal that came before the first rename publishes nothing; one arriving during the
    renames acts after them. final: a run's publication (sets `published` when done)."""
    global published
    arrived = []
    try:
        with _stop_signals_held() as arrived:
            try:
                if not arrived:  # else stopped before the first rename: publish nothing
                    _rename_all(pending)
                    published = published or final
            finally:
                _discard(pending)
    finally:
        _deliver(arrived)


def _rename_all(pending):
    locks = []
    try:
        folders = {}
        for _, dest, _ in pending:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.dirname(dest), os.O_RDONLY)
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) in folders:
                    os.close(fd)
                else:
                    folders[(st.st_dev, st.st_ino)] = fd
        for key in sorted(folders):
            with contextlib.suppress(OSError):  # a file system without flock: rename unlocked
                fcntl.flock(folders[key], fcntl.LOCK_EX)
            locks.append(folders[key])
        while pending:
            tmp, dest, name = pending[0]
            try:
                os.replace(tmp, dest)
            except OSError as e:
                raise OutputError(name, e) from None
            pending.pop(0)
        for fd in locks:
            with contextlib.suppress(OSError):  # the renames' durability, where supported
                os.fsync(fd)
    finally:
        for fd in locks:
            os.close(fd)


@contextlib.contextmanager
def _written(fd, path, sync):
    """An OutputFile on the open `fd`, flushed (and with sync, on disk) at the end; fd closed."""
    try:
        out = OutputFile(fd, path)
        yield out
        out.flush()
        if sync:
            try:
                os.fsync(fd)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # a file system without fsync
                    raise OutputError(path, e) from None
    finally:
        _close(fd, path)


@contextlib.contextmanager
def atomic_output(path, binary=False):
    """Yield an OutputFile; on success rename it to `path` (inside publish_together: when the
    block succeeds), on error remove it. `binary` is accepted for the callers' clarity: the
    file takes str and bytes alike.

    For `path == "-"` yield standard output. An existing path that is not a regular file
    (/dev/null, a named pipe, /dev/stdout) is written in place: renaming over it would
    replace the device.
    """
    if path == "-":
        check_writable(path)
        out = _stdout()
        yield out
        out.flush()
        return
    if _special(path):  # a device or a pipe: there is nothing to replace atomically
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        except OSError as e:
            raise OutputError(path, e) from None
        with _written(fd, path, sync=False) as out:
            yield out
        return
    dest = destination(path)
    folder = os.path.dirname(dest)
    remove_stale_temps(folder)
    pending = _publication.get()
    tmp = None
    try:  # from before the temporary exists: a signal at any point leaves no file behind
        while True:
            tmp = _temp_name(folder, os.path.basename(dest))   # holds our pid: a file by that name is ours
            try:  # mode 0666 less the umask, as a plain open() creates it
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
                break
            except FileExistsError:
                tmp = None
                continue
            except OSError as e:
                tmp = None
                raise OutputError(path, e) from None
        with _written(fd, path, sync=True) as out:
            yield out
        if pending is not None:
            pending.append((tmp, dest, path))
        else:
            _commit([(tmp, dest, path)])
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise

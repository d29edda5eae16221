"""Outputs that appear whole or not at all.

Every file fmcli writes goes to a temporary file in the destination folder and
is renamed into place only when complete, so a cron job never sees half a file.
`-` means standard output.
"""

import contextlib
import os
import stat
import sys
import tempfile

from fmcli.errors import UsageError


def _special(path):
    """True for an existing file that is not a regular one (/dev/null, a FIFO, /dev/stdout):
    it is written in place, never replaced by a rename."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path)
    except OSError:
        return False


def check_writable(path, what="output"):
    """Fail before any work if `path` cannot be created (missing or read-only folder)."""
    if path is None or path == "-":
        return
    if _special(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{path}: cannot write {what}: permission denied")
        return
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise UsageError(f"{path}: {what} path is a directory")
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: cannot write {what}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: cannot write {what}: folder {folder} is not writable")


@contextlib.contextmanager
def atomic_output(path, binary=False):
    """Yield a file object; on success rename it to `path`, on error remove it.

    For `path == "-"` yield standard output (text or its binary buffer). An existing
    path that is not a regular file (/dev/null, a named pipe, /dev/stdout) is written
    in place: renaming over it would replace the device.
    """
    if path == "-":
        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    if _special(path):  # a device or a pipe: there is nothing to replace atomically
        with open(path, "wb" if binary else "w", **({} if binary else {"newline": "\n"})) as f:
            yield f
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": "\n"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

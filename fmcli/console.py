"""Messages on stderr: nothing with --quiet, a progress bar only on a terminal.

stdout is reserved for data (predictions with `-out -`). Messages are a courtesy: a stderr
that cannot take them (`2>/dev/full`, a closed pipe) drops them and never changes how a run
ends (see drop_messages).
"""

import os
import sys


def drop_messages(stream):
    """After a failed write to `stream`, send further messages nowhere: if it is sys.stderr it
    is replaced by /dev/null, so that Python's flush at exit cannot fail (exit status 120)
    either. Returns the replacement."""
    null = open(os.devnull, "w")
    if stream is sys.stderr:
        sys.stderr = null
    return null


class Console:
    def __init__(self, quiet=False, verbosity=0, stream=None):
        self.quiet, self.verbosity = quiet, verbosity
        self.stream = sys.stderr if stream is None else stream
        self._bar = None

    def info(self, msg):
        """A status line (data sizes, what is written where)."""
        if not self.quiet:
            self._write(msg)

    def detail(self, msg):
        """Only with -verbosity > 0."""
        if self.verbosity > 0:
            self.info(msg)

    def warn(self, msg):
        if not self.quiet:
            self._write(f"fmcli: warning: {msg}")

    def progress(self, total, desc):
        """Start a bar on a terminal (never in pipes, logs or cron)."""
        if not self.quiet and total and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)

    def advance(self):
        if self._bar is not None:
            self._bar.update(1)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, msg):
        try:
            if self._bar is not None:
                self._bar.write(msg, file=self.stream)
            else:
                print(msg, file=self.stream, flush=True)
        except (OSError, ValueError):  # a full or closed stderr: drop messages, go on
            self._bar = None
            self.stream = drop_messages(self.stream)

"""Exceptions that the CLI turns into one stderr line and an exit code.

Exit codes: 0 success, 2 usage or input error, 1 any other failure.
"""


class FmcliError(Exception):
    """A failure the user should see as `fmcli: error: <message>`."""

    exit_code = 1

    def __reduce__(self):
        # a failure in a worker process comes back whole, whatever the subclass's constructor
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls, args, state):
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class UsageError(FmcliError):
    """Bad options or option values."""

    exit_code = 2


class InputError(FmcliError):
    """Bad input data or model file; names the file and, where known, the line."""

    exit_code = 2

    def __init__(self, path, line, message):
        self.path, self.line, self.message = str(path), line, message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class TrainingError(FmcliError):
    """Training failed (e.g. diverged): exit code 1, nothing written."""

    exit_code = 1


class Interrupted(FmcliError):
    """SIGINT or SIGTERM stopped the run; the message says what was kept."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(Exception):
    """SIGTERM arrived: the run stops as for Ctrl-C, with exit code 143."""

"""fmcli's command-line contract on bad input, shared by tests/test_fuzz.py and bench/fuzz.py:
run the CLI in-process and say what, if anything, broke the contract."""

import io
import os
import sys

from fmcli.cli import main


def run_cli(args, stdin=None):
    """(exit code, stdout, stderr) of fmcli ARGS, in-process."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    code = None
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


def violation(code, stdout, err, outputs, folder):
    """None if the contract holds, else what broke."""
    if "Traceback" in err or "internal error" in err:
        return "traceback / internal error"
    if code == 1 and not ("diverged" in err or "NaN or inf" in err):
        # exit 1 is right only for a run that fails on valid input: a warm start from a
        # (libFM, unchecked) model with huge values may diverge
        return f"exit code 1: {err.strip()[:100]}"
    if code not in (0, 1, 2):
        return f"exit code {code}"
    temps = [f for f in os.listdir(folder) if f.endswith(".tmp")]
    if temps:
        return f"temporary files left: {temps}"
    if code in (1, 2):
        if err.count("\n") != 1 or not err.startswith("fmcli: error: "):
            return "error is not one 'fmcli: error:' line"
        if stdout:
            return "stdout not empty after an error"
        left = [p for p in outputs if os.path.exists(p)]
        if left:
            return f"outputs written after an error: {left}"
    elif code == 0:
        missing = [p for p in outputs if not os.path.exists(p)]
        if missing:
            return f"outputs missing after success: {missing}"
    return None

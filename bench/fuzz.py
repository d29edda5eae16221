#!/usr/bin/env python3
"""Fuzz every fmcli reader and writer through the command line, and inject faults.

usage: python3 bench/fuzz.py [--cases N] [--kill-trials K] [--seconds S] [--seed SEED] [--keep DIR]

N in-process cases (tests/fuzz_cases.py says what each is): mutated and random libFM text
(plain, gzip, bzip2, xz, on stdin), text, .npz and libFM models, -meta and relation files,
convert's delimited input and mappings, changed bytes anywhere in a binary cache (beside an
intact text: must be rebuilt, same predictions as --no-cache) or a binary data file (must be
refused), random option lines, outputs that are inputs under another spelling, a full disk.
Then K runs stopped by SIGKILL or SIGTERM at a random moment (every destination must be the
old file or the complete new one, -out and -save_model from the same run, no temporary file
after the next run), closed and full standard streams, a reader that goes away, a read-only
folder and concurrent runs on the same outputs.

Prints the counts the reliability issue names (signals/crashes, internal errors, exit 0 on bad
input, partial or mixed outputs, hangs, other violations), per target, and exits 1 if any is
not 0; failing inputs are saved to DIR (default bench/out/fuzz). tests/test_fuzz.py runs a
fixed-seed sample of the same cases.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from fuzz_cases import COUNTS, fault_trials, run_cases  # noqa: E402  (tests/fuzz_cases.py)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10000, help="in-process cases (default 10000)")
    ap.add_argument("--kill-trials", type=int, default=50, help="SIGKILL/SIGTERM trials (default 50)")
    ap.add_argument("--seconds", type=float, default=float("inf"), help="time budget of the in-process cases")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "fuzz"),
                    help="where failing inputs are saved")
    a = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    counts, per_target, _ = run_cases(a.cases, a.seed, a.seconds, a.keep, log)
    t_cases = time.perf_counter() - start
    faults, _ = fault_trials(a.kill_trials, a.seed, log)
    t_faults = time.perf_counter() - start - t_cases
    print(f"fmcli fuzz (seed {a.seed}): {counts['cases']} cases in {t_cases:.0f} s, "
          f"{faults['cases']} fault trials ({a.kill_trials} SIGKILL/SIGTERM) in {t_faults:.0f} s")
    print(f"{'':<26} {'cases':>7} {'faults':>7}")
    for name in COUNTS:
        print(f"{name:<26} {counts[name]:>7} {faults[name]:>7}")
    print("cases per target: " + ", ".join(f"{t} {k}" for t, k in sorted(per_target.items())))
    bad = sum(counts[n] + faults[n] for n in COUNTS if n != "cases")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

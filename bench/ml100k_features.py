#!/usr/bin/env python3
"""MovieLens 100k with features built only by `fmcli convert`: user one-hot, item one-hot, the
user's age (standardised), gender and occupation from u.user, the item's 19 genre flags from
u.item (latin-1) as one set (value 1 each), 30-day periods of the rating's timestamp, and the two
implicit-feedback relations (each user's rated items, each item's raters, from the train split
only); then MCMC with -meta. Prints every command it runs and the last iteration's test RMSE.

usage: python3 bench/ml100k_features.py [--data DIR] [--out DIR] [--splits ua,ub] [--dim 8]
                                        [--iter 200] [--seed 0] [--no-timestamp] [--task r|o]
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def fmcli(args, log=None):
    cmd = [sys.executable, "-m", "fmcli"] + [str(a) for a in args]
    print("$ fmcli " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if log:
        with open(log, "w") as fh:
            fh.write(res.stderr)
    if res.returncode:
        sys.exit(f"failed ({res.returncode}): {res.stderr.strip().splitlines()[-1]}")
    return res.stderr


def convert_args(data, split, out, timestamp):
    d = lambda name: os.path.join(data, name)      # noqa: E731
    o = lambda name: os.path.join(out, f"{split}.{name}")  # noqa: E731
    args = ["convert", "-in", d(f"{split}.base"), "-in", d(f"{split}.test"),
            "-out", o("train.libfm"), "-out", o("test.libfm"),
            "--target", "2", "--categorical", "0,1", "--user", "0", "--item", "1",
            "--join", f"{d('u.user')}:0=0:sep=|:name=user", "--drop", "user.4", "--standardize", "user.1",
            "--join", f"{d('u.item')}:0=1:sep=|:name=item:encoding=latin-1",
            "--drop", "item.1,item.2,item.3,item.4", "--set-columns", "genres=item.5..item.23",
            "--relations", o("rel"), "-meta", o("meta"), "--mapping", o("map.json"), "-q"]
    args += ["--timestamp", "3:days30"] if timestamp else ["--drop", "3"]
    return args


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    p.add_argument("--out", default=os.path.normpath(os.path.join(ROOT, "bench", "out", "ml100k_features")))
    p.add_argument("--splits", default="ua,ub")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--iter", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-timestamp", action="store_true", help="drop the timestamp (no context feature)")
    p.add_argument("--task", default="r", choices=["r", "o"],
                   help="r: regression; o: ordered probit (RMSE of the expected rating)")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    results = {}
    for split in a.splits.split(","):
        o = lambda name: os.path.join(a.out, f"{split}.{name}")  # noqa: E731
        t0 = time.time()
        fmcli(convert_args(a.data, split, a.out, not a.no_timestamp))
        t_convert = time.time() - t0
        t0 = time.time()
        log = fmcli(["train", "-task", a.task, "-train", o("train.libfm"), "-test", o("test.libfm"),
                     "-method", "mcmc", "-dim", f"1,1,{a.dim}", "-iter", a.iter, "-meta", o("meta"),
                     "-relation", f"{o('rel')}.users,{o('rel')}.items", "-seed", a.seed, "--no-cache"],
                    log=o(f"mcmc{a.dim}{a.task}.log"))
        last = re.findall(r"Test=([0-9.]+)", log)[-1]
        results[split] = float(last)
        print(f"{split}: test RMSE {last} after {a.iter} iterations (dim {a.dim}; convert {t_convert:.1f} s, "
              f"train {time.time() - t0:.0f} s)", flush=True)
    print("RMSE " + "  ".join(f"{s} {v:.4f}" for s, v in results.items()))


if __name__ == "__main__":
    main()

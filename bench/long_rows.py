#!/usr/bin/env python3
"""Time of an ALS/MCMC iteration with one long row against a set of short rows of the same
nnz (issue 11, item 8: an iteration must cost O(k nnz) whatever the row lengths).

usage: python3 bench/long_rows.py [--lengths 10000,40000,80000,200000] [--method als]
       [--iter 3] [--k 8]

Data (seeded): 20,000 short rows of a one-hot user, item and context (60,000 entries over
2,010 features), then either one row of L distinct features (the first L ids of a space of
max(L, 2010) features, values 1) or L/3 more short rows (the same nnz). Prints the set-up
(the learner's construction: colouring, row order, CSC) and the mean time of an iteration
(step), in-process, on the default threads.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fmcli.data import SparseData                    # noqa: E402
from fmcli.learners.base import TrainOptions         # noqa: E402
from fmcli.train import build_learner                # noqa: E402

N_SHORT, USERS, ITEMS, CTX = 20000, 1000, 1000, 10


def short_rows(rng, n):
    ids = np.stack([rng.integers(0, USERS, n), USERS + rng.integers(0, ITEMS, n),
                    USERS + ITEMS + rng.integers(0, CTX, n)], axis=1)
    return [list(r) for r in ids]


def data_set(length, long_row, seed=0):
    rng = np.random.default_rng(seed)
    rows = short_rows(rng, N_SHORT)
    rows += [list(range(length))] if long_row else short_rows(rng, length // 3)
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    indices = np.concatenate([np.asarray(r, np.int32) for r in rows])
    data = np.ones(len(indices), np.float32)
    y = rng.normal(3.0, 1.0, len(rows)).astype(np.float32)
    return SparseData(indptr, indices, data, y, max(length, USERS + ITEMS + CTX))


def time_run(d, method, iterations, k):
    opts = TrainOptions(task="r", method=method, dim=(1, 1, k), iterations=iterations,
                        regular=(0.0, 1.0, 1.0), seed=1)
    t0 = time.perf_counter()
    learner = build_learner(opts, d, {})
    setup = time.perf_counter() - t0
    learner.step(0)      # compiles (or loads) the kernels, sizes the scratch: not timed
    t0 = time.perf_counter()
    for it in range(1, iterations + 1):
        learner.step(it)
    return setup, (time.perf_counter() - t0) / iterations, len(learner.class_ptr) - 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="10000,40000,80000,200000")
    ap.add_argument("--method", default="als", choices=("als", "mcmc"))
    ap.add_argument("--iter", type=int, default=3)
    ap.add_argument("--k", type=int, default=8)
    args = ap.parse_args()
    for long_row in (True, False):           # compile (or load) every kernel
        time_run(data_set(3000, long_row), args.method, 1, args.k)
    print(f"{args.method} k={args.k}: {N_SHORT} short rows + one row of L entries, or + L/3 short rows")
    print("L\tnnz\tlong: setup s\tlong: s/iter\tclasses\tshort: setup s\tshort: s/iter\tclasses")
    for length in (int(x) for x in args.lengths.split(",")):
        a = data_set(length, True)
        b = data_set(length, False)
        ta = time_run(a, args.method, args.iter, args.k)
        tb = time_run(b, args.method, args.iter, args.k)
        print(f"{length}\t{a.nnz}\t{ta[0]:.3f}\t{ta[1]:.4f}\t{ta[2]}\t{tb[0]:.3f}\t{tb[1]:.4f}\t{tb[2]}",
              flush=True)


if __name__ == "__main__":
    main()

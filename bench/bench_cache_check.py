#!/usr/bin/env python3
"""Cost of checking a binary cache on load (XXH64 of each array + the compiled bound check),
against one ALS iteration at dim 8 on the same rows.

usage: PYTHONPATH=. python3 bench/bench_cache_check.py PREFIX
       (PREFIX.train.libfm and PREFIX.test.libfm, e.g. from
        python3 ../shared/bench/synth.py /tmp/cache_bench/s1m 1000000 --seed 0)

Builds the caches beside the text files if needed, then times (min and median of 5 calls,
kernels compiled, files in the page cache) read_cache with every check, its two parts on the
same mapped arrays, load_dataset, the whole-text XXH64 of --verify-cache, and `step(0)` of an
ALS learner built as `fmcli train -method als -dim 1,1,8` builds it (3 times).
"""

import sys
import time

import numpy as np

from fmcli.console import Console
from fmcli.io import cache
from fmcli.io.load import load_dataset
from fmcli.learners.base import TrainOptions
from fmcli.plan import TrainJob, resolve
from fmcli.train import build_learner, load_data


def timed(f, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts), float(np.median(ts))


def main():
    prefix = sys.argv[1]
    tr, te = prefix + ".train.libfm", prefix + ".test.libfm"
    load_dataset(tr)
    load_dataset(te)                      # caches built, kernels compiled
    cpath = cache.cache_path(tr)
    ident = cache.text_identity(tr)
    with open(cpath, "rb") as f:
        header, start, layout = cache._header(f)
    arrays = [np.memmap(cpath, dtype, "r", start + off, (count,)) for _, dtype, off, count in layout]
    rows = [("read_cache (all checks)", timed(lambda: cache.read_cache(cpath, ident))),
            ("  XXH64 of the arrays", timed(lambda: [cache.xxh64(a) for a in arrays])),
            ("  bound check", timed(lambda: cache._array_problem(*arrays, header["n_features"]))),
            ("load_dataset(train)", timed(lambda: load_dataset(tr))),
            ("text XXH64 (--verify-cache)", timed(lambda: cache.text_xxh64(tr)))]
    print(f"payload {sum(a.nbytes for a in arrays) / 1e6:.1f} MB, text {ident['size'] / 1e6:.1f} MB")
    for name, (lo, med) in rows:
        print(f"{name:30s} min {lo * 1e3:7.1f} ms  median {med * 1e3:7.1f} ms")
    plan = resolve(TrainJob(opts=TrainOptions(task="r", method="als", dim=(1, 1, 8), iterations=1),
                            train=tr, test=te))
    train, evals = load_data(plan, Console(quiet=True))
    its = []
    for _ in range(3):
        learner = build_learner(plan.opts, train, evals, None, None)
        t = time.perf_counter()
        learner.step(0)
        its.append(time.perf_counter() - t)
    it = min(its)
    print(f"ALS iteration dim 8: min {it:.3f} s  all {[round(x, 3) for x in its]}")
    print(f"checks / one ALS iteration: {rows[0][1][0] / it:.3f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Per-sweep time of the ALS and MCMC learners on the 1M synthetic set (anchors.md).

usage: python3 bench/bench_learners.py [PREFIX] [--iters N] [--dim K] [--methods als,mcmc]

PREFIX.{train,test}.npz come from `python3 ../shared/bench/synth.py PREFIX 1000000 --seed 1 --npz`
(default prefix /tmp/fmcli-bench/als/s1m). Prints setup time, the time of each sweep (which
includes the train and test predictions after it) and the final test RMSE.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fmcli.data import SparseData  # noqa: E402
from fmcli.learners.base import TrainOptions  # noqa: E402
from fmcli.model import FMModel  # noqa: E402
from fmcli import metrics  # noqa: E402


def load(path):
    z = np.load(path)
    return SparseData(z["indptr"].astype(np.int64), z["indices"].astype(np.int32),
                      z["data"].astype(np.float32), z["y"].astype(np.float32), int(z["n_features"]), path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prefix", nargs="?", default="/tmp/fmcli-bench/als/s1m")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--methods", default="als,mcmc")
    a = ap.parse_args()
    from fmcli.learners.als import ALSLearner
    from fmcli.learners.mcmc import MCMCLearner

    t0 = time.perf_counter()
    train, test = load(a.prefix + ".train.npz"), load(a.prefix + ".test.npz")
    print(f"load npz {time.perf_counter() - t0:.2f} s: {train.n_rows} rows, {train.nnz} nnz, "
          f"{train.n_features} features")
    for method in a.methods.split(","):
        n = max(train.n_features, test.n_features)
        opts = TrainOptions(task="r", method=method, dim=(1, 1, a.dim), iterations=a.iters,
                            regular=(0, 10, 10), seed=1)
        rng = np.random.default_rng(1)
        model = FMModel.init(n, a.dim, rng=rng)
        t0 = time.perf_counter()
        cls = ALSLearner if method == "als" else MCMCLearner
        learner = cls(model, train, {"test": test}, opts, rng)
        setup = time.perf_counter() - t0
        times = []
        for it in range(a.iters):
            t0 = time.perf_counter()
            learner.step(it)
            times.append(time.perf_counter() - t0)
        rmse = metrics.rmse(learner.eval_predictions("test"), test.y)
        print(f"{method} dim {a.dim}: setup {setup:.2f} s, per sweep "
              + " ".join(f"{t:.2f}" for t in times)
              + f" (median {np.median(times):.2f} s), test RMSE {rmse:.4f}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""SGD time per epoch on the 1M-row synthetic set, beside libFM's figures (anchors.md).

usage: python bench/bench_sgd.py [PREFIX] [--dim K] [--epochs N]
PREFIX defaults to /tmp/fmcli-bench/s1m; the set is generated with
../shared/bench/synth.py (seed 1) when missing. An epoch here is what libFM
times per iteration: the SGD pass plus predicting train and test.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fmcli.io.libsvm import read_libfm  # noqa: E402
from fmcli.learners.base import TrainOptions  # noqa: E402
from fmcli.learners.sgd import SGDLearner  # noqa: E402
from fmcli.model import FMModel  # noqa: E402

# libFM 1.4.4, 1M set, -learn_rate 0.01 -regular 0,0.01,0.01: wall s per epoch (slow hour / quiet hour)
LIBFM_EPOCH = {8: (1.63, 0.43), 64: (16.6, 7.33)}
SYNTH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench", "synth.py")


def ensure_data(prefix):
    if not os.path.exists(prefix + ".train.libfm"):
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        subprocess.run([sys.executable, SYNTH, prefix, "1000000", "--seed", "1"], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prefix", nargs="?", default="/tmp/fmcli-bench/s1m")
    ap.add_argument("--dim", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    ensure_data(a.prefix)
    train = read_libfm(a.prefix + ".train.libfm")
    test = read_libfm(a.prefix + ".test.libfm")
    print(f"| dim | fmcli s/epoch (best of {a.epochs}) | libFM s/epoch (slow / quiet hour) | ratio to libFM | test RMSE |")
    print("|---|---|---|---|---|")
    for k in a.dim:
        opts = TrainOptions(method="sgd", dim=(1, 1, k), learn_rate=0.01, regular=(0, 0.01, 0.01), seed=1)
        n = max(train.n_features, test.n_features)
        model = FMModel.init(n, k, init_stdev=0.1, rng=np.random.default_rng(1))
        model.y_min, model.y_max = float(train.y.min()), float(train.y.max())
        learner = SGDLearner(model, train, {"test": test}, opts, np.random.default_rng(1))
        learner.step(0)  # compile
        times = []
        for it in range(a.epochs):
            t0 = time.perf_counter()
            learner.step(it)
            learner.train_predictions()
            pred = learner.eval_predictions("test")
            times.append(time.perf_counter() - t0)
        rmse = float(np.sqrt(np.mean((pred - test.y) ** 2)))
        slow, quiet = LIBFM_EPOCH[k]
        best = min(times)
        print(f"| {k} | {best:.3f} | {slow} / {quiet} | {best / slow:.2f} / {best / quiet:.2f} | {rmse:.4f} |")


if __name__ == "__main__":
    main()

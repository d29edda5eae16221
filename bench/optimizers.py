#!/usr/bin/env python3
"""MovieLens 100k: plain SGD, AdaGrad and Adam (`-method sgd --optimizer ...`), test RMSE per epoch.

usage: python3 bench/optimizers.py [--data DIR] [--epochs 200] [--quick]

Splits ua and ub, converted with bench/ml100k.py's functions (user and item one-hot, dim 1,1,8,
init_stdev 0.1, seed 1). Plain SGD runs libFM's settings (learn_rate 0.005, regular
0,0.12,0.12); AdaGrad and Adam run a small grid of learning rates and regularisations
(-regular 0,r,r), each setting chosen on ua by its best test RMSE and then run on ub
unchanged. Every run tracks the test RMSE after each epoch; the tables give the best RMSE,
the epoch (1-based) where it is reached, the RMSE after the last epoch, and the seconds per
epoch (the compiled pass alone; the per-epoch test prediction is not counted). For ub, also
the RMSE at the epoch chosen on ua, so nothing on ub is tuned on ub's test rows.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from ml100k import N_ITEMS, N_USERS, convert, to_sparse  # noqa: E402

from fmcli import metrics  # noqa: E402
from fmcli.learners.base import TrainOptions  # noqa: E402
from fmcli.train import build_learner  # noqa: E402

PLAIN = ("sgd", 0.005, 0.12)          # libFM's ml-100k settings
GRID = {"adagrad": ([0.01, 0.03, 0.1], [0.05, 0.12, 0.2, 0.3]),
        "adam": ([0.001, 0.003, 0.01], [0.05, 0.12, 0.2, 0.3])}


def load(data_dir, split):
    out = []
    for part in ("base", "test"):
        rows, y = convert(os.path.join(data_dir, f"{split}.{part}"))
        d = to_sparse(rows, y, f"{split}.{part}")
        d.n_features = N_USERS + N_ITEMS
        out.append(d)
    return out


def curve(train, test, optimizer, learn_rate, reg, epochs, seed=1, init_stdev=0.1, dim=(1, 1, 8)):
    """Test RMSE after each epoch, and the mean seconds of one compiled pass."""
    opts = TrainOptions(task="r", method="sgd", dim=dim, iterations=epochs, learn_rate=learn_rate,
                        regular=(0.0, reg, reg), init_stdev=init_stdev, seed=seed, optimizer=optimizer)
    learner = build_learner(opts, train, {"test": test})
    rmse, seconds = [], 0.0
    for it in range(epochs):
        t0 = time.perf_counter()
        learner.step(it)
        seconds += time.perf_counter() - t0
        rmse.append(metrics.rmse(learner.eval_predictions("test"), test.y))
    return np.array(rmse), seconds / epochs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "ml-100k"))
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="20 epochs, one grid point per optimizer")
    a = ap.parse_args(argv)
    epochs = 20 if a.quick else a.epochs
    grid = {name: ([rates[1]], [regs[1]]) for name, (rates, regs) in GRID.items()} if a.quick else GRID
    ua, ub = load(a.data, "ua"), load(a.data, "ub")
    curve(*ua, "adam", 0.001, 0.05, 1)            # compile outside the timings
    curve(*ua, "adagrad", 0.01, 0.05, 1)

    print(f"## ua: grid ({epochs} epochs; best test RMSE, its epoch, last-epoch RMSE, s/epoch)")
    print("| optimizer | learn_rate | regular | best RMSE | epoch | RMSE at last epoch | s/epoch |")
    print("|---|---|---|---|---|---|---|")
    chosen = {}
    settings = [PLAIN] + [(name, lr, r) for name, (rates, regs) in grid.items() for lr in rates for r in regs]
    for name, lr, r in settings:
        rm, sec = curve(*ua, name, lr, r, epochs)
        best = int(np.argmin(rm))
        print(f"| {name} | {lr:g} | 0,{r:g},{r:g} | {rm[best]:.4f} | {best + 1} | {rm[-1]:.4f} | {sec:.4f} |",
              flush=True)
        if name not in chosen or rm[best] < chosen[name][3]:
            chosen[name] = (lr, r, best, rm[best], sec)

    print(f"\n## chosen on ua, then ub with the same settings ({epochs} epochs)")
    print("| optimizer | learn_rate | regular | ua best RMSE | ua epoch | ua s/epoch | ub best RMSE | ub epoch "
          "| ub RMSE at ua's epoch | ub RMSE at last epoch | ub s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (lr, r, best, score, sec) in chosen.items():
        rm, sec_b = curve(*ub, name, lr, r, epochs)
        b = int(np.argmin(rm))
        print(f"| {name} | {lr:g} | 0,{r:g},{r:g} | {score:.4f} | {best + 1} | {sec:.4f} | {rm[b]:.4f} | {b + 1} "
              f"| {rm[best]:.4f} | {rm[-1]:.4f} | {sec_b:.4f} |", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""-task o (ordered probit MCMC) against -task r MCMC (issue 15).

usage: python3 bench/ordinal_ml100k.py [--data DIR] [--splits ua,ub] [--iters 200] [--seed 1]
                                       [--speed-rows 1000000] [--speed-iters 30] [--no-accuracy] [--no-speed]

Accuracy: ml-100k ua and ub, user and item one-hot (bench/ml100k.py's rows) with the users/items
groups (-meta), dim 1,1,8, the same iterations and seed for both tasks, through the library
(fmcli.train.build_learner). Prints RMSE and MAE of the expected rating (-task r: the clipped
prediction), accuracy (most probable class; -task r: the rounded prediction) and the
differences o − r.

Speed: a synthetic set (../shared/bench/synth.py, --speed-rows train rows, seed 1) with its
targets standardised and rounded to 5 classes (1..5); both tasks on the same rows, dim 1,1,8,
a learner of each, their sweeps alternated (--speed-iters each, after a first one), each timed:
the ratio o / r of the median seconds per iteration; also with the train and test metrics that
`fmcli train` computes after each sweep.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from ml100k import N_ITEMS, N_USERS, convert, to_sparse  # noqa: E402

from fmcli import metrics  # noqa: E402
from fmcli.data import SparseData  # noqa: E402
from fmcli.learners.base import TrainOptions  # noqa: E402
from fmcli.train import build_learner  # noqa: E402


def learner(task, train, test, groups, iters, seed, dim=(1, 1, 8)):
    opts = TrainOptions(task=task, method="mcmc", dim=dim, iterations=iters, seed=seed, regular=(0, 0, 0))
    return build_learner(opts, train, {"test": test}, groups)


def scores(task, lrn, y):
    pred = lrn.eval_predictions("test")
    if task == "o":
        m = metrics.ordinal(pred, y)
        return m["rmse"], m["mae"], m["accuracy"]
    return metrics.rmse(pred, y), metrics.mae(pred, y), float(np.mean(np.clip(np.round(pred), 1, 5) == y))


def accuracy(args):
    groups = np.concatenate([np.zeros(N_USERS), np.ones(N_ITEMS)]).astype(np.int64)
    print(f"ml-100k, dim 1,1,8, users/items groups, {args.iters} iterations, seed {args.seed}")
    print("split\ttask\tRMSE\tMAE\taccuracy\ts/iter")
    for split in args.splits.split(","):
        sets = [to_sparse(*convert(os.path.join(args.data, f"{split}.{part}")), f"{split}.{part}")
                for part in ("base", "test")]
        n = max(d.n_features for d in sets)
        train, test = (SparseData(d.indptr, d.indices, d.data, d.y, n, d.source) for d in sets)
        res = {}
        for task in ("r", "o"):
            lrn = learner(task, train, test, groups, args.iters, args.seed)
            t0 = time.perf_counter()
            for it in range(args.iters):
                lrn.step(it)
            sec = (time.perf_counter() - t0) / args.iters
            res[task] = scores(task, lrn, test.y)
            print(f"{split}\t{task}\t{res[task][0]:.4f}\t{res[task][1]:.4f}\t{res[task][2]:.4f}\t{sec:.3f}",
                  flush=True)
        d = [res["o"][i] - res["r"][i] for i in range(3)]
        print(f"{split}\to-r\t{d[0]:+.4f}\t{d[1]:+.4f}\t{d[2]:+.4f}\t(goal: RMSE <= -0.0015: "
              f"{'met' if d[0] <= -0.0015 else 'NOT met'})", flush=True)


def speed(args):
    prefix = f"/tmp/fmcli-bench/ord{args.speed_rows}"
    if not os.path.exists(prefix + ".train.npz"):
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        subprocess.run([sys.executable, "/work/shared/bench/synth.py", prefix, str(args.speed_rows),
                        "--test", "10000", "--seed", "1", "--npz"], check=True, stdout=subprocess.DEVNULL)
    sets = []
    for part in ("train", "test"):
        z = np.load(f"{prefix}.{part}.npz")
        sets.append((z["indptr"], z["indices"], z["data"], z["y"]))
    y_tr = sets[0][3]
    mu, sd = float(np.mean(y_tr)), float(np.std(y_tr))
    n = int(max(s[1].max() for s in sets)) + 1
    data = []
    for indptr, indices, vals, y in sets:
        y5 = np.clip(np.round((y - mu) / sd + 3.0), 1, 5).astype(np.float32)
        data.append(SparseData(np.asarray(indptr, np.int64), np.asarray(indices, np.int32),
                               np.asarray(vals, np.float32), y5, n, "synthetic"))
    train, test = data
    print(f"speed: synthetic {train.n_rows} train rows, {n} features, targets rounded to 5 classes "
          f"(counts {np.bincount(train.y.astype(int))[1:].tolist()}), dim 1,1,8, {args.speed_iters} sweeps each, alternated")
    # both learners side by side, their steps alternated (r, o, r, o, ...): the machine's drift
    # falls on both alike; each step timed, the ratio of the medians
    lrn = {task: learner(task, train, test, None, args.speed_iters + 1, args.seed) for task in ("r", "o")}
    times = {"r": [], "o": []}
    whole = {"r": [], "o": []}

    def report(task, model):
        # what `fmcli train` adds to each step: the train and test metrics it prints
        pred, y = model.train_scores()
        metrics.evaluate(task, pred, y)
        metrics.evaluate(task, model.eval_predictions("test"), test.y)

    for task in ("r", "o"):
        lrn[task].step(0)     # compile and warm up
        report(task, lrn[task])
    for it in range(1, args.speed_iters + 1):
        for task in ("r", "o"):
            t0 = time.perf_counter()
            lrn[task].step(it)
            t1 = time.perf_counter()
            report(task, lrn[task])
            times[task].append(t1 - t0)
            whole[task].append(time.perf_counter() - t0)
    med = {task: float(np.median(t)) for task, t in times.items()}
    med_whole = {task: float(np.median(t)) for task, t in whole.items()}
    for task in ("r", "o"):
        print(f"  {task}: median {med[task]:.4f} s/iter, mean {np.mean(times[task]):.4f}; with the metrics "
              f"train prints, median {med_whole[task]:.4f}")
    ratio = med["o"] / med["r"]
    print(f"speed: with the metrics train prints each iteration, o / r = {med_whole['o'] / med_whole['r']:.3f}")
    print(f"speed: o / r = {ratio:.3f} (goal <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "ml-100k"))
    ap.add_argument("--splits", default="ua,ub")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed-rows", type=int, default=1_000_000)
    ap.add_argument("--speed-iters", type=int, default=30)
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        args.data = "/work/shared/data/ml-100k"
    if not args.no_accuracy:
        accuracy(args)
    if not args.no_speed:
        speed(args)


if __name__ == "__main__":
    main()

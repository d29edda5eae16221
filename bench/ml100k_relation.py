#!/usr/bin/env python3
"""MovieLens 100k with a relation block: each user's set of rated items (SVD++'s implicit
feedback) as libFM's block structure (`-relation`), against the same model without it and
against the same features written out flat in every row.

usage: python3 bench/ml100k_relation.py [--data DIR] [--out DIR] [--splits ua,ub] [--iters 200]
                                        [--flat-iters 5] [--seed 1]

Files written for split S into --out (default bench/out/ml100k), beside ml100k.py's:
    S.train.libfm, S.test.libfm   user one-hot (ids 0..942), item one-hot (943..2624), as ml100k.py
    S.rated.x                     relation design, libFM text: row u = the items user u rated in
                                  train, `0 i:1/sqrt|N(u)| ...` (SVD++'s normalisation; item ids
                                  0..1681 of the relation's own; the leading 0 is a placeholder)
    S.rated.train, S.rated.test   the relation row (user - 1) of every train / test row
    S.raters.*                    the item side: row i = the users who rated item i in train,
                                  1/sqrt|R(i)|; linked by item
Runs go through fmcli.train.run_train (the files above, as `fmcli train -relation` will read
them); -meta groups user 0, item 1; the relation is group 2 (libFM's default: one group per
relation, so rated,raters have groups 2 and 3). s/iter: wall time of learner.step (the sweep plus train and test predictions).
The flat runs (the relation's features written into every row: what a user without relations
would train on) are timed over --flat-iters iterations only, in fmcli's default sweep order.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fmcli import metrics  # noqa: E402
from fmcli.console import Console  # noqa: E402
from fmcli.data import flatten  # noqa: E402
from fmcli.learners.base import TrainOptions  # noqa: E402
from fmcli.plan import TrainJob, main_groups, resolve  # noqa: E402
from fmcli.train import build_learner, load_data  # noqa: E402

N_USERS, N_ITEMS = 943, 1682


def write_files(data_dir, out, split):
    tr = np.loadtxt(os.path.join(data_dir, f"{split}.base"), dtype=np.int64)
    te = np.loadtxt(os.path.join(data_dir, f"{split}.test"), dtype=np.int64)
    for part, raw in (("train", tr), ("test", te)):
        with open(os.path.join(out, f"{split}.{part}.libfm"), "w") as fh:
            for u, i, r, _ in raw:
                fh.write(f"{r} {u - 1}:1 {N_USERS + i - 1}:1\n")
    # rated: user -> the items the user rated in train; raters: item -> the users who rated it
    for name, key, other, n in (("rated", 0, 1, N_USERS), ("raters", 1, 0, N_ITEMS)):
        sets = [[] for _ in range(n)]
        for row in tr:
            sets[row[key] - 1].append(row[other] - 1)
        with open(os.path.join(out, f"{split}.{name}.x"), "w") as fh:
            for ids in sets:
                v = 1.0 / np.sqrt(max(len(ids), 1))
                fh.write("0 " + " ".join(f"{j}:{v:.9g}" for j in sorted(ids)) + "\n")
        for part, raw in (("train", tr), ("test", te)):
            np.savetxt(os.path.join(out, f"{split}.{name}.{part}"), raw[:, key] - 1, fmt="%d")


def job(out, split, method, iters, seed, relations=(), regular=(0, 0, 0)):
    opts = TrainOptions(task="r", method=method, dim=(1, 1, 8), iterations=iters, regular=regular,
                        init_stdev=0.1, seed=seed)
    return TrainJob(opts=opts, train=os.path.join(out, f"{split}.train.libfm"),
                    test=os.path.join(out, f"{split}.test.libfm"), meta=os.path.join(out, "ml100k.meta"),
                    relations=tuple(os.path.join(out, f"{split}.{r}") for r in relations))


def run(j, flat=False):
    """(test RMSE, s/iter, set-up s, train nnz): the learner driven as run_train drives it.
    flat: the relations written into every row."""
    quiet = Console(quiet=True)
    plan = resolve(j)
    train, evals = load_data(plan, quiet)
    groups = main_groups(plan, train, evals)
    if flat:
        # the same feature groups: the relations' own (feature_groups) after -meta's
        from fmcli.plan import model_groups

        groups = model_groups(groups, train, train.n_model_features)
        train, evals = flatten(train), {k: flatten(d) for k, d in evals.items()}
    t0 = time.perf_counter()
    lrn = build_learner(plan.opts, train, evals, groups)
    t1 = time.perf_counter()
    for it in range(plan.opts.iterations):
        lrn.step(it)
    t2 = time.perf_counter()
    score = metrics.rmse(lrn.eval_predictions("test"), evals["test"].y)
    return score, (t2 - t1) / plan.opts.iterations, t1 - t0, train.nnz


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "ml-100k"))
    ap.add_argument("--out", default=os.path.join(here, "out", "ml100k"))
    ap.add_argument("--splits", default="ua,ub")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--flat-iters", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    if not os.path.exists(os.path.join(a.out, "ml100k.meta")):
        np.savetxt(os.path.join(a.out, "ml100k.meta"), [0] * N_USERS + [1] * N_ITEMS, fmt="%d")
    print(f"{'split':5} {'setting':48} {'RMSE':>7} {'s/iter':>8} {'setup s':>7} {'train nnz':>10}")
    for split in a.splits.split(","):
        write_files(a.data, a.out, split)
        U, UI, it, fi = ("rated",), ("rated", "raters"), a.iters, a.flat_iters
        rows = [("mcmc, no relation", job(a.out, split, "mcmc", it, a.seed), False),
                ("mcmc, -relation rated", job(a.out, split, "mcmc", it, a.seed, U), False),
                ("mcmc, -relation rated,raters", job(a.out, split, "mcmc", it, a.seed, UI), False),
                ("als 0,10,10, no relation", job(a.out, split, "als", 100, a.seed, (), (0, 10, 10)), False),
                ("als 0,10,10, -relation rated", job(a.out, split, "als", 100, a.seed, U, (0, 10, 10)), False),
                ("als 0,10,10, -relation rated,raters",
                 job(a.out, split, "als", 100, a.seed, UI, (0, 10, 10)), False),
                (f"mcmc, rated flat in every row ({fi} it)", job(a.out, split, "mcmc", fi, a.seed, U), True),
                (f"mcmc, -relation rated ({fi} it)", job(a.out, split, "mcmc", fi, a.seed, U), False),
                (f"als, rated flat in every row ({fi} it)",
                 job(a.out, split, "als", fi, a.seed, U, (0, 10, 10)), True),
                (f"als, -relation rated ({fi} it)", job(a.out, split, "als", fi, a.seed, U, (0, 10, 10)), False)]
        for name, j, flat in rows:
            score, per_it, setup, nnz = run(j, flat)
            print(f"{split:5} {name:48} {score:7.4f} {per_it:8.4f} {setup:7.2f} {nnz:10d}", flush=True)


if __name__ == "__main__":
    main()

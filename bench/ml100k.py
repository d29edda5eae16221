#!/usr/bin/env python3
"""MovieLens 100k: conversion to libFM files and accuracy runs of the SGD, ALS and MCMC learners.

usage: python3 bench/ml100k.py [--data DIR] [--out DIR] [--splits ua,ub] [--only NAME,...] [--quick]

Writes, for each split S, bench/out/ml100k/S.{train,test}.libfm (user and item one-hot:
`r (u-1):1 (943+i-1):1`), S.side.{train,test}.libfm (plus side features), classification
versions S[.side].c.{train,test}.libfm (rating >= 4 -> 1, else 0) and the group files
ml100k.meta (users 0, items 1) and ml100k.side.meta. Runs go through the library API
(fmcli.learners) on the same arrays and print a table with libFM's figures (ua, from
../shared/docs/anchors.md) or myFM's (ub, measured by us) beside ours. s/iter is the wall
time of one sweep including the train and test predictions after it.

Side features (ids after the 2625 user/item ids): user age bucket (one-hot, 7 buckets:
<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), gender (2), occupation (21), item genres
(19, value 1/#genres of the item so that every item has the same total weight).
Side groups: age 2, gender 3, occupation 4, genres 5.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fmcli.data import SparseData  # noqa: E402
from fmcli.learners.base import TrainOptions  # noqa: E402
from fmcli import metrics  # noqa: E402

N_USERS, N_ITEMS = 943, 1682
AGE_EDGES = [18, 25, 35, 45, 50, 56]


def load_side(data_dir):
    users = [line.split("|") for line in open(os.path.join(data_dir, "u.user"), encoding="latin-1")
             if line.strip()]
    occs = [o.strip() for o in open(os.path.join(data_dir, "u.occupation"), encoding="latin-1")
            if o.strip()]
    occ_id = {o: i for i, o in enumerate(occs)}
    base = N_USERS + N_ITEMS
    off_age, off_gender = base, base + len(AGE_EDGES) + 1
    off_occ = off_gender + 2
    off_genre = off_occ + len(occs)
    user_feats = {}
    for u, age, gender, occ, _zip in users:
        a = int(np.searchsorted(AGE_EDGES, int(age), side="right"))
        user_feats[int(u)] = [(off_age + a, 1.0), (off_gender + (gender == "F"), 1.0),
                              (off_occ + occ_id[occ], 1.0)]
    item_feats = {}
    for line in open(os.path.join(data_dir, "u.item"), encoding="latin-1"):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("|")
        flags = [int(x) for x in parts[5:24]]
        g = [off_genre + i for i, f in enumerate(flags) if f]
        item_feats[int(parts[0])] = [(j, 1.0 / len(g)) for j in g]
    n_features = off_genre + 19
    groups = np.concatenate([np.zeros(N_USERS), np.ones(N_ITEMS), np.full(len(AGE_EDGES) + 1, 2),
                             np.full(2, 3), np.full(len(occs), 4), np.full(19, 5)]).astype(np.int32)
    assert len(groups) == n_features
    return user_feats, item_feats, groups


def convert(path, side=None):
    """rows: list of [(id, value)], ratings array."""
    raw = np.loadtxt(path, dtype=np.int64)
    rows = []
    for u, i, r, _ts in raw:
        feats = [(u - 1, 1.0), (N_USERS + i - 1, 1.0)]
        if side is not None:
            feats += side[0][u] + side[1][i]
        rows.append(feats)
    return rows, raw[:, 2].astype(np.float32)


def to_sparse(rows, y, source):
    indptr = np.zeros(len(rows) + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.array([j for r in rows for j, _ in r], np.int32)
    data = np.array([v for r in rows for _, v in r], np.float32)
    return SparseData(indptr, indices, data, y, int(indices.max()) + 1, source)


def write_libfm(path, rows, y):
    with open(path, "w") as fh:
        for r, t in zip(rows, y):
            fh.write(f"{t:g} " + " ".join(f"{j}:{v:g}" for j, v in r) + "\n")


def run(method, task, train, test, dim=(1, 1, 8), iters=100, regular=(0, 0, 0), groups=None,
        seed=1, init_stdev=0.1, learn_rate=0.01):
    from fmcli.train import build_learner

    opts = TrainOptions(task=task, method=method, dim=dim, iterations=iters, regular=regular,
                        init_stdev=init_stdev, seed=seed, learn_rate=learn_rate)
    t0 = time.perf_counter()
    learner = build_learner(opts, train, {"test": test}, groups)
    t1 = time.perf_counter()
    for it in range(iters):
        learner.step(it)
    t2 = time.perf_counter()
    pred = learner.eval_predictions("test")
    if task == "r":
        score = metrics.rmse(pred, test.y)
    else:
        score = metrics.auc(pred, test.y)
    return score, (t2 - t1) / max(iters, 1), t1 - t0, learner


def classify(d):
    return SparseData(d.indptr, d.indices, d.data, np.where(d.y >= 4, 1.0, -1.0).astype(np.float32),
                      d.n_features, d.source)


# name, method, task, features (plain|side), meta?, kwargs, libFM figure (ua), target (ua)
SETTINGS = [
    ("mcmc r", "mcmc", "r", "plain", False, dict(iters=200), 0.9180, 0.9210),
    ("mcmc r meta", "mcmc", "r", "plain", True, dict(iters=200), 0.9154, 0.9184),
    ("mcmc r side+meta", "mcmc", "r", "side", True, dict(iters=200), None, None),
    ("mcmc r side", "mcmc", "r", "side", False, dict(iters=200), None, None),
    ("als r 0,10,10", "als", "r", "plain", False, dict(iters=100, regular=(0, 10, 10)), 0.9299, 0.9329),
    ("als r meta 0,10,10", "als", "r", "plain", True, dict(iters=100, regular=(0, 10, 10)), 0.9299, 0.9329),
    ("als r meta 0,10,10,10,10", "als", "r", "plain", True,
     dict(iters=100, regular=(0, 10, 10, 10, 10)), 0.9299, 0.9329),
    # k = 32 > coord.FACTOR_BLOCK: the sweep goes factor block by factor block
    ("mcmc r meta dim 32", "mcmc", "r", "plain", True, dict(iters=200, dim=(1, 1, 32)), 0.9156, 0.9186),
    ("als r 0,15,15 dim 32", "als", "r", "plain", False,
     dict(iters=100, regular=(0, 15, 15), dim=(1, 1, 32)), 0.9381, 0.9411),
    ("mcmc c meta (AUC)", "mcmc", "c", "plain", True, dict(iters=200), 0.7775, 0.7725),
    ("mcmc c (AUC)", "mcmc", "c", "plain", False, dict(iters=200), None, None),
    ("als c 0,10,10 (AUC)", "als", "c", "plain", False, dict(iters=100, regular=(0, 10, 10)), 0.7710, 0.7660),
    # libFM's SGD figures were taken on pre-shuffled rows; ours shuffles every epoch
    ("sgd r", "sgd", "r", "plain", False,
     dict(iters=200, learn_rate=0.005, regular=(0, 0.12, 0.12)), 0.9354, 0.9354),
    ("sgd c (AUC)", "sgd", "c", "plain", False,
     dict(iters=100, learn_rate=0.01, regular=(0, 0.05, 0.05)), 0.7732, 0.7732),
]


# Peer figures on split ub (no libFM figure there): myFM 0.4.0 (pip), rank 8, 200 samples,
# random_seed 1, predictions clipped to [1, 5], measured beside ours on this machine
# (same conversion; on ua it gave 0.9184 and, with group_shapes [943, 1682], 0.9159).
REF_UB = {"mcmc r": 0.9340, "mcmc r meta": 0.9319}
TARGET_MARGIN = 0.003       # the ua targets are libFM's figure + 0.003 (AUC: - 0.005)


def reference(name, split, libfm, target, task):
    """(reference figure and its source, target) for one table row."""
    if split == "ua":
        return (f"{libfm:.4f} libFM" if libfm is not None else "-"), target
    if name in REF_UB:
        return f"{REF_UB[name]:.4f} myFM", REF_UB[name] + TARGET_MARGIN
    # classification AUC: the ALS/MCMC ua thresholds, which are below every peer figure on ua;
    # libFM's SGD figures are for ua only (the issue asks SGD to match libFM there)
    return "-", (target if task == "c" and not name.startswith("sgd") else None)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "ml-100k"))
    ap.add_argument("--out", default=os.path.join(here, "out", "ml100k"))
    ap.add_argument("--splits", default="ua,ub")
    ap.add_argument("--only", default=None, help="setting names separated by ;")
    ap.add_argument("--no-write", action="store_true", help="do not write libFM files")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    user_feats, item_feats, side_groups = load_side(a.data)
    plain_groups = side_groups[:N_USERS + N_ITEMS]
    if not a.no_write:
        np.savetxt(os.path.join(a.out, "ml100k.meta"), plain_groups, fmt="%d")
        np.savetxt(os.path.join(a.out, "ml100k.side.meta"), side_groups, fmt="%d")
    only = set(a.only.split(";")) if a.only else None
    print(f"{'split':5} {'setting':28} {'metric':6} {'ours':>8} {'reference':>13} {'target':>8} "
          f"{'s/iter':>7} {'setup s':>7}")
    for split in a.splits.split(","):
        data = {}
        for feats in ("plain", "side"):
            side = (user_feats, item_feats) if feats == "side" else None
            for part in ("base", "test"):
                rows, y = convert(os.path.join(a.data, f"{split}.{part}"), side)
                name = f"{split}{'.side' if side else ''}.{'train' if part == 'base' else 'test'}"
                if not a.no_write:
                    write_libfm(os.path.join(a.out, name + ".libfm"), rows, y)
                    write_libfm(os.path.join(a.out, name.replace(".t", ".c.t", 1) + ".libfm"),
                                rows, (y >= 4).astype(int))
                d = to_sparse(rows, y, name)
                if feats == "side":       # same feature space for train and test
                    d.n_features = len(side_groups)
                else:
                    d.n_features = N_USERS + N_ITEMS
                data[feats, part] = d
        for name, method, task, feats, meta, kw, libfm, target in SETTINGS:
            if only and name not in only:
                continue
            train, test = data[feats, "base"], data[feats, "test"]
            if task == "c":
                train, test = classify(train), classify(test)
            groups = (side_groups if feats == "side" else plain_groups) if meta else None
            score, per_it, setup, _ = run(method, task, train, test, groups=groups, **kw)
            metric = "RMSE" if task == "r" else "AUC"
            ref, target = reference(name, split, libfm, target, task)
            ok = ""
            if target is not None:
                ok = "ok" if (score <= target if task == "r" else score >= target) else "MISS"
            tg = f"{target:.4f}" if target is not None else "-"
            print(f"{split:5} {name:28} {metric:6} {score:8.4f} {ref:>13} {tg:>8} {per_it:7.4f} "
                  f"{setup:7.2f} {ok}", flush=True)


if __name__ == "__main__":
    main()

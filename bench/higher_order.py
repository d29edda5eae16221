#!/usr/bin/env python3
"""Orders 3 and up (issue 14): cost per iteration and accuracy on planted data.

usage: python3 bench/higher_order.py [cost|planted|ml100k|all] [--work DIR] [--iter N] [--rows N]
       [--methods sgd,als,mcmc] [--dims '1,1,8;1,1,8,8;1,1,8,8,8'] [--baseline TREE]
cost:    the 1M synthetic set (../shared/bench/synth.py PREFIX 1000000 --seed 1, generated under
         --work if missing); SGD, ALS, MCMC at -dim 1,1,8, 1,1,8,8 and 1,1,8,8,8, each a fresh
         `python -m fmcli train` process run side by side in this one run; the figure is the
         learner's mean time of the iterations after the first (--log-json time_learn; the
         first includes compiling; the default --iter 9 leaves 8, one of them with the train
         refresh ALS and MCMC make every 8 sweeps), printed with its ratio to -dim 1,1,8.
         --baseline TREE: each run also in another fmcli tree, interleaved, with this tree's
         time over TREE's.
planted: synth.py's layout (Zipf users/items, hour, weekday, half the rows a context and a
         numeric feature) with a planted order-3 FM (orders 2 and 3, k = 4 each) + N(0, 0.3²),
         --rows train rows (default synth.py's 1M; fewer leave the rare users' order-3 factors
         short of data: bench/notes.md) and a fifth as many test rows; MCMC with -dim 1,1,8 and
         -dim 1,1,8,8, 100 iterations: test RMSE against the noise floor 0.3.
ml100k:  MovieLens 100k ua with user and item side features built by `fmcli convert`
         (bench/ml100k_features.py's conversion: every row has user, item, age, gender,
         occupation, genres, 30-day period; its relations are not used, orders above 2 refuse
         them); MCMC -iter 100 with -meta at equal total factors per feature: -dim 1,1,12 against
         -dim 1,1,8,4.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(REPO, "..", "shared")


def fmcli(args, tree=REPO):
    env = dict(os.environ, PYTHONPATH=tree)
    r = subprocess.run([sys.executable, "-m", "fmcli", "train", "-q"] + args, env=env, cwd=tree,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise SystemExit(f"fmcli {' '.join(args)} failed: {r.stderr}")


def per_iteration(log):
    with open(log) as f:
        times = [json.loads(line)["time_learn"] for line in f if line.strip()]
    return float(np.mean(times[1:] if len(times) > 1 else times))


def cost(work, iters, methods=("sgd", "als", "mcmc"), dims=("1,1,8", "1,1,8,8", "1,1,8,8,8"), baseline=None):
    """baseline: another fmcli tree (e.g. `git archive COMMIT | tar -x -C DIR`); each run is then
    made in both trees in turn, and the last column is this tree's time over the baseline's."""
    prefix = os.path.join(work, "s1m")
    if not os.path.exists(prefix + ".train.libfm"):
        shared = SHARED if os.path.isdir(SHARED) else "/work/shared"
        subprocess.run([sys.executable, os.path.join(shared, "bench", "synth.py"), prefix, "1000000", "--seed", "1"],
                       check=True, stdout=subprocess.DEVNULL)
    base = ["-task", "r", "-train", prefix + ".train.libfm", "-iter", str(iters)]
    extra = {"sgd": ["-learn_rate", "0.01", "-regular", "0,0.01,0.01"], "als": ["-regular", "0,10,10"], "mcmc": []}
    trees = [("new", REPO)] + ([("base", os.path.abspath(baseline))] if baseline else [])
    print(f"{'method':6} {'dim':12} " + " ".join(f"{n + ' s/iter':>13} {'ratio':>6}" for n, _ in trees)
          + (f" {'new/base':>8}" if baseline else ""))
    for method in methods:
        first = {}
        for dim in dims:
            t = {}
            for name, tree in trees:
                log = os.path.join(work, f"{method}-{dim}-{name}.jsonl")
                fmcli(base + ["-method", method, "-dim", dim, "--log-json", log] + extra[method], tree)
                t[name] = per_iteration(log)
                first.setdefault(name, t[name])
            print(f"{method:6} {dim:12} " + " ".join(f"{t[n]:13.3f} {t[n] / first[n]:6.2f}" for n, _ in trees)
                  + (f" {t['new'] / t['base']:8.2f}" if baseline else ""), flush=True)


def planted(work, rows, seed=5):
    from fmcli.model import FMModel

    rng = np.random.default_rng(seed)
    sizes = [2000, 500, 24, 7, 100, 1]   # synth.py's groups, fewer users, items and contexts
    offs = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offs[-1])
    scale = np.repeat([0.45, 0.45, 0.15, 0.15, 0.25, 0.3], sizes)[:, None]
    model = FMModel(3.0, rng.normal(0, 0.3, n), rng.normal(0, 1, (n, 4)) * scale,
                    H=rng.normal(0, 1, (n, 4)) * scale * 1.8, orders=((3, 4),))

    def zipf(m, s):
        p = 1.0 / np.arange(1, m + 1) ** s
        return rng.permutation(p / p.sum())
    pu, pi, pc = zipf(sizes[0], 0.9), zipf(sizes[1], 1.1), zipf(sizes[4], 1.0)
    total = rows + rows // 5
    cols = [offs[0] + rng.choice(sizes[0], total, p=pu), offs[1] + rng.choice(sizes[1], total, p=pi),
            offs[2] + rng.integers(0, 24, total), offs[3] + rng.integers(0, 7, total),
            np.where(rng.random(total) < 0.5, offs[4] + rng.choice(sizes[4], total, p=pc), -1),
            np.where(rng.random(total) < 0.5, offs[5], -1)]
    idx = np.stack(cols, 1)
    val = np.ones(idx.shape)
    val[:, 5] = np.round(rng.random(total), 3) + 0.001
    present = idx >= 0
    indptr = np.concatenate([[0], np.cumsum(present.sum(1))]).astype(np.int64)
    f = model.predict_raw(indptr, idx[present].astype(np.int32), val[present].astype(np.float32))
    y = np.round(f + rng.normal(0, 0.3, total), 3)
    paths = {}
    for name, sl in (("train", slice(0, rows)), ("test", slice(rows, total))):
        paths[name] = os.path.join(work, f"planted3.{name}.libfm")
        with open(paths[name], "w") as out:
            for i in range(sl.start, sl.stop):
                out.write(f"{y[i]:g} " + " ".join(f"{j}:{x:g}" for j, x in zip(idx[i][present[i]], val[i][present[i]]))
                          + "\n")
    test_y = y[rows:]
    print(f"planted order-3 set: {rows} train rows, target std {np.std(test_y):.3f}, noise floor 0.300, "
          f"true model's test RMSE {np.sqrt(np.mean((f[rows:] - test_y) ** 2)):.4f}")
    for dim in ("1,1,8", "1,1,8,8"):
        pred = os.path.join(work, f"planted3-{dim}.pred")
        fmcli(["-task", "r", "-train", paths["train"], "-test", paths["test"], "-method", "mcmc", "-dim", dim,
               "-iter", "100", "-out", pred])
        rmse = float(np.sqrt(np.mean((np.loadtxt(pred) - test_y) ** 2)))
        print(f"mcmc -dim {dim:8} test RMSE {rmse:.4f}  ({rmse / 0.3:.3f}x the noise floor)", flush=True)


def ml100k(work, seed=0):
    import re

    sys.path.insert(0, HERE)
    from ml100k_features import convert_args

    shared = SHARED if os.path.isdir(SHARED) else "/work/shared"
    data = os.path.join(shared, "data", "ml-100k")
    out = os.path.join(work, "ml100k")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-m", "fmcli"] + convert_args(data, "ua", out, True), env=env, cwd=REPO,
                   check=True)
    o = lambda name: os.path.join(out, f"ua.{name}")  # noqa: E731
    for dim in ("1,1,12", "1,1,8,4"):
        r = subprocess.run([sys.executable, "-m", "fmcli", "train", "-task", "r", "-train", o("train.libfm"),
                            "-test", o("test.libfm"), "-method", "mcmc", "-dim", dim, "-iter", "100",
                            "-meta", o("meta"), "-seed", str(seed)], env=env, cwd=REPO, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr)
        print(f"ml-100k ua mcmc -dim {dim:8} test RMSE {re.findall(r'Test=([0-9.]+)', r.stderr)[-1]}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all", choices=["cost", "planted", "ml100k", "all"])
    ap.add_argument("--work", default="/tmp/fmcli-higher-order")
    ap.add_argument("--iter", type=int, default=9)
    ap.add_argument("--rows", type=int, default=1_000_000, help="planted: train rows")
    ap.add_argument("--methods", default="sgd,als,mcmc", help="cost: the learners, comma-separated")
    ap.add_argument("--dims", default="1,1,8;1,1,8,8;1,1,8,8,8", help="cost: the -dim values, ';'-separated")
    ap.add_argument("--baseline", help="cost: another fmcli tree to run side by side")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    sys.path.insert(0, REPO)
    if a.what in ("planted", "all"):
        planted(a.work, a.rows)
    if a.what in ("ml100k", "all"):
        ml100k(a.work)
    if a.what in ("cost", "all"):
        cost(a.work, a.iter, a.methods.split(","), a.dims.split(";"), a.baseline)

#!/usr/bin/env python3
"""Small data, busy machines, first runs (issue 16): fmcli side by side with itself and with
the libFM figures of ../shared/docs/anchors.md (libFM is not installed here), printed as ratios.

usage: python3 bench/small_speed.py [--repeats 3] [--only whole,layers,iter,first,predict,features]
                                    [--features-iter 500] [--features-dim 16]

- whole: ml-100k ua, `-method mcmc -dim 1,1,8 -iter 200 -seed 1`, whole runs from process
  start (warm kernel cache), the default --threads and --threads 1 alternating, without and with
  a CPU-bound process this script starts (one core busy); medians, and the load average (other
  users of the machine) beside them: "quiet" means no process of this script's. libFM: 2.69 s quiet, 2.72 s
  with one core busy (anchors, measured beside fmcli on this kind of machine).
- layers: the whole run with default threads on numba's omp and workqueue threading layers.
- iter: per iteration = (wall of 200 iterations − wall of 20) / 180 (everything an iteration
  does: sweep, train refresh, evaluation, metrics), MCMC, ALS and SGD at dim 8, default
  threads; libFM: 0.013 s (MCMC/ALS) and 0.011 s (SGD, the fast end of 0.011-0.016).
- first: the README's first command (`fmcli train -method mcmc` on testdata, fresh copies of the
  files, so no binary cache either) from an empty numba cache (NUMBA_CACHE_DIR), then the first
  `fmcli predict` in that cache and the first in another empty cache; the one-line compile note
  is counted.
- predict: warm `fmcli predict` of 1,000 rows (testdata/movies.test.libfm's first 1,000).
- features: ml-100k ua with user and item side features and the two implicit relations built by
  `fmcli convert` (bench/ml100k_features.py's command), MCMC dim 16, 500 iterations: fmcli
  against myFM (pip install myfm; bench only) on the same features, whole runs, side by side.

Data go to bench/out/small_speed/ (not committed).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
T = os.path.join(ROOT, "testdata")
ML = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "ml-100k"))
OUT = os.path.join(HERE, "out", "small_speed")

LIBFM_WHOLE = {"quiet": 2.69, "one core busy": 2.72}     # anchors.md, added 2026-12-03
LIBFM_ITER = {"mcmc": 0.013, "als": 0.013, "sgd": 0.011}
GOAL_ITER = {"mcmc": 0.3, "als": 0.3, "sgd": 0.5}
METHOD_ARGS = {"mcmc": ["-method", "mcmc"],
               "als": ["-method", "als", "-regular", "0,10,10"],
               "sgd": ["-method", "sgd", "-learn_rate", "0.005", "-regular", "0,0.12,0.12", "-init_stdev", "0.1"]}


def fmcli(args, env=None):
    """(wall seconds from process start, stderr) of one `python -m fmcli` run."""
    e = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fmcli"] + [str(a) for a in args], env=e,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"fmcli {' '.join(map(str, args))}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    return wall, r.stderr


class Busy:
    """A CPU-bound process (one core) for the duration of a with block."""

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait()


def ua_files():
    """ml-100k ua as libFM files (user and item one-hot, libFM's conversion in anchors.md)."""
    os.makedirs(OUT, exist_ok=True)
    paths = {}
    for part, src in (("train", "ua.base"), ("test", "ua.test")):
        path = os.path.join(OUT, f"ua.{part}.libfm")
        if not os.path.exists(path):
            with open(os.path.join(ML, src)) as fh, open(path, "w") as out:
                for line in fh:
                    u, i, r, _ = line.split()
                    out.write(f"{r} {int(u) - 1}:1 {943 + int(i) - 1}:1\n")
        paths[part] = path
    return paths


def ua_args(paths, method="mcmc", iters=200):
    return (["train", "-task", "r", "-train", paths["train"], "-test", paths["test"], "-dim", "1,1,8",
             "-iter", iters, "-seed", 1] + METHOD_ARGS[method])


def whole(repeats):
    paths = ua_files()
    args = ua_args(paths)
    fmcli(args + ["-iter", 2])       # kernels and the binary cache warm
    print("## ml-100k ua, MCMC dim 8, 200 iterations, whole run (median of %d, alternating)" % repeats)
    print("| machine | default threads s | --threads 1 s | default / threads 1 | default / libFM | goal |")
    print("|---|---|---|---|---|---|")
    for load in ("quiet", "one core busy"):
        times = {"default": [], "1": []}
        ctx = Busy() if load != "quiet" else None
        if ctx:
            ctx.__enter__()
        try:
            for r in range(repeats):
                for name in (("default", "1") if r % 2 == 0 else ("1", "default")):
                    extra = [] if name == "default" else ["--threads", "1"]
                    times[name].append(fmcli(args + extra)[0])
        finally:
            if ctx:
                ctx.__exit__(None, None, None)
        d, one = statistics.median(times["default"]), statistics.median(times["1"])
        ratio = d / LIBFM_WHOLE[load]
        print(f"| {load} (load average {os.getloadavg()[0]:.1f}) | {d:.2f} ({' '.join('%.2f' % t for t in times['default'])}) | {one:.2f} "
              f"({' '.join('%.2f' % t for t in times['1'])}) | {d / one:.2f} | {ratio:.2f}x of "
              f"{LIBFM_WHOLE[load]} | <= 0.5x libFM: {'met' if ratio <= 0.5 else 'NOT met'}; "
              f"default <= 1.10x threads 1: {'met' if d <= 1.1 * one else 'NOT met'} |", flush=True)


def layers(repeats):
    """The whole ua run with default threads on numba's threading layers (omp is numba's choice
    here: tbb is not installed), with and without a busy core."""
    paths = ua_files()
    args = ua_args(paths)
    names = ("omp", "workqueue")
    for name in names:
        fmcli(args + ["-iter", 2], {"NUMBA_THREADING_LAYER": name})
    print("\n## Threading layers: ml-100k ua MCMC whole run, default threads (median of %d)" % repeats)
    print("| machine | " + " | ".join(f"{n} s" for n in names) + " | --threads 1 s |")
    print("|---|" + "---|" * (len(names) + 1))
    for load in ("quiet", "one core busy"):
        times = {n: [] for n in names + ("1",)}
        ctx = Busy() if load != "quiet" else None
        if ctx:
            ctx.__enter__()
        try:
            for _ in range(repeats):
                for name in names:
                    times[name].append(fmcli(args, {"NUMBA_THREADING_LAYER": name})[0])
                times["1"].append(fmcli(args + ["--threads", "1"])[0])
        finally:
            if ctx:
                ctx.__exit__(None, None, None)
        print(f"| {load} (load average {os.getloadavg()[0]:.1f}) | "
              + " | ".join(f"{statistics.median(times[n]):.2f}" for n in names + ("1",)) + " |", flush=True)


def per_iteration(repeats):
    paths = ua_files()
    print("\n## ml-100k ua, per iteration, dim 8: (wall 200 it - wall 20 it) / 180, default threads")
    print("| learner | s per iteration | vs libFM | goal |")
    print("|---|---|---|---|")
    for method in ("mcmc", "als", "sgd"):
        fmcli(ua_args(paths, method, 2))
        per = []
        for _ in range(repeats):
            long = fmcli(ua_args(paths, method, 200))[0]
            short = fmcli(ua_args(paths, method, 20))[0]
            per.append((long - short) / 180)
        p = statistics.median(per)
        ratio = p / LIBFM_ITER[method]
        print(f"| {method} | {p:.4f} | {ratio:.2f}x of {LIBFM_ITER[method]} | <= {GOAL_ITER[method]}x: "
              f"{'met' if ratio <= GOAL_ITER[method] else 'NOT met'} |", flush=True)


def first_run():
    work = tempfile.mkdtemp(prefix="fmcli-first-")
    try:
        for name in ("movies.train.libfm", "movies.test.libfm", "movies.meta"):
            shutil.copy(os.path.join(T, name), work)
        w = lambda n: os.path.join(work, n)  # noqa: E731
        cache, cache2 = w("numba-cache"), w("numba-cache-2")
        args = ["train", "-task", "r", "-train", w("movies.train.libfm"), "-test", w("movies.test.libfm"),
                "-method", "mcmc", "-dim", "1,1,8", "-iter", "100", "-meta", w("movies.meta"),
                "-save_model", w("m.fm")]
        t_first, err = fmcli(args, {"NUMBA_CACHE_DIR": cache})
        notes = err.count("Compiling the numba kernels")
        t_pred, perr = fmcli(["predict", "-model", w("m.fm"), "-test", w("movies.test.libfm"), "-out", w("p")],
                             {"NUMBA_CACHE_DIR": cache})
        t_pred2, perr2 = fmcli(["predict", "-model", w("m.fm"), "-test", w("movies.test.libfm"), "-out", w("p")],
                               {"NUMBA_CACHE_DIR": cache2})
        t_second, err2 = fmcli(args, {"NUMBA_CACHE_DIR": cache})
        print("\n## First run from an empty numba cache (testdata, README's first command)")
        print("| run | wall s | compile note lines | goal |")
        print("|---|---|---|---|")
        print(f"| first `fmcli train -method mcmc` | {t_first:.1f} | {notes} | <= 10 s: "
              f"{'met' if t_first <= 10 else 'NOT met'} |")
        print(f"| first `fmcli predict` (after that train, same cache) | {t_pred:.1f} | "
              f"{perr.count('Compiling the numba kernels')} | <= 5 s: {'met' if t_pred <= 5 else 'NOT met'} |")
        print(f"| first `fmcli predict` (empty cache) | {t_pred2:.1f} | "
              f"{perr2.count('Compiling the numba kernels')} | <= 5 s: {'met' if t_pred2 <= 5 else 'NOT met'} |")
        print(f"| second `fmcli train` (warm) | {t_second:.1f} | {err2.count('Compiling the numba kernels')} | "
              f"no note |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def warm_predict(repeats):
    os.makedirs(OUT, exist_ok=True)
    model, rows = os.path.join(OUT, "movies.fm"), os.path.join(OUT, "rows1000.libfm")
    fmcli(["train", "-task", "r", "-train", os.path.join(T, "movies.train.libfm"), "-method", "mcmc",
           "-iter", 20, "-save_model", model, "-q"])
    with open(os.path.join(T, "movies.test.libfm")) as fh, open(rows, "w") as out:
        out.writelines(fh.readlines()[:1000])
    pred = ["predict", "-model", model, "-test", rows, "-out", os.path.join(OUT, "p1000.txt")]
    fmcli(pred)
    ts = [fmcli(pred)[0] for _ in range(repeats)]
    t = statistics.median(ts)
    print("\n## Warm `fmcli predict` of 1,000 rows")
    print(f"median {t:.2f} s ({' '.join('%.2f' % x for x in ts)}); goal <= 1.0 s: "
          f"{'met' if t <= 1.0 else 'NOT met'}", flush=True)


def _read_libfm(path, n_cols=None):
    import numpy as np
    import scipy.sparse as sp

    y, rows, cols, vals = [], [], [], []
    with open(path) as fh:
        for i, line in enumerate(fh):
            parts = line.split()
            y.append(float(parts[0]))
            for tok in parts[1:]:
                j, v = tok.split(":")
                rows.append(i)
                cols.append(int(j))
                vals.append(float(v))
    n = len(y)
    shape = (n, (max(cols) + 1 if cols else 0) if n_cols is None else n_cols)
    return sp.csr_matrix((vals, (rows, cols)), shape=shape), np.array(y)


def features(dim, iters):
    import numpy as np

    sys.path.insert(0, HERE)
    from ml100k_features import convert_args

    os.makedirs(OUT, exist_ok=True)
    o = lambda name: os.path.join(OUT, f"ua.{name}")  # noqa: E731
    fmcli(convert_args(ML, "ua", OUT, True))
    rel = f"{o('rel')}.users,{o('rel')}.items"
    args = ["train", "-task", "r", "-train", o("train.libfm"), "-test", o("test.libfm"), "-method", "mcmc",
            "-dim", f"1,1,{dim}", "-iter", iters, "-meta", o("meta"), "-relation", rel, "-seed", 0]
    fmcli(args + ["-iter", 2])
    t_fm, err = fmcli(args)
    rmse_fm = float(re.findall(r"Test=([0-9.]+)", err)[-1])

    t0 = time.perf_counter()
    import myfm
    from myfm import RelationBlock

    meta = np.loadtxt(o("meta"), dtype=np.int64)
    X, y = _read_libfm(o("train.libfm"), len(meta))
    Xt, yt = _read_libfm(o("test.libfm"), len(meta))
    blocks, blocks_t, grouping = [], [], list(meta)
    for r in ("users", "items"):
        B, _ = _read_libfm(f"{o('rel')}.{r}.x")
        blocks.append(RelationBlock(np.loadtxt(f"{o('rel')}.{r}.train", dtype=np.int64), B))
        blocks_t.append(RelationBlock(np.loadtxt(f"{o('rel')}.{r}.test", dtype=np.int64), B))
        grouping += [max(grouping) + 1] * B.shape[1]
    fm = myfm.MyFMRegressor(rank=dim, random_seed=0)
    fm.fit(X, y, X_rel=blocks, n_iter=iters, n_kept_samples=iters, grouping=grouping)
    pred = fm.predict(Xt, X_rel=blocks_t)
    t_my = time.perf_counter() - t0
    rmse_my = float(np.sqrt(np.mean((np.clip(pred, 1, 5) - yt) ** 2)))
    print(f"\n## ml-100k ua, side features + two relations, MCMC dim {dim}, {iters} iterations")
    print("| program | wall s | test RMSE |")
    print("|---|---|---|")
    print(f"| fmcli (python -m fmcli, whole run) | {t_fm:.1f} | {rmse_fm:.4f} |")
    print(f"| myFM {myfm.__version__} (reading the same files, fit, predict) | {t_my:.1f} | {rmse_my:.4f} |")
    print(f"myFM / fmcli = {t_my / t_fm:.2f}x; goal >= 3x: {'met' if t_my >= 3 * t_fm else 'NOT met'}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="whole,iter,first,predict")
    ap.add_argument("--features-dim", type=int, default=16)
    ap.add_argument("--features-iter", type=int, default=500)
    a = ap.parse_args()
    only = set(a.only.split(","))
    if "whole" in only:
        whole(a.repeats)
    if "layers" in only:
        layers(a.repeats)
    if "iter" in only:
        per_iteration(a.repeats)
    if "first" in only:
        first_run()
    if "predict" in only:
        warm_predict(a.repeats)
    if "features" in only:
        features(a.features_dim, a.features_iter)


if __name__ == "__main__":
    main()

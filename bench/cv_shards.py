#!/usr/bin/env python3
"""fmcli cv and sharded predict against doing the same work one run after the other, side by side.

usage: python3 bench/cv_shards.py [--skip-cv] [--skip-predict] [--copies 100] [--repeats 3] [--work DIR]

1. `fmcli cv -k 5` on ml-100k u.data (../shared/data/ml-100k; MCMC dim 8, 200 iterations) on
   the default local processes and on a 2-worker Dask LocalCluster, against the same five
   folds (the files cv keeps with --work-dir) trained one after the other by `fmcli train`:
   the speed-up (goal >= 1.7x) and whether every fold's RMSE is the same to every digit;
   --repeats rounds of the three, interleaved, medians.
2. `fmcli predict --shards` of the 1M synthetic test set copied --copies times (synth.py of
   ../shared/bench, seed 0, 1M train rows; 100 copies: 10M rows, the 10M set's size) with an
   ALS dim-8 model: one process, 2 local processes, `--workers 2` (a LocalCluster the command
   starts), and `--scheduler` on a running LocalCluster of 1 and of 2 workers with one thread
   each (started by this script and warmed by one small predict before the timed runs);
   --repeats rounds of every case, interleaved, medians;
   throughput ratios (goal: 2 workers >= 1.7x one worker; Dask within 10% of local processes)
   and cmp against the one-process output.
Whole-command wall times, so the command's own start-up is counted in every figure.
"""

import argparse
import contextlib
import filecmp
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(REPO, "..", "shared")
WARM_SHARDS = 4   # tasks of the running-cluster runs: the same four for one worker and for two


def fmcli(*args, check=True):
    # PYTHONSAFEPATH: `-m` would put the working directory first on sys.path, so a run from
    # another checkout would measure that checkout's fmcli
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONSAFEPATH="1")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fmcli", *map(str, args)], capture_output=True, text=True, env=env)
    took = time.perf_counter() - t
    if check and r.returncode != 0:
        sys.exit(f"fmcli {' '.join(map(str, args))} failed: {r.stderr}")
    return took, r.stdout, r.stderr


def bench_cv(work, repeats):
    data = os.path.join(work, "u.data.libfm")
    if not os.path.exists(data):
        fmcli("convert", "-in", os.path.join(SHARED, "data", "ml-100k", "u.data"), "-out", data, "--sep", "tab",
              "--target", 2, "--categorical", "0,1", "--drop", 3, "-q")
    learner = ["-task", "r", "-method", "mcmc", "-dim", "1,1,8", "-iter", 200, "-seed", 1]
    folds = os.path.join(work, "folds")
    os.makedirs(folds, exist_ok=True)
    times, rmse = {}, {}
    seq_name = "5 x fmcli train, one after other"
    for _ in range(repeats):   # rounds of every case, interleaved: the figures are medians
        for name, extra in (("cv, local processes", []), ("cv, Dask LocalCluster x2", ["--workers", 2])):
            summary = os.path.join(work, f"cv-{len(rmse)}.json")
            t, _, _ = fmcli("cv", "-train", data, "-k", 5, *learner, "--work-dir", folds, "--summary", summary,
                            "-q", *extra)
            times.setdefault(name, []).append(t)
            rmse[name] = [f["rmse"] for f in json.load(open(summary))["folds"]]
        t_seq, seq = 0.0, []
        for f in range(5):
            out = os.path.join(work, f"seq{f}.txt")
            t, _, err = fmcli("train", "-train", os.path.join(folds, f"fold{f}.train.fmbin"),
                              "-test", os.path.join(folds, f"fold{f}.test.fmbin"), *learner, "-out", out)
            t_seq += t
            seq.append(float([l for l in err.splitlines() if l.startswith("#Iter=")][-1].split("Test=")[1].split()[0]))
        times.setdefault(seq_name, []).append(t_seq)
        rmse[seq_name] = seq
    t_seq = float(np.median(times[seq_name]))
    print(f"\n## fmcli cv -k 5, ml-100k u.data, MCMC dim 8, 200 iterations; medians of {repeats} interleaved rounds")
    print(f"{'run':<32} {'wall s':>8} {'speed-up':>9}  per-fold RMSE")
    print(f"{seq_name:<32} {t_seq:8.2f} {1.0:9.2f}  " + " ".join(f"{r:.6g}" for r in rmse[seq_name]))
    for name in ("cv, local processes", "cv, Dask LocalCluster x2"):
        t = float(np.median(times[name]))
        same = all(f"{a:.6g}" == f"{b:.6g}" for a, b in zip(rmse[name], rmse[seq_name]))
        print(f"{name:<32} {t:8.2f} {t_seq / t:9.2f}  " + " ".join(f"{r:.6g}" for r in rmse[name])
              + ("  (same to every printed digit)" if same else "  DIFFERENT"))


def bench_predict(work, copies, repeats):
    prefix = os.path.join(work, "syn")
    if not os.path.exists(prefix + ".test.libfm"):
        subprocess.run([sys.executable, os.path.join(SHARED, "bench", "synth.py"), prefix, "1000000"], check=True,
                       capture_output=True)
    model = os.path.join(work, "syn.fm")
    if not os.path.exists(model):
        fmcli("train", "-task", "r", "-train", prefix + ".train.libfm", "-method", "als", "-dim", "1,1,8", "-iter", 3,
              "-regular", "0,10,10", "-save_model", model, "-q")
    big = os.path.join(work, f"test-x{copies}.libfm")
    if not os.path.exists(big):
        with open(prefix + ".test.libfm", "rb") as f:
            block = f.read()
        with open(big, "wb") as f:
            for _ in range(copies):
                f.write(block)
    rows = copies * 100_000
    ref = os.path.join(work, "pred-one.txt")
    model_args = ["-model", model, "-q"]
    times, same = {}, {}

    def timed(name, extra):
        out = ref if not times else os.path.join(work, f"pred-{len(times)}.txt")
        times.setdefault(name, []).append(fmcli("predict", *model_args, "-test", big, "-out", out, *extra)[0])
        same[name] = same.get(name, True) and (out == ref or filecmp.cmp(ref, out, shallow=False))

    from dask.distributed import LocalCluster

    with contextlib.ExitStack() as stack:
        # running clusters, one core per worker: what a user of a real cluster has, and the
        # only way one 2-core machine shows how throughput grows with workers (idle meanwhile)
        running = {}
        for n in (1, 2):
            cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, silence_logs=logging.CRITICAL,
                                                       env={"NUMBA_NUM_THREADS": "1"}))
            running[n] = ["--shards", WARM_SHARDS, "--scheduler", cluster.scheduler_address]
            fmcli("predict", *model_args, "-test", prefix + ".test.libfm", "-out", os.path.join(work, "warm.txt"),
                  *running[n])
        for _ in range(repeats):   # rounds of every case, interleaved: the figures are medians
            timed("one process", [])
            timed("--shards 2, local processes", ["--shards", 2])
            timed("--shards 2, new LocalCluster x2", ["--shards", 2, "--workers", 2])
            for n in (1, 2):
                timed(f"--shards {WARM_SHARDS}, running cluster x{n}", running[n])
    times = {name: float(np.median(t)) for name, t in times.items()}
    print(f"\n## fmcli predict, the 1M synthetic test set x{copies} ({rows} rows), ALS dim 8 model; "
          f"medians of {repeats} interleaved rounds")
    print(f"{'run':<36} {'wall s':>8} {'rows/s':>10} {'vs one':>7}  output")
    for name, t in times.items():
        print(f"{name:<36} {t:8.2f} {rows / t:10.0f} {times['one process'] / t:7.2f}  "
              + ("identical (cmp)" if same[name] else "DIFFERENT"))
    one, two = (times[f"--shards {WARM_SHARDS}, running cluster x{n}"] for n in (1, 2))
    local = times["--shards 2, local processes"]
    print(f"running cluster, 2 workers vs 1 (one thread each): {one / two:.2f}x the throughput (goal >= 1.7); "
          f"Dask vs 2 local processes: {two / local:.2f}x the time on a running cluster, "
          f"{times['--shards 2, new LocalCluster x2'] / local:.2f}x with the cluster started by the command (goal <= 1.1)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-cv", action="store_true")
    ap.add_argument("--skip-predict", action="store_true")
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of every case (medians)")
    ap.add_argument("--work", default="/tmp/fmcli-bench-distributed")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    if not a.skip_cv:
        bench_cv(a.work, a.repeats)
    if not a.skip_predict:
        bench_predict(a.work, a.copies, a.repeats)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""MCMC model files against ALS ones: file size, `fmcli predict` wall time and peak memory.

usage: python3 bench/model_size.py [--data DIR] [--out DIR] [--samples 200] [--repeat 3]
                                   [--fmcli ROOT]

Converts MovieLens 100k ua.base / ua.test with `fmcli convert` (user and item one-hot),
trains an ALS model and an MCMC model with --samples samples (one per iteration, -dim 1,1,8)
and saves both, then times `fmcli predict` in a fresh process (best of --repeat runs: wall
time, peak RSS from getrusage) on the first 3 test rows and on all test rows. Prints the
ratios the issue asks for:

    time   = MCMC predict time / ALS predict time                       (goal <= 1.5)
    memory = MCMC predict peak RSS / (ALS predict peak RSS + samples)   (goal <= 1.5)

where "samples" is the size of the samples in memory, S (8 + 4 n (k + 1)) bytes (float32 w
and V, as MCMC keeps them). --fmcli ROOT runs the predictions with another checkout of fmcli
(e.g. an older version, on the models it wrote itself: then train runs there too).
Everything is written under --out (default /tmp/fmcli-model-size).
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def fmcli(root, *args, quiet=True):
    env = dict(os.environ, PYTHONPATH=root)
    cmd = [sys.executable, "-m", "fmcli", *map(str, args)] + (["-q"] if quiet else [])
    # cwd: `python -m` puts the working folder before PYTHONPATH
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=root)


def measure(root, args, repeat):
    """(best wall seconds, largest peak RSS in bytes) of `fmcli ARGS` in fresh processes."""
    env = dict(os.environ, PYTHONPATH=root)
    # the peak RSS of one child: run each under a tiny wrapper that reports its own rusage
    wrapper = ("import resource, runpy, sys; sys.argv = ['fmcli'] + sys.argv[1:]\n"
               "try:\n    runpy.run_module('fmcli', run_name='__main__')\n"
               "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(code)\n")
    best, peak = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", wrapper, *map(str, args), "-q"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=root)
        best = min(best, time.perf_counter() - t)
        if res.returncode:
            raise SystemExit(f"fmcli {' '.join(map(str, args))} failed: {res.stderr}")
        peak = max(peak, int(res.stderr.strip().split("\n")[-1]) * 1024)
    return best, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/shared/data/ml-100k")
    ap.add_argument("--out", default="/tmp/fmcli-model-size")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fmcli", default=os.path.dirname(HERE), help="the fmcli checkout to run")
    a = ap.parse_args()
    root = os.path.abspath(a.fmcli)
    os.makedirs(a.out, exist_ok=True)
    train, test = os.path.join(a.out, "ua.train.libfm"), os.path.join(a.out, "ua.test.libfm")
    if not (os.path.exists(train) and os.path.exists(test)):
        fmcli(root, "convert", "-in", os.path.join(a.data, "ua.base"), "-in", os.path.join(a.data, "ua.test"),
              "-out", train, "-out", test, "--target", 2, "--categorical", "0,1", "--drop", 3)
    test3 = os.path.join(a.out, "ua.test3.libfm")
    with open(test) as f, open(test3, "w") as g:
        g.writelines(f.readline() for _ in range(3))
    models = {"als": os.path.join(a.out, "als.fm"), "mcmc": os.path.join(a.out, f"mcmc{a.samples}.fm")}
    common = ["-task", "r", "-train", train, "-dim", "1,1,8", "-seed", 1, "-regular", "0,1,1"]
    fmcli(root, "train", *common, "-method", "als", "-iter", 20, "-save_model", models["als"])
    fmcli(root, "train", *common, "-method", "mcmc", "-iter", a.samples, "-save_model", models["mcmc"])

    with open(models["mcmc"], "rb") as f:    # n from the model's metadata (the line before the last)
        meta = json.loads(f.read().rstrip(b"\n").split(b"\n")[-2].split(b" ", 1)[1])
    n = meta["n_features"]
    samples_bytes = a.samples * (8 + 4 * n * 9)
    print(f"fmcli at {root}; ml-100k ua, n = {n} features, k = 8, "
          f"{meta['n_samples']} MCMC samples = {samples_bytes / 1e6:.1f} MB in memory (float32)")
    for name, path in models.items():
        print(f"  {name:5s} model file: {os.path.getsize(path) / 1e6:8.2f} MB  {path}")
    print(f"{'rows':>6s} {'ALS s':>7s} {'MCMC s':>7s} {'ALS MB':>7s} {'MCMC MB':>8s} "
          f"{'time ratio':>10s} {'memory ratio':>12s}")
    for label, rows in (("3", test3), ("all", test)):
        res = {name: measure(root, ["predict", "-model", path, "-test", rows, "-out",
                                    os.path.join(a.out, f"pred.{name}.txt")], a.repeat)
               for name, path in models.items()}
        (ta, ma), (tm, mm) = res["als"], res["mcmc"]
        print(f"{label:>6s} {ta:7.2f} {tm:7.2f} {ma / 1e6:7.1f} {mm / 1e6:8.1f} {tm / ta:10.2f} "
              f"{mm / (ma + samples_bytes):12.2f}")


if __name__ == "__main__":
    main()

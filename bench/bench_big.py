#!/usr/bin/env python3
"""The 10M-row set through the CLI, beside libFM's 10M figures (shared/docs/anchors.md).

usage: python3 bench/bench_big.py [PREFIX] [--runs als8,mcmc8,sgd8,als64] [--rebuild-cache]
                                  [--threads N] [--out FILE]

PREFIX (default /tmp/fmcli-bench/s10m): PREFIX.{train,test}.libfm, generated with
../shared/bench/synth.py PREFIX 10000000 --seed 2 when missing (518 MB, a few minutes).

Each run is one whole `fmcli train -task r -train ... -test ... -iter N -rlog F`, under
/usr/bin/time (peak RSS of the process). Its stderr lines are time-stamped as they arrive:

- load: the time until the "Loading test..." line (start-up, train and test loaded), less the
  start-up measured the same way on a 10-row file (imports, numba's cached kernels);
- set-up: from then to the end of the learner's set-up (first #Iter line less the first
  iteration's `elapsed` in the rlog): colouring, row order, CSR/CSC copies, first predictions;
- per iteration: the rlog's `time_learn` (the sweep or epoch with train refresh and test
  predictions) and the step of its `elapsed` column (the whole iteration as libFM times it:
  also the metrics and the rlog); the last iteration's figures are printed (the first includes
  the thread pool's start);
- peak RSS: /usr/bin/time's %M.

--rebuild-cache deletes PREFIX.{train,test}.libfm.fmcache first, so the first run reads the
text and writes the binary cache; the runs after it load the cache (memory-mapped).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SYNTH = os.path.join(REPO, "..", "shared", "bench", "synth.py")

# libFM 1.4.4 on the 10M set (anchors.md): load s, s per iteration (slow pass, quiet pass), RSS MB
LIBFM_LOAD = (43.4, 26.3)     # als run; mcmc 46.8 / 26.1, sgd 36.2 / 23.1
LIBFM = {("als", 8): (60.9, 25.4, 1170), ("mcmc", 8): (53.4, 24.5, 1170), ("sgd", 8): (14.0, 5.53, 610)}
RUNS = {
    "als8": ("als", 8, 2, ["-regular", "0,10,10"]),
    "mcmc8": ("mcmc", 8, 2, []),
    "sgd8": ("sgd", 8, 2, ["-learn_rate", "0.01", "-regular", "0,0.01,0.01"]),
    "als64": ("als", 64, 1, ["-regular", "0,10,10"]),
}


def ensure_data(prefix):
    if not os.path.exists(prefix + ".train.libfm"):
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        subprocess.run([sys.executable, SYNTH, prefix, "10000000", "--seed", "2"], check=True)


def run_cli(args):
    """Run `fmcli train ARGS` under /usr/bin/time; (stderr lines with their arrival times,
    wall s, peak RSS MB)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-o", rss.name, "-f", "%M", sys.executable, "-m", "fmcli",
                              "train", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in p.stderr]
        if p.wait():
            sys.exit(f"fmcli train {' '.join(args)} failed:\n" + "\n".join(l for _, l in lines[-20:]))
        wall = time.perf_counter() - t0
        return lines, wall, int(rss.read().split()[-1]) / 1024


def first(lines, prefix):
    return next(t for t, line in lines if line.startswith(prefix))


def read_rlog(path):
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    head = rows[0]
    return [dict(zip(head, map(float, r))) for r in rows[1:]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix", nargs="?", default="/tmp/fmcli-bench/s10m")
    ap.add_argument("--runs", default="als8,mcmc8,sgd8,als64")
    ap.add_argument("--rebuild-cache", action="store_true", help="delete the binary caches first")
    ap.add_argument("--threads", type=int, default=0, help="--threads of fmcli (0: all cores)")
    ap.add_argument("--out", help="also write the table to this file")
    a = ap.parse_args()
    ensure_data(a.prefix)
    trainf, testf = a.prefix + ".train.libfm", a.prefix + ".test.libfm"
    if a.rebuild_cache:
        for f in (trainf, testf):
            if os.path.exists(f + ".fmcache"):
                os.remove(f + ".fmcache")

    with tempfile.TemporaryDirectory() as tmp:
        tiny = os.path.join(tmp, "tiny.libfm")
        with open(testf) as src, open(tiny, "w") as dst:
            for _ in range(10):
                dst.write(src.readline())
        run_cli(["-task", "r", "-train", tiny, "-method", "sgd", "-iter", "1"])     # warm the numba cache
        startup = min(first(run_cli(["-task", "r", "-train", tiny, "-test", tiny, "-method", "sgd",
                                     "-iter", "1"])[0], "Loading test") for _ in range(2))
        print(f"start-up (imports, to the first Loading line on a 10-row file): {startup:.2f} s", flush=True)

        rows = ["| what (10M rows, 2 threads) | fmcli | libFM slow / quiet pass | ratio to libFM slow / quiet | notes |",
                "|---|---|---|---|---|"]

        def row(what, ours, lib="", ratio="", note=""):
            rows.append(f"| {what} | {ours} | {lib} | {ratio} | {note} |")
            print(rows[-1], flush=True)

        runs = a.runs.split(",")
        if a.rebuild_cache:     # the first run once more, loading the cache the first one built
            runs = runs[:1] + runs
        cache_built = not a.rebuild_cache
        for name in runs:
            method, k, iters, flags = RUNS[name]
            rlog = os.path.join(tmp, f"{name}.rlog")
            args = ["-task", "r", "-train", trainf, "-test", testf, "-method", method, "-dim", f"1,1,{k}",
                    "-iter", str(iters), "-seed", "1", "-rlog", rlog, *flags]
            if a.threads:
                args += ["--threads", str(a.threads)]
            lines, wall, peak = run_cli(args)
            log = read_rlog(rlog)
            load = first(lines, "Loading test") - startup
            setup = first(lines, "#Iter=") - first(lines, "Loading test") - log[0]["elapsed"]
            learn = log[-1]["time_learn"]
            it_s = log[-1]["elapsed"] - (log[-2]["elapsed"] if len(log) > 1 else 0.0)
            rmse = log[-1]["rmse"]
            what = "text, builds the binary cache" if not cache_built else "binary cache"
            cache_built = True
            loaded = first(lines, "Loading test")
            row(f"load ({method} dim {k} run; {what})", f"{max(load, 0.0):.2f} s",
                "%.1f / %.1f s" % LIBFM_LOAD, "%.3fx / %.3fx" % (max(load, 0.0) / LIBFM_LOAD[0],
                                                               max(load, 0.0) / LIBFM_LOAD[1]),
                f"{loaded:.2f} s from process start, less start-up {startup:.2f} s")
            lib = LIBFM.get((method, k))
            row(f"{method} dim {k}, s/iteration (elapsed step; time_learn)", f"{it_s:.2f} ({learn:.2f})",
                "%.1f / %.2f s" % lib[:2] if lib else "", "%.2fx / %.2fx" % (it_s / lib[0], it_s / lib[1]) if lib else "",
                f"set-up {setup:.1f} s, test RMSE {rmse:.4f} after {iters} it, wall {wall:.1f} s")
            row(f"{method} dim {k}, peak RSS", f"{peak:.0f} MB", f"{lib[2]} MB" if lib else "",
                f"{peak / lib[2]:.2f}x" if lib else "", "8 GB asked for" if k == 64 else "")
    table = "\n".join(rows)
    print("\n" + table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()

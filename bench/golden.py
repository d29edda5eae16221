#!/usr/bin/env python3
"""Fingerprints of fmcli's outputs over a fixed matrix of runs, to show that a change keeps
every output byte for byte (a restructuring, a speed change).

usage: python3 bench/golden.py MANIFEST.json [--big] [--work DIR] [--only SUBSTRING]
       python3 bench/golden.py --compare A.json B.json

Each case runs the CLI as a user would (`python -m fmcli ...`, a fresh process, default
threads and cache) and records the SHA-256 of every output: -out, -save_model, `fmcli
predict` of the saved model, and -rlog with its clock columns (time_learn, elapsed) cut out,
as they differ between any two runs. Files are hashed and deleted, so the big cases need
no disk to speak of. --compare prints the cases whose fingerprints differ and exits 1 if any do.

Cases: the testdata sets with every learner and the options that change the sweep (factor
blocks at dim 24, -meta, per-group -regular, optimizers, SGDA, early stopping, burn-in and
kept samples, warm starts), classification and regression; MovieLens 100k ua with the two
implicit relations of bench/ml100k_relation.py when ../shared is there; with --big, the 1M
synthetic set (../shared/bench/synth.py, seed 1) with ALS, MCMC and SGD at dims 8 and 64.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
T = os.path.join(REPO, "testdata")
SHARED = os.path.join(REPO, "..", "shared")
BIG = "/tmp/fmcli-bench/s1m"
CLOCK_COLUMNS = {"time_learn", "elapsed"}


def testdata_cases():
    mv = ["-task", "r", "-train", f"{T}/movies.train.libfm", "-test", f"{T}/movies.test.libfm"]
    ck = ["-task", "c", "-train", f"{T}/clicks.train.libfm", "-test", f"{T}/clicks.test.libfm"]
    rg = ["-task", "r", "-train", f"{T}/regression.train.libfm", "-test", f"{T}/regression.test.libfm"]
    meta = ["-meta", f"{T}/movies.meta"]
    val = ["-validation", f"{T}/movies.test.libfm"]
    sgd = ["-method", "sgd", "-learn_rate", "0.01", "-regular", "0,0.05,0.05"]
    c = {
        "movies-mcmc": mv + ["-method", "mcmc", "-iter", "30"] + meta,
        "movies-mcmc-dim24": mv + ["-method", "mcmc", "-iter", "10", "-dim", "1,1,24"] + meta,
        "movies-mcmc-burnin-keep": mv + ["-method", "mcmc", "-iter", "20", "--burn-in", "5",
                                         "--keep-samples", "3"] + meta,
        "movies-mcmc-earlystop": mv + ["-method", "mcmc", "-iter", "40", "--early-stop", "3"] + val + meta,
        "movies-mcmc-nobias": mv + ["-method", "mcmc", "-iter", "10", "-dim", "0,0,4"],
        "movies-als": mv + ["-method", "als", "-iter", "30", "-regular", "0,10,10"],
        "movies-als-groups": mv + ["-method", "als", "-iter", "20", "-regular", "0,5,6,7,8,9,10"] + meta,
        "movies-als-dim24": mv + ["-method", "als", "-iter", "10", "-dim", "1,1,24", "-regular", "0,10,10"],
        "movies-sgd": mv + sgd + ["-iter", "20"],
        "movies-sgd-adam": mv + sgd + ["-iter", "20", "--optimizer", "adam", "-learn_rate", "0.003"],
        "movies-sgd-adagrad": mv + sgd + ["-iter", "20", "--optimizer", "adagrad", "-learn_rate", "0.05"],
        "movies-sgd-earlystop": mv + sgd + ["-iter", "30", "--early-stop", "2"] + val,
        "movies-sgda": mv + ["-method", "sgda", "-learn_rate", "0.01", "-iter", "20"] + val + meta,
        "clicks-mcmc": ck + ["-method", "mcmc", "-iter", "30"],
        "clicks-als": ck + ["-method", "als", "-iter", "20", "-regular", "0,10,10"],
        "clicks-sgd": ck + sgd + ["-iter", "20"],
        "regression-mcmc": rg + ["-method", "mcmc", "-iter", "30"],
        "regression-als": rg + ["-method", "als", "-iter", "20", "-regular", "0,1,1"],
        "regression-sgd": rg + sgd + ["-iter", "20"],
    }
    # warm starts: the second run continues from the first one's model
    c["movies-sgd-warm"] = ("warm", mv + sgd + ["-iter", "5"], mv + sgd + ["-iter", "5"])
    c["movies-als-warm"] = ("warm", mv + ["-method", "als", "-iter", "5", "-regular", "0,10,10"],
                            mv + ["-method", "als", "-iter", "5", "-regular", "0,10,10"])
    return c


def ml100k_cases(work):
    data = os.path.join(SHARED, "data", "ml-100k")
    if not os.path.isdir(data):
        return {}
    sys.path.insert(0, HERE)
    from ml100k_relation import N_ITEMS, N_USERS, write_files

    out = os.path.join(work, "ml100k")
    os.makedirs(out, exist_ok=True)
    write_files(data, out, "ua")
    with open(os.path.join(out, "ml100k.meta"), "w") as f:
        f.write("".join("0\n" for _ in range(N_USERS)) + "".join("1\n" for _ in range(N_ITEMS)))
    base = ["-task", "r", "-train", f"{out}/ua.train.libfm", "-test", f"{out}/ua.test.libfm",
            "-meta", f"{out}/ml100k.meta", "-relation", f"{out}/ua.rated,{out}/ua.raters"]
    return {"ml100k-mcmc-relations": base + ["-method", "mcmc", "-iter", "20"],
            "ml100k-als-relations": base + ["-method", "als", "-iter", "20", "-regular", "0,10,10"]}


def big_cases():
    if not os.path.exists(BIG + ".train.libfm"):
        os.makedirs(os.path.dirname(BIG), exist_ok=True)
        subprocess.run([sys.executable, os.path.join(SHARED, "bench", "synth.py"), BIG, "1000000",
                        "--seed", "1"], check=True)
    base = ["-task", "r", "-train", BIG + ".train.libfm", "-test", BIG + ".test.libfm"]
    c = {}
    for k, iters in ((8, 3), (64, 2)):
        dim = ["-dim", f"1,1,{k}", "-iter", str(iters)]
        c[f"1m-als-{k}"] = base + dim + ["-method", "als", "-regular", "0,10,10"]
        c[f"1m-mcmc-{k}"] = base + dim + ["-method", "mcmc", "--keep-samples", str(iters)]
        c[f"1m-sgd-{k}"] = base + dim + ["-method", "sgd", "-learn_rate", "0.01", "-regular", "0,0.01,0.01"]
    return c


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rlog_sha(path):
    """The -rlog table without its clock columns."""
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    keep = [i for i, name in enumerate(rows[0]) if name not in CLOCK_COLUMNS]
    text = "\n".join("\t".join(r[i] for i in keep) for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()


def fmcli(args, stdout=None):
    r = subprocess.run([sys.executable, "-m", "fmcli"] + args, stdout=stdout or subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, cwd=REPO)
    if r.returncode:
        raise SystemExit(f"fmcli {' '.join(args)}\nexit {r.returncode}: {r.stderr}")
    return r.stderr


def run_case(args, work):
    """{output name: sha256} of one training run, its model and `fmcli predict` of the model."""
    out, model, rlog = (os.path.join(work, n) for n in ("out.txt", "model.fm", "rlog.tsv"))
    fmcli(args + ["-out", out, "-save_model", model, "-rlog", rlog])
    prints = {"out": sha(out), "model": sha(model), "rlog": rlog_sha(rlog)}
    test = args[args.index("-test") + 1]
    extra = []
    if "-relation" in args:
        extra = ["-relation", args[args.index("-relation") + 1]]
    fmcli(["predict", "-model", model, "-test", test, "-out", out] + extra)
    prints["predict"] = sha(out)
    for p in (out, model, rlog):
        os.unlink(p)
    return prints


def run_warm(first, second, work):
    model0 = os.path.join(work, "warm0.fm")
    fmcli(["train"] + first + ["-save_model", model0])
    prints = run_case(["train"] + second + ["-load_model", model0], work)
    os.unlink(model0)
    return prints


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest", nargs="?")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--work")
    ap.add_argument("--only", default="")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    a = ap.parse_args(argv)
    if a.compare:
        old, new = (json.load(open(p)) for p in a.compare)
        bad = 0
        for name in sorted(set(old) | set(new)):
            if name not in old or name not in new:
                print(f"{name}: only in {'A' if name in old else 'B'}")
                continue
            diff = [k for k in old[name] if old[name][k] != new[name].get(k)]
            if diff:
                bad += 1
                print(f"{name}: differs in {', '.join(diff)}")
        print(f"{len(set(old) & set(new)) - bad} cases identical, {bad} differ")
        return 1 if bad else 0
    work = a.work or tempfile.mkdtemp(prefix="fmcli-golden-")
    cases = dict(testdata_cases())
    cases.update(ml100k_cases(work))
    if a.big:
        cases.update(big_cases())
    result = {}
    for name, spec in cases.items():
        if a.only not in name:
            continue
        if isinstance(spec, tuple):
            result[name] = run_warm(spec[1], spec[2], work)
        else:
            result[name] = run_case(["train"] + spec, work)
        print(name, " ".join(f"{k}={v[:12]}" for k, v in result[name].items()), flush=True)
    with open(a.manifest, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

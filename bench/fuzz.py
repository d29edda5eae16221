#!/usr/bin/env python3
"""Fuzz fmcli's reader, model loader, convert and mapping loader through the command line.

usage: python3 bench/fuzz.py [--n N] [--seconds S] [--seed SEED] [--keep DIR]

Each input is either random bytes or a mutation (bit flips, inserted tokens such as ':',
'nan', '1e999', '\\xff', NUL, CR, deletions, truncation, repeated slices) of a valid seed
file: libFM text (plain, gzip, or on stdin), an fmcli text model, an .npz model, a libFM
model, a CSV file, a convert mapping. It goes through `fmcli.cli.main` in-process, as
`fmcli train`, `fmcli predict` or `fmcli convert`, and the contract is checked:

- exit code 0, or 2 with exactly one stderr line `fmcli: error: ...` and nothing on stdout
  (or 1, with the same, only when training diverged: a warm start from a libFM model,
  which carries no checksum, with huge values);
- never a traceback or an "internal error" (exit 1);
- after exit 2 no output file and no temporary file exists; after exit 0 they all do.

Stops after N inputs or S seconds, whichever comes first; prints how many inputs were tried
per target and their exit codes; saves failing inputs to DIR (default bench/out/fuzz) and
exits 1 if there were any. The test suite (tests/test_fuzz.py) runs the same checks with a
small hypothesis budget.
"""

import argparse
import collections
import gzip
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from cli_contract import run_cli, violation  # noqa: E402  (tests/cli_contract.py)

TOKENS = [b":", b" ", b"\t", b"\n", b"\r", b"\r\n", b"#", b"-", b"+", b"e", b"E", b".", b"nan", b"inf",
          b"-inf", b"1e999", b"1e-999", b"99999999999", b"2147483647", b"-1:1", b"\xff", b"\xc3",
          b"\xef\xbb\xbf", b"\x00", b"\x0b", b",", b'"', b"0:0", b"0", b"1", b"{", b"}", b"[", b"]",
          b'"ids"', b"null", b"true", b"-0", b"PK\x03\x04", b"\x1f\x8b", b"#fmcli-meta ",
          b"#global bias W0\n", b"#pairwise interactions Vj,f\n"]


def mutate(rng, data):
    b = bytearray(data)
    n_ops = 1
    while n_ops < 8 and rng.random() < 0.4:   # mostly one or two edits: deeper into the parsers
        n_ops += 1
    for _ in range(n_ops):
        kind = rng.randrange(7)
        p = rng.randint(0, len(b))
        if kind == 0:
            b[p:p] = rng.choice(TOKENS)
        elif kind == 1 and b:
            del b[p:p + rng.randint(1, 8)]
        elif kind == 2 and b:
            tok = rng.choice(TOKENS)
            b[p:p + len(tok)] = tok
        elif kind == 3 and rng.random() < 0.3:
            del b[p:]
        elif kind == 4 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif kind == 5:
            b[p:p] = b[p:p + rng.randint(1, 64)]
        elif kind == 6 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def random_bytes(rng):
    if rng.random() < 0.5:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    return b"".join(rng.choice(TOKENS + [b"1", b"3:1", b"5", b"u1", b"\n"]) for _ in range(rng.randint(0, 60)))


def make_seeds(folder):
    rng = random.Random(0)
    lines = []
    for _ in range(40):
        feats = sorted(rng.sample(range(60), rng.randint(0, 5)))
        lines.append(" ".join([str(rng.randint(1, 5))] + [f"{j}:{rng.choice(['1', '0.5', '2e-1'])}" for j in feats]))
    libfm = ("# seed\n" + "\n".join(lines) + "\n").encode()
    data = os.path.join(folder, "seed.libfm")
    open(data, "wb").write(libfm)
    models = {}
    for name, method in (("seed.fm", "mcmc"), ("seed.npz", "als")):
        p = os.path.join(folder, name)
        code, _, err = run_cli(["train", "-task", "r", "-train", data, "-method", method, "-dim", "1,1,2",
                                "-iter", "3", "-regular", "0,1,1", "-save_model", p, "-q"])
        assert code == 0, err
        models[name] = open(p, "rb").read()
    libfm_model = models["seed.fm"].split(b"\n#fmcli")[0] + b"\n"    # the libFM part only
    csv = b"user,item,rating,ts\n" + b"".join(
        f"u{rng.randint(1, 9)},i{rng.randint(1, 9)},{rng.randint(1, 5)},{rng.randint(1, 10**9)}\n".encode()
        for _ in range(30))
    csv_path = os.path.join(folder, "seed.csv")
    open(csv_path, "wb").write(csv)
    mapping = os.path.join(folder, "seed.json")
    code, _, err = run_cli(["convert", "-in", csv_path, "-out", os.path.join(folder, "seed.csv.libfm"),
                            "--target", "rating", "--categorical", "user,item", "--drop", "ts",
                            "--mapping", mapping, "-q"])
    assert code == 0, err
    return {"libfm": libfm, "model_text": models["seed.fm"], "model_npz": models["seed.npz"],
            "model_libfm": libfm_model, "csv": csv, "mapping": open(mapping, "rb").read(),
            "data_path": data, "model_path": os.path.join(folder, "seed.fm"), "csv_path": csv_path}


def case(rng, seeds, work):
    """(target name, input bytes, args, outputs, stdin)."""
    target = rng.choice(["train", "predict", "predict-stdin", "predict-gzip", "model-text", "model-npz",
                         "model-libfm", "convert", "mapping"])
    fresh = rng.random() < 0.15
    p = lambda name: os.path.join(work, name)  # noqa: E731
    if target in ("train", "predict", "predict-stdin", "predict-gzip"):
        data = random_bytes(rng) if fresh else mutate(rng, seeds["libfm"])
        src = p("in.libfm")
        open(src, "wb").write(gzip.compress(data, mtime=0) if target == "predict-gzip" else data)
        if target == "train":
            outs = [p("pred"), p("m.fm")]
            args = ["train", "-task", rng.choice(["r", "c"]), "-train", src, "-test", src,
                    "-method", rng.choice(["sgd", "als", "mcmc"]), "-dim", "1,1,2", "-iter", "1",
                    "-out", outs[0], "-save_model", outs[1], "-q"]
            return target, data, args, outs, None
        outs = [p("pred")]
        stdin = data if target == "predict-stdin" else None
        args = ["predict", "-model", seeds["model_path"], "-test", "-" if stdin else src, "-out", outs[0]]
        return target, data, args, outs, stdin
    if target.startswith("model"):
        seed = seeds[target.replace("-", "_")]
        data = random_bytes(rng) if fresh else mutate(rng, seed)
        src = p("in.npz" if target == "model-npz" else "in.fm")
        open(src, "wb").write(data)
        if rng.random() < 0.5:
            outs = [p("pred")]
            args = ["predict", "-model", src, "-test", seeds["data_path"], "-out", outs[0]]
        else:
            outs = [p("warm.fm")]
            args = ["train", "-task", "r", "-train", seeds["data_path"], "-load_model", src, "-method", "sgd",
                    "-iter", "1", "-save_model", outs[0], "-q"]
        return target, data, args, outs, None
    if target == "convert":
        data = random_bytes(rng) if fresh else mutate(rng, seeds["csv"])
        src = p("in.csv")
        open(src, "wb").write(data)
        outs = [p("o.libfm"), p("g.meta"), p("m.json")]
        args = ["convert", "-in", src, "-out", outs[0], "--sep", rng.choice(["auto", "auto", ",", "space"]),
                "--target", rng.choice(["2", "rating"]), "-meta", outs[1], "--mapping", outs[2], "-q"]
        return target, data, args, outs, None
    data = random_bytes(rng) if fresh else mutate(rng, seeds["mapping"])
    src = p("in.json")
    open(src, "wb").write(data)
    outs = [p("new.libfm")]
    args = ["convert", "-in", seeds["csv_path"], "-out", outs[0], "--use-mapping", src, "-q"]
    return target, data, args, outs, None


def main_(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="inputs to try (default 20000)")
    ap.add_argument("--seconds", type=float, default=600, help="time budget (default 600)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "fuzz"),
                    help="where failing inputs are saved")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    root = tempfile.mkdtemp(prefix="fmcli-fuzz-")
    seeds = make_seeds(root)
    work = os.path.join(root, "work")
    os.mkdir(work)
    tried = collections.Counter()
    codes = collections.defaultdict(collections.Counter)
    failures = []
    start = time.perf_counter()
    n = 0
    try:
        while n < a.n and time.perf_counter() - start < a.seconds:
            for f in os.listdir(work):
                os.unlink(os.path.join(work, f))
            target, data, args, outs, stdin = case(rng, seeds, work)
            code, stdout, err = run_cli(args, stdin)
            n += 1
            tried[target] += 1
            codes[target][code] += 1
            why = violation(code, stdout, err, outs, work)
            if why:
                os.makedirs(a.keep, exist_ok=True)
                name = os.path.join(a.keep, f"fail-{len(failures):03d}-{target}.bin")
                open(name, "wb").write(data)
                failures.append((target, why, name, err.strip()[:200]))
                print(f"FAIL {target}: {why}: {name}\n  {err.strip()[:200]}", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - start
    print(f"fmcli fuzz: {n} inputs in {elapsed:.0f} s (seed {a.seed}), {len(failures)} contract violations")
    print(f"{'target':<14} {'inputs':>7}  exit codes")
    for t in sorted(tried):
        print(f"{t:<14} {tried[t]:>7}  " + ", ".join(f"{c}: {k}" for c, k in sorted(codes[t].items())))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main_())

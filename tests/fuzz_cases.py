"""The fuzzing behind bench/fuzz.py and tests/test_fuzz.py: cases for every reader and writer,
run in-process, and fault trials (signals, full disk, closed streams, read-only folders,
concurrent runs, outputs that are inputs) run as processes. Each outcome is sorted into one
of the counts the issue names; a case that breaks the contract says why.

Oracles, by what a case knows about its input:
- "any": a mutated input may still be valid: exit 0 with every output written, or exit 2
  with one `fmcli: error:` line, nothing on stdout and no output;
- "error": the input is certainly bad (a corrupted binary data file, an output that is an
  input, a full disk): exit 0 is a violation (`exit 0 on bad input`);
- "reference": a corrupted cache beside an intact text file: the run must succeed with the
  predictions of `--no-cache`, byte for byte.
"""

import bz2
import collections
import gzip
import json
import lzma
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from cli_contract import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = [b":", b" ", b"\t", b"\n", b"\r", b"\r\n", b"#", b"-", b"+", b"e", b"E", b".", b"nan", b"inf",
          b"-inf", b"1e999", b"1e-999", b"99999999999", b"2147483647", b"-1:1", b"\xff", b"\xc3",
          b"\xef\xbb\xbf", b"\x00", b"\x0b", b",", b'"', b"0:0", b"0", b"1", b"{", b"}", b"[", b"]",
          b'"ids"', b"null", b"true", b"-0", b"PK\x03\x04", b"\x1f\x8b", b"#fmcli-meta ", b"1e200",
          b"#global bias W0\n", b"#pairwise interactions Vj,f\n"]
COUNTS = ("cases", "signal or crash", "internal error", "exit 0 on bad input", "partial or mixed output",
          "hang", "other contract violation")
HANG_SECONDS = 60


def mutate(rng, data):
    """One to eight random edits: token inserts and overwrites, deletions, truncation, bit
    flips, random bytes, repeated slices."""
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


def flip(rng, data):
    """A changed byte anywhere in the file (never the same value)."""
    b = bytearray(data)
    p = rng.randrange(len(b))
    b[p] ^= rng.randrange(1, 256)
    return bytes(b)


def random_bytes(rng):
    if rng.random() < 0.5:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    return b"".join(rng.choice(TOKENS + [b"1", b"3:1", b"5", b"u1", b"\n"]) for _ in range(rng.randint(0, 60)))


def compress(rng, data):
    """(bytes, name suffix): plain, gzip, bzip2 or xz."""
    kind = rng.randrange(4)
    if kind == 1:
        return gzip.compress(data, mtime=0), ".gz"
    if kind == 2:
        return bz2.compress(data), ".bz2"
    if kind == 3:
        return lzma.compress(data), ".xz"
    return data, ""


class Seeds:
    """Valid files of every kind, made once in `folder`, and the reference outputs."""

    def __init__(self, folder):
        rng = random.Random(0)
        self.folder = folder
        lines = []
        for _ in range(40):
            feats = sorted(rng.sample(range(30), rng.randint(0, 5)))
            lines.append(" ".join([str(rng.randint(1, 5))] + [f"{j}:{rng.choice(['1', '0.5', '2e-1'])}" for j in feats]))
        self.libfm = ("# seed\n" + "\n".join(lines) + "\n").encode()
        self.data_path = self._write("seed.libfm", self.libfm)
        self.meta = "".join(f"{j % 3}\n" for j in range(30)).encode()
        self.meta_path = self._write("seed.meta", self.meta)
        # a relation: 8 relation rows over 10 features, one link per train row
        self.rel_x = "".join("0 " + " ".join(f"{j}:1" for j in sorted(rng.sample(range(10), 3))) + "\n"
                             for _ in range(8)).encode()
        self.rel_links = "".join(f"{rng.randrange(8)}\n" for _ in range(40)).encode()
        self.rel_base = os.path.join(folder, "rel")
        self._write("rel.x", self.rel_x)
        self._write("rel.train", self.rel_links)
        self.models = {}
        for name, method in (("seed.fm", "mcmc"), ("seed.npz", "als"), ("sgd.fm", "sgd")):
            p = os.path.join(folder, name)
            self._ok(["train", "-task", "r", "-train", self.data_path, "-method", method, "-dim", "1,1,2",
                      "-iter", "3", "-regular", "0,1,1", "-save_model", p, "-q", "--no-cache"])
            self.models[name] = open(p, "rb").read()
        self.model_path = os.path.join(folder, "seed.fm")
        self.model_libfm = self.models["sgd.fm"].split(b"\n#fmcli")[0] + b"\n"   # the libFM part only
        self.csv = b"user,item,rating,ts\n" + b"".join(
            f"u{rng.randint(1, 9)},i{rng.randint(1, 9)},{rng.randint(1, 5)},{rng.randint(1, 10**9)}\n".encode()
            for _ in range(30))
        self.csv_path = self._write("seed.csv", self.csv)
        mapping = os.path.join(folder, "seed.json")
        self._ok(["convert", "-in", self.csv_path, "-out", os.path.join(folder, "seed.csv.libfm"),
                  "--target", "rating", "--categorical", "user,item", "--drop", "ts", "--mapping", mapping, "-q"])
        self.mapping = open(mapping, "rb").read()
        binary = os.path.join(folder, "seed.fmbin")
        self._ok(["convert", "--binary", "-in", self.data_path, "-out", binary, "-q"])
        self.binary = open(binary, "rb").read()
        # what a run on the intact text gives: the reference of every corrupted-cache case
        ref = os.path.join(folder, "ref.pred")
        self._ok(["train", "-task", "r", "-train", self.data_path, "-test", self.data_path, "-method", "als",
                  "-dim", "1,1,2", "-iter", "2", "-out", ref, "--no-cache", "-q"])
        self.reference = open(ref, "rb").read()
        cached = self._write("cached.libfm", self.libfm)
        self._ok(["train", "-task", "r", "-train", cached, "-method", "als", "-dim", "1,1,2", "-iter", "1", "-q"])
        self.cache = open(cached + ".fmcache", "rb").read()

    def _write(self, name, data):
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    @staticmethod
    def _ok(args):
        code, _, err = run_cli(args)
        assert code == 0, (args, err)


Case = collections.namedtuple("Case", "target data args outputs stdin expect")


def make_case(rng, seeds, work):
    """A random case: its target name, the input bytes (kept on failure), the arguments, the
    outputs it may write, stdin, and the oracle ("any", "error" or "reference")."""
    target = rng.choice(["train", "predict", "predict-stdin", "model-text", "model-npz", "model-libfm",
                         "meta", "relation", "convert", "mapping", "cache", "binary", "options", "same-file",
                         "full-disk"])
    fresh = rng.random() < 0.15
    p = lambda name: os.path.join(work, name)  # noqa: E731

    def write(name, data):
        with open(p(name), "wb") as f:
            f.write(data)
        return p(name)

    if target in ("train", "predict", "predict-stdin"):
        data = random_bytes(rng) if fresh else mutate(rng, seeds.libfm)
        packed, suffix = compress(rng, data)
        src = write("in.libfm" + suffix, packed)
        if target == "train":
            outs = [p("pred"), p("m.fm"), p("log.tsv")]
            args = ["train", "-task", rng.choice(["r", "c"]), "-train", src, "-test", src,
                    "-method", rng.choice(["sgd", "sgda", "als", "mcmc"]), "-dim", "1,1,2", "-iter", "1",
                    "-out", outs[0], "-save_model", outs[1], "-rlog", outs[2], "-q"]
            if "sgda" in args:
                args += ["-validation", src]
            return Case(target, data, args, outs, None, "any")
        stdin = packed if target == "predict-stdin" else None
        args = ["predict", "-model", seeds.model_path, "-test", "-" if stdin else src, "-out", p("pred")]
        return Case(target, data, args, [p("pred")], stdin, "any")
    if target.startswith("model"):
        seed = {"model-text": seeds.models["seed.fm"], "model-npz": seeds.models["seed.npz"],
                "model-libfm": seeds.model_libfm}[target]
        data = random_bytes(rng) if fresh else mutate(rng, seed)
        src = write("in.npz" if target == "model-npz" else "in.fm", data)
        if rng.random() < 0.5:
            args = ["predict", "-model", src, "-test", seeds.data_path, "-out", p("pred")]
            return Case(target, data, args, [p("pred")], None, "any")
        args = ["train", "-task", "r", "-train", seeds.data_path, "-load_model", src, "-method",
                rng.choice(["sgd", "als", "mcmc"]), "-iter", "1", "-save_model", p("warm.fm"), "-q"]
        return Case(target, data, args, [p("warm.fm")], None, "any")
    if target == "meta":
        data = mutate(rng, seeds.meta)
        src = write("in.meta", data)
        args = ["train", "-task", "r", "-train", seeds.data_path, "-meta", src, "-method",
                rng.choice(["als", "mcmc", "sgd"]), "-dim", "1,1,2", "-iter", "1", "-save_model", p("m.fm"), "-q"]
        return Case(target, data, args, [p("m.fm")], None, "any")
    if target == "relation":
        which = rng.randrange(2)
        data = mutate(rng, seeds.rel_links if which else seeds.rel_x)
        write("r.x", seeds.rel_x if which else data)
        write("r.train", data if which else seeds.rel_links)
        args = ["train", "-task", "r", "-train", seeds.data_path, "-relation", p("r"), "-method",
                rng.choice(["als", "mcmc"]), "-dim", "1,1,2", "-iter", "1", "-save_model", p("m.fm"), "-q"]
        return Case(target, data, args, [p("m.fm")], None, "any")
    if target == "convert":
        data = random_bytes(rng) if fresh else mutate(rng, seeds.csv)
        src = write("in.csv", data)
        outs = [p("o.libfm"), p("g.meta"), p("m.json")]
        args = ["convert", "-in", src, "-out", outs[0], "--sep", rng.choice(["auto", "auto", ",", "space"]),
                "--target", rng.choice(["2", "rating"]), "-meta", outs[1], "--mapping", outs[2], "-q"]
        return Case(target, data, args, outs, None, "any")
    if target == "mapping":
        data = random_bytes(rng) if fresh else mutate(rng, seeds.mapping)
        src = write("in.json", data)
        args = ["convert", "-in", seeds.csv_path, "-out", p("new.libfm"), "--use-mapping", src, "-q"]
        return Case(target, data, args, [p("new.libfm")], None, "any")
    if target == "cache":  # a changed byte in the cache beside an intact text: rebuilt, same result
        data = flip(rng, seeds.cache)
        src = write("in.libfm", seeds.libfm)
        st = os.stat(src)
        write("in.libfm.fmcache", data)
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
        args = ["train", "-task", "r", "-train", src, "-test", src, "-method", "als", "-dim", "1,1,2",
                "-iter", "2", "-out", p("pred"), "-q"]
        return Case(target, data, args, [p("pred")], None, "reference")
    if target == "binary":  # a changed byte in a standalone binary data file: an error
        data = flip(rng, seeds.binary)
        src = write("in.fmbin", data)
        args = (["train", "-task", "r", "-train", src, "-test", src, "-method", rng.choice(["sgd", "als", "mcmc"]),
                 "-dim", "1,1,2", "-iter", "1", "-out", p("pred"), "-q"] if rng.random() < 0.5 else
                ["predict", "-model", seeds.model_path, "-test", src, "-out", p("pred")])
        return Case(target, data, args, [p("pred")], None, "error")
    if target == "options":
        args = random_options(rng, seeds, p)
        return Case(target, " ".join(args).encode(), args, [p("pred"), p("m.fm")], None, "any")
    if target == "same-file":
        return same_file_case(rng, seeds, p, write)
    # full disk: /dev/full as an output (not a regular file, so written in place)
    which = rng.randrange(3)
    if which == 0:
        args = ["predict", "-model", seeds.model_path, "-test", seeds.data_path, "-out", "/dev/full"]
    elif which == 1:
        args = ["train", "-task", "r", "-train", seeds.data_path, "-test", seeds.data_path, "-method", "sgd",
                "-iter", "1", "-out", "/dev/full", "-q"]
    else:
        args = ["convert", "-in", seeds.csv_path, "-out", "/dev/full", "--target", "rating", "-q"]
    return Case(target, b"", args, [], None, "error")


def random_options(rng, seeds, p):
    """A train or predict command line from pools of good and bad option values."""
    pools = {
        "-task": ["r", "c", "x", "R", ""], "-method": ["sgd", "sgda", "als", "mcmc", "bogus"],
        "-dim": ["1,1,2", "0,0,1", "1,0,0", "0,0,0", "1,1", "2,1,1", "1,1,-1", "1;1;3", "a,b,c", "1,1,99999999999"],
        "-iter": ["0", "1", "2", "-1", "x", "1e3"], "-learn_rate": ["0.01", "0", "-1", "1e30", "nan", "0.1,0.1,0.1"],
        "-regular": ["0", "1", "0,1,1", "1,2", "-1", "inf", "0,1,1,1,1"], "-init_stdev": ["0.1", "0", "-1", "1e200", "nan"],
        "-seed": ["0", "-3", "x", "99999999999999999999"], "-verbosity": ["0", "1", "-1"],
        "--threads": ["0", "1", "2", "-1"], "--optimizer": ["sgd", "adagrad", "adam", "x"],
        "--burn-in": ["0", "1", "-1"], "--keep-samples": ["1", "0", "2"], "--early-stop": ["0", "1", "-1"],
        "-cache_size": ["100", "x"],
    }
    if rng.random() < 0.2:
        args = ["predict", "-model", seeds.model_path, "-test", seeds.data_path, "-out", p("pred")]
        if rng.random() < 0.5:
            args += ["-task", rng.choice(["r", "c", "x"])]
        return args
    args = ["train", "-train", seeds.data_path]
    for name in rng.sample(sorted(pools), rng.randint(1, 6)):
        args += [name, rng.choice(pools[name])]
    if "-task" not in args or rng.random() < 0.1:
        args += ["-task", "r"]
    extra = rng.random()
    if extra < 0.3:
        args += ["-test", seeds.data_path, "-out", p("pred")]
    elif extra < 0.5:
        args += ["-validation", seeds.data_path]
    elif extra < 0.6:
        args += ["-" + rng.choice(["tset", "iterr", "x", "-bogus"])]
    return args + ["-save_model", p("m.fm"), "-q"]


def same_file_case(rng, seeds, p, write):
    """An output that is one of the inputs, spelled differently (./, a symlink, a hard link)."""
    src = write("in.libfm", seeds.libfm)
    model = write("model.fm", seeds.models["sgd.fm"])
    os.symlink(src, p("link.libfm"))
    os.link(src, p("hard.libfm"))
    spelling = rng.choice([os.path.join(os.path.dirname(src), ".", "in.libfm"), p("link.libfm"), p("hard.libfm")])
    kind = rng.randrange(4)
    if kind == 0:
        args = ["train", "-task", "r", "-train", src, "-test", src, "-method", "sgd", "-iter", "1",
                rng.choice(["-out", "-save_model", "-rlog"]), spelling, "-q"]
    elif kind == 1:
        args = ["predict", "-model", model, "-test", src, "-out", rng.choice([spelling, model])]
    elif kind == 2:
        args = ["train", "-task", "r", "-train", src, "-test", src, "-method", "sgd", "-iter", "1",
                "-out", p("same"), "-save_model", p("same"), "-q"]
    else:
        csv = write("in.csv", seeds.csv)
        args = ["convert", "-in", csv, "-out", os.path.join(os.path.dirname(csv), ".", "in.csv"),
                "--target", "rating", "-q"]
    return Case("same-file", b"", args, [], None, "error")


def classify(case, code, stdout, err, work, seeds, inputs_before):
    """The count a finished case falls under (None: the contract held) and why."""
    if code is None or code < 0 or code > 128:
        return "signal or crash", f"exit code {code}"
    if "Traceback" in err or "internal error" in err:
        return "internal error", err.strip().splitlines()[-1][:200] if err.strip() else "traceback"
    temps = [f for f in os.listdir(work) if f.endswith(".tmp")]
    if temps:
        return "partial or mixed output", f"temporary files left: {temps}"
    changed = [name for name, data in inputs_before.items()  # a cache may be rebuilt
               if not name.endswith(".fmcache") and _read(os.path.join(work, name)) != data]
    if changed:
        return "partial or mixed output", f"an input was changed: {changed}"
    if code == 0:
        if case.expect == "error":
            return "exit 0 on bad input", "exit 0"
        missing = [o for o in case.outputs if os.path.basename(o) in _named_outputs(case.args) and not os.path.exists(o)]
        if missing:
            return "partial or mixed output", f"outputs missing after success: {missing}"
        if case.expect == "reference" and _read(case.outputs[0]) != seeds.reference:
            return "exit 0 on bad input", "predictions differ from --no-cache"
        return None, None
    if code not in (1, 2):
        return "other contract violation", f"exit code {code}"
    if code == 1 and case.expect == "any" and not ("diverged" in err or "non-finite" in err):
        return "other contract violation", f"exit 1 on input: {err.strip()[:150]}"
    if case.expect == "reference":
        return "other contract violation", f"a corrupted cache was not rebuilt: {err.strip()[:150]}"
    lines = err.splitlines()
    # a usage error may add click's hint line "Try 'fmcli train --help' for help."
    if not (len(lines) == 1 or len(lines) == 2 and lines[1].startswith("Try 'fmcli")) \
            or not err.startswith("fmcli: error: "):
        return "other contract violation", f"error is not one 'fmcli: error:' line: {err[:150]!r}"
    if stdout:
        return "partial or mixed output", "stdout not empty after an error"
    left = [o for o in case.outputs if os.path.exists(o)]
    if left:
        return "partial or mixed output", f"outputs written after an error: {left}"
    return None, None


def _named_outputs(args):
    names = set()
    for flag, value in zip(args, args[1:]):
        if flag in ("-out", "-save_model", "-rlog", "-meta", "--mapping") and value != "-":
            names.add(os.path.basename(value))
    if args and args[0] == "train" and "-meta" in args:
        names.discard(os.path.basename(args[args.index("-meta") + 1]))  # an input of train
    return names


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class Worker:
    """A process that runs cases in-process, one after the other (fast: numba's kernels load
    once), so that a crash or a hang of one case is seen and counted, and a new worker started."""

    def __init__(self):
        self.proc = None

    def run(self, args, stdin, timeout):
        """(exit code, stdout, stderr); exit code "signal N" or "hang" when the case killed the worker."""
        import base64
        import select

        if self.proc is None:
            self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"], env=_env(),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=os.getcwd())
        request = {"args": [str(a) for a in args],
                   "stdin": None if stdin is None else base64.b64encode(stdin).decode()}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            if not ready:
                self.proc.kill()
            code = self.proc.wait()
            self.proc = None
            return ("hang" if not ready else f"signal {-code}" if code < 0 else f"worker exit {code}"), "", ""
        reply = json.loads(line)
        return reply["code"], reply["stdout"], reply["stderr"]

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


def _serve():
    """The worker's loop: a JSON request a line in, a JSON reply a line out."""
    import base64

    replies = os.fdopen(os.dup(1), "w")  # fmcli's own writes to fd 1 must not mix into the replies
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    for line in sys.stdin:
        request = json.loads(line)
        stdin = None if request["stdin"] is None else base64.b64decode(request["stdin"])
        code, stdout, err = run_cli(request["args"], stdin)
        replies.write(json.dumps({"code": code, "stdout": stdout, "stderr": err}) + "\n")
        replies.flush()


def run_cases(n, seed, seconds=float("inf"), keep=None, log=None):
    """Run n cases in a worker process; returns (Counter of COUNTS, Counter of cases per target, failures)."""
    import tempfile

    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="fmcli-fuzz-")
    counts, per_target, failures = collections.Counter(), collections.Counter(), []
    worker = Worker()
    try:
        seeds = Seeds(root)
        work = os.path.join(root, "work")
        start = time.perf_counter()
        while counts["cases"] < n and time.perf_counter() - start < seconds:
            shutil.rmtree(work, ignore_errors=True)
            os.mkdir(work)
            case = make_case(rng, seeds, work)
            inputs = {f: _read(os.path.join(work, f)) for f in os.listdir(work)
                      if not os.path.islink(os.path.join(work, f))}
            code, stdout, err = worker.run(case.args, case.stdin, HANG_SECONDS)
            counts["cases"] += 1
            per_target[case.target] += 1
            if code == "hang":
                kind, why = "hang", f"no answer in {HANG_SECONDS} s"
            elif isinstance(code, str):
                kind, why = "signal or crash", code
            else:
                kind, why = classify(case, code, stdout, err, work, seeds, inputs)
            if kind:
                counts[kind] += 1
                failures.append((case.target, kind, why, case.args))
                if keep:
                    os.makedirs(keep, exist_ok=True)
                    with open(os.path.join(keep, f"fail-{len(failures):03d}-{case.target}.bin"), "wb") as f:
                        f.write(case.data)
                if log:
                    log(f"FAIL {case.target}: {kind}: {why}\n  args: {' '.join(map(str, case.args))}")
    finally:
        worker.close()
        shutil.rmtree(root, ignore_errors=True)
    return counts, per_target, failures


# ---- fault trials: real processes ---------------------------------------------------------------

def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _shell(command, timeout=HANG_SECONDS):
    """(exit status, stdout, stderr) of a shell command line; None status: it hung."""
    try:
        r = subprocess.run(["bash", "-c", command], capture_output=True, env=_env(), timeout=timeout)
        return r.returncode, r.stdout, r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return None, b"", ""


def fault_trials(n_kill, seed, log=None):
    """Signals at random moments, closed streams, full disk, read-only folders, concurrent
    runs. Returns (Counter of COUNTS, failures)."""
    import shlex
    import tempfile

    rng = random.Random(seed)
    counts, failures = collections.Counter(), []
    root = tempfile.mkdtemp(prefix="fmcli-faults-")

    def fail(kind, why):
        counts[kind] += 1
        failures.append((kind, why))
        if log:
            log(f"FAIL fault: {kind}: {why}")

    try:
        data = os.path.join(root, "d.libfm")
        r = random.Random(1)
        with open(data, "w") as f:
            for _ in range(3000):
                f.write(f"{r.randint(1, 5)} " + " ".join(f"{j}:1" for j in sorted(r.sample(range(300), 4))) + "\n")
        q = shlex.quote
        train_args = ["-m", "fmcli", "train", "-task", "r", "-train", data, "-test", data, "-method", "mcmc",
                      "-dim", "1,1,8", "-iter", "40", "-seed", "7"]
        train = " ".join(map(q, train_args))
        py = q(sys.executable)
        # the reference: one complete run
        ref = {n: os.path.join(root, "ref." + n) for n in ("pred", "fm")}
        code, _, err = _shell(f"{py} {train} -out {q(ref['pred'])} -save_model {q(ref['fm'])} -q")
        assert code == 0, err
        ref_bytes = {n: _read(p) for n, p in ref.items()}

        # 1. SIGKILL / SIGTERM at random moments: each destination is old or the complete new file,
        #    -out and -save_model from the same run; no temporary file survives the next run
        for trial in range(n_kill):
            counts["cases"] += 1
            folder = os.path.join(root, f"kill{trial}")
            os.mkdir(folder)
            dest = {n: os.path.join(folder, "out." + n) for n in ("pred", "fm")}
            for n, p in dest.items():
                with open(p, "wb") as f:
                    f.write(b"old " + n.encode() + b"\n")
            sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
            proc = subprocess.Popen([sys.executable, *train_args, "-out", dest["pred"], "-save_model",
                                     dest["fm"], "-q"], env=_env(), stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.3, 4.0))
            proc.send_signal(sig)
            try:
                _, err = proc.communicate(timeout=HANG_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                fail("hang", f"trial {trial}: no exit after {sig.name}")
                continue
            got = {n: _read(p) for n, p in dest.items()}
            states = {n: "old" if got[n] == b"old " + n.encode() + b"\n" else "new" if got[n] == ref_bytes[n]
                      else "corrupt" for n in dest}
            if "corrupt" in states.values():
                fail("partial or mixed output", f"trial {trial} ({sig.name}): {states}")
            elif states["pred"] != states["fm"]:
                fail("partial or mixed output", f"trial {trial} ({sig.name}): -out {states['pred']}, "
                                                f"-save_model {states['fm']}")
            elif sig == signal.SIGTERM and proc.returncode not in (0, 143):
                fail("other contract violation", f"trial {trial}: SIGTERM gave exit {proc.returncode}")
            # the next run into the folder removes what a killed run left
            code, _, err = _shell(f"{py} -m fmcli predict -model {q(ref['fm'])} -test {q(data)} "
                                  f"-out {q(os.path.join(folder, 'next.pred'))} -q")
            left = [f for f in os.listdir(folder) if f.endswith(".tmp")]
            if code != 0 or left:
                fail("partial or mixed output", f"trial {trial}: after the next run: exit {code}, left {left}")

        # 2. streams: closed, full, a reader that goes away (the predictions, 30,000 lines, are more
        #    than a pipe holds, so the reader is gone before fmcli is done)
        big = os.path.join(root, "big.libfm")
        with open(big, "wb") as f:
            f.write(_read(data) * 10)
        pred = f"{py} -m fmcli predict -model {q(ref['fm'])} -test {q(big)}"
        stream_cases = [
            (f"{pred} -out - <&-", {0}, "stdin closed"),
            (f"{pred} -out - >&-", {1, 2}, "stdout closed"),
            (f"{pred} -out - 2>&-", {0}, "stderr closed"),
            (f"{pred} -out - 2>/dev/full", {0}, "stderr full"),
            (f"{pred} -out - >/dev/full", {1}, "stdout full"),
            (f"set -o pipefail; {pred} -out - | head -1 >/dev/null", {141}, "reader goes away (head)"),
            (f"set -o pipefail; {pred} -out - | true", {141}, "reader goes away (true)"),
            (f"cat {q(data)} | {pred.replace(q(big), '-')} -out - <&-", {0, 2}, "stdin closed, - asked"),
        ]
        for command, allowed, what in stream_cases:
            counts["cases"] += 1
            code, stdout, err = _shell(command)
            if code is None:
                fail("hang", what)
            elif "Traceback" in err or "internal error" in err:
                fail("internal error", f"{what}: {err.strip()[-150:]}")
            elif code not in allowed:
                fail("other contract violation", f"{what}: exit {code}, allowed {sorted(allowed)}: {err.strip()[:150]}")
            elif code == 141 and err:
                fail("other contract violation", f"{what}: a broken pipe is silent, got {err.strip()[:100]!r}")
            elif code in (1, 2) and not err.startswith("fmcli: error: "):
                fail("other contract violation", f"{what}: no error line: {err[:100]!r}")
        # stderr closed: messages never reach stdout
        counts["cases"] += 1
        code, stdout, _ = _shell(f"{pred} -out - -task c 2>&-")
        if b"fmcli" in stdout or b"Warn" in stdout:
            fail("partial or mixed output", "stderr closed: messages on stdout")

        # 3. a read-only folder
        counts["cases"] += 1
        ro = os.path.join(root, "ro")
        os.mkdir(ro)
        os.chmod(ro, 0o555)
        code, _, err = _shell(f"{pred} -out {q(os.path.join(ro, 'p'))}")
        if os.geteuid() != 0 and (code not in (1, 2) or not err.startswith("fmcli: error: ")):
            fail("other contract violation", f"read-only folder: exit {code}: {err[:100]!r}")
        os.chmod(ro, 0o755)

        # 4. concurrent runs on the same outputs: -out and -save_model from one run
        for trial in range(3):
            counts["cases"] += 1
            folder = os.path.join(root, f"conc{trial}")
            os.mkdir(folder)
            o, m = os.path.join(folder, "p"), os.path.join(folder, "m.fm")
            procs = [subprocess.Popen([sys.executable, "-m", "fmcli", "train", "-task", "r", "-train", data,
                                       "-test", data, "-method", "als", "-dim", "1,1,4", "-iter", "5", "-seed",
                                       str(s), "-out", o, "-save_model", m, "-q"], env=_env()) for s in (1, 2)]
            codes = [pr.wait(timeout=HANG_SECONDS * 2) for pr in procs]
            check = os.path.join(folder, "check")
            c2, _, err = _shell(f"{py} -m fmcli predict -model {q(m)} -test {q(data)} -out {q(check)} -q")
            if codes != [0, 0] or c2 != 0 or _read(check) != _read(o):
                fail("partial or mixed output", f"concurrent trial {trial}: exits {codes}, -out from another run "
                                                f"than -save_model" if c2 == 0 else err[:100])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return counts, failures


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()

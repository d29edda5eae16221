"""`fmcli tune`: a grid (or a random sample of it) of training options, each candidate scored
on -validation rows or by k-fold cross-validation, every run an independent task
(fmcli.executors).

A grid is `NAME=VALUES` words: `dim=8,16,32 regular=0,10,10;0,20,20 init_stdev=0.05,0.1`.
Candidates of one name are separated by `;` when there is one (for values that are lists
themselves, such as -regular), else by `,`; `dim=8` sets the number of factors (k0 and k1 as
given by -dim), `dim=1,1,8;0,1,8` whole -dim values. Every value is parsed as the option's
own (fmcli.options), and every candidate checked, before any task starts.
"""

import dataclasses
import itertools
import json
import random
import shlex

import numpy as np

from fmcli.errors import UsageError
from fmcli.options import parse_dim, parse_floats

NAMES = ("dim", "regular", "init_stdev", "learn_rate", "iter", "method", "optimizer", "burn_in")
METRICS = {"r": ("rmse", "mae"), "c": ("logloss", "accuracy", "auc")}


@dataclasses.dataclass(frozen=True)
class TuneJob:
    opts: object                  # TrainOptions that the grid's values change
    train: str
    grid: str
    validation: str = None        # score on these rows, or ...
    k: int = None                 # ... by k-fold cross-validation
    random: int = None            # try this many candidates drawn from the grid
    seed: int = 0                 # the draw's seed (and the folds')
    metric: str = None            # default: rmse (r) or logloss (c)
    early_stop: int = 0
    meta: str = None
    out: str = None               # the result as JSON (fmcli plot reads it)
    save_best: str = None         # train the best candidate on all -train rows and save it here
    workers: int = None
    scheduler: str = None
    cache: object = True          # True, False or fmcli.io.load.VERIFY


def parse_grid(text):
    """[(name, [value text, ...])] in the order given."""
    grid = []
    for word in shlex.split(text):
        name, eq, values = word.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not eq or not values.strip():
            raise UsageError(f"--grid {word!r}: expected NAME=VALUES, e.g. dim=8,16")
        if name not in NAMES:
            raise UsageError(f"--grid: unknown option {name!r} (can tune: {', '.join(NAMES)})")
        if name in (n for n, _ in grid):
            raise UsageError(f"--grid: {name} given twice")
        parts = [v.strip() for v in values.split(";" if ";" in values else ",")]
        if not all(parts):
            raise UsageError(f"--grid {word!r}: an empty value")
        grid.append((name, parts))
    if not grid:
        raise UsageError("--grid is empty")
    return grid


def with_param(opts, name, text):
    """`opts` with option `name` set from its text, checked as the command line checks it."""
    try:
        return _with_param(opts, name, text)
    except UsageError as e:
        if str(e).startswith("--grid"):
            raise
        raise UsageError(f"--grid {name}={text}: {e}") from None


def _with_param(opts, name, text):
    def bad(why):
        return UsageError(f"--grid {name}={text}: {why}")

    if name == "dim":
        dim = parse_dim(text) if ("," in text or ";" in text) else parse_dim(f"{opts.dim[0]},{opts.dim[1]},{text}")
        return dataclasses.replace(opts, dim=dim)
    if name == "regular":
        return dataclasses.replace(opts, regular=parse_floats("-regular", text, [lambda n: n >= 1]))
    if name == "learn_rate":
        rates = parse_floats("-learn_rate", text, [1, 3], strict=True)
        return dataclasses.replace(opts, learn_rate=rates[0] if len(rates) == 1 else rates)
    if name == "init_stdev":
        return dataclasses.replace(opts, init_stdev=parse_floats("-init_stdev", text, [1])[0])
    if name in ("iter", "burn_in"):
        if not text.isdigit():
            raise bad("not a non-negative integer")
        return dataclasses.replace(opts, **{"iterations" if name == "iter" else "burn_in": int(text)})
    choices = {"method": ("sgd", "als", "mcmc", "sgda"), "optimizer": ("sgd", "adagrad", "adam")}[name]
    if text not in choices:
        raise bad(f"not one of {', '.join(choices)}")
    return dataclasses.replace(opts, **{name: text})


def candidates(job):
    """[(params {name: text}, TrainOptions)], every one checked."""
    from fmcli.plan import TrainJob, resolve

    grid = parse_grid(job.grid)
    names = [n for n, _ in grid]
    combos = list(itertools.product(*(values for _, values in grid)))
    if job.random is not None:
        if job.random < 1:
            raise UsageError("--random must be at least 1")
        combos = random.Random(job.seed).sample(combos, min(job.random, len(combos)))
    out = []
    for combo in combos:
        opts = job.opts
        for name, text in zip(names, combo):
            opts = with_param(opts, name, text)
        # the option rules of fmcli train (method and optimizer, -regular counts, ...)
        resolve(TrainJob(opts, job.train, job.validation or job.train, meta=job.meta,
                         validation=job.validation, early_stop=job.early_stop))
        out.append((dict(zip(names, combo)), opts))
    return out


def check(job):
    if (job.validation is None) == (job.k is None):
        raise UsageError("fmcli tune needs either -validation FILE or -k K (cross-validation)")
    if job.k is not None and job.k < 2:
        raise UsageError("-k must be at least 2")
    if job.early_stop and job.validation is None:
        raise UsageError("--early-stop needs -validation")
    metric = job.metric or ("rmse" if job.opts.task == "r" else "logloss")
    if metric not in METRICS[job.opts.task]:
        raise UsageError(f"--metric {metric}: not one of {', '.join(METRICS[job.opts.task])} for -task {job.opts.task}")
    return metric


def train_command(job, opts):
    """The `fmcli train` command line of a candidate."""
    rate = opts.learn_rate if isinstance(opts.learn_rate, float) else ",".join(map(repr, opts.learn_rate))
    words = ["fmcli", "train", "-task", opts.task, "-train", job.train, "-method", opts.method,
             "-dim", ",".join(map(str, opts.dim)), "-iter", str(opts.iterations),
             "-regular", ",".join(f"{r:g}" for r in opts.regular), "-init_stdev", f"{opts.init_stdev:g}",
             "-seed", str(opts.seed)]
    if opts.method in ("sgd", "sgda"):
        words += ["-learn_rate", f"{rate:g}" if isinstance(rate, float) else rate]
    if opts.optimizer != "sgd":
        words += ["--optimizer", opts.optimizer]
    if opts.burn_in:
        words += ["--burn-in", str(opts.burn_in)]
    if job.meta:
        words += ["-meta", job.meta]
    return " ".join(shlex.quote(w) for w in words)


def run_tune(job, console):
    """Score every candidate; returns the result document (the --json layout)."""
    import shutil
    import tempfile

    from fmcli.cv import CvJob, fold_specs, train_task, write_folds
    from fmcli.executors import executor
    from fmcli.io.atomic import check_writable
    from fmcli.io.load import load_dataset
    from fmcli.metrics import evaluate

    from fmcli.io.atomic import check_distinct

    metric = check(job)
    check_distinct([("-train", job.train), ("-validation", job.validation), ("-meta", job.meta)],
                   [("--json", job.out), ("--save-best", job.save_best)])
    check_writable(job.out, "--json")
    check_writable(job.save_best, "--save-best")
    cands = candidates(job)
    task = job.opts.task
    folder = tempfile.mkdtemp(prefix="fmcli-tune-")
    try:
        with executor(job.workers, job.scheduler, tasks=len(cands) * (job.k or 1)) as ex:
            if job.validation:
                y = [np.asarray(load_dataset(job.validation, cache=job.cache, classes=task == "c").y)]
                paths = [(job.train, job.validation)]
                extra = dict(validation=job.validation if job.early_stop else None, early_stop=job.early_stop,
                             cache=job.cache)
            else:
                cv = CvJob(job.opts, job.train, k=job.k, seed=job.seed, meta=job.meta, cache=job.cache)
                fold, paths, d = write_folds(cv, folder, console)
                y = [np.asarray(d.y)[fold == f] for f in range(job.k)]
                extra = dict(cache=False)
            specs, names = [], []
            for c, (params, opts) in enumerate(cands):
                for f, spec in enumerate(fold_specs(opts, paths, job.meta, **extra)):
                    specs.append(spec)
                    names.append(f"candidate {c} ({' '.join(f'{n}={v}' for n, v in params.items())})"
                                 + (f" fold {f}" if job.k else ""))
            preds = ex.map(train_task, specs, names)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per = len(paths)
    rows = []
    for c, (params, opts) in enumerate(cands):
        scores = [float(evaluate(task, preds[c * per + f], y[f])[metric]) for f in range(per)]
        rows.append({"params": params, "score": float(np.mean(scores)),
                     "sd": float(np.std(scores, ddof=1)) if per > 1 else None,
                     "command": train_command(job, opts)})
    better = "max" if metric in ("accuracy", "auc") else "min"
    ranked = sorted(range(len(rows)), key=lambda i: (-rows[i]["score"] if better == "max" else rows[i]["score"], i))
    for rank, i in enumerate(ranked, 1):
        r = rows[i]
        sd = f" ± {r['sd']:.2g}" if r["sd"] is not None else ""
        console.info(f"{rank:3d}\t{metric}={r['score']:.6g}{sd}\t" + " ".join(f"{n}={v}" for n, v in r["params"].items()))
    best = rows[ranked[0]]
    console.info(f"Best: {best['command']}")
    doc = {"metric": metric, "better": better, "candidates": rows, "best": best}
    from fmcli.io.atomic import atomic_output, publish_together

    with publish_together():   # the best model and the JSON, or neither
        if job.save_best:
            from fmcli.console import Console
            from fmcli.plan import TrainJob
            from fmcli.train import run_train

            run_train(TrainJob(cands[ranked[0]][1], job.train, save_model=job.save_best, meta=job.meta,
                               cache=job.cache), Console(quiet=True))
        if job.out:
            with atomic_output(job.out) as f:
                f.write(json.dumps(doc, indent=1) + "\n")
    if job.save_best:
        console.info(f"Saved the best candidate, trained on all of {job.train}, to {job.save_best}")
    return doc

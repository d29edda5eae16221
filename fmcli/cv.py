"""`fmcli cv`: k-fold cross-validation, the folds trained and scored as independent tasks
(fmcli.executors: local processes or Dask).

Folds are assigned by a seeded permutation: plain (row i of the permuted order goes to fold
i mod k), stratified (the permuted rows sorted by target, then dealt round-robin, so every fold
has the same mix of targets) or grouped (every row whose feature of -meta group G is the same
stays in one fold: a user's ratings, say; groups are dealt in permuted order to the fold with the
fewest rows so far). Each fold's train and test rows are written once as binary data files
(`fmcli convert --binary`'s format) that every task reads memory-mapped; a task is a plain
`fmcli train` run on them with the run's own seed, so a fold's result is the one of
`fmcli train -train foldI.train.fmbin -test foldI.test.fmbin` with the same options, on any
number of workers.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np

from fmcli.errors import InputError, UsageError

REGRESSION_METRICS = ("rmse", "mae")
CLASSIFICATION_METRICS = ("accuracy", "auc", "logloss")
LARGER_IS_BETTER = {"accuracy", "auc"}


@dataclasses.dataclass(frozen=True)
class CvJob:
    opts: object                  # TrainOptions of every fold's run
    train: str                    # the rows to split
    k: int = 5
    seed: int = None              # the fold assignment's seed (None: the learner's -seed)
    group_by: int = None          # a -meta group: rows sharing its feature share a fold
    stratify: bool = False
    meta: str = None
    out: str = None               # out-of-fold predictions, in input order
    summary: str = None           # JSON: per-fold and mean/sd metrics
    work_dir: str = None          # where the fold files go and stay (shared by the workers); None: a
                                  # temporary folder, removed at the end
    workers: int = None           # Dask LocalCluster processes (None: local processes)
    scheduler: str = None         # a Dask scheduler address
    cache: object = True          # True, False or fmcli.io.load.VERIFY


def fold_ids(n, k, seed, keys=None, y=None):
    """The fold (0..k-1) of each of n rows; keys: a group key per row (grouped folds); y: the
    targets (stratified folds)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(n, np.int32)
    if keys is not None:
        uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        if len(uniq) < k:
            raise UsageError(f"--group-by: {len(uniq)} groups cannot make {k} folds")
        load = np.zeros(k, np.int64)
        group_fold = np.empty(len(uniq), np.int32)
        for g in rng.permutation(len(uniq)):
            f = int(np.argmin(load))
            group_fold[g] = f
            load[f] += counts[g]
        fold[:] = group_fold[inverse]
        return fold
    order = rng.permutation(n)
    if y is not None:
        order = order[np.argsort(y[order], kind="stable")]
    fold[order] = np.arange(n) % k
    return fold


def row_keys(d, groups, group):
    """Each row's first feature of -meta group `group` (a row without one is its own group)."""
    in_group = groups[d.indices] == group
    rows = np.repeat(np.arange(d.n_rows), np.diff(d.indptr))
    keys = -1 - np.arange(d.n_rows, dtype=np.int64)
    first_rows, first = np.unique(rows[in_group], return_index=True)
    keys[first_rows] = d.indices[in_group][first]
    return keys


def check(job):
    """The rules that need no data."""
    if job.k < 2:
        raise UsageError("-k must be at least 2")
    if job.group_by is not None and job.stratify:
        raise UsageError("--group-by and --stratify exclude each other")
    if job.group_by is not None and job.meta is None:
        raise UsageError("--group-by needs -meta (the feature groups)")
    if job.out == "-" and job.summary == "-":
        raise UsageError("-out and --summary cannot both be stdout")
    if job.work_dir is not None and not os.path.isdir(job.work_dir):
        raise UsageError(f"--work-dir {job.work_dir}: not a folder")
    if job.opts.method == "sgda":
        raise UsageError("-method sgda needs -validation rows: fmcli cv does not support it")


def write_folds(job, folder, console):
    """Split the train rows into k folds written as binary data files in `folder`; returns
    (fold of each row, [(train path, test path)], the whole data)."""
    from fmcli.io.cache import write_cache
    from fmcli.io.load import load_dataset

    d = load_dataset(job.train, cache=job.cache, classes=job.opts.task == "c")
    if d.n_rows < job.k:
        raise InputError(job.train, None, f"{d.n_rows} rows cannot make {job.k} folds")
    keys = None
    if job.group_by is not None:
        from fmcli.io.meta import read_meta

        keys = row_keys(d, read_meta(job.meta, d.n_features), job.group_by)
    seed = job.opts.seed if job.seed is None else job.seed
    fold = fold_ids(d.n_rows, job.k, seed, keys=keys, y=np.asarray(d.y) if job.stratify else None)
    from fmcli.data import take_rows

    paths = []
    for f in range(job.k):
        pair = (os.path.join(folder, f"fold{f}.train.fmbin"), os.path.join(folder, f"fold{f}.test.fmbin"))
        write_cache(take_rows(d, np.flatnonzero(fold != f)), pair[0])
        write_cache(take_rows(d, np.flatnonzero(fold == f)), pair[1])
        paths.append(pair)
    console.info(f"{job.train}: {d.n_rows} rows in {job.k} folds of {np.bincount(fold).min()}-"
                 f"{np.bincount(fold).max()} rows")
    return fold, paths, d


def train_task(spec):
    """One training run of a task spec (a plain dict); returns the predictions of its test rows."""
    from fmcli.console import Console
    from fmcli.learners.base import TrainOptions
    from fmcli.plan import TrainJob
    from fmcli.train import run_train

    job = TrainJob(TrainOptions(**spec["opts"]), spec["train"], spec["test"], meta=spec.get("meta"),
                   validation=spec.get("validation"), early_stop=spec.get("early_stop", 0),
                   cache=spec.get("cache", True))
    _, pred = run_train(job, Console(quiet=True))
    return np.asarray(pred, np.float64)


def fold_specs(opts, paths, meta, **extra):
    return [dict(opts=dataclasses.asdict(opts), train=tr, test=te, meta=meta, **extra) for tr, te in paths]


def metric_names(task):
    return REGRESSION_METRICS if task == "r" else CLASSIFICATION_METRICS


def fold_metrics(task, pred, y):
    from fmcli.metrics import evaluate

    m = evaluate(task, pred, y)
    return {name: float(m[name]) for name in metric_names(task)}


def summarise(task, per_fold):
    """{metric: (mean, sd)} over the folds (sd with n - 1)."""
    out = {}
    for name in metric_names(task):
        v = np.array([m[name] for m in per_fold])
        out[name] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
    return out


def run_cv(job, console):
    """Cross-validate as the job says; returns (per-fold metrics, summary, out-of-fold predictions)."""
    from fmcli.executors import executor
    from fmcli.io.atomic import check_writable

    from fmcli.io.atomic import check_distinct

    check(job)
    check_distinct([("-train", job.train), ("-meta", job.meta)], [("-out", job.out), ("--summary", job.summary)])
    for path, what in ((job.out, "-out"), (job.summary, "--summary")):
        check_writable(path, what)
    folder = job.work_dir or tempfile.mkdtemp(prefix="fmcli-cv-")
    try:
        with executor(job.workers, job.scheduler, tasks=job.k) as ex:
            fold, paths, d = write_folds(job, folder, console)
            preds = ex.map(train_task, fold_specs(job.opts, paths, job.meta, cache=False),
                           [f"fold {f}" for f in range(job.k)])
    finally:
        if not job.work_dir:
            shutil.rmtree(folder, ignore_errors=True)
    y = np.asarray(d.y)
    oof = np.empty(d.n_rows)
    per_fold = []
    for f, pred in enumerate(preds):
        rows = np.flatnonzero(fold == f)
        oof[rows] = pred
        per_fold.append(dict(fold_metrics(job.opts.task, pred, y[rows]), rows=int(len(rows))))
    summary = summarise(job.opts.task, per_fold)
    for f, m in enumerate(per_fold):
        console.info(f"fold {f}\t" + "\t".join(f"{n}={m[n]:.6g}" for n in metric_names(job.opts.task))
                     + f"\trows={m['rows']}")
    console.info("mean\t" + "\t".join(f"{n}={mu:.6g} ± {sd:.2g}" for n, (mu, sd) in summary.items()))
    write_outputs(job, per_fold, summary, oof)
    return per_fold, summary, oof


def write_outputs(job, per_fold, summary, oof):
    """-out and --summary, published together."""
    from fmcli.io.atomic import atomic_output, publish_together
    from fmcli.io.predictions import format_predictions

    doc = {"k": job.k, "task": job.opts.task, "method": job.opts.method, "folds": per_fold,
           "mean": {n: mu for n, (mu, _) in summary.items()}, "sd": {n: sd for n, (_, sd) in summary.items()}}
    with publish_together():
        if job.summary:
            with atomic_output(job.summary) as f:
                f.write(json.dumps(doc, indent=1) + "\n")
        if job.out:  # last: standard output cannot wait for the others' renames
            with atomic_output(job.out) as f:
                f.write(format_predictions(oof))

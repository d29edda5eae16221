"""A training run: load data, build or load the model, iterate, write outputs.

The CLI turns options into a TrainJob and calls run_train; everything here is
usable from Python too. Outputs (-out, -save_model, -rlog) are written
atomically and only after training succeeded, except -rlog, which is replaced
whole after every iteration so a long run can be watched.
"""

import contextlib
import os
import time
from dataclasses import dataclass

import numpy as np

from fmcli import metrics
from fmcli.console import Console
from fmcli.errors import TrainingError, UsageError
from fmcli.io.atomic import atomic_output, check_writable
from fmcli.learners.base import TrainOptions

METHODS = ("sgd", "sgda", "als", "mcmc")


@dataclass
class TrainJob:
    opts: TrainOptions
    train: str
    test: str = None
    out: str = None
    rlog: str = None
    save_model: str = None
    load_model: str = None
    meta: str = None
    dim_given: bool = True       # False: -dim was left at its default (a loaded model's dim wins)
    log_json: str = None         # one JSON object per iteration
    checkpoint: str = None       # the model so far, saved every `checkpoint_every` iterations
    checkpoint_every: int = 10
    validation: str = None       # rows for SGDA's regularisation and for early stopping
    early_stop: int = 0          # stop after this many iterations without a better validation score
    cache: bool = True           # read and write the binary cache beside text inputs
    relations: tuple = ()        # libFM block-structure relation names (-relation)


def learner_class(method):
    if method == "sgd":
        from fmcli.learners.sgd import SGDLearner

        return SGDLearner
    if method == "sgda":
        from fmcli.learners.sgda import SGDALearner

        return SGDALearner
    if method == "als":
        from fmcli.learners.als import ALSLearner

        return ALSLearner
    if method == "mcmc":
        from fmcli.learners.mcmc import MCMCLearner

        return MCMCLearner
    raise UsageError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")


def feature_id_limit(k):
    """Largest feature id whose model (w, V and the learners' per-feature arrays) fits in memory."""
    from fmcli.config import MAX_FEATURE_ID

    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        memory = 1 << 40
    bytes_per_feature = 8 * (k + 1) * 5 + 32   # parameters, a copy, learner state (Adam: two moments)
    return int(min(MAX_FEATURE_ID, memory // bytes_per_feature))


def _describe(name, d, console):
    finite = d.y[np.isfinite(d.y)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (float("nan"), float("nan"))
    console.info(f"Loading {name}...\tnum_rows={d.n_rows}\tnum_values={d.nnz}\t"
                 f"num_features={d.n_features}\tmin_target={lo:g}\tmax_target={hi:g}")


def load_data(job, k, console):
    """Train and test sets, through the binary cache beside each text file (fmcli/io/cache.py)
    unless the job says `cache = False`; with job.relations, each set carries its relation
    rows (SparseData.relations; R.train, R.test, R.validation)."""
    from fmcli.io.cache import load_dataset

    classes = job.opts.task == "c"
    limit = feature_id_limit(k)
    train = load_dataset(job.train, cache=job.cache, targets="required", classes=classes, max_feature_id=limit)
    _describe("train", train, console)
    evals = {}
    for name, path, targets in (("test", job.test, "optional"), ("validation", job.validation, "required")):
        if path:
            evals[name] = load_dataset(path, cache=job.cache, targets=targets, classes=classes,
                                       max_feature_id=limit)
            _describe(name, evals[name], console)
    if job.relations:
        import dataclasses

        from fmcli.io.relation import load_relations

        n_main = max([train.n_features] + [d.n_features for d in evals.values()])
        sets = {"train": train, **evals}
        rels = load_relations(job.relations, n_main, {name: d.n_rows for name, d in sets.items()},
                              cache=job.cache)
        for rel, _ in rels["train"]:
            console.info(f"Loading relation {rel.name}...\tnum_rows={rel.n_rows}\tnum_values="
                         f"{len(rel.indices)}\tnum_features={rel.n_features}\toffset={rel.offset}")
        if rels["train"] and rels["train"][-1][0].offset + rels["train"][-1][0].n_features - 1 > limit:
            raise UsageError("-relation: the relations' features do not fit in memory")
        train = dataclasses.replace(train, relations=rels["train"])
        evals = {name: dataclasses.replace(d, relations=rels[name]) for name, d in evals.items()}
    return train, evals


def build_model(job, train, evals, console):
    """A fresh model, or the -load_model one (warm start) widened to the data's features."""
    from fmcli.model import FMModel

    opts = job.opts
    n_features = max([train.n_model_features] + [d.n_model_features for d in evals.values()])
    rng = np.random.default_rng(opts.seed % 2**64)  # negative seeds are valid too
    if job.load_model:
        from fmcli.io.modelfile import load_model
        from fmcli.io.relation import relations_meta

        model = load_model(job.load_model, task=opts.task)
        had = [(r["offset"], r["n_features"]) for r in model.meta.get("relations", [])]
        now = [(r["offset"], r["n_features"]) for r in relations_meta(train.relations)]
        if had != now and (had or model.n_features > (now[0][0] if now else n_features)):
            # the relations' features sit after the main ones: the layouts must agree
            raise UsageError(f"{job.load_model}: the model was trained with relation blocks "
                             f"(offset, features) {had or 'none'}, the data give {now or 'none'}")
        dim = (int(model.use_w0), int(model.use_w), model.k)
        if job.dim_given and tuple(opts.dim) != dim:
            raise UsageError(f"-dim {','.join(map(str, opts.dim))} does not match the loaded model's "
                             f"{','.join(map(str, dim))} ({job.load_model})")
        opts.dim = dim
        opts.extra["warm_start"] = True
        model.samples = None  # continue from the last state, not from an average
        model = model.resized(n_features)
        console.info(f"Warm start: continuing from {job.load_model} ({model.n_features} features, dim "
                     f"{','.join(map(str, dim))})")
    else:
        k0, k1, k = opts.dim
        model = FMModel.init(n_features, k, use_w0=bool(k0), use_w=bool(k1),
                             init_stdev=opts.init_stdev, rng=rng)
    model.task = opts.task
    model.y_min, model.y_max = (float(train.y.min()), float(train.y.max())) if opts.task == "r" else (-1.0, 1.0)
    return model, rng


def iteration_line(it, task, train_m, test_m):
    """libFM's per-iteration line, with fmcli's extra classification fields appended."""
    key = "rmse" if task == "r" else "accuracy"
    line = f"#Iter={it:3d}\tTrain={train_m[key]:.6g}"
    if test_m:
        line += f"\tTest={test_m[key]:.6g}"
        if task == "c":
            line += (f"\tTest(ll)={test_m['ll10']:.6g}\tTest(auc)={test_m['auc']:.6g}"
                     f"\tTest(logloss)={test_m['logloss']:.6g}")
    return line


class RunLog:
    """-rlog (a header line and tab-separated rows) and --log-json (one JSON object per line).

    -rlog keeps libFM's columns, in libFM's order (libfm-behaviour: `-rlog`), so scripts
    that read libFM's table by name or position keep working; fmcli's own columns follow:

    - SGD, r: rmse mae time_pred time_learn time_learn2 time_learn4 rmse_train
    - SGD, c: accuracy time_pred time_learn time_learn2 time_learn4 rmse_train
      (as in libFM, rmse_train holds the train accuracy for classification)
    - ALS/MCMC: rmse mae (r) or accuracy (c), time_pred time_learn time_learn2
      time_learn4 alpha, then rmse_mcmc_this rmse_mcmc_all rmse_mcmc_all_but5 (r) or
      acc_mcmc_this acc_mcmc_all acc_mcmc_all_but5 ll_mcmc_this ll_mcmc_all
      ll_mcmc_all_but5 (c), then wmu[g] wlambda[g] and vmu[g,f] vlambda[g,f] per group
    - then fmcli's: mae_train (r) or auc logloss ll auc_train logloss_train (c), and elapsed.

    rmse/mae/accuracy (and the *_mcmc_all columns) are the printed Test values (nan
    without labelled test rows); time_learn is the wall-clock seconds of the iteration's
    learning step; elapsed the seconds since training started. Columns fmcli does not
    measure (time_pred, time_learn2, time_learn4, *_this, *_but5) are nan, as libFM
    writes unset fields. Each file is replaced whole after every iteration, so it can be
    watched during a long run and is never half-written.
    """

    def __init__(self, rlog_path, json_path, task, method):
        self.rlog_path, self.json_path = rlog_path, json_path
        self.task, self.coordinate = task, method in ("als", "mcmc")
        self.header, self.rows, self.records = None, [], []

    def columns(self, train_m, test_m, val_m, t_learn, elapsed, hyper):
        """Ordered name -> value of one -rlog row (libFM's columns first)."""
        nan = float("nan")
        it_task = self.task
        test = test_m or {}
        row = {}
        if it_task == "r":
            row["rmse"], row["mae"] = test.get("rmse", nan), test.get("mae", nan)
        else:
            row["accuracy"] = test.get("accuracy", nan)
        row.update(time_pred=nan, time_learn=t_learn, time_learn2=nan, time_learn4=nan)
        if self.coordinate:
            row["alpha"] = hyper.get("alpha", nan)
            if it_task == "r":
                row.update(rmse_mcmc_this=nan, rmse_mcmc_all=row["rmse"], rmse_mcmc_all_but5=nan)
            else:
                row.update(acc_mcmc_this=nan, acc_mcmc_all=row["accuracy"], acc_mcmc_all_but5=nan,
                           ll_mcmc_this=nan, ll_mcmc_all=test.get("ll10", nan), ll_mcmc_all_but5=nan)
            row.update((k, v) for k, v in hyper.items() if k != "alpha")
        # libFM's SGD table ends with rmse_train; for ALS/MCMC it is one of fmcli's columns
        row["rmse_train"] = train_m["rmse"] if it_task == "r" else train_m["accuracy"]
        if val_m is not None:  # libFM's SGDA column, then its regw/regv (in hyper)
            row["rmse_val"] = val_m["rmse"] if it_task == "r" else val_m["accuracy"]
        if not self.coordinate:
            row.update(hyper)
        if it_task == "r":
            row["mae_train"] = train_m["mae"]
        else:
            row.update(auc=test.get("auc", nan), logloss=test.get("logloss", nan))
            if not self.coordinate:
                row["ll"] = test.get("ll10", nan)
            row.update(auc_train=train_m.get("auc", nan), logloss_train=train_m.get("logloss", nan))
        row["elapsed"] = elapsed
        return row

    def add(self, it, elapsed, train_m, test_m, val_m, t_learn, hyper):
        row = self.columns(train_m, test_m, val_m, t_learn, elapsed, hyper)
        if self.header is None:
            self.header = list(row)
        self.rows.append("\t".join("%.6g" % row.get(h, float("nan")) for h in self.header))
        if self.rlog_path:
            self._replace(self.rlog_path, "\t".join(self.header) + "\n" + "\n".join(self.rows) + "\n")
        if self.json_path:
            import json

            record = {"iteration": it, "elapsed": round(elapsed, 6), "time_learn": round(t_learn, 6),
                      "train": train_m, "test": test_m, "validation": val_m, "hyper": hyper}
            self.records.append(json.dumps(record, default=_json_number))
            self._replace(self.json_path, "\n".join(self.records) + "\n")

    @staticmethod
    def _replace(path, text):
        with atomic_output(path) as f:
            f.write(text)


def _json_number(x):
    return float(x)


def _metrics(task, pred, y):
    m = metrics.evaluate(task, pred, y)
    if task == "c":
        m["ll10"] = metrics.libfm_ll(pred, y)
    return m


@contextlib.contextmanager
def threads(n):
    """Run compiled kernels on n threads (0: all cores); numba's setting is restored after."""
    if not n:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(before)


class EarlyStop:
    """Tracks the validation score; keeps a copy of the best model (for MCMC: its samples so far)."""

    def __init__(self, patience, task, validation):
        self.patience, self.task, self.validation = patience, task, validation
        self.best_score, self.best_it, self.best_model = float("inf"), -1, None

    def update(self, it, learner):
        """Record iteration `it`; returns (validation metrics, True when it is time to stop)."""
        import copy

        m = _metrics(self.task, learner.eval_predictions("validation"), self.validation.y)
        score = m["rmse"] if self.task == "r" else m["logloss"]
        if score < self.best_score:
            self.best_score, self.best_it = score, it
            if self.patience:  # only early stopping needs the copy
                self.best_model = copy.deepcopy(learner.final_model())
        return m, bool(self.patience) and it - self.best_it >= self.patience


def _iterate(job, learner, train, test, test_labeled, rlog, console, stopper):
    """The iterations: step, evaluate, report, log, checkpoint, stop early. Returns the last metrics."""
    opts = job.opts
    start = time.perf_counter()
    train_m = test_m = None
    for it in range(opts.iterations):
        t0 = time.perf_counter()
        learner.step(it)
        t_learn = time.perf_counter() - t0
        train_pred, train_y = learner.train_scores()
        train_m = _metrics(opts.task, train_pred, train_y)
        del train_pred
        test_pred = learner.eval_predictions("test") if test is not None else None
        # a NaN among the train predictions makes RMSE / log-loss NaN (AUC may be NaN anyway)
        if (len(train_y) and not np.isfinite(train_m["rmse" if opts.task == "r" else "logloss"])) \
                or (test_pred is not None and not np.isfinite(test_pred).all()):
            raise TrainingError(f"{opts.method} diverged in iteration {it}: predictions are NaN or inf")
        test_m = _metrics(opts.task, test_pred, test.y) if test_labeled else None
        val_m, stop = stopper.update(it, learner) if stopper else (None, False)
        line = iteration_line(it, opts.task, train_m, test_m)
        console.info(line + (f"\tValidation={val_m['rmse' if opts.task == 'r' else 'accuracy']:.6g}" if val_m else ""))
        rlog.add(it, time.perf_counter() - start, train_m, test_m, val_m, t_learn, learner.log_values())
        if job.checkpoint and ((it + 1) % job.checkpoint_every == 0 or it + 1 == opts.iterations):
            from fmcli.io.modelfile import save_model

            save_model(job.checkpoint, learner.final_model())
        console.advance()
        if stop:
            console.info(f"Early stop: no better validation score for {stopper.patience} iterations; "
                         f"keeping the model of iteration {stopper.best_it}")
            break
    return train_m, test_m


def run_train(job, console=None):
    """Train as the job says; returns (model, test predictions or None)."""
    with threads(job.opts.threads):
        return _run_train(job, console or Console())


def _run_train(job, console):
    opts = job.opts
    for path, what in ((job.out, "-out"), (job.save_model, "-save_model"), (job.rlog, "-rlog"),
                       (job.log_json, "--log-json"), (job.checkpoint, "--checkpoint")):
        check_writable(path, what)
    for path, what in ((job.save_model, "-save_model"), (job.rlog, "-rlog"), (job.log_json, "--log-json"),
                       (job.checkpoint, "--checkpoint")):
        if path == "-":
            raise UsageError(f"{what} needs a file name, not - (stdout carries only predictions)")
    if job.out and not job.test:
        raise UsageError("-out needs -test (the rows to predict)")
    if job.early_stop and not job.validation:
        raise UsageError("--early-stop needs -validation (the rows that decide when to stop)")
    if opts.method == "sgda" and not job.validation:
        raise UsageError("-method sgda needs -validation (the rows that adapt the regularisation)")
    if job.relations and opts.method in ("sgd", "sgda"):
        raise UsageError(f"relations are not supported with {opts.method.upper()} "
                         "(use -method als or mcmc, or write the relation's features into the rows)")
    cls = learner_class(opts.method)
    # MCMC's samples are kept only for a model that will be written (they cost 4 n (k+1) bytes each)
    opts.save_samples = bool(job.save_model or job.checkpoint or job.early_stop)
    train, evals = load_data(job, opts.dim[2], console)
    if job.meta:
        from fmcli.io.meta import read_meta

        # the main features only: relation features take their groups from R.groups
        opts.groups = read_meta(job.meta, max([train.n_features] + [d.n_features for d in evals.values()]))
    model, rng = build_model(job, train, evals, console)
    model.meta = {"method": opts.method, "options": opts.as_meta()}
    if train.relations:
        from fmcli.io.relation import relations_meta

        model.meta["relations"] = relations_meta(train.relations)
    console.detail(f"num_attributes={model.n_features}\tuse w0={model.use_w0}\tuse w={model.use_w}\t"
                   f"dim v={model.k}\treg={','.join('%g' % r for r in opts.regular)}\t"
                   f"init ~ N(0,{opts.init_stdev:g})\tmethod={opts.method}\tseed={opts.seed}")
    learner = cls(model, train, evals, opts, rng)
    test = evals.get("test")
    test_labeled = test is not None and test.n_rows > 0 and np.isfinite(test.y).all()
    rlog = RunLog(job.rlog, job.log_json, opts.task, opts.method)
    console.progress(opts.iterations, f"{opts.method}")
    stopper = EarlyStop(job.early_stop, opts.task, evals["validation"]) if "validation" in evals else None
    try:
        train_m, test_m = _iterate(job, learner, train, test, test_labeled, rlog, console, stopper)
    finally:
        console.close()
    if opts.method in ("sgd", "sgda") and train_m is not None:  # libFM's closing line for SGD
        key = "rmse" if opts.task == "r" else "accuracy"
        console.info(f"Final\tTrain={train_m[key]:.6g}" + (f"\tTest={test_m[key]:.6g}" if test_m else ""))
    rejected = getattr(learner, "rejected_draws", dict)()
    if any(rejected.values()):
        console.warn("non-finite draws rejected (old value kept): "
                     + ", ".join(f"{k}={v}" for k, v in rejected.items() if v))
    final = learner.final_model()
    test_pred = None
    if stopper and stopper.best_model is not None:
        final = stopper.best_model
        test_pred = final.predict(*test.csr(), relations=test.relations) if test is not None else None
    elif test is not None:
        test_pred = learner.eval_predictions("test") if opts.iterations \
            else final.predict(*test.csr(), relations=test.relations)
    if job.out:
        from fmcli.io.predictions import write_predictions

        write_predictions(job.out, test_pred)
        what = "values clipped to the train target range" if opts.task == "r" else "probabilities of class +1"
        console.info(f"Wrote {len(test_pred)} predictions ({what}) to {'stdout' if job.out == '-' else job.out}")
    if job.save_model:
        from fmcli.io.modelfile import save_model

        save_model(job.save_model, final)
        size = os.path.getsize(job.save_model) / 1e6
        kept = f", {len(final.samples[0])} MCMC samples" if final.samples is not None else ""
        console.info(f"Writing FM model to {job.save_model} ({size:.1f} MB{kept})")
    return final, test_pred

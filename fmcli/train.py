"""A training run: resolve the options (fmcli.plan), load data, build or load the model,
iterate, write outputs.

The CLI turns options into a TrainJob and calls run_train; everything here is usable from
Python too. Outputs (-out, -save_model, the final -rlog and --log-json) are published
together, only after training succeeded and every output is complete; -rlog, --log-json and
--checkpoint are also replaced whole after every iteration so a long run can be watched.
"""

import contextlib
import dataclasses
import time

import numpy as np

from fmcli import metrics
from fmcli.console import Console
from fmcli.errors import Interrupted, Terminated, TrainingError, UsageError
from fmcli.config import ThreadChoice, threads
from fmcli.plan import main_groups, resolve
from fmcli.io.runlog import RunLog, iteration_line
from fmcli.learners import warmup


def learner_class(method, higher_orders=False):
    """The learner of `method`; higher_orders: the model has orders 3 and up (fmcli.anova)."""
    if higher_orders:
        if method == "sgd":
            from fmcli.learners.anova_sgd import HigherOrderSGDLearner

            return HigherOrderSGDLearner
        from fmcli.learners.anova_sweep import HigherOrderALSLearner, HigherOrderMCMCLearner

        return HigherOrderALSLearner if method == "als" else HigherOrderMCMCLearner
    if method == "sgd":
        from fmcli.learners.sgd import SGDLearner

        return SGDLearner
    if method == "sgda":
        from fmcli.learners.sgda import SGDALearner

        return SGDALearner
    if method == "bpr":
        from fmcli.learners.bpr import BPRLearner

        return BPRLearner
    if method == "als":
        from fmcli.learners.als import ALSLearner

        return ALSLearner
    from fmcli.learners.mcmc import MCMCLearner

    return MCMCLearner


def _describe(name, d, console):
    finite = d.y[np.isfinite(d.y)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (float("nan"), float("nan"))
    console.info(f"Loading {name}...\tnum_rows={d.n_rows}\tnum_values={d.nnz}\t"
                 f"num_features={d.n_features}\tmin_target={lo:g}\tmax_target={hi:g}")


def load_data(plan, console):
    """Train and test sets, through the binary cache beside each text file (fmcli/io/load.py)
    unless the job says `cache = False`; with job.relations, each set carries its relation
    rows (SparseData.relations; R.train, R.test, R.validation)."""
    from fmcli.io.load import load_dataset

    job = plan.job
    classes = plan.opts.task == "c"
    limit = plan.feature_limit
    train = load_dataset(job.train, cache=job.cache, targets="required", classes=classes, max_feature_id=limit,
                         note=console.warn)
    _describe("train", train, console)
    if plan.opts.task == "o":
        from fmcli.plan import check_ordinal_targets

        check_ordinal_targets(train.y)
    evals = {}
    for name, path, targets in (("test", job.test, "optional"), ("validation", job.validation, "required")):
        if path:
            evals[name] = load_dataset(path, cache=job.cache, targets=targets, classes=classes,
                                       max_feature_id=limit, note=console.warn)
            _describe(name, evals[name], console)
    if job.weights:
        from fmcli.io.weights import read_weights

        train = dataclasses.replace(train, weights=read_weights(job.weights, train.n_rows))
    if job.relations:
        from fmcli.io.relation import load_relations

        n_main = max([train.n_features, mapped_features(plan.opts)] + [d.n_features for d in evals.values()])
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


def mapped_features(opts):
    """The features of -method bpr's --mapping (every item side needs its parameters), else 0."""
    if opts.mapping is None:
        return 0
    from fmcli.convert.mapping import read_mapping_json

    n = read_mapping_json(opts.mapping).get("n_features")
    return n if isinstance(n, int) and n >= 0 else 0


def check_warm_start(plan, train, evals, console):
    """A loaded model's relation layout must be the data's: the relations' features sit after
    the main ones; a -task o model's classes must be the train rows' (its cutpoints go on)."""
    from fmcli.io.relation import relations_meta

    model, job = plan.loaded, plan.job
    if plan.opts.task == "o":
        had, now = model.meta["ordinal"]["classes"], np.unique(train.y).tolist()
        if had != now:
            raise UsageError(f"{job.load_model}: the model's classes are {','.join(f'{c:g}' for c in had)}, "
                             f"the train rows' {','.join(f'{c:g}' for c in now)}: a warm start continues "
                             "the cutpoints between the same classes")
    n_features = max([train.n_model_features] + [d.n_model_features for d in evals.values()])
    had = [(r["offset"], r["n_features"]) for r in model.meta.get("relations", [])]
    now = [(r["offset"], r["n_features"]) for r in relations_meta(train.relations)]
    if had != now and (had or model.n_features > (now[0][0] if now else n_features)):
        raise UsageError(f"{job.load_model}: the model was trained with relations "
                         f"(offset, features) {had or 'none'}, the data give {now or 'none'}")
    console.info(f"Warm start: continuing from {job.load_model} ({max(model.n_features, n_features)} "
                 f"features, dim {','.join(map(str, plan.opts.dim))})")


def check_loaded_predictions(path, model, data_sets):
    """A warm start's model must predict finite values for every row it is given: a model
    whose parameters overflow (a value of 1e200 squares to inf) is bad input, named here
    before any iteration (with -iter 0 it would be all that is written)."""
    for name, d in data_sets.items():
        if not np.isfinite(model.predict_raw(*d.csr(), relations=d.relations)).all():
            largest = max(abs(model.w0), np.abs(model.w).max(initial=0), np.abs(model.V).max(initial=0))
            raise UsageError(f"{path}: the model gives NaN or inf predictions for the {name} rows "
                             f"(parameters up to {largest:.3g})")


def build_learner(opts, train, evals, main_groups=None, model=None):
    """The learner of a run on loaded data: a fresh model sized for every feature of train and
    evals (libFM's initialisation, from the run's generator seeded by opts.seed) or `model`
    widened to them (a warm start), settled for the run (settle_model), with the groups of
    fmcli.plan.model_groups (main_groups: -meta's)."""
    from fmcli.model import FMModel
    from fmcli.plan import check_regular_count, model_groups

    n_features = max([train.n_model_features, mapped_features(opts)] + [d.n_model_features for d in evals.values()])
    rng = np.random.default_rng(opts.seed % 2**64)  # negative seeds are valid too
    if model is None:
        k0, k1, k = opts.dim[:3]
        model = FMModel.init(n_features, k, use_w0=bool(k0), use_w=bool(k1), init_stdev=opts.init_stdev, rng=rng,
                             orders=tuple((t, kt) for t, kt in enumerate(opts.dim[3:], start=3)))
    else:
        model = model.resized(n_features)
    settle_model(model, opts, train)
    groups = model_groups(main_groups, train, model.n_features)
    check_regular_count(opts, groups)
    return learner_class(opts.method, bool(model.orders))(model, train, evals, groups, opts, rng)


def settle_model(model, opts, train):
    """The model as this run trains it: float64 parameters, the task, the link (identity for
    regression, logistic for SGD's and probit for ALS/MCMC classification), the target range
    (for the clipping of regression predictions) and the metadata model files record."""
    model.w0 = float(model.w0)
    model.w = np.ascontiguousarray(model.w, np.float64)
    model.V = np.ascontiguousarray(model.V, np.float64)
    model.H = np.ascontiguousarray(model.H, np.float64)
    model.task = opts.task
    if opts.task in ("r", "o"):
        # -task o: probit over ordered classes (fmcli.ordinal); the range is the classes'
        model.link = "identity" if opts.task == "r" else "probit"
        model.y_min, model.y_max = float(train.y.min()), float(train.y.max())
    else:
        model.link = "logistic" if opts.method in ("sgd", "sgda") else "probit"
        model.y_min, model.y_max = -1.0, 1.0
    # a warm start of -task o starts from the loaded cutpoints (fmcli.learners.mcmc)
    ordinal = {key: model.meta["ordinal"][key] for key in ("classes", "cutpoints")} \
        if opts.task == "o" and "ordinal" in model.meta else None
    model.meta = {"method": opts.method, "options": opts.as_meta()}
    if ordinal:
        model.meta["ordinal"] = ordinal
    if train.relations:
        from fmcli.io.relation import relations_meta

        model.meta["relations"] = relations_meta(train.relations)


def _metrics(task, pred, y):
    m = metrics.evaluate(task, pred, y)
    if task == "c":
        m["ll10"] = metrics.libfm_ll(pred, y)
    return m


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


class RankingStop(EarlyStop):
    """EarlyStop on a ranking metric of -validation (ranking learners: learner.ranking_metrics)."""

    def __init__(self, patience, metric):
        from fmcli.plan import ranking_metric

        super().__init__(patience, "r", None)
        self.name, self.k = ranking_metric(metric)
        self.label = "auc" if self.name == "auc" else f"{self.name}@{self.k}"

    def update(self, it, learner):
        import copy

        value = learner.ranking_metrics(self.k)[self.name]
        if -value < self.best_score:
            self.best_score, self.best_it = -value, it
            if self.patience:
                self.best_model = copy.deepcopy(learner.final_model())
        return {self.label: value}, bool(self.patience) and it - self.best_it >= self.patience


def _ranking_iteration(number, it, learner, stopper):
    """A ranking learner's iteration report: (train metrics, validation metrics, stop, line)."""
    nan = float("nan")
    val_m, stop = stopper.update(it, learner) if stopper else (None, False)
    line = f"#Iter={number:3d}\tTrain(loss)={learner.loss:.6g}"
    if val_m:
        line += "".join(f"\tValidation({k})={v:.6g}" for k, v in val_m.items())
    return {"rmse": nan, "mae": nan, "loss": learner.loss}, val_m, stop, line


@dataclasses.dataclass
class Progress:
    """How far the iterations got: what an interrupted run reports as kept."""
    done: int = 0                 # iterations completed (and logged)
    checkpointed: int = None      # the iteration number the --checkpoint file holds


def _iterate(plan, learner, test, test_labeled, rlog, console, stopper, progress, choice=None):
    """The iterations: step, evaluate, report, log, checkpoint, stop early. Returns the last metrics.
    choice: a config.ThreadChoice (small train sets): each step with its train and test
    predictions runs on the thread count it gives (the same results on any)."""
    opts, job = plan.opts, plan.job
    start = time.perf_counter()
    train_m = test_m = None
    for it in range(opts.iterations):
        number = plan.first_iteration + it  # as printed and logged
        # the thread choice times the step with its train and test predictions (in _report)
        with choice.step() if choice else contextlib.nullcontext():
            t0 = time.perf_counter()
            learner.step(it)
            t_learn = time.perf_counter() - t0
            if getattr(learner, "ranking", False):
                train_m, val_m, stop, line = _ranking_iteration(number, it, learner, stopper)
                console.info(line)
                rlog.add(number, time.perf_counter() - start, train_m, None, None, t_learn,
                         {**learner.log_values(), **(val_m or {})})
            else:
                train_m, test_m, stop = _report(plan, it, number, learner, test, test_labeled, stopper, console,
                                                rlog, start, t_learn)
        progress.done = it + 1
        if job.checkpoint and ((it + 1) % job.checkpoint_every == 0 or it + 1 == opts.iterations):
            from fmcli.io.modelfile import save_model

            save_model(job.checkpoint, _numbered(learner.final_model(), plan, it + 1))
            progress.checkpointed = number
        console.advance()
        if stop:
            console.info(f"Early stop: no better validation score for {stopper.patience} iterations; "
                         f"keeping the model of iteration {plan.first_iteration + stopper.best_it}")
            break
    return train_m, test_m


def _report(plan, it, number, learner, test, test_labeled, stopper, console, rlog, start, t_learn):
    """An iteration's train, test and validation metrics, its line and -rlog row; (train metrics,
    test metrics, stop)."""
    opts = plan.opts
    train_pred, train_y = learner.train_scores()
    train_m = _metrics(opts.task, train_pred, train_y)
    del train_pred
    test_pred = learner.eval_predictions("test") if test is not None else None
    # a NaN among the train predictions makes RMSE / log-loss NaN (AUC may be NaN anyway)
    if (len(train_y) and not np.isfinite(train_m["rmse" if opts.task == "r" else "logloss"])) \
            or (test_pred is not None and not np.isfinite(test_pred).all()):
        raise TrainingError(f"{opts.method} diverged in iteration {number}: predictions are NaN or inf")
    test_m = _metrics(opts.task, test_pred, test.y) if test_labeled else None
    val_m, stop = stopper.update(it, learner) if stopper else (None, False)
    line = iteration_line(number, opts.task, train_m, test_m)
    console.info(line + (f"\tValidation={val_m['rmse' if opts.task == 'r' else 'accuracy']:.6g}" if val_m else ""))
    rlog.add(number, time.perf_counter() - start, train_m, test_m, val_m, t_learn, learner.log_values())
    return train_m, test_m, stop


def _numbered(model, plan, done):
    """The model, recording how many iterations it has had (a warm start from it numbers on)."""
    model.meta["iterations_done"] = plan.first_iteration + done
    return model


def _interrupted(stop, plan, progress):
    """What an interrupted run says: where it stopped and which outputs hold what."""
    job = plan.job
    kept = [f"{what} {path} holds the {progress.done} iterations done"
            for path, what in ((job.rlog, "-rlog"), (job.log_json, "--log-json")) if path and progress.done]
    if progress.checkpointed is not None:
        kept.append(f"--checkpoint {job.checkpoint} holds the model of iteration {progress.checkpointed}")
    lost = [what for path, what in ((job.out, "-out"), (job.save_model, "-save_model")) if path]
    signal = "interrupted" if isinstance(stop, KeyboardInterrupt) else "terminated"
    message = f"{signal} after {progress.done} of {plan.opts.iterations} iterations"
    if lost:
        message += f"; {' and '.join(lost)} not written"
    if kept:
        message += "; " + "; ".join(kept)
    return Interrupted(message, 130 if isinstance(stop, KeyboardInterrupt) else 143)


def check_files_distinct(job):
    """No output of the job may be one of its inputs or another of its outputs (checked before
    anything is read, fmcli.io.atomic.check_distinct)."""
    from fmcli.io.atomic import check_distinct
    from fmcli.predict import relation_inputs

    parts = ("train",) + (("test",) if job.test else ()) + (("validation",) if job.validation else ())
    check_distinct([("-train", job.train), ("-test", job.test), ("-validation", job.validation),
                    ("-load_model", job.load_model), ("-meta", job.meta),
                    ("-weights", job.weights)] + relation_inputs(job.relations, parts),
                   [("-out", job.out), ("--out-proba", job.out_proba), ("-save_model", job.save_model), ("-rlog", job.rlog),
                    ("--log-json", job.log_json), ("--checkpoint", job.checkpoint)])


def run_train(job, console=None):
    """Train as the job says; returns (model, test predictions or None)."""
    check_files_distinct(job)
    plan = resolve(job)
    with threads(plan.opts.threads):
        return _run_train(plan, console or Console())


def _run_train(plan, console):
    opts, job = plan.opts, plan.job
    # a first ALS/MCMC run: the step's kernels compile in a second process while the data are read
    with warmup.start(plan) as warm:
        train, evals = load_data(plan, console)
        if plan.loaded is not None:
            check_warm_start(plan, train, evals, console)
        learner = build_learner(opts, train, evals, main_groups(plan, train, evals), plan.loaded)
        if warm.running:
            # time to spare: the kernels of the train metrics each iteration prints compile now
            # (-task o's take seconds), on the train rows as they start
            _metrics(opts.task, *learner.train_scores())
        warm.wait()
    model = learner.model
    for note in getattr(learner, "notes", ()):
        console.info(f"Note: {note}")
    if plan.loaded is not None:
        check_loaded_predictions(job.load_model, model, {"train": train, **evals})
    console.detail(f"num_attributes={model.n_features}\tuse w0={model.use_w0}\tuse w={model.use_w}\t"
                   f"dim v={model.k}\treg={','.join('%g' % r for r in opts.regular)}\t"
                   f"init ~ N(0,{opts.init_stdev:g})\tmethod={opts.method}\tseed={opts.seed}")
    test = evals.get("test")
    test_labeled = test is not None and test.n_rows > 0 and np.isfinite(test.y).all()
    rlog = RunLog(job.rlog, job.log_json, opts.task, opts.method)
    console.progress(opts.iterations, f"{opts.method}")
    if opts.method == "bpr":
        stopper = RankingStop(job.early_stop, job.early_stop_metric or "ndcg@10") if "validation" in evals else None
    else:
        stopper = EarlyStop(job.early_stop, opts.task, evals["validation"]) if "validation" in evals else None
    progress = Progress()
    choice = ThreadChoice.for_run(train.nnz + sum(len(rel.indices) for rel, _ in train.relations), opts.threads)
    try:
        train_m, test_m = _iterate(plan, learner, test, test_labeled, rlog, console, stopper, progress, choice)
    except (KeyboardInterrupt, Terminated) as stop:
        raise _interrupted(stop, plan, progress) from None
    finally:
        console.close()
    if opts.method in ("sgd", "sgda") and train_m is not None:  # libFM's closing line for SGD
        key = "rmse" if opts.task == "r" else "accuracy"
        console.info(f"Final\tTrain={train_m[key]:.6g}" + (f"\tTest={test_m[key]:.6g}" if test_m else ""))
    rejected = learner.rejected_draws()
    if any(rejected.values()):
        console.warn("non-finite draws rejected (old value kept): "
                     + ", ".join(f"{k}={v}" for k, v in rejected.items() if v))
    final, done = learner.final_model(), progress.done
    stopped = stopper is not None and stopper.best_model is not None
    if stopped:
        final, done = stopper.best_model, stopper.best_it + 1
    test_pred = None
    if test is not None:
        if opts.iterations and final.samples is None and not stopped:
            test_pred = learner.eval_predictions("test")
        else:
            # from the model as saved (MCMC: its float32 samples): fmcli predict writes the same text
            from fmcli.scoring import model_predictions

            test_pred = model_predictions(final, *test.csr(), relations=test.relations)
    if test_pred is not None and not np.isfinite(test_pred.proba if opts.task == "o" else test_pred).all():
        raise TrainingError(f"{opts.method} diverged: the -test predictions are NaN or inf; try a "
                            f"smaller -init_stdev or -learn_rate, or a larger -regular")
    size = _publish(job, _numbered(final, plan, done), test_pred, rlog, "validation" in evals, learner.log_values())
    if job.out:
        what = "ranking scores" if opts.method == "bpr" else \
            ("most probable classes" if job.out_class else "expected values") if opts.task == "o" else \
            "values clipped to the train target range" if opts.task == "r" else "probabilities of class +1"
        console.info(f"Wrote {len(test_pred)} predictions ({what}) to {'stdout' if job.out == '-' else job.out}")
    if job.save_model:
        kept = f", {len(final.samples[0])} MCMC samples" if final.samples is not None else ""
        console.info(f"Writing FM model to {job.save_model} ({size / 1e6:.1f} MB{kept})")
    return final, test_pred


def _publish(job, final, test_pred, rlog, validation, hyper):
    """Every output of the run, or none (fmcli.io.atomic.publish_together): the model, the
    final -rlog and --log-json, then the predictions (last, as standard output cannot wait for
    the others' renames); a failure or signal on the way leaves every destination as it was.
    Returns the model file's size (0 without one)."""
    from fmcli.io.atomic import publish_together
    from fmcli.io.modelfile import save_model
    from fmcli.io.predictions import write_predictions

    size = 0
    with publish_together():
        if job.save_model:
            size = save_model(job.save_model, final)
        rlog.publish(validation, hyper)
        if job.out_proba:
            from fmcli.io.atomic import atomic_output
            from fmcli.ordinal import format_probabilities

            with atomic_output(job.out_proba) as f:
                f.write(format_probabilities(test_pred.proba))
        if job.out:
            if job.opts.task == "o":
                from fmcli.ordinal import output_values

                write_predictions(job.out, output_values(test_pred, job.out_class))
            else:
                write_predictions(job.out, test_pred)
    return size

"""A training run resolved before any data is read: every rule on the options checked once,
here, and the options settled into one frozen TrainOptions (fmcli.learners.base).

    plan = resolve(job)                  options, outputs, the loaded model (warm start)
    train, evals = load_data(plan)       (fmcli.train)
    main_groups(plan, train, evals)      -meta's groups; model_groups adds the relations' and
                                         check_regular_count checks -regular against them

What a run settles before reading data: the loaded model's dimensions (when -dim is not
given), hence the largest feature id that fits in memory; whether MCMC keeps its samples
(only for a model that will be written); warm start; -regular expanded to three values.
Learners trust the result (fmcli.learners.base).
"""

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from fmcli.errors import UsageError
from fmcli.io.atomic import check_writable
from fmcli.learners.base import TrainOptions

METHODS = ("sgd", "sgda", "als", "mcmc", "bpr")
# Initial factors of this size already give predictions of ~1e12 per pair of entries; beyond
# it they overflow (1e200 squares to inf): libFM's default is 0.1
MAX_INIT_STDEV = 1e6


@dataclass(frozen=True)
class TrainJob:
    """What was asked for: the options as given and the files (the CLI fills it)."""
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
    early_stop_metric: str = None  # BPR: the ranking metric of -validation that decides (default ndcg@10)
    cache: bool | str = True     # read and write the binary cache beside text inputs; "verify": and check the whole text
    relations: tuple = ()        # relation names (-relation: libFM's block structure)
    weights: str = None          # -weights: one weight per train row
    out_proba: str = None        # -task o: the -test rows' class probabilities, one row a line
    out_class: bool = False      # -task o: -out writes the most probable class, not the expected value


@dataclass(frozen=True)
class TrainPlan:
    """A job with its options settled: `opts` is what the learner gets."""
    job: TrainJob
    opts: TrainOptions
    loaded: object = None        # the -load_model FMModel (warm start), or None
    feature_limit: int = 0       # largest feature id whose model fits in memory
    first_iteration: int = 0     # a warm start numbers its iterations on from the loaded model's


def feature_id_limit(k):
    """Largest feature id whose model (w, V and the learners' per-feature arrays) fits in memory."""
    from fmcli.config import MAX_FEATURE_ID

    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        memory = 1 << 40
    bytes_per_feature = 8 * (k + 1) * 5 + 32   # parameters, a copy, learner state (Adam: two moments)
    return int(min(MAX_FEATURE_ID, memory // bytes_per_feature))


def _check_outputs(job):
    for path, what in ((job.out, "-out"), (job.out_proba, "--out-proba"), (job.save_model, "-save_model"), (job.rlog, "-rlog"),
                       (job.log_json, "--log-json"), (job.checkpoint, "--checkpoint")):
        check_writable(path, what)
        if path == "-" and what != "-out":
            raise UsageError(f"{what} needs a file name, not - (stdout carries only predictions)")


def _check_options(job):
    opts = job.opts
    if opts.method not in METHODS:
        raise UsageError(f"unknown method {opts.method!r} (expected one of {', '.join(METHODS)})")
    stdin = [what for path, what in ((job.train, "-train"), (job.test, "-test"), (job.validation, "-validation"),
                                      (job.meta, "-meta"), (job.load_model, "-load_model")) if path == "-"]
    if len(stdin) > 1:
        raise UsageError(f"{' and '.join(stdin)} are both '-': only one input can be standard input")
    if job.out and not job.test:
        raise UsageError("-out needs -test (the rows to predict)")
    if job.early_stop and not job.validation:
        raise UsageError("--early-stop needs -validation (the rows that decide when to stop)")
    if opts.method == "sgda" and not job.validation:
        raise UsageError("-method sgda needs -validation (the rows that adapt the regularisation)")
    if job.relations and opts.method in ("sgd", "sgda"):
        raise UsageError(f"relations are not supported with {opts.method.upper()} "
                         "(use -method als or mcmc, or write the relation's features into the rows)")
    _check_ordinal(job)
    if job.weights == "-":
        raise UsageError("-weights needs a file name, not -")
    if not 0 <= opts.init_stdev <= MAX_INIT_STDEV:
        raise UsageError(f"-init_stdev {opts.init_stdev:g} is out of range: 0 to {MAX_INIT_STDEV:g} "
                         "(libFM's default is 0.1)")
    if opts.optimizer != "sgd" and opts.method not in ("sgd", "bpr"):
        raise UsageError(f"--optimizer {opts.optimizer} applies to -method sgd and bpr only")
    _check_ranking(job)
    _check_dim(opts.dim, job)
    n = len(opts.regular)
    if n not in (1, 3) and (n < 3 or n % 2 == 0 or opts.method != "als" or job.meta is None):
        raise UsageError("-regular takes 1 or 3 values, or with -method als and -meta "
                         "1 + 2G values (r0, one per group for w, one per group for V)")


def _check_ordinal(job):
    """-task o (ordered probit) and the outputs only it has."""
    opts = job.opts
    if opts.task != "o":
        given = [name for name, on in (("--out-proba", job.out_proba), ("--out-class", job.out_class)) if on]
        if given:
            raise UsageError(f"{' and '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to -task o only")
        return
    if opts.method != "mcmc":
        raise UsageError(f"-task o (ordered classes) needs -method mcmc: the ordered probit is sampled "
                         f"(its cutpoints by Metropolis-Hastings); -method {opts.method} has no such step")
    if (job.out_proba or job.out_class) and not job.test:
        raise UsageError("--out-proba and --out-class need -test (the rows to predict)")


def check_ordinal_targets(y):
    """-task o: the train targets are integer classes, at least two distinct ones."""
    y = np.asarray(y)
    bad = ~(np.isfinite(y) & (y == np.round(y)))
    if bad.any():
        i = int(np.argmax(bad))
        raise UsageError(f"-task o: the train targets must be integer classes; train row {i + 1} has "
                         f"target {float(y[i]):g}")
    if len(np.unique(y)) < 2:
        raise UsageError("-task o: the train targets have fewer than two distinct classes")


def _check_ranking(job):
    """-method bpr's options, and the options that only it takes."""
    opts = job.opts
    if opts.method != "bpr":
        given = [name for name, on in (("--mapping", opts.mapping is not None), ("--sampling", opts.sampling != "uniform"),
                                       ("--negatives", opts.negatives != 1), ("--max-sampled", opts.max_sampled != 100),
                                       ("--early-stop-metric", job.early_stop_metric is not None)) if on]
        if given:
            raise UsageError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to -method bpr only")
        return
    if opts.mapping is None:
        raise UsageError("-method bpr needs --mapping FILE (the fmcli convert --mapping with --user and --item "
                         "of the train rows): it says which features are the item side, to draw negatives")
    if opts.task != "r":
        raise UsageError("-method bpr ranks (its predictions are scores): give -task r")
    if opts.sampling == "warp" and opts.negatives != 1:
        raise UsageError("--negatives applies to --sampling uniform (WARP draws until a negative violates)")
    if job.early_stop_metric is not None:
        ranking_metric(job.early_stop_metric)
        if not job.validation:
            raise UsageError("--early-stop-metric needs -validation (the held-out positives it ranks)")


def ranking_metric(text):
    """'ndcg@10' -> ('ndcg', 10); 'auc' -> ('auc', 10): fmcli recommend --evaluate's metrics."""
    from fmcli.ranking import TOPK_METRICS   # numba: only when a ranking metric is asked for

    name, _, k = text.lower().partition("@")
    if name == "auc" and not k:
        return "auc", 10
    if name not in TOPK_METRICS or not k.isdigit() or int(k) < 1:
        raise UsageError(f"--early-stop-metric {text!r}: expected NAME@K with NAME one of "
                         f"{', '.join(TOPK_METRICS)} (e.g. ndcg@10), or auc")
    return name, int(k)


def _check_dim(dim, job):
    """Orders 3 and up (-dim k0,k1,k2,k3,...): every order up to the highest has factors, at
    most MAX_ORDER, and only where the learners have them."""
    from fmcli.config import MAX_ORDER

    if len(dim) <= 3:
        return
    text = ",".join(map(str, dim))
    if len(dim) - 1 > MAX_ORDER:
        raise UsageError(f"-dim {text}: order {len(dim) - 1} is beyond the largest supported "
                         f"order {MAX_ORDER} (at most {MAX_ORDER + 1} values)")
    for t, k in enumerate(dim[2:], start=2):
        if k == 0:
            raise UsageError(f"-dim {text}: order {t} has no factors (k{t} = 0); every order up to "
                             f"the highest needs k >= 1 (leave higher orders out instead)")
    if job.relations:
        raise UsageError(f"-dim {text}: -relation supports interaction orders up to 2 only "
                         "(use -dim with three values, or write the relation's features into the rows)")
    if job.opts.method in ("sgda", "bpr"):
        raise UsageError(f"-dim {text}: -method {job.opts.method} supports interaction orders up to 2 only")
    if job.opts.optimizer != "sgd":
        raise UsageError(f"-dim {text}: --optimizer {job.opts.optimizer} supports interaction orders "
                         "up to 2 only (use --optimizer sgd)")


def _load_model(job):
    """The -load_model model and its dim, checked against -dim when that was given."""
    from fmcli.io.modelfile import load_model

    model = load_model(job.load_model, task=job.opts.task)
    dim = model.dim
    if job.dim_given and tuple(job.opts.dim) != dim:
        raise UsageError(f"-dim {','.join(map(str, job.opts.dim))} does not match the loaded model's "
                         f"{','.join(map(str, dim))} ({job.load_model})")
    model.samples = model.samples_H = None  # continue from the last state, not from an average
    # checked by the model file's schema; absent from libFM's and older fmcli files
    return model, dim, model.meta.get("iterations_done", 0)


def resolve(job):
    """The TrainPlan of `job`: every check that needs no data, and the settled options."""
    _check_outputs(job)
    _check_options(job)
    opts = job.opts
    loaded, dim, first = None, tuple(opts.dim), 0
    if job.load_model:
        loaded, dim, first = _load_model(job)
        _check_dim(dim, job)
    regular = tuple(opts.regular) * 3 if len(opts.regular) == 1 else tuple(opts.regular)
    settled = dataclasses.replace(
        opts, dim=dim, regular=regular, warm_start=loaded is not None,
        # MCMC's samples are kept only for a model that will be written (4 n (k+1) bytes each)
        save_samples=bool(job.save_model or job.checkpoint or job.early_stop))
    return TrainPlan(job, settled, loaded, feature_id_limit(sum(dim[2:])), first)


def model_groups(main_groups, train, n):
    """The group id of each of the n model features (int64): `main_groups` for the main
    features (-meta; None: one group), then each relation's own groups (data.feature_groups)."""
    from fmcli.data import feature_groups

    rels = [r for r, _ in train.relations]
    if main_groups is None and not rels:
        return np.zeros(n, np.int64)
    groups = feature_groups(main_groups, min([r.offset for r in rels] + [n]), rels, n)
    if len(groups) < n:
        raise UsageError(f"-meta gives {len(groups)} group ids but the data have {n} features")
    return np.ascontiguousarray(groups[:n], np.int64)


def main_groups(plan, train, evals):
    """-meta's groups of the main features (None without -meta): read for the main features
    only, relation features take theirs from R.groups."""
    if not plan.job.meta:
        return None
    from fmcli.io.meta import read_meta

    return read_meta(plan.job.meta, max([train.n_features] + [d.n_features for d in evals.values()]))


def check_regular_count(opts, groups):
    """ALS's per-group -regular form has 1 + 2G values for the G groups the features have."""
    G = int(groups.max()) + 1 if len(groups) else 1
    r = opts.regular
    if opts.method == "als" and len(r) not in (3, 1 + 2 * G):
        raise UsageError(f"-regular: ALS takes 1, 3 or 1+2G = {1 + 2 * G} values "
                         f"(G = {G} groups), got {len(r)}")

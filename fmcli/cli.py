"""The command line: parse, call the library, report.

Imports only click at module level so that `fmcli --help` starts fast and
never loads numba; each command imports the library in its body.
Every option has libFM's single-dash spelling and a GNU `--long` one.
"""

import os
import signal

# SIGTERM before main() takes over (while the modules load) ends the run at once: nothing has
# been written yet; main() replaces this with the handler that stops training cleanly
signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(143))

import difflib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

import click

from fmcli import __version__
from fmcli.errors import FmcliError, Terminated, UsageError
from fmcli.options import parse_dim, parse_floats, split_names

EXIT_CODES = """\b
Exit codes:
  0    success
  1    failure while running (e.g. training diverged, a write failed)
  2    usage error or bad input (options, data file, model file)
  130  interrupted (SIGINT);  143  terminated (SIGTERM);  141  broken pipe
No output file is left half-written: outputs appear whole or not at all."""

CONTEXT = {"help_option_names": ["-h", "--help", "-help"], "max_content_width": 100}


def _on_sigterm(signum, frame):
    raise Terminated()


def opt(short, *decls, **kw):
    """An option with libFM's spelling (`-train`) and the GNU one (`--train`)."""
    return click.option(short, "-" + short, *decls, **kw)


class LibfmCommand(click.Command):
    """A command whose single-dash long options (libFM's spelling, `-train`) get the same help for
    a typo as the `--long` ones: click reads an unknown `-tset` as the short option `-t`."""

    def parse_args(self, ctx, args):
        _check_single_dash(self, ctx, args)
        return super().parse_args(ctx, args)


def _check_single_dash(command, ctx, args):
    """Raise click's NoSuchOption, with suggestions, for an unknown single-dash word among args."""
    takes_value = {}
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            for name in param.opts + param.secondary_opts:
                takes_value[name] = not (param.is_flag or param.count)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return
        name = arg.split("=", 1)[0]
        if name in takes_value:
            i += 2 if takes_value[name] and "=" not in arg else 1
            continue
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 1 and not _is_number(arg) \
                and not all(takes_value.get("-" + c) is False for c in arg[1:]):  # a cluster like -qh
            single = sorted(n for n in takes_value if not n.startswith("--"))
            raise click.NoSuchOption(name, possibilities=difflib.get_close_matches(name, single, n=3), ctx=ctx)
        i += 1


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


# ---- commands -----------------------------------------------------------------------------------

@click.group(context_settings=CONTEXT, epilog=EXIT_CODES)
@click.version_option(__version__, "--version", "-version", prog_name="fmcli", message="%(prog)s %(version)s")
def cli():
    """Factorization Machines from the command line, compatible with libFM.

    \b
    Example:
      fmcli train -task r -train train.libfm -test test.libfm -method als -dim 1,1,8 \\
          -iter 100 -regular 0,10,10 -out pred.txt -save_model model.fm
      fmcli predict -model model.fm -test new.libfm -out -
    """


# ---- the learner's options: fmcli train, cv and tune ----------------------------------------------

LEARNER_OPTIONS = (
    opt("-task", required=True, type=click.Choice(["r", "c", "o"], case_sensitive=False),
         help="r: regression (squared loss); c: binary classification (targets -1/0 negative, +1 positive); "
              "o: ordered classes (ordinal probit, -method mcmc; the distinct integer train targets are the classes)."),
    opt("-method", default="mcmc", show_default=True, type=click.Choice(["sgd", "als", "mcmc", "sgda", "bpr"], case_sensitive=False),
         help="Learner: sgd (stochastic gradient descent), sgda (SGD with regularisation adapted on "
              "-validation), als (alternating least squares), mcmc (Gibbs sampling), bpr (train: learning to "
              "rank from positives, pairwise loss with sampled negatives; needs --mapping)."),
    opt("-dim", metavar="K0,K1,K2[,K3,...]",
         help="Use bias (0/1), use linear terms (0/1), number of factors; each further value adds "
              "the interactions of one more order (K3: order 3, K4: order 4, ... up to order 6) "
              "with that many factors. [default: 1,1,8]"),
    opt("-iter", "iterations", default=100, show_default=True, type=click.IntRange(min=0),
         help="Epochs (sgd), sweeps (als) or samples (mcmc)."),
    opt("-learn_rate", default="0.01", show_default=True, metavar="ETA[,ETA0,ETA1,ETA2]",
         help="SGD step size: one value for all, or three for bias, linear terms and factors."),
    opt("-regular", default="0", show_default=True, metavar="R|R0,R1,R2",
         help="L2 regularisation: one value for all, or bias,linear,factors "
              "(ALS with -meta: r0 then one per group for w, then one per group for V)."),
    opt("-init_stdev", default=0.1, show_default=True, type=click.FloatRange(min=0),
         help="Standard deviation of the random initial factors."),
    opt("-seed", default=0, show_default=True, type=int,
         help="Random seed: same seed, data and options give the identical model (libFM uses the clock)."),
    opt("-meta", metavar="FILE", help="Feature groups, one integer per feature (MCMC hyperpriors, ALS -regular per group)."),
    click.option("--burn-in", "burn_in", default=0, show_default=True, type=click.IntRange(min=0),
                  help="MCMC: leave the first N samples out of the averaged predictions."),
    click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adagrad", "adam"]),
                  help="Step rule of -method sgd and bpr: plain SGD (libFM), AdaGrad or Adam. -learn_rate is the rule's "
                       "base rate (typical: sgd 0.001-0.05, adagrad 0.01-0.1, adam 0.001-0.01). Per-parameter "
                       "state, updated lazily (an epoch stays O(k nnz)); not saved in model files."),
    click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
                  help="Threads for the compiled kernels (0: all cores). Results do not depend on it."),
    opt("-verbosity", default=0, type=click.IntRange(min=0), help="1: print more detail about data and model."),
    click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors."),
    click.option("--no-cache", "no_cache", is_flag=True,
                  help="Neither read nor write the binary cache FILE.fmcache beside text inputs."),
    click.option("--verify-cache", "verify_cache", is_flag=True,
                 help="Use a cache FILE.fmcache only if the checksum of the whole text file matches the one "
                      "it recorded (by default: the text's size, times, inode and both ends)."),
)


EXECUTOR_OPTIONS = (
    click.option("--workers", type=click.IntRange(min=1), metavar="N",
                 help="Run the tasks on a new Dask LocalCluster of N worker processes (needs fmcli[dask]). "
                      "[default: local processes, one per core]"),
    click.option("--scheduler", metavar="ADDRESS",
                 help="Run the tasks on the Dask cluster of this scheduler (tcp://HOST:PORT; default: "
                      "$DASK_SCHEDULER_ADDRESS when set). Workers must see the same files."),
)


def executor_options(command):
    for option in reversed(EXECUTOR_OPTIONS):
        command = option(command)
    return command


def learner_options(command):
    """The options that set up a learner, in the same spelling on every command that trains."""
    for option in reversed(LEARNER_OPTIONS):
        command = option(command)
    return command


def cache_policy(learner):
    """The TrainJob.cache value of --no-cache / --verify-cache."""
    from fmcli.io.load import VERIFY

    if learner["no_cache"] and learner["verify_cache"]:
        raise UsageError("--no-cache and --verify-cache exclude each other: give one")
    return VERIFY if learner["verify_cache"] else not learner["no_cache"]


def train_options(task, method, dim, iterations, learn_rate, regular, init_stdev, seed, burn_in, threads,
                  optimizer, keep_samples=1, **_):
    """TrainOptions from the learner options' values (the other options of a command are ignored)."""
    from fmcli.learners.base import TrainOptions

    rates = parse_floats("-learn_rate", learn_rate, [1, 3], strict=True)
    return TrainOptions(task=task.lower(), method=method.lower(), dim=parse_dim(dim), iterations=iterations,
                        learn_rate=rates[0] if len(rates) == 1 else rates,
                        regular=parse_floats("-regular", regular, [lambda n: n >= 1]),
                        init_stdev=init_stdev, seed=seed, burn_in=burn_in, keep_samples=keep_samples,
                        threads=threads, optimizer=optimizer)


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@learner_options
@opt("-train", "train_path", required=True, metavar="FILE",
     help="Training data, libFM/libsvm text (gzip, bz2 or xz detected automatically); '-' reads stdin.")
@opt("-test", "test_path", metavar="FILE",
     help="Rows to evaluate each iteration and to predict with -out (optional; libFM requires it).")
@opt("-out", metavar="FILE", help="Write one prediction per -test row ('-' = stdout): clipped values (r), "
                                  "probabilities of class +1 (c) or expected values Σ c P(c) (o).")
@click.option("--out-proba", "out_proba", metavar="FILE",
              help="-task o: the -test rows' class probabilities, one row a line, tab-separated, one column "
                   "per class in increasing order of the classes (no header).")
@click.option("--out-class", "out_class", is_flag=True,
              help="-task o: -out writes the most probable class instead of the expected value.")
@opt("-rlog", metavar="FILE", help="Per-iteration measurements, tab-separated with a header line.")
@opt("-save_model", metavar="FILE",
     help="Save the trained model: libFM's text layout plus fmcli's checked trailer; FILE.npz saves binary.")
@opt("-load_model", metavar="FILE", help="Start from this model (warm start) instead of a random one.")
@click.option("--keep-samples", "keep_samples", default=1, show_default=True, type=click.IntRange(min=1),
              help="MCMC: store every N-th sample in the saved model (1 = exact reproduction of -out).")
@click.option("--log-json", "log_json", metavar="FILE",
              help="One JSON object per iteration (iteration, elapsed, train and test metrics, MCMC "
                   "hyperparameters); replaced whole after each iteration.")
@click.option("--checkpoint", metavar="FILE",
              help="Save the model so far every --checkpoint-every iterations, atomically, so a long run "
                   "that is stopped keeps its last complete model.")
@click.option("--checkpoint-every", "checkpoint_every", default=10, show_default=True,
              type=click.IntRange(min=1), help="Iterations between checkpoints.")
@opt("-validation", "validation_path", metavar="FILE",
     help="Held-out rows: adapt the regularisation (sgda) and decide --early-stop; their metric is "
          "printed as Validation=.")
@click.option("--early-stop", "early_stop", default=0, show_default=True, type=click.IntRange(min=0),
              help="Stop after N iterations without a better -validation score (RMSE, or log-loss for "
                   "classification) and keep the best model; for MCMC, stop adding samples. 0: off.")
@opt("-relation", "relation", default="", metavar="NAMES",
     help="Relations (libFM's block structure), comma-separated base names R: R.xt (libFM binary) or R.x "
          "(libFM text or binary) holds the relation's rows; R.train, R.test (R.validation) give the 0-based "
          "relation row of each train, test (validation) row; optional R.groups. ALS and MCMC only.")
@opt("-weights", "weights", metavar="FILE",
     help="One non-negative weight per train row (one a line): each row's loss is scaled by it (ALS, "
          "MCMC: its precision; BPR: the positive's steps); 0 is the same as leaving the row out.")
@opt("-cache_size", metavar="BYTES", type=int,
     help="Accepted for libFM scripts and ignored: fmcli memory-maps its binary cache (a note says so).")
@click.option("--mapping", "bpr_mapping", metavar="FILE",
              help="-method bpr: the fmcli convert --mapping (with --user and --item) of the train rows; its "
                   "item side is what a negative swaps.")
@click.option("--sampling", default="uniform", show_default=True, type=click.Choice(["uniform", "warp"]),
              help="-method bpr: negatives drawn uniformly among the user's non-positive items (BPR), or "
                   "WARP (draw until one scores above the positive minus 1, the step scaled by the rank estimate).")
@click.option("--negatives", default=1, show_default=True, type=click.IntRange(min=1),
              help="-method bpr, uniform: negatives (steps) per positive and epoch.")
@click.option("--max-sampled", "max_sampled", default=100, show_default=True, type=click.IntRange(min=1),
              help="-method bpr, warp: draws per positive at most.")
@click.option("--early-stop-metric", "early_stop_metric", metavar="NAME@K",
              help="-method bpr: the -validation ranking metric that --early-stop watches and each iteration "
                   "prints (precision, recall, ndcg, map, hit_rate, capped_precision @K, or auc; train positives "
                   "excluded). "
                   "[default: ndcg@10]")
def train(train_path, test_path, out, rlog, save_model, load_model, keep_samples, log_json, checkpoint,
          checkpoint_every, validation_path, early_stop, cache_size, relation, bpr_mapping, sampling, negatives,
          max_sampled, early_stop_metric, weights, out_proba, out_class, **learner):
    """Train a factorization machine; optionally predict -test and save the model.

    Takes libFM's options in either spelling (-train f or --train f). Prints
    libFM's per-iteration lines (#Iter=  N  Train=...  Test=...) on stderr;
    stdout carries only data (predictions with -out -).

    \b
    Example:
      fmcli train -task r -train train.libfm -test test.libfm -method mcmc \\
          -dim 1,1,8 -iter 200 -out pred.txt
      fmcli train --task c --train a.libfm --method sgd --learn_rate 0.01 \\
          --regular 0,0.05,0.05 --save_model m.fm --quiet
    """
    from fmcli.config import note_compiling
    from fmcli.console import Console
    from fmcli.plan import TrainJob
    from fmcli.train import run_train

    import dataclasses

    opts = dataclasses.replace(train_options(keep_samples=keep_samples, **learner), mapping=bpr_mapping,
                               sampling=sampling, negatives=negatives, max_sampled=max_sampled)
    job = TrainJob(opts, train_path, test_path, out, rlog, save_model, load_model, learner["meta"],
                   dim_given=learner["dim"] is not None, log_json=log_json, checkpoint=checkpoint,
                   checkpoint_every=checkpoint_every, validation=validation_path, early_stop=early_stop,
                   cache=cache_policy(learner), relations=split_names(relation),
                   early_stop_metric=early_stop_metric, weights=weights, out_proba=out_proba,
                   out_class=out_class)
    console = Console(quiet=learner["quiet"], verbosity=learner["verbosity"])
    if cache_size is not None:
        console.info("Note: -cache_size has no effect: fmcli memory-maps its binary cache")
    note_compiling(console.info)
    run_train(job, console)


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@opt("-model", "-load_model", "--load_model", "model_path", required=True, metavar="FILE",
     help="A model saved by fmcli train -save_model, or by libFM's -save_model.")
@opt("-test", "test_path", required=True, metavar="FILE",
     help="Rows to score; targets optional (a row may start with its first id:value); '-' reads stdin.")
@opt("-out", default="-", show_default=True, metavar="FILE", help="Where to write predictions; '-' = stdout.")
@click.option("--out-proba", "out_proba", metavar="FILE",
              help="A -task o model: each row's class probabilities, tab-separated, classes in increasing order.")
@click.option("--out-class", "out_class", is_flag=True,
              help="A -task o model: -out writes the most probable class instead of the expected value.")
@opt("-task", type=click.Choice(["r", "c", "o"], case_sensitive=False),
     help="Default: the model's own task (r for a libFM model, which does not record it); an fmcli "
          "model of the other task is refused. A classifier warns about targets other than -1, 0, 1.")
@opt("-relation", "relation", default="", metavar="NAMES",
     help="The relations the model was trained with (then required), comma-separated base names; each "
          "row's relation row comes from R.test.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--shards", type=click.IntRange(min=1), metavar="N",
              help="Score the file as N independent tasks on local processes (or Dask: --workers, --scheduler); "
                   "the output is the same bytes.")
@executor_options
def predict(model_path, test_path, out, task, quiet, relation, shards, workers, scheduler, out_proba, out_class):
    """Score rows with a saved model, streaming in chunks with flat memory use.

    Writes one line per input row, in input order: values clipped to the
    training target range (regression) or probabilities of class +1
    (classification). For an MCMC model, the average over its stored samples.
    If the rows have targets, the metrics go to stderr.

    \b
    Example:
      fmcli predict -model model.fm -test new.libfm -out pred.txt
      zcat new.libfm.gz | fmcli predict -model model.fm -test - -out - | paste - ids.txt
    """
    from fmcli.config import note_compiling
    from fmcli.console import Console
    from fmcli.predict import run_predict

    if (workers or scheduler) and not shards:
        raise UsageError("--workers and --scheduler need --shards N (the number of tasks)")
    console = Console(quiet=quiet)
    note_compiling(console.info)
    run_predict(model_path, test_path, out, task.lower() if task else None, console,
                relations=split_names(relation), shards=shards, workers=workers, scheduler=scheduler,
                out_proba=out_proba, out_class=out_class)


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@learner_options
@opt("-train", "train_path", required=True, metavar="FILE", help="The rows to cross-validate (text or binary).")
@opt("-k", "k", default=5, show_default=True, type=click.IntRange(min=2), help="Number of folds.")
@click.option("--fold-seed", "fold_seed", type=int, help="Seed of the fold assignment. [default: -seed]")
@click.option("--group-by", "group_by", type=click.IntRange(min=0), metavar="G",
              help="Keep rows that share their feature of -meta group G (e.g. the user's one-hot) in one fold.")
@click.option("--stratify", is_flag=True, help="Give every fold the same mix of targets.")
@opt("-out", metavar="FILE", help="Out-of-fold predictions, one per row in input order ('-' = stdout).")
@click.option("--summary", metavar="FILE", help="Per-fold and mean/sd metrics as JSON ('-' = stdout).")
@click.option("--work-dir", "work_dir", metavar="DIR",
              help="Write the fold files foldI.train.fmbin / foldI.test.fmbin here and keep them (on a cluster: a "
                   "folder every worker sees). [default: a temporary folder, removed]")
@executor_options
def cv(train_path, k, fold_seed, group_by, stratify, out, summary, work_dir, workers, scheduler, **learner):
    """Cross-validate: train and score k folds as independent tasks, in parallel.

    Each fold is a plain fmcli train run with the given options and seed, on the
    fold's binary data files, so its result equals that run's whatever the number
    of workers. Prints each fold's metrics and their mean and standard deviation
    on stderr.

    \b
    Example:
      fmcli cv -task r -train ratings.libfm -k 5 -method mcmc -dim 1,1,8 -iter 200 --summary cv.json
      fmcli cv -task r -train ratings.libfm -meta r.meta --group-by 0 -out oof.txt --workers 4
    """
    from fmcli.console import Console
    from fmcli.cv import CvJob, run_cv

    job = CvJob(train_options(**learner), train_path, k=k, seed=fold_seed, group_by=group_by, stratify=stratify,
                meta=learner["meta"], out=out, summary=summary, work_dir=work_dir, workers=workers,
                scheduler=scheduler, cache=cache_policy(learner))
    run_cv(job, Console(quiet=learner["quiet"], verbosity=learner["verbosity"]))


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@learner_options
@opt("-train", "train_path", required=True, metavar="FILE", help="The rows to train every candidate on.")
@click.option("--grid", required=True, metavar="GRID",
              help="NAME=VALUES words: dim, regular, init_stdev, learn_rate, iter, method, optimizer, burn_in; "
                   "values separated by ';' when there is one, else by ','. E.g. 'dim=8,16 regular=0,10,10;0,20,20'.")
@opt("-validation", "validation_path", metavar="FILE", help="Score each candidate on these rows ...")
@opt("-k", "k", type=click.IntRange(min=2), help="... or by k-fold cross-validation of -train.")
@click.option("--random", "random_n", type=click.IntRange(min=1), metavar="N",
              help="Try N candidates drawn from the grid (seeded by --grid-seed) instead of all.")
@click.option("--grid-seed", "grid_seed", default=0, show_default=True, type=int,
              help="Seed of --random's draw and of the folds.")
@click.option("--metric", help="What ranks the candidates: rmse, mae (r); logloss, accuracy, auc (c). "
                               "[default: rmse or logloss]")
@click.option("--early-stop", "early_stop", default=0, show_default=True, type=click.IntRange(min=0),
              help="With -validation: stop each candidate after N iterations without a better score.")
@click.option("--json", "json_out", metavar="FILE",
              help="The result as JSON ('-' = stdout): every candidate's params, score and sd, the best one's "
                   "fmcli train command line. fmcli plot draws it.")
@click.option("--save-best", "save_best", metavar="FILE",
              help="Train the best candidate on all of -train and save the model here.")
@executor_options
def tune(train_path, grid, validation_path, k, random_n, grid_seed, metric, early_stop, json_out, save_best,
         workers, scheduler, **learner):
    """Search training options: score every candidate of a grid, in parallel.

    Prints the candidates ranked, and the best one as a ready fmcli train
    command line, on stderr. Options not in the grid keep their values.

    \b
    Example:
      fmcli tune -task r -train tr.libfm -validation va.libfm -method als \\
          --grid 'dim=8,16,32 regular=0,10,10;0,20,20' --json tune.json
      fmcli tune -task r -train tr.libfm -k 5 --grid 'init_stdev=0.05,0.1,0.2' --save-best m.fm
    """
    from fmcli.console import Console
    from fmcli.tune import TuneJob, run_tune

    job = TuneJob(train_options(**learner), train_path, grid, validation=validation_path, k=k, random=random_n,
                  seed=grid_seed, metric=metric, early_stop=early_stop, meta=learner["meta"], out=json_out,
                  save_best=save_best, workers=workers, scheduler=scheduler, cache=cache_policy(learner))
    run_tune(job, Console(quiet=learner["quiet"], verbosity=learner["verbosity"]))


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@opt("-in", "inputs", multiple=True, required=True, metavar="FILE",
     help="Delimited input (CSV, TSV, blank-separated; gzip/bz2/xz detected); '-' reads stdin. "
          "Repeat for several files (train, test) that share one id space.")
@opt("-out", "outputs", multiple=True, metavar="FILE",
     help="libFM text output, one per -in in the same order ('-' = stdout). [default: INPUT.libfm]")
@click.option("--sep", "-sep", "--separator", "sep", default="auto", show_default=True, metavar="SEP",
              help="Field separator: ',' | tab | space (runs of blanks) | ';' | '|' | auto (sniffed from the "
                   "first data line; with --use-mapping, the mapping's).")
@click.option("--header/--no-header", "-header/-no_header", default=None,
              help="The first row holds column names. [default: yes when --target is a name or the first "
                   "row's target field is not a number]")
@click.option("--target", "-target", "-target_column", "--target_column", metavar="COL",
              help="The target column: a header name or a 0-based index (libFM's --target_column).")
@click.option("--categorical", "-categorical", metavar="COLS", multiple=True,
              help="Columns to one-hot encode (one feature per distinct value), comma-separated names or "
                   "indices, e.g. user,item. Columns not listed are numeric when all their values are numbers.")
@click.option("--numeric", "-numeric", metavar="COLS", multiple=True,
              help="Columns kept as values (one feature each, the number as written).")
@click.option("--drop", "-drop", "-delete_column", "--delete_column", metavar="COLS", multiple=True,
              help="Columns to leave out (libFM's --delete_column).")
@opt("-meta", metavar="FILE", help="Write the feature groups (one line per feature: its column's group) for "
                                   "fmcli train -meta.")
@click.option("--mapping", "-mapping", metavar="FILE",
              help="Write the id mapping (JSON: columns, roles, value->id tables, number of features).")
@click.option("--use-mapping", "-use_mapping", "use_mapping", metavar="FILE",
              help="Convert new data with the ids of this mapping; unknown values are dropped and counted.")
@click.option("--no-target", "-no_target", "no_target", is_flag=True,
              help="With --use-mapping: the rows have no target column (data to predict).")
@click.option("--encoding", "-encoding", metavar="ENC",
              help="Text encoding of the inputs (and side tables), e.g. latin-1. [default: UTF-8, checked only "
                   "in the columns used]")
@click.option("--join", "joins", multiple=True, metavar="FILE:KEY=MAINCOL",
              help="Join a side table: its row whose KEY column equals the row's MAINCOL adds its features; its "
                   "columns are NAME.COL (NAME: the file name). Options after more colons: sep=S, header=yes|no "
                   "[default: yes when KEY is a name], encoding=E, name=N. Repeatable.")
@click.option("--set", "sets", multiple=True, metavar="COL[:SEP]",
              help="A column holding several values in one field (Action|Comedy; SEP default '|'): one group, "
                   "one feature per value. Repeatable.")
@click.option("--set-columns", "set_columns", multiple=True, metavar="NAME=FIRST..LAST",
              help="A run of 0/1 indicator columns as one set named NAME (one group). Repeatable.")
@click.option("--set-norm", "set_norm", default="1", show_default=True, type=click.Choice(["1", "n", "sqrt"]),
              help="Value of each of a set's n members: 1, 1/n or 1/sqrt(n).")
@click.option("--standardize", metavar="COLS", multiple=True,
              help="Numeric columns to standardise (mean 0, sd 1 over the inputs; recorded in the mapping).")
@click.option("--log1p", metavar="COLS", multiple=True,
              help="Numeric columns to take as log(1 + value) (before --standardize).")
@click.option("--buckets", metavar="COL:N", multiple=True,
              help="A numeric column as N quantile buckets: a categorical group. Repeatable.")
@click.option("--tfidf", metavar="COLS", multiple=True,
              help="Text columns as bags of words weighted by TF-IDF (vocabulary and idf in the mapping).")
@click.option("--timestamp", metavar="COL[:PARTS]", multiple=True,
              help="A Unix-time column as derived features, PARTS joined by +: day (days since the first), "
                   "weekday, hour, daysN (N-day periods). [default: weekday+hour+days7]")
@click.option("--user", metavar="COL", help="The user column (categorical): the mapping records each user's "
                                             "features (its entities section, for fmcli recommend).")
@click.option("--item", metavar="COL", help="The item column (categorical), as --user.")
@click.option("--relations", metavar="BASE",
              help="Write the implicit-feedback relations BASE.users (each user's rated items, 1/sqrt(n)) and "
                   "BASE.items (each item's raters) from the first -in (train) only: R.x, R.groups and R.train, "
                   "R.test, R.validation for the 1st, 2nd, 3rd -in. Needs --user and --item. With --use-mapping: "
                   "only R.test, the new rows' relation rows (for fmcli predict -relation).")
@click.option("--min-rating", "min_rating", type=float, metavar="R",
              help="Keep only the rows whose target is >= R (and their relation rows): explicit ratings turned "
                   "into the positives of fmcli train -method bpr. --relations still use every row of the "
                   "first -in.")
@click.option("--weight", "-weight", "weight", metavar="COL",
              help="A column of row weights (non-negative numbers; not a feature): each -out's weights go to "
                   "OUT.weights, one a line, for fmcli train -weights. Recorded in the mapping: --use-mapping "
                   "writes them too (not with --no-target).")
@click.option("--binary", "to_binary", is_flag=True,
              help="Instead: convert libFM text to fmcli's binary data file, which train and predict load "
                   "memory-mapped.")
@click.option("--to-text", "to_text", is_flag=True,
              help="Instead: convert a binary data file (or libFM text) back to libFM text.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def convert(inputs, outputs, sep, header, target, categorical, numeric, drop, meta, mapping, use_mapping,
            no_target, encoding, joins, sets, set_columns, set_norm, standardize, log1p, buckets, tfidf, timestamp,
            user, item, relations, min_rating, weight, to_binary, to_text, quiet):
    """Convert delimited files (CSV, TSV, user item rating triples) to libFM text.

    The target column becomes the target; categorical columns are one-hot encoded
    (ids in order of first appearance, column by column); numeric columns keep
    their values. Several -in files share one id space, so train and test agree;
    --mapping saves the ids and --use-mapping applies them to new data later.
    Nothing is written unless every input converts.

    \b
    Example (MovieLens u.data: user item rating timestamp, tab-separated):
      fmcli convert -in ua.base -in ua.test -out ua.train.libfm -out ua.test.libfm \\
          --target 2 --categorical 0,1 --drop 3 -meta ua.meta --mapping ua.map.json
      cut -f1,2 new_pairs.tsv | fmcli convert -in - -out - --use-mapping ua.map.json --no-target \\
          | fmcli predict -model m.fm -test - -out -
      fmcli convert --binary -in big.libfm -out big.fmbin     # loads memory-mapped

    \b
    Side tables, a genre set and the implicit-feedback relations (u.user, u.item):
      fmcli convert -in ua.base -in ua.test -out ua.train.libfm -out ua.test.libfm \\
          --target 2 --categorical 0,1 --drop 3 --user 0 --item 1 \\
          --join 'u.user:0=0:sep=|:name=user' --drop user.4 --standardize user.1 \\
          --join 'u.item:0=1:sep=|:name=item:encoding=latin-1' --drop item.1,item.2,item.3,item.4 \\
          --set-columns genres=item.5..item.23 --relations ua -meta ua.meta --mapping ua.map.json
    """
    from fmcli.console import Console
    from fmcli.convert import ConvertJob, convert_format, run_convert

    if to_binary or to_text:
        delimited = (target, categorical, numeric, drop, meta, mapping, use_mapping, no_target, encoding, joins,
                     sets, set_columns, standardize, log1p, buckets, tfidf, timestamp, user, item, relations,
                     weight, min_rating is not None)
        if to_binary and to_text or any(delimited) or header is not None or sep != "auto":
            raise UsageError("--binary and --to-text convert between libFM text and binary only: "
                             "give one of them, with -in and -out")
        convert_format(list(inputs), list(outputs), "binary" if to_binary else "text", Console(quiet=quiet))
        return
    job = ConvertJob(inputs=list(inputs), outputs=list(outputs), sep=sep, header=header, target=target,
                     categorical=list(categorical), numeric=list(numeric), drop=list(drop), meta=meta,
                     mapping=mapping, use_mapping=use_mapping, no_target=no_target, encoding=encoding,
                     joins=list(joins), sets=list(sets), set_columns=list(set_columns), set_norm=set_norm,
                     standardize=list(standardize), log1p=list(log1p), buckets=list(buckets), tfidf=list(tfidf),
                     timestamp=list(timestamp), user=user, item=item, relations=relations,
                     min_rating=min_rating, weight=weight)
    run_convert(job, Console(quiet=quiet))


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@opt("-out", required=True, metavar="FILE",
     help="The image: FILE.png or FILE.svg; '-' writes PNG (or --format svg) to stdout.")
@click.option("--format", "fmt", type=click.Choice(["png", "svg"]),
              help="Image format when -out does not say (-out -, a name without .png/.svg).")
@click.option("--metric", metavar="NAME",
              help="rmse, mae (regression), accuracy, auc, logloss, ll (classification), or any other "
                   "-rlog column or --log-json hyper key. [default: rmse or accuracy, the first file's]")
@click.option("--x", "x_axis", type=click.Choice(["iteration", "elapsed"]),
              help="Learning curves against the iteration or the elapsed seconds. [default: iteration]")
@click.option("--label", "labels", multiple=True, metavar="TEXT",
              help="Legend name of each file, once per file in order. [default: the file names]")
@click.option("--title", metavar="TEXT", help="A title above the chart.")
@click.option("--width", default=800, show_default=True, type=click.IntRange(64, 10000), help="Pixels.")
@click.option("--height", default=500, show_default=True, type=click.IntRange(64, 10000), help="Pixels.")
@click.option("--dpi", default=96, show_default=True, type=click.IntRange(10, 1200),
              help="Text is sized in points: a higher dpi makes text and lines larger on the same canvas.")
def plot(files, out, fmt, metric, x_axis, labels, title, width, height, dpi):
    """Draw learning curves or tune results as PNG or SVG (needs matplotlib: fmcli[plot]).

    Each FILE is an -rlog table or a --log-json file of fmcli train (libFM's -rlog
    tables too), or the result of a tune run; the kind is read from the content.
    Learning curves: one colour per file, line style per split (test solid, train
    dashed, validation dotted). Tune results: the score against each hyperparameter,
    one panel each, error bars from sd.

    \b
    Example:
      fmcli plot sgd.rlog als.rlog --label SGD --label ALS -out curves.png
      fmcli plot run.jsonl --metric auc --x elapsed -out - --format svg > auc.svg
      fmcli plot tune.json -out tune.png --width 1200 --height 400
    """
    from fmcli.plot import PlotJob, run_plot

    run_plot(PlotJob(inputs=list(files), out=out, fmt=fmt, metric=metric, x_axis=x_axis, labels=labels,
                     title=title, width=width, height=height, dpi=dpi))


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@opt("-model", "-load_model", "--load_model", "model_path", required=True, metavar="FILE",
     help="A model saved by fmcli train -save_model (any method; MCMC averages its stored samples).")
@opt("-mapping", "mapping", required=True, metavar="FILE",
     help="The fmcli convert --mapping of the model's data: it says which column is the user and which the "
          "item, and how to build each side's features from raw ids.")
@opt("-n", "--top", "n", default=10, show_default=True, type=click.IntRange(min=1),
     help="Items per user (per --similar item).")
@opt("-users", "users", metavar="FILE", help="The users to recommend for, one per row ('-' = stdin), laid out "
                                             "as convert's inputs. [default: every user of the mapping]")
@opt("-items", "items", metavar="FILE", help="Candidate items, one per row. [default: every item of the mapping]")
@opt("-exclude", "exclude", metavar="FILE",
     help="Interactions (user, item rows, e.g. the train ratings) whose items are not recommended to "
          "their user again.")
@opt("-out", default="-", show_default=True, metavar="FILE",
     help="Where to write user<TAB>item<TAB>score<TAB>rank lines (metrics with --evaluate); '-' = stdout.")
@opt("-user", "user_column", metavar="COL", help="With a version-1 mapping: the user column (categorical).")
@opt("-item", "item_column", metavar="COL", help="With a version-1 mapping: the item column (categorical).")
@opt("-evaluate", "evaluate", metavar="TEST",
     help="Instead: rank for the users of these held-out interactions (-exclude items left out) and print "
          "precision, recall, NDCG, MAP, hit rate and capped precision (the implicit library's "
          "precision: hits / min(k, relevant), summed over users) at -k, and AUC, one a line.")
@click.option("--min-rating", "-min_rating", "min_rating", type=float, metavar="R",
              help="With --evaluate: only rows rated >= R are relevant.")
@opt("-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="The metrics' cut-off.")
@click.option("--metrics-json", "-metrics_json", "metrics_json", metavar="FILE",
              help="With --evaluate: also write the metrics as one JSON object.")
@click.option("--similar", "-similar", "similar", metavar="ITEM",
              help="Instead: the -n items most like ITEM (cosine of the item side's factor vectors).")
@click.option("--at-least", "-at_least", "at_least", type=float, metavar="C",
              help="A -task o model: rank by the probability of a class >= C (one of the model's classes) "
                   "instead of the expected class.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="Threads for the compiled kernels (0: all cores). Results do not depend on it.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def recommend(model_path, mapping, n, users, items, exclude, out, user_column, item_column, evaluate,
              min_rating, k, metrics_json, similar, at_least, threads, quiet):
    """Recommend the top-N items per user with a saved model, from raw ids.

    Builds each (user, item) pair's features as fmcli convert would from the
    mapping, and scores it as fmcli predict would (clipped values or
    probabilities; -task o: the expected class, or with --at-least the probability
    of a class at least C; MCMC: the mean over the stored samples). Items are
    ranked by that score, ties by item order. Unknown users are counted and skipped.

    \b
    Example:
      fmcli recommend -model ua.mcmc.fm --mapping ua.map.json --user 0 --item 1 \\
          -exclude ml-100k/ua.base -n 10 -out top10.tsv
      echo 42 | fmcli recommend -model m.fm --mapping map.json -users - -n 5
      fmcli recommend -model m.fm --mapping map.json -exclude train.tsv \\
          --evaluate test.tsv --min-rating 4 -k 10 --metrics-json metrics.json
      fmcli recommend -model m.fm --mapping map.json --similar 50 -n 10
    """
    from fmcli.console import Console
    from fmcli.recommend import RecommendJob, run_recommend
    from fmcli.config import threads as kernel_threads

    job = RecommendJob(model=model_path, mapping=mapping, n=n, users=users, items=items, exclude=exclude,
                       out=out, user_column=user_column, item_column=item_column, evaluate=evaluate,
                       min_rating=min_rating, k=k, metrics_json=metrics_json, similar=similar,
                       at_least=at_least)
    with kernel_threads(threads):
        run_recommend(job, Console(quiet=quiet))


# ---- entry point --------------------------------------------------------------------------------

def main(argv=None):
    """Run the CLI; turn every failure into one stderr line and a documented exit code."""
    from fmcli.io.atomic import ReaderGone, protect_standard_fds

    protect_standard_fds()  # before anything is opened: a closed fd 0/1/2 must not be reused
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(args=argv, prog_name="fmcli", standalone_mode=False)
        code = 0
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:  # `fmcli` alone: the help, on stderr
        print(e.ctx.get_help(), file=sys.stderr, flush=True)
        code = 2
    except click.exceptions.UsageError as e:
        hint = f"Try '{e.ctx.command_path} --help' for help." if e.ctx else None
        # click lays some messages out on several lines ("Choose from:\n\tr,\n\tc"): one line here
        _error(re.sub(r"\s*\n\s*", " ", e.format_message()), hint)
        code = 2
    except click.exceptions.Abort:  # click's form of KeyboardInterrupt outside a training loop
        _error("interrupted; no output written")
        code = 130
    except FmcliError as e:
        _error(str(e))
        code = e.exit_code
    except (KeyboardInterrupt, Terminated) as e:  # outside a training loop (which says more)
        from fmcli.io import atomic

        what = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        _error(f"{what} after the outputs were written" if atomic.published else f"{what}; no output written")
        code = 130 if isinstance(e, KeyboardInterrupt) else 143
    except (ReaderGone, BrokenPipeError):
        # the reader of our stdout went away (e.g. `| head`): stop quietly; later writes
        # (Python's flush at exit) go to /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        code = 141
    except MemoryError:
        _error("out of memory")
        code = 1
    except OSError as e:
        _error(f"{str(e.filename) + ': ' if e.filename else ''}{e.strerror or e}")
        code = 1
    except Exception as e:  # a bug: say so in one line; FMCLI_DEBUG=1 shows the traceback
        if os.environ.get("FMCLI_DEBUG"):
            raise
        _error(f"internal error: {type(e).__name__}: {e} (set FMCLI_DEBUG=1 for details)")
        code = 1
    sys.exit(code)


def run():
    """The program's entry point (`fmcli`, `python -m fmcli`): main(), then the process ends at
    once with main's status, not through Python's shutdown, which puts back the default signal
    handlers: a SIGTERM in that window would kill the process with no status of ours."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or 141
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)


def _error(msg, hint=None):
    """`fmcli: error: MSG` on one line: control characters from the input (a vertical tab, an
    escape sequence, a newline in a file name) are shown escaped, never sent to the terminal."""
    from fmcli.console import drop_messages

    msg = "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in str(msg))
    try:
        print(f"fmcli: error: {msg}" + (f"\n{hint}" if hint else ""), file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr full or closed: the exit status still tells
        drop_messages(sys.stderr)


if __name__ == "__main__":
    run()

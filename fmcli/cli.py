"""The command line: parse, call the library, report.

Imports only click at module level so that `fmcli --help` starts fast and
never loads numba; each command imports the library in its body.
Every option has libFM's single-dash spelling and a GNU `--long` one.
"""

import difflib
import os
import re
import signal
import sys

import click

from fmcli import __version__
from fmcli.errors import FmcliError, Terminated, UsageError

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


# ---- option values ------------------------------------------------------------------------------

def parse_dim(text):
    """'k0,k1,k2' strictly: three non-negative integers, k0 and k1 being 0 or 1."""
    if text is None:
        return (1, 1, 8)
    if not re.fullmatch(r"\s*\d+\s*[,;]\s*\d+\s*[,;]\s*\d+\s*", text):
        raise UsageError(f"-dim {text!r}: expected three non-negative integers k0,k1,k2 such as 1,1,8")
    k0, k1, k2 = (int(p) for p in re.split(r"[,;]", text))
    if k0 > 1 or k1 > 1:
        raise UsageError(f"-dim {text!r}: k0 (use bias) and k1 (use linear terms) must be 0 or 1")
    if not (k0 or k1 or k2):
        raise UsageError(f"-dim {text!r}: the model would have no parameters (no bias, no linear terms, "
                         "no factors)")
    return (k0, k1, k2)


def parse_floats(name, text, counts, minimum=0.0, strict=False):
    """A list of finite numbers, ',' or ';' separated, whose length is one of `counts`."""
    parts = [p for p in re.split(r"[,;]", text.strip()) if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise UsageError(f"{name} {text!r}: not a list of numbers") from None
    if not any(c(len(values)) if callable(c) else len(values) == c for c in counts):
        raise UsageError(f"{name} {text!r}: wrong number of values")
    for v in values:
        if not (v == v and abs(v) != float("inf")) or v < minimum or (strict and v <= minimum):
            raise UsageError(f"{name} {text!r}: values must be finite and {'>' if strict else '>='} {minimum:g}")
    return values


def split_names(text):
    """'a,b;c' -> ('a', 'b', 'c'), as libFM splits list values."""
    return tuple(n for n in re.split(r"[,;]", text) if n.strip())


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


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@opt("-task", required=True, type=click.Choice(["r", "c"], case_sensitive=False),
     help="r: regression (squared loss); c: binary classification (targets -1/0 negative, +1 positive).")
@opt("-train", "train_path", required=True, metavar="FILE",
     help="Training data, libFM/libsvm text (gzip, bz2 or xz detected automatically); '-' reads stdin.")
@opt("-test", "test_path", metavar="FILE",
     help="Rows to evaluate each iteration and to predict with -out (optional; libFM requires it).")
@opt("-method", default="mcmc", show_default=True, type=click.Choice(["sgd", "als", "mcmc", "sgda"], case_sensitive=False),
     help="Learner: sgd (stochastic gradient descent), sgda (SGD with regularisation adapted on "
          "-validation), als (alternating least squares), mcmc (Gibbs sampling).")
@opt("-dim", metavar="K0,K1,K2",
     help="Use bias (0/1), use linear terms (0/1), number of factors. [default: 1,1,8]")
@opt("-iter", "iterations", default=100, show_default=True, type=click.IntRange(min=0),
     help="Epochs (sgd), sweeps (als) or samples (mcmc).")
@opt("-learn_rate", default="0.01", show_default=True, metavar="ETA[,ETA0,ETA1,ETA2]",
     help="SGD step size: one value for all, or three for bias, linear terms and factors.")
@opt("-regular", default="0", show_default=True, metavar="R|R0,R1,R2",
     help="L2 regularisation: one value for all, or bias,linear,factors "
          "(ALS with -meta: r0 then one per group for w, then one per group for V).")
@opt("-init_stdev", default=0.1, show_default=True, type=click.FloatRange(min=0),
     help="Standard deviation of the random initial factors.")
@opt("-seed", default=0, show_default=True, type=int,
     help="Random seed: same seed, data and options give the identical model (libFM uses the clock).")
@opt("-out", metavar="FILE", help="Write one prediction per -test row ('-' = stdout): clipped values (r) or "
                                  "probabilities of class +1 (c).")
@opt("-rlog", metavar="FILE", help="Per-iteration measurements, tab-separated with a header line.")
@opt("-save_model", metavar="FILE",
     help="Save the trained model: libFM's text layout plus fmcli's checked trailer; FILE.npz saves binary.")
@opt("-load_model", metavar="FILE", help="Start from this model (warm start) instead of a random one.")
@opt("-meta", metavar="FILE", help="Feature groups, one integer per feature (MCMC hyperpriors, ALS -regular per group).")
@opt("-verbosity", default=0, type=click.IntRange(min=0), help="1: print more detail about data and model.")
@click.option("--burn-in", "burn_in", default=0, show_default=True, type=click.IntRange(min=0),
              help="MCMC: leave the first N samples out of the averaged predictions.")
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
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="Threads for the compiled kernels (0: all cores). Results do not depend on it.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@opt("-validation", "validation_path", metavar="FILE",
     help="Held-out rows: adapt the regularisation (sgda) and decide --early-stop; their metric is "
          "printed as Validation=.")
@click.option("--early-stop", "early_stop", default=0, show_default=True, type=click.IntRange(min=0),
              help="Stop after N iterations without a better -validation score (RMSE, or log-loss for "
                   "classification) and keep the best model; for MCMC, stop adding samples. 0: off.")
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adagrad", "adam"]),
              help="Step rule of -method sgd: plain SGD (libFM), AdaGrad or Adam. -learn_rate is the rule's "
                   "base rate (typical: sgd 0.001-0.05, adagrad 0.01-0.1, adam 0.001-0.01). Per-parameter "
                   "state, updated lazily (an epoch stays O(k nnz)); not saved in model files.")
@click.option("--no-cache", "no_cache", is_flag=True,
              help="Neither read nor write the binary cache FILE.fmcache beside text inputs.")
@opt("-relation", "relation", default="", metavar="NAMES",
     help="Relations (libFM's block structure), comma-separated base names R: R.xt (libFM binary) or R.x "
          "(libFM text or binary) holds the relation's rows; R.train, R.test (R.validation) give the 0-based "
          "relation row of each train, test (validation) row; optional R.groups. ALS and MCMC only.")
@opt("-cache_size", metavar="BYTES", type=int,
     help="Accepted for libFM scripts and ignored: fmcli memory-maps its binary cache (a note says so).")
def train(task, train_path, test_path, method, dim, iterations, learn_rate, regular, init_stdev, seed,
          out, rlog, save_model, load_model, meta, verbosity, burn_in, keep_samples, log_json, checkpoint,
          checkpoint_every, threads, quiet, validation_path, early_stop, optimizer, no_cache, cache_size,
          relation):
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
    from fmcli.console import Console
    from fmcli.learners.base import TrainOptions
    from fmcli.plan import TrainJob
    from fmcli.train import run_train

    rates = parse_floats("-learn_rate", learn_rate, [1, 3], strict=True)
    opts = TrainOptions(task=task.lower(), method=method.lower(), dim=parse_dim(dim), iterations=iterations,
                        learn_rate=rates[0] if len(rates) == 1 else rates,
                        regular=parse_floats("-regular", regular, [lambda n: n >= 1]),
                        init_stdev=init_stdev, seed=seed, burn_in=burn_in, keep_samples=keep_samples,
                        threads=threads, optimizer=optimizer)
    job = TrainJob(opts, train_path, test_path, out, rlog, save_model, load_model, meta,
                   dim_given=dim is not None, log_json=log_json, checkpoint=checkpoint,
                   checkpoint_every=checkpoint_every, validation=validation_path, early_stop=early_stop,
                   cache=not no_cache, relations=split_names(relation))
    console = Console(quiet=quiet, verbosity=verbosity)
    if cache_size is not None:
        console.info("Note: -cache_size has no effect: fmcli memory-maps its binary cache")
    run_train(job, console)


@cli.command(cls=LibfmCommand, context_settings=CONTEXT, epilog=EXIT_CODES)
@opt("-model", "-load_model", "--load_model", "model_path", required=True, metavar="FILE",
     help="A model saved by fmcli train -save_model, or by libFM's -save_model.")
@opt("-test", "test_path", required=True, metavar="FILE",
     help="Rows to score; targets optional (a row may start with its first id:value); '-' reads stdin.")
@opt("-out", default="-", show_default=True, metavar="FILE", help="Where to write predictions; '-' = stdout.")
@opt("-task", type=click.Choice(["r", "c"], case_sensitive=False),
     help="Check the model's task (needed for libFM models of classification; default r).")
@opt("-relation", "relation", default="", metavar="NAMES",
     help="The relations the model was trained with (then required), comma-separated base names; each "
          "row's relation row comes from R.test.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def predict(model_path, test_path, out, task, quiet, relation):
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
    from fmcli.console import Console
    from fmcli.predict import run_predict

    run_predict(model_path, test_path, out, task.lower() if task else None, Console(quiet=quiet),
                relations=split_names(relation))


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
@click.option("--binary", "to_binary", is_flag=True,
              help="Instead: convert libFM text to fmcli's binary data file, which train and predict load "
                   "memory-mapped.")
@click.option("--to-text", "to_text", is_flag=True,
              help="Instead: convert a binary data file (or libFM text) back to libFM text.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def convert(inputs, outputs, sep, header, target, categorical, numeric, drop, meta, mapping, use_mapping,
            no_target, encoding, joins, sets, set_columns, set_norm, standardize, log1p, buckets, tfidf, timestamp,
            user, item, relations, to_binary, to_text, quiet):
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
                     sets, set_columns, standardize, log1p, buckets, tfidf, timestamp, user, item, relations)
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
                     timestamp=list(timestamp), user=user, item=item, relations=relations)
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


# ---- entry point --------------------------------------------------------------------------------

def main(argv=None):
    """Run the CLI; turn every failure into one stderr line and a documented exit code."""
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
    except KeyboardInterrupt:
        _error("interrupted; no output written")
        code = 130
    except Terminated:
        _error("terminated; no output written")
        code = 143
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
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


def _error(msg, hint=None):
    """`fmcli: error: MSG` on one line: control characters from the input (a vertical tab, an
    escape sequence, a newline in a file name) are shown escaped, never sent to the terminal."""
    msg = "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in str(msg))
    print(f"fmcli: error: {msg}" + (f"\n{hint}" if hint else ""), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

"""`fmcli predict`: score rows with a saved model, streaming in chunks.

Memory stays flat whatever the input size: rows are parsed, scored and
written one chunk at a time. A file output is written to a temporary file and
renamed at the end; standard output receives each chunk as it is scored.
"""

import contextlib

import numpy as np

from fmcli.console import Console
from fmcli.errors import UsageError
from fmcli.io.atomic import atomic_output, check_distinct, check_writable, publish_together
from fmcli.io.predictions import format_predictions
from fmcli.scoring import RunningMetrics, check_finite, chunks, score_chunk


# the multiply-adds (entries x (k + 1)) of one kernel call below which it runs on one thread:
# waking the others costs more than they save (an MCMC model makes a call per sample, and on a
# busy machine each wake-up can take milliseconds; bench/model_size.py)
PARALLEL_MIN_WORK = 1 << 20


def run_predict(model_path, test_path, out_path="-", task=None, console=None, chunk_bytes=32 << 20,
                relations=(), shards=None, workers=None, scheduler=None, out_proba=None, out_class=False):
    """Write one prediction per row of `test_path`; returns the number of rows scored.
    relations: the relation names the model was trained with; the relation row of each
    predicted row comes from R.test. shards: score the file as that many tasks
    (fmcli.shards) on local processes, or on Dask (workers, scheduler)."""
    from fmcli.errors import InputError
    from fmcli.io.modelfile import load_model
    from fmcli.config import threads

    console = console or Console()
    check_distinct([("-model", model_path), ("-test", test_path)] + relation_inputs(relations, ("test",)),
                   [("-out", out_path), ("--out-proba", out_proba)])
    check_writable(out_path, "-out")
    check_writable(out_proba, "--out-proba")
    model = load_model(model_path, task=task)
    if (out_proba or out_class) and model.task != "o":
        raise UsageError(f"--out-proba and --out-class need a -task o model; {model_path} is not one")
    if out_proba == "-":
        raise UsageError("--out-proba needs a file name, not - (stdout carries -out)")
    rels = model_relations(model, model_path, relations)
    if shards:
        if rels:
            raise UsageError("--shards: relations are not sharded; leave --shards out")
        n_rows, labeled, sums = _run_shards(model_path, test_path, out_path, task, chunk_bytes, shards,
                                            workers, scheduler, out_proba, out_class)
        _report(console, model.task, out_path, n_rows, labeled, sums)
        return n_rows
    classes = model.task == "c"     # the model's own task, unless -task said otherwise
    n_rows, running, warned = 0, RunningMetrics(model.task), False
    with publish_together(), atomic_output(out_path) as out, \
            (atomic_output(out_proba) if out_proba else contextlib.nullcontext()) as proba_out:
        for chunk in chunks(test_path, chunk_bytes):
            part = tuple((rel, links[n_rows:n_rows + chunk.n_rows]) for rel, links in rels)
            for rel, links in part:
                if len(links) < chunk.n_rows:
                    raise InputError(rel.name + ".test", None, f"{n_rows + len(links)} relation row indices "
                                     f"for at least {n_rows + chunk.n_rows} rows of {test_path}")
            # a chunk too small to share: one thread (the result does not depend on the count)
            with threads(1 if len(chunk.indices) * (model.k + 1) < PARALLEL_MIN_WORK else 0):
                pred, proba = score_chunk(model, chunk, part, out_class, proba_out is not None)
            if proba is not None:
                proba_out.write(proba)
            check_finite(pred, model_path)
            out.write(format_predictions(pred))
            n_rows += chunk.n_rows
            if classes and not warned:
                warned = _warn_non_class_targets(chunk.y, n_rows - chunk.n_rows, test_path, model_path, console)
            running.add(pred, chunk.y)
        for rel, links in rels:
            if len(links) != n_rows:
                raise InputError(rel.name + ".test", None, f"{len(links)} relation row indices for "
                                 f"{n_rows} rows of {test_path}: one index per row is needed")
    _report(console, model.task, out_path, n_rows, running.labeled, running.sums)
    return n_rows


def _report(console, task, out_path, n_rows, labeled, sums):
    what = "values clipped to the training target range" if task == "r" else \
        "expected values of the ordered classes" if task == "o" else "probabilities of class +1"
    where = "stdout" if out_path == "-" else out_path
    console.info(f"Wrote {n_rows} predictions ({what}) to {where}")
    if labeled and n_rows:
        a, b = sums / n_rows
        m = {"rmse": np.sqrt(a), "mae": b} if task in ("r", "o") else {"accuracy": a, "logloss": b}
        console.info("Test\t" + "\t".join(f"{k}={v:.6g}" for k, v in m.items()))


def _warn_non_class_targets(y, first_row, test_path, model_path, console):
    """Warn (once: returns True) if targets of a classification model's rows are not classes:
    such data is likely regression data given to the wrong model."""
    odd = np.flatnonzero(np.isfinite(y) & (y != -1) & (y != 0) & (y != 1))
    if not odd.size:
        return False
    i = int(odd[0])
    console.warn(f"{test_path}: row {first_row + i + 1} has target {float(y[i]):g}, not a class (-1, 0 "
                 f"or 1), but {model_path} is a classification model: are these regression data? "
                 "(the metrics count targets > 0 as class +1)")
    return True


def _run_shards(model_path, test_path, out_path, task, chunk_bytes, shards, workers, scheduler, out_proba,
                out_class):
    """The shards' tasks run, their lines (and --out-proba's) written in input order; (rows,
    labeled, metric sums)."""
    from fmcli.executors import executor
    from fmcli.shards import predict_task, shard_specs

    with executor(workers, scheduler, tasks=shards) as ex:
        specs = shard_specs(model_path, test_path, shards, task, chunk_bytes, out_class, bool(out_proba))
        results = ex.map(predict_task, specs, [f"shard {i}" for i in range(len(specs))])
    n_rows = sum(r[2] for r in results)
    if not n_rows:
        from fmcli.errors import InputError

        raise InputError(test_path, None, "no data rows (the file is empty or has only blank lines and comments)")
    with publish_together(), atomic_output(out_path) as out, \
            (atomic_output(out_proba) if out_proba else contextlib.nullcontext()) as proba_out:
        for text, proba, _, _, _ in results:
            out.write(text)
            if proba_out is not None:
                proba_out.write(proba)
    labeled = all(r[3] for r in results)
    return n_rows, labeled, sum((r[4] for r in results), np.zeros(2)) if labeled else np.zeros(2)


def relation_inputs(names, parts):
    """(option, path) of every file the relations `names` are read from, for the sets `parts`
    ("train", "test", "validation"): R.xt, R.x, R.groups and R.PART (fmcli.io.relation)."""
    suffixes = ("xt", "x", "groups") + tuple(parts)
    return [(f"-relation {name}", f"{name}.{suffix}") for name in names for suffix in suffixes]


def model_relations(model, model_path, names):
    """((Relation, R.test links), ...) for the relations `names`, placed where the model has
    them: the offsets and feature counts its metadata recorded in training, or, for a libFM
    model file (no metadata), libFM's layout (the relations' features are the model's last)."""
    from fmcli.errors import UsageError
    from fmcli.io.relation import read_design, read_links

    recorded = model.meta.get("relations")
    if not names:
        if recorded:
            raise UsageError(f"{model_path} was trained with relations ({len(recorded)}: "
                             f"{', '.join(r['name'] for r in recorded)}): give them with -relation")
        return ()
    if recorded is None and model.meta.get("source_format") != "libfm":
        raise UsageError(f"-relation: {model_path} was trained without relations")
    designs = [read_design(name) for name in names]
    if recorded is None:
        offset = model.n_features - sum(r.n_features for r in designs)
        if offset < 0:
            raise UsageError(f"-relation: the relations have more features than the model {model_path}")
        recorded = []
        for r in designs:
            recorded.append({"offset": offset, "n_features": r.n_features})
            offset += r.n_features
    if len(recorded) != len(designs):
        raise UsageError(f"-relation: {model_path} was trained with {len(recorded)} relations, "
                         f"{len(designs)} given")
    out = []
    for rel, rec in zip(designs, recorded):
        if rel.n_features > rec["n_features"]:
            raise UsageError(f"-relation {rel.name}: {rel.n_features} features, but the model has "
                             f"{rec['n_features']} for relation {len(out) + 1}")
        rel.offset, rel.n_features = int(rec["offset"]), int(rec["n_features"])
        out.append((rel, read_links(rel.name + ".test", None, rel.n_rows, "test")))
    return tuple(out)

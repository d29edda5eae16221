"""`fmcli predict`: score rows with a saved model, streaming in chunks.

Memory stays flat whatever the input size: rows are parsed, scored and
written one chunk at a time. A file output is written to a temporary file and
renamed at the end; standard output receives each chunk as it is scored.
"""

import numpy as np

from fmcli import metrics
from fmcli.console import Console
from fmcli.io.atomic import atomic_output, check_distinct, check_writable, publish_together
from fmcli.io.predictions import format_predictions


def run_predict(model_path, test_path, out_path="-", task=None, console=None, chunk_bytes=32 << 20,
                relations=()):
    """Write one prediction per row of `test_path`; returns the number of rows scored.
    relations: the relation names the model was trained with; the relation row of each
    predicted row comes from R.test."""
    from fmcli.errors import InputError, TrainingError
    from fmcli.io.modelfile import load_model

    console = console or Console()
    check_distinct([("-model", model_path), ("-test", test_path)] + relation_inputs(relations, ("test",)),
                   [("-out", out_path)])
    check_writable(out_path, "-out")
    model = load_model(model_path, task=task)
    rels = model_relations(model, model_path, relations)
    classes = model.task == "c"
    n_rows, labeled, sums = 0, True, np.zeros(2)
    with publish_together(), atomic_output(out_path) as out:
        for chunk in _chunks(test_path, chunk_bytes):
            part = tuple((rel, links[n_rows:n_rows + chunk.n_rows]) for rel, links in rels)
            for rel, links in part:
                if len(links) < chunk.n_rows:
                    raise InputError(rel.name + ".test", None, f"{n_rows + len(links)} relation row indices "
                                     f"for at least {n_rows + chunk.n_rows} rows of {test_path}")
            pred = model.predict(*chunk.csr(), relations=part)
            if not np.isfinite(pred).all():
                raise TrainingError(f"{model_path}: the model gives NaN or inf predictions")
            out.write(format_predictions(pred))
            n_rows += chunk.n_rows
            labeled = labeled and bool(np.isfinite(chunk.y).all())
            if labeled:  # running sums keep memory flat; AUC needs all rows, so it is left out here
                y = np.where(chunk.y > 0, 1.0, -1.0) if classes else chunk.y
                sums += _metric_sums(model.task, pred, y)
        for rel, links in rels:
            if len(links) != n_rows:
                raise InputError(rel.name + ".test", None, f"{len(links)} relation row indices for "
                                 f"{n_rows} rows of {test_path}: one index per row is needed")
    what = "values clipped to the training target range" if model.task == "r" else "probabilities of class +1"
    where = "stdout" if out_path == "-" else out_path
    console.info(f"Wrote {n_rows} predictions ({what}) to {where}")
    if labeled and n_rows:
        a, b = sums / n_rows
        m = {"rmse": np.sqrt(a), "mae": b} if model.task == "r" else {"accuracy": a, "logloss": b}
        console.info("Test\t" + "\t".join(f"{k}={v:.6g}" for k, v in m.items()))
    return n_rows


def _chunks(path, chunk_bytes):
    """Chunks of rows: parsed text, or slices of a memory-mapped binary data file."""
    from fmcli.data import SparseData
    from fmcli.io.cache import is_binary
    from fmcli.io.load import read_binary
    from fmcli.io.libsvm import iter_libfm_chunks

    if path == "-" or not is_binary(path):
        yield from iter_libfm_chunks(path, chunk_bytes=chunk_bytes, targets="optional")
        return
    d = read_binary(path, targets="optional")
    rows = max(1, chunk_bytes // 64)
    for a in range(0, d.n_rows, rows):
        b = min(a + rows, d.n_rows)
        p, q = d.indptr[a], d.indptr[b]
        yield SparseData(np.asarray(d.indptr[a:b + 1]) - p, d.indices[p:q], d.data[p:q], d.y[a:b],
                         d.n_features, d.source)


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


def _metric_sums(task, pred, y):
    """Per-chunk sums whose means are (MSE, MAE) or (accuracy, log-loss)."""
    n = len(y)
    if task == "r":
        return np.array([metrics.rmse(pred, y) ** 2 * n, metrics.mae(pred, y) * n])
    return np.array([metrics.accuracy(pred, y) * n, metrics.log_loss(pred, y) * n])

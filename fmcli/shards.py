"""`fmcli predict --shards N`: one large input scored as N independent tasks (fmcli.executors:
local processes or Dask), the output identical to a single-process `fmcli predict`.

A libFM text file (uncompressed, on a file system every worker sees) is cut into N byte
ranges at line boundaries; a binary data file into N row ranges. Each task loads the model,
scores its range in chunks and returns the formatted lines (and a -task o model's class
probabilities for --out-proba) with its metric sums; the lines are written in input order to
the one output (atomically), so the files are the same bytes as `fmcli predict` writes. Relations are not sharded (their R.test links would need slicing too).
"""

import mmap
import os

import numpy as np

from fmcli.errors import UsageError

COUNT_WINDOW = 1 << 22   # bytes compared at a time when counting lines (a small temporary)


def _newlines(buf, a, b):
    """The number of b"\\n" in buf[a:b] (a uint8 array), without copying the range: the
    client counts every shard's lines before the first task starts, so this is serial time."""
    return sum(int(np.count_nonzero(buf[i:min(i + COUNT_WINDOW, b)] == 10)) for i in range(a, b, COUNT_WINDOW))


def text_spans(path, n):
    """[(start byte, end byte, first line number)] of n ranges of `path`, cut after newlines."""
    size = os.path.getsize(path)
    if size == 0:
        return [(0, 0, 1)]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        cuts = [0]
        for i in range(1, n):
            at = m.find(b"\n", max(cuts[-1], size * i // n))
            if at < 0:
                break
            if at + 1 < size:
                cuts.append(at + 1)
        cuts.append(size)
        spans, line = [], 1
        buf = np.frombuffer(m, np.uint8)
        for a, b in zip(cuts, cuts[1:]):
            if b > a:
                spans.append((a, b, line))
                line += _newlines(buf, a, b)
        del buf   # the mmap cannot close while an array exports its buffer
    return spans


def predict_task(spec):
    """Score one shard; returns (formatted lines, --out-proba's lines or None, rows, labeled,
    metric sums)."""
    from fmcli.io.modelfile import load_model
    from fmcli.io.predictions import format_predictions
    from fmcli.scoring import RunningMetrics, check_finite, chunks, score_chunk

    model = load_model(spec["model"], task=spec["task"])
    pieces, probas, rows, running = [], [], 0, RunningMetrics(model.task)
    for chunk in chunks(spec["test"], spec["chunk_bytes"], span=spec.get("span"), rows=spec.get("rows")):
        pred, proba = score_chunk(model, chunk, out_class=spec["out_class"], proba=spec["proba"])
        check_finite(pred, spec["model"])
        pieces.append(format_predictions(pred))
        probas.append(proba)
        rows += chunk.n_rows
        running.add(pred, chunk.y)
    return "".join(pieces), "".join(probas) if spec["proba"] else None, rows, running.labeled, running.sums


def shard_specs(model_path, test_path, n, task, chunk_bytes, out_class=False, proba=False):
    """The tasks of `n` shards of `test_path` (out_class, proba: a -task o model's outputs, as
    fmcli.scoring.score_chunk's)."""
    from fmcli.io.cache import is_binary
    from fmcli.io.load import read_binary
    from fmcli.io.sources import open_source

    if test_path == "-" or not os.path.isfile(test_path):
        raise UsageError("--shards needs -test to be a file (standard input cannot be split)")
    base = dict(model=model_path, test=test_path, task=task, chunk_bytes=chunk_bytes, out_class=out_class,
                proba=proba)
    if is_binary(test_path):
        total = read_binary(test_path, targets="optional").n_rows
        cuts = [total * i // n for i in range(n + 1)]
        return [dict(base, rows=(a, b)) for a, b in zip(cuts, cuts[1:]) if b > a]
    f, src = open_source(test_path)
    f.close()
    if src.kind is not None:
        raise UsageError(f"--shards: {test_path} is {src.kind}-compressed: a shard cannot start in the middle "
                         "(decompress it, or convert it with fmcli convert --binary)")
    return [dict(base, span=span) for span in text_spans(test_path, n)]

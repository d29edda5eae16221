"""Reading libFM's relations (`-relation NAMES`, block structure; libfm-behaviour §4).

For a relation named R (a path without extension, as libFM takes it):

    R.xt        the relation's design matrix, libFM's binary transposed format (what libFM
                reads for ALS/MCMC); if it is missing:
    R.x         the design matrix by rows: libFM's binary format (detected by its header) or
                libFM text, one relation row per line, `[target] id:value ...` (a target is
                optional and ignored; a row without features needs a placeholder target such
                as `0`, since blank lines are skipped as in every libFM file). Ids are the
                relation's own, 0-based.
    R.train     the relation row (0-based) of each train row: text (one integer per line) or
    R.test      libFM's binary u32 vector (u32 1, u32 4, u32 n, n u32), detected by its first
    R.validation   8 bytes; the same for test and validation rows (R.validation: fmcli only)
    R.groups    optional: the group of each of the relation's features (-meta format)

Unlike libFM, the number of indices must equal the number of rows of the main file, and
every index must name a relation row; both are errors (exit 2), not undefined behaviour.
Binary files are little-endian, as libFM writes them (§2.3).
"""

import os

import numpy as np

from fmcli.config import njit
from fmcli.data import Relation, transpose
from fmcli.errors import InputError

SPARSE_MAGIC = 2
VECTOR_MAGIC = 1


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(path, None, f"cannot read relation file: {exc.strerror or exc}") from None


@njit
def _walk_rows(words, n_rows):
    """Positions of libFM's binary rows in `words` (u32 after the header): each row is a count
    and count (id, value) pairs. Returns (indptr, entry positions, words used) or words used
    -1 when the data end inside a row."""
    indptr = np.zeros(n_rows + 1, np.int64)
    pos = 0
    total = 0
    for r in range(n_rows):
        if pos >= words.shape[0]:
            return indptr, np.empty(0, np.int64), -1
        c = np.int64(words[pos])
        pos += 1
        if pos + 2 * c > words.shape[0]:
            return indptr, np.empty(0, np.int64), -1
        total += c
        indptr[r + 1] = total
        pos += 2 * c
    where = np.empty(total, np.int64)
    pos = 0
    t = 0
    for r in range(n_rows):
        c = np.int64(words[pos])
        pos += 1
        for e in range(c):
            where[t] = pos + 2 * e
            t += 1
        pos += 2 * c
    return indptr, where, pos


def is_binary_sparse(raw):
    return len(raw) >= 8 and np.frombuffer(raw[:8], "<u4").tolist() == [SPARSE_MAGIC, 4]


def read_binary_sparse(path, raw=None):
    """libFM's binary sparse matrix: (indptr, indices, data, n_rows, n_cols)."""
    raw = _read(path) if raw is None else raw
    if len(raw) < 24 or not is_binary_sparse(raw):
        raise InputError(path, None, "not a libFM binary matrix (header u32 2, u32 4 expected)")
    n_values = int(np.frombuffer(raw[8:16], "<u8")[0])
    n_rows, n_cols = (int(v) for v in np.frombuffer(raw[16:24], "<u4"))
    if (len(raw) - 24) % 4:
        raise InputError(path, None, "truncated libFM binary matrix")
    words = np.frombuffer(raw, "<u4", offset=24)
    indptr, where, used = _walk_rows(words, n_rows)
    if used < 0:
        raise InputError(path, None, f"truncated libFM binary matrix ({n_rows} rows in the header)")
    if used != len(words):
        raise InputError(path, None, f"{4 * (len(words) - used)} bytes after the last of {n_rows} rows")
    if indptr[-1] != n_values:
        raise InputError(path, None, f"the header says {n_values} values, the rows hold {indptr[-1]}")
    indices = words[where]
    if len(indices) and int(indices.max()) >= n_cols:
        raise InputError(path, None, f"column id {int(indices.max())} >= {n_cols} columns in the header")
    data = words[where + 1].view("<f4").astype(np.float32)
    return indptr, indices.astype(np.int32), data, n_rows, n_cols


def read_design(name, cache=True):
    """The relation's design matrix as a Relation (offset 0, no groups) from R.xt or R.x."""
    xt, x = name + ".xt", name + ".x"
    if os.path.exists(xt):
        tptr, tind, tval, n_feat, n_rows = read_binary_sparse(xt)
        indptr, indices, data = transpose(tptr, tind, tval, n_rows)
        return Relation(name, indptr, indices, data, n_feat)
    if not os.path.exists(x):
        raise InputError(name, None, f"relation {name!r}: neither {xt} (libFM binary) nor {x} "
                         "(libFM text or binary) exists")
    with open(x, "rb") as fh:
        head = fh.read(8)
    if is_binary_sparse(head):
        indptr, indices, data, _, n_feat = read_binary_sparse(x)
        return Relation(name, indptr, indices, data, n_feat)
    from fmcli.io.load import load_dataset

    d = load_dataset(x, cache=cache, targets="optional")
    return Relation(name, np.asarray(d.indptr), np.asarray(d.indices), np.asarray(d.data), d.n_features)


def read_links(path, n_rows, n_relation_rows, what):
    """The relation row of each of the `n_rows` main rows (int64), text or libFM binary
    (n_rows None: any count, checked by the caller)."""
    raw = _read(path)
    if len(raw) >= 8 and np.frombuffer(raw[:8], "<u4").tolist() == [VECTOR_MAGIC, 4]:
        if len(raw) < 12:
            raise InputError(path, None, "truncated libFM binary vector")
        n = int(np.frombuffer(raw[8:12], "<u4")[0])
        if len(raw) != 12 + 4 * n:
            raise InputError(path, None, f"libFM binary vector of {n} values has {len(raw) - 12} data bytes")
        links = np.frombuffer(raw, "<u4", offset=12).astype(np.int64)
    else:
        tokens = raw.split()
        if not all(t.isdigit() and len(t) < 19 for t in tokens):
            for line_no, line in enumerate(raw.split(b"\n"), start=1):
                bad = [t for t in line.split() if not (t.isdigit() and len(t) < 19)]
                if bad:
                    raise InputError(path, line_no, f"relation row index {bad[0].decode('utf-8', 'replace')!r} "
                                     "is not a non-negative integer")
        links = np.array([int(t) for t in tokens], np.int64)
    if n_rows is not None and len(links) != n_rows:
        raise InputError(path, None, f"{len(links)} relation row indices for {n_rows} {what} rows: "
                         f"one index per {what} row is needed")
    if len(links) and int(links.max()) >= n_relation_rows:
        bad = int(np.argmax(links >= n_relation_rows))
        raise InputError(path, None, f"relation row index {int(links[bad])} (for {what} row {bad + 1}) "
                         f"but the relation has {n_relation_rows} rows")
    return links


def load_relations(names, n_main, parts, cache=True):
    """Relations `names` for the data sets `parts` ({"train": n_rows, "test": n_rows, ...}):
    {part: ((Relation, links), ...)}. Offsets: relation 0 starts at n_main, relation r+1
    after relation r, as in libFM."""
    from fmcli.io.meta import read_meta

    out = {part: [] for part in parts}
    offset = n_main
    for name in names:
        rel = read_design(name, cache=cache)
        rel.offset = offset
        offset += rel.n_features
        if os.path.exists(name + ".groups"):
            rel.groups = read_meta(name + ".groups", rel.n_features)
        for part, n_rows in parts.items():
            out[part].append((rel, read_links(f"{name}.{part}", n_rows, rel.n_rows, part)))
    return {part: tuple(v) for part, v in out.items()}


def relations_meta(relations):
    """What a model file records about its relations (checked by `fmcli predict`)."""
    return [{"name": r.name, "offset": int(r.offset), "n_features": int(r.n_features)} for r, _ in relations]

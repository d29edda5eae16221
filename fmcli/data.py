"""The in-memory data set every learner works on: CSR rows plus targets, optionally linked to
relation blocks (libFM's block structure); compiled helpers to reorder rows, transpose and
flatten relations."""

from dataclasses import dataclass

import numpy as np

from fmcli.config import njit
from fmcli.memory import release_pages


@dataclass
class SparseData:
    indptr: np.ndarray      # int64, n_rows + 1
    indices: np.ndarray     # int32 feature ids (0-based, as in the file)
    data: np.ndarray        # float32 values
    y: np.ndarray           # float32 targets, NaN where a row has none (prediction input)
    n_features: int         # largest id + 1 (0 for a file without entries)
    source: str = "<data>"  # file name for messages ("<stdin>" for -)
    max_id_line: int = 0    # line where the largest id occurs, for "too large" errors
    # libFM block structure: (Relation, links) pairs, links[i] = the relation row (0-based,
    # int64) whose features row i also has; the Relation object is shared by train and test
    relations: tuple = ()
    # -weights: one non-negative weight per row (float64), or None: every row weighs 1
    weights: np.ndarray = None

    @property
    def n_rows(self):
        return len(self.indptr) - 1

    @property
    def n_model_features(self):
        """Features of the model these rows need: the main ids and every relation's ids."""
        return max([self.n_features] + [r.offset + r.n_features for r, _ in self.relations])

    @property
    def nnz(self):
        return len(self.indices)

    def csr(self):
        return self.indptr, self.indices, self.data


def index_dtype(n):
    """int32 for indices below n when they fit: half the memory of int64 (perm, indptr)."""
    return np.int32 if n < 2**31 else np.int64


def read_only(*arrays):
    """Read-only views of the arrays (no copies): numba compiles a kernel once per form of its
    array arguments, writable or not, and a memory-mapped cache's arrays are read-only, so
    kernels fed from both take them in this one form."""
    out = []
    for a in arrays:
        v = a.view()
        v.flags.writeable = False
        out.append(v)
    return out


def transpose(indptr, indices, data, n_cols):
    """CSC (cptr, crow, cval) of a CSR matrix by counting sort: each column's rows ascending,
    duplicated entries kept. The rows are given to the kernel in one form (row pointers of
    index_dtype, read-only views), so it is compiled once for every caller."""
    indptr = np.asarray(indptr).astype(index_dtype(len(indices)), copy=False)
    return _transpose(*read_only(indptr, np.asarray(indices), np.asarray(data)), n_cols)


@njit
def _transpose(indptr, indices, data, n_cols):
    n_rows = indptr.shape[0] - 1
    cptr = np.zeros(n_cols + 1, np.int64)
    for p in range(indices.shape[0]):
        cptr[indices[p] + 1] += 1
    for j in range(n_cols):
        cptr[j + 1] += cptr[j]
    fill = cptr[:-1].copy()
    crow = np.empty(indices.shape[0], np.int32)
    cval = np.empty(indices.shape[0], np.float32)
    for i in range(n_rows):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            crow[fill[j]] = i
            cval[fill[j]] = data[p]
            fill[j] += 1
    return cptr, crow, cval


@njit
def row_nonzeros(indptr, data):
    """Each CSR row's count of non-zero values (int32); a duplicated entry counts each time."""
    n_rows = indptr.shape[0] - 1
    out = np.zeros(n_rows, np.int32)
    for i in range(n_rows):
        for p in range(indptr[i], indptr[i + 1]):
            if data[p] != 0:
                out[i] += 1
    return out


def permute_rows(indptr, indices, data, perm, release_source=False):
    """The CSR rows perm[0], perm[1], ... as a new CSR matrix. The source is read in file
    order, chunk by chunk (each row scattered to its place). release_source: the source is
    memory-mapped and will not be read again: each chunk's pages are dropped once copied
    (fmcli.memory.release_pages), so the copy and the whole source are never resident
    together."""
    out_ptr = _permuted_ptr(indptr, perm)
    if release_source:
        release_pages(indptr)   # read in perm's order above; below again in file order
    dest = _inverse(perm, np.int32 if len(perm) < 2**31 else np.int64)
    out_ind = np.empty(out_ptr[-1], indices.dtype)
    out_val = np.empty(out_ptr[-1], data.dtype)
    step = max(1, len(perm) * (1 << 22) // max(1, len(indices)))   # about 4M entries per chunk
    for a in range(0, len(perm), step):
        b = min(a + step, len(perm))
        _scatter_rows(indptr, indices, data, dest, out_ptr, out_ind, out_val, a, b)
        if release_source:
            release_pages(indices, indptr[a], indptr[b])
            release_pages(data, indptr[a], indptr[b])
            release_pages(indptr, a, b)
    return out_ptr, out_ind, out_val


def take_rows(d, rows):
    """The rows `rows` (in that order) of SparseData `d`; its feature count is theirs (largest
    id + 1), as the reader would give for a file of those rows."""
    rows = np.asarray(rows, np.int64)
    starts, lengths = d.indptr[rows], d.indptr[rows + 1] - d.indptr[rows]
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    src = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    indices = np.ascontiguousarray(d.indices[src])
    return SparseData(indptr, indices, np.ascontiguousarray(d.data[src]), np.ascontiguousarray(d.y[rows]),
                      int(indices.max()) + 1 if len(indices) else 0, d.source)


@njit
def _permuted_ptr(indptr, perm):
    n = perm.shape[0]
    out_ptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        out_ptr[r + 1] = out_ptr[r] + indptr[perm[r] + 1] - indptr[perm[r]]
    return out_ptr


@njit
def _inverse(perm, dtype):
    """dest with dest[perm[r]] = r (no n-sized temporary besides the result)."""
    dest = np.empty(perm.shape[0], dtype)
    for r in range(perm.shape[0]):
        dest[perm[r]] = r
    return dest


@njit
def _scatter_rows(indptr, indices, data, dest, out_ptr, out_ind, out_val, a, b):
    """Source rows a..b-1 into their places dest[i] of the permuted matrix."""
    for i in range(a, b):
        t = out_ptr[dest[i]]
        for p in range(indptr[i], indptr[i + 1]):
            out_ind[t] = indices[p]
            out_val[t] = data[p]
            t += 1


@dataclass
class Relation:
    """One relation of libFM's block structure (libfm-behaviour §4): a design matrix of its own
    whose rows are shared by many main rows. Main row i has, besides its own features, the
    features of relation row links[i], with the relation's ids shifted by `offset` (relation 0
    starts after the main features, relation r+1 after relation r)."""
    name: str
    indptr: np.ndarray      # int64, relation rows + 1
    indices: np.ndarray     # int32 relation-local feature ids
    data: np.ndarray        # float32
    n_features: int         # p: the relation's ids are 0..p-1
    offset: int = 0         # model id of the relation's feature 0
    groups: np.ndarray = None   # R.groups: the relation's own -meta groups, or None

    @property
    def n_rows(self):
        return len(self.indptr) - 1

    def csr(self):
        return self.indptr, self.indices, self.data


def flatten(d):
    """The same rows with every relation's features written out (ids shifted): what libFM's
    block structure stands for. For tests and benchmarks; this is the O(rows x block width)
    data the relations avoid."""
    if not d.relations:
        return d
    parts = [(r.indptr, r.indices, r.data, np.int64(r.offset), np.asarray(links, np.int64))
              for r, links in d.relations]
    indptr, indices, data = d.indptr, d.indices, d.data
    for rptr, rind, rval, off, links in parts:
        indptr, indices, data = _append_relation(indptr, indices, data, rptr, rind, rval, off, links)
    return SparseData(indptr, indices, data, d.y, d.n_model_features, d.source)


@njit
def _append_relation(indptr, indices, data, rptr, rind, rval, offset, links):
    """Each CSR row followed by the entries of relation row links[i], ids + offset."""
    n = indptr.shape[0] - 1
    out_ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        out_ptr[i + 1] = out_ptr[i] + indptr[i + 1] - indptr[i] + rptr[links[i] + 1] - rptr[links[i]]
    out_ind = np.empty(out_ptr[n], np.int32)
    out_val = np.empty(out_ptr[n], np.float32)
    for i in range(n):
        t = out_ptr[i]
        for p in range(indptr[i], indptr[i + 1]):
            out_ind[t] = indices[p]
            out_val[t] = data[p]
            t += 1
        for p in range(rptr[links[i]], rptr[links[i] + 1]):
            out_ind[t] = rind[p] + offset
            out_val[t] = rval[p]
            t += 1
    return out_ptr, out_ind, out_val


def feature_groups(groups, n_main, relations, n):
    """Group id of each of the n model features: the main features' `groups` (None: all 0),
    then each relation's own groups (R.groups, or one group per relation) numbered after the
    groups before it, as libFM does. `groups` of length n already covers everything."""
    g = np.zeros(n_main, np.int64) if groups is None else np.asarray(groups, np.int64)
    if len(g) >= n or not relations:
        return g
    parts = [g[:n_main]]
    nxt = int(g[:n_main].max()) + 1 if n_main else 0
    end = n_main
    for r in sorted(relations, key=lambda r: r.offset):
        if r.offset > end:   # ids between relations (none when the offsets come from the loader)
            parts.append(np.zeros(r.offset - end, np.int64))
        rg = np.zeros(r.n_features, np.int64) if r.groups is None else np.asarray(r.groups, np.int64)
        parts.append(rg + nxt)
        nxt += int(rg.max()) + 1 if len(rg) else 1
        end = r.offset + r.n_features
    out = np.concatenate(parts)
    if len(out) < n:    # features after the last relation (none when the offsets come from the loader)
        out = np.concatenate([out, np.zeros(n - len(out), np.int64)])
    return out

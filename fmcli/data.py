"""The in-memory data set every learner works on: CSR rows plus targets; compiled helpers to
reorder rows and transpose."""

from dataclasses import dataclass

import numpy as np

from fmcli.config import njit


@dataclass
class SparseData:
    indptr: np.ndarray      # int64, n_rows + 1
    indices: np.ndarray     # int32 feature ids (0-based, as in the file)
    data: np.ndarray        # float32 values
    y: np.ndarray           # float32 targets, NaN where a row has none (prediction input)
    n_features: int         # largest id + 1 (0 for a file without entries)
    source: str = "<data>"  # file name for messages ("<stdin>" for -)
    max_id_line: int = 0    # line where the largest id occurs, for "too large" errors

    @property
    def n_rows(self):
        return len(self.indptr) - 1

    @property
    def nnz(self):
        return len(self.indices)

    def csr(self):
        return self.indptr, self.indices, self.data


@njit
def transpose(indptr, indices, data, n_cols):
    """CSC (cptr, crow, cval) of a CSR matrix by counting sort: each column's rows ascending,
    duplicated entries kept."""
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
def permute_rows(indptr, indices, data, perm):
    """The CSR rows perm[0], perm[1], ... as a new CSR matrix."""
    n = perm.shape[0]
    out_ptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        out_ptr[r + 1] = out_ptr[r] + indptr[perm[r] + 1] - indptr[perm[r]]
    out_ind = np.empty(out_ptr[n], indices.dtype)
    out_val = np.empty(out_ptr[n], data.dtype)
    for r in range(n):
        src = indptr[perm[r]]
        for t in range(out_ptr[r + 1] - out_ptr[r]):
            out_ind[out_ptr[r] + t] = indices[src + t]
            out_val[out_ptr[r] + t] = data[src + t]
    return out_ptr, out_ind, out_val

"""The in-memory data set every learner works on: CSR rows plus targets."""

from dataclasses import dataclass

import numpy as np


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

    def to_csc(self, n_features=None):
        """(indptr, indices, data) of the transpose: for each feature, its rows in increasing order."""
        import scipy.sparse as sp

        n = max(self.n_features, n_features or 0)
        m = sp.csr_matrix((self.data, self.indices, self.indptr), shape=(self.n_rows, n)).tocsc()
        # scipy may sum duplicate entries only when asked; keep them as libFM does
        return m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32)

"""Higher-order interactions (orders 3 and more, `-dim k0,k1,k2,k3,...`): the ANOVA kernel.

    A^t(P, x) = Σ_f Σ_{j1 < ... < jt} Π_s p_{js,f} x_{js}          (one factor matrix per order)

Each order t ≥ 3 has its own factor matrix P^(t) (n, k_t). All of them are kept side by side
in one matrix H (n, K = Σ k_t), a feature's higher-order factors contiguous, with the order
of each column in `col_order` (K,) int64; FMModel.orders lists (t, k_t) per order.

Per row and column c of order t the elementary symmetric polynomials a_s (s = 0..t) of the
row's values p_{j,c} x_j come from the dynamic programme over the row's entries

    a_0 = 1;  for each entry j:  a_s ← a_s + x_j p_{j,c} a_{s−1}   (s = t … 1, descending)

so A^t = Σ_c a_t: O(t K nnz) per row set, never an enumeration of subsets. Every entry of a row
counts as its own feature (a repeated id in a row is two features that share parameters), as
the order-2 sum-of-squares formula does.

Gradients. ∂a_t/∂p_{j,c} = x_j b_{t−1} with b the row's polynomials without entry j, by the
reverse recursion b_0 = 1, b_s = a_s − x_j p_{j,c} b_{s−1}. After p_{j,c} changes by Δ, each
a_s changes by x_j Δ b_{s−1} (the ALS/MCMC caches are kept so).
"""

import numpy as np
from numba import prange

from fmcli.config import MAX_ORDER, njit  # noqa: F401 (MAX_ORDER: the kernels' limit)

ROWS_PER_TASK = 4096     # rows of one parallel task (fixed arithmetic per row: thread-independent)


def column_orders(orders):
    """col_order (K,) int64 from [(t, k_t), ...]."""
    out = [t for t, k in orders for _ in range(k)]
    return np.array(out, np.int64)


@njit(inline="always")
def row_polynomials(indices, data, start, end, H, col_order, a):
    """a[c, s] (s = 0..col_order[c]) of one row's entries start..end; ids ≥ H.shape[0] count
    nothing. Returns Σ_c a[c, col_order[c]], the row's higher-order part of ŷ."""
    n_features, K = H.shape
    for c in range(K):
        a[c, 0] = 1.0
        for s in range(1, col_order[c] + 1):
            a[c, s] = 0.0
    for p in range(start, end):
        j = indices[p]
        if j >= n_features:
            continue
        x = np.float64(data[p])
        for c in range(K):
            px = H[j, c] * x
            if col_order[c] == 3:   # unrolled (the common case): the same arithmetic
                a[c, 3] += px * a[c, 2]
                a[c, 2] += px * a[c, 1]
                a[c, 1] += px
            else:
                for s in range(col_order[c], 0, -1):
                    a[c, s] += px * a[c, s - 1]
    total = 0.0
    for c in range(K):
        total += a[c, col_order[c]]
    return total


@njit(inline="always")
def without_entry(a, c, t, px, b):
    """b[0..t−1]: the polynomials a[c, ·] of a row without one entry whose value x p is px."""
    b[0] = 1.0
    for s in range(1, t):
        b[s] = a[c, s] - px * b[s - 1]


@njit(parallel=True)
def add_higher_orders(indptr, indices, data, H, col_order, out):
    """out[i] += the higher-order part of row i's ŷ (Σ_t A^t), ROWS_PER_TASK rows per task."""
    n_rows = indptr.shape[0] - 1
    K = H.shape[1]
    if K == 0:
        return
    tmax = col_order.max()
    for b in prange((n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        a = np.empty((K, tmax + 1))
        for i in range(b * ROWS_PER_TASK, min(n_rows, (b + 1) * ROWS_PER_TASK)):
            out[i] += row_polynomials(indices, data, indptr[i], indptr[i + 1], H, col_order, a)


@njit(inline="always")
def entry_gradient(a, c, t, px, x, b):
    """∂a_t/∂p_{j,c} of a row = x_j b_{t−1} (b: the row's polynomials without the entry, whose
    x p is px; b is scratch of length ≥ t)."""
    if t == 3:   # unrolled: b1 = a1 − px, b2 = a2 − px b1
        return x * (a[c, 2] - px * (a[c, 1] - px))
    without_entry(a, c, t, px, b)
    return x * b[t - 1]


@njit
def row_gradients(indices, data, start, end, H, col_order, out):
    """out[p − start, c] = ∂(Σ_t A^t)/∂p_{j,c} of one row's entry p (j = indices[p]), at the
    current H (for the tests; the SGD kernel calls entry_gradient itself)."""
    K = H.shape[1]
    tmax = col_order.max() if K else 0
    a = np.empty((K, tmax + 1))
    b = np.empty(tmax + 1)
    row_polynomials(indices, data, start, end, H, col_order, a)
    for p in range(start, end):
        j = indices[p]
        x = np.float64(data[p])
        for c in range(K):
            out[p - start, c] = entry_gradient(a, c, col_order[c], H[j, c] * x, x, b)

"""Slow, obviously correct dense references for testing the compiled code.

Everything here works on dense arrays with plain loops or numpy, O(p²) per row.
"""

import numpy as np


def fm_predict_dense(X, w0, w, V):
    """ŷ_i = w0 + Σ_j w_j x_ij + Σ_{j<l} <v_j, v_l> x_ij x_il, by the pairwise definition."""
    X = np.asarray(X, np.float64)
    n, p = X.shape
    out = np.empty(n)
    for i in range(n):
        acc = w0 + float(np.dot(w[:p], X[i]))
        nz = np.flatnonzero(X[i])
        for a in range(len(nz)):
            for b in range(a + 1, len(nz)):
                j, l = nz[a], nz[b]
                acc += float(np.dot(V[j], V[l])) * X[i, j] * X[i, l]
        out[i] = acc
    return out


def fm_predict_rows(rows, w0, w, V):
    """Same for rows given as lists of (feature, value) entries; repeated features are separate
    entries (each pair of entries counts, as libFM)."""
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        acc = w0
        for a, (j, x) in enumerate(row):
            acc += w[j] * x
            for jb, xb in row[a + 1:]:
                acc += float(np.dot(V[j], V[jb])) * x * xb
        out[i] = acc
    return out


def factor_sums(X, V):
    """q[i, f] = Σ_j v_{j,f} x_ij."""
    return np.asarray(X, np.float64) @ V


def regularised_loss(X, y, w0, w, V, lam0, lam_w, lam_v):
    """½ Σ (ŷ − y)² + ½ λ0 w0² + ½ Σ_j λw_j w_j² + ½ Σ_{j,f} λv_j v_{j,f}²
    (lam_w, lam_v: one λ per feature, e.g. the group's)."""
    r = fm_predict_dense(X, w0, w, V) - y
    return 0.5 * (r @ r + lam0 * w0 ** 2 + np.sum(lam_w * w ** 2) + np.sum(lam_v[:, None] * V ** 2))


def brute_force_minimiser(loss_of, theta0, scan_width=5.0, n_scan=41):
    """Minimiser of a 1-D function that is quadratic in θ (the FM loss along one coordinate):
    the vertex of the parabola through three points, checked against a scan: n_scan points
    over θ0 ± scan_width, then n_scan points over the two grid steps around the best of them
    (the vertex must be within one fine step of the scan's best, or no worse than it)."""
    t = np.array([theta0 - 1.0, theta0, theta0 + 1.0])
    L = np.array([loss_of(v) for v in t])
    a, b, _c = np.polyfit(t, L, 2)
    vertex = -b / (2 * a) if a > 0 else None
    grid = np.linspace(theta0 - scan_width, theta0 + scan_width, n_scan)
    coarse = grid[int(np.argmin([loss_of(v) for v in grid]))]
    step = grid[1] - grid[0]
    fine = np.linspace(coarse - step, coarse + step, n_scan)
    scan_best = fine[int(np.argmin([loss_of(v) for v in fine]))]
    if vertex is None:
        return scan_best
    assert abs(vertex - scan_best) <= fine[1] - fine[0] + 1e-9 or loss_of(vertex) <= loss_of(scan_best) + 1e-12
    return vertex


def dense_to_rows(X):
    """CSR arrays (indptr, indices, data) of a dense matrix, entries in column order."""
    X = np.asarray(X)
    indptr = [0]
    indices, data = [], []
    for row in X:
        nz = np.flatnonzero(row)
        indices.extend(nz)
        data.extend(row[nz])
        indptr.append(len(indices))
    return (np.array(indptr, np.int64), np.array(indices, np.int32), np.array(data, np.float32))


def dense_coordinate_sweep(X, t, w0, w, V, coords, lam0, lam_w, lam_v, mu_w=None, mu_v=None,
                           alpha=1.0, normal=None, weights=None):
    """The textbook coordinate updates of an FM, densely and in float64: for each coordinate
    in `coords` (("w0",), ("w", j) or ("v", j, f)), in order, with h_i = ∂ŷ_i/∂θ and
    e_i = ŷ_i − t_i over all rows,

        P = λ + α Σ h²,   m = (α Σ h (θ h − e) + λ μ) / P,   θ = m + z/√P

    (z = normal(coord), 0 by default: ALS's exact minimiser; λ, μ of the feature's group:
    lam_w[j], lam_v[j, f] per feature). weights u (per row): the weighted least squares
    P = λ + α Σ u h², m = (α Σ u h (θ h − e) + λ μ) / P. Returns (w0, w, V) after the sweep."""
    X = np.asarray(X, np.float64)
    w, V = np.array(w, np.float64), np.array(V, np.float64)
    n, p = X.shape
    u = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    mu_w = np.zeros(p) if mu_w is None else mu_w
    mu_v = np.zeros_like(V) if mu_v is None else mu_v
    e = fm_predict_dense(X, w0, w, V) - t
    q = X @ V
    for c in coords:
        z = 0.0 if normal is None else normal(c)
        if c[0] == "w0":
            h, old, lam, mu = np.ones(n), w0, lam0, 0.0
        elif c[0] == "w":
            j = c[1]
            h, old, lam, mu = X[:, j], w[j], lam_w[j], mu_w[j]
        else:
            j, f = c[1], c[2]
            h, old, lam, mu = X[:, j] * (q[:, f] - X[:, j] * V[j, f]), V[j, f], lam_v[j, f], mu_v[j, f]
        P = lam + alpha * (u * h) @ h
        new = 0.0 if P == 0 else (alpha * (u * h) @ (old * h - e) + lam * mu) / P + z / np.sqrt(P)
        e = e + h * (new - old)
        if c[0] == "w0":
            w0 = new
        elif c[0] == "w":
            w[c[1]] = new
        else:
            q[:, c[2]] += X[:, c[1]] * (new - old)
            V[c[1], c[2]] = new
    return w0, w, V


def anova_rows(rows, P, t):
    """A^t per row by enumerating every t-subset of the row's entries (repeated features are
    separate entries): Σ_f Σ_{subsets} Π p_{j,f} x_j."""
    import itertools

    out = np.zeros(len(rows))
    for i, row in enumerate(rows):
        for subset in itertools.combinations(row, t):
            prod = np.ones(P.shape[1])
            for j, x in subset:
                prod = prod * P[j] * x
            out[i] += prod.sum()
    return out


def higher_order_predict_rows(rows, w0, w, V, Ps):
    """ŷ with orders 3, 4, ...: the pairwise model plus Σ_t A^t(P^(t)) (Ps = [P3, P4, ...])."""
    out = fm_predict_rows(rows, w0, w, V)
    for t, P in enumerate(Ps, start=3):
        out += anova_rows(rows, P, t)
    return out

"""The factorization machine: parameters and prediction.

    y(x) = w0 + sum_j w_j x_j + 1/2 sum_f [ (sum_j v_jf x_j)^2 - sum_j v_jf^2 x_j^2 ]

computed in O(k * nnz) with the sum-of-squares identity. Feature ids at or above
the model's `n_features` (seen only in new data) contribute nothing.

Relations (libFM's block structure, fmcli.data.Relation): the features of a relation row are
shared by every main row linked to it, so their part of the sums is computed once per
relation row (relation_terms: b_r = Σ_j w_j x_rj − ½ Σ_{j,f} v_jf² x_rj² and
Q_{r,f} = Σ_j v_jf x_rj) and added to each linked row: O(k (nnz + relation nnz + rows)),
not O(k × rows × relation width).
"""

from dataclasses import dataclass, field

import numpy as np

from numba import prange

from fmcli.config import PARAM_DTYPE, njit
from fmcli.data import read_only

UPCAST_MAX = 1 << 21   # float32 samples of at most this many factor values: predicted from float64 copies

LINKS = ("identity", "logistic", "probit")


@dataclass
class FMModel:
    w0: float
    w: np.ndarray                 # (n_features,)
    V: np.ndarray                 # (n_features, k): a feature's factors are contiguous
    use_w0: bool = True
    use_w: bool = True
    task: str = "r"               # "r" regression, "c" classification
    link: str = "identity"        # identity (clipped to [y_min, y_max]), logistic or probit
    y_min: float = -np.inf
    y_max: float = np.inf
    meta: dict = field(default_factory=dict)  # method, options, ... (stored in model files)
    # MCMC: (w0 (S,), w (S, n), V (S, n, k)); predictions average the link-applied
    # prediction of each sample, as training's -out does. w0, w, V then hold the last sample.
    samples: tuple = None
    # orders >= 3 (fmcli.anova): H (n_features, K) holds every higher order's factors side by
    # side, orders ((t, k_t), ...) says which columns are which order; none: H is (n, 0)
    H: np.ndarray = None
    orders: tuple = ()
    # MCMC with orders >= 3: (S, n, K) the higher-order factors of each of `samples`' draws
    # (as their V); None without samples or orders
    samples_H: np.ndarray = None

    def __post_init__(self):
        if self.H is None:
            self.H = np.zeros((np.shape(self.w)[0], 0), PARAM_DTYPE)
        self.orders = tuple((int(t), int(k)) for t, k in self.orders)

    @property
    def dim(self):
        """The model's -dim: (k0, k1, k2, k3, ...)."""
        return (int(self.use_w0), int(self.use_w), self.k) + tuple(k for _, k in self.orders)

    @property
    def col_order(self):
        from fmcli.anova import column_orders

        return column_orders(self.orders)

    @property
    def n_features(self):
        return self.w.shape[0]

    @property
    def k(self):
        return self.V.shape[1]

    @classmethod
    def init(cls, n_features, k, *, use_w0=True, use_w=True, init_stdev=0.1, rng=None, **kw):
        """w0 = 0, w = 0, V ~ N(0, init_stdev^2) (libFM's initialisation)."""
        rng = np.random.default_rng(0) if rng is None else rng
        V = rng.normal(0.0, init_stdev, size=(n_features, k)) if init_stdev > 0 else np.zeros((n_features, k))
        model = cls(0.0, np.zeros(n_features, PARAM_DTYPE), V.astype(PARAM_DTYPE), use_w0, use_w, **kw)
        if model.orders:   # drawn after V: a -dim 1,1,k run draws what it always did
            K = sum(kt for _, kt in model.orders)
            H = rng.normal(0.0, init_stdev, (n_features, K)) if init_stdev > 0 else np.zeros((n_features, K))
            model.H = H.astype(PARAM_DTYPE)
        return model

    def resized(self, n_features, rng=None, init_stdev=0.0):
        """A copy with room for `n_features` features; new ones start at w = 0, V ~ N(0, init_stdev^2)."""
        extra = n_features - self.n_features
        if extra <= 0:
            return self
        rng = np.random.default_rng(0) if rng is None else rng
        newV = rng.normal(0.0, init_stdev, (extra, self.k)) if init_stdev > 0 else np.zeros((extra, self.k))
        return FMModel(self.w0, np.concatenate([self.w, np.zeros(extra)]), np.vstack([self.V, newV]),
                       self.use_w0, self.use_w, self.task, self.link, self.y_min, self.y_max, dict(self.meta),
                       H=np.vstack([self.H, np.zeros((extra, self.H.shape[1]))]), orders=self.orders)

    def predict_raw(self, indptr, indices, data, params=None, relations=()):
        """Raw scores y(x), one per CSR row, unclipped (params: (w0, w, V) or (w0, w, V, H),
        default the model's, H default the model's; relations: the rows' (Relation, links)
        pairs, SparseData.relations)."""
        w0, w, V = (self.w0, self.w, self.V) if params is None else params[:3]
        H = params[3] if params is not None and len(params) > 3 else self.H
        if V.dtype != PARAM_DTYPE and V.size + H.size <= UPCAST_MAX:
            # float32 samples of a small model: the kernels' one float64 form (the same bits: the
            # arithmetic is float64 either way), so a first run compiles predict_rows once
            w, V, H = (np.asarray(a, PARAM_DTYPE) for a in (w, V, H))
        out = np.empty(len(indptr) - 1, np.float64)
        rel_map = relation_map(relations, len(out))
        predict_rows(*kernel_rows(indptr, indices, data), w0 if self.use_w0 else 0.0, w, V, self.use_w, out,
                     np.empty((0, V.shape[1] + 1), np.float32), rel_map,
                     relation_terms(relations, w, V, self.use_w))
        if H.shape[1]:
            if relations:
                raise ValueError("relations with interaction orders above 2 are not supported")
            from fmcli.anova import add_higher_orders

            add_higher_orders(indptr, indices, data, H, self.col_order, out)
        return out

    def predict(self, indptr, indices, data, relations=()):
        """Predictions as written by `-out`: clipped values (regression) or probabilities;
        for a model with samples, the mean of the per-sample predictions."""
        if self.samples is None:
            raw = self.predict_raw(indptr, indices, data, relations=relations)
            return apply_link(raw, self.link, self.y_min, self.y_max, out=raw)
        total = np.zeros(len(indptr) - 1)
        for params in self.sample_params():
            raw = self.predict_raw(indptr, indices, data, params, relations)
            total += apply_link(raw, self.link, self.y_min, self.y_max, out=raw)
        n = len(self.samples[0])
        return apply_link(total / n, self.link, self.y_min, self.y_max) if self.link == "identity" else total / n

    def sample_params(self):
        """The stored samples' parameters, one predict_raw params tuple each ((w0, w, V), with
        H for orders 3 and up)."""
        w0s, ws, Vs = self.samples
        for s in range(len(w0s)):
            yield (w0s[s], ws[s], Vs[s]) if self.samples_H is None else (w0s[s], ws[s], Vs[s], self.samples_H[s])


def apply_link(raw, link, y_min, y_max, out=None):
    """The link applied to raw scores (out=raw: in place, no second array of the rows' size)."""
    if link == "identity":
        return np.clip(raw, y_min, y_max, out=out)
    if link == "logistic":
        from scipy.special import expit

        return expit(raw, out=out)
    if link == "probit":
        from scipy.special import ndtr

        return ndtr(raw, out=out)
    raise ValueError(f"unknown link {link!r}")


def relation_map(relations, n_rows):
    """(R, n_rows) int64: row i's relation-row index into relation_terms' stacked rows."""
    out = np.empty((len(relations), n_rows), np.int64)
    start = 0
    for t, (rel, links) in enumerate(relations):
        out[t] = links
        out[t] += start
        start += rel.n_rows
    return out


def relation_terms(relations, w, V, use_w):
    """The relation rows' shared part of the prediction, all relations stacked: (rows, k+1)
    float64, column 0 b_r = Σ_j w_j x_rj − ½ Σ_{j,f} v_jf² x_rj², columns 1..k Q_{r,f}
    (relation ids shifted by the relation's offset)."""
    k = V.shape[1]
    agg = np.empty((sum(rel.n_rows for rel, _ in relations), k + 1))
    start = 0
    for rel, _ in relations:
        terms = agg[start:start + rel.n_rows]
        lo, hi = rel.offset, min(rel.offset + rel.n_features, V.shape[0])
        out = np.empty(rel.n_rows)
        predict_rows(rel.indptr, rel.indices, rel.data, 0.0, w[lo:hi], V[lo:hi], use_w, out, terms,
                     NO_MAP, np.empty((0, k + 1)))
        # out_r = lin_r + ½(Σ_f Q_rf² − sq_r): keep lin_r − ½ sq_r, the part that adds up per row
        terms[:, 0] = out - 0.5 * np.einsum("ij,ij->i", terms[:, 1:], terms[:, 1:])
        start += rel.n_rows
    return agg


NO_MAP = np.empty((0, 0), np.int64)
ROWS_PER_TASK = 4096   # rows of one parallel task in predict_rows


def kernel_rows(indptr, indices, data):
    """CSR arrays in the one form predict_rows is called with: int64 row pointers, and all three
    read-only views (a memory-mapped cache's arrays are read-only, rows built in memory are not,
    and numba compiles a kernel once per such form: the train refresh, the evaluation and
    `fmcli predict` share one compiled predict_rows this way). The values are not converted."""
    return read_only(np.asarray(indptr, np.int64), np.asarray(indices), np.asarray(data))


@njit(inline="always")
def row_sums(indices, data, start, end, acc, w, V, use_w, s):
    """The sums of one row's entries start..end that its prediction is made of: returns acc +
    Σ_j w_j x_j (the linear terms added to acc only when use_w) and sq = Σ_j Σ_f (v_jf x_j)²,
    and adds Σ_j v_jf x_j to s[f] for every f < V.shape[1] (s is not zeroed here). Ids ≥
    V.shape[0] contribute nothing. The one definition of this arithmetic: predict_rows, the
    SGD kernels and the ALS/MCMC factor-block refresh call it."""
    n_features, k = V.shape
    sq = 0.0
    for p in range(start, end):
        j = indices[p]
        if j >= n_features:
            continue
        x = np.float64(data[p])
        if use_w:
            acc += w[j] * x
        for f in range(k):
            vx = V[j, f] * x
            s[f] += vx
            sq += vx * vx
    return acc, sq


@njit(parallel=True)
def predict_rows(indptr, indices, data, w0, w, V, use_w, out, C, rel_map, rel_terms):
    """Raw scores of CSR rows into `out`, ROWS_PER_TASK rows per parallel task (each row's
    arithmetic is fixed, so the result does not depend on the number of threads). If C has
    rows, also store the factor sums C[i, 1 + f] = Σ_j v_{j,f} x_ij (the ALS/MCMC cache layout,
    e in column 0) of the first C.shape[1] − 1 factors (all k, or the first factor block).
    Ids ≥ n_features contribute nothing. Relations: row i adds the relation row terms
    rel_terms[rel_map[t, i]] of each relation t (relation_terms; rel_map (0, ·) for none)."""
    n_rows = indptr.shape[0] - 1
    k = V.shape[1]
    store = C.shape[0] > 0
    kc = C.shape[1] - 1
    for b in prange((n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        s = np.empty(k)
        for i in range(b * ROWS_PER_TASK, min(n_rows, (b + 1) * ROWS_PER_TASK)):
            s[:] = 0.0
            acc, sq = row_sums(indices, data, indptr[i], indptr[i + 1], w0, w, V, use_w, s)
            for t in range(rel_map.shape[0]):
                a = rel_map[t, i]
                acc += rel_terms[a, 0]
                for f in range(k):
                    s[f] += rel_terms[a, 1 + f]
            pair = 0.0
            for f in range(k):
                pair += s[f] * s[f]
                if store and f < kc:
                    C[i, 1 + f] = s[f]
            out[i] = acc + 0.5 * (pair - sq)

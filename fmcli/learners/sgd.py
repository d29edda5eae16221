"""Stochastic gradient descent with libFM's per-case updates (libFM `-method sgd`),
and the step rules AdaGrad and Adam (`--optimizer`).

Differences from libFM, each on purpose:
- rows are visited in a seeded random order each epoch (libFM walks the file in
  order and tells the user to shuffle it first). To keep memory access mostly sequential,
  the rows are shuffled once into a private copy (seeded), and each epoch visits runs of
  RUN consecutive rows of that copy in a new seeded random order: each epoch is a
  different order, and rows that were neighbours in the file are not neighbours here
  (a full permutation each epoch is several times slower: random row access, bench/notes.md);
- the regression gradient uses the unclipped prediction, so a prediction above
  the target range is still pulled back (libFM's clipped gradient is zero there);
- `-learn_rate a,b,c` really gives w0, w and V their own rates (libFM's 3-value
  form silently sets the rate to 0);
- features never seen in train keep w = 0 and V = 0, so they contribute nothing.

Optimizers. Every row gives each parameter θ of its features (and w0) the gradient
γ = ∂loss/∂θ + λθ (libFM's per-case gradient with its lazy L2 term: λ = r0, r1 or r2 of
-regular, on the row's features only); the learning rate η (-learn_rate, one value or
one per w0, w, V) is the step rule's base rate:
- sgd:     θ -= η γ                                   (libFM; typical η 0.001-0.05)
- adagrad: G += γ²;  θ -= η γ / (√G + ε)              (typical η 0.01-0.1)
- adam:    m = β1 m + (1-β1) γ;  v = β2 v + (1-β2) γ²;  t += 1;
           θ -= η m̂ / (√v̂ + ε),  m̂ = m / (1-β1^t),  v̂ = v / (1-β2^t)   (typical η 0.001-0.01)
with the constants below (Kingma and Ba's defaults). The state is lazy, the usual sparse
variant: a row reads and writes the state of its own features (and of w0) only, so an epoch
stays O(k nnz). Adam's clock t is per feature, shared by w_j and V_j,· (always updated
together), and w0's counts all rows: t is the number of rows with the feature seen so far,
and m and v are not decayed while the feature is absent, so each parameter runs Adam on its
own stream of gradients, bias correction included. (The alternative, decaying m and v by
β^Δt for the Δt rows a feature missed and correcting with the global row count, lets the
moments of rare features decay to nothing between their rows: a feature met once an epoch
then steps by about η (1-β1)/√(1-β2) ≈ 3.2 η in the sign of its gradient, whatever its size.)
Plain SGD runs the same kernel (one row loop: prediction and loss gradient shared; the
update loop chosen by the mode). The optimizer state lives in the learner only: model files do not keep it, and a warm
start (-load_model) starts it again from zero.
"""

import numpy as np

from fmcli.config import njit
from fmcli.data import permute_rows
from fmcli.learners.base import Learner, check_diverged, target_size
from fmcli.learners.prefetch import prefetch_row_features
from fmcli.memory import release_pages
from fmcli.model import row_sums

RUN = 64   # consecutive rows visited together; small against any data set that needs shuffling

OPTIMIZERS = {"sgd": 0, "adagrad": 1, "adam": 2}
SGD, ADAGRAD, ADAM = 0, 1, 2
ADAGRAD_EPS = 1e-8
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


class SGDLearner(Learner):
    def __init__(self, model, train, evals, groups, opts, rng):
        self.model, self.train, self.evals, self.opts, self.rng = model, train, evals, opts, rng
        rates = tuple(opts.learn_rate) if np.ndim(opts.learn_rate) else (opts.learn_rate,) * 3
        self.rates = np.array(rates, np.float64)
        self.reg = np.array(opts.regular[:3], np.float64)
        self._w0 = np.array([model.w0])
        self.optimizer = opts.optimizer
        self._size = None       # target_size of the train rows, at the first check
        self.state = optimizer_state(OPTIMIZERS[self.optimizer], model.n_features, model.k)
        shuffle = rng.permutation(train.n_rows).astype(np.int64, copy=False)
        # the epochs and the train metrics read the shuffled copy only: a memory-mapped
        # original need not stay resident (SGDA's epochs read it in file order)
        own_epochs = type(self).step is SGDLearner.step
        self.rows = permute_rows(*train.csr(), shuffle, release_source=own_epochs)
        self.y = np.ascontiguousarray(train.y[shuffle])
        # -weights in the shuffled order (float64), or empty: every row 1
        w = getattr(train, "weights", None)
        self.weights = np.ascontiguousarray(np.asarray(w, np.float64)[shuffle]) if w is not None else np.empty(0)
        del shuffle
        if own_epochs:
            release_pages(train.y)
        if not opts.warm_start:
            seen = np.zeros(model.n_features, bool)
            seen[self.rows[1]] = True       # (np.bincount would copy the ids to int64 first)
            model.V[~seen] = 0.0

    def _epoch_order(self):
        """This epoch's row order: runs of RUN rows of the shuffled copy, in a seeded random order."""
        n = self.train.n_rows
        runs = self.rng.permutation((n + RUN - 1) // RUN)
        index = np.int32 if n < 2**31 - RUN else np.int64    # half the memory of int64
        order = (runs.astype(index)[:, None] * index(RUN) + np.arange(RUN, dtype=index)).ravel()
        del runs
        if n % RUN:
            order = order[order < n]
        return order

    def step(self, it):
        m = self.model
        order = self._epoch_order()
        self._w0[0] = m.w0
        sq_error = _fm_epoch(*self.rows, self.y, order, self._w0, m.w, m.V, m.use_w0, m.use_w,
                             self.opts.task == "c", self.rates, self.reg, OPTIMIZERS[self.optimizer],
                             *self.state, self.weights)
        m.w0 = float(self._w0[0])
        self._check_diverged(f"SGD ({self.optimizer})", it, sq_error)

    def _check_diverged(self, what, it, sq_error):
        """base.check_diverged on the epoch's errors (each row's, before its own update)."""
        m = self.model
        if self._size is None:
            self._size = target_size(self.opts.task, self.y)
        check_diverged(what, it, sq_error, len(self.y), self._size,
                       bool(np.isfinite(m.w0) and np.isfinite(m.w).all() and np.isfinite(m.V).all()),
                       f"a smaller -learn_rate (now {','.join('%g' % r for r in self.rates)}) "
                       f"or a larger -regular")

    def train_scores(self):
        return self.model.predict(*self.rows), self.y

    def eval_predictions(self, name):
        return self.model.predict(*self.evals[name].csr())

    def final_model(self):
        return self.model


def optimizer_state(mode, n_features, k):
    """The zeroed state arrays of _fm_epoch for one optimizer (unused ones have size 0):
    a_w0 (1,), a_w (n,), a_V (n, k): AdaGrad's G or Adam's m; b_w0, b_w, b_V: Adam's v;
    pw (n + 1, 2): Adam's β1^t and β2^t for each feature's clock t, w0's in the last row."""
    def arrays(n):
        return np.zeros(min(n, 1)), np.zeros(n), np.zeros((n, k if n else 0))
    a = arrays(n_features if mode != SGD else 0)
    b = arrays(n_features if mode == ADAM else 0)
    pw = np.ones((n_features + 1 if mode == ADAM else 0, 2))
    return a + b + (pw,)


@njit(inline="always")
def _adagrad(theta, grad, eta, G):
    G += grad * grad
    return theta - eta * grad / (np.sqrt(G) + ADAGRAD_EPS), G


@njit(inline="always")
def _adam(theta, grad, eta, m, v, c1, c2):
    """c1 = 1/(1-β1^t), c2 = 1/(1-β2^t): the bias corrections."""
    m = ADAM_BETA1 * m + (1.0 - ADAM_BETA1) * grad
    v = ADAM_BETA2 * v + (1.0 - ADAM_BETA2) * grad * grad
    return theta - eta * (m * c1) / (np.sqrt(v * c2) + ADAM_EPS), m, v


@njit(inline="always")
def row_score(indices, data, start, end, bias, w, V, use_w, s):
    """y(x) of the row whose entries are start..end (model.row_sums); its factor sums
    s_f = Σ_j v_jf x_j go into s (SGD's updates use them)."""
    s[:] = 0.0
    pred, sq = row_sums(indices, data, start, end, bias, w, V, use_w, s)
    for f in range(V.shape[1]):
        pred += 0.5 * s[f] * s[f]
    return pred - 0.5 * sq


@njit
def _fm_epoch(indptr, indices, data, y, order, w0, w, V, use_w0, use_w, classify, rates, reg,
              mode, a_w0, a_w, a_V, b_w0, b_w, b_V, pw, weights):
    """One pass over the rows in `order`; updates w0[0], w and V and the optimizer's
    state (see optimizer_state) in place. mode: SGD, ADAGRAD or ADAM. Returns Σ (ŷ − y)² of
    the rows, each ŷ as predicted before the row's update (for the divergence check).
    weights (by row, -weights; empty: all 1): row i's whole gradient γ (loss and its lazy L2
    term) is scaled by its weight u_i, as if the row were there u_i times with one step; a row
    of weight 0 is skipped (no step, no optimizer clock tick, not in the returned sum)."""
    weighted = weights.shape[0] > 0
    k = V.shape[1]
    nf = w.shape[0]
    s = np.empty(k)
    eta0, eta1, eta2 = rates[0], rates[1], rates[2]
    r0, r1, r2 = reg[0], reg[1], reg[2]
    c1 = c2 = 1.0
    sq_error = 0.0
    n_order = order.shape[0]
    for q in range(n_order):
        i = order[q]
        if q + 1 < n_order:
            prefetch_row_features(indptr, indices, order[q + 1], V, True)
        if weighted:
            u = weights[i]
            if u == 0.0:
                continue
            r0, r1, r2 = reg[0] * u, reg[1] * u, reg[2] * u
        start, end = indptr[i], indptr[i + 1]
        pred = row_score(indices, data, start, end, w0[0] if use_w0 else 0.0, w, V, use_w, s)
        sq_error += (pred - y[i]) ** 2
        if classify:
            yi = y[i]
            g = -yi * (1.0 - 1.0 / (1.0 + np.exp(-yi * pred)))
        else:
            g = pred - y[i]
        if weighted:
            g *= u
        if use_w0:
            if mode == SGD:
                w0[0] -= eta0 * (g + r0 * w0[0])
            elif mode == ADAGRAD:
                w0[0], a_w0[0] = _adagrad(w0[0], g + r0 * w0[0], eta0, a_w0[0])
            else:
                pw[nf, 0] *= ADAM_BETA1
                pw[nf, 1] *= ADAM_BETA2
                c1, c2 = 1.0 / (1.0 - pw[nf, 0]), 1.0 / (1.0 - pw[nf, 1])
                w0[0], a_w0[0], b_w0[0] = _adam(w0[0], g + r0 * w0[0], eta0, a_w0[0], b_w0[0], c1, c2)
        # each (j, f) update uses the row's s_f from before the updates, so the
        # order of the loops does not matter: walk each feature's factors contiguously
        if mode == SGD:
            for p in range(start, end):
                j = indices[p]
                x = data[p]
                gx = g * x
                if use_w:
                    w[j] -= eta1 * (gx + r1 * w[j])
                for f in range(k):
                    v = V[j, f]
                    V[j, f] = v - eta2 * (gx * (s[f] - v * x) + r2 * v)
        elif mode == ADAGRAD:
            for p in range(start, end):
                j = indices[p]
                x = data[p]
                gx = g * x
                if use_w:
                    w[j], a_w[j] = _adagrad(w[j], gx + r1 * w[j], eta1, a_w[j])
                for f in range(k):
                    v = V[j, f]
                    V[j, f], a_V[j, f] = _adagrad(v, gx * (s[f] - v * x) + r2 * v, eta2, a_V[j, f])
        else:
            for p in range(start, end):
                j = indices[p]
                x = data[p]
                gx = g * x
                pw[j, 0] *= ADAM_BETA1   # the feature's clock: t -> t + 1
                pw[j, 1] *= ADAM_BETA2
                c1, c2 = 1.0 / (1.0 - pw[j, 0]), 1.0 / (1.0 - pw[j, 1])
                if use_w:
                    w[j], a_w[j], b_w[j] = _adam(w[j], gx + r1 * w[j], eta1, a_w[j], b_w[j], c1, c2)
                for f in range(k):
                    v = V[j, f]
                    V[j, f], a_V[j, f], b_V[j, f] = _adam(v, gx * (s[f] - v * x) + r2 * v, eta2,
                                                          a_V[j, f], b_V[j, f], c1, c2)
    return sq_error

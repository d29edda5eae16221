"""SGD with adaptive regularisation (libFM `-method sgda`; Rendle, WSDM 2012).

Each train row gets an SGD step on the parameters θ with the L2 penalty 2λθ, where λ
is learned: one λ for the w of each group and one for each (group, factor) of V. From
the second epoch on, every θ-step is followed by a λ-step on the next validation row:
look ahead to θ' = θ − η(∇θ + 2λθ) with the row's last stored gradients, and move each
λ down the gradient of the validation loss at θ' (clipped at 0). The bias is never
regularised.

As our `sgd`, and unlike libFM: train rows are visited in a seeded random order, the
regression gradient uses the unclipped prediction, a warm-started model keeps its w
(libFM resets w to 0), and features never seen in train keep w = 0 and V = 0.
The validation rows are visited in file order, restarting each epoch, as in libFM.
"""

import numpy as np

from fmcli.config import njit
from fmcli.learners.sgd import SGDLearner, row_score


class SGDALearner(SGDLearner):
    def __init__(self, model, train, evals, groups, opts, rng):
        super().__init__(model, train, evals, groups, opts, rng)
        if not opts.warm_start:
            model.w[:] = 0.0
        n = model.n_features
        self.groups = groups
        n_groups = int(groups.max()) + 1 if n else 1
        self.lam_w = np.zeros(n_groups)
        self.lam_v = np.zeros((n_groups, model.k))
        self.grad_w = np.zeros(n)
        self.grad_v = np.zeros((n, model.k))
        self.eta = float(self.rates[1])
        w = getattr(train, "weights", None)     # SGDA's epochs read the rows in file order
        self.file_weights = np.ascontiguousarray(w, np.float64) if w is not None else np.empty(0)

    def step(self, it):
        m, val = self.model, self.evals["validation"]
        order = self.rng.permutation(self.train.n_rows).astype(np.int64)
        self._w0[0] = m.w0
        sq_error = _sgda_epoch(*self.train.csr(), self.train.y, order, *val.csr(), val.y, it > 0,
                               self._w0, m.w, m.V, m.use_w0, m.use_w, self.opts.task == "c", self.eta,
                               self.groups, self.lam_w, self.lam_v, self.grad_w, self.grad_v,
                               self.file_weights)
        m.w0 = float(self._w0[0])
        self._check_diverged("SGDA", it, sq_error)

    def log_values(self):
        out = {f"regw[{g}]": v for g, v in enumerate(self.lam_w)}
        for g in range(self.lam_v.shape[0]):
            out.update({f"regv[{g},{f}]": v for f, v in enumerate(self.lam_v[g])})
        return out


@njit
def _loss_derivative(pred, y, classify):
    if classify:
        return y * (1.0 / (1.0 + np.exp(-y * pred)) - 1.0)
    return 2.0 * (pred - y)


@njit
def _sgda_epoch(indptr, indices, data, y, order, vindptr, vindices, vdata, vy, adapt,
                w0, w, V, use_w0, use_w, classify, eta, groups, lam_w, lam_v, grad_w, grad_v, weights):
    """One epoch (module docs). weights (by row, -weights; empty: all 1): row i's steps (θ and
    the λ-step after it, look-ahead included) take the rate η u_i, its gradient scaled by its
    weight; a row of weight 0 is skipped."""
    weighted = weights.shape[0] > 0
    k = V.shape[1]
    n_val = len(vindptr) - 1
    s = np.empty(k)
    s_ahead = np.empty(k)
    sum_xw = np.zeros(lam_w.shape[0])           # per group, reset after each use
    sum_xv = np.zeros(lam_v.shape)
    sum_xxvv = np.zeros(lam_v.shape)
    touched = np.zeros(lam_w.shape[0], np.bool_)
    v_pos = 0
    sq_error = 0.0      # Σ (ŷ − y)² of the train rows before their steps (returned)
    for i in order:
        eta_i = eta
        if weighted:
            u = weights[i]
            if u == 0.0:
                continue
            eta_i = eta * u
        # theta-step, storing each parameter's loss-gradient term for the look-ahead
        start, end = indptr[i], indptr[i + 1]
        pred = row_score(indices, data, start, end, w0[0] if use_w0 else 0.0, w, V, use_w, s)
        sq_error += (pred - y[i]) ** 2
        g = _loss_derivative(pred, y[i], classify)
        if use_w0:
            w0[0] -= eta_i * g
        for p in range(start, end):
            j, x = indices[p], data[p]
            grp = groups[j]
            if use_w:
                grad_w[j] = g * x
                w[j] -= eta_i * (grad_w[j] + 2.0 * lam_w[grp] * w[j])
            for f in range(k):
                v = V[j, f]
                grad_v[j, f] = g * x * (s[f] - v * x)
                V[j, f] = v - eta_i * (grad_v[j, f] + 2.0 * lam_v[grp, f] * v)
        if not adapt or n_val == 0:
            continue
        # lambda-step on the next validation row, predicted at the look-ahead parameters
        # θ' = θ − η(∇θ + 2λθ) (the FM prediction of fmcli.model.row_sums, fused with the
        # look-ahead: through row_sums on stored θ' the last bits differ, bench/notes.md)
        r = v_pos
        v_pos = (v_pos + 1) % n_val
        vs, ve = vindptr[r], vindptr[r + 1]
        pred = w0[0] if use_w0 else 0.0
        sq = 0.0
        for f in range(k):
            s_ahead[f] = 0.0
        for p in range(vs, ve):
            j, x = vindices[p], vdata[p]
            if j >= len(w):
                continue
            grp = groups[j]
            if use_w:
                pred += x * (w[j] - eta_i * (grad_w[j] + 2.0 * lam_w[grp] * w[j]))
            for f in range(k):
                v = V[j, f]
                vx = x * (v - eta_i * (grad_v[j, f] + 2.0 * lam_v[grp, f] * v))
                s_ahead[f] += vx
                sq += vx * vx
        for f in range(k):
            pred += 0.5 * s_ahead[f] * s_ahead[f]
        pred -= 0.5 * sq
        lg = 2.0 * eta_i * eta_i * _loss_derivative(pred, vy[r], classify)
        for p in range(vs, ve):
            j, x = vindices[p], vdata[p]
            if j >= len(w):
                continue
            grp = groups[j]
            touched[grp] = True
            sum_xw[grp] += x * w[j]
            for f in range(k):
                v = V[j, f]
                v_ahead = v - eta_i * (grad_v[j, f] + 2.0 * lam_v[grp, f] * v)
                sum_xv[grp, f] += x * v
                sum_xxvv[grp, f] += x * x * v * v_ahead
        for p in range(vs, ve):   # apply once per group present in the row, then reset
            j = vindices[p]
            if j >= len(w) or not touched[groups[j]]:
                continue
            grp = groups[j]
            touched[grp] = False
            if use_w:
                lam_w[grp] = max(0.0, lam_w[grp] + lg * sum_xw[grp])
            sum_xw[grp] = 0.0
            for f in range(k):
                lam_v[grp, f] = max(0.0, lam_v[grp, f] + lg * (s_ahead[f] * sum_xv[grp, f] - sum_xxvv[grp, f]))
                sum_xv[grp, f] = 0.0
                sum_xxvv[grp, f] = 0.0
    return sq_error

"""Alternating least squares (`-method als`): coordinate descent, libFM behaviour §6.3-6.4, §6.6.

Every parameter is set in turn to the exact minimiser of the regularised squared loss

    ½ Σ_i (ŷ_i − t_i)² + ½ λ0 w0² + ½ Σ_j λw_{g(j)} w_j² + ½ Σ_{j,f} λv_{g(j)} v_{j,f}²

along its own coordinate (t = y for regression; for classification t = z, the expected
latent target of a probit model given the last sweep's ŷ). The kernels are shared with
MCMC (coord.py, sweep.py): ALS is MCMC with sampling off, α = 1 and μ = 0.

`-regular` (opts.regular): 3 values (λ0, λw, λv) or 1 + 2G values (λ0, λw_0..λw_{G-1},
λv_0..λv_{G-1}) for G feature groups (fmcli.plan checks the count); λv is the same for every
factor.

Differences from libFM, on purpose:
- `eval_predictions` is the current model (what `-out` writes). libFM's printed Test= is the
  RMSE of a running average of all sweeps' predictions, inconsistent with its `-out`.
- Features without train entries keep w = 0 and V = 0 from the start (libFM draws V at random
  and zeroes it in the first sweep; same result after sweep 1). On a warm start they keep
  their loaded values (libFM would zero them).
- Within a sweep we go feature by feature (w_j, then v_{j,0..k-1}) instead of libFM's
  "all w, then factor by factor"; for k > coord.FACTOR_BLOCK block of factors by block of
  factors, each block feature by feature: see coord.py. Same fixed points, different path.
- φ(ŷ) in the expected latent target uses π, not libFM's 3.141; Φ ratios are computed in
  log space (scipy's log_ndtr), so they stay finite for |ŷ| of any size.
"""

import numpy as np

from fmcli.learners.coord import CoordinateLearner
from fmcli.learners.sweep import set_residuals


def als_lambdas(regular, G):
    """(λ0, λw (G,), λv (G,)) from the 3 or 1+2G values of -regular."""
    r = [float(v) for v in regular]
    if len(r) == 3:
        lam0, lw, lv = r
        return lam0, np.full(G, lw), np.full(G, lv)
    return r[0], np.array(r[1:1 + G]), np.array(r[1 + G:])


def probit_expected_latent(yhat, y):
    """E[z | y] for z ~ N(ŷ, 1) truncated to z ≥ 0 (y > 0) or z < 0 (y ≤ 0)."""
    from scipy.special import log_ndtr

    logphi = -0.5 * yhat * yhat - 0.5 * np.log(2 * np.pi)
    pos = y > 0
    sign = np.where(pos, 1.0, -1.0)
    # y > 0: ŷ + φ(ŷ)/Φ(ŷ);  y ≤ 0: ŷ − φ(ŷ)/Φ(−ŷ)
    return yhat + sign * np.exp(logphi - log_ndtr(sign * yhat))


class ALSLearner(CoordinateLearner):
    sample = False

    def _init_hyper(self):
        self.lam0, lw, lv = als_lambdas(self.opts.regular, self.G)
        self.lam_w[:] = lw
        self.lam_v[:] = lv[:, None]

    def _latent(self):
        self._z = probit_expected_latent(self._yhat, self._y)
        set_residuals(self.cache, self._yhat, self._z)

    def eval_predictions(self, name):
        return self._link(self.eval_raw[name])

    def final_model(self):
        return self.model

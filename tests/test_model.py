"""model.py's O(k nnz) prediction against the O(p^2) pairwise definition."""

import numpy as np
import pytest
from conftest import random_csr
from naive import fm_predict_rows

from fmcli.model import FMModel, apply_link


def pairwise_reference(indptr, indices, data, w0, w, V):
    rows = [list(zip(indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]].astype(np.float64)))
            for i in range(len(indptr) - 1)]
    return fm_predict_rows(rows, w0, w, V)


@pytest.mark.parametrize("k", [0, 1, 5])
@pytest.mark.parametrize("repeats", [False, True])
def test_predict_matches_pairwise(rng, k, repeats):
    n = 40
    indptr, indices, data = random_csr(rng, 200, n, max_nnz=8, repeats=repeats)
    model = FMModel(0.7, rng.normal(0, 1, n), rng.normal(0, 0.5, (n, k)))
    got = model.predict_raw(indptr, indices, data)
    assert np.allclose(got, pairwise_reference(indptr, indices, data, model.w0, model.w, model.V), atol=1e-9)


def test_switches_and_unknown_features(rng):
    n = 20
    indptr, indices, data = random_csr(rng, 50, n + 5)   # ids >= n: seen only in new data
    w, V = rng.normal(0, 1, n), rng.normal(0, 0.5, (n, 3))
    model = FMModel(1.5, w, V, use_w0=False, use_w=False)
    keep = indices < n
    # rebuild rows without the unknown ids: they must contribute nothing
    counts = np.add.reduceat(keep, indptr[:-1]) * (np.diff(indptr) > 0)
    indptr2 = np.concatenate([[0], np.cumsum(counts)])
    ref = pairwise_reference(indptr2, indices[keep], data[keep], 0.0, np.zeros(n), V)
    assert np.allclose(model.predict_raw(indptr, indices, data), ref)


def test_links_and_sample_average(rng):
    n = 10
    indptr, indices, data = random_csr(rng, 30, n)
    raw = rng.normal(0, 3, 5)
    assert np.allclose(apply_link(raw, "identity", -1, 1), np.clip(raw, -1, 1))
    assert np.allclose(apply_link(raw, "logistic", 0, 0), 1 / (1 + np.exp(-raw)))
    from scipy.special import ndtr

    for link, want in (("identity", np.clip(raw, -1, 1)), ("logistic", 1 / (1 + np.exp(-raw))),
                       ("probit", ndtr(raw))):
        buf = raw.copy()
        assert apply_link(buf, link, -1, 1, out=buf) is buf      # in place: no second array
        assert np.allclose(buf, want)
    samples = (rng.normal(0, 1, 3), rng.normal(0, 1, (3, n)), rng.normal(0, 1, (3, n, 2)))
    model = FMModel(0.0, samples[1][-1], samples[2][-1], link="identity", y_min=-2, y_max=2, samples=samples)
    per_sample = [np.clip(model.predict_raw(indptr, indices, data, (samples[0][s], samples[1][s], samples[2][s])),
                          -2, 2) for s in range(3)]
    assert np.allclose(model.predict(indptr, indices, data), np.mean(per_sample, 0))

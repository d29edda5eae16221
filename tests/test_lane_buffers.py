"""The sweep's gather buffers are one per lane, each sized by the longest column that lane
gets: the longest column is paid for once, and the model is the one of a single full buffer."""

import numpy as np
import pytest

from fmcli.learners import coord
from fmcli.train import threads

from test_parallel import recsys, train


@pytest.fixture(autouse=True)
def parallel_even_for_small_data(monkeypatch):
    monkeypatch.setattr(coord, "PARALLEL_MIN_NNZ", 0)


def test_each_lane_sized_by_its_longest_column():
    d, _ = recsys(2)
    lrn = train("als", d, 1, iters=1)
    k1 = lrn.k + 1
    lane_ptr = coord.lanes(lrn.pass_order, lrn.pass_ptr, lrn.work, 2)
    B, off = lrn._lane_buffers(lrn.pass_order, lane_ptr, 2)
    length = np.diff(lrn.cptr)[lrn.pass_order]
    caps = np.diff(off) // k1
    for t in range(len(lane_ptr) - 1):
        a, b = lane_ptr[t], lane_ptr[t + 1]
        if b > a:
            assert caps[t % 2] >= length[a:b].max()
    assert caps.max() == lrn.longest
    # the numeric feature (in half the rows) is the longest column; only one lane holds it
    assert caps.sum() < 2 * lrn.longest
    assert len(B) == off[-1] == caps.sum() * k1


@pytest.mark.parametrize("method", ["als", "mcmc"])
def test_two_lanes_on_one_thread_same_model(method):
    """Two lanes run by one thread (each with its own buffer) give the model of one lane."""
    d, _ = recsys(3)
    a = train(method, d, 1, iters=1)
    b = train(method, d, 1, iters=1)
    for lrn, n_lanes in ((a, 1), (b, 2)):
        coord.seed_numba(5)
        lrn._before_sweep()
        lane_ptr = coord.lanes(lrn.pass_order, lrn.pass_ptr, lrn.work, n_lanes)
        B, off = lrn._lane_buffers(lrn.pass_order, lane_ptr, n_lanes)
        lx = np.empty((1, lrn.longest), coord.CACHE_DTYPE)
        Z = np.zeros((1, lrn.k + 1))
        rej = np.zeros((1, len(coord.REJ_NAMES)), np.int64)
        m = lrn.model
        with threads(1):
            coord.sweep(lrn.cptr, lrn.crow, lrn.cval, lrn.pass_order, lane_ptr, n_lanes, lrn.pass_coord,
                        lrn.groups, lrn.C, lrn.w0a, m.w, m.V, lrn.use_w0, lrn.use_w, lrn.alpha, lrn.lam0,
                        lrn.lam_w, lrn.mu_w, lrn.lam_v, lrn.mu_v, lrn.sample, 9, True, lx, B, off, Z, rej)
    np.testing.assert_array_equal(a.model.V, b.model.V)
    np.testing.assert_array_equal(a.model.w, b.model.w)
    np.testing.assert_array_equal(a.C, b.C)

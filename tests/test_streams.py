"""The splitmix64 sequences of BPR's epoch (fmcli.learners.streams.next_below, permutation):
integers uniform on [0, n) for small, 32-bit-edge and 64-bit n, Lemire's surplus products
rejected (a test a plain multiply-shift fails), and uniform permutations."""

import itertools

import numba
import numpy as np
import pytest
from scipy.stats import chisquare

from fmcli.learners.streams import next_below, permutation, stream_key


@numba.njit
def draws(seed, n, count):
    s = stream_key(seed)
    out = np.empty(count, np.int64)
    for t in range(count):
        s, out[t] = next_below(s, n)
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1682, 2**31 - 1, 2**32 - 1, 2**32, 2**32 + 5, 2**40 + 3, 2**63 - 1])
def test_draws_lie_in_the_range_and_cover_it(n):
    x = draws(1, n, 20000)
    assert x.min() >= 0 and x.max() < n
    if n > 1:
        # the top of the range is reached (high bits drawn) and the mean is about (n − 1) / 2
        assert x.max() >= n * 0.99 - 1
        assert abs((x.mean() - (n - 1) / 2) / n) < 0.02


@pytest.mark.parametrize("n", [3, 7, 1000])
def test_draws_are_uniform(n):
    counts = np.bincount(draws(2, n, 200 * n), minlength=n)
    assert chisquare(counts).pvalue > 1e-3


def test_the_surplus_products_are_rejected():
    """n = 3·2^30: a multiply-shift without rejection gives v ≡ 0 (mod 3) twice as often as the
    other residues (x·3/4 rounded down hits them from two x of four)."""
    counts = np.bincount(draws(3, 3 * 2**30, 30000) % 3, minlength=3)
    assert chisquare(counts).pvalue > 1e-3


def test_the_sequence_depends_on_the_seed_only():
    assert np.array_equal(draws(5, 1682, 1000), draws(5, 1682, 1000))
    assert not np.array_equal(draws(5, 1682, 1000), draws(6, 1682, 1000))


def test_permutation_is_a_permutation_and_seeded():
    out = np.empty(10007, np.int64)
    permutation(11, out)
    assert np.array_equal(np.sort(out), np.arange(10007))
    again = np.full(10007, -1, np.int64)
    permutation(11, again)
    assert np.array_equal(out, again)
    permutation(12, again)
    assert not np.array_equal(out, again)
    for n in (0, 1):
        tiny = np.full(n, 7, np.int64)
        permutation(3, tiny)
        assert np.array_equal(tiny, np.arange(n))


def test_permutations_are_uniform():
    """Every order of 4 items about equally often over 24,000 seeds."""
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.zeros(len(index), np.int64)
    out = np.empty(4, np.int64)
    for seed in range(24000):
        permutation(seed, out)
        counts[index[tuple(out)]] += 1
    assert chisquare(counts).pvalue > 1e-3

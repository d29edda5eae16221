"""Random numbers of the coordinate learners.

Counter-based streams for the parallel sweeps: the normal draws of feature j in a sweep come
from stream j of the sweep's seed, whatever thread runs it and in whatever order, so parallel
results do not depend on the number of threads. splitmix64 (Steele et al. 2014) of (seed,
stream, counter), normals by Box-Muller. The sequential draws (MCMC's α, hyperparameters and
latent targets) use numba's own global random state, seeded once per iteration (seed_numba).
BPR's epoch (the visit order and the negatives) draws from a splitmix64 sequence whose state
the kernel carries (next_below): several times cheaper a draw than numba's randint.
"""

import math

import numpy as np

from fmcli.config import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit
def stream_normals(seed, stream, out):
    """Fill `out` with N(0, 1) draws from stream `stream` of `seed` (both non-negative ints)."""
    key = _mix64(np.uint64(seed) ^ _mix64(np.uint64(stream) * _GOLDEN + _GOLDEN))
    c = np.uint64(0)
    for t in range(0, out.shape[0], 2):
        c += np.uint64(2)
        # 53-bit uniforms; u1 in (0, 1] so that log(u1) is finite
        u1 = np.float64((_mix64(key + c * _GOLDEN) >> np.uint64(11)) + np.uint64(1)) * 2.0 ** -53
        u2 = np.float64(_mix64(key + (c + np.uint64(1)) * _GOLDEN) >> np.uint64(11)) * 2.0 ** -53
        r = math.sqrt(-2.0 * math.log(u1))
        out[t] = r * math.cos(2.0 * math.pi * u2)
        if t + 1 < out.shape[0]:
            out[t + 1] = r * math.sin(2.0 * math.pi * u2)


@njit
def stream_key(seed):
    """The key of the counter-based uniforms of seed (a non-negative int)."""
    return _mix64(np.uint64(seed))


@njit
def counter_uniform(key, i):
    """Uniform (0, 1) number i of key's stream (splitmix64 of key + i·golden, 53 bits): any
    row's number is drawn without the rows before it, so parallel chunks draw what a serial
    pass would."""
    return (np.float64(_mix64(key + np.uint64(i) * _GOLDEN) >> np.uint64(11)) + 0.5) * 2.0 ** -53


@njit(inline="always")
def next_below(s, n):
    """(the next state, an integer uniform on [0, n)) of the splitmix64 sequence at state s
    (uint64; stream_key gives a first one), for n >= 1: Lemire's multiply-shift of the top 32
    bits when n <= 2**32 (the few biased products rejected), masked rejection above."""
    n64 = np.uint64(n)
    if n64 <= np.uint64(0x100000000):
        while True:
            s += _GOLDEN
            m = (_mix64(s) >> np.uint64(32)) * n64
            low = m & np.uint64(0xFFFFFFFF)
            # the products whose low half is below 2**32 mod n are the surplus ones
            if low >= n64 or low >= (np.uint64(0x100000000) - n64) % n64:
                return s, np.int64(m >> np.uint64(32))
    mask = n64 - np.uint64(1)
    for shift in (1, 2, 4, 8, 16, 32):
        mask |= mask >> np.uint64(shift)
    while True:
        s += _GOLDEN
        z = _mix64(s) & mask
        if z < n64:
            return s, np.int64(z)


@njit
def permutation(seed, out):
    """out = a uniform random permutation of 0 .. len(out) − 1 (Fisher-Yates on seed's sequence)."""
    n = out.shape[0]
    for t in range(n):
        out[t] = t
    s = stream_key(seed)
    for t in range(n - 1, 0, -1):
        s, j = next_below(s, t + 1)
        out[t], out[j] = out[j], out[t]


@njit
def chunk_seed(key, c):
    """A seed of numba's generator for chunk c of key's pass (its rare sequential draws)."""
    return np.int64(_mix64(key ^ np.uint64(c + 1) * _GOLDEN) >> np.uint64(33))


@njit
def _derived_seed(seed, index):
    return np.int64(_mix64(np.uint64(seed) + np.uint64(index) * _GOLDEN) >> np.uint64(1))


def part_seed(seed, index):
    """The seed of part `index` of a sweep of seed `seed` (factor block b's normal draws): the
    sweep's own seed for part 0 (so one factor block draws what an unblocked sweep draws),
    splitmix64 of seed + index·golden otherwise; a non-negative int."""
    return seed if index == 0 else int(_derived_seed(seed, index))


@njit
def seed_numba(s):
    """Seed numba's own global random state (separate from numpy's); used by the sequential
    draws (α, hyperparameters, latent targets)."""
    np.random.seed(s)

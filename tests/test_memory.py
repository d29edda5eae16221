"""Memory trims of the coordinate learners: released memory-mapped pages stay readable, the
row-order key matches its numpy form, and a learner fed memory-mapped rows gives the same
model as one fed the same rows in memory; the streamed permutation and the chunked
regression refresh give the same results as their whole-array forms."""

import numpy as np
import pytest

from fmcli.memory import release_pages


def test_release_pages_keeps_memmap_readable(tmp_path):
    a = np.arange(100_000, dtype=np.float32)
    path = tmp_path / "a.bin"
    a.tofile(path)
    m = np.memmap(path, np.float32, "r", 0, (len(a),))
    assert m.sum() == a.sum()
    for arr in (m, m[10:], np.ones(3)):      # slices and heap arrays are fine too
        release_pages(arr)
    np.testing.assert_array_equal(m, a)


def test_release_page_range_keeps_memmap_readable(tmp_path):
    a = np.arange(300_000, dtype=np.float64)
    a.tofile(tmp_path / "a.bin")
    m = np.memmap(tmp_path / "a.bin", np.float64, "r", 8 * 1000, (len(a) - 1000,))   # not page-aligned
    assert m.sum() == a[1000:].sum()
    for lo, hi in ((0, 10), (5, 200_000), (123_457, len(m)), (7, 7)):
        release_pages(m, lo, hi)
        release_pages(m[3:], lo // 2, hi // 2)
    release_pages(np.ones(10), 0, 5)                      # heap memory: nothing to do
    np.testing.assert_array_equal(m, a[1000:])


def test_permute_rows_from_a_released_memmap_equals_in_memory(tmp_path):
    from fmcli.data import permute_rows

    rng = np.random.default_rng(1)
    lens = rng.integers(0, 9, 50_000)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    indices = rng.integers(0, 1000, indptr[-1]).astype(np.int32)
    data = rng.normal(size=indptr[-1]).astype(np.float32)
    maps = []
    for name, a in (("p", indptr), ("i", indices), ("d", data)):
        a.tofile(tmp_path / name)
        maps.append(np.memmap(tmp_path / name, a.dtype, "r", 0, a.shape))
    perm = rng.permutation(len(lens))
    want = permute_rows(indptr, indices, data, perm)
    got = permute_rows(*maps, perm, release_source=True)
    for w, g in zip(want, got):
        assert w.dtype == g.dtype
        np.testing.assert_array_equal(w, g)
    assert want[0][-1] == indptr[-1]
    rows = [np.arange(indptr[r], indptr[r + 1]) for r in perm]      # numpy reference, row by row
    np.testing.assert_array_equal(want[1], indices[np.concatenate(rows)])
    np.testing.assert_array_equal(want[2], data[np.concatenate(rows)])
    np.testing.assert_array_equal(want[1][want[0][1]:want[0][2]], indices[indptr[perm[1]]:indptr[perm[1] + 1]])



@pytest.mark.parametrize("method,dim", [("als", 8), ("mcmc", 8), ("mcmc", 24)])
def test_regression_refresh_in_row_chunks_gives_the_same_model(monkeypatch, run, testdata, tmp_path, method, dim):
    """Regression keeps only e = ŷ − y, ŷ going through a buffer of REFRESH_ROWS rows: many
    small chunks give the same bits as one (dim 24: the factor-block refresh)."""
    from fmcli.learners import coord

    outs = []
    for rows in (coord.REFRESH_ROWS, 7):
        monkeypatch.setattr(coord, "REFRESH_ROWS", rows)
        out, model = tmp_path / f"p{rows}", tmp_path / f"m{rows}.fm"
        code, _, err = run("train", "-task", "r", "-train", testdata("movies.train.libfm"), "-test",
                           testdata("movies.test.libfm"), "-method", method, "-dim", f"1,1,{dim}",
                           "-iter", "3", "-out", str(out), "-save_model", str(model), "--quiet",
                           "--no-cache")
        assert code == 0, err
        outs.append((out.read_bytes(), model.read_bytes()))
    assert outs[0] == outs[1]

import io
import os
import sys

import numpy as np
import pytest

TESTDATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata")


@pytest.fixture
def run(capsys):
    """Run `fmcli ARGS` in-process (stdin: optional bytes); returns (exit code, stdout, stderr)."""
    from fmcli.cli import main

    def _run(*args, stdin=None):
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            with pytest.raises(SystemExit) as e:
                main([str(a) for a in args])
        finally:
            sys.stdin = saved
        out, err = capsys.readouterr()
        return e.value.code, out, err
    return _run


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def testdata():
    return lambda name: os.path.join(TESTDATA, name)


def random_csr(rng, n_rows, n_features, max_nnz=6, repeats=False):
    """Random CSR rows (int64 indptr, int32 ids, float32 values); some rows empty."""
    counts = rng.integers(0, max_nnz + 1, n_rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if repeats:
        indices = rng.integers(0, n_features, indptr[-1])
    else:
        indices = np.concatenate([rng.choice(n_features, c, replace=False) for c in counts] or [[]])
    data = rng.normal(0, 1, indptr[-1])
    return indptr, indices.astype(np.int32), data.astype(np.float32)

"""load_data: train rows read from the text in the run that writes the binary cache are handed
on memory-mapped from that cache (same arrays), so the learner can release their pages."""

import numpy as np
import pytest

from fmcli.console import Console
from fmcli.learners.base import TrainOptions
from fmcli.plan import TrainJob, resolve
from fmcli.train import load_data


def _write(path, rng, n_rows=300, n=40):
    with open(path, "w") as f:
        for _ in range(n_rows):
            ids = np.sort(rng.choice(n, 3, replace=False))
            f.write(f"{rng.normal():.6g} "
                    + " ".join(f"{j}:{rng.uniform(0.5, 2):.5g}" for j in ids) + "\n")


@pytest.mark.parametrize("cache", [True, False])
def test_first_run_rows_come_memory_mapped(tmp_path, cache):
    rng = np.random.default_rng(3)
    train = tmp_path / "t.libfm"
    _write(train, rng)
    plan = resolve(TrainJob(opts=TrainOptions(task="r", method="als", dim=(1, 1, 4)), train=str(train), cache=cache))
    first, _ = load_data(plan, Console(quiet=True))
    assert isinstance(first.indices, np.memmap) == cache      # cache written, then mapped
    again, _ = load_data(plan, Console(quiet=True))
    from fmcli.io.libsvm import read_libfm

    ref = read_libfm(str(train))
    for d in (first, again):
        for name in ("indptr", "indices", "data", "y"):
            a, b = np.asarray(getattr(d, name)), np.asarray(getattr(ref, name))
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert d.n_features == ref.n_features

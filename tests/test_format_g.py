"""The compiled '%.6g' (fmcli.io.format_g) against Python's, value by value."""

import numpy as np
import pytest

from fmcli.io import predictions
from fmcli.io.format_g import MAX_BYTES, format_g6


def compiled(values):
    values = np.ascontiguousarray(values, np.float64)
    out = np.empty(len(values) * MAX_BYTES, np.uint8)
    n = format_g6(values, out)
    return None if n < 0 else out[:n].tobytes().decode("ascii")


def edge_values():
    """Powers of ten and values a rounding away from them, halves of the sixth digit, exact ties
    (1234565, 999999.5), zeros."""
    p = 10.0 ** np.arange(-19, 30)
    near = [p * f for f in (1, 0.9999995, 0.99999949, 0.99999951, 1.0000001, 1.000005, 9.9999950001, 9.99999)]
    halves = (np.arange(100000, 100200) + 0.5) * 10.0 ** -3          # a rounding away from ties
    ints = np.array([0.0, -0.0, 1, -1, 5, 10, 99999, 100000, 999999, 1000000, 999999.5, 1234565, 2**53])
    return np.concatenate(near + [halves, -halves, ints, 1 / 3 * p, -np.pi * p])


def test_each_value_is_printf_or_left_to_python():
    rng = np.random.default_rng(0)
    values = np.concatenate([edge_values(), rng.normal(3, 1, 20000),
                             np.exp(rng.uniform(-45, 66, 20000)) * rng.choice([-1, 1], 20000),
                             rng.integers(-10**7, 10**7, 2000).astype(np.float64) / 10.0 ** rng.integers(0, 9, 2000)])
    left = 0
    for v in values:
        got = compiled([v])
        if got is None:
            left += 1
        else:
            assert got == "%.6g\n" % v, v
    assert left < len(values) // 10          # most values take the compiled path
    assert compiled([1.5, 2.25]) == "1.5\n2.25\n"
    assert compiled([np.nan]) is None and compiled([np.inf]) is None


@pytest.mark.parametrize("n", [0, 3, 70000])
def test_format_predictions_is_pythons_whichever_path(monkeypatch, n):
    rng = np.random.default_rng(n)
    values = rng.normal(3, 1, n)
    values[: min(n, 5)] = [1.0005, 999999.5, 0.0, -0.0, 1e-30][: min(n, 5)]    # two of them left to Python
    expect = "".join("%.6g\n" % v for v in values.tolist())
    assert predictions.format_predictions(values) == expect
    monkeypatch.setattr(predictions, "COMPILED_MIN", 1)
    assert predictions.format_predictions(values) == expect
    if n > 5:   # no value left to Python: the compiled bytes themselves
        assert compiled(values[5:]) == "".join("%.6g\n" % v for v in values[5:].tolist())

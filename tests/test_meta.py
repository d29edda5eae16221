"""-meta group files."""

import numpy as np
import pytest

from fmcli.errors import InputError
from fmcli.io.meta import n_groups, read_meta


def write(tmp_path, text, name="g.meta"):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(p)


def test_reads_one_per_line_and_any_whitespace(tmp_path):
    g = read_meta(write(tmp_path, "0\n0\n1\n2\n"), 4)
    assert g.dtype == np.int32 and list(g) == [0, 0, 1, 2]
    assert list(read_meta(write(tmp_path, "0 0\t1\n\n  3"), 4)) == [0, 0, 1, 3]
    assert n_groups(read_meta(write(tmp_path, "0 0 0 1 1 1 2 2\n"), 8)) == 3


def test_gaps_in_group_ids_allowed(tmp_path):
    g = read_meta(write(tmp_path, "0\n5\n"), 2)
    assert n_groups(g) == 6


def test_empty_file_for_zero_features(tmp_path):
    assert len(read_meta(write(tmp_path, ""), 0)) == 0
    assert n_groups(None) == 1


@pytest.mark.parametrize("text,n,line,msg", [
    ("0\n1\n", 3, 2, "2 group ids for 3 features"),
    ("0\n1", 3, 2, "2 group ids for 3 features"),
    ("", 2, None, "0 group ids for 2 features"),
    ("0\n1\n2\n3\n", 3, 4, "more group ids than features: expected 3"),
    ("0\n1.5\n", 2, 2, "'1.5' is not a non-negative integer"),
    ("0\n\n-1\n", 2, 3, "'-1' is not a non-negative integer"),
    ("0 x\n", 2, 1, "'x' is not a non-negative integer"),
    ("0\n+1\n", 2, 2, "'+1' is not a non-negative integer"),
    ("0\n99999999999\n", 2, 2, "too large"),
    ("0\n1048576\n", 2, 2, "too large (at most 1048575"),   # before: MCMC ran out of memory (bench/fuzz.py)
])
def test_errors_name_file_and_line(tmp_path, text, n, line, msg):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as ei:
        read_meta(path, n)
    assert ei.value.line == line and ei.value.path == path
    assert msg in ei.value.message
    assert str(ei.value).startswith(f"{path}:{line}:" if line else f"{path}:")


def test_binary_garbage_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a non-negative integer"):
        read_meta(write(tmp_path, b"0\n\xff\xfe\n"), 2)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read meta file"):
        read_meta(str(tmp_path / "nope.meta"), 1)

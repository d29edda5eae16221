"""Option values in libFM's spellings, parsed strictly: shared by the command line and by the
grids of `fmcli tune`, so a value means the same wherever it is written."""

import re

from fmcli.errors import UsageError


def parse_dim(text):
    """'k0,k1,k2[,k3,...]' strictly: non-negative integers, k0 and k1 being 0 or 1; k3, k4, ...
    are the factors of orders 3, 4, ... (fmcli.anova; their rules: fmcli.plan)."""
    if text is None:
        return (1, 1, 8)
    if not re.fullmatch(r"\s*\d+(\s*[,;]\s*\d+){2,}\s*", text):
        raise UsageError(f"-dim {text!r}: expected three non-negative integers k0,k1,k2 such as 1,1,8 "
                         "(and one more per order above 2: k3,...)")
    dim = tuple(int(p) for p in re.split(r"[,;]", text))
    k0, k1, k2 = dim[:3]
    if k0 > 1 or k1 > 1:
        raise UsageError(f"-dim {text!r}: k0 (use bias) and k1 (use linear terms) must be 0 or 1")
    if not (k0 or k1 or k2) and len(dim) == 3:
        raise UsageError(f"-dim {text!r}: the model would have no parameters (no bias, no linear terms, "
                         "no factors)")
    return dim


def parse_floats(name, text, counts, minimum=0.0, strict=False):
    """A list of finite numbers, ',' or ';' separated, whose length is one of `counts`."""
    parts = [p for p in re.split(r"[,;]", text.strip()) if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise UsageError(f"{name} {text!r}: not a list of numbers") from None
    if not any(c(len(values)) if callable(c) else len(values) == c for c in counts):
        raise UsageError(f"{name} {text!r}: wrong number of values")
    for v in values:
        if not (v == v and abs(v) != float("inf")) or v < minimum or (strict and v <= minimum):
            raise UsageError(f"{name} {text!r}: values must be finite and {'>' if strict else '>='} {minimum:g}")
    return values


def split_names(text):
    """'a,b;c' -> ('a', 'b', 'c'), as libFM splits list values."""
    return tuple(n for n in re.split(r"[,;]", text) if n.strip())

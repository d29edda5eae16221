"""C's '%.6g' for many float64 values at once, compiled: the same bytes as Python's '%.6g' % v.

A value a ≠ 0 is scaled to s = a · 10^(5 − e) in [1e5, 1e6) by one correctly rounded product or
quotient with an exact power of ten (|5 − e| ≤ 22), so the computed s is within 1e6 · 2^-53 ≈
1.1e-10 of the exact one; its six digits are s rounded to an integer. When s's fraction is
within TIE_MARGIN of one half (the rounding could go either way on the exact value), when the
exponent is out of that range or a value is not finite, the kernel gives up (−1) and the caller
formats in Python: exact by construction, not approximately.
"""

import numpy as np

from fmcli.config import njit
from fmcli.io.libsvm import POW10

MAX_BYTES = 13          # '-1.23456e-17\n'
TIE_MARGIN = 1e-9       # > 1.1e-10, the scaled value's largest rounding error


@njit(fastmath=False)   # exact arithmetic: the digits depend on every rounding
def _scaled(a, e):
    """a · 10^(5 − e), one rounding (needs |5 − e| ≤ 22: POW10 is exact up to 1e22)."""
    k = 5 - e
    return a * POW10[k] if k >= 0 else a / POW10[-k]


@njit(fastmath=False)   # exact arithmetic: the digits depend on every rounding
def format_g6(values, out):
    """Write '%.6g\\n' of each value into out (uint8, at least MAX_BYTES per value); returns the
    number of bytes written, or −1 when a value needs Python's formatting (see the module)."""
    pos = 0
    digits = np.empty(6, np.uint8)
    for t in range(values.shape[0]):
        v = values[t]
        if not np.isfinite(v):
            return -1
        if v < 0.0 or (v == 0.0 and np.signbit(v)):
            out[pos] = 45   # '-'
            pos += 1
        a = abs(v)
        if a == 0.0:
            out[pos] = 48
            out[pos + 1] = 10
            pos += 2
            continue
        e = int(np.floor(np.log10(a)))
        if e < -17 or e > 27:
            return -1
        s = _scaled(a, e)
        if s < 1e5:             # log10 rounded across a power of ten
            e -= 1
            if e < -17:
                return -1
            s = _scaled(a, e)
        elif s >= 1e6:
            e += 1
            if e > 27:
                return -1
            s = _scaled(a, e)
        if s < 1e5 or s >= 1e6:
            return -1
        n = np.floor(s)
        f = s - n               # exact: s < 2^53
        if abs(f - 0.5) <= TIE_MARGIN:
            return -1
        m = np.int64(n) + (1 if f > 0.5 else 0)
        if m == 1000000:
            m = 100000
            e += 1
        for i in range(5, -1, -1):
            digits[i] = 48 + m % 10
            m //= 10
        last = 5                # the last digit kept: trailing zeros go
        while last > 0 and digits[last] == 48:
            last -= 1
        if -4 <= e < 6:         # fixed notation: e + 1 digits before the point
            if e < 0:
                out[pos] = 48
                out[pos + 1] = 46
                pos += 2
                for i in range(-e - 1):
                    out[pos] = 48
                    pos += 1
                for i in range(last + 1):
                    out[pos] = digits[i]
                    pos += 1
            else:
                for i in range(e + 1):
                    out[pos] = digits[i]
                    pos += 1
                if last > e:
                    out[pos] = 46
                    pos += 1
                    for i in range(e + 1, last + 1):
                        out[pos] = digits[i]
                        pos += 1
        else:                   # d.ddddde±XX
            out[pos] = digits[0]
            pos += 1
            if last > 0:
                out[pos] = 46
                pos += 1
                for i in range(1, last + 1):
                    out[pos] = digits[i]
                    pos += 1
            out[pos] = 101
            out[pos + 1] = 45 if e < 0 else 43
            pos += 2
            x = abs(e)          # < 100 here
            out[pos] = 48 + x // 10
            out[pos + 1] = 48 + x % 10
            pos += 2
        out[pos] = 10
        pos += 1
    return pos

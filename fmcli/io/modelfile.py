"""Model files: `-save_model` / `-load_model`.

    save_model(path, model)          *.npz -> binary, any other name (or `-`) -> text
    load_model(path, *, task=None)   the format is detected from the content, not the name

Text format (the default)
-------------------------
The first part is exactly libFM 1.4.4's layout, so libFM (which reads by position and
ignores extra lines) and programs that parse libFM models can read it:

    #global bias W0                  (only if use_w0)
    <w0>
    #unary interactions Wj           (only if use_w)
    <w_j>                            (n lines)
    #pairwise interactions Vj,f
    <v_j0> <v_j1> ... <v_j,k-1>      (n lines, single spaces; empty lines when k = 0)

Values are written with Python's `repr` (the shortest string that reads back to the same
double), so a save/load round trip is exact; C's `atof` parses them too. libFM writes 6
significant digits and loses precision. Note that libFM itself can never reload a model
with k = 1 (its reader splits V lines on spaces) — fmcli can.

Then fmcli's trailer, which libFM ignores. Every line of it starts with '#', so that a
program that reads a libFM model by its '#' section headers (every other line is data of the
last section, as libFM wrappers do) finds exactly the three sections above:

    #fmcli-order 3 <base64>          (only for a model with orders 3 and up: one line per
                                     order, P^(t) (n, k_t) as <f8 row by row; "orders" in the
                                     JSON lists [t, k_t]; the model's own H, the last
                                     sample's for MCMC)
    #fmcli-sample 0 <base64>         (only for a model with samples: MCMC; S lines)
    ...
    #fmcli-meta {one-line JSON}
    #fmcli-sha256 <hex>              SHA-256 of every byte before this line

Sample line s holds the base64 (RFC 4648, with padding) of sample s's w0 as <f8 (if use_w0),
w (if use_w), V row by row and, for a model with orders 3 and up, the sample's H (n, Σ k_t) row
by row, w, V and H as the metadata's `sample_dtype` (float32, the type MCMC keeps them in, or
float64): exact, and about 5.3 bytes per value instead of ~20 as text. (fmcli before higher-order
samples refuses such a file: its schema said a model with orders above 2 has no samples.)

Format versions: 2 stores samples so; 1 (fmcli before 2) stored them as text sections after
the pairwise one ('#fmcli samples S', then per sample '#sample s' and its w0, w, V lines
without libFM headers), which header-based parsers read as more rows of V. Version 1 files
are still read. A model without samples is written as version 1: its layout did not change,
so the file is byte for byte what earlier versions wrote, and they can read it.

For a model with samples the libFM sections hold the model's own w0, w, V, which by
FMModel's convention are the last sample; a program that reads only the libFM part
therefore gets the last MCMC draw, not the posterior average.

The JSON holds {"format": "fmcli-model", "format_version", "fmcli_version", "task", "link",
"use_w0", "use_w", "k", "n_features", "y_min", "y_max", "n_samples", "meta"} and, with
samples in version 2, "sample_dtype"; `meta` is the model's own meta dict (method, training
options, relations). Infinite y_min / y_max are stored as the strings "-inf" / "inf" (JSON
has no infinity); non-finite floats and non-JSON objects inside `meta` are stored as strings,
tuples as lists. Parameters that are switched off (w0 without use_w0, w without use_w) are
not stored in the text format and load as zeros.

Binary format (*.npz)
---------------------
np.savez (uncompressed) with float64 little-endian arrays w0 (shape ()), w, V, H (n, Σ k_t; only
with orders 3 and up) and, for a
model with samples, w0s (S,) float64, ws (S, n), Vs (S, n, k) and (orders 3 and up) Hs (S, n, Σ k_t)
as sample_dtype; `meta` is the same JSON as UTF-8
bytes in a uint8 array, and `sha256` (uint8, ASCII hex) is the SHA-256 over the meta bytes
and every array's name, dtype, shape and bytes. It is read with allow_pickle=False, and
stores every parameter as is (also switched-off ones).

Loading
-------
An fmcli file (text with any line starting with `#fmcli`, or an npz) is checked
thoroughly: checksum, format name and version, every metadata field against the schema
(_schema_meta: types, allowed values, agreement with each other, e.g. a classification
model's link is logistic or probit, relations fit in n_features), shapes against the
metadata, every parameter finite and within ±PARAM_LIMIT (this holds for libFM files too). A
file edited with a recomputed checksum is therefore refused naming the field
("bad model metadata: FIELD: problem"), never half-used. A file that has `#fmcli` lines but does not end with the `#fmcli-sha256` line
is a truncated or damaged fmcli file and is refused.

A text file without any `#fmcli` line is a libFM model. Its layout is inferred: the
section headers (matched on the words `global bias`, `unary`, `pairwise`) tell whether
w0 and w are present, n is the number of lines in the unary section (or in the pairwise
section when there is no unary one), k is the number of values on each V line (all must
agree; k = 0 means empty lines). A libFM file says nothing about the task or the target
range, so:
  * task is the `task` argument (default "r"); the link is identity for "r" and
    logistic for "c" (libFM's SGD semantics; libFM's ALS/MCMC classification uses probit,
    but the file does not say which method wrote it);
  * y_min / y_max are -inf / +inf: regression predictions of a libFM model are not
    clipped;
  * model.meta is {"source_format": "libfm"}.
Malformed libFM files raise InputError naming the line; unlike libFM, nothing is ever
silently re-initialised.

A libFM file has no checksum: damage that still parses (a cut inside the last value, an
edited digit) cannot be detected there.

Every problem with the file (missing, a directory, unreadable, garbage bytes, broken zip,
invalid UTF-8, bad JSON, ...) is reported as InputError.

Speed: runs of number lines are parsed whole by numpy's (correctly rounding) text parser,
never value by value in Python; a malformed run falls back to a line-by-line parse that
names the bad line (bench/notes.md has the figures).
"""

import base64
import binascii
import hashlib
import io
import json
import math
import os
import re
import sys
import warnings

import numpy as np

from fmcli import __version__
from fmcli.errors import FmcliError, InputError, UsageError
from fmcli.io.atomic import atomic_output
from fmcli.model import LINKS, FMModel

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "PARAM_LIMIT", "save_model", "load_model"]

FORMAT_NAME = "fmcli-model"
FORMAT_VERSION = 2          # 2: samples as base64 '#fmcli-sample' lines; 1: samples as text
# files without samples are written as version 1 (their layout did not change), so that
# they stay byte for byte what earlier fmcli versions wrote and read
_VERSION_WITHOUT_SAMPLES = 1
# the largest |parameter| a model file may hold: beyond it a prediction overflows (v² x²
# summed over a row), so such a value is damage or divergence, never a model
PARAM_LIMIT = 1e150

TASK_NAMES = {"r": "regression", "c": "classification", "o": "ordered classes"}

_HDR_W0 = "#global bias W0"
_HDR_W = "#unary interactions Wj"
_HDR_V = "#pairwise interactions Vj,f"
_META_PREFIX = "#fmcli-meta "
_SHA_PREFIX = "#fmcli-sha256 "
_SAMPLES_PREFIX = "#fmcli samples "     # format version 1
_SAMPLE_PREFIX = "#fmcli-sample "       # format version 2: '#fmcli-sample S BASE64'
_ORDER_PREFIX = "#fmcli-order "         # format version 2: '#fmcli-order T BASE64' (orders 3 and up)
_SAMPLE_DTYPES = {"float32": "<f4", "float64": "<f8"}

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_F8 = np.dtype("<f8")
_ROWS_PER_CHUNK = 65536
_SHA_LINE_RE = re.compile(rb"#fmcli-sha256 ([0-9a-f]{64})")


# ----------------------------------------------------------------------------- saving

def save_model(path, model):
    """Write `model` to `path` atomically: binary if the name ends in .npz, else text.
    Returns the bytes written."""
    path = os.fspath(path)
    _check_model(model)
    meta = _meta_dict(model)
    if path != "-" and path.lower().endswith(".npz"):
        payload = _npz_bytes(model, meta)
        with atomic_output(path, binary=True) as f:
            for i in range(0, len(payload), 1 << 20):
                f.write(payload[i:i + (1 << 20)])
        return len(payload)
    size = 0
    with atomic_output(path, binary=True) as f:
        sha = hashlib.sha256()
        for chunk in _text_chunks(model, meta):
            data = chunk.encode("ascii")
            sha.update(data)
            f.write(data)
            size += len(data)
        tail = f"{_SHA_PREFIX}{sha.hexdigest()}\n".encode("ascii")
        f.write(tail)
    return size + len(tail)


def _check_model(model):
    n, k = model.V.shape if np.ndim(model.V) == 2 else (None, None)
    if n is None or np.shape(model.w) != (n,):
        raise ValueError(f"inconsistent model shapes: w {np.shape(model.w)}, V {np.shape(model.V)}")
    if model.task not in TASK_NAMES:
        raise ValueError(f"unknown task {model.task!r}")
    if model.link not in LINKS:
        raise ValueError(f"unknown link {model.link!r}")
    arrays = [np.asarray(model.w0, float), np.asarray(model.w), np.asarray(model.V)]
    if model.samples is not None:
        w0s, ws, Vs = (np.asarray(a) for a in model.samples)
        S = w0s.shape[0] if w0s.ndim == 1 else -1
        if S < 1 or ws.shape != (S, n) or Vs.shape != (S, n, k):
            raise ValueError(f"inconsistent sample shapes: {w0s.shape}, {ws.shape}, {Vs.shape} "
                             f"for n={n}, k={k}")
        arrays += [w0s, ws, Vs]
    K = sum(kt for _, kt in model.orders)
    if np.shape(model.H) != (n, K):
        raise ValueError(f"inconsistent higher-order factors: H {np.shape(model.H)} for n={n}, orders {model.orders}")
    arrays.append(np.asarray(model.H))
    if model.orders and model.samples is not None:   # each sample's H, or its predictions would be wrong
        if np.shape(model.samples_H) != (S, n, K):
            raise ValueError(f"inconsistent sample shapes: samples_H {np.shape(model.samples_H)} for "
                             f"{S} samples, n={n}, orders {model.orders}")
        arrays.append(np.asarray(model.samples_H))
    elif model.samples_H is not None:
        raise ValueError("samples_H without samples and orders above 2")
    for a in arrays:
        bad = _first_bad_value(a)
        if bad is not None:
            raise FmcliError(f"the model has {_bad_value_words(a.ravel()[bad])}; it was not saved")
    if math.isnan(model.y_min) or math.isnan(model.y_max):
        raise ValueError("y_min / y_max must not be NaN")


def _first_bad_value(a, rows=1 << 20):
    """Flat index of the first value of `a` that is NaN, infinite or beyond ±PARAM_LIMIT, or
    None (in slices, so that no temporary of the array's size is made)."""
    flat = np.asarray(a).reshape(-1)
    if flat.dtype.kind != "f":
        flat = flat.astype(np.float64)
    limit = flat.dtype.type(min(PARAM_LIMIT, float(np.finfo(flat.dtype).max)))
    for i in range(0, flat.size, rows):
        ok = np.abs(flat[i:i + rows]) <= limit
        if not ok.all():
            return i + int(np.argmin(ok))
    return None


def _bad_value_words(x):
    x = float(x)
    if not math.isfinite(x):
        return f"non-finite parameters (NaN or inf: {x!r})"
    return f"an absurd parameter value {x!r} (|value| > {PARAM_LIMIT:g}: predictions would overflow)"


def _sample_dtype(model):
    """"float32" when w and V of every sample are float32 (MCMC keeps them so), else "float64"
    (exact for any float array)."""
    _, ws, Vs = model.samples
    Hs = ws if model.samples_H is None else model.samples_H
    return "float32" if ws.dtype == Vs.dtype == Hs.dtype == np.float32 else "float64"


def _meta_dict(model):
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION if model.samples is not None or model.orders else _VERSION_WITHOUT_SAMPLES,
        "fmcli_version": __version__,
        "task": model.task,
        "link": model.link,
        "use_w0": bool(model.use_w0),
        "use_w": bool(model.use_w),
        "k": int(model.k),
        "n_features": int(model.n_features),
        "y_min": _encode_bound(model.y_min),
        "y_max": _encode_bound(model.y_max),
        "n_samples": 0 if model.samples is None else int(len(model.samples[0])),
        "meta": _jsonable(model.meta or {}),
    }
    if model.samples is not None:
        meta["sample_dtype"] = _sample_dtype(model)
    if model.orders:   # orders 3 and up, on '#fmcli-order' lines (absent: the file of earlier versions)
        meta["orders"] = [[t, kt] for t, kt in model.orders]
    return meta


def _encode_bound(x):
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _jsonable(obj):
    """A JSON-safe copy: numpy scalars/arrays to Python, tuples to lists, non-finite
    floats and unknown objects to strings, keys to strings."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def _meta_json(meta):
    return json.dumps(meta, ensure_ascii=True, allow_nan=False, separators=(", ", ": "))


def _format_rows(M):
    """Text of the rows of a 2-D float array: repr values, single spaces, one row per line."""
    n, k = M.shape
    if n == 0:
        return ""
    if k == 0:
        return "\n" * n
    # repr() of a nested list formats every float with float.__repr__ in C
    s = repr(M.tolist())
    return s[2:-2].replace("], [", "\n").replace(", ", " ") + "\n"


def _row_chunks(M):
    for a in range(0, M.shape[0], _ROWS_PER_CHUNK):
        yield _format_rows(M[a:a + _ROWS_PER_CHUNK])


def _text_chunks(model, meta):
    if model.use_w0:
        yield _HDR_W0 + "\n" + repr(float(model.w0)) + "\n"
    if model.use_w:
        yield _HDR_W + "\n"
        yield from _row_chunks(np.asarray(model.w, np.float64).reshape(-1, 1))
    yield _HDR_V + "\n"
    yield from _row_chunks(np.asarray(model.V, np.float64))
    off = 0
    for t, kt in model.orders:
        P = np.ascontiguousarray(np.asarray(model.H, np.float64)[:, off:off + kt], _F8)
        yield f"{_ORDER_PREFIX}{t} " + base64.b64encode(P.tobytes()).decode("ascii") + "\n"
        off += kt
    if model.samples is not None:
        dtype = np.dtype(_SAMPLE_DTYPES[meta["sample_dtype"]])
        w0s, ws, Vs = model.samples
        for s in range(len(w0s)):
            H = None if model.samples_H is None else model.samples_H[s]
            yield f"{_SAMPLE_PREFIX}{s} " + base64.b64encode(
                _sample_bytes(model, w0s[s], ws[s], Vs[s], dtype, H)).decode("ascii") + "\n"
    yield _META_PREFIX + _meta_json(meta) + "\n"


def _sample_bytes(model, w0, w, V, dtype, H=None):
    """One sample's payload: w0 as <f8 (if use_w0), w (if use_w), V row by row and (orders 3
    and up) H row by row as `dtype`."""
    parts = []
    if model.use_w0:
        parts.append(np.asarray(w0, _F8).tobytes())
    if model.use_w:
        parts.append(np.ascontiguousarray(w, dtype).tobytes())
    parts.append(np.ascontiguousarray(V, dtype).tobytes())
    if H is not None:
        parts.append(np.ascontiguousarray(H, dtype).tobytes())
    return b"".join(parts)


def _array_digest(meta_bytes, arrays):
    h = hashlib.sha256()
    h.update(meta_bytes)
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode("ascii"))
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _npz_bytes(model, meta):
    arrays = {"w0": np.asarray(float(model.w0), _F8),
              "w": np.ascontiguousarray(model.w, _F8),
              "V": np.ascontiguousarray(model.V, _F8)}
    if model.orders:
        arrays["H"] = np.ascontiguousarray(model.H, _F8)
    if model.samples is not None:
        w0s, ws, Vs = model.samples
        dtype = _SAMPLE_DTYPES[meta["sample_dtype"]]
        arrays.update(w0s=np.ascontiguousarray(w0s, _F8), ws=np.ascontiguousarray(ws, dtype),
                      Vs=np.ascontiguousarray(Vs, dtype))
        if model.orders:
            arrays["Hs"] = np.ascontiguousarray(model.samples_H, dtype)
    meta_bytes = _meta_json(meta).encode("ascii")
    digest = _array_digest(meta_bytes, arrays)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(meta_bytes, np.uint8),
             sha256=np.frombuffer(digest.encode("ascii"), np.uint8), **arrays)
    return buf.getvalue()


# ----------------------------------------------------------------------------- loading

def load_model(path, *, task=None):
    """Read an fmcli model (text or npz) or a libFM model file; see the module docstring.

    task: "r", "c" or "o". For an fmcli file it must match the stored task; for a libFM file
    (which does not record it) it sets the task, default "r" ("o" is refused: such a file
    records no classes or cutpoints).
    """
    if task is not None and task not in TASK_NAMES:
        raise UsageError(f"unknown task {task!r} (expected {', '.join(map(repr, TASK_NAMES))})")
    path = os.fspath(path)
    data = _read_bytes(path)
    if not data:
        raise InputError(path, None, "empty model file")
    if data.startswith(_ZIP_MAGICS):
        model = _load_npz(path, data)
    elif data.startswith(b"#fmcli") or b"\n#fmcli" in data:
        model = _load_fmcli_text(path, data)
    elif task == "o":
        raise InputError(path, None, "a libFM-layout model file records no classes or cutpoints: -task o needs "
                                     "a model saved by fmcli train -task o")
    else:
        return _load_libfm_text(path, data, task or "r")
    if task is not None and model.task != task:
        raise InputError(path, None, f"model was trained for {TASK_NAMES[model.task]}, "
                                     f"not {TASK_NAMES[task]}")
    return model


def _read_bytes(path):
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(path, None, "model file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, "model path is a directory") from None
    except OSError as e:
        raise InputError(path, None, f"cannot read model file: {e.strerror or e}") from None


# --- metadata

def _parse_meta_json(text, err):
    def no_constants(c):
        raise ValueError(f"{c} is not allowed")

    try:
        meta = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError) as e:
        raise err(f"bad metadata JSON: {e}") from None
    if not isinstance(meta, dict):
        raise err("bad metadata JSON: not an object")
    return meta


def _check_version(meta, err):
    fmt = meta.get("format")
    if fmt != FORMAT_NAME:
        raise err(f"not an fmcli model file (format {fmt!r}, expected {FORMAT_NAME!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise err(f"bad format_version {version!r} in metadata")
    if version > FORMAT_VERSION:
        raise err(f"model file format version {version} is newer than this fmcli "
                  f"({__version__}) can read (format version {FORMAT_VERSION}); "
                  f"upgrade fmcli (the file was written by fmcli {meta.get('fmcli_version', '?')})")


# The metadata schema. Every field is checked for its type and allowed values and against
# the others (the arrays' shapes are checked against it where the arrays are read), so that
# an edited file whose checksum was recomputed is refused with the field named, never
# half-used. Inside `meta`, the fields fmcli reads (method, options, relations,
# source_format) are checked the same way; others are kept as they are, since nothing
# reads them.

_TOP_FIELDS = ("format", "format_version", "fmcli_version", "task", "link", "use_w0", "use_w",
               "k", "n_features", "y_min", "y_max", "n_samples", "meta", "orders")
_TASK_LINKS = {"r": ("identity",), "c": ("logistic", "probit"), "o": ("probit",)}


class _BadField(Exception):
    """A metadata field that breaks the schema: (field path, problem)."""


def _bad(field, problem):
    raise _BadField(field, problem)


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _count(d, field, low=0, *, where=""):
    x = d.get(field)
    if not _is_int(x) or x < low:
        _bad(where + field, f"expected an integer >= {low}, found {x!r}")
    return x


def _choice(d, field, allowed, *, where="", optional=False):
    x = d.get(field)
    if optional and x is None:
        return None
    if not isinstance(x, str) or x not in allowed:
        _bad(where + field, f"expected one of {', '.join(map(repr, allowed))}, found {x!r}")
    return x


def _bound(d, field):
    x = d.get(field)
    if isinstance(x, str) and x in ("inf", "-inf", "+inf"):
        return float(x)
    if not _is_number(x):
        _bad(field, f"expected a finite number, 'inf' or '-inf', found {x!r}")
    return float(x)


def _schema_meta(meta):
    """The checked, normalised metadata dict (raises _BadField)."""
    extra = sorted(set(meta) - set(_TOP_FIELDS) - {"sample_dtype"})
    if extra:
        _bad(extra[0], "unknown field")
    version = meta["format_version"]
    if not isinstance(meta.get("fmcli_version"), str):
        _bad("fmcli_version", f"expected a string, found {meta.get('fmcli_version')!r}")
    out = {"format_version": version, "task": _choice(meta, "task", tuple(TASK_NAMES))}
    out["link"] = _choice(meta, "link", LINKS)
    if out["link"] not in _TASK_LINKS[out["task"]]:
        _bad("link", f"{out['link']!r} is not a link of {TASK_NAMES[out['task']]} (expected "
                     f"{' or '.join(map(repr, _TASK_LINKS[out['task']]))})")
    for key in ("use_w0", "use_w"):
        if not isinstance(meta.get(key), bool):
            _bad(key, f"expected true or false, found {meta.get(key)!r}")
        out[key] = meta[key]
    for key in ("k", "n_features", "n_samples"):
        out[key] = _count(meta, key)
    out["y_min"], out["y_max"] = _bound(meta, "y_min"), _bound(meta, "y_max")
    if out["y_min"] > out["y_max"]:
        _bad("y_min", f"{out['y_min']} > y_max {out['y_max']}")
    out["sample_dtype"] = None
    if version >= 2 and out["n_samples"]:
        out["sample_dtype"] = _choice(meta, "sample_dtype", tuple(_SAMPLE_DTYPES))
    elif "sample_dtype" in meta:
        _bad("sample_dtype", "only for a model with samples in format version 2 or later")
    out["orders"] = _schema_orders(meta, out)
    user = meta.get("meta")
    if not isinstance(user, dict):
        _bad("meta", f"expected an object, found {type(user).__name__}")
    _schema_user_meta(user, out)
    out["meta"] = user
    return out


def _schema_orders(meta, top):
    """meta's "orders": [[3, k3], [4, k4], ...] (consecutive orders from 3, each k >= 1), or ()."""
    from fmcli.config import MAX_ORDER

    if "orders" not in meta:
        return ()
    orders = meta["orders"]
    if top["format_version"] < 2:
        _bad("orders", "only in format version 2 or later")
    if not isinstance(orders, list) or not orders:
        _bad("orders", f"expected a list of [order, k] pairs, found {orders!r}")
    for i, pair in enumerate(orders):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(x) for x in pair)
                and pair[0] == 3 + i and pair[1] >= 1):
            _bad("orders", f"entry {i}: expected [{3 + i}, k >= 1], found {pair!r}")
    if len(orders) + 2 > MAX_ORDER:
        _bad("orders", f"order {len(orders) + 2} is beyond the largest supported order {MAX_ORDER}")
    return tuple((t, k) for t, k in orders)


def _name(d, field, *, where=""):
    """A name that is recorded, not acted on (method, optimizer): a non-empty string or None.
    Its allowed values belong to the training side (fmcli.plan), which this module must not
    import (plan loads models)."""
    x = d.get(field)
    if x is not None and (not isinstance(x, str) or not x):
        _bad(where + field, f"expected a name, found {x!r}")
    return x


def _schema_user_meta(user, top):
    """The fields of the model's own `meta` that fmcli reads."""
    method = _name(user, "method", where="meta.")
    if "iterations_done" in user:   # how far a warm start from this model numbers on
        _count(user, "iterations_done", where="meta.")
    if "source_format" in user:
        _choice(user, "source_format", ("libfm",), where="meta.")
    if "options" in user:
        opts = user["options"]
        if not isinstance(opts, dict):
            _bad("meta.options", f"expected an object, found {type(opts).__name__}")
        where = "meta.options."
        if "task" in opts and _choice(opts, "task", tuple(TASK_NAMES), where=where) != top["task"]:
            _bad(where + "task", f"{opts['task']!r} contradicts task {top['task']!r}")
        if "method" in opts and _name(opts, "method", where=where) != method:
            _bad(where + "method", f"{opts['method']!r} contradicts meta.method {method!r}")
        if "dim" in opts:
            dim = opts["dim"]
            if not isinstance(dim, list) or len(dim) < 3 or not all(_is_int(x) and x >= 0 for x in dim):
                _bad(where + "dim", f"expected three (or more) integers >= 0, found {dim!r}")
            if (bool(dim[0]), bool(dim[1]), dim[2], tuple(dim[3:])) != \
                    (top["use_w0"], top["use_w"], top["k"], tuple(k for _, k in top["orders"])):
                _bad(where + "dim", f"{dim} contradicts use_w0 {top['use_w0']}, use_w {top['use_w']}, "
                                    f"k {top['k']}, orders {[list(o) for o in top['orders']]}")
        for key in ("iter", "seed", "burn_in", "keep_samples"):
            if key in opts and opts[key] is not None:
                if not _is_int(opts[key]) or (key != "seed" and opts[key] < 0):
                    _bad(where + key, f"expected an integer{'' if key == 'seed' else ' >= 0'}, "
                                      f"found {opts[key]!r}")
        for key in ("learn_rate", "regular", "init_stdev"):
            if key in opts:
                x = opts[key]
                values = x if isinstance(x, list) and key != "init_stdev" else [x]
                if not values or not all(_is_number(v) and v >= 0 for v in values):
                    _bad(where + key, f"expected {'numbers' if key == 'regular' else 'a number'} >= 0, "
                                      f"found {x!r}")
        _name(opts, "optimizer", where=where)
    if top["task"] == "o" or "ordinal" in user:
        _schema_ordinal(user, top)
    if "relations" in user:
        rels = user["relations"]
        if not isinstance(rels, list):
            _bad("meta.relations", f"expected a list, found {type(rels).__name__}")
        end = 0
        for i, r in enumerate(rels):
            where = f"meta.relations[{i}]."
            if not isinstance(r, dict):
                _bad(where[:-1], f"expected an object, found {type(r).__name__}")
            if not isinstance(r.get("name"), str) or not r["name"]:
                _bad(where + "name", f"expected a file base name, found {r.get('name')!r}")
            offset, n = _count(r, "offset", where=where), _count(r, "n_features", where=where)
            if offset < end:
                _bad(where + "offset", f"{offset} overlaps the features before it (they end at {end})")
            end = offset + n
            if end > top["n_features"]:
                _bad(where + "n_features", f"offset {offset} + {n} features exceed the model's "
                                           f"n_features {top['n_features']}")


def _schema_ordinal(user, top):
    """meta.ordinal of a -task o model (fmcli.ordinal.ordinal_meta): classes (increasing
    integers, at least two), cutpoints (one fewer, increasing, finite) and, with samples,
    sample_cutpoints (one such list per sample)."""
    o = user.get("ordinal")
    if top["task"] != "o":
        _bad("meta.ordinal", f"only for task 'o', not {top['task']!r}")
    if not isinstance(o, dict):
        _bad("meta.ordinal", f"expected an object with classes and cutpoints, found {o!r}"[:200])
    classes = o.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(_is_int(c) for c in classes)
            and all(a < b for a, b in zip(classes, classes[1:]))):
        _bad("meta.ordinal.classes", f"expected two or more increasing integers, found {classes!r}"[:200])

    def cuts(x, where):
        if not (isinstance(x, list) and len(x) == len(classes) - 1 and all(_is_number(g) for g in x)
                and all(a < b for a, b in zip(x, x[1:]))):
            _bad(where, f"expected {len(classes) - 1} increasing finite numbers, found {x!r}"[:200])

    cuts(o.get("cutpoints"), "meta.ordinal.cutpoints")
    if top["n_samples"] or "sample_cutpoints" in o:
        s = o.get("sample_cutpoints")
        if not isinstance(s, list) or len(s) != top["n_samples"]:
            _bad("meta.ordinal.sample_cutpoints", f"expected one list per sample ({top['n_samples']})")
        for i, x in enumerate(s):
            cuts(x, f"meta.ordinal.sample_cutpoints[{i}]")
    extra = sorted(set(o) - {"classes", "cutpoints", "sample_cutpoints"})
    if extra:
        _bad("meta.ordinal." + extra[0], "unknown field")


def _validate_meta(meta, err):
    """Checked, normalised metadata; `err(message)` builds the InputError."""
    _check_version(meta, err)
    try:
        return _schema_meta(meta)
    except _BadField as e:
        field, problem = e.args
        raise err(f"bad model metadata: {field}: {problem}") from None


def _build_model(m, w0, w, V, samples, H=None, samples_H=None):
    return FMModel(float(w0), w, V, m["use_w0"], m["use_w"], m["task"], m["link"],
                   m["y_min"], m["y_max"], m["meta"], samples, H=H, orders=m["orders"], samples_H=samples_H)


# --- npz

_NPZ_REQUIRED = {"meta", "sha256", "w0", "w", "V"}
_NPZ_SAMPLES = {"w0s", "ws", "Vs"}


def _load_npz(path, data):
    def err(msg):
        return InputError(path, None, msg)

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            names = set(z.files)
            missing = _NPZ_REQUIRED - names
            if missing:
                raise err(f"not an fmcli .npz model: missing {', '.join(sorted(missing))}")
            extra = names - _NPZ_REQUIRED - _NPZ_SAMPLES - {"H", "Hs"}
            if extra:
                raise err(f"unexpected entries in .npz model: {', '.join(sorted(extra))}")
            raw_meta = z["meta"]
            if raw_meta.dtype != np.uint8 or raw_meta.ndim != 1:
                raise err("bad meta entry in .npz model")
            meta_bytes = raw_meta.tobytes()
            try:
                meta_text = meta_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise err("bad metadata: not UTF-8") from None
            meta = _parse_meta_json(meta_text, err)
            m = _validate_meta(meta, err)
            n, k, S = m["n_features"], m["k"], m["n_samples"]
            want = {"w0": (), "w": (n,), "V": (n, k)}
            if S:
                want.update(w0s=(S,), ws=(S, n), Vs=(S, n, k))
            if m["orders"]:
                want["H"] = (n, sum(kt for _, kt in m["orders"]))
                if S:
                    want["Hs"] = (S,) + want["H"]
            for name in ("H", "Hs"):
                if (name in names) != (name in want):
                    raise err(f"metadata says orders {[list(o) for o in m['orders']] or 'none'} above 2 and {S} "
                              f"samples but the .npz {'holds' if name in names else 'lacks'} the array {name}")
            present = names & _NPZ_SAMPLES
            if present != (_NPZ_SAMPLES if S else set()):
                raise err(f"metadata says {S} samples but the .npz holds "
                          f"{', '.join(sorted(present)) or 'no sample arrays'}")
            arrays = {}
            sample_dtype = np.dtype(_SAMPLE_DTYPES[m["sample_dtype"] or "float64"])
            for name, shape in want.items():
                a = z[name]
                dtype = sample_dtype if name in ("ws", "Vs", "Hs") else _F8
                if a.dtype != dtype:
                    raise err(f"array {name} has dtype {a.dtype}, expected {dtype.name}")
                if a.shape != shape:
                    raise err(f"array {name} has shape {a.shape}, expected {shape} "
                              f"(n_features={n}, k={k}, n_samples={S})")
                arrays[name] = a
            sha = z["sha256"]
            if sha.dtype != np.uint8 or sha.ndim != 1:
                raise err("bad sha256 entry in .npz model")
            stored = sha.tobytes()
    except InputError:
        raise
    except Exception as e:  # zipfile, numpy format, zlib, struct, memory ... errors
        raise err(f"not a valid .npz model file ({type(e).__name__}: {e})") from None
    if _array_digest(meta_bytes, arrays).encode("ascii") != stored:
        raise err("checksum mismatch: file is corrupt or was edited")
    for name, a in arrays.items():
        bad = _first_bad_value(a)
        if bad is not None:
            raise err(f"array {name} holds {_bad_value_words(a.ravel()[bad])}")
    arrays = {name: np.array(a, a.dtype.newbyteorder("=")) for name, a in arrays.items()}
    samples = (arrays["w0s"], arrays["ws"], arrays["Vs"]) if S else None
    return _build_model(m, arrays["w0"], arrays["w"], arrays["V"], samples, arrays.get("H"), arrays.get("Hs"))


# --- text: shared helpers

class _Lines:
    """Line index over the bytes of a text file (lines end at b"\\n"); line i is 0-based,
    messages use i + 1. Lines are decoded only when looked at one by one."""

    def __init__(self, raw):
        self.raw = raw
        ends = np.flatnonzero(np.frombuffer(raw, np.uint8) == 10)
        if raw and not raw.endswith(b"\n"):
            ends = np.append(ends, len(raw))
        self.ends = ends
        self.starts = np.concatenate([[0], ends[:-1] + 1]).astype(ends.dtype)
        self.n = len(ends)

    def __len__(self):
        return self.n

    def line(self, i):
        return self.raw[self.starts[i]:self.ends[i]].decode("utf-8", "replace")

    def first_bytes(self):
        """The first byte of every line (b"\\n" for an empty line)."""
        if not self.n:
            return np.zeros(0, np.uint8)
        return np.frombuffer(self.raw + b"\n", np.uint8)[self.starts]


def _decode_check(path, data):
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(path, line, "not a model file: invalid UTF-8 (binary garbage?)") from None


_BAD_FAST = (b"\t", b"\r", b"\x0b", b"\x0c", b"#")


def _parse_rows(path, L, start, nrows, ncols, what):
    """Parse lines start .. start+nrows-1 as an (nrows, ncols) float array; errors name
    the line. Fast path: numpy checks the layout and parses the whole run at once;
    anything unusual goes to the line-by-line parser, which finds the exact problem."""
    arr = None
    if nrows == 0:
        arr = np.zeros((0, ncols))
    elif start + nrows <= len(L):
        a, b = int(L.starts[start]), int(L.ends[start + nrows - 1])
        chunk = L.raw[a:b]
        if ncols == 0:
            if b - a == nrows - 1:          # nothing but the newlines
                arr = np.zeros((nrows, 0))
        elif chunk.isascii() and not any(c in chunk for c in _BAD_FAST):
            # whitespace is only " " and "\n" now; a line holds at most (spaces + 1) values
            ok = True
            if ncols == 1:
                ok = b" " not in chunk
            else:
                sp = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 32)
                if sp.size != nrows * (ncols - 1):
                    ok = False
                else:
                    sp = sp.reshape(nrows, ncols - 1) + a
                    ok = bool((sp[:, 0] >= L.starts[start:start + nrows]).all()
                              and (sp[:, -1] < L.ends[start:start + nrows]).all())
            if ok:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    try:
                        flat = np.fromstring(chunk, dtype=np.float64, sep=" ")
                    except (ValueError, DeprecationWarning):
                        flat = None
                if flat is not None and flat.size == nrows * ncols:
                    arr = flat.reshape(nrows, ncols)
    if arr is None:
        arr = _parse_rows_slow(path, L, start, nrows, ncols, what)
    bad = _first_bad_value(arr)
    if bad is not None:
        x = arr.ravel()[bad]
        raise InputError(path, start + bad // max(ncols, 1) + 1,
                         f"non-finite value in {what}: {x!r}" if not np.isfinite(x) else
                         f"absurd value in {what}: {x!r} (|value| > {PARAM_LIMIT:g}: predictions "
                         "would overflow)")
    return arr


def _parse_rows_slow(path, L, start, nrows, ncols, what):
    # metadata can claim more values than the file could hold (each needs a byte at least):
    # then the rows are only checked (the error is on the line that falls short)
    fits = nrows * ncols <= len(L.raw)
    out = np.empty((nrows, ncols) if fits else (1, ncols if ncols <= len(L.raw) else 0))
    for i in range(min(nrows, len(L) - start)):
        lineno = start + i + 1
        line = L.line(start + i)
        if line.lstrip().startswith("#"):
            raise InputError(path, lineno, f"{what} ends after {i} rows, expected {nrows}")
        toks = line.split()
        if len(toks) != ncols:
            raise InputError(path, lineno, f"expected {ncols} value{'s' if ncols != 1 else ''} "
                                           f"in {what}, found {len(toks)}")
        for f, tok in enumerate(toks):
            try:
                out[i if fits else 0, f] = float(tok)
            except ValueError:
                raise InputError(path, lineno, f"not a number in {what}: {tok[:40]!r}") from None
    if start + nrows > len(L):
        have = max(len(L) - start, 0)
        raise InputError(path, max(len(L), 1), f"file ends inside {what}: {have} rows, expected {nrows}")
    return out


def _expect_header(path, L, pos, word, what, note):
    line = L.line(pos) if pos < len(L) else None
    if line is None or not line.startswith("#") or word not in line.lower():
        found = "end of file" if line is None else repr(line[:60])
        raise InputError(path, pos + 1, f"expected the {what} header ({note}), found {found}")


# --- text: fmcli

def _load_fmcli_text(path, data):
    # the file is scanned by offsets, without copies of its sample lines: a model with many
    # samples costs their bytes once (bench/model_size.py)
    end = len(data)
    while end and data[end - 1] in b" \t\r\n":    # trailing blank lines are harmless
        end -= 1
    body_end = data.rfind(b"\n", 0, end) + 1
    m = _SHA_LINE_RE.fullmatch(data, body_end, end)
    if m is None:
        raise InputError(path, None, "truncated model file (no fmcli trailer): it should end "
                                     "with a '#fmcli-sha256' line")
    sha_lineno = data.count(b"\n", 0, body_end) + 1
    meta_lineno = sha_lineno - 1
    meta_start = data.rfind(b"\n", 0, max(body_end - 1, 0)) + 1
    meta_raw = data[meta_start:body_end]
    # a newer format version may use another layout: say so before the checksum complains
    if meta_raw.startswith(_META_PREFIX.encode()):
        try:
            early = json.loads(meta_raw[len(_META_PREFIX):].decode("utf-8"))
        except Exception:
            early = None
        if isinstance(early, dict) and early.get("format") == FORMAT_NAME \
                and isinstance(early.get("format_version"), int):
            _check_version(early, lambda msg: InputError(path, meta_lineno, msg))
    if hashlib.sha256(memoryview(data)[:body_end]).hexdigest() != m.group(1).decode("ascii"):
        raise InputError(path, sha_lineno, "checksum mismatch: file is corrupt or was edited")

    _decode_check(path, data)
    if not meta_raw.startswith(_META_PREFIX.encode()):
        raise InputError(path, meta_lineno or None, "missing '#fmcli-meta' line before the checksum")
    err = lambda msg: InputError(path, meta_lineno, msg)  # noqa: E731
    raw_meta = _parse_meta_json(meta_raw[len(_META_PREFIX):].decode("utf-8"), err)
    meta = _validate_meta(raw_meta, err)
    n, k, S = meta["n_features"], meta["k"], meta["n_samples"]
    base64_samples = raw_meta["format_version"] >= 2
    head_end = meta_start
    if base64_samples and S:
        first = data.find(b"\n" + _SAMPLE_PREFIX.encode(), 0, meta_start)
        head_end = first + 1 if first >= 0 else meta_start
    samples_start = head_end    # the order lines (if any) come before the sample lines
    if meta["orders"]:
        first = data.find(b"\n" + _ORDER_PREFIX.encode(), 0, meta_start)
        head_end = first + 1 if first >= 0 else meta_start
    L = _Lines(data[:head_end])
    nlines = len(L)         # the libFM part (and version 1's sample sections) end here
    shape_note = f"n_features={n}, k={k}"

    def rows(pos, nrows, ncols, what):
        if pos + nrows > nlines:   # would run into the sample lines or the metadata line
            _parse_rows_slow(path, L, pos, min(nrows, nlines - pos), ncols, what)
            raise InputError(path, nlines + 1, f"{what} ends after {max(nlines - pos, 0)} "
                                               f"rows, expected {nrows}")
        return _parse_rows(path, L, pos, nrows, ncols, what)

    def expect_line(pos, want, note):
        if pos >= nlines or L.line(pos) != want:
            found = "the metadata line" if pos >= nlines else repr(L.line(pos)[:60])
            raise InputError(path, pos + 1, f"expected {want!r} ({note}), found {found}")

    pos = 0
    if meta["use_w0"]:
        _expect_header(path, L, pos, "global bias", "'#global bias W0'", shape_note)
        w0 = rows(pos + 1, 1, 1, "the global bias section")[0, 0]
        pos += 2
    else:
        w0 = 0.0
    w = None
    if meta["use_w"]:
        _expect_header(path, L, pos, "unary", "'#unary interactions Wj'", shape_note)
        w = rows(pos + 1, n, 1, f"the unary section ({shape_note})")[:, 0]
        pos += 1 + n
    _expect_header(path, L, pos, "pairwise", "'#pairwise interactions Vj,f'", shape_note)
    V = rows(pos + 1, n, k, f"the pairwise section ({shape_note})")
    w = np.zeros(n) if w is None else w     # after V: n is then known to fit in the file
    pos += 1 + n
    samples = None
    if S and not base64_samples:
        samples, pos = _text_samples(path, L, pos, meta, rows, expect_line)
    if pos != nlines:
        raise InputError(path, pos + 1, f"unexpected line {L.line(pos)[:60]!r} "
                                        f"(metadata: {shape_note}, n_samples={S})")
    samples_H = None
    if S and base64_samples:
        w0s, ws, Vs, samples_H = _base64_samples(path, data, samples_start, meta_start,
                                                 nlines + 1 + len(meta["orders"]), meta)
        samples = (w0s, ws, Vs)
    H = _order_lines(path, data, head_end, samples_start, nlines + 1, meta) if meta["orders"] else None
    return _build_model(meta, w0, w, V, samples, H, samples_H)


def _order_lines(path, data, start, stop, lineno, meta):
    """H (n, K) from the lines '#fmcli-order t B' in data[start:stop], one per order of
    meta's "orders", B the base64 of P^(t) (n, k_t) as <f8 row by row."""
    n = meta["n_features"]
    parts, p = [], start
    for i, (t, kt) in enumerate(meta["orders"]):
        prefix = f"{_ORDER_PREFIX}{t} ".encode()
        e = data.find(b"\n", p, stop)
        e = stop - 1 if e < 0 else e
        note = f"orders {[list(o) for o in meta['orders']]}, n_features={n}"
        if p >= stop or not data.startswith(prefix, p, e):
            found = "the metadata line" if p >= stop else repr(data[p:min(e, p + 40)].decode("utf-8", "replace"))
            raise InputError(path, lineno + i, f"expected the line '{_ORDER_PREFIX}{t} ...' ({note}), found {found}")
        try:
            raw = binascii.a2b_base64(memoryview(data)[p + len(prefix):e], strict_mode=True)
        except binascii.Error as err:
            raise InputError(path, lineno + i, f"order {t}: bad base64 ({err})") from None
        if len(raw) != 8 * n * kt:
            raise InputError(path, lineno + i, f"order {t} holds {len(raw)} bytes, expected {8 * n * kt} ({note})")
        P = np.frombuffer(raw, _F8).reshape(n, kt).astype(np.float64)
        bad = _first_bad_value(P)
        if bad is not None:
            raise InputError(path, lineno + i, f"order {t} holds {_bad_value_words(P.ravel()[bad])}")
        parts.append(P)
        p = e + 1
    if p != stop:
        raise InputError(path, lineno + len(parts), f"unexpected line {data[p:p + 60].decode('utf-8', 'replace')!r} "
                                                    "after the higher-order factors")
    return np.ascontiguousarray(np.hstack(parts))


def _text_samples(path, L, pos, meta, rows, expect_line):
    """Format version 1's samples: '#fmcli samples S', then per sample '#sample s' and its
    w0 line, n w lines, n V lines as text (read, never written now)."""
    n, k, S = meta["n_features"], meta["k"], meta["n_samples"]
    shape_note = f"n_features={n}, k={k}"
    expect_line(pos, f"{_SAMPLES_PREFIX}{S}", f"n_samples={S}")
    pos += 1
    # collected sample by sample: a claimed n_samples the file does not hold fails at the
    # line where it runs out, before any array of the claimed size is made
    w0s, ws, Vs = [], [], []
    for s in range(S):
        expect_line(pos, f"#sample {s}", f"n_samples={S}")
        pos += 1
        label = f"sample {s}: "
        w0s.append(0.0)
        if meta["use_w0"]:
            w0s[s] = rows(pos, 1, 1, f"{label}w0")[0, 0]
            pos += 1
        ws.append(np.zeros(n))
        if meta["use_w"]:
            ws[s] = rows(pos, n, 1, f"{label}w ({shape_note})")[:, 0]
            pos += n
        Vs.append(rows(pos, n, k, f"{label}V ({shape_note})"))
        pos += n
    return (np.array(w0s), np.stack(ws), np.stack(Vs)), pos


def _base64_samples(path, data, start, stop, lineno, meta):
    """The samples of format version 2: data[start:stop] holds S lines '#fmcli-sample s B',
    B the base64 of sample s's w0 (<f8, if use_w0), w (if use_w), V (row by row) and, with
    orders 3 and up, H (n, Σ k_t, row by row), w, V and H as meta's sample_dtype. lineno: the
    line number of the first of them. Returns (w0s, ws, Vs, Hs or None)."""
    n, k, S = meta["n_features"], meta["k"], meta["n_samples"]
    K = sum(kt for _, kt in meta["orders"])
    dtype = np.dtype(_SAMPLE_DTYPES[meta["sample_dtype"]])
    n_w, n_v, n_h = n if meta["use_w"] else 0, n * k, n * K
    size = (8 if meta["use_w0"] else 0) + dtype.itemsize * (n_w + n_v + n_h)
    b64_len = 4 * ((size + 2) // 3)
    note = f"n_samples={S}, n_features={n}, k={k}" + (f", orders {[list(o) for o in meta['orders']]}"
                                                       if K else "") + f", sample_dtype {dtype.name}"
    # first every line's place and length, so that nothing is allocated for a claimed shape
    # the file does not hold
    spans, p = [], start
    for s in range(S):
        prefix = f"{_SAMPLE_PREFIX}{s} ".encode()
        e = data.find(b"\n", p, stop)
        e = stop - 1 if e < 0 else e
        if p >= stop or not data.startswith(prefix, p, e):
            found = "the metadata line" if p >= stop else repr(data[p:min(e, p + 40)].decode("utf-8", "replace"))
            raise InputError(path, lineno + s, f"expected the line '{_SAMPLE_PREFIX}{s} ...' "
                                               f"({note}), found {found}")
        if e - p - len(prefix) != b64_len:
            raise InputError(path, lineno + s, f"sample {s} holds {e - p - len(prefix)} base64 "
                                               f"characters, expected {b64_len} ({note})")
        spans.append(p + len(prefix))
        p = e + 1
    if p != stop:
        raise InputError(path, lineno + S, f"unexpected line {data[p:p + 60].decode('utf-8', 'replace')!r} "
                                           f"after the samples ({note})")
    w0s, ws, Vs, Hs = np.zeros(S), np.zeros((S, n), dtype), np.zeros((S, n, k), dtype), np.zeros((S, n, K), dtype)
    view = memoryview(data)
    for s, a in enumerate(spans):
        try:
            raw = binascii.a2b_base64(view[a:a + b64_len], strict_mode=True)
        except binascii.Error as e:
            raise InputError(path, lineno + s, f"sample {s}: bad base64 ({e})") from None
        if len(raw) != size:
            raise InputError(path, lineno + s, f"sample {s} holds {len(raw)} bytes, expected {size} ({note})")
        off = 0
        if meta["use_w0"]:
            w0s[s] = np.frombuffer(raw, _F8, 1, 0)[0]
            off = 8
        if n_w:
            ws[s] = np.frombuffer(raw, dtype, n_w, off)
            off += dtype.itemsize * n_w
        Vs[s] = np.frombuffer(raw, dtype, n_v, off).reshape(n, k)
        off += dtype.itemsize * n_v
        if n_h:
            Hs[s] = np.frombuffer(raw, dtype, n_h, off).reshape(n, K)
    for name, a, per in (("w0", w0s, 1), ("w", ws, max(n, 1)), ("V", Vs, max(n * k, 1)), ("H", Hs, max(n * K, 1))):
        bad = _first_bad_value(a)
        if bad is not None:
            raise InputError(path, lineno + bad // per, f"sample {bad // per}: {name} holds "
                                                        f"{_bad_value_words(a.ravel()[bad])}")
    return w0s, ws, Vs, (Hs if meta["orders"] else None)


# --- text: libFM

_ORDER = ("w0", "w", "V")


def _load_libfm_text(path, data, task):
    if not data.strip():
        raise InputError(path, None, "empty model file")
    _decode_check(path, data)
    L = _Lines(data)
    headers = np.flatnonzero(L.first_bytes() == ord("#")).tolist()
    if not headers or headers[0] != 0:
        raise InputError(path, 1, "not a model file: expected a libFM header such as "
                                  f"'{_HDR_W0}' or '{_HDR_V}' on the first line")
    kinds = []
    for i in headers:
        low = L.line(i).lower()
        kind = "w0" if "global bias" in low else "w" if "unary" in low else \
            "V" if "pairwise" in low else None
        if kind is None and i == len(L) - 1 and L.line(i).startswith("#f") \
                and "#fmcli".startswith(L.line(i).rstrip()):
            raise InputError(path, None, "truncated model file (no fmcli trailer)")
        if kind is None:
            raise InputError(path, i + 1, f"unexpected line {L.line(i)[:60]!r} in a libFM model "
                                          "(expected a '#global bias', '#unary' or '#pairwise' header)")
        if kinds and _ORDER.index(kind) <= _ORDER.index(kinds[-1]):
            raise InputError(path, i + 1, f"unexpected header {L.line(i)[:60]!r}: libFM "
                                          "sections come in the order global bias, unary, pairwise")
        kinds.append(kind)
    if kinds[-1] != "V":
        raise InputError(path, None, f"no '{_HDR_V}' section: not a complete libFM model")
    bounds = dict(zip(kinds, zip(headers, headers[1:] + [len(L)])))

    w0 = 0.0
    if "w0" in bounds:
        h, end = bounds["w0"]
        if end - h - 1 != 1:
            raise InputError(path, h + 1, f"the global bias section has {end - h - 1} lines, expected 1")
        w0 = _parse_rows(path, L, h + 1, 1, 1, "the global bias section")[0, 0]

    hv, endv = bounds["V"]
    vlines = endv - hv - 1
    k = len(L.line(hv + 1).split()) if vlines else 0
    if "w" in bounds:
        h, end = bounds["w"]
        n = end - h - 1
        w = _parse_rows(path, L, h + 1, n, 1, "the unary section")[:, 0]
        if vlines < n:
            raise InputError(path, hv + 1, f"the pairwise section has {vlines} lines, but the "
                                           f"unary section has {n} (one per feature)")
        for i in range(hv + 1 + n, endv):
            if L.line(i).strip():
                raise InputError(path, i + 1, f"unexpected line after the {n} rows of the pairwise "
                                              "section (the unary section has one row per feature)")
    else:
        n = vlines
        if k > 0:
            while n > 0 and not L.line(hv + n).strip():
                n -= 1
        w = np.zeros(n)
    V = _parse_rows(path, L, hv + 1, n, k, f"the pairwise section (k={k}, from line {hv + 2})")
    link = "identity" if task == "r" else "logistic"
    return FMModel(float(w0), w, V, "w0" in bounds, "w" in bounds, task, link,
                   -np.inf, np.inf, {"source_format": "libfm"})

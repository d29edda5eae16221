"""Loading a data set: the policy above the two readers (libFM text, fmcli's binary file).

`load_dataset(path)` reads
- a binary data file (`fmcli convert --binary`) memory-mapped, every array checked (a damaged
  file is an input error naming it), then checked against the options;
- standard input, or any file with `cache=False`, with the text reader;
- a text file through the cache `path + ".fmcache"` beside it: reused while valid for the text
  file as it is now (fmcli.io.cache: its identity, and with `cache="verify"` the checksum of
  the whole text), otherwise the text is parsed once, in chunks, straight into a new cache
  (atomically; skipped when the folder is not writable), and the rows come back memory-mapped
  from it, so that a learner that copies them can drop their pages. A damaged cache is
  reported by `note` (one line) and rebuilt from the text, as with `cache=False`.

The text is read at most once per call, errors included: a first parse checks the caller's
options (targets required, -1/0/+1 classes, largest feature id) as it goes, so a bad line is
reported with the reader's FILE:LINE message and no cache is written; a valid cache built
under other options that does not fit these is answered by one strict parse of the text,
which names the line. (Only a failure to write the cache, such as a full disk, makes the
rows be read a second time, from the text, into memory.)
"""

import functools
import os
import time

import numpy as np

from fmcli.data import SparseData
from fmcli.errors import InputError
from fmcli.io.cache import (CacheMiss, CorruptCache, cache_path, is_binary, read_cache, text_identity,
                            text_xxh64, write_cache_chunks)
from fmcli.io.libsvm import class_targets, iter_libfm_chunks, read_libfm

VERIFY = "verify"       # load_dataset(cache=VERIFY): the cache must also match the whole text's checksum


def _fits(d, targets, classes, max_feature_id):
    """`d` (targets optional, as written) checked against the caller's options, with class
    targets mapped; None when they do not fit."""
    y = np.asarray(d.y)
    if targets == "required" and np.isnan(y).any():
        return None
    if max_feature_id is not None and d.n_features - 1 > max_feature_id:
        return None
    if classes:
        if not (np.isnan(y) | (y == 1) | (y == 0) | (y == -1)).all():
            return None
        d = SparseData(d.indptr, d.indices, d.data, class_targets(y), d.n_features, d.source,
                       d.max_id_line)
    return d


def read_binary(path, *, targets="required", classes=False, max_feature_id=None):
    """A binary data file given by name, checked against the caller's options."""
    try:
        d = read_cache(path)
    except CorruptCache as e:
        raise InputError(path, None, f"corrupt binary data file ({e})") from None
    except CacheMiss as e:
        raise InputError(path, None, f"cannot read this binary data file ({e}): convert the text "
                                     "again with this fmcli") from None
    checked = _fits(d, targets, classes, max_feature_id)
    if checked is None:
        if targets == "required" and np.isnan(d.y).any():
            raise InputError(path, None, "rows without a target")
        raise InputError(path, None, "targets or feature ids do not fit the options "
                                     "(convert it to text with --to-text to find the row)")
    return checked


def load_dataset(path, *, cache=True, targets="required", classes=False, max_feature_id=None, note=None):
    """The rows of `path` as SparseData, checked against the options (see the module docs).
    cache: True, False or VERIFY; note: a function given one line about a damaged cache."""
    kw = {"targets": targets, "classes": classes, "max_feature_id": max_feature_id}
    if path != "-" and os.path.isfile(path) and is_binary(path):
        return read_binary(path, **kw)
    if not cache or path == "-" or not os.path.isfile(path):
        return read_libfm(path, **kw)
    text = text_identity(path)
    seen_ns = time.time_ns()
    digest = functools.cache(lambda: text_xxh64(path))     # the whole text, hashed at most once
    cpath = cache_path(path)
    source = os.fspath(path)
    try:
        cached = read_cache(cpath, text, source=source, text_xxh64=digest, verify=cache == VERIFY)
    except CorruptCache as e:
        if note is not None:
            note(f"{cpath}: damaged cache ({e}), not used: {source} is read again")
        cached = None
    except CacheMiss:
        cached = None
    if cached is not None:
        d = _fits(cached, targets, classes, max_feature_id)
        # a valid cache that does not fit: the strict parse names the line
        return d if d is not None else read_libfm(path, **kw)
    if os.access(os.path.dirname(os.path.abspath(cpath)), os.W_OK):
        chunks = iter_libfm_chunks(path, targets=targets, classes=classes, max_feature_id=max_feature_id)
        try:
            write_cache_chunks(cpath, chunks, text, digest(), seen_ns)
            return _fits(read_cache(cpath, text, source=source, text_xxh64=digest), targets, classes,
                         max_feature_id)
        except (OSError, CacheMiss):
            pass    # a cache is an optimisation; a full disk must not fail the run
    return read_libfm(path, **kw)

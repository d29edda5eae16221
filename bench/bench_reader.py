#!/usr/bin/env python3
"""Benchmark of the libFM text reader (fmcli.io.libsvm.read_libfm) on the 1M-row synthetic set.

usage: python bench/bench_reader.py [PREFIX] [--repeat N]

PREFIX defaults to /tmp/fmcli-bench/s1m; PREFIX.train.libfm is generated with
../shared/bench/synth.py (1M rows, --seed 1) when missing, and a gzip copy
PREFIX.train.libfm.gz is made next to it. Reports:
  * the first call in a fresh process with an empty numba cache (compile + read),
  * the first call in a fresh process with the numba cache warm (cache load + read),
  * best of N in-process reads (plain and gzip) as MB/s and rows/s,
  * the ratio to libFM's load time for this file (2.5-5 s, shared/docs/anchors.md).
"""

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SYNTH = os.path.join(REPO, "..", "shared", "bench", "synth.py")
LIBFM_LOAD_S = (2.5, 5.0)   # libFM 1.4.4 load of the 1M-row train file (anchors.md: 2.5 quiet, ~5 noisy)

FIRST_CALL = """
import sys, time
t = time.perf_counter()
from fmcli.io.libsvm import read_libfm
d = read_libfm(sys.argv[1])
print(time.perf_counter() - t)
"""


def ensure_data(prefix):
    path = prefix + ".train.libfm"
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        print(f"generating {path} with {SYNTH} (1M rows, seed 1) ...", flush=True)
        subprocess.run([sys.executable, SYNTH, prefix, "1000000", "--seed", "1"], check=True)
    gz = path + ".gz"
    if not os.path.exists(gz) or os.path.getmtime(gz) < os.path.getmtime(path):
        print(f"writing {gz} ...", flush=True)
        with open(path, "rb") as src, gzip.open(gz + ".tmp", "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(gz + ".tmp", gz)
    return path, gz


def first_call(path, cache_dir=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", FIRST_CALL, path], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip()), time.perf_counter() - t


def best_of(fn, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix", nargs="?", default="/tmp/fmcli-bench/s1m")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    path, gz = ensure_data(a.prefix)
    size = os.path.getsize(path)
    mb = size / 1e6
    print(f"file: {path} ({mb:.1f} MB), gzip copy {os.path.getsize(gz) / 1e6:.1f} MB")

    with tempfile.TemporaryDirectory() as cold:
        t_read, t_proc = first_call(path, cache_dir=cold)
    print(f"first call, empty numba cache (compile + read): {t_read:.2f} s (process {t_proc:.2f} s)")
    first_call(path)  # make sure the normal cache is populated
    t_read, t_proc = first_call(path)
    print(f"first call, warm numba cache (load + read):    {t_read:.2f} s (process {t_proc:.2f} s)")

    sys.path.insert(0, REPO)
    from fmcli.io.libsvm import iter_libfm_chunks, read_libfm

    read_libfm(path)  # warm up in this process
    for label, p in (("plain", path), ("gzip ", gz)):
        t, d = best_of(lambda: read_libfm(p), a.repeat)
        lo, hi = LIBFM_LOAD_S
        print(f"read_libfm {label} best of {a.repeat}: {t:.3f} s  {mb / t:6.1f} MB/s (of text)  "
              f"{d.n_rows / t / 1e6:.2f} M rows/s  rows={d.n_rows} nnz={d.nnz} n_features={d.n_features}  "
              f"libFM {lo}-{hi} s -> {lo / t:.1f}-{hi / t:.1f}x faster")

    def chunked():
        rows = 0
        for c in iter_libfm_chunks(path, chunk_bytes=8 << 20):
            rows += c.n_rows
        return rows

    t, rows = best_of(chunked, a.repeat)
    print(f"iter_libfm_chunks (8 MB blocks) best of {a.repeat}: {t:.3f} s  {mb / t:6.1f} MB/s  rows={rows}")


if __name__ == "__main__":
    main()

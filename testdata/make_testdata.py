#!/usr/bin/env python3
"""Generate the small data sets shipped in testdata/ (libFM text format).

Each comes from a planted factorization machine, so the best achievable error
is known. Deterministic: running this again rewrites identical files.

  movies.{train,test}.libfm, movies.meta   ratings 1-5 from users x items (+ a user
                                           age feature), groups for -meta
  clicks.{train,test}.libfm                 0/1 labels from a planted FM (probit)
  regression.{train,test}.libfm             numeric features, noisy planted FM target
  minilens.{base,test,user,item}            raw MovieLens-style tables for the README walkthrough
                                           test: user item rating time (tab), id|age|gender|
                                           occupation|zip, id|title|date||url|5 genre flags
                                           (latin-1 titles); ratings from planted user, item
                                           and gender x genre effects
"""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def fm(idx, val, w0, w, V):
    """Planted FM on rows given as padded index/value matrices (index -1 = absent)."""
    present = idx >= 0
    x = np.where(present, val, 0.0)
    ii = np.where(present, idx, 0)
    vx = V[ii] * x[:, :, None]
    return w0 + (w[ii] * x).sum(1) + 0.5 * ((vx.sum(1) ** 2).sum(1) - (vx ** 2).sum((1, 2)))


def write(name, y, idx, val, fmt_y):
    with open(os.path.join(HERE, name), "w") as f:
        for t, row_i, row_v in zip(y, idx, val):
            pairs = " ".join(f"{i}:{v:g}" for i, v in zip(row_i, row_v) if i >= 0)
            f.write(f"{fmt_y(t)} {pairs}\n")


def movies(rng):
    users, items, k = 400, 300, 4
    n_feat = users + items + 1
    w = np.concatenate([rng.normal(0, 0.3, users), rng.normal(0, 0.4, items), [0.5]])
    V = np.vstack([rng.normal(0, 0.5, (users, k)), rng.normal(0, 0.5, (items, k)), rng.normal(0, 0.2, (1, k))])
    age = rng.random(users).round(2)
    n = 24000
    u = rng.integers(0, users, n)
    i = users + np.minimum(rng.zipf(1.3, n) - 1, items - 1)
    idx = np.stack([u, i, np.full(n, users + items)], 1)
    val = np.stack([np.ones(n), np.ones(n), age[u]], 1)
    y = np.clip(np.rint(fm(idx, val, 3.5, w, V) + rng.normal(0, 0.5, n)), 1, 5)
    cut = int(n * 0.9)
    write("movies.train.libfm", y[:cut], idx[:cut], val[:cut], lambda t: f"{t:.0f}")
    write("movies.test.libfm", y[cut:], idx[cut:], val[cut:], lambda t: f"{t:.0f}")
    with open(os.path.join(HERE, "movies.meta"), "w") as f:
        f.writelines(f"{g}\n" for g in [0] * users + [1] * items + [2])
    return n_feat


def clicks(rng):
    n_feat, k, n = 200, 3, 12000
    w = rng.normal(0, 0.5, n_feat)
    V = rng.normal(0, 0.4, (n_feat, k))
    idx = np.stack([rng.choice(n_feat, 5, replace=False) for _ in range(n)])
    val = np.ones(idx.shape)
    p = fm(idx, val, -0.3, w, V)
    y = (p + rng.normal(0, 1, n) > 0).astype(int)
    cut = int(n * 0.9)
    write("clicks.train.libfm", y[:cut], idx[:cut], val[:cut], str)
    write("clicks.test.libfm", y[cut:], idx[cut:], val[cut:], str)


def regression(rng):
    n_feat, k, n = 30, 2, 4000
    w = rng.normal(0, 1, n_feat)
    V = rng.normal(0, 0.5, (n_feat, k))
    idx = np.stack([np.sort(rng.choice(n_feat, 6, replace=False)) for _ in range(n)])
    val = rng.normal(0, 1, idx.shape).round(3)
    y = fm(idx, val, 1.0, w, V) + rng.normal(0, 0.1, n)
    cut = int(n * 0.9)
    write("regression.train.libfm", y[:cut], idx[:cut], val[:cut], lambda t: f"{t:.4f}")
    write("regression.test.libfm", y[cut:], idx[cut:], val[cut:], lambda t: f"{t:.4f}")


def minilens(rng):
    users, items, genres, n = 60, 40, 5, 1500
    gender = rng.integers(0, 2, users + 2)       # 2 users with no ratings (cold start)
    age = rng.integers(15, 70, users + 2)
    jobs = ["student", "writer", "engineer", "artist"]
    flags = (rng.random((items, genres)) < 0.35).astype(int)
    taste = rng.normal(0, 0.8, (2, genres))          # gender x genre effect
    bu, bi = rng.normal(0, 0.4, users), rng.normal(0, 0.4, items)
    u = rng.integers(0, users, n)
    i = np.minimum(rng.zipf(1.4, n) - 1, items - 1)
    score = 3.4 + bu[u] + bi[i] + (taste[gender[u]] * flags[i]).sum(1) / np.maximum(flags[i].sum(1), 1)
    y = np.clip(np.rint(score + rng.normal(0, 0.6, n)), 1, 5).astype(int)
    t = 880000000 + rng.integers(0, 200 * 86400, n)     # not time-ordered: the test rows are a random tenth, as ua
    cut = int(n * 0.9)
    for name, rows in (("minilens.base", range(cut)), ("minilens.test", range(cut, n))):
        with open(os.path.join(HERE, name), "w") as f:
            f.writelines(f"{u[r] + 1}\t{i[r] + 1}\t{y[r]}\t{t[r]}\n" for r in rows)
    with open(os.path.join(HERE, "minilens.user"), "w") as f:
        f.writelines(f"{k + 1}|{age[k]}|{'MF'[gender[k]]}|{jobs[k % 4]}|{10000 + k}\n" for k in range(users + 2))
    with open(os.path.join(HERE, "minilens.item"), "wb") as f:
        for k in range(items):
            title = f"Film {k + 1} ({'Amélie' if k % 7 == 0 else 'Café' if k % 5 == 0 else 'Plain'})"
            f.write(f"{k + 1}|{title}|01-Jan-1995||http://example.org/{k + 1}|".encode("latin-1")
                    + "|".join(map(str, flags[k])).encode() + b"\n")


if __name__ == "__main__":
    rng = np.random.default_rng(20261121)
    movies(rng)
    clicks(rng)
    regression(rng)
    minilens(np.random.default_rng(20261203))

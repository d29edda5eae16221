"""Benchmark of `fmcli recommend`: speed on ml-100k and the 1M synthetic set, ranking quality on ua.

    python bench/recommend_speed.py [--work DIR] [--skip-synth]

1. ml-100k (../shared/data/ml-100k): `fmcli convert` ua.base/ua.test, `fmcli train` an MCMC
   dim-8 model (200 samples, all stored) and an ALS dim-8 model; top-10 for all 943 users
   over all 1,682 items, ua.base items excluded: the time beyond start-up (the run less the
   model load, in-process, second run so no compilation) and the command's wall time.
2. precision@10 / NDCG@10 (and the other metrics) on ua.test, ratings >= 4 relevant, ua.base
   items excluded: the MCMC and ALS models beside a popularity baseline (items ranked by
   their number of ua.base ratings) scored by the same code (fmcli.recommend.evaluate_scorer).
3. The 1M synthetic set (../shared/bench/synth.py, seed 1: 100k users x 20k items): its
   (user, item, rating) triples converted and an ALS dim-8 model trained with fmcli; top-10
   for every user, train items excluded, by fmcli's engine and by the `implicit` library's
   `recommend` (installed into DIR/pkgs for this bench only) with factor matrices of the same
   width (k + 1: the FM's item part rides as one more factor), side by side in one run.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
SHARED = os.path.join(REPO, "..", "shared")
ML = os.path.join(SHARED, "data", "ml-100k")
SYNTH = os.path.join(SHARED, "bench", "synth.py")


def fmcli(*args):
    t = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-m", "fmcli", *map(str, args)], check=True, env=env)
    return time.perf_counter() - t


def timed(fn, repeat=3):
    """(best wall seconds, the CPU seconds of that run (all threads), fn's result)."""
    best, cpu = np.inf, np.inf
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        if time.perf_counter() - t < best:
            best, cpu = time.perf_counter() - t, time.process_time() - c
    return best, cpu, out


def top_n_all(model, mapping, exclude, n=10):
    """fmcli recommend's work beyond start-up for every user: sides are given; read the
    exclusions, item terms, user terms by chunk, top-N (output formatting left out)."""
    from fmcli import recommend as R
    from fmcli.console import Console

    job = R.RecommendJob(model="", mapping="", exclude=exclude, n=n)
    candidates = {v: p for p, v in enumerate(mapping.item.ids)}
    excl = R._exclusions(job, mapping, candidates, Console(quiet=True))
    scorer = R.Scorer.of_model(model, R._candidate_rows(mapping, candidates))
    users = np.arange(mapping.user.n_rows)
    parts = [scorer.top_n(t, *R.rows_of(excl[0], w, excl[1]), n) for w, t in R._user_chunks(model, mapping, users, scorer)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def popularity_metrics(mapping, base, test, k):
    """Items ranked by their number of ua.base ratings, through the same scorer and metrics."""
    from fmcli import recommend as R
    from fmcli.console import Console

    candidates = {v: p for p, v in enumerate(mapping.item.ids)}
    job = R.RecommendJob(model="", mapping="", exclude=base, evaluate=test, min_rating=4.0, k=k)
    excl = R._exclusions(job, mapping, candidates, Console(quiet=True))
    relevant, users = R.held_out(job, mapping, candidates, excl, Console(quiet=True))
    counts = np.bincount(excl[1], minlength=len(candidates)).astype(np.float64)
    scorer = R.Scorer(counts[:, None, None], np.zeros(1), R.LINK_CODES["identity"], -np.inf, np.inf)
    chunks = [(users, np.zeros((len(users), 1, 1)))]
    return R.evaluate_scorer(scorer, chunks, excl, relevant, k)


def model_metrics(model_path, mapping_path, base, test, k):
    from fmcli import recommend as R
    from fmcli.console import Console

    job = R.RecommendJob(model=model_path, mapping=mapping_path, exclude=base, evaluate=test, min_rating=4.0,
                         k=k, user_column="0", item_column="1", out=os.devnull)
    return R.run_recommend(job, Console(quiet=True))


def ml100k(work):
    from fmcli import recommend as R
    from fmcli.io.modelfile import load_model

    p = lambda name: os.path.join(work, name)
    base, test = os.path.join(ML, "ua.base"), os.path.join(ML, "ua.test")
    if not os.path.exists(p("ua.mcmc.fm")):
        fmcli("convert", "-in", base, "-in", test, "-out", p("ua.train.libfm"), "-out", p("ua.test.libfm"),
              "--target", "2", "--categorical", "0,1", "--drop", "3", "-meta", p("ua.meta"),
              "--mapping", p("ua.map.json"), "-q")
        fmcli("train", "-task", "r", "-train", p("ua.train.libfm"), "-test", p("ua.test.libfm"), "-method", "mcmc",
              "-dim", "1,1,8", "-iter", "200", "-meta", p("ua.meta"), "-save_model", p("ua.mcmc.fm"), "-q")
        fmcli("train", "-task", "r", "-train", p("ua.train.libfm"), "-test", p("ua.test.libfm"), "-method", "als",
              "-dim", "1,1,8", "-iter", "100", "-regular", "0,10,10", "-save_model", p("ua.als.fm"), "-q")
    print("ml-100k ua: top-10 for all 943 users over 1,682 items, ua.base items excluded")
    for name in ("mcmc", "als"):
        model = load_model(p(f"ua.{name}.fm"))
        load_s, _, _ = timed(lambda: load_model(p(f"ua.{name}.fm")), 1)
        mapping = R.load_sides(p("ua.map.json"), model, "0", "1")
        top_n_all(model, mapping, base)   # compile / warm
        t, cpu, (items, _) = timed(lambda: top_n_all(model, mapping, base))
        assert items.shape == (943, 10) and (items >= 0).all()
        wall = fmcli("recommend", "-model", p(f"ua.{name}.fm"), "--mapping", p("ua.map.json"), "--user", "0",
                     "--item", "1", "-exclude", base, "-n", "10", "-out", p(f"top10.{name}.tsv"), "-q")
        sets = 1 if model.samples is None else len(model.samples[0])
        print(f"  {name:4s} ({sets:3d} parameter sets): {t:.3f} s wall, {cpu:.3f} s CPU beyond start-up "
              f"(best of 3, in-process; goal < 0.3 s); the command: {wall:.2f} s wall, of which loading the model {load_s:.2f} s")
    print(f"ml-100k ua.test, ratings >= 4 relevant, ua.base items excluded (k = 10):")
    rows = {"popularity": popularity_metrics(R.load_sides(p("ua.map.json"), load_model(p("ua.als.fm")), "0", "1"),
                                             base, test, 10)}
    rows["popularity"] = {f"{m}@10" if m not in ("auc", "users") else m: v for m, v in rows["popularity"].items()}
    for name in ("mcmc", "als"):
        rows[name] = model_metrics(p(f"ua.{name}.fm"), p("ua.map.json"), base, test, 10)
    cols = ["precision@10", "ndcg@10", "recall@10", "map@10", "hit_rate@10", "auc"]
    print("  " + "model".ljust(12) + "".join(c.rjust(14) for c in cols) + "users".rjust(8))
    for name, m in rows.items():
        print("  " + name.ljust(12) + "".join(f"{m[c]:14.4f}" for c in cols) + f"{m['users']:8d}")
    return rows


def ensure_implicit(work):
    """`implicit` (and threadpoolctl) in work/pkgs for this bench only; None if it cannot be had."""
    pkgs = os.path.join(work, "pkgs")
    if not os.path.exists(os.path.join(pkgs, "implicit")):
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", pkgs,
                              "implicit", "threadpoolctl"], capture_output=True, text=True)
        if res.returncode:
            print("  implicit could not be installed:", res.stderr.strip().splitlines()[-1:])
            return None
    sys.path.insert(0, pkgs)
    import implicit

    return implicit


def synthetic(work):
    from fmcli import recommend as R
    from fmcli.io.load import load_dataset
    from fmcli.io.modelfile import load_model

    p = lambda name: os.path.join(work, name)
    if not os.path.exists(p("synth.als.fm")):
        if not os.path.exists(p("s1m.train.libfm")):
            subprocess.run([sys.executable, SYNTH, p("s1m"), "1000000", "--seed", "1", "--test", "1000"], check=True)
        d = load_dataset(p("s1m.train.libfm"), cache=False)
        # each row's first two ids: the user (0..99,999) and the item (100,000..119,999)
        first = np.asarray(d.indptr[:-1])
        users, items = np.asarray(d.indices)[first], np.asarray(d.indices)[first + 1] - 100_000
        with open(p("synth.tsv"), "w") as f:
            f.write("".join(f"{u}\t{i}\t{y:.3f}\n" for u, i, y in zip(users.tolist(), items.tolist(),
                                                                      np.asarray(d.y).tolist())))
        fmcli("convert", "-in", p("synth.tsv"), "-out", p("synth.libfm"), "--target", "2", "--categorical", "0,1",
              "--mapping", p("synth.map.json"), "-q")
        fmcli("train", "-task", "r", "-train", p("synth.libfm"), "-method", "als", "-dim", "1,1,8", "-iter", "10",
              "-regular", "0,10,10", "-save_model", p("synth.als.fm"), "-q")
    model = load_model(p("synth.als.fm"))
    mapping = R.load_sides(p("synth.map.json"), model, "0", "1")
    n_users, n_items = mapping.user.n_rows, mapping.item.n_rows
    print(f"1M synthetic set: top-10 for every one of {n_users:,} users over {n_items:,} items, "
          f"train items excluded, ALS dim {model.k}")
    from fmcli.console import Console

    job = R.RecommendJob(model="", mapping="", exclude=p("synth.tsv"))
    candidates = {v: q for q, v in enumerate(mapping.item.ids)}
    t_read = time.perf_counter()
    excl = R._exclusions(job, mapping, candidates, Console(quiet=True))
    t_read = time.perf_counter() - t_read
    params = R.parameter_sets(model)

    def ours():
        scorer = R.Scorer.of_model(model, R._candidate_rows(mapping, candidates))
        users = np.arange(n_users)
        parts = [scorer.top_n(t, *R.rows_of(excl[0], w, excl[1]), 10) for w, t in R._user_chunks(model, mapping, users, scorer)]
        return np.concatenate([q[0] for q in parts]), np.concatenate([q[1] for q in parts])

    ours()
    t_ours, cpu_ours, (our_items, _) = timed(ours, 2)
    implicit = ensure_implicit(work)
    result = {"ours": t_ours, "read_exclusions": t_read, "users": n_users, "items": n_items}
    if implicit is not None:
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares

        uterms = R.side_terms(model, *mapping.user.rows(np.arange(n_users)), params)[:, 0]
        iterms = R.side_terms(model, *R._candidate_rows(mapping, candidates), params)[:, 0]
        # width k + 1: user (q_u, 1), item (q_i, b_i): the same unclipped ranking as the FM's
        U = np.hstack([uterms[:, 1:], np.ones((n_users, 1))]).astype(np.float32)
        I = np.hstack([iterms[:, 1:], iterms[:, :1]]).astype(np.float32)
        als = AlternatingLeastSquares(factors=U.shape[1], random_state=0)
        als.user_factors, als.item_factors = U, I
        liked = sp.csr_matrix((np.ones(len(excl[1]), np.float32), excl[1], excl[0]), shape=(n_users, n_items))
        uid = np.arange(n_users)
        als.recommend(uid[:100], liked[:100], N=10, filter_already_liked_items=True)
        run = lambda: als.recommend(uid, liked, N=10, filter_already_liked_items=True)
        t_imp, cpu_imp, (imp_items, _) = timed(run, 2)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):   # what implicit's warning advises
            t_imp1, cpu_imp1, _ = timed(run, 2)
        print(f"  implicit with BLAS on its default threads {t_imp:.2f} s ({cpu_imp:.2f} s CPU), on one "
              f"thread as its warning advises {t_imp1:.2f} s ({cpu_imp1:.2f} s CPU); the faster is compared")
        if t_imp1 < t_imp:
            t_imp, cpu_imp = t_imp1, cpu_imp1
        same = float((np.sort(imp_items, 1) == np.sort(our_items, 1)).all(1).mean())
        result.update(implicit=t_imp, implicit_cpu=cpu_imp, ours_cpu=cpu_ours, implicit_version=implicit.__version__, same_lists=same)
        print(f"  fmcli engine {t_ours:.2f} s ({cpu_ours:.2f} s CPU), implicit {implicit.__version__} recommend "
              f"{t_imp:.2f} s ({cpu_imp:.2f} s CPU): "
              f"ratio fmcli/implicit {t_ours / t_imp:.2f} (best of 2 each, same process, "
              f"{os.cpu_count()} cores); same top-10 set for {same:.1%} of users (fmcli float64 and clipped "
              f"to the target range, implicit float32 unclipped)")
    else:
        print(f"  fmcli engine {t_ours:.2f} s; implicit unavailable")
    print(f"  (reading the 1M exclusion rows took {t_read:.2f} s, not in either figure)")
    wall = fmcli("recommend", "-model", p("synth.als.fm"), "--mapping", p("synth.map.json"), "--user", "0",
                 "--item", "1", "-exclude", p("synth.tsv"), "-n", "10", "-out", p("synth.top10.tsv"), "-q")
    print(f"  the command end to end (load, read exclusions, rank, write 1M lines): {wall:.1f} s wall")
    result["command"] = wall
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/fmcli-recommend-bench")
    ap.add_argument("--skip-synth", action="store_true")
    ap.add_argument("--skip-ml100k", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    print("command: python bench/recommend_speed.py" + (" --skip-synth" if a.skip_synth else "")
          + (" --skip-ml100k" if a.skip_ml100k else ""))
    out = {} if a.skip_ml100k else {"ml100k": ml100k(a.work)}
    if not a.skip_synth:
        out["synthetic"] = synthetic(a.work)
    with open(os.path.join(a.work, "results" + ("-synth" if a.skip_ml100k else "") + ".json"), "w") as f:
        json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()

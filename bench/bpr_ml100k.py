#!/usr/bin/env python3
"""Top-N on MovieLens 100k: fmcli `-method bpr` beside the `implicit` library (issue 13).

usage: python3 bench/bpr_ml100k.py [--data DIR] [--out DIR] [--splits ua,ub] [--epochs N] [--dim K]
                                   [--lr ETA] [--reg R] [--features plain|relations|side] [--no-implicit]
                                   [--scaling] [--speed [--baseline BPR_PY]]

Protocol (the issue's): ratings >= 4 of S.base are the positives; every item of S.base is
excluded from a user's list; the relevant items are S.test's ratings >= 4; metrics by
fmcli's own evaluation (`fmcli recommend --evaluate -exclude S.base --min-rating 4 -k 10`),
the implicit models' top-10 scored by the same code (fmcli.ranking.topk_metrics) and also by
implicit's own ranking_metrics_at_k. Two precisions: fmcli's precision@10 = hits / 10 per
user, and capped_precision@10 = Σ hits / Σ min(10, |relevant|), the precision of implicit's
ranking_metrics_at_k, the form of the anchors.md figures (the issue's goal is set against
them); for the implicit models both evaluations' figures are printed side by side.

fmcli's files are made by `fmcli convert --min-rating 4` (--user 0 --item 1; --relations: each
user's rated items and each item's raters in S.base, every rating, 1/sqrt(n), as
implicit-feedback relations). Runs go through the CLI
(`python -m fmcli`), in --out. Time per epoch: fmcli's `time_learn` column of -rlog (the
compiled epoch, no evaluation) and implicit BPR's fit time / epochs, same positives, same
factors, side by side in this run.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)


def fmcli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    r = subprocess.run([sys.executable, "-m", "fmcli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"fmcli {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r


def prepare(data, out, split, features):
    """Convert S.base + S.test, keeping the rows rated >= 4 (convert --min-rating 4; the relations
    hold every rating of S.base)."""
    base, test = os.path.join(data, f"{split}.base"), os.path.join(data, f"{split}.test")
    args = ["convert", "-q", "-in", base, "-in", test, "-out", f"{split}.pos.libfm", "-out", f"{split}.test.libfm",
            "--target", "2", "--categorical", "0,1", "--drop", "3", "--user", "0", "--item", "1",
            "--min-rating", "4", "--mapping", f"{split}.{features}.map.json"]
    rels = []
    if features in ("relations", "side"):
        args += ["--relations", split]
        rels = [f"{split}.users", f"{split}.items"]
    if features == "side":
        args += ["--join", f"{os.path.join(data, 'u.user')}:0=0:sep=|:name=user:header=no", "--drop", "user.4",
                 "--categorical", "user.2,user.3", "--buckets", "user.1:6",
                 "--join", f"{os.path.join(data, 'u.item')}:0=1:sep=|:name=item:encoding=latin-1:header=no",
                 "--drop", "item.1,item.2,item.3,item.4", "--set-columns", "genres=item.5..item.23"]
    fmcli(*args, cwd=out)
    n_pos = sum(1 for _ in open(os.path.join(out, f"{split}.pos.libfm")))
    return base, test, rels, n_pos


def run_fmcli(data, out, split, a):
    base, test, rels, n_pos = prepare(data, out, split, a.features)
    model = f"{split}.{a.features}.bpr.fm"
    args = ["train", "-task", "r", "-method", "bpr", "--mapping", f"{split}.{a.features}.map.json",
            "-train", f"{split}.pos.libfm", "-dim", f"0,1,{a.dim}", "-iter", str(a.epochs),
            "-learn_rate", str(a.lr), "-regular", a.reg, "--optimizer", a.optimizer, "-init_stdev", "0.1",
            "--sampling", a.sampling, "--negatives", str(a.negatives), "-seed", str(a.seed),
            "-rlog", f"{split}.bpr.rlog", "-save_model", model, "-q", "--no-cache"]
    if rels:
        args += ["-relation", ",".join(rels)]
    t0 = time.perf_counter()
    fmcli(*args, cwd=out)
    wall = time.perf_counter() - t0
    rlog = np.genfromtxt(os.path.join(out, f"{split}.bpr.rlog"), names=True, delimiter="\t")
    epoch = float(np.median(rlog["time_learn"]))
    fmcli("recommend", "-model", model, "--mapping", f"{split}.{a.features}.map.json", "-exclude", base,
          "--evaluate", test, "--min-rating", "4", "-k", "10", "--metrics-json", f"{split}.metrics.json", "-q",
          cwd=out)
    m = json.load(open(os.path.join(out, f"{split}.metrics.json")))
    return m, epoch, wall, n_pos


def ml(data, split):
    return (np.loadtxt(os.path.join(data, f"{split}.base"), dtype=np.int64),
            np.loadtxt(os.path.join(data, f"{split}.test"), dtype=np.int64))


def run_implicit(data, split, a):
    """implicit ALS (anchors' best grid point) and BPR (32 factors... as anchors), scored by
    fmcli.ranking and by implicit's own evaluation."""
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking
    from implicit.evaluation import ranking_metrics_at_k

    from fmcli.ranking import topk_metrics

    tr, te = ml(data, split)
    nu, ni = 943, 1682
    pos = tr[tr[:, 2] >= 4]
    X = sp.csr_matrix((np.ones(len(pos), np.float32), (pos[:, 0] - 1, pos[:, 1] - 1)), shape=(nu, ni))
    seen = sp.csr_matrix((np.ones(len(tr), np.float32), (tr[:, 0] - 1, tr[:, 1] - 1)), shape=(nu, ni))
    rel = te[te[:, 2] >= 4]
    T = sp.csr_matrix((np.ones(len(rel), np.float32), (rel[:, 0] - 1, rel[:, 1] - 1)), shape=(nu, ni))
    T = T - T.multiply(seen)
    T.eliminate_zeros()
    T.sort_indices()
    out = {}
    models = {"ALS": (AlternatingLeastSquares(factors=64, regularization=10.0, alpha=1.0, iterations=15,
                                              random_state=a.seed), None),
              "BPR": (BayesianPersonalizedRanking(factors=32, learning_rate=0.005, regularization=0.01,
                                                  iterations=a.implicit_bpr_epochs, random_state=a.seed), None)}
    for name, (model, _) in models.items():
        t0 = time.perf_counter()
        model.fit(X, show_progress=False)
        fit = time.perf_counter() - t0
        epochs = 15 if name == "ALS" else a.implicit_bpr_epochs
        ids, _ = model.recommend(np.arange(nu), seen, N=10, filter_already_liked_items=True)
        ours = topk_metrics(np.asarray(ids, np.int64), T.indptr, T.indices, 10)
        # implicit's evaluation excludes the train matrix it is given: the seen (all rated) items
        theirs = ranking_metrics_at_k(model, seen, T, K=10, show_progress=False)
        out[name] = {"fmcli": ours, "implicit": theirs, "epoch_s": fit / epochs}
    # implicit's BPR on one thread, as fmcli's kernel runs (time only)
    one = BayesianPersonalizedRanking(factors=32, learning_rate=0.005, regularization=0.01,
                                      iterations=a.implicit_bpr_epochs, random_state=a.seed, num_threads=1)
    t0 = time.perf_counter()
    one.fit(X, show_progress=False)
    out["BPR"]["epoch_s_1thread"] = (time.perf_counter() - t0) / a.implicit_bpr_epochs
    return out


def scaling(a):
    """Time per epoch of the compiled BPR epoch on the 1M synthetic set's (user, item) pairs
    (../shared/bench/synth.py, seed 0, 1M train rows: 100k one-hot users, 20k one-hot items,
    Zipf-like popularity; generated into --out if absent), its first 125k to 1M rows as
    positives (duplicate pairs merged): linear means the same ms per 1k."""
    from fmcli.learners.bpr import UNIFORM, WARP, bpr_epoch, harmonic, positive_bits, positives_csr
    from fmcli.learners.sgd import OPTIMIZERS, optimizer_state

    prefix = os.path.join(a.out, "syn")
    if not os.path.exists(prefix + ".train.libfm"):
        os.makedirs(a.out, exist_ok=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "..", "shared", "bench", "synth.py"), prefix, "1000000"],
                       check=True, capture_output=True)
    nu, ni, k = 100_000, 20_000, a.dim
    pairs = np.array([line.split(None, 3)[1:3] for line in open(prefix + ".train.libfm")])
    all_users = np.array([int(t.split(":")[0]) for t in pairs[:, 0]])
    all_items = np.array([int(t.split(":")[0]) for t in pairs[:, 1]]) - nu
    rng = np.random.default_rng(a.seed)
    one = np.ones
    uptr, uind = np.arange(nu + 1, dtype=np.int64), np.arange(nu, dtype=np.int32)
    iptr, iind = np.arange(ni + 1, dtype=np.int64), (nu + np.arange(ni)).astype(np.int32)
    mode = OPTIMIZERS[a.optimizer]
    print(f"\nscaling: the 1M synthetic set's user-item pairs as positives, dim {k}, {a.sampling}, {a.optimizer}")
    for n in (125_000, 250_000, 500_000, 1_000_000):
        key = np.unique(all_users[:n] * ni + all_items[:n])
        users, items = key // ni, key % ni
        pos = positives_csr(users, items, nu)
        bits = positive_bits(*pos, ni)
        w, V = np.zeros(nu + ni), rng.normal(0, 0.1, (nu + ni, k))
        st = optimizer_state(mode, nu + ni, k)
        times = []
        for e in range(4):
            order = rng.permutation(len(users)).astype(np.int64)
            t0 = time.perf_counter()
            bpr_epoch(order, users, items, *pos, uptr, uind, one(nu, np.float32), iptr, iind, one(ni, np.float32),
                      w, V, True, np.array([0, a.lr, a.lr]), np.array([0, 0.001, 0.001]), mode, st[1], st[2], st[4],
                      st[5], st[6], UNIFORM if a.sampling == "uniform" else WARP, 1, 100, harmonic(ni), e,
                      np.empty(0, np.int64), bits, np.empty(0))
            times.append(time.perf_counter() - t0)
        t = float(np.median(times[1:]))
        print(f"  {len(users):8d} positives (of {n} rows): {t * 1e3:8.1f} ms/epoch, "
              f"{t * 1e6 / len(users):.2f} ms per 1k positives"
              + ("" if bits.shape[0] else " (negatives by rank: the bitset would exceed its limit)"))


def speed(a):
    """Time per epoch on ua.base's positives (ratings >= 4), one-hot users and items, dim --dim,
    uniform, one negative, --optimizer/--lr/--reg: fmcli's epoch as BPRLearner.step runs it (the
    visit order's permutation + bpr_epoch_one_hot) beside implicit's BPR on one thread and on its default
    threads, interleaved in rounds in this one run (median per epoch; ratios). --baseline FILE: a
    bpr.py of another revision (`git show REV:fmcli/learners/bpr.py > FILE`), timed the same way."""
    import importlib.util

    import scipy.sparse as sp

    from fmcli.learners import bpr
    from fmcli.learners.sgd import OPTIMIZERS, optimizer_state
    from fmcli.learners.streams import permutation

    tr, _ = ml(a.data, a.splits.split(",")[0])
    pos = tr[tr[:, 2] >= 4]
    nu, ni, k = 943, 1682, a.dim
    users, items = pos[:, 0] - 1, pos[:, 1] - 1
    P = bpr.positives_csr(users, items, nu)
    uptr, uind = np.arange(nu + 1, dtype=np.int64), np.arange(nu, dtype=np.int32)
    iptr, iind = np.arange(ni + 1, dtype=np.int64), (nu + np.arange(ni)).astype(np.int32)
    mode = OPTIMIZERS[a.optimizer]
    reg = np.array([float(r) for r in a.reg.split(",")][:3])
    udat, idat = np.ones(nu, np.float32), np.ones(ni, np.float32)
    bits = bpr.positive_bits(*P, ni)
    one_hot = bpr.one_hot_sides((uptr, uind, udat), (iptr, iind, idat), nu + ni)
    assert one_hot is not None

    def general(mod, extra):
        def run(order, w, V, st, e):
            mod.bpr_epoch(order, users, items, *P, uptr, uind, udat, iptr, iind, idat, w, V, True,
                          np.array([0, a.lr, a.lr]), reg, mode, st[1], st[2], st[4], st[5], st[6], mod.UNIFORM, 1,
                          100, bpr.harmonic(ni), e, np.empty(0, np.int64), *extra)
        return run

    def fast(order, w, V, st, e):
        bpr.bpr_epoch_one_hot(order, users, items, *P, *one_hot, w, V, True, np.array([0, a.lr, a.lr]), reg, mode,
                              st[1], st[2], st[4], st[5], st[6], bpr.UNIFORM, 1, 100, bpr.harmonic(ni), e, bits,
                              np.empty(0))

    # fmcli: what BPRLearner.step runs on these sides (the one-hot fast path); general: bpr_epoch
    kernels = {"fmcli": fast, "fmcli general": general(bpr, (bits, np.empty(0)))}
    if a.baseline:
        spec = importlib.util.spec_from_file_location("bpr_baseline", a.baseline)
        base = importlib.util.module_from_spec(spec)
        sys.modules["bpr_baseline"] = base
        spec.loader.exec_module(base)
        names = base.bpr_epoch.py_func.__code__.co_varnames
        extra = ((bits,) if "bits" in names else ()) + ((np.empty(0),) if "weights" in names else ())
        kernels["baseline"] = general(base, extra)
    rng = np.random.default_rng(a.seed)
    state = {name: (np.zeros(nu + ni), np.random.default_rng(a.seed).normal(0, 0.1, (nu + ni, k)),
                    optimizer_state(mode, nu + ni, k)) for name in kernels}

    order = np.empty(len(users), np.int64)

    def fm_epoch(name, e):
        w, V, st = state[name]
        t0 = time.perf_counter()
        permutation(int(rng.integers(2**63 - 1)), order)
        kernels[name](order, w, V, st, e)
        return time.perf_counter() - t0

    X = sp.csr_matrix((np.ones(len(pos), np.float32), (users, items)), shape=(nu, ni))
    times = {name: [] for name in (*kernels, "implicit 1 thread", "implicit threads")}
    have_implicit = True
    try:
        from implicit.bpr import BayesianPersonalizedRanking
    except ImportError:
        have_implicit = False
    for name in kernels:
        fm_epoch(name, 0)     # compile / load
    per_round = 10
    for r in range(a.rounds):
        for name in kernels:
            times[name] += [fm_epoch(name, 1 + r * per_round + e) for e in range(per_round)]
        if have_implicit:
            for name, th in (("implicit 1 thread", 1), ("implicit threads", 0)):
                m = BayesianPersonalizedRanking(factors=k, learning_rate=0.005, regularization=0.01,
                                                iterations=per_round, random_state=a.seed + r, num_threads=th)
                t0 = time.perf_counter()
                m.fit(X, show_progress=False)
                times[name].append((time.perf_counter() - t0) / per_round)
    print(f"speed: {len(users)} positives of {a.splits.split(',')[0]}.base, one-hot, dim {k}, uniform, {a.optimizer} "
          f"lr {a.lr} -regular {a.reg}; {a.rounds} rounds of {per_round} epochs, interleaved; load "
          f"{os.getloadavg()[0]:.1f}")
    med = {name: float(np.median(t)) for name, t in times.items() if t}
    for name, t in med.items():
        print(f"  {name:18s} {t * 1e3:7.2f} ms/epoch")
    for name in med:
        if name != "fmcli":
            print(f"  fmcli / {name} = {med['fmcli'] / med[name]:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/work/shared/data/ml-100k")
    p.add_argument("--out", default=os.path.join(HERE, "out", "bpr"))
    p.add_argument("--splits", default="ua,ub")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--reg", default="0,0.001,0.001")
    p.add_argument("--optimizer", default="adagrad")
    p.add_argument("--sampling", default="warp")
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--features", default="relations", choices=["plain", "relations", "side"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--implicit-bpr-epochs", type=int, default=200)
    p.add_argument("--no-implicit", action="store_true")
    p.add_argument("--scaling", action="store_true", help="only: time per epoch on 125k-1M positives of the 1M synthetic set")
    p.add_argument("--speed", action="store_true", help="only: time per epoch beside implicit's BPR (see speed())")
    p.add_argument("--baseline", help="--speed: a bpr.py of another revision, timed beside")
    p.add_argument("--rounds", type=int, default=5, help="--speed: rounds of 10 epochs each")
    a = p.parse_args()
    if a.scaling:
        return scaling(a)
    if a.speed:
        return speed(a)
    os.makedirs(a.out, exist_ok=True)
    data = os.path.abspath(a.data)
    print(f"fmcli -method bpr: dim {a.dim}, {a.epochs} epochs, {a.optimizer} lr {a.lr}, -regular {a.reg}, "
          f"{a.sampling} x{a.negatives}, features {a.features}")
    have_implicit = False
    if not a.no_implicit:
        try:
            import implicit  # noqa: F401
            have_implicit = True
        except ImportError:
            print("implicit is not installed: its figures below are anchors.md's (not measured here)")
    for split in a.splits.split(","):
        m, epoch, wall, n_pos = run_fmcli(data, a.out, split, a)
        print(f"\n{split}: {n_pos} positives; fmcli bpr  P@10 {m['precision@10']:.4f}  NDCG@10 {m['ndcg@10']:.4f}  "
              f"MAP@10 {m['map@10']:.4f}  recall@10 {m['recall@10']:.4f}  AUC {m['auc']:.4f}  "
              f"capped P@10 (implicit's precision) {m['capped_precision@10']:.4f}  "
              f"({m['users']} users; {epoch * 1e3:.1f} ms/epoch, run {wall:.1f} s)")
        for form in ("precision", "capped_precision"):
            goal = m[f"{form}@10"] >= 0.27 and m["ndcg@10"] >= 0.27
            print(f"{split}: goal {form}@10 >= 0.27 and NDCG@10 >= 0.27: {'met' if goal else 'NOT met'}")
        if have_implicit:
            for name, r in run_implicit(data, split, a).items():
                o, t = r["fmcli"], r["implicit"]
                print(f"{split}: implicit {name:3s} (fmcli's evaluation) P@10 {o['precision']:.4f}  capped P@10 "
                      f"{o['capped_precision']:.4f}  NDCG@10 {o['ndcg']:.4f}  MAP@10 {o['map']:.4f}  recall@10 "
                      f"{o['recall']:.4f}  | implicit's own: "
                      f"precision {t['precision']:.4f} ndcg {t['ndcg']:.4f} auc {t['auc']:.4f}  "
                      f"({r['epoch_s'] * 1e3:.1f} ms/epoch)")
                if name == "BPR":
                    print(f"{split}: implicit BPR on one thread {r['epoch_s_1thread'] * 1e3:.1f} ms/epoch; "
                          f"fmcli / it = {epoch / r['epoch_s_1thread']:.2f}")
                    print(f"{split}: time per epoch fmcli / implicit BPR = {epoch / r['epoch_s']:.2f} "
                          f"(fmcli dim {a.dim}, {a.sampling}, features {a.features}; implicit 32 factors, one-hot; "
                          f"compare speed with --features plain --sampling uniform)")
        elif not a.no_implicit:
            print(f"{split}: anchors.md implicit ALS P@10 {0.2536 if split == 'ua' else 0.2508} NDCG@10 "
                  f"{0.2517 if split == 'ua' else 0.2457} (implicit's precision); BPR 0.19")


if __name__ == "__main__":
    main()

"""The learner class shared by ALS and MCMC: set-up, the sweep driven from Python, the train
refresh. The arithmetic lives in the kernels (fmcli.learners.sweep, .relation_sweep), the
order and lanes in fmcli.learners.schedule, the MCMC samplers in fmcli.learners.mcmc.

Order of a sweep. libFM updates all w_j, then for f = 0..k−1 all v_{j,f}. We go feature by
feature instead: w0, then for each feature j: w_j, v_{j,0} … v_{j,k−1}. Each update is still
the exact conditional minimiser / Gibbs draw given the current values of everything else (the
hyperparameters are drawn before the sweep, as in libFM), so this is an equally valid
coordinate descent / Gibbs scan, and it touches the rows of column j k+1 times in a row.

Factor blocks. For k > FACTOR_BLOCK the factors are cut into blocks [f0, f1) of FACTOR_BLOCK
(the last one may be narrower), and a sweep goes block by block: w0, then block 0 feature by
feature (w_j, v_{j,0} … v_{j,f1−1}), then each later block feature by feature over its own
factors only, each block in the same order of colour classes and features. Still every update
is exact given everything else. The cache keeps q of one block at a time: before each later
block its q is computed from the CSR rows (sweep.factor_block_sums), while e is carried over
from block to block. The train refresh recomputes ŷ exactly (all factors) and leaves q of
block 0 in the cache, ready for the next sweep (without it, the next sweep computes block 0's
q from the rows as it does the later blocks'). MCMC's normals of block b come
from the streams of their own seed, streams.part_seed(sweep seed, b) (block 0: the sweep seed
itself). With k <= FACTOR_BLOCK there is one block and the sweep is the unblocked one.

Parallel and exact. The colour classes run in parallel lanes (schedule.py), and MCMC's normal
draws come from a stream per feature (streams.stream_normals, from a seed drawn per sweep), so
the model is the same, bit for bit, whatever the number of threads.

Relations (fmcli.data.Relation). A relation's features are swept after all main features,
coordinate by coordinate (all w_j, then all v_{j,0}, ...), from per-relation-row sums of the
linked rows' caches (relation_sweep.py): O(k (train rows + relation entries)) per sweep
instead of O(k × rows × relation width). With relations the cache keeps q of all k factors
(no factor blocks).

Features without any train entry are not visited (their values never change). A duplicated
(row, feature) entry makes ŷ quadratic in v_{j,f}; a row's copies of a feature count as one
term with their summed derivative (sweep._column_in_place: libFM counts each copy as a row
of its own, which makes the step c times too long for c copies and diverges on a long row
of repeated features).

The train refresh. Every sweep keeps e and q up to date incrementally, in float32; the refresh
recomputes them from the CSR rows (float64 sums, stored as float32) to reset the rounding that
the incremental updates accumulate (the higher orders' polynomials too: anova_sweep). It runs
every REFRESH_SWEEPS sweeps: in between, the rounding grows by about 1e-7 (RMS, relative to e)
a sweep (bench/notes.md); regression's train metrics come from the cache's e as after a
refresh, and the latent targets (classification, ordinal) are drawn around ŷ = e + t, t the
targets e was taken against.

The train rows are reordered inside the learner (schedule.row_order); every prediction and
inspection value (train_raw, residuals, factor_sums, latent_targets) is in the file's order.
"""

import math

import numba
import numpy as np

from fmcli.data import index_dtype, permute_rows, row_nonzeros, transpose
from fmcli.learners.base import Learner, check_diverged, target_size
from fmcli.learners.relation_sweep import sweep_relation
from fmcli.learners.schedule import (class_order, colouring, lane_buffers, lanes,
                                     relation_schedule, row_order)
from fmcli.learners.streams import part_seed, seed_numba
from fmcli.learners.sweep import (CACHE_DTYPE, REJ_NAMES, factor_block_sums,
                                  predictions_from_residuals, residual_square_sum, set_residuals,
                                  squared_error, sweep, sweep_in_place)
from fmcli.memory import release_pages
from fmcli.metrics import difference_sums
from fmcli.model import apply_link, kernel_rows, predict_rows, relation_map, relation_terms

REFRESH_ROWS = 1 << 18       # regression refresh: rows of ŷ at a time (2 MB), e into the cache
REFRESH_SWEEPS = 8           # the train refresh after every this many sweeps
FACTOR_BLOCK = 16            # k > FACTOR_BLOCK: a sweep goes over blocks of this many factors


class _ScoresFromResiduals:
    """The train rows' regression predictions clip(e + y, lo, hi), for the train metrics: their
    error sums straight from the cache's e (float32: exact to about 1e-7, for the printed
    metrics), so no array of the train set's size is made."""

    def __init__(self, cache, lo, hi):
        self.cache, self.lo, self.hi = cache, lo, hi

    def __len__(self):
        return self.cache.shape[0]

    def difference_sums(self, y):
        return difference_sums(self.cache[:, 0], y, True, self.lo, self.hi)


PARALLEL_MIN_CLASS_WORK = 1 << 14   # a relation's mean colour class work (entries + 8 per feature)
#                                    below this: its classes in one lane, without parallel launches


def relation_lanes(rs, threads):
    """The lanes of relation schedule rs's colour classes: `threads`, or 1 when its classes hold
    less than PARALLEL_MIN_CLASS_WORK work on average (the same bits either way)."""
    n_classes = len(rs.class_ptr) - 1
    if threads <= 1 or not n_classes:
        return 1
    work = float(rs.work[rs.order].sum()) if len(rs.order) else 0.0
    return threads if work / n_classes >= PARALLEL_MIN_CLASS_WORK else 1


class _SweepScratch:
    """Per thread count: the lanes and the per-thread and per-lane buffers of a sweep."""

    def __init__(self, learner, threads):
        self.threads = threads
        self.lane_ptr = lanes(learner.order, learner.class_ptr, learner.work, threads, learner.sequential)
        lengths = None if learner.has_duplicates else np.diff(learner.cptr)
        self.lx = np.empty((threads, 0 if learner.has_duplicates else learner.longest), CACHE_DTYPE)
        # -weights: the gathered rows' weights (none without weights)
        self.lw = np.empty((threads, learner.longest if len(learner._wt) else 0))
        # the gathered rows' lengths, for the features with rows too short for a pair
        self.ln = np.empty((threads, learner.longest if learner._guard.any() else 0), np.int32)
        self.buf, self.buf_off = lane_buffers(lengths, learner.order, self.lane_ptr, threads,
                                              learner.cache.shape[1])
        # normals: each thread's row padded to its own cache lines (the threads write them for
        # every feature)
        self.normals = np.zeros((threads, (learner.k + 1 + 7) // 8 * 8 + 8))
        self.rejected = np.zeros((threads, len(REJ_NAMES)), np.int64)
        # (lane_ptr, lanes) per relation: one lane for a relation whose colour classes are small
        # (the features of its long rows make hundreds of classes, and a parallel launch per
        # class and coordinate cost more than the class's work: relation_lanes)
        self.relation_lanes = [(lanes(rs.order, rs.class_ptr, rs.work, n, rs.sequential), n)
                               for rs, n in ((rs, relation_lanes(rs, threads)) for rs in learner.relations)]


class CoordinateLearner(Learner):
    """Shared state of ALS and MCMC: CSC train data, the caches, hyperparameters.

    Subclasses set `sample` (MCMC) and implement `_init_hyper`, `_before_sweep`,
    `_latent` and `_after_eval`.
    """

    sample = False
    refresh_sweeps = REFRESH_SWEEPS     # the train refresh after every this many sweeps

    def __init__(self, model, train, evals, groups, opts, rng):
        self.opts, self.rng, self.task = opts, rng, opts.task
        self.model, self.train, self.evals = model, train, evals
        self.k = model.k
        self.use_w0, self.use_w = bool(model.use_w0), bool(model.use_w)
        self.groups = groups
        self.G = int(groups.max()) + 1 if len(groups) else 1
        n = model.n_features
        self._setup_rows(train, n)
        self.relations = [relation_schedule(rel, np.asarray(links, np.int64)[self.perm]) for rel, links in train.relations]
        self._train_rel = [(rs.relation, rs.links) for rs in self.relations]
        self._train_rel_map = relation_map(self._train_rel, train.n_rows)
        self._setup_features(n)
        self._setup_targets(train)
        # factor blocks (module docs): all k factors in one block with relations or k <= FACTOR_BLOCK
        kb = self.k if self.relations or self.k <= FACTOR_BLOCK else FACTOR_BLOCK
        self.factor_blocks = [(f0, min(f0 + kb, self.k)) for f0 in range(0, self.k, max(kb, 1))] or [(0, 0)]
        self.cached_factors = self.factor_blocks[0]     # the factor block whose q the cache holds now
        # e (column 0) and q of the block's factors (columns 1..kb) of a row side by side: one
        # gather per row
        self.cache = np.zeros((train.n_rows, kb + 1), CACHE_DTYPE)
        self._scratch = {}      # thread count -> _SweepScratch
        self._terms = {}        # id(relation) -> (offset, its relation_terms block): _relation_terms
        self.rejected = np.zeros(len(REJ_NAMES), np.int64)
        self.alpha = 1.0
        self.lam0 = float(opts.regular[0]) if len(opts.regular) else 0.0
        self.mu_w = np.zeros(self.G)
        self.lam_w = np.zeros(self.G)
        self.mu_v = np.zeros((self.G, self.k))
        self.lam_v = np.zeros((self.G, self.k))
        self._init_hyper()
        self.n_steps = 0
        self._refresh_train()
        if self.task != "r":
            set_residuals(self.cache, self._yhat, self._z)
        self.eval_raw = {name: self._predict(d) for name, d in evals.items()}

    # -- set-up -------------------------------------------------------------------------
    def _setup_rows(self, train, n):
        """Colour classes (self.order, self.class_ptr; self.sequential: the class of the long
        rows' features, -1 for none, schedule.colour_classes), the internal row order (self.perm:
        internal row -> file row) and the reordered CSR and CSC."""
        indptr, indices, data = train.csr()
        cols, colour, self.sequential = colouring(indptr, indices, data, n)
        self.perm = row_order(indptr, indices, cols, colour, n, self.sequential)
        # read in file order, each chunk's memory-mapped pages dropped once copied
        self.indptr, self.indices, self.data = permute_rows(indptr, indices, data, self.perm,
                                                            release_source=True)
        self.indptr = self.indptr.astype(index_dtype(len(self.indices)), copy=False)
        self.cptr, self.crow, self.cval = transpose(self.indptr, self.indices, self.data, n)
        self.order, self.class_ptr = class_order(cols, colour, self.cptr, self.crow)

    def _setup_features(self, n):
        """Which features the sweeps visit, the group sizes, and libFM's initialisation."""
        active = np.diff(self.cptr) > 0
        for rs in self.relations:
            active[rs.offset + rs.cols] = True
        self.cols = np.flatnonzero(active).astype(np.int64)
        self.n_g = np.bincount(self.groups[self.cols], minlength=self.G)
        # duplicated (row, feature) entries are adjacent in a CSC column
        starts = np.zeros(len(self.crow), bool)
        starts[self.cptr[:-1][np.diff(self.cptr) > 0]] = True
        self.has_duplicates = bool(np.any((self.crow[1:] == self.crow[:-1]) & ~starts[1:]))
        self.longest = int(np.diff(self.cptr).max()) if len(self.cols) else 0
        # each train row's count of non-zero values, its relation rows' included; a row of
        # fewer than two has no pairwise interaction, and the factor updates leave it out (its
        # h is exactly 0: sweep._paired, relation_sweep); _guard: the main features with such rows
        self._row_len = row_nonzeros(self.indptr, self.data)
        for rs in self.relations:
            self._row_len += row_nonzeros(rs.relation.indptr, rs.relation.data)[rs.links]
        self._guard = np.zeros(n, np.bool_)
        self._guard[self.indices[np.repeat(self._row_len < 2, np.diff(self.indptr))]] = True
        self.work = np.diff(self.cptr) + 8.0     # cost of a feature: its entries + a constant
        m = self.model
        if not self.opts.warm_start:
            # libFM: V ~ N(0, σ²) (done by the caller), then w ~ N(0, σ²). Features without
            # train entries are kept at 0 so that they contribute nothing (see module docs).
            if self.opts.init_stdev > 0 and self.use_w:
                m.w[:] = self.rng.normal(0.0, self.opts.init_stdev, n)
            m.w[~active] = 0.0
            m.V[~active] = 0.0
        if not self.use_w:
            m.w[:] = 0.0
        self._w0 = np.array([m.w0 if self.use_w0 else 0.0])

    def _setup_targets(self, train):
        # targets as read (float32 from the reader: exact in every float64 use, half the memory)
        self._y = np.asarray(train.y)[self.perm]
        self._size = target_size(self.task, self._y)
        # -weights: each row's weight in the internal order (float64), or empty: every row 1
        w = getattr(train, "weights", None)
        self._wt = np.ascontiguousarray(np.asarray(w, np.float64)[self.perm]) if w is not None else np.empty(0)
        release_pages(train.y)
        # latent targets: a float64 copy for probit (drawn or set every sweep); regression
        # reads y itself
        self._z = self._y.astype(np.float64) if self.task != "r" else self._y
        # ŷ of the train rows: kept for probit (the latent targets need it); regression keeps
        # only e = ŷ − y in the cache, ŷ passing through a small buffer (_refresh_train)
        self._yhat = np.empty(train.n_rows) if self.task != "r" else None
        self._rowbuf = np.empty(min(train.n_rows, REFRESH_ROWS)) if self._yhat is None else None

    # -- hooks ------------------------------------------------------------------------
    def _init_hyper(self):
        pass

    def _before_sweep(self):
        pass

    def _latent(self):
        """Classification, ordinal: new latent targets self._z from self._yhat, and their
        residuals in the cache (sweep.set_residuals)."""
        raise NotImplementedError

    def _after_eval(self):
        pass

    # -- the sweep ----------------------------------------------------------------------
    def sweep(self, seed=0):
        """The coordinate sweep alone (caches kept up to date incrementally, no train refresh);
        the normal draws of MCMC come from the streams of `seed` (of part_seed(seed, b) in
        factor block b): factor block by factor block, then each relation's features. With
        factor blocks, the cache holds the last block's q afterwards; if it does not hold
        block 0's on entry, that is computed first."""
        threads = numba.get_num_threads()     # (fmcli.train: one or all for small sets)
        if threads not in self._scratch:
            self._scratch[threads] = _SweepScratch(self, threads)
        s = self._scratch[threads]
        s.rejected[:] = 0
        m = self.model
        kb = self.cache.shape[1] - 1
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            for b, (f0, f1) in enumerate(self.factor_blocks):
                if (f0, f1) != self.cached_factors:
                    # the block's q from the CSR rows (e is carried over from the last block)
                    factor_block_sums(self.indptr, self.indices, self.data, m.V, f0, f1, self.cache)
                    self.cached_factors = (f0, f1)
                # a narrower last block: the same lane buffers, cut for its width
                off = s.buf_off if f1 - f0 == kb else s.buf_off // (kb + 1) * (f1 - f0 + 1)
                # block 0 updates w0 and w too; the slices are the whole arrays with one block
                (sweep_in_place if self.has_duplicates else sweep)(
                    self.cptr, self.crow, self.cval, self.order, s.lane_ptr, threads, self.groups,
                    self.cache, self._w0, m.w, m.V[:, f0:f1], self.use_w0 and b == 0,
                    self.use_w and b == 0, self.alpha, self.lam0, self.lam_w, self.mu_w,
                    self.lam_v[:, f0:f1], self.mu_v[:, f0:f1], self.sample, part_seed(seed, b),
                    s.lx, s.buf, off, s.normals, s.rejected, self._wt, s.lw, self._row_len, self._guard, s.ln)
            for rs, (rl, n_rl) in zip(self.relations, s.relation_lanes):
                # the relation rows' factor sums as they are now (rows no train row links to
                # are computed too, and ignored)
                Q = self._relation_terms([(rs.relation, None)])[:, 1:]
                sweep_relation(rs.cptr, rs.crow, rs.cval, rs.order, rl, n_rl, rs.offset,
                               rs.link_ptr, rs.link_rows, self.groups, self.cache, Q, rs.stats, m.w, m.V,
                               self.use_w, self.alpha, self.lam_w, self.mu_w, self.lam_v, self.mu_v,
                               self.sample, seed, s.rejected, self._wt, self._row_len)
                self._terms = {key: t for key, t in self._terms.items() if t[0] != rs.offset}
        finally:
            numba.set_num_threads(before)
        self.rejected += s.rejected.sum(axis=0)
        m.w0 = float(self._w0[0])

    def _refresh_train(self):
        """ŷ and q of all train rows from scratch, row by row from the CSR (resets the caches
        exactly); with factor blocks, q of block 0 (ready for the next sweep). Regression: ŷ
        goes through a buffer of REFRESH_ROWS rows and e = ŷ − y straight into the cache
        (the same bits as a whole ŷ array, 8 bytes per row less); classification: ŷ into
        self._yhat, e is set after the latent targets."""
        m = self.model
        w0 = float(self._w0[0])
        terms = self._relation_terms(self._train_rel)
        n = self.cache.shape[0]
        self._sq_error = 0.0    # regression: Σ e² as e is written (_check_diverged)
        for a in range(0, max(n, 1), REFRESH_ROWS):
            b = min(a + REFRESH_ROWS, n)
            out = self._yhat[a:b] if self._yhat is not None else self._rowbuf[:b - a]
            # q of the cache's width: all k factors, or block 0's (the rows in kernel_rows' form,
            # REFRESH_ROWS row pointers at a time)
            predict_rows(*kernel_rows(self.indptr[a:b + 1], self.indices, self.data), w0, m.w, m.V,
                         self.use_w, out, self.cache[a:b],
                         np.ascontiguousarray(self._train_rel_map[:, a:b]), terms)
            if self._yhat is None:
                self._sq_error += set_residuals(self.cache[a:b], out, self._z[a:b])
        self.cached_factors = self.factor_blocks[0]

    def _predict(self, d):
        out = np.empty(d.n_rows)
        m = self.model
        predict_rows(*kernel_rows(d.indptr, d.indices, d.data), float(self._w0[0]), m.w, m.V, self.use_w, out,
                     np.empty((0, self.k + 1), CACHE_DTYPE), relation_map(d.relations, d.n_rows),
                     self._relation_terms(d.relations))
        return out

    def _relation_terms(self, relations):
        """model.relation_terms of (Relation, links) pairs, each relation's block kept (in
        self._terms, by relation object: its features' offset and the block) until a relation
        sweep changes the features at that offset: nothing else changes them (the main sweep
        updates the main features, MCMC's draws the priors), so the train refresh, the
        evaluation and the next sweep share one computation, the same bits."""
        m = self.model
        blocks = []
        for rel, _ in relations:
            if id(rel) not in self._terms:
                self._terms[id(rel)] = (rel.offset, relation_terms([(rel, None)], m.w, m.V, self.use_w))
            blocks.append(self._terms[id(rel)][1])
        return np.concatenate(blocks) if blocks else relation_terms((), m.w, m.V, self.use_w)

    def _link(self, raw):
        m = self.model
        return apply_link(raw, m.link, m.y_min, m.y_max)

    def _check_diverged(self, it):
        """base.check_diverged on the train rows' ŷ after the step (regression: Σ e² of the
        cache's e, summed as the refresh wrote it or after the sweep)."""
        m = self.model
        sq_error = squared_error(self._yhat, self._y) if self._yhat is not None else self._sq_error
        finite = math.isfinite(self._w0[0]) and np.isfinite(m.w).all() and np.isfinite(m.V).all()
        rejected = self.rejected_draws()
        check_diverged(self.opts.method.upper(), it, sq_error, self.cache.shape[0], self._size, finite,
                       "a larger -regular or a smaller -init_stdev"
                       + (f" (rejected draws so far: {rejected})" if rejected else "")
                       + ("; the train rows repeat features within a row, which makes ŷ quadratic "
                          "in their factors: merge the repeats" if self.has_duplicates else ""))

    # -- Learner interface ------------------------------------------------------------
    def step(self, it):
        seed_numba(int(self.rng.integers(0, 2**31 - 1)))
        self._before_sweep()
        self.sweep(int(self.rng.integers(0, 2**63 - 1)))
        if (self.n_steps + 1) % self.refresh_sweeps == 0:
            self._refresh_train()
        elif self._yhat is None:
            self._sq_error = residual_square_sum(self.cache)
        else:
            predictions_from_residuals(self.cache, self._z, self._yhat)
        self._check_diverged(it)
        if self.task != "r":
            self._latent()
        self.eval_raw = {name: self._predict(d) for name, d in self.evals.items()}
        self.n_steps += 1
        self._after_eval()

    def train_scores(self):
        # internal row order (no reordered copy); regression: the error sums straight from e
        if self.task == "r":
            return _ScoresFromResiduals(self.cache, self.model.y_min, self.model.y_max), self._y
        return self._link(self._yhat), self._y

    def rejected_draws(self):
        """Non-finite draws or updates rejected so far, by parameter kind (libFM's #nans)."""
        return {name: int(c) for name, c in zip(REJ_NAMES, self.rejected) if c}

    def log_values(self):
        out = {"alpha": float(self.alpha)}
        for g in range(self.G):
            out[f"wmu[{g}]"] = float(self.mu_w[g])
            out[f"wlambda[{g}]"] = float(self.lam_w[g])
            for f in range(self.k):
                out[f"vmu[{g},{f}]"] = float(self.mu_v[g, f])
                out[f"vlambda[{g},{f}]"] = float(self.lam_v[g, f])
        return out

    # -- inspection (tests): the train rows in the file's order --------------------------
    def _file_order(self, a):
        out = np.empty_like(a)
        out[self.perm] = a
        return out

    def train_raw(self):
        """ŷ of the train rows for the current parameters (regression: computed afresh)."""
        if self._yhat is not None:
            return self._file_order(self._yhat)
        m = self.model
        raw = np.empty(self.cache.shape[0])
        predict_rows(*kernel_rows(self.indptr, self.indices, self.data), float(self._w0[0]), m.w, m.V, self.use_w,
                     raw, np.empty((0, self.k + 1), CACHE_DTYPE), self._train_rel_map,
                     relation_terms(self._train_rel, m.w, m.V, self.use_w))
        return self._file_order(raw)

    def latent_targets(self):
        """The targets the caches' e refers to: y (regression) or the latent z (probit)."""
        return self._file_order(np.asarray(self._z, np.float64))

    def residuals(self):
        """The cache's e = ŷ − t."""
        return self._file_order(self.cache[:, 0])

    def factor_sums(self):
        """The factor sums the cache holds: q[i, f] = Σ_j v_{j,f0+f} x_ij for the factors
        [f0, f1) = self.cached_factors: all k factors without factor blocks; with them block 0's after a
        step (the train refresh), the last block's after a bare sweep()."""
        f0, f1 = self.cached_factors
        return self._file_order(self.cache[:, 1:1 + f1 - f0])

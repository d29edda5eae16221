"""`fmcli recommend`: top-N items per user with a saved model, "more like this", evaluation.

A converted (user, item) row holds the user side's features (the user's one-hot, the side
features joined on the user key, the user's implicit-feedback relation row) and the item
side's; every feature is on exactly one side. So a pair's raw score splits:

    y(u, i) = w0 + a_u + b_i + <q_u, q_i>,   q_u = Σ_{j ∈ u's side} x_j v_j,
    a_u = Σ_{j ∈ u's side} w_j x_j + ½ (|q_u|² − Σ_j |v_j x_j|²)   (the pairs within the side)

where a_u and q_u are the prediction arithmetic of fmcli.model (predict_rows, row_sums) on
the side's features alone: the terms are computed once per user and once per item, and
scoring every pair is a product of two (rows × k) factor blocks, done in compiled code,
blocked over items, parallel over users, keeping a bounded heap per user (a partial sort).

The score is the value `fmcli predict` writes for the pair's converted row: the link applied
(regression: clipped to the training target range; classification: the probability) and,
for a model with stored MCMC samples, the mean over the samples of each sample's
link-applied score (then clipped again), in sample order, exactly as FMModel.predict. Items
are ranked by that value, so ties (several items clipped to the top rating) are broken by
item order: the order of the candidate list (all items: the mapping's order).

Sides come from the convert mapping (version 2's "entities", or a version-1 mapping with
the user and item columns named, each side its column's one-hot). Ids in and out are raw.
"""

import json
import math
from dataclasses import dataclass

import numpy as np

from numba import prange

from fmcli.config import njit
from fmcli.convert.mapping import read_mapping_json
from fmcli.errors import InputError, TrainingError, UsageError
from fmcli.model import row_sums
from fmcli.ordinal import phi_cdf

LINK_CODES = {"identity": 0, "logistic": 1, "probit": 2}
ORDINAL = 3   # -task o: a sum of the class thresholds' probabilities (Scorer.of_model)
USERS_PER_TASK = 32          # users of one parallel task of the top-N kernel
CHUNK_BYTES = 64 << 20       # user terms held at once: users are processed in chunks


# ---- sides -----------------------------------------------------------------------------------

@dataclass
class Side:
    """The users (or items) a mapping knows and each one's features: CSR rows of model feature
    ids and values, in the order of `ids` (raw ids)."""

    column: str
    ids: list
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    def __post_init__(self):
        self.index = {v: r for r, v in enumerate(self.ids)}

    @property
    def n_rows(self):
        return len(self.ids)

    def rows(self, which):
        """The CSR (indptr, indices, data) of the rows `which` (int64 indices into ids)."""
        return rows_of(self.indptr, which, self.indices, self.data)


@dataclass
class Mapping:
    """What recommend needs from a convert mapping: the two sides and how delimited files of
    raw ids are laid out (separator, header, column names in order, the target's name)."""

    user: Side
    item: Side
    separator: str
    header: bool
    columns: list           # names in file order
    target: str


def load_sides(path, model, user_column=None, item_column=None):
    """The Mapping of the convert mapping file `path` for `model`: version 2 with "entities",
    or version 1 with user_column and item_column (each side its column's one-hot). The
    mapping must fit the model: its feature count, and the relations the model was trained
    with given by the entities."""
    m = read_mapping_json(path)

    def bad(why):
        return InputError(path, None, f"not a usable fmcli convert mapping: {why}")

    version = m.get("version")
    if version == 1:
        from fmcli.convert.mapping import load_mapping

        load_mapping(path)   # convert's own check of a version-1 mapping
    elif version != 2:       # version 2: the fields recommend uses are checked below
        raise bad(f"version {version!r} (recommend reads versions 1 and 2)")
    n_features = m.get("n_features")
    if not _is_int(n_features) or n_features < 0:
        raise bad("bad n_features")
    cols = m.get("columns")
    if not isinstance(cols, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in cols):
        raise bad("bad columns")
    sep, header = m.get("separator"), m.get("header")
    if not (isinstance(sep, str) and len(sep) == 1) or not isinstance(header, bool):
        raise bad("bad separator or header")
    by_name = {c["name"]: c for c in cols}
    targets = [c["name"] for c in cols if c.get("role") == "target"]
    entities = m.get("entities")
    if entities is None:
        if user_column is None or item_column is None:
            raise UsageError(f"{path} has no entities (a version-1 mapping, or converted without --user/--item): "
                             "say which columns are the user and the item with --user COL --item COL")
        sides = []
        for option, name in (("--user", user_column), ("--item", item_column)):
            c = by_name.get(name)
            if c is None:
                raise UsageError(f"{option} {name!r}: no such column in {path} "
                                 f"(columns: {', '.join(by_name)})")
            if c.get("role") != "categorical":
                raise UsageError(f"{option} {name!r}: the column is {c.get('role')}, not categorical: "
                                 "the user and the item must be one-hot (categorical) columns")
            ids = c.get("ids")
            if not isinstance(ids, dict) or not all(_is_int(v) and 0 <= v < n_features for v in ids.values()):
                raise bad(f"column {name!r}: bad value -> id table")
            sides.append(_one_hot_side(name, ids))
        if user_column == item_column:
            raise UsageError(f"--user and --item name the same column {user_column!r}")
        others = [c["name"] for c in cols if c.get("role") in ("categorical", "numeric")
                  and c["name"] not in (user_column, item_column)]
        if others:
            raise UsageError(f"{path}: column(s) {', '.join(others)} belong to neither the user nor the item; "
                             "recommend would need a fixed value for them (not supported)")
        user, item = sides
        relations = {}
    else:
        if not isinstance(entities, dict):
            raise bad("bad entities")
        context = m.get("context_columns", [])
        if not isinstance(context, list):
            raise bad("bad context_columns")
        if context:
            raise UsageError(f"{path}: column(s) {', '.join(map(str, context))} belong to neither the user nor "
                             "the item; recommend would need a fixed value for them (not supported)")
        relations = {}
        sides = []
        for key, option, given in (("user", "--user", user_column), ("item", "--item", item_column)):
            e = entities.get(key)
            if not isinstance(e, dict) or not isinstance(e.get("column"), str):
                raise bad(f"entities.{key}: no column")
            if given is not None and given != e["column"]:
                raise UsageError(f"{option} {given!r}: the mapping's {key} column is {e['column']!r}")
            if e["column"] not in by_name:
                raise bad(f"entities.{key}: column {e['column']!r} is not among the columns")
            if by_name[e["column"]].get("role") != "categorical":
                raise UsageError(f"{path}: the {key} column {e['column']!r} is "
                                 f"{by_name[e['column']].get('role')}, not categorical")
            sides.append(_entity_side(e, n_features, bad, f"entities.{key}"))
            if e.get("relation") is not None:
                r = e["relation"]
                if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not isinstance(r.get("rows"), dict):
                    raise bad(f"entities.{key}.relation: needs a name and rows")
                relations[r["name"]] = (sides[-1], r["rows"], f"entities.{key}.relation")
        user, item = sides
        if user.column == item.column:
            raise bad(f"the user and the item are the same column {user.column!r}")
    _fit_model(path, model, n_features, relations, bad)
    target = targets[0] if targets else None
    return Mapping(user, item, sep, header, [c["name"] for c in cols], target)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _one_hot_side(column, ids):
    """Each value's row: its one feature, value 1 (as convert writes it)."""
    n = len(ids)
    return Side(column, list(ids), np.arange(n + 1, dtype=np.int64),
                np.fromiter(ids.values(), np.int32, n), np.ones(n, np.float32))


def _entity_side(e, n_features, bad, where):
    feats = e.get("features")
    if not isinstance(feats, dict):
        raise bad(f"{where}: no features")
    indptr, indices, data = [0], [], []
    for raw_id, pairs in feats.items():
        if not isinstance(pairs, list):
            raise bad(f"{where}: features of {raw_id!r} are not a list")
        for p in pairs:
            if not (isinstance(p, list) and len(p) == 2 and _is_int(p[0]) and 0 <= p[0] < n_features
                    and isinstance(p[1], (int, float)) and not isinstance(p[1], bool) and math.isfinite(p[1])):
                raise bad(f"{where}: {raw_id!r} has a bad (feature id, value) pair {p!r}")
            indices.append(p[0])
            data.append(p[1])
        indptr.append(len(indices))
    return Side(e["column"], list(feats), np.array(indptr, np.int64), np.array(indices, np.int32),
                np.array(data, np.float64).astype(np.float32))   # the reader's float32 values


def _fit_model(path, model, n_features, relations, bad):
    """The model and the mapping must describe the same features; the entities' relation rows
    join their side at the model's offset for the relation."""
    recorded = model.meta.get("relations") or []
    n_main = int(recorded[0]["offset"]) if recorded else model.n_features
    if n_main > n_features:
        raise UsageError(f"{path} has {n_features} features but the model has {n_main}: not the mapping "
                         "of the data this model was trained on")
    if recorded and n_main != n_features:
        raise UsageError(f"{path} has {n_features} features but the model's relations start at feature "
                         f"{n_main}: not the mapping of the data this model was trained on")
    names = [r["name"] for r in recorded]
    missing = [nm for nm in names if nm not in relations]
    if missing:
        raise UsageError(f"the model was trained with relation(s) {', '.join(missing)} that the mapping's "
                         f"entities do not give ({path})")
    extra = [nm for nm in relations if nm not in names]
    if extra:
        raise UsageError(f"{path}: the entities give relation(s) {', '.join(extra)} that the model was not "
                         "trained with")
    from fmcli.io.relation import read_design

    for rec in recorded:
        side, rows, where = relations[rec["name"]]
        rel = read_design(rec["name"])
        if rel.n_features > int(rec["n_features"]):
            raise UsageError(f"relation {rec['name']}: {rel.n_features} features, the model has "
                             f"{rec['n_features']} for it")
        link = np.full(side.n_rows, -1, np.int64)
        for raw_id, r in rows.items():
            if raw_id not in side.index:
                raise bad(f"{where}: {raw_id!r} is not among the side's ids")
            if not _is_int(r) or not 0 <= r < rel.n_rows:
                raise bad(f"{where}: row {r!r} of {raw_id!r} is not a row of {rec['name']} ({rel.n_rows} rows)")
            link[side.index[raw_id]] = r
        _join_relation(side, rel, link, int(rec["offset"]))


def _join_relation(side, rel, link, offset):
    """Append relation row link[r] (shifted by offset) to each side row r (-1: none)."""
    starts = np.where(link >= 0, rel.indptr[np.maximum(link, 0)], 0)
    counts = np.where(link >= 0, rel.indptr[np.maximum(link, 0) + 1] - starts, 0)
    own = np.diff(side.indptr)
    indptr = np.concatenate([[0], np.cumsum(own + counts)]).astype(np.int64)
    indices = np.empty(indptr[-1], np.int32)
    data = np.empty(indptr[-1], np.float32)
    for r in range(side.n_rows):   # Python: the sides are built once
        a = indptr[r]
        indices[a:a + own[r]] = side.indices[side.indptr[r]:side.indptr[r + 1]]
        data[a:a + own[r]] = side.data[side.indptr[r]:side.indptr[r + 1]]
        indices[a + own[r]:indptr[r + 1]] = rel.indices[starts[r]:starts[r] + counts[r]] + offset
        data[a + own[r]:indptr[r + 1]] = rel.data[starts[r]:starts[r] + counts[r]]
    side.indptr, side.indices, side.data = indptr, indices, data


# ---- the terms of each side ------------------------------------------------------------------

def parameter_sets(model):
    """(w0s (S,), ws (S, n), Vs (S, n, k)): the parameter sets a prediction averages, the
    stored samples or the model itself (as views, no copy)."""
    if model.samples is not None:
        return model.samples
    return np.array([model.w0]), model.w[None, :], model.V[None, :, :]


def side_terms(model, indptr, indices, data, params):
    """(rows, S, k + 1) float64: per parameter set s, column 0 the row's own part a (linear
    terms and the pairs within the row), columns 1..k its factor sums q, from the model's one
    row arithmetic (fmcli.model.row_sums) on the side's features alone."""
    _, ws, Vs = params
    out = np.empty((len(indptr) - 1, ws.shape[0], Vs.shape[2] + 1))
    _side_terms(indptr, indices, data, ws, Vs, model.use_w, out)
    if not np.isfinite(out).all():
        raise TrainingError("the model gives NaN or inf scores")
    return out


@njit(parallel=True)
def _side_terms(indptr, indices, data, ws, Vs, use_w, out):
    """out[i, t] = (a, q_1..q_k) of row i under parameter set t: a = Σ w_j x_j + ½(|q|² − Σ|v_j x_j|²),
    the row's prediction without the bias (predict_rows' formula)."""
    n_rows, n_sets, k = indptr.shape[0] - 1, ws.shape[0], Vs.shape[2]
    for b in prange((n_rows + 1023) // 1024):
        q = np.empty(k)
        for i in range(b * 1024, min(n_rows, (b + 1) * 1024)):
            for t in range(n_sets):
                q[:] = 0.0
                acc, sq = row_sums(indices, data, indptr[i], indptr[i + 1], 0.0, ws[t], Vs[t], use_w, q)
                pair = 0.0
                for f in range(k):
                    pair += q[f] * q[f]
                    out[i, t, 1 + f] = q[f]
                out[i, t, 0] = acc + 0.5 * (pair - sq)


def biases(model, params):
    """w0 of each parameter set (0 without a bias)."""
    return np.array([float(w0) if model.use_w0 else 0.0 for w0 in params[0]])


ITEMS_PER_BLOCK = 256   # items scored at once against the users of a task (vector length)


class Scorer:
    """Everything that scores (user, item) pairs but the user terms: the item terms (held
    transposed, (S, k + 1, n_items), so the kernels run along items), the biases and the link
    of the model's predictions. A -task o model's score under parameter set s is
    offset + Σ_m coef[m] Φ(ŷ − cuts[s, m]), Φ(ŷ − γ_m) being P(class > c_m): the expected
    class c_1 + Σ_m (c_{m+1} − c_m) P(class > c_m), or P(class ≥ c_{m+1}) for one m."""

    def __init__(self, item_terms, bias, link, y_min, y_max, cuts=None, coef=None, offset=0.0):
        self.n_items = item_terms.shape[0]
        self.items_t = np.ascontiguousarray(item_terms.transpose(1, 2, 0))
        self.bias, self.link, self.y_min, self.y_max = np.asarray(bias, np.float64), link, y_min, y_max
        n_sets = self.items_t.shape[0]
        self.cuts = np.zeros((n_sets, 0)) if cuts is None else np.ascontiguousarray(cuts, np.float64)
        self.coef = np.zeros(0) if coef is None else np.asarray(coef, np.float64)
        self.offset = float(offset)

    @classmethod
    def of_model(cls, model, item_rows, at_least=None):
        """The model's scores (`fmcli predict`'s values); -task o: the expected class, or with
        at_least (one of the classes above the lowest) P(class >= at_least)."""
        params = parameter_sets(model)
        terms, bias = side_terms(model, *item_rows, params), biases(model, params)
        if model.task != "o":
            return cls(terms, bias, LINK_CODES[model.link], float(model.y_min), float(model.y_max))
        o = model.meta["ordinal"]
        classes = np.asarray(o["classes"], np.float64)
        cuts = o["sample_cutpoints"] if model.samples is not None else [o["cutpoints"]]
        if at_least is None:
            coef, offset = np.diff(classes), classes[0]
        else:
            coef, offset = (classes[1:] == at_least).astype(np.float64), 0.0
        return cls(terms, bias, ORDINAL, -np.inf, np.inf, cuts, coef, offset)

    def _ordinal(self):
        return self.cuts, self.coef, self.offset

    def users_per_chunk(self):
        return max(USERS_PER_TASK, CHUNK_BYTES // (8 * self.items_t.shape[0] * self.items_t.shape[1]))

    def top_n(self, user_terms, excl_indptr, excl_items, n):
        """(items (rows, n) int64, -1 padded; scores (rows, n)) of the n best items per user
        row, best first, ties by item index; excluded items (CSR, sorted per row) never."""
        n_users = user_terms.shape[0]
        items = np.full((n_users, n), -1, np.int64)
        scores = np.full((n_users, n), -np.inf)
        _top_n(np.ascontiguousarray(user_terms), self.items_t, self.bias, self.link, self.y_min, self.y_max,
               *self._ordinal(), np.asarray(excl_indptr, np.int64), np.asarray(excl_items, np.int64), items, scores)
        return items, scores

    def score_all(self, user_terms):
        """(rows, n_items) scores of every pair (evaluation's AUC, tests)."""
        out = np.empty((user_terms.shape[0], self.n_items))
        _score_all(np.ascontiguousarray(user_terms), self.items_t, self.bias, self.link, self.y_min,
                   self.y_max, *self._ordinal(), out)
        return out


@njit(inline="always")
def _block_scores(A, Bt, bias, link, y_min, y_max, cuts, coef, offset, u0, u1, i0, i1, raw, total):
    """total[r, c] = the prediction of pair (u0 + r, i0 + c): per parameter set s the raw score
    bias_s + a_u + b_i + <q_u, q_i>, the link applied (ORDINAL: Scorer's sum over cuts[s]), the
    mean over the sets and, for regression, clipped again (FMModel.predict's order; one set:
    the link applied once).
    The loops run along items (contiguous in Bt) so that they vectorise."""
    n_sets, width = A.shape[1], A.shape[2]
    m = i1 - i0
    total[:u1 - u0, :m] = 0.0
    for s in range(n_sets):
        for r in range(u1 - u0):
            a0 = bias[s] + A[u0 + r, s, 0]
            b = Bt[s, 0, i0:i1]   # 1-D views: plain unit-stride loops that vectorise
            for c in range(m):
                raw[c] = a0 + b[c]
            for f in range(1, width):
                af = A[u0 + r, s, f]
                b = Bt[s, f, i0:i1]
                for c in range(m):
                    raw[c] += af * b[c]
            tr = total[r]
            if link == 0:
                for c in range(m):
                    tr[c] += min(max(raw[c], y_min), y_max)
            elif link == 1:
                for c in range(m):
                    tr[c] += 1.0 / (1.0 + np.exp(-raw[c]))
            elif link == 2:
                for c in range(m):
                    tr[c] += phi_cdf(raw[c])
            else:
                for c in range(m):
                    v = offset
                    for t in range(coef.shape[0]):
                        v += coef[t] * phi_cdf(raw[c] - cuts[s, t])
                    tr[c] += v
    for r in range(u1 - u0):
        tr = total[r]
        for c in range(m):
            v = tr[c] / n_sets
            tr[c] = min(max(v, y_min), y_max) if link == 0 else v


@njit(inline="always")
def _worse(sa, ia, sb, ib):
    """Is (score sa, item ia) ranked below (sb, ib)? Higher scores first, then lower items."""
    return sa < sb or (sa == sb and ia > ib)


@njit(inline="always")
def _sift_down(items, scores, u, size, p):
    while True:
        c = 2 * p + 1
        if c >= size:
            return
        if c + 1 < size and _worse(scores[u, c + 1], items[u, c + 1], scores[u, c], items[u, c]):
            c += 1
        if not _worse(scores[u, c], items[u, c], scores[u, p], items[u, p]):
            return
        items[u, p], items[u, c] = items[u, c], items[u, p]
        scores[u, p], scores[u, c] = scores[u, c], scores[u, p]
        p = c


@njit(parallel=True)
def _top_n(A, Bt, bias, link, y_min, y_max, cuts, coef, offset, excl_indptr, excl_items, items, scores):
    """Per user row u, the n = items.shape[1] best items into items[u], scores[u] (sorted,
    best first). Users in tasks of USERS_PER_TASK, items in blocks of ITEMS_PER_BLOCK scored
    against every user of the task (a blocked matrix product); a min-heap of the n best so far
    per user, its root the worst. A user's result depends only on its own scores, so not on
    the number of threads."""
    n_users, n_items, n = A.shape[0], Bt.shape[2], items.shape[1]
    for t in prange((n_users + USERS_PER_TASK - 1) // USERS_PER_TASK):
        u0 = t * USERS_PER_TASK
        u1 = min(n_users, u0 + USERS_PER_TASK)
        next_excl = excl_indptr[u0:u1].copy()
        size = np.zeros(u1 - u0, np.int64)
        raw = np.empty(ITEMS_PER_BLOCK)
        total = np.empty((USERS_PER_TASK, ITEMS_PER_BLOCK))
        for i0 in range(0, n_items, ITEMS_PER_BLOCK):
            i1 = min(n_items, i0 + ITEMS_PER_BLOCK)
            _block_scores(A, Bt, bias, link, y_min, y_max, cuts, coef, offset, u0, u1, i0, i1, raw, total)
            for u in range(u0, u1):
                p, end, m = next_excl[u - u0], excl_indptr[u + 1], size[u - u0]
                for i in range(i0, i1):
                    while p < end and excl_items[p] < i:
                        p += 1
                    if p < end and excl_items[p] == i:
                        continue
                    sc = total[u - u0, i - i0]
                    if m < n:   # heap not full: sift the new entry up
                        c = m
                        items[u, c], scores[u, c] = i, sc
                        m += 1
                        while c > 0:
                            parent = (c - 1) // 2
                            if not _worse(scores[u, c], items[u, c], scores[u, parent], items[u, parent]):
                                break
                            items[u, c], items[u, parent] = items[u, parent], items[u, c]
                            scores[u, c], scores[u, parent] = scores[u, parent], scores[u, c]
                            c = parent
                    elif _worse(scores[u, 0], items[u, 0], sc, i):
                        items[u, 0], scores[u, 0] = i, sc
                        _sift_down(items, scores, u, m, 0)
                next_excl[u - u0], size[u - u0] = p, m
        for u in range(u0, u1):   # heap sort: move the worst to the end, one by one
            m = size[u - u0]
            while m > 1:
                m -= 1
                items[u, 0], items[u, m] = items[u, m], items[u, 0]
                scores[u, 0], scores[u, m] = scores[u, m], scores[u, 0]
                _sift_down(items, scores, u, m, 0)


@njit(parallel=True)
def _score_all(A, Bt, bias, link, y_min, y_max, cuts, coef, offset, out):
    n_users, n_items = A.shape[0], Bt.shape[2]
    for t in prange((n_users + USERS_PER_TASK - 1) // USERS_PER_TASK):
        u0 = t * USERS_PER_TASK
        u1 = min(n_users, u0 + USERS_PER_TASK)
        raw = np.empty(ITEMS_PER_BLOCK)
        total = np.empty((USERS_PER_TASK, ITEMS_PER_BLOCK))
        for i0 in range(0, n_items, ITEMS_PER_BLOCK):
            i1 = min(n_items, i0 + ITEMS_PER_BLOCK)
            _block_scores(A, Bt, bias, link, y_min, y_max, cuts, coef, offset, u0, u1, i0, i1, raw, total)
            out[u0:u1, i0:i1] = total[:u1 - u0, :i1 - i0]


# ---- delimited files of raw ids ----------------------------------------------------------------

def read_id_rows(path, mapping, wanted):
    """The columns `wanted` (names) of a delimited file laid out as convert's inputs: the
    mapping's separator; with the mapping's header, the columns by name; without, either all
    the mapping's columns in order or exactly the wanted ones. Returns (one list of stripped
    fields per wanted column, the rows' line numbers, name for messages). ASCII text without
    quotes is split by a compiled scan; anything else by convert's reader."""
    from fmcli.io.sources import read_input

    data, name = read_input(path)
    if data.isascii() and b'"' not in data and b"\x00" not in data:
        buf = np.frombuffer(data, np.uint8)
        numbers, starts, ends, counts = _scan_lines(buf, ord(mapping.separator))
        first = [bytes(buf[starts[0]:ends[0]]).decode("ascii")] if len(numbers) else []
        rows = [first[0].split() if mapping.separator == " " else first[0].split(mapping.separator)] if first else []
    else:
        from fmcli.convert.table import Table, text_lines

        table = Table(name, text_lines(data, name, None), mapping.separator)
        rows, numbers, buf = table.rows, np.asarray(table.line_numbers, np.int64), None
        counts = np.array([len(r) for r in rows], np.int64)
    if mapping.header:
        if not len(numbers):
            raise InputError(name, None, "no header line (the mapping's files have one)")
        names = [f.strip() for f in rows[0]]
        for w in wanted:
            if w not in names:
                raise InputError(name, int(numbers[0]), f"no column {w!r} in the header")
        positions = [names.index(w) for w in wanted]
        skip, width = 1, len(names)
    else:
        width = int(counts[0]) if len(counts) else len(wanted)
        if width == len(mapping.columns):
            positions = [mapping.columns.index(w) for w in wanted]
        elif width == len(wanted):
            positions = list(range(len(wanted)))
        else:
            raise InputError(name, int(numbers[0]), f"{width} fields: expected {len(wanted)} "
                             f"({', '.join(wanted)}) or all {len(mapping.columns)} columns of the mapping")
        skip = 0
    ragged = np.flatnonzero(counts[skip:] != width)
    if len(ragged):
        r = skip + int(ragged[0])
        raise InputError(name, int(numbers[r]), f"{int(counts[r])} fields, expected {width}")
    numbers = numbers[skip:]
    if buf is None:
        return [[row[p].strip() for row in rows[skip:]] for p in positions], numbers, name
    spans = _field_spans(buf, starts[skip:], ends[skip:], ord(mapping.separator), np.array(positions, np.int64))
    return [_strings(buf, spans[0][:, c], spans[1][:, c]) for c in range(len(positions))], numbers, name


def _strings(buf, starts, ends):
    """The ASCII strings buf[starts[r]:ends[r]], converted once per distinct value."""
    width = max(1, int((ends - starts).max()) if len(starts) else 1)
    chars = np.zeros((len(starts), width), np.uint8)
    _gather_chars(buf, starts, ends, chars)
    uniq, inverse = np.unique(chars.view(f"S{width}").ravel(), return_inverse=True)
    return np.array([u.decode("ascii") for u in uniq.tolist()], dtype=object)[inverse].tolist()


@njit(inline="always")
def _blank(c):
    """ASCII whitespace as Python's str.split() and str.strip() see it."""
    return c == 32 or 9 <= c <= 13 or 28 <= c <= 31


@njit
def _scan_lines(buf, sep):
    """The data lines of buf (not blank, not starting with '#', as convert skips them): their
    1-based numbers, [start, end) without a final CR, and field counts (sep 32: runs of
    blanks separate fields, as str.split())."""
    n_max = 1
    for c in buf:
        n_max += c == 10
    numbers = np.empty(n_max, np.int64)
    starts = np.empty(n_max, np.int64)
    ends = np.empty(n_max, np.int64)
    counts = np.empty(n_max, np.int64)
    n, line, a = 0, 1, 0
    size = buf.shape[0]
    while a <= size:
        b = a
        while b < size and buf[b] != 10:
            b += 1
        e = b - 1 if b > a and buf[b - 1] == 13 else b
        f = a
        while f < e and _blank(buf[f]):
            f += 1
        if f < e and buf[f] != 35:   # 35: '#'
            fields = 0
            if sep == 32:
                inside = False
                for p in range(a, e):
                    if _blank(buf[p]):
                        inside = False
                    elif not inside:
                        inside = True
                        fields += 1
            else:
                fields = 1
                for p in range(a, e):
                    fields += buf[p] == sep
            numbers[n], starts[n], ends[n], counts[n] = line, a, e, fields
            n += 1
        line += 1
        a = b + 1
    return numbers[:n], starts[:n], ends[:n], counts[:n]


@njit
def _field_spans(buf, starts, ends, sep, positions):
    """[start, end) of field positions[c] of each line, stripped of blanks."""
    n, m = starts.shape[0], positions.shape[0]
    fs = np.zeros((n, m), np.int64)
    fe = np.zeros((n, m), np.int64)
    for r in range(n):
        field, p, e = 0, starts[r], ends[r]
        while p <= e:
            if sep == 32:
                while p < e and _blank(buf[p]):
                    p += 1
                if p >= e:
                    break
                q = p
                while q < e and not _blank(buf[q]):
                    q += 1
                a, b = p, q
            else:
                q = p
                while q < e and buf[q] != sep:
                    q += 1
                a, b = p, q
                while a < b and _blank(buf[a]):
                    a += 1
                while b > a and _blank(buf[b - 1]):
                    b -= 1
            for c in range(m):
                if positions[c] == field:
                    fs[r, c], fe[r, c] = a, b
            field += 1
            p = q + 1
    return fs, fe


@njit
def _gather_chars(buf, starts, ends, chars):
    for r in range(starts.shape[0]):
        for p in range(starts[r], ends[r]):
            chars[r, p - starts[r]] = buf[p]


def interactions(path, mapping, candidates, min_rating=None):
    """(CSR indptr, items) over mapping.user's rows of the candidate positions each user has in
    the file (ratings >= min_rating only, when given), and counts of rows skipped for an
    unknown user or item."""
    wanted = [mapping.user.column, mapping.item.column]
    if min_rating is not None:
        if mapping.target is None:
            raise UsageError("--min-rating: the mapping has no target (rating) column")
        wanted.append(mapping.target)
    cols, numbers, name = read_id_rows(path, mapping, wanted)
    users = np.array([mapping.user.index.get(v, -1) for v in cols[0]], np.int64)
    items = np.array([candidates.get(v, -1) for v in cols[1]], np.int64)
    keep = np.ones(len(users), np.bool_)
    if min_rating is not None:
        for r, text in enumerate(cols[2]):
            try:
                rating = float(text)
            except ValueError:
                raise InputError(name, numbers[r], f"column {mapping.target}: bad rating {text[:40]!r}") from None
            keep[r] = rating >= min_rating
    unknown = {"user": int((keep & (users < 0)).sum()), "item": int((keep & (users >= 0) & (items < 0)).sum())}
    keep &= (users >= 0) & (items >= 0)
    return _csr(users[keep], items[keep], mapping.user.n_rows), unknown, name


def _csr(rows, cols, n_rows):
    """CSR of (row, col) pairs, each row's cols sorted and unique."""
    width = int(cols.max()) + 1 if len(cols) else 1
    key = np.unique(rows * width + cols)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(key // width, minlength=n_rows))]).astype(np.int64)
    return indptr, key % width


def rows_of(indptr, which, *arrays):
    """(indptr, *arrays) of the CSR rows `which` (int64 row indices) of (indptr, *arrays)."""
    starts = indptr[which]
    counts = indptr[which + 1] - starts
    out_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    take = np.repeat(starts - out_ptr[:-1], counts) + np.arange(out_ptr[-1])
    return (out_ptr, *(a[take] for a in arrays))


# ---- the command -------------------------------------------------------------------------------

@dataclass
class RecommendJob:
    model: str
    mapping: str
    n: int = 10
    users: str = None            # file of user ids, "-" stdin; None: every user
    items: str = None            # candidate file; None: every item
    exclude: str = None          # interactions whose items are not recommended again
    out: str = "-"
    user_column: str = None      # version-1 mappings
    item_column: str = None
    evaluate: str = None         # held-out interactions: print metrics instead
    min_rating: float = None
    k: int = 10
    metrics_json: str = None
    similar: str = None          # an item id: items like it
    at_least: float = None       # -task o models: rank by P(class >= at_least)


def run_recommend(job, console=None):
    """Write recommendations (or similar items, or metrics); returns a summary dict."""
    from fmcli.console import Console
    from fmcli.io.atomic import check_writable
    from fmcli.io.modelfile import load_model

    console = console or Console()
    if job.n <= 0 or job.k <= 0:
        raise UsageError("-n and -k must be positive")
    modes = [o for o, v in (("--evaluate", job.evaluate), ("--similar", job.similar)) if v is not None]
    if len(modes) > 1:
        raise UsageError("--evaluate and --similar cannot be combined")
    if job.min_rating is not None and job.evaluate is None:
        raise UsageError("--min-rating applies to --evaluate")
    if job.metrics_json is not None and job.evaluate is None:
        raise UsageError("--metrics-json applies to --evaluate")
    ins = [p for p in (job.users, job.items, job.exclude, job.evaluate) if p is not None]
    if ins.count("-") > 1:
        raise UsageError("only one input may be standard input (-)")
    for p in (job.out, job.metrics_json):
        if p is not None and p != "-" and p in ins + [job.model, job.mapping]:
            raise UsageError(f"{p}: an output would overwrite an input")
    check_writable(job.out, "-out")
    check_writable(job.metrics_json, "--metrics-json")
    model = load_model(job.model)
    if model.orders:
        # the user x item split of the scores below is the order-2 one
        raise UsageError(f"{job.model}: a model with interaction orders above 2 (-dim "
                         f"{','.join(map(str, model.dim))}): fmcli recommend ranks with order-2 models only; "
                         "score candidate rows with fmcli predict")
    _check_at_least(job, model)
    mapping = load_sides(job.mapping, model, job.user_column, job.item_column)
    candidates = _candidates(job, mapping, console)
    if job.similar is not None:
        return _run_similar(job, model, mapping, candidates, console)
    if job.evaluate is not None:
        return _run_evaluate(job, model, mapping, candidates, console)
    users = _users(job, mapping, console)
    excl = _exclusions(job, mapping, candidates, console)
    scorer = Scorer.of_model(model, _candidate_rows(mapping, candidates), job.at_least)
    return _write_top_n(job, model, mapping, candidates, users, excl, scorer, console)


def _check_at_least(job, model):
    """--at-least: a -task o model, and one of its classes above the lowest."""
    if job.at_least is None:
        return
    if model.task != "o":
        raise UsageError(f"--at-least ranks by a class probability: {job.model} is a -task {model.task} "
                         "model, not -task o (ordered classes)")
    classes = model.meta["ordinal"]["classes"]
    if job.at_least not in classes[1:]:
        raise UsageError(f"--at-least {job.at_least:g}: give one of the model's classes above the lowest "
                         f"({', '.join(f'{c:g}' for c in classes[1:])})")
    if job.similar is not None:
        raise UsageError("--at-least does not apply to --similar (it compares factor vectors, not scores)")


def _candidate_rows(mapping, candidates):
    """The item side's CSR rows of the candidates, in candidate order."""
    return mapping.item.rows(np.array([mapping.item.index[v] for v in candidates], np.int64))


def _candidates(job, mapping, console):
    """{raw item id: candidate position}: every item, or those of --items (unknown ones counted)."""
    if job.items is None:
        return {v: p for p, v in enumerate(mapping.item.ids)}
    (column,), _, name = read_id_rows(job.items, mapping, [mapping.item.column])
    out, unknown = {}, 0
    for v in column:
        if v not in mapping.item.index:
            unknown += 1
        elif v not in out:
            out[v] = len(out)
    if unknown:
        console.info(f"{name}: {unknown} unknown item(s) skipped (not in the mapping)")
    if not out:
        raise InputError(name, None, "no known candidate item")
    return out


def _users(job, mapping, console):
    """User rows to recommend for: every user, or those of --users in file order (unknown ones
    counted and skipped, repeats once)."""
    if job.users is None:
        return np.arange(mapping.user.n_rows, dtype=np.int64)
    (column,), _, name = read_id_rows(job.users, mapping, [mapping.user.column])
    out, seen, unknown = [], set(), 0
    for v in column:
        r = mapping.user.index.get(v)
        if r is None:
            unknown += 1
        elif r not in seen:
            seen.add(r)
            out.append(r)
    if unknown:
        console.info(f"{name}: {unknown} unknown user(s) skipped (not in the mapping)")
    return np.array(out, np.int64)


def _exclusions(job, mapping, candidates, console):
    if job.exclude is None:
        return np.zeros(mapping.user.n_rows + 1, np.int64), np.empty(0, np.int64)
    (indptr, items), unknown, name = interactions(job.exclude, mapping, candidates)
    if unknown["user"] or unknown["item"]:
        console.detail(f"{name}: {unknown['user']} row(s) of unknown users and {unknown['item']} of items "
                       "that are not candidates ignored")
    return indptr, items


def _user_chunks(model, mapping, users, scorer):
    """(user rows, their terms) in chunks that keep memory flat."""
    params = parameter_sets(model)
    step = scorer.users_per_chunk()
    for a in range(0, len(users), step):
        which = users[a:a + step]
        yield which, side_terms(model, *mapping.user.rows(which), params)


def _write_top_n(job, model, mapping, candidates, users, excl, scorer, console):
    from fmcli.io.atomic import atomic_output

    item_ids = list(candidates)
    n = min(job.n, len(item_ids))
    lines = 0
    with atomic_output(job.out) as out:
        for which, terms in _user_chunks(model, mapping, users, scorer):
            items, scores = scorer.top_n(terms, *rows_of(excl[0], which, excl[1]), n)
            out.write(format_top_n([mapping.user.ids[u] for u in which.tolist()], item_ids, items, scores))
            lines += int((items >= 0).sum())
    where = "stdout" if job.out == "-" else job.out
    console.info(f"Wrote {lines} recommendations for {len(users)} users to {where}")
    return {"users": len(users), "lines": lines}


def format_top_n(query_ids, item_ids, items, scores):
    """`query<TAB>item<TAB>score<TAB>rank` lines (scores as predict writes them, ranks from 1)."""
    parts = []
    for q, row_items, row_scores in zip(query_ids, items.tolist(), scores.tolist()):
        for r, (i, s) in enumerate(zip(row_items, row_scores)):
            if i < 0:
                break
            parts.append(f"{q}\t{item_ids[i]}\t{'%.6g' % s}\t{r + 1}\n")
    return "".join(parts)


def _run_similar(job, model, mapping, candidates, console):
    """The -n items whose item-side factor vectors are closest in cosine to --similar's. For a
    model with samples, a vector is the concatenation of the samples' vectors (so the cosine
    is that of the mean inner product over the samples)."""
    from fmcli.io.atomic import atomic_output

    if job.similar not in mapping.item.index:
        raise UsageError(f"--similar {job.similar!r}: not an item of the mapping")
    params = parameter_sets(model)
    vectors = unit_factors(side_terms(model, *_candidate_rows(mapping, candidates), params))
    query = unit_factors(side_terms(model, *mapping.item.rows(np.array([mapping.item.index[job.similar]])), params))
    scorer = Scorer(vectors, np.zeros(1), LINK_CODES["identity"], -np.inf, np.inf)
    own = candidates.get(job.similar)
    excl = (np.array([0, 0 if own is None else 1]), np.array([] if own is None else [own], np.int64))
    items, scores = scorer.top_n(query, *excl, min(job.n, len(candidates)))
    with atomic_output(job.out) as out:
        out.write(format_top_n([job.similar], list(candidates), items, scores))
    lines = int((items >= 0).sum())
    console.info(f"Wrote {lines} items like {job.similar} to {'stdout' if job.out == '-' else job.out}")
    return {"lines": lines}


def unit_factors(terms):
    """(rows, 1, 1 + S k) of side terms: each row's factor sums of every set, concatenated and
    scaled to length 1 (zero rows stay zero), with a zero part: their scores are cosines."""
    n = terms.shape[0]
    q = np.ascontiguousarray(terms[:, :, 1:]).reshape(n, -1)
    norm = np.sqrt(np.einsum("ij,ij->i", q, q))
    out = np.zeros((n, 1, 1 + q.shape[1]))
    out[:, 0, 1:] = q / np.where(norm > 0, norm, 1.0)[:, None]
    return out


def evaluate_scorer(scorer, user_chunks, excl, relevant, k):
    """Ranking metrics (fmcli.ranking) of the top-k of each user row of user_chunks (pairs of
    (user rows, their terms)) against CSR `relevant`, items of CSR `excl` left out of both the
    lists and the AUC's candidates."""
    from fmcli.ranking import auc_rows, topk_metrics

    n_items = scorer.n_items
    ranked, rel_ptr, rel_items, aucs = [], [np.zeros(1, np.int64)], [], []
    offset = 0
    step = max(1, CHUNK_BYTES // (8 * n_items))
    for which, terms in user_chunks:
        for a in range(0, len(which), step):
            rows, t = which[a:a + step], terms[a:a + step]
            e_ptr, e_items = rows_of(excl[0], rows, excl[1])
            items, _ = scorer.top_n(t, e_ptr, e_items, min(k, n_items))
            ranked.append(np.pad(items, ((0, 0), (0, k - items.shape[1])), constant_values=-1))
            r_ptr, r_items = rows_of(relevant[0], rows, relevant[1])
            rel_ptr.append(r_ptr[1:] + offset)
            rel_items.append(r_items)
            offset += len(r_items)
            candidate = np.ones((len(rows), n_items), np.bool_)
            candidate[np.repeat(np.arange(len(rows)), np.diff(e_ptr)), e_items] = False
            rel = np.zeros((len(rows), n_items), np.bool_)
            rel[np.repeat(np.arange(len(rows)), np.diff(r_ptr)), r_items] = True
            aucs.append(auc_rows(scorer.score_all(t), candidate, rel))
    ranked = np.concatenate(ranked) if ranked else np.empty((0, k), np.int64)
    out = topk_metrics(ranked, np.concatenate(rel_ptr), np.concatenate(rel_items) if rel_items else
                       np.empty(0, np.int64), k)
    auc = np.concatenate(aucs) if aucs else np.empty(0)
    out["auc"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
    return out


def held_out(job, mapping, candidates, excl, console):
    """The relevant CSR of --evaluate (rows >= --min-rating; an excluded item is not relevant,
    it cannot be recommended) and the user rows that have a relevant item."""
    (indptr, items), unknown, name = interactions(job.evaluate, mapping, candidates, job.min_rating)
    if unknown["user"] or unknown["item"]:
        console.info(f"{name}: {unknown['user']} row(s) of unknown users and {unknown['item']} of unknown "
                     "(or non-candidate) items skipped")
    n_items = len(candidates)
    users_of = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    keep = ~np.isin(users_of * n_items + items,
                    np.repeat(np.arange(len(excl[0]) - 1), np.diff(excl[0])) * n_items + excl[1])
    relevant = _csr(users_of[keep], items[keep], len(indptr) - 1)
    users = np.flatnonzero(np.diff(relevant[0]) > 0)
    if not len(users):
        raise InputError(name, None, "no relevant interaction of a known user and item"
                         + (f" with a rating >= {job.min_rating:g}" if job.min_rating is not None else ""))
    return relevant, users


def _run_evaluate(job, model, mapping, candidates, console):
    from fmcli.io.atomic import atomic_output
    from fmcli.ranking import TOPK_METRICS

    excl = _exclusions(job, mapping, candidates, console)
    relevant, users = held_out(job, mapping, candidates, excl, console)
    scorer = Scorer.of_model(model, _candidate_rows(mapping, candidates), job.at_least)
    m = evaluate_scorer(scorer, _user_chunks(model, mapping, users, scorer), excl, relevant, job.k)
    report = {f"{name}@{job.k}": m[name] for name in TOPK_METRICS}
    report["auc"] = m["auc"]
    with atomic_output(job.out) as out:
        out.write("".join(f"{name}\t{'%.6g' % v}\n" for name, v in report.items()))
    if job.metrics_json:
        with atomic_output(job.metrics_json) as f:
            json.dump({"k": job.k, "min_rating": job.min_rating, "users": m["users"], "items": len(candidates),
                       **report}, f)
            f.write("\n")
    console.info(f"Evaluated {m['users']} users with a relevant item against {len(candidates)} items"
                 + (", train items excluded" if job.exclude else ""))
    return {"users": m["users"], **report}

"""The order and the parallel lanes of an ALS/MCMC sweep.

Features are coloured once per data set so that two features of one colour never occur in
the same row (colour_features); a sweep visits the colour classes in turn, and within a class
the features touch disjoint rows of the caches, so they run in parallel lanes of about equal
work (lanes), one per thread. The train rows are reordered inside the learner by their
feature of the largest colour class (typically the users: row_order), so that each such
feature's rows are contiguous and the gathers of the sweep nearly sequential; within a
class, features are visited in order of their first row (class_order). A relation is
coloured on its own, over the relation rows some train row links to (relation_schedule).

Long rows. A row of L entries needs L colours, and greedy colouring costs Σ_rows nnz_i²: one
row of 200,000 entries took minutes to colour and made 200,000 classes of one feature each,
a parallel launch apiece every sweep. The features of rows longer than LONG_ROW are therefore
not coloured: they make one last class, the sequential class, swept in one lane (in class
order, one feature after the other: each update sees the earlier ones, as a single-threaded
sweep), so colouring costs at most LONG_ROW per entry and a sweep O(k nnz) whatever the row
lengths. Data without such rows get the same classes as before, bit for bit.
"""

from dataclasses import dataclass

import numpy as np

from fmcli.config import njit
from fmcli.data import index_dtype, transpose
from fmcli.learners.sweep import CACHE_DTYPE


@njit
def colour_features(cptr, crow, indptr, indices, cols):
    """Greedy colouring of the co-occurrence graph: features sharing a row get different
    colours. Visits `cols` in the given order (Welsh-Powell: longest columns first), giving
    each the smallest colour none of its co-occurring features has. Returns colour per
    feature (-1 for features not in `cols`). Cost Σ_rows nnz_i², without building the graph."""
    n = cptr.shape[0] - 1
    colour = np.full(n, -1, np.int64)
    seen = np.full(n + 1, -1, np.int64)     # seen[c] == j: colour c is taken by a neighbour of j
    for t in range(cols.shape[0]):
        j = cols[t]
        for p in range(cptr[j], cptr[j + 1]):
            i = crow[p]
            for r in range(indptr[i], indptr[i + 1]):
                c = colour[indices[r]]
                if c >= 0:
                    seen[c] = j
        c = 0
        while seen[c] == j:
            c += 1
        colour[j] = c
    return colour


@njit
def row_keys(indptr, indices, colour, big, n):
    """Per row: its (last) feature of colour class `big`, n for none (the row-order key)."""
    key = np.full(indptr.shape[0] - 1, n, np.int64)
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i], indptr[i + 1]):
            if colour[indices[p]] == big:
                key[i] = indices[p]
    return key


LONG_ROW = 1024   # rows longer than this: their features go to the sequential class


def colour_classes(cptr, crow, indptr, indices, cols, n):
    """(colour, sequential): colour_features of `cols` (in the given order), except the features
    of rows longer than LONG_ROW, which all get the colour `sequential` after the others
    (-1: no such row, the plain colouring)."""
    lens = np.diff(indptr)
    long_rows = lens > LONG_ROW
    if not long_rows.any():
        colour = colour_features(cptr, crow, indptr, indices, cols) if len(cols) else np.full(n, -1, np.int64)
        return colour, -1
    in_long = np.zeros(n, bool)
    in_long[indices[np.repeat(long_rows, lens)]] = True
    short = cols[~in_long[cols]]
    # a short feature's rows are all short: its scan costs at most LONG_ROW per entry (the long
    # rows' features it meets are uncoloured, -1, and ignored)
    colour = colour_features(cptr, crow, indptr, indices, short) if len(short) else np.full(n, -1, np.int64)
    sequential = int(colour.max()) + 1 if len(short) else 0
    colour[cols[in_long[cols]]] = sequential
    return colour, sequential


def colouring(indptr, indices, data, n):
    """(cols, colour, sequential): the features with entries, longest column first, the colour
    of each of the n features (-1: no entries), and the sequential class (colour_classes)."""
    cptr, crow, cval = transpose(indptr, indices, data, n)
    del cval
    counts = np.diff(cptr)
    cols = np.flatnonzero(counts).astype(np.int64)
    cols = cols[np.argsort(-counts[cols], kind="stable")]
    colour, sequential = colour_classes(cptr, crow, indptr, indices, cols, n)
    return cols, colour, sequential


def row_order(indptr, indices, cols, colour, n, sequential=-1):
    """perm (internal row -> row of the file): rows sorted by their feature in the colour
    class with the most features (other than the sequential class, when there is another)."""
    n_rows = len(indptr) - 1
    if not len(cols):
        return np.arange(n_rows, dtype=index_dtype(n_rows))
    sizes = np.bincount(colour[cols])
    if 0 <= sequential and len(sizes) > 1:
        sizes[sequential] = -1
    big = sizes.argmax()
    key = row_keys(indptr, indices, colour, big, n)
    return np.argsort(key, kind="stable").astype(index_dtype(n_rows))


def class_order(cols, colour, cptr, crow):
    """(order, class_ptr): the features of class c are order[class_ptr[c]:class_ptr[c+1]],
    each class by the features' first row (over the reordered rows' CSC)."""
    counts = np.diff(cptr)
    # (a train set without any entry: no feature has a first row, and crow is empty)
    first = np.where(counts > 0, crow[np.minimum(cptr[:-1], len(crow) - 1)], 0) if len(crow) \
        else np.zeros(len(counts), np.int64)
    order = cols[np.lexsort((first[cols], colour[cols]))]
    n_classes = int(colour[cols].max()) + 1 if len(cols) else 0
    class_ptr = np.searchsorted(colour[order], np.arange(n_classes + 1)).astype(np.int64)
    return order.astype(np.int64), class_ptr


def lanes(order, class_ptr, work, n_lanes, sequential=-1):
    """Cut each class order[class_ptr[c]:class_ptr[c+1]] into n_lanes contiguous pieces of about
    equal total `work` (per feature); the sequential class (colour_classes) whole into the
    first lane. Returns lane_ptr (n_classes * n_lanes + 1,)."""
    cum = np.concatenate([[0.0], np.cumsum(work[order], dtype=np.float64)])
    ptr = [0]
    for c in range(len(class_ptr) - 1):
        a, b = class_ptr[c], class_ptr[c + 1]
        if c == sequential:
            ptr.extend([b] * n_lanes)
            continue
        cuts = cum[a] + (cum[b] - cum[a]) * np.arange(1, n_lanes) / n_lanes
        ptr.extend(np.clip(np.searchsorted(cum, cuts), a, b).tolist() + [b])
    return np.array(ptr, np.int64)


def lane_buffers(col_length, order, lane_ptr, n_lanes, width):
    """The sweep's gather buffers, one per lane, flat: (buf, buf_off) with buf[buf_off[l]:
    buf_off[l+1]] lane l's (width, cap_l), cap_l the longest column lane l gets in any class:
    the longest column (e.g. a numeric feature in half the rows) is paid for once, not once per
    thread. col_length None: no buffers (the in-place layout)."""
    caps = np.zeros(n_lanes, np.int64)
    if col_length is not None:
        length = col_length[order]
        for t in range(len(lane_ptr) - 1):
            a, b = lane_ptr[t], lane_ptr[t + 1]
            if b > a:
                caps[t % n_lanes] = max(caps[t % n_lanes], int(length[a:b].max()))
    buf_off = np.concatenate([[0], np.cumsum(caps * width)]).astype(np.int64)
    return np.empty(buf_off[-1], CACHE_DTYPE), buf_off


@dataclass
class RelationSchedule:
    """One relation as the relation sweep needs it (fmcli.learners.relation_sweep)."""
    relation: object        # fmcli.data.Relation
    links: np.ndarray       # relation row of each train row, internal row order
    cols: np.ndarray        # the relation's features in linked rows (local ids, ascending)
    cptr: np.ndarray        # CSC of the relation over its linked rows
    crow: np.ndarray
    cval: np.ndarray
    order: np.ndarray       # cols by colour class
    class_ptr: np.ndarray
    link_ptr: np.ndarray    # train rows of relation row r: link_rows[link_ptr[r]:link_ptr[r+1]]
    link_rows: np.ndarray
    work: np.ndarray        # per feature, for the lanes
    stats: np.ndarray       # (relation rows, 8) statistics scratch of the relation sweep
    sequential: int = -1    # the class of the long relation rows' features (colour_classes)

    @property
    def offset(self):
        return self.relation.offset


def relation_schedule(rel, links):
    """The train rows grouped by their relation row (links: internal row order), the relation's
    CSC over the rows some train row links to, and its colour classes (visiting the features
    with the most flat entries first)."""
    links = np.asarray(links, np.int64)
    m = np.bincount(links, minlength=rel.n_rows)
    link_rows = np.argsort(links, kind="stable").astype(np.int64)
    link_ptr = np.concatenate([[0], np.cumsum(m)]).astype(np.int64)
    # the relation rows no train row links to take no part in training
    keep = np.repeat(m > 0, np.diff(rel.indptr))
    lens = np.where(m > 0, np.diff(rel.indptr), 0)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    indices, data = rel.indices[keep], rel.data[keep]
    cptr, crow, cval = transpose(indptr, indices, data, rel.n_features)
    flat_count = np.bincount(indices, weights=m[np.repeat(np.arange(rel.n_rows), lens)],
                             minlength=rel.n_features)
    cols = np.flatnonzero(np.diff(cptr)).astype(np.int64)
    cols = cols[np.argsort(-flat_count[cols], kind="stable")]
    colour, sequential = colour_classes(cptr, crow, indptr, indices, cols, rel.n_features)
    order = cols[np.argsort(colour[cols], kind="stable")]
    class_ptr = np.searchsorted(colour[order], np.arange(colour.max() + 2)).astype(np.int64) \
        if len(cols) else np.zeros(1, np.int64)
    return RelationSchedule(rel, links, np.sort(cols), cptr, crow, cval, order, class_ptr, link_ptr,
                            link_rows, np.diff(cptr) + 8.0, np.zeros((rel.n_rows, 8)), sequential)

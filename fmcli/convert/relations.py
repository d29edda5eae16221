"""The user and item sides of a conversion (`--user COL --item COL`): the mapping's `entities`
section, and the implicit-feedback relations (`--relations BASE`) that `fmcli train -relation
BASE.users,BASE.items` reads as they are.

BASE.users: one relation row per user (every user of the mapping, then one empty row for users
it does not know), holding the items the user rated in the train rows (the first -in only, so
that nothing leaks from test rows), each with value 1/sqrt(n) (n: the user's rated items, as in
SVD++); its features are the items, numbered in the order of the mapping's item ids. BASE.items
likewise: each item's raters. Files per relation R: R.x (libFM text), R.groups (one group), and
(one group; as many lines as the relation's features: its largest
feature id + 1, as a libFM text design has), and one link file per -in: R.train for the first, R.test for the second, R.validation for the
third (the names `fmcli train` looks for), one relation row number per data row.
"""

import math

from fmcli.convert.encoders import fmt

PARTS = ("train", "test", "validation")


def side_keys(encoder, joins, side_pairs):
    """The keys of one side: the column's values in id order, then keys known only from the
    side tables joined on that column (cold start: side features, no one-hot)."""
    keys = list(encoder.ids)
    known = set(keys)
    for j, pairs in zip(joins, side_pairs):
        if j.on == encoder.name:
            for k in pairs:
                if k not in known:
                    known.add(k)
                    keys.append(k)
    return keys


def entity(encoder, joins, side_pairs):
    """{"column", "features"}: each key's (feature id, value) pairs, as written in a row."""
    features = {}
    for k in side_keys(encoder, joins, side_pairs):
        pairs = [(encoder.ids[k], 1.0)] if k in encoder.ids else []
        for j, sp in zip(joins, side_pairs):
            if j.on == encoder.name:
                pairs.extend(sp.get(k, ()))
        features[k] = [[f, float(fmt(v))] for f, v in sorted(pairs)]
    return {"column": encoder.name, "features": features}


def relation_files(base, train_pairs, user_keys, item_keys, link_keys):
    """{path: text} of the two relations. train_pairs: (user key, item key) of the train rows;
    link_keys: per -in, the (user key, item key) of each row."""
    files = {}
    sides = (("users", 0, user_keys, item_keys), ("items", 1, item_keys, user_keys))
    for suffix, side, keys, others in sides:
        name = f"{base}.{suffix}"
        row_of = {k: r for r, k in enumerate(keys)}
        feature_of = {k: j for j, k in enumerate(others)}
        members = [set() for _ in keys]
        for pair in train_pairs:
            k, other = pair[side], pair[1 - side]
            if k in row_of and other in feature_of:
                members[row_of[k]].add(feature_of[other])
        lines = []
        for m in members:
            w = fmt(1.0 / math.sqrt(len(m))) if m else None
            lines.append(" ".join(["0"] + [f"{j}:{w}" for j in sorted(m)]))
        lines.append("0")          # the row of keys the mapping does not know
        files[name + ".x"] = "\n".join(lines) + "\n"
        # a libFM text design has as many features as its largest id + 1: so many groups
        files[name + ".groups"] = "0\n" * (max((max(m) for m in members if m), default=-1) + 1)
        for part, rows in zip(PARTS, link_keys):
            files[f"{name}.{part}"] = "".join(f"{row_of.get(pair[side], len(keys))}\n" for pair in rows)
    return files


def relation_rows(base, user_keys, item_keys):
    """The `relation` entries of the entities: each key's row in BASE.users.x / BASE.items.x."""
    return ({"name": f"{base}.users", "rows": {k: r for r, k in enumerate(user_keys)}},
            {"name": f"{base}.items", "rows": {k: r for r, k in enumerate(item_keys)}})

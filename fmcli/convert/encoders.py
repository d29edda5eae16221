"""The column encoders of `fmcli convert`: how the fields of a column become (feature id, value)
pairs. Each encoder learns its ids (and statistics) from the rows of a new conversion (`fit`),
encodes one row's fields (`encode`), and is saved in and rebuilt from the mapping
(`to_dict`, `from_dict`), so new data gets exactly the same features.

Every feature column is one group in -meta, except a timestamp, which gives one group per
derived part.
"""

import bisect
import math
import re

from fmcli.convert.table import NUMBER, parse_number, why_not_number

SET_NORMS = ("1", "n", "sqrt")
TIME_PARTS = ("day", "weekday", "hour")     # and daysN: N-day periods
SECONDS_PER_DAY = 86400
_TOKEN = re.compile(r"\w+")


class BadValue(Exception):
    """A field that the encoder cannot take; the job adds file, line and column."""


class BadRecord(Exception):
    """A mapping record that is not what this encoder wrote."""


def fmt(v):
    return "%.9g" % v


def set_weight(n, norm):
    """The value of each of a set's n members: 1, 1/n or 1/sqrt(n)."""
    return 1.0 if norm == "1" else 1.0 / n if norm == "n" else 1.0 / math.sqrt(n)


def _int(d, key, low=0):
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise BadRecord(f"bad {key}")
    return v


def _number(d, key):
    v = d.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise BadRecord(f"bad {key}")
    return float(v)


def _ids(d, key, n_features):
    ids = d.get(key)
    if not isinstance(ids, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n_features
                                            for v in ids.values()):
        raise BadRecord("bad value -> id table")
    return ids


def _id_list(d, key, n_features):
    ids = d.get(key)
    if not isinstance(ids, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n_features
                                            for v in ids):
        raise BadRecord(f"bad {key}")
    return ids


class Encoder:
    """One feature column. `fields`: the raw columns it reads (one, or a run for indicators)."""

    role = None

    def __init__(self, name, fields=None):
        self.name = name
        self.fields = list(fields or [name])
        self.group = None

    def feature_groups(self):
        """(feature id, group) of each of its features."""
        raise NotImplementedError

    def head(self):
        return {"name": self.name, "role": self.role, "group": self.group}


class Plain:
    """A column that gives no feature: the target, a dropped column, a side table's key."""

    def __init__(self, name, role):
        self.name, self.role, self.fields = name, role, [name]

    def to_dict(self):
        return {"name": self.name, "role": self.role}


class Categorical(Encoder):
    role = "categorical"

    def __init__(self, name, ids=None, inferred=False):
        super().__init__(name)
        self.ids, self.inferred = ids, inferred

    def fit(self, values, next_id, next_group):
        ids = {}
        for (v,) in values:
            if v and v not in ids:
                ids[v] = next_id + len(ids)
        self.ids, self.group = ids, next_group
        return next_id + len(ids), next_group + 1

    def encode(self, values):
        v = values[0]
        if not v:
            return [], 0
        fid = self.ids.get(v)
        return ([], 1) if fid is None else ([(fid, 1.0)], 0)

    def feature_groups(self):
        return ((f, self.group) for f in self.ids.values())

    def describe(self):
        return f"categorical, {len(self.ids)} ids"

    def to_dict(self):
        return {**self.head(), "ids": self.ids}

    @classmethod
    def from_dict(cls, d, n):
        e = cls(d["name"], _ids(d, "ids", n))
        return e


class Numeric(Encoder):
    """One feature: the number, optionally log1p'd and/or standardised (mean, sd of the fitted
    values after log1p); a 0 is left out."""

    role = "numeric"

    def __init__(self, name, fid=None, log1p=False, standardize=None, inferred=False):
        super().__init__(name)
        self.id, self.log1p, self.standardize, self.inferred = fid, log1p, standardize, inferred
        self.scale = None     # (mean, sd) once fitted or loaded

    def _value(self, text):
        v = parse_number(text)
        if v is None:
            hint = "" if NUMBER.fullmatch(text) else "; list the column in --categorical?"
            raise BadValue(f"bad value {text[:40]!r} ({why_not_number(text)}{hint})")
        if self.log1p:
            if v <= -1:
                raise BadValue(f"--log1p of {text[:40]}: values must be > -1")
            v = math.log1p(v)
        return v

    def fit(self, values, next_id, next_group):
        self.id, self.group = next_id, next_group
        if self.standardize:
            import numpy as np      # here: `fmcli convert` without statistics stays light
            xs = []
            for (v,) in values:
                if v:
                    try:
                        xs.append(self._value(v))
                    except BadValue:
                        pass          # encode() reports it with its line
            xs = np.array(xs, np.float64)
            mean = float(xs.mean()) if len(xs) else 0.0
            sd = float(xs.std()) if len(xs) else 0.0
            self.scale = (mean, sd if sd > 0 else 1.0)
        return next_id + 1, next_group + 1

    def encode(self, values):
        text = values[0]
        if not text:
            return [], 0
        v = self._value(text)
        if self.scale:
            v = (v - self.scale[0]) / self.scale[1]
        return ([(self.id, v)] if v != 0 else []), 0

    def feature_groups(self):
        return [(self.id, self.group)]

    def describe(self):
        return "numeric" + (", log1p" if self.log1p else "") + (", standardized" if self.scale else "")

    def to_dict(self):
        d = {**self.head(), "id": self.id}
        if self.log1p:
            d["log1p"] = True
        if self.scale:
            d["mean"], d["sd"] = self.scale
        return d

    @classmethod
    def from_dict(cls, d, n):
        fid = d.get("id")
        if not isinstance(fid, int) or isinstance(fid, bool) or not 0 <= fid < n:
            raise BadRecord("bad feature id")
        e = cls(d["name"], fid, log1p=d.get("log1p", False) is True)
        if "mean" in d or "sd" in d:
            e.scale = (_number(d, "mean"), _number(d, "sd"))
            if e.scale[1] <= 0:
                raise BadRecord("bad sd")
        return e


class Buckets(Encoder):
    """Quantile buckets of a numeric column: a categorical group, one feature per bucket.
    `edges`: the upper bounds (exclusive) of all buckets but the last."""

    role = "bucket"

    def __init__(self, name, n_buckets=None, edges=None, ids=None):
        super().__init__(name)
        self.n_buckets, self.edges, self.ids = n_buckets, edges, ids

    def _number(self, text):
        v = parse_number(text)
        if v is None:
            raise BadValue(f"bad value {text[:40]!r} ({why_not_number(text)}; --buckets takes numbers)")
        return v

    def fit(self, values, next_id, next_group):
        import numpy as np

        xs = []
        for (v,) in values:
            if v:
                try:
                    xs.append(self._number(v))
                except BadValue:
                    pass
        qs = np.quantile(np.array(xs, np.float64), [k / self.n_buckets for k in range(1, self.n_buckets)]) \
            if xs else []
        self.edges = sorted({float(q) for q in qs})
        self.ids = list(range(next_id, next_id + len(self.edges) + 1))
        self.group = next_group
        return next_id + len(self.ids), next_group + 1

    def encode(self, values):
        if not values[0]:
            return [], 0
        return [(self.ids[bisect.bisect_right(self.edges, self._number(values[0]))], 1.0)], 0

    def feature_groups(self):
        return ((f, self.group) for f in self.ids)

    def describe(self):
        return f"{len(self.ids)} quantile buckets"

    def to_dict(self):
        return {**self.head(), "edges": self.edges, "ids": self.ids}

    @classmethod
    def from_dict(cls, d, n):
        edges = d.get("edges")
        if not isinstance(edges, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                  for x in edges) or edges != sorted(edges):
            raise BadRecord("bad edges")
        ids = _id_list(d, "ids", n)
        if len(ids) != len(edges) + 1:
            raise BadRecord("one id per bucket expected")
        return cls(d["name"], edges=[float(x) for x in edges], ids=ids)


class ValueSet(Encoder):
    """A field holding several values (`Action|Comedy`): one feature per distinct value, the
    members' values 1, 1/n or 1/sqrt(n) (n: the row's known members)."""

    role = "set"

    def __init__(self, name, sep="|", norm="1", ids=None):
        super().__init__(name)
        self.sep, self.norm, self.ids = sep, norm, ids

    def _members(self, text):
        seen = []
        for v in text.split(self.sep):
            v = v.strip()
            if v and v not in seen:
                seen.append(v)
        return seen

    def fit(self, values, next_id, next_group):
        ids = {}
        for (text,) in values:
            for v in self._members(text):
                if v not in ids:
                    ids[v] = next_id + len(ids)
        self.ids, self.group = ids, next_group
        return next_id + len(ids), next_group + 1

    def encode(self, values):
        members = self._members(values[0])
        known = [self.ids[v] for v in members if v in self.ids]
        if not known:
            return [], len(members)
        w = set_weight(len(known), self.norm)
        return [(f, w) for f in known], len(members) - len(known)

    def feature_groups(self):
        return ((f, self.group) for f in self.ids.values())

    def describe(self):
        return f"set, {len(self.ids)} values"

    def to_dict(self):
        return {**self.head(), "separator": self.sep, "norm": self.norm, "ids": self.ids}

    @classmethod
    def from_dict(cls, d, n):
        if d.get("norm") not in SET_NORMS or not isinstance(d.get("separator"), str) or not d["separator"]:
            raise BadRecord("bad set separator or norm")
        return cls(d["name"], d["separator"], d["norm"], _ids(d, "ids", n))


class Indicators(Encoder):
    """A run of 0/1 columns declared as one set (u.item's 19 genre flags): one feature per
    column, present when its field is a non-zero number."""

    role = "indicators"

    def __init__(self, name, fields, norm="1", ids=None):
        super().__init__(name, fields)
        self.norm, self.ids = norm, ids

    def fit(self, values, next_id, next_group):
        self.ids = list(range(next_id, next_id + len(self.fields)))
        self.group = next_group
        return next_id + len(self.fields), next_group + 1

    def encode(self, values):
        on = []
        for fid, text, field in zip(self.ids, values, self.fields):
            if not text:
                continue
            v = parse_number(text)
            if v is None:
                raise BadValue(f"indicator column {field}: {text[:40]!r} is not a number (0 or 1)")
            if v != 0:
                on.append(fid)
        if not on:
            return [], 0
        w = set_weight(len(on), self.norm)
        return [(f, w) for f in on], 0

    def feature_groups(self):
        return ((f, self.group) for f in self.ids)

    def describe(self):
        return f"set of {len(self.fields)} indicator columns"

    def to_dict(self):
        return {**self.head(), "columns": self.fields, "norm": self.norm, "ids": self.ids}

    @classmethod
    def from_dict(cls, d, n):
        fields = d.get("columns")
        if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
            raise BadRecord("bad columns")
        if d.get("norm") not in SET_NORMS:
            raise BadRecord("bad norm")
        ids = _id_list(d, "ids", n)
        if len(ids) != len(fields):
            raise BadRecord("one id per column expected")
        return cls(d["name"], fields, d["norm"], ids)


def tokens(text):
    """The words of a text field, lower-cased (runs of letters, digits and '_')."""
    return _TOKEN.findall(text.lower())


class TfIdf(Encoder):
    """A text column as a bag of words: word w of a field with t words, c of them w, gets
    (c / t) * ln(N / df(w)); N: the fitted rows, df(w): those whose field has w. Words in
    every row weigh 0 and are left out."""

    role = "tfidf"

    def __init__(self, name, terms=None):
        super().__init__(name)
        self.terms = terms        # word -> [feature id, idf]

    def fit(self, values, next_id, next_group):
        df = {}
        for (text,) in values:
            for w in dict.fromkeys(tokens(text)):
                df[w] = df.get(w, 0) + 1
        n_docs = len(values)
        self.terms = {w: [next_id + k, math.log(n_docs / c)] for k, (w, c) in enumerate(df.items())}
        self.group = next_group
        return next_id + len(df), next_group + 1

    def encode(self, values):
        words = tokens(values[0])
        if not words:
            return [], 0
        counts = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        pairs, unknown = [], 0
        for w, c in counts.items():
            t = self.terms.get(w)
            if t is None:
                unknown += 1
            elif t[1] > 0:
                pairs.append((t[0], c / len(words) * t[1]))
        return pairs, unknown

    def feature_groups(self):
        return ((t[0], self.group) for t in self.terms.values())

    def describe(self):
        return f"tf-idf, {len(self.terms)} words"

    def to_dict(self):
        return {**self.head(), "terms": self.terms}

    @classmethod
    def from_dict(cls, d, n):
        terms = d.get("terms")
        if not isinstance(terms, dict) or not all(
                isinstance(t, list) and len(t) == 2 and isinstance(t[0], int) and not isinstance(t[0], bool)
                and 0 <= t[0] < n and isinstance(t[1], (int, float)) and not isinstance(t[1], bool)
                and math.isfinite(t[1]) and t[1] >= 0 for t in terms.values()):
            raise BadRecord("bad terms")
        return cls(d["name"], terms)


def parse_time_parts(text):
    """'weekday+hour+days7' -> ['weekday', 'hour', 'days7']; ValueError naming a bad part."""
    parts = [p.strip() for p in text.split("+") if p.strip()]
    for p in parts:
        if p not in TIME_PARTS and not re.fullmatch(r"days[1-9]\d*", p):
            raise ValueError(p)
    if not parts or len(set(parts)) != len(parts):
        raise ValueError(text)
    return parts


class Timestamp(Encoder):
    """A Unix-time column (seconds, UTC) as derived features, each its own group: `day` (numeric:
    days since the first fitted day), `weekday` (7 features, Monday first), `hour` (24), and
    `daysN` (a categorical group of N-day periods counted from the first fitted day)."""

    role = "timestamp"

    def __init__(self, name, parts, origin=None, groups=None, ids=None):
        super().__init__(name)
        self.parts, self.origin = parts, origin
        self.groups = groups        # part -> group
        self.ids = ids              # part -> {key: feature id} (day: {"day": id})

    def _seconds(self, text):
        v = parse_number(text)
        if v is None:
            raise BadValue(f"bad Unix time {text[:40]!r} ({why_not_number(text)})")
        return v

    def _keys(self, seconds):
        """part -> the key of its feature (or the day count for `day`)."""
        day = math.floor(seconds / SECONDS_PER_DAY)
        out = {}
        for p in self.parts:
            if p == "day":
                out[p] = day - self.origin
            elif p == "weekday":
                out[p] = str((day + 3) % 7)          # 1970-01-01 was a Thursday
            elif p == "hour":
                out[p] = str(int((seconds - day * SECONDS_PER_DAY) // 3600))
            else:
                out[p] = str((day - self.origin) // int(p[4:]))
        return out

    def fit(self, values, next_id, next_group):
        seconds = []
        for (v,) in values:
            if v:
                try:
                    seconds.append(self._seconds(v))
                except BadValue:
                    pass
        self.origin = math.floor(min(seconds) / SECONDS_PER_DAY) if seconds else 0
        self.groups, self.ids = {}, {}
        for p in self.parts:
            self.groups[p] = next_group
            next_group += 1
            if p == "day":
                keys = ["day"]
            elif p == "weekday":
                keys = [str(k) for k in range(7)]
            elif p == "hour":
                keys = [str(k) for k in range(24)]
            else:
                found = sorted({int(self._keys(s)[p]) for s in seconds})
                keys = [str(k) for k in found]
            self.ids[p] = {k: next_id + j for j, k in enumerate(keys)}
            next_id += len(keys)
        return next_id, next_group

    def encode(self, values):
        if not values[0]:
            return [], 0
        keys = self._keys(self._seconds(values[0]))
        pairs, unknown = [], 0
        for p in self.parts:
            if p == "day":
                if keys[p]:
                    pairs.append((self.ids[p]["day"], float(keys[p])))
                continue
            fid = self.ids[p].get(keys[p])
            if fid is None:
                unknown += 1
            else:
                pairs.append((fid, 1.0))
        return pairs, unknown

    def feature_groups(self):
        return ((f, self.groups[p]) for p in self.parts for f in self.ids[p].values())

    def describe(self):
        return "timestamp: " + "+".join(self.parts)

    def to_dict(self):
        return {"name": self.name, "role": self.role, "origin_day": self.origin,
                "parts": [{"part": p, "group": self.groups[p], "ids": self.ids[p]} for p in self.parts]}

    @classmethod
    def from_dict(cls, d, n):
        origin = d.get("origin_day")
        if not isinstance(origin, int) or isinstance(origin, bool):
            raise BadRecord("bad origin_day")
        parts = d.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise BadRecord("bad parts")
        try:
            names = parse_time_parts("+".join(str(p.get("part")) for p in parts))
        except ValueError:
            raise BadRecord("bad parts") from None
        groups = {p["part"]: _int(p, "group") for p in parts}
        ids = {p["part"]: _ids(p, "ids", n) for p in parts}
        return cls(d["name"], names, origin, groups, ids)


ENCODERS = {c.role: c for c in (Categorical, Numeric, Buckets, ValueSet, Indicators, TfIdf, Timestamp)}

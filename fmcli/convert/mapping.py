"""The mapping file of `fmcli convert` (JSON): everything needed to build the same features for
new rows. Version 1 holds the main table's columns; version 2 (written when a conversion uses
anything version 1 cannot say) adds the input encoding, the joined side tables with their
columns, the transforms of the encoders, and the user and item sides (`entities`, read by
`fmcli recommend`; see /work/brief/mapping-v2.md's contract in README "Features")."""

import json
from dataclasses import dataclass, field

from fmcli import __version__
from fmcli.convert.encoders import ENCODERS, BadRecord, Categorical, Numeric, Plain
from fmcli.convert.table import SEPARATORS
from fmcli.errors import InputError

MAPPING_FORMAT = "fmcli-convert-mapping"
MAPPING_VERSIONS = (1, 2)
MAX_FEATURES = 2**31 - 1
PLAIN_ROLES = ("target", "drop", "key", "weight")   # columns that are not features


@dataclass
class TablePlan:
    """One table's columns (records in column order: Plain or an encoder) and, for a side
    table, how it is read and joined: its key column and the main column it joins on."""

    records: list
    name: str = None            # None: the main table
    path: str = None
    key: str = None             # side table: the key column's name
    on: str = None              # side table: the main column holding the key
    sep: str = "auto"
    header: bool = None
    encoding: str = None
    names: list = field(default_factory=list)

    def encoders(self):
        return [r for r in self.records if not isinstance(r, Plain)]

    def weighted(self):
        """Has the table a weight column (--weight)?"""
        return any(r.role == "weight" for r in self.records if isinstance(r, Plain))


def needs_version_2(main, joins, encoding, entities):
    plain_v1 = all(type(e) is Categorical or (type(e) is Numeric and not e.log1p and not e.scale)
                   for e in main.encoders())
    return bool(joins or encoding or entities or main.weighted() or not plain_v1)


def mapping_dict(main, joins, n_features, sep, header, encoding=None, entities=None, context=None):
    v2 = needs_version_2(main, joins, encoding, entities)
    m = {"format": MAPPING_FORMAT, "version": 2 if v2 else 1, "fmcli_version": __version__,
         "separator": sep, "header": header, "n_features": n_features,
         "columns": [r.to_dict() for r in main.records]}
    if not v2:
        return m
    m["encoding"] = encoding
    m["joins"] = [{"name": j.name, "path": j.path, "key": j.key, "on": j.on, "separator": j.sep,
                   "header": j.header, "encoding": j.encoding, "columns": [r.to_dict() for r in j.records]}
                  for j in joins]
    if entities:
        m["entities"] = entities
        m["context_columns"] = context
    return m


def _records(cols, n, bad, side):
    if not isinstance(cols, list) or not cols:
        raise bad("no columns")
    out = []
    for c in cols:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise bad("a column without a name")
        role = c.get("role")
        if role in PLAIN_ROLES:
            if (role == "key") != side and role != "drop":
                raise bad(f"column {c['name']!r}: role {role!r} in the {'side' if side else 'main'} table")
            out.append(Plain(c["name"], role))
            continue
        if role not in ENCODERS:
            raise bad(f"column {c['name']!r}: bad role {role!r}")
        try:
            e = ENCODERS[role].from_dict(c, n)
            if role != "timestamp":
                g = c.get("group")
                if not isinstance(g, int) or isinstance(g, bool) or g < 0:
                    raise BadRecord("bad group")
                e.group = g
        except BadRecord as why:
            raise bad(f"column {c['name']!r}: {why}") from None
        out.append(e)
    return out


def _separator(sep):
    return sep in set(SEPARATORS.values()) or (isinstance(sep, str) and len(sep) == 1)


def read_mapping_json(path):
    """The JSON object of the mapping file `path`, checked to be an fmcli convert mapping (its
    'format'); the fields are checked by whoever reads them. Raises InputError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(path, None, "mapping file not found") from None
    except OSError as e:
        raise InputError(path, None, f"cannot read mapping file: {e.strerror or e}") from None
    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError(path, None, "not a valid fmcli convert mapping: not JSON") from None
    if not isinstance(m, dict) or m.get("format") != MAPPING_FORMAT:
        raise InputError(path, None, f"not a valid fmcli convert mapping: 'format' is not {MAPPING_FORMAT!r}")
    return m


def load_mapping(path):
    """(main TablePlan, [side TablePlans], n_features, mapping dict); every field is checked."""
    m = read_mapping_json(path)

    def bad(why):
        return InputError(path, None, f"not a valid fmcli convert mapping: {why}")

    if m.get("version") not in MAPPING_VERSIONS:
        raise bad(f"version {m.get('version')!r} (this fmcli reads versions 1 and 2)")
    n = m.get("n_features")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_FEATURES:
        raise bad("bad n_features")
    sep, header = m.get("separator"), m.get("header")
    if not _separator(sep):
        raise bad("bad separator")
    if not isinstance(header, bool):
        raise bad("bad header")
    encoding = m.get("encoding")
    if encoding is not None and not isinstance(encoding, str):
        raise bad("bad encoding")
    main = TablePlan(_records(m.get("columns"), n, bad, side=False), sep=sep, header=header, encoding=encoding)
    if sum(isinstance(r, Plain) and r.role == "target" for r in main.records) != 1:
        raise bad("there must be exactly one target column")
    if sum(isinstance(r, Plain) and r.role == "weight" for r in main.records) > 1:
        raise bad("more than one weight column")
    joins = []
    raw_joins = m.get("joins", []) if m["version"] == 2 else []
    if not isinstance(raw_joins, list):
        raise bad("bad joins")
    main_names = {f for r in main.records for f in r.fields}
    for j in raw_joins:
        if not isinstance(j, dict) or not all(isinstance(j.get(k), str) for k in ("name", "path", "key", "on")):
            raise bad("a join without name, path, key or on")
        if j["on"] not in main_names:
            raise bad(f"join {j['name']!r}: no main column {j['on']!r}")
        if not _separator(j.get("separator")) or not isinstance(j.get("header"), bool) \
                or not (j.get("encoding") is None or isinstance(j.get("encoding"), str)):
            raise bad(f"join {j['name']!r}: bad separator, header or encoding")
        records = _records(j.get("columns"), n, bad, side=True)
        keys = [r for r in records if r.role == "key"]
        if len(keys) != 1 or keys[0].name != j["key"]:
            raise bad(f"join {j['name']!r}: its key column must be {j['key']!r}, once")
        joins.append(TablePlan(records, j["name"], j["path"], j["key"], j["on"], j["separator"], j["header"],
                               j.get("encoding")))
    seen = sorted(f for t in [main] + joins for e in t.encoders() for f, _ in e.feature_groups())
    if seen != list(range(n)):
        raise bad(f"{len(seen)} feature ids for n_features={n}" if len(seen) != n else "repeated feature ids")
    return main, joins, n, m

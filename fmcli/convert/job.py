"""Running `fmcli convert`: reading the main table and the side tables joined onto it, typing
their columns from the options, fitting the encoders (a new conversion) or loading them from a
mapping (`--use-mapping`), encoding every row, and writing everything once all converted."""

import json
import re
from dataclasses import dataclass, field

from fmcli.convert import encoders as enc
from fmcli.convert.mapping import MAX_FEATURES, PLAIN_ROLES, TablePlan, load_mapping, mapping_dict
from fmcli.convert.relations import PARTS, entity, relation_files, relation_rows, side_keys
from fmcli.convert.table import (parse_encoding, parse_number, parse_separator, read_table, resolve,
                                 split_list, why_not_number)
from fmcli.errors import InputError, UsageError
from fmcli.io.atomic import atomic_output, check_distinct, check_writable, publish_together
from fmcli.io.weights import BadWeight, parse_weight

JOIN_OPTIONS = ("sep", "header", "encoding", "name")
DEFAULT_TIME_PARTS = "weekday+hour+days7"


@dataclass
class ConvertJob:
    """What `fmcli convert` was asked to do (the CLI fills it from the options)."""

    inputs: list
    outputs: list = None            # one per input; default <input>.libfm
    sep: str = "auto"               # a key of SEPARATORS, any single character, or "auto"
    header: bool = None             # None: decide (see _decide_header)
    target: str = None              # header name or 0-based index
    categorical: list = field(default_factory=list)
    numeric: list = field(default_factory=list)
    drop: list = field(default_factory=list)
    meta: str = None                # groups file to write
    mapping: str = None             # mapping file to write
    use_mapping: str = None         # mapping file to read (new data)
    no_target: bool = False         # rows have no target column (data to predict)
    encoding: str = None            # of the inputs; None: UTF-8, checked only in the fields used
    joins: list = field(default_factory=list)        # FILE:KEY=MAINCOL[:opt=value...]
    sets: list = field(default_factory=list)         # COL[:SEP]
    set_columns: list = field(default_factory=list)  # NAME=FIRST..LAST
    set_norm: str = "1"
    standardize: list = field(default_factory=list)
    log1p: list = field(default_factory=list)
    buckets: list = field(default_factory=list)      # COL:N
    tfidf: list = field(default_factory=list)
    timestamp: list = field(default_factory=list)    # COL[:PARTS]
    user: str = None
    item: str = None
    relations: str = None           # BASE of the implicit-feedback relation files
    min_rating: float = None        # keep only the rows whose target is >= this (positives, -method bpr)
    weight: str = None              # the column of the rows' weights, written to OUT.weights


# ---------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------

def parse_join(spec):
    """FILE:KEY=MAINCOL[:sep=S][:header=yes|no][:encoding=E][:name=N] -> TablePlan (no records)."""
    parts = spec.split(":")
    opts = {}
    while parts and "=" in parts[-1] and parts[-1].split("=", 1)[0] in JOIN_OPTIONS:
        k, v = parts.pop().split("=", 1)
        opts[k] = v
    if len(parts) < 2 or "=" not in parts[-1] or not parts[-1].split("=", 1)[0] or not parts[-1].split("=", 1)[1]:
        raise UsageError(f"--join {spec!r}: expected FILE:KEY=MAINCOL (the side table's key column = the "
                         "main column holding it), then optionally :sep=S :header=yes|no :encoding=E :name=N")
    key, on = parts.pop().split("=", 1)
    path = ":".join(parts)
    if not path:
        raise UsageError(f"--join {spec!r}: no file")
    header = opts.get("header")
    if header is not None:
        if header not in ("yes", "no"):
            raise UsageError(f"--join {spec!r}: header=yes or header=no")
        header = header == "yes"
    base = re.sub(r"\.(gz|bz2|xz)$", "", path.replace("\\", "/").rsplit("/", 1)[-1])
    name = opts.get("name", base)
    if not name or "." in opts.get("name", ""):
        raise UsageError(f"--join {spec!r}: name= must be a plain word (its columns are NAME.COL)")
    return TablePlan([], name=name, path=path, key=key, on=on,
                     sep=parse_separator(opts.get("sep", "auto"), f"--join {spec!r}: sep="), header=header,
                     encoding=parse_encoding(opts["encoding"]) if "encoding" in opts else None)


def _split_suffix(spec, what, main_resolves):
    """COL:VALUE -> (COL, VALUE); a spec that is a whole column name has no VALUE."""
    if ":" not in spec or main_resolves(spec):
        return spec, None
    col, value = spec.rsplit(":", 1)
    if not col:
        raise UsageError(f"{what} {spec!r}: no column")
    return col, value


class _Columns:
    """The columns of the main table (0) and the side tables (1...): names and resolution."""

    def __init__(self, main_names, joins):
        self.names = [main_names] + [[f"{j.name}.{n}" for n in j.names] for j in joins]
        self.joins = joins

    def has(self, spec):
        return any(spec in n for n in self.names)

    def resolve(self, spec, what):
        """(table number, column index) of a main column (name or index) or a side column
        (NAME.COL, COL a header name or index)."""
        for t, names in enumerate(self.names):
            if spec in names:
                return t, names.index(spec)
        for t, j in enumerate(self.joins, start=1):
            if spec.startswith(j.name + "."):
                return t, resolve(spec[len(j.name) + 1:], j.names, f"{what} {j.name}.")
        if not self.joins:
            return 0, resolve(spec, self.names[0], what)
        if re.fullmatch(r"\d+", spec):
            return 0, resolve(spec, self.names[0], what)
        every = [n for names in self.names for n in names]
        raise UsageError(f"{what} {spec!r}: no such column (columns: {', '.join(every)})")


def _decide_header(job, first, target):
    """Is the first row a header? Explicit --header/--no-header wins; otherwise it is one
    when the target is given by a name, or when its target field is not a number."""
    if job.header is not None:
        return job.header
    if target is None:
        return False
    if not re.fullmatch(r"\d+", target):
        return True
    i = int(target)
    return i < len(first) and parse_number(first[i]) is None


def _numeric_everywhere(rows_lists, i):
    for rows in rows_lists:
        for row in rows:
            v = row[i] if i < len(row) else ""
            if v and parse_number(v) is None:
                return False
    return True


def _plan_new(job, main_names, main_rows, joins, side_rows):
    """The records (column order) of the main table and of every side table, from the options."""
    cols = _Columns(main_names, joins)
    roles, extra = {}, {}

    def assign(where, role, option, value=None):
        if where in roles and roles[where][0] != role:
            name = cols.names[where[0]][where[1]]
            raise UsageError(f"column {name} cannot be both {roles[where][0]} ({roles[where][1]}) and {role} "
                             f"({option})")
        roles[where] = (role, option)
        if value is not None:
            extra[where] = value

    if job.target is not None:   # None: implicit (user, item) pairs, each row a positive
        assign(cols.resolve(job.target, "--target"), "target", "--target")
    if job.weight is not None:
        where = cols.resolve(job.weight, "--weight")
        if where[0] != 0:
            raise UsageError(f"--weight {job.weight}: must be a column of the main table (a row's weight)")
        assign(where, "weight", "--weight")
    for t, j in enumerate(joins, start=1):
        assign((t, resolve(j.key, j.names, f"--join {j.path}: key")), "key", "--join")
        j.key = cols.names[t][resolve(j.key, j.names, "--join")]
        t_on, i_on = cols.resolve(j.on, f"--join {j.path}: main column")
        if t_on != 0:
            raise UsageError(f"--join {j.path}: {j.on} is not a column of the main table")
        j.on = main_names[i_on]
    for option, role in (("--drop", "drop"), ("--categorical", "categorical"), ("--numeric", "numeric")):
        for spec in split_list(getattr(job, option[2:])):
            assign(cols.resolve(spec, option), role, option)
    for option in ("--standardize", "--log1p"):
        for spec in split_list(getattr(job, option[2:])):
            where = cols.resolve(spec, option)
            assign(where, "numeric", option)
            extra.setdefault(where, set()).add(option[2:])
    for spec in job.buckets:
        col, n = _split_suffix(spec, "--buckets", cols.has)
        if n is None or not re.fullmatch(r"\d+", n) or int(n) < 2:
            raise UsageError(f"--buckets {spec!r}: expected COL:N with N >= 2 buckets")
        assign(cols.resolve(col, "--buckets"), "bucket", "--buckets", int(n))
    for spec in job.sets:
        col, sep = _split_suffix(spec, "--set", cols.has)
        sep = "|" if sep is None else sep
        if not sep:
            raise UsageError(f"--set {spec!r}: an empty separator")
        assign(cols.resolve(col, "--set"), "set", "--set", sep)
    for spec in split_list(job.tfidf):
        assign(cols.resolve(spec, "--tfidf"), "tfidf", "--tfidf")
    for spec in job.timestamp:
        col, parts = _split_suffix(spec, "--timestamp", cols.has)
        try:
            parts = enc.parse_time_parts(parts or DEFAULT_TIME_PARTS)
        except ValueError as e:
            raise UsageError(f"--timestamp {spec!r}: bad part {e} (parts: day, weekday, hour, daysN, "
                             "joined by +)") from None
        assign(cols.resolve(col, "--timestamp"), "timestamp", "--timestamp", parts)
    indicator_sets = {}
    for spec in job.set_columns:
        m = re.fullmatch(r"([^=]+)=(.+)\.\.(.+)", spec)
        if not m:
            raise UsageError(f"--set-columns {spec!r}: expected NAME=FIRST..LAST")
        name = m.group(1).strip()
        (t1, a), (t2, b) = cols.resolve(m.group(2), "--set-columns"), cols.resolve(m.group(3), "--set-columns")
        if t1 != t2 or b < a:
            raise UsageError(f"--set-columns {spec!r}: FIRST and LAST must be columns of one table, in order")
        if cols.has(name) or name in [n for n, _ in indicator_sets.values()]:
            raise UsageError(f"--set-columns {spec!r}: {name} is already the name of a column")
        for i in range(a, b + 1):
            assign((t1, i), f"part of set {name}", "--set-columns")
        indicator_sets[(t1, a)] = (name, [cols.names[t1][i] for i in range(a, b + 1)])
    for spec in (job.user, job.item):
        if spec is not None and cols.resolve(spec, "--user/--item")[0] != 0:
            raise UsageError(f"--user/--item {spec}: must be a column of the main table")

    tables = []
    for t, names in enumerate(cols.names):
        rows = main_rows if t == 0 else [side_rows[t - 1]]
        records = []
        for i, name in enumerate(names):
            role, _ = roles.get((t, i), (None, None))
            if role is None:
                role = "numeric" if _numeric_everywhere(rows, i) else "categorical"
                records.append((enc.Numeric if role == "numeric" else enc.Categorical)(name, inferred=True))
            elif role in PLAIN_ROLES:
                records.append(enc.Plain(name, role))
            elif role == "categorical":
                records.append(enc.Categorical(name))
            elif role == "numeric":
                flags = extra.get((t, i), set())
                records.append(enc.Numeric(name, log1p="log1p" in flags, standardize="standardize" in flags))
            elif role == "bucket":
                records.append(enc.Buckets(name, extra[(t, i)]))
            elif role == "set":
                records.append(enc.ValueSet(name, extra[(t, i)], job.set_norm))
            elif role == "tfidf":
                records.append(enc.TfIdf(name))
            elif role == "timestamp":
                records.append(enc.Timestamp(name, extra[(t, i)]))
            elif (t, i) in indicator_sets:       # the set stands where its first column was
                records.append(enc.Indicators(*indicator_sets[(t, i)], job.set_norm))
        tables.append(records)
    return tables


# ---------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------

def _check_field_counts(table, skip):
    rows, numbers = table.rows, table.line_numbers
    n_fields = len(rows[0])
    for r in range(1 if skip else 0, len(rows)):
        if len(rows[r]) != n_fields:
            raise InputError(table.name, numbers[r], f"{len(rows[r])} fields, expected {n_fields} "
                                                     f"(as in line {numbers[0]})")


def _positions(records, names, table_name, has_header, no_target, n_fields, side):
    """Field index of each field of each record in a table read with a mapping (by name when
    the table has a header; else all the mapping's columns in order, or those it uses)."""
    fields = [(f, r) for r in records for f in r.fields]
    absent = {f for f, r in fields if no_target and r.role in ("target", "weight")}   # rows to predict
    pos = {}
    if has_header:
        for f, r in fields:
            if f in names and f not in absent:
                pos[f] = names.index(f)
            elif r.role == "drop" or f in absent:
                pos[f] = None
            elif r.role == "target":
                raise InputError(table_name, None, f"no target column {f!r} in the header "
                                                   f"(--no-target converts rows without targets)")
            else:
                raise InputError(table_name, None, f"no column {f!r} in the header (the mapping has it)")
    else:
        present = [(f, r) for f, r in fields if f not in absent]
        used = [(f, r) for f, r in present if r.role != "drop"]
        if n_fields == len(present):
            layout = present
        elif n_fields == len(used):
            layout = used
        else:
            what = "" if side else " without the target column" if no_target else " with the target column"
            counts = f"{len(present)}" if len(used) == len(present) else \
                f"{len(present)} (or {len(used)} without dropped ones)"
            raise InputError(table_name, None, f"{n_fields} fields per row, but the mapping has {counts} "
                                               f"columns{what}")
        pos = {f: k for k, (f, _) in enumerate(layout)}
    return [[pos.get(f) for f in r.fields] for r in records]


def _values(table, skip, record, pos):
    """The value tuples of one record over a table's data rows (UTF-8 checked where used)."""
    if any(p is None for p in pos):
        return [("",) * len(pos)] * (len(table.rows) - skip)
    out = []
    for r in range(1 if skip else 0, len(table.rows)):
        row = table.rows[r]
        out.append(tuple(table.check_text(r, row[p], f) for p, f in zip(pos, record.fields)))
    return out


class _Encoded:
    """A table's values per record and the pairs of each row (after fitting)."""

    def __init__(self, table, skip, records, positions, keys=()):
        """keys: names of the columns whose values are join keys (read even when dropped)."""
        self.table, self.skip, self.records = table, skip, records
        self.values = {id(r): _values(table, skip, r, p) for r, p in zip(records, positions)
                       if not isinstance(r, enc.Plain) or r.role in ("target", "key", "weight")
                       or r.name in keys}

    def line(self, k):
        return self.table.line_numbers[k + (1 if self.skip else 0)]

    def pairs(self, unknown):
        """Per data row: the sorted (id, value) pairs of its encoders; unknown values counted."""
        out = None
        for r in self.records:
            if isinstance(r, enc.Plain):
                continue
            vals = self.values[id(r)]
            if out is None:
                out = [[] for _ in vals]
            for k, v in enumerate(vals):
                try:
                    p, n_unknown = r.encode(v)
                except enc.BadValue as why:
                    raise InputError(self.table.name, self.line(k), f"column {r.name}: {why}") from None
                out[k].extend(p)
                if n_unknown:
                    unknown[r.name] = unknown.get(r.name, 0) + n_unknown
        return out if out is not None else [[] for _ in range(len(self.table.rows) - self.skip)]

    def column(self, name):
        rec = next(r for r in self.records if r.name == name)
        return [v[0] for v in self.values[id(rec)]]

    def weights(self):
        """The text of each row's weight (its --weight column), checked as `fmcli train -weights`
        checks it."""
        rec = next(r for r in self.records if r.role == "weight")
        out = []
        for k, (text,) in enumerate(self.values[id(rec)]):
            if not text:
                raise InputError(self.table.name, self.line(k), f"column {rec.name}: missing weight")
            try:
                out.append(enc.fmt(parse_weight(text)))
            except BadWeight as why:
                raise InputError(self.table.name, self.line(k), f"column {rec.name}: {why}") from None
        return out


def _side_pairs(encoded, join, unknown):
    """key -> sorted pairs of each side-table row; a repeated or empty key is an error."""
    keys = encoded.column(join.key)
    rows = encoded.pairs(unknown)
    out, first = {}, {}
    for k, (key, pairs) in enumerate(zip(keys, rows)):
        if not key:
            raise InputError(encoded.table.name, encoded.line(k), f"column {join.key}: empty key")
        if key in out:
            raise InputError(encoded.table.name, encoded.line(k),
                             f"column {join.key}: key {key[:40]!r} repeated (first on line {first[key]})")
        out[key] = sorted(pairs)
        first[key] = encoded.line(k)
    return out


def _encode_main(encoded, joins, side_pairs, stats):
    """libFM text lines of one main table."""
    target = next((r for r in encoded.records if isinstance(r, enc.Plain) and r.role == "target"), None)
    targets = encoded.values.get(id(target)) if target else None
    rows = encoded.pairs(stats["unknown"])
    on = {j.name: encoded.column(j.on) for j in joins}
    lines = []
    has_target = target is not None and not stats["no_target"]
    for k, pairs in enumerate(rows):
        parts = []
        if has_target:
            text = targets[k][0]
            if not text:
                raise InputError(encoded.table.name, encoded.line(k), "missing target")
            v = parse_number(text)
            if v is None:
                raise InputError(encoded.table.name, encoded.line(k),
                                 f"bad target {text[:40]!r} ({why_not_number(text)})")
            parts.append(enc.fmt(v))
        elif stats.get("implicit"):
            parts.append("1")    # an interaction without a rating: a positive
        for j, sp in zip(joins, side_pairs):
            key = on[j.name][k]
            if key:
                side = sp.get(key)
                if side is None:
                    stats["no_side_row"][j.name] = stats["no_side_row"].get(j.name, 0) + 1
                else:
                    pairs.extend(side)
        if not pairs and not has_target:
            # no target and no known feature: "0:0" keeps the row (and the order of the
            # predictions) without contributing anything, as an empty line cannot
            stats["empty"] += 1
            pairs = [(0, 0.0)]
        pairs.sort()
        parts.extend(f"{i}:{enc.fmt(v)}" for i, v in pairs)
        lines.append(" ".join(parts))
    return lines


# ---------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------

def _keep_positives(job, texts, weights, relation_texts, stats_per):
    """--min-rating: each -in's rows (their weights, and their relation rows R.train, R.test,
    R.validation) whose target is >= the threshold; the relations themselves keep every row of
    the first -in (each rating is implicit feedback). Returns (texts, weights)."""
    out, out_weights = [], []
    for n, (lines, stats) in enumerate(zip(texts, stats_per)):
        keep = [float(line.split(" ", 1)[0]) >= job.min_rating for line in lines]
        stats["below"] = keep.count(False)
        out.append([line for line, k in zip(lines, keep) if k])
        if weights:
            out_weights.append([w for w, k in zip(weights[n], keep) if k])
        if job.relations and n < len(PARTS):
            for side in ("users", "items"):
                path = f"{job.relations}.{side}.{'test' if job.use_mapping else PARTS[n]}"
                if path in relation_texts:
                    links = relation_texts[path].splitlines()
                    relation_texts[path] = "".join(x + "\n" for x, k in zip(links, keep) if k)
    return out, out_weights


def _check_paths(job, outputs, written):
    """written: the other (option, path) pairs the job writes (relations, weights)."""
    inputs = list(job.inputs)
    for p in (job.meta, job.mapping):
        if p == "-":
            raise UsageError("--meta and --mapping need file names, not - (stdout carries only data)")
    outs = [("-out", p) for p in outputs] + [("-meta", job.meta), ("--mapping", job.mapping)] + written
    check_distinct([("-in", p) for p in inputs] + [("--join", parse_join(s).path) for s in job.joins]
                   + [("--use-mapping", job.use_mapping)], outs)
    for what, p in outs:
        check_writable(p, what)


def _weight_paths(outputs):
    """Where the rows' weights go: OUT.weights beside each -out (the -weights of fmcli train)."""
    if "-" in outputs:
        raise UsageError("--weight writes each -out's row weights to OUT.weights: give -out a file name, not -")
    return [o + ".weights" for o in outputs]


def _relation_paths(job):
    """The relation files to write: all of them for a new conversion; for new rows converted
    with a mapping, only the links R.test that `fmcli predict -relation` reads."""
    if not job.relations:
        return []
    exts = ("test",) if job.use_mapping else ("x", "groups") + PARTS[:len(job.inputs)]
    return [f"{job.relations}.{side}.{ext}" for side in ("users", "items") for ext in exts]


def _mapped_links(job, mapping, path, encoded):
    """{R.test: text} for new rows: each row's relation row from the mapping's entities (the last,
    empty row for keys the mapping does not know)."""
    ents = mapping.get("entities") or {}
    out = {}
    for role, side in (("user", "users"), ("item", "items")):
        rel = (ents.get(role) or {}).get("relation")
        if not isinstance(rel, dict) or not isinstance(rel.get("rows"), dict):
            raise InputError(path, None, "--relations: the mapping has no relation rows (it was written "
                                         "without --relations)")
        if rel.get("name") != f"{job.relations}.{side}":
            raise UsageError(f"--relations {job.relations}: the mapping's relations are {rel.get('name')!r} and "
                             f"its pair; give that BASE")
        rows, column = rel["rows"], ents[role].get("column")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(rows) for v in rows.values()) \
                or not any(column in r.fields for r in encoded.records):
            raise InputError(path, None, f"not a valid fmcli convert mapping: bad {role} relation rows")
        out[f"{job.relations}.{side}.test"] = "".join(f"{rows.get(k, len(rows))}\n"
                                                      for k in encoded.column(column))
    return out


FIXED_BY_MAPPING = ("target", "categorical", "numeric", "drop", "mapping", "sets", "set_columns", "standardize",
                    "log1p", "buckets", "tfidf", "timestamp", "user", "item", "weight")


def _read_side(j, job, mapped):
    if j.encoding is None and not mapped:    # the inputs' encoding, recorded with the join
        j.encoding = parse_encoding(job.encoding)
    t, used = read_table(j.path, j.sep, j.encoding)
    if not t.rows:
        raise InputError(t.name, None, "no data rows (the file is empty or has only blank lines and comments)")
    j.sep = used
    if j.header is None:
        j.header = not re.fullmatch(r"\d+", j.key)
    if j.header and len(t.rows) == 1:
        raise InputError(t.name, None, "no data rows after the header line (header=no if the first line "
                                       "holds data)")
    return t


def write_outputs(files):
    """Write every output ((path, text)), all of them or none; all were built first. Standard
    output goes last: it cannot wait for the files' renames."""
    with publish_together():
        for path, text in sorted(files, key=lambda pair: pair[0] == "-"):
            with atomic_output(path) as f:
                f.write(text)


def run_convert(job, console=None):
    """Convert every input; returns a summary dict (rows per output, n_features, unknown counts)."""
    from fmcli.console import Console

    console = console or Console()
    inputs = list(job.inputs)
    if not inputs:
        raise UsageError("-in: give at least one input file")
    if inputs.count("-") > 1:
        raise UsageError("-in -: standard input can be read only once")
    outputs = list(job.outputs or [])
    if not outputs:
        if "-" in inputs:
            raise UsageError("-in - needs -out (the name of the output)")
        outputs = [p + ".libfm" for p in inputs]
    if len(outputs) != len(inputs):
        raise UsageError(f"{len(inputs)} -in files but {len(outputs)} -out files: give one -out per -in, in order")
    if outputs.count("-") > 1:
        raise UsageError("-out -: standard output can take only one output")
    if job.set_norm not in enc.SET_NORMS:
        raise UsageError(f"--set-norm {job.set_norm!r}: 1, n or sqrt")
    if job.relations and job.use_mapping:
        if len(inputs) != 1:
            raise UsageError("--relations with --use-mapping: one -in (its links are written as R.test, "
                             "which fmcli predict -relation reads)")
    elif job.relations:
        if not (job.user and job.item):
            raise UsageError("--relations needs --user COL and --item COL")
        if len(inputs) > len(PARTS):
            raise UsageError(f"--relations: at most {len(PARTS)} -in files (train, test, validation)")
    sep = parse_separator(job.sep)
    encoding = parse_encoding(job.encoding)
    new_joins = [parse_join(s) for s in job.joins]
    if len({j.name for j in new_joins}) != len(new_joins):
        raise UsageError("--join: two side tables have the same name (name=N tells them apart)")
    if job.use_mapping:
        given = ["--set" if o == "sets" else "--" + o.replace("_", "-") for o in FIXED_BY_MAPPING
                 if getattr(job, o)] + (["--set-norm"] if job.set_norm != "1" else [])
        if given:
            raise UsageError(f"{', '.join(given)}: the columns come from --use-mapping {job.use_mapping}")
        mapped = load_mapping(job.use_mapping)
        weighted = mapped[0].weighted() and not job.no_target
    else:
        weighted = job.weight is not None
    weight_paths = _weight_paths(outputs) if weighted else []
    _check_paths(job, outputs, [("--relations", p) for p in _relation_paths(job)]
                 + [("--weight", p) for p in weight_paths])
    if job.use_mapping:
        main, joins, n_features, mapping_read = mapped
        if sep == "auto":
            sep = main.sep
        if encoding is None:
            encoding = main.encoding
        by_name = {j.name: j for j in joins}
        for nj in new_joins:          # a side table given again replaces the recorded one
            old = by_name.get(nj.name)
            if old is None:
                raise UsageError(f"--join {nj.path}: the mapping has no side table named {nj.name!r} "
                                 f"(it has: {', '.join(by_name) or 'none'})")
            old.path = nj.path
            old.sep = nj.sep if nj.sep != "auto" else old.sep
            old.header = nj.header if nj.header is not None else old.header
            old.encoding = nj.encoding or old.encoding
    else:
        if job.no_target:
            raise UsageError("--no-target is for new data converted with --use-mapping")
        if job.target is None and not (job.user and job.item):
            raise UsageError("--target is required (a header name or a 0-based column index), unless the rows "
                             "are implicit feedback: --user COL --item COL without --target writes target 1")
        if job.target is None and job.min_rating is not None:
            raise UsageError("--min-rating needs --target (the rating column)")
        main, joins = None, new_joins
    if job.min_rating is not None and job.no_target:
        raise UsageError("--min-rating keeps rows by their target: not with --no-target")

    tables = []
    for path in inputs:
        t, used = read_table(path, sep, encoding)
        if not t.rows:
            raise InputError(t.name, None, "no data rows (the file is empty or has only blank lines and comments)")
        sep = used  # every input uses the separator found in the first one
        tables.append(t)
    side_tables = [_read_side(j, job, mapped=main is not None) for j in joins]

    if main is None:
        first = tables[0].rows[0]
        header = _decide_header(job, first, job.target)
        names = list(first) if header else [str(i) for i in range(len(first))]
        for t, has, cols in [(tables[0], header, names)] + [(t, j.header, t.rows[0]) for j, t in
                                                            zip(joins, side_tables)]:
            if has and len(set(cols)) != len(cols):
                dup = sorted({n for n in cols if cols.count(n) > 1})
                raise InputError(t.name, t.line_numbers[0], f"repeated column name(s) in the header: "
                                                            f"{', '.join(dup)}")
        for t in tables[1:]:
            if header and t.rows[0] != tables[0].rows[0]:
                raise InputError(t.name, t.line_numbers[0], "its header differs from the first input's")
        for j, t in zip(joins, side_tables):
            j.names = list(t.rows[0]) if j.header else [str(i) for i in range(len(t.rows[0]))]
        skip = [header] * len(tables)
        main_rows = [t.rows[1 if s else 0:] for t, s in zip(tables, skip)]
        side_rows = [t.rows[1 if j.header else 0:] for j, t in zip(joins, side_tables)]
        planned = _plan_new(job, names, main_rows, joins, side_rows)
        main = TablePlan(planned[0], sep=sep, header=header, encoding=encoding, names=names)
        for j, records in zip(joins, planned[1:]):
            j.records = records
        positions = [[[names.index(f) for f in r.fields] for r in main.records]] * len(tables)
        side_positions = [[[j.names.index(f[len(j.name) + 1:]) for f in r.fields] for r in j.records]
                          for j in joins]
        header_flag = header
        fitting = True
    else:
        header_flag = main.header if job.header is None else job.header
        skip, positions = [], []
        for t in tables:
            positions.append(_positions(main.records, t.rows[0] if header_flag else None, t.name, header_flag,
                                        job.no_target, None if header_flag else len(t.rows[0]), side=False))
            skip.append(header_flag)
        side_positions = []
        for j, t in zip(joins, side_tables):
            names = [f"{j.name}.{n}" for n in t.rows[0]] if j.header else None
            side_positions.append(_positions(j.records, names, t.name, j.header, False,
                                             None if j.header else len(t.rows[0]), side=True))
        fitting = False

    for t, s in zip(tables, skip):
        if len(t.rows) == (1 if s else 0):
            raise InputError(t.name, None, "no data rows after the header line (--no-header if the first "
                                           "line holds data)")
        _check_field_counts(t, s)
    for j, t in zip(joins, side_tables):
        _check_field_counts(t, j.header)
    join_keys = {j.on for j in joins}
    main_encoded = [_Encoded(t, s, main.records, p, join_keys) for t, s, p in zip(tables, skip, positions)]
    side_encoded = [_Encoded(t, j.header, j.records, p) for j, t, p in zip(joins, side_tables, side_positions)]

    if fitting:
        next_id, group = 0, 0
        for records, encoded in [(main.records, main_encoded)] + [(j.records, [e]) for j, e in
                                                                     zip(joins, side_encoded)]:
            for r in records:
                if not isinstance(r, enc.Plain):
                    values = [v for e in encoded for v in e.values[id(r)]]
                    next_id, group = r.fit(values, next_id, group)
        n_features = next_id
        if n_features > MAX_FEATURES:
            raise UsageError(f"{n_features} features: more than fmcli supports ({MAX_FEATURES})")

    side_unknown = [{} for _ in joins]
    side_pairs = [_side_pairs(e, j, u) for e, j, u in zip(side_encoded, joins, side_unknown)]
    texts, stats_per = [], []
    for e in main_encoded:
        stats = {"unknown": {}, "empty": 0, "no_side_row": {}, "no_target": job.no_target,
                 "implicit": job.target is None and not job.use_mapping}
        texts.append(_encode_main(e, joins, side_pairs, stats))
        stats_per.append(stats)

    entities = context = None
    relation_texts = {}
    if job.user or job.item:
        entities, context = {}, []
        sides = {}
        for role, spec in (("user", job.user), ("item", job.item)):
            if spec is None:
                continue
            i = resolve(spec, main.names, f"--{role}")
            rec = next(r for r in main.records if main.names[i] in r.fields)
            if not isinstance(rec, enc.Categorical):
                raise UsageError(f"--{role} {spec}: the {role} column must be categorical (it is {rec.role}; "
                                 "list it in --categorical)")
            sides[role] = rec
            entities[role] = entity(rec, joins, side_pairs)
        if job.user and job.item and sides["user"] is sides["item"]:
            raise UsageError("--user and --item name the same column")
        side_names = {r.name for r in sides.values()}
        context = [r.name for r in main.encoders() if r.name not in side_names] + \
                  [f"{j.name}.*" for j in joins if j.on not in side_names]
        if job.relations:
            u, i = sides["user"], sides["item"]
            user_keys, item_keys = side_keys(u, joins, side_pairs), side_keys(i, joins, side_pairs)
            link_keys = [list(zip(e.column(u.name), e.column(i.name))) for e in main_encoded]
            relation_texts = relation_files(job.relations, link_keys[0], user_keys, item_keys, link_keys)
            entities["user"]["relation"], entities["item"]["relation"] = relation_rows(job.relations, user_keys,
                                                                                        item_keys)

    if job.relations and job.use_mapping:
        relation_texts = _mapped_links(job, mapping_read, job.use_mapping, main_encoded[0])
    weights = [e.weights() for e in main_encoded] if weighted else []
    if job.min_rating is not None:
        texts, weights = _keep_positives(job, texts, weights, relation_texts, stats_per)
    files = list(zip(outputs, ("\n".join(lines) + "\n" for lines in texts)))
    files.extend((p, "".join(w + "\n" for w in ws)) for p, ws in zip(weight_paths, weights))
    if job.meta:
        groups = [None] * n_features
        for t in [main] + joins:
            for r in t.encoders():
                for fid, g in r.feature_groups():
                    groups[fid] = g
        files.append((job.meta, "".join(f"{g}\n" for g in groups)))
    if job.mapping:   # ASCII whatever the locale
        record = mapping_dict(main, joins, n_features, sep, header_flag, encoding, entities, context)
        if job.min_rating is not None:
            record["min_rating"] = job.min_rating    # the rows are positives (fmcli train -method bpr)
        files.append((job.mapping, json.dumps(record) + "\n"))
    files.extend((p, relation_texts[p]) for p in _relation_paths(job))
    # every input was read and checked: now write
    write_outputs(files)

    summary = []
    for t, path, lines, stats in zip(tables, outputs, texts, stats_per):
        where = "stdout" if path == "-" else path
        console.info(f"Wrote {len(lines)} rows to {where} ({n_features} features)")
        if stats["unknown"]:
            total = sum(stats["unknown"].values())
            detail = ", ".join(f"{k}: {v}" for k, v in stats["unknown"].items())
            console.info(f"{t.name}: {total} unknown value(s) dropped, not in the mapping ({detail})")
        for name, n in stats["no_side_row"].items():
            console.info(f"{t.name}: {n} row(s) have no row in side table {name} (no side features)")
        if stats["empty"]:
            console.info(f"{t.name}: {stats['empty']} row(s) kept no feature; written as '0:0' "
                         f"(contributes nothing) to keep the rows in order")
        if stats.get("below"):
            console.info(f"{t.name}: {stats['below']} row(s) rated below --min-rating {job.min_rating:g} left out")
        summary.append({"input": t.name, "output": path, "rows": len(lines),
                        "unknown": dict(stats["unknown"]), "featureless": stats["empty"]})
    for t, u in zip(side_tables, side_unknown):
        if u:
            detail = ", ".join(f"{k}: {v}" for k, v in u.items())
            console.info(f"{t.name}: {sum(u.values())} unknown value(s) dropped, not in the mapping ({detail})")
    if not job.use_mapping:
        parts = []
        for r in [r for t in [main] + joins for r in t.records]:
            if isinstance(r, enc.Plain):
                parts.append(f"{r.name}: {r.role}")
            else:
                parts.append(f"{r.name}: {r.describe()}" + (" (inferred)" if getattr(r, "inferred", False) else ""))
        console.info("Columns: " + "; ".join(parts))
    if weight_paths:
        console.info(f"Wrote the rows' weights to {', '.join(weight_paths)} (fmcli train -weights)")
    if job.meta:
        console.info(f"Wrote feature groups to {job.meta}")
    if job.mapping:
        console.info(f"Wrote the id mapping to {job.mapping}")
    if job.relations and job.use_mapping:
        console.info(f"Wrote the relation rows of the new rows to {job.relations}.users.test and "
                     f"{job.relations}.items.test (fmcli predict -relation {job.relations}.users,"
                     f"{job.relations}.items)")
    elif job.relations:
        console.info(f"Wrote the relations {job.relations}.users and {job.relations}.items "
                     f"(-relation {job.relations}.users,{job.relations}.items)")
    return {"n_features": n_features, "files": summary, "separator": sep}

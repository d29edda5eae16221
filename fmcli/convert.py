"""`fmcli convert`: delimited files (CSV, TSV, space-separated) to libFM text.

Like libFM's `triple_format_to_libfm.pl`, but with typed columns, a feature-group
file and a reusable id mapping:

- One column is the target (a number). Columns may be dropped.
- A *categorical* column is one-hot encoded: each distinct value gets its own
  feature id, with value 1.
- A *numeric* column gets one feature id, whose value is the number as written
  (not rescaled); a 0 is left out, as in any sparse file.
- A column not listed as either is numeric when every value in it is a number,
  categorical otherwise. Ids such as users and items are numbers too, so list them:
  `--categorical user,item`.
- Feature ids are 0-based and given column by column, in column order; within a
  categorical column in order of first appearance over all inputs, in the order the
  inputs were given. So several inputs (train and test) share one id space.
- The groups file (`--meta`) has one line per feature id: the number of its column
  among the feature columns (0 for the first one). It is the `-meta` of `fmcli train`.
- The mapping file (`--mapping`, JSON) records the separator, the header, every
  column's role and, for categorical ones, the value -> id table, and the number of
  features. `--use-mapping` converts new data with exactly those ids: categorical
  values not in the mapping are dropped (and counted on stderr); no id is added.
  With `--no-target` (rows to predict), a row left without any known feature is
  written as `0:0`, which contributes nothing, so that predictions stay one per row.
- The first row is a header when `--header` says so, or by default when the target
  is given by name or the first row's target field is not a number.

Fields are stripped of surrounding blanks; an empty field is a missing value (no
feature). Blank lines and lines starting with `#` are skipped. Input must be UTF-8
(a byte-order mark is allowed); gzip, bzip2 and xz are recognised by their first
bytes; `-` is standard input. All inputs are read and checked before any output is
written, and every output appears whole or not at all.
"""

import csv
import json
import re
from dataclasses import dataclass, field

from fmcli import __version__
from fmcli.errors import InputError, UsageError
from fmcli.io.atomic import atomic_output, check_distinct, check_writable, publish_together

MAPPING_FORMAT = "fmcli-convert-mapping"
MAPPING_VERSION = 1
SEPARATORS = {",": ",", "comma": ",", "tab": "\t", "\t": "\t", "\\t": "\t", "space": " ", " ": " ",
              ";": ";", "semicolon": ";", "|": "|", "pipe": "|"}
MAX_FEATURES = 2**31 - 1
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FLOAT32_MAX = 3.4028234663852886e38


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


@dataclass
class Column:
    name: str
    role: str                       # "target", "drop", "categorical", "numeric"
    group: int = None               # feature columns only
    ids: dict = None                # categorical: value -> feature id
    id: int = None                  # numeric: its feature id
    inferred: bool = False


# ---------------------------------------------------------------------------
# reading delimited text
# ---------------------------------------------------------------------------

def _open_binary(path):
    """(bytes, name for messages); gzip/bz2/xz detected by magic bytes, as the libFM reader does."""
    from fmcli.io.sources import read_input

    return read_input(path)


def _text_lines(data, name):
    """Yield (line number, text) of the lines that hold data (not blank, not '#')."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise InputError(name, line, "NUL byte: this is not a text file")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(name, number, f"not UTF-8 text (byte {e.start + 1} of the line)") from None
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        yield number, text


def sniff_separator(line):
    """The separator a data line most likely uses: tab, comma, semicolon, pipe, else blanks."""
    for sep in ("\t", ",", ";", "|"):
        if sep in line:
            return sep
    return " "


def parse_separator(text):
    if text is None or text == "auto":
        return "auto"
    if text in SEPARATORS:
        return SEPARATORS[text]
    if len(text) == 1 and text not in "\"\r\n" and not text.isalnum():
        return text
    raise UsageError(f"--sep {text!r}: expected one of , tab space ; | auto, or a single punctuation character")


class _Table:
    """The rows of one input: fields (stripped strings) and their line numbers."""

    def __init__(self, name, lines, sep):
        self.name = name
        self.rows, self.line_numbers = [], []
        if sep == " ":
            for number, text in lines:
                self.rows.append(text.split())
                self.line_numbers.append(number)
            return
        numbers = []

        def feed():
            for number, text in lines:
                numbers.append(number)
                yield text

        if csv.field_size_limit() < (1 << 31) - 1:   # a single field may be as long as the file
            csv.field_size_limit((1 << 31) - 1)
        reader = csv.reader(feed(), delimiter=sep, quotechar='"', strict=True)
        try:
            for fields in reader:
                self.rows.append([f.strip() for f in fields])
                self.line_numbers.append(numbers[-1])
        except csv.Error as e:
            raise InputError(name, numbers[-1] if numbers else None, f"bad quoting: {e}") from None


def read_table(path, sep):
    """(_Table, separator used)."""
    data, name = _open_binary(path)
    lines = list(_text_lines(data, name))
    if sep == "auto":
        sep = sniff_separator(lines[0][1]) if lines else ","
    return _Table(name, lines, sep), sep


# ---------------------------------------------------------------------------
# columns
# ---------------------------------------------------------------------------

def _split_list(value):
    if not value:
        return []
    if isinstance(value, str):
        value = [value]
    return [p.strip() for v in value for p in v.split(",") if p.strip()]


def _parse_number(text):
    """float, or None when `text` is not a plain decimal number within float32's range."""
    if not _NUMBER.fullmatch(text):
        return None
    v = float(text)
    return v if abs(v) <= _FLOAT32_MAX else None


def _why_not_number(text):
    if _NUMBER.fullmatch(text):
        return "out of range for a 32-bit float"
    return "not a number"


def _resolve(spec, names, what):
    """Index of the column named `spec` (a header name or a 0-based index)."""
    if spec in names:
        return names.index(spec)
    if re.fullmatch(r"\d+", spec):
        i = int(spec)
        if i < len(names):
            return i
        raise UsageError(f"{what} {spec}: there are only {len(names)} columns (indices are 0-based)")
    raise UsageError(f"{what} {spec!r}: no such column (columns: {', '.join(names)})")


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
    return i < len(first) and _parse_number(first[i]) is None


def _plan_columns(job, names, tables, skip_first):
    """The columns of a new conversion: roles from the options, the rest inferred."""
    target = _resolve(job.target, names, "--target")
    roles = {target: "target"}
    for option, role in (("--drop", "drop"), ("--categorical", "categorical"), ("--numeric", "numeric")):
        for spec in _split_list(getattr(job, option[2:])):
            i = _resolve(spec, names, option)
            if i in roles and roles[i] != role:
                raise UsageError(f"column {names[i]} cannot be both {roles[i]} ({'--target' if roles[i] == 'target' else '--' + roles[i]}) and {role} ({option})")
            roles[i] = role
    columns = []
    for i, name in enumerate(names):
        role = roles.get(i)
        inferred = role is None
        if inferred:
            numeric = True
            for t, skip in zip(tables, skip_first):
                for row in t.rows[1 if skip else 0:]:
                    v = row[i] if i < len(row) else ""
                    if v and _parse_number(v) is None:
                        numeric = False
                        break
                if not numeric:
                    break
            role = "numeric" if numeric else "categorical"
        columns.append(Column(name=name, role=role, inferred=inferred))
    return columns


def _assign_ids(columns, tables, skip_first):
    """Feature ids column by column; categorical values in order of first appearance."""
    next_id, group = 0, 0
    for i, col in enumerate(columns):
        if col.role not in ("categorical", "numeric"):
            continue
        col.group = group
        group += 1
        if col.role == "numeric":
            col.id = next_id
            next_id += 1
            continue
        ids = {}
        for t, skip in zip(tables, skip_first):
            for row in t.rows[1 if skip else 0:]:
                if i < len(row):
                    v = row[i]
                    if v and v not in ids:
                        ids[v] = next_id + len(ids)
        col.ids = ids
        next_id += len(ids)
    if next_id > MAX_FEATURES:
        raise UsageError(f"{next_id} features: more than fmcli supports ({MAX_FEATURES})")
    return next_id


# ---------------------------------------------------------------------------
# the mapping file
# ---------------------------------------------------------------------------

def mapping_dict(columns, n_features, sep, header):
    cols = []
    for c in columns:
        d = {"name": c.name, "role": c.role}
        if c.role in ("categorical", "numeric"):
            d["group"] = c.group
        if c.role == "numeric":
            d["id"] = c.id
        if c.role == "categorical":
            d["ids"] = c.ids
        cols.append(d)
    return {"format": MAPPING_FORMAT, "version": MAPPING_VERSION, "fmcli_version": __version__,
            "separator": sep, "header": header, "n_features": n_features, "columns": cols}


def load_mapping(path):
    """(columns, n_features, separator, header) from a mapping file; every field is checked."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(path, None, "mapping file not found") from None
    except OSError as e:
        raise InputError(path, None, f"cannot read mapping file: {e.strerror or e}") from None

    def bad(why):
        return InputError(path, None, f"not a valid fmcli convert mapping: {why}")

    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("not JSON") from None
    if not isinstance(m, dict) or m.get("format") != MAPPING_FORMAT:
        raise bad(f"'format' is not {MAPPING_FORMAT!r}")
    if m.get("version") != MAPPING_VERSION:
        raise bad(f"version {m.get('version')!r} (this fmcli reads version {MAPPING_VERSION})")
    n = m.get("n_features")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_FEATURES:
        raise bad("bad n_features")
    sep, header = m.get("separator"), m.get("header")
    if sep not in set(SEPARATORS.values()) and not (isinstance(sep, str) and len(sep) == 1):
        raise bad("bad separator")
    if not isinstance(header, bool):
        raise bad("bad header")
    cols = m.get("columns")
    if not isinstance(cols, list) or not cols:
        raise bad("no columns")
    columns, seen_ids, targets = [], 0, 0
    for c in cols:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise bad("a column without a name")
        role = c.get("role")
        if role not in ("target", "drop", "categorical", "numeric"):
            raise bad(f"column {c['name']!r}: bad role {role!r}")
        col = Column(name=c["name"], role=role)
        targets += role == "target"
        if role in ("categorical", "numeric"):
            g = c.get("group")
            if not isinstance(g, int) or isinstance(g, bool) or g < 0:
                raise bad(f"column {c['name']!r}: bad group")
            col.group = g
        if role == "numeric":
            i = c.get("id")
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
                raise bad(f"column {c['name']!r}: bad feature id")
            col.id = i
            seen_ids += 1
        if role == "categorical":
            ids = c.get("ids")
            if not isinstance(ids, dict) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n for v in ids.values()):
                raise bad(f"column {c['name']!r}: bad value -> id table")
            col.ids = ids
            seen_ids += len(ids)
        columns.append(col)
    if targets != 1:
        raise bad("there must be exactly one target column")
    if seen_ids != n:
        raise bad(f"{seen_ids} feature ids for n_features={n}")
    return columns, n, sep, header


# ---------------------------------------------------------------------------
# converting
# ---------------------------------------------------------------------------

def _fmt(v):
    return "%.9g" % v


def _encode(table, columns, skip_first, positions, stats):
    """libFM text lines of one table. `positions[i]`: field index of column i in a row, or None."""
    out = []
    rows, numbers, name = table.rows, table.line_numbers, table.name
    n_fields = None
    t_pos = next((positions[i] for i, c in enumerate(columns) if c.role == "target"), None)
    plan = [(positions[i], c) for i, c in enumerate(columns)
            if c.role in ("categorical", "numeric") and positions[i] is not None]
    unknown = stats["unknown"]
    for r in range(1 if skip_first else 0, len(rows)):
        row = rows[r]
        if n_fields is None:
            n_fields = len(rows[0]) if skip_first else len(row)
        if len(row) != n_fields:
            raise InputError(name, numbers[r], f"{len(row)} fields, expected {n_fields} (as in line {numbers[0]})")
        parts = []
        if t_pos is not None:
            text = row[t_pos] if t_pos < len(row) else ""
            if not text:
                raise InputError(name, numbers[r], "missing target")
            v = _parse_number(text)
            if v is None:
                raise InputError(name, numbers[r], f"bad target {text[:40]!r} ({_why_not_number(text)})")
            parts.append(_fmt(v))
        pairs = []
        for pos, col in plan:
            text = row[pos]
            if not text:
                continue
            if col.role == "numeric":
                v = _parse_number(text)
                if v is None:
                    hint = "" if _NUMBER.fullmatch(text) else "; list the column in --categorical?"
                    raise InputError(name, numbers[r], f"column {col.name}: bad value {text[:40]!r} "
                                                       f"({_why_not_number(text)}{hint})")
                if v != 0:
                    pairs.append((col.id, _fmt(v)))
            else:
                fid = col.ids.get(text)
                if fid is None:
                    unknown[col.name] = unknown.get(col.name, 0) + 1
                else:
                    pairs.append((fid, "1"))
        if not pairs and t_pos is None:
            # no target and no known feature: "0:0" keeps the row (and the order of the
            # predictions) without contributing anything, as an empty line cannot
            stats["empty"] += 1
            pairs.append((0, "0"))
        parts.extend(f"{i}:{v}" for i, v in pairs)
        out.append(" ".join(parts))
    return out


def _positions_mapped(columns, names, table_name, has_header, no_target, n_fields):
    """Field index of each mapping column in the new data (matched by name with a header)."""
    if has_header:
        pos = []
        for c in columns:
            if c.name in names:
                pos.append(names.index(c.name))
            elif c.role == "drop" or (c.role == "target" and no_target):
                pos.append(None)
            elif c.role == "target":
                raise InputError(table_name, None, f"no target column {c.name!r} in the header "
                                                   f"(--no-target converts rows without targets)")
            else:
                raise InputError(table_name, None, f"no column {c.name!r} in the header (the mapping has it)")
        if no_target:
            pos = [None if c.role == "target" else p for c, p in zip(columns, pos)]
        return pos
    # without a header: all the mapping's columns in order, or only those it uses (no dropped ones)
    present = [c for c in columns if not (no_target and c.role == "target")]
    used = [c for c in present if c.role != "drop"]
    if n_fields == len(present):
        layout = present
    elif n_fields == len(used):
        layout = used
    else:
        what = "without the target column" if no_target else "with the target column"
        counts = f"{len(present)}" if len(used) == len(present) else f"{len(present)} (or {len(used)} without dropped ones)"
        raise InputError(table_name, None, f"{n_fields} fields per row, but the mapping has {counts} "
                                           f"columns {what}")
    return [next((k for k, d in enumerate(layout) if d is c), None) for c in columns]


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
    for p in (job.meta, job.mapping):
        if p == "-":
            raise UsageError("--meta and --mapping need file names, not - (stdout carries only data)")
    check_distinct([("-in", p) for p in inputs] + [("--use-mapping", job.use_mapping)],
                   [("-out", p) for p in outputs] + [("-meta", job.meta), ("--mapping", job.mapping)])
    for p, what in [(o, "-out") for o in outputs] + [(job.meta, "--meta"), (job.mapping, "--mapping")]:
        check_writable(p, what)
    sep = parse_separator(job.sep)
    if job.use_mapping:
        given = [o for o, v in (("--target", job.target), ("--categorical", job.categorical),
                                ("--numeric", job.numeric), ("--drop", job.drop), ("--mapping", job.mapping)) if v]
        if given:
            raise UsageError(f"{', '.join(given)}: the columns come from --use-mapping {job.use_mapping}")
        columns, n_features, map_sep, map_header = load_mapping(job.use_mapping)
        if sep == "auto":
            sep = map_sep
    else:
        if job.no_target:
            raise UsageError("--no-target is for new data converted with --use-mapping")
        if job.target is None:
            raise UsageError("--target is required (a header name or a 0-based column index)")
        map_header = None
        columns = None

    tables = []
    for path in inputs:
        t, used = read_table(path, sep)
        if not t.rows:
            raise InputError(t.name, None, "no data rows (the file is empty or has only blank lines and comments)")
        sep = used  # every input uses the separator found in the first one
        tables.append(t)

    if columns is None:
        first = tables[0].rows[0]
        header = _decide_header(job, first, job.target)
        names = list(first) if header else [str(i) for i in range(len(first))]
        if header and len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise InputError(tables[0].name, tables[0].line_numbers[0], f"repeated column name(s) in the header: {', '.join(dup)}")
        # every input has the header row if the first one does
        skip = [header] * len(tables)
        columns = _plan_columns(job, names, tables, skip)
        n_features = _assign_ids(columns, tables, skip)
        positions = [list(range(len(columns)))] * len(tables)
        for t, s in zip(tables, skip):
            if s and t is not tables[0] and t.rows[0] != tables[0].rows[0]:
                raise InputError(t.name, t.line_numbers[0], "its header differs from the first input's")
        header_flag = header
    else:
        header_flag = map_header if job.header is None else job.header
        skip, positions = [], []
        for t in tables:
            names = t.rows[0] if header_flag else None
            n_fields = None if header_flag else len(t.rows[0])
            positions.append(_positions_mapped(columns, names, t.name, header_flag, job.no_target, n_fields))
            skip.append(header_flag)

    stats_per = []
    texts = []
    for t, s, pos in zip(tables, skip, positions):
        stats = {"unknown": {}, "empty": 0}
        if len(t.rows) == (1 if s else 0):
            raise InputError(t.name, None, "no data rows after the header line (--no-header if the first "
                                           "line holds data)")
        lines = _encode(t, columns, s, pos, stats)
        texts.append(lines)
        stats_per.append(stats)

    # every input was read and checked: now write, all outputs or none, standard output last
    # (it cannot wait for the files' renames)
    with publish_together():
        if job.meta:
            groups = [None] * n_features
            for c in columns:
                if c.role == "numeric":
                    groups[c.id] = c.group
                elif c.role == "categorical":
                    for fid in c.ids.values():
                        groups[fid] = c.group
            with atomic_output(job.meta) as f:
                f.write("".join(f"{g}\n" for g in groups))
        if job.mapping:
            with atomic_output(job.mapping) as f:
                json.dump(mapping_dict(columns, n_features, sep, header_flag), f)   # ASCII whatever the locale
                f.write("\n")
        for path, lines in sorted(zip(outputs, texts), key=lambda pair: pair[0] == "-"):
            with atomic_output(path) as f:
                f.write("\n".join(lines) + "\n")

    summary = []
    for t, path, lines, stats in zip(tables, outputs, texts, stats_per):
        where = "stdout" if path == "-" else path
        console.info(f"Wrote {len(lines)} rows to {where} ({n_features} features)")
        if stats["unknown"]:
            total = sum(stats["unknown"].values())
            detail = ", ".join(f"{k}: {v}" for k, v in stats["unknown"].items())
            console.info(f"{t.name}: {total} unknown value(s) dropped, not in the mapping ({detail})")
        if stats["empty"]:
            console.info(f"{t.name}: {stats['empty']} row(s) kept no feature; written as '0:0' "
                         f"(contributes nothing) to keep the rows in order")
        summary.append({"input": t.name, "output": path, "rows": len(lines),
                        "unknown": dict(stats["unknown"]), "featureless": stats["empty"]})
    if not job.use_mapping:
        parts = []
        for c in columns:
            if c.role == "categorical":
                parts.append(f"{c.name}: categorical, {len(c.ids)} ids" + (" (inferred)" if c.inferred else ""))
            elif c.role == "numeric":
                parts.append(f"{c.name}: numeric" + (" (inferred)" if c.inferred else ""))
            else:
                parts.append(f"{c.name}: {c.role}")
        console.info("Columns: " + "; ".join(parts))
    if job.meta:
        console.info(f"Wrote feature groups to {job.meta}")
    if job.mapping:
        console.info(f"Wrote the id mapping to {job.mapping}")
    return {"n_features": n_features, "files": summary, "columns": columns, "separator": sep}


def convert_format(inputs, outputs, to, console=None):
    """libFM text to fmcli's binary data file (to="binary"), or either back to libFM text
    (to="text"). The binary file loads memory-mapped in `fmcli train` and `fmcli predict`."""
    from fmcli.console import Console
    from fmcli.io.cache import write_cache
    from fmcli.io.load import load_dataset
    from fmcli.io.libsvm import write_libfm

    console = console or Console()
    if len(outputs) != len(inputs):
        raise UsageError(f"{len(inputs)} -in files but {len(outputs)} -out files: give one -out per -in, in order")
    if to == "binary" and "-" in outputs:
        raise UsageError("--binary needs -out file names (a binary file is not written to stdout)")
    check_distinct([("-in", p) for p in inputs], [("-out", p) for p in outputs])
    for p in outputs:
        check_writable(p, "-out")
    data = [load_dataset(p, cache=False, targets="optional") for p in inputs]  # all read before any write
    with publish_together():  # all outputs or none, standard output last
        for d, out in sorted(zip(data, outputs), key=lambda pair: pair[1] == "-"):
            if to == "binary":
                write_cache(d, out)
            else:
                write_libfm(out, d)
    for d, out in zip(data, outputs):
        console.info(f"{d.source}: {d.n_rows} rows, {d.nnz} values, {d.n_features} features -> "
                     f"{'stdout' if out == '-' else out} ({'binary' if to == 'binary' else 'libFM text'})")

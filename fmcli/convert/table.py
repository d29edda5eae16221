"""Reading the delimited tables of `fmcli convert`: bytes to rows of stripped fields, with the
line number of each row, in UTF-8 or a given encoding; separators; numbers; column names."""

import codecs
import csv
import re

from fmcli.errors import InputError, UsageError

SEPARATORS = {",": ",", "comma": ",", "tab": "\t", "\t": "\t", "\\t": "\t", "space": " ", " ": " ",
              ";": ";", "semicolon": ";", "|": "|", "pipe": "|"}
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
FLOAT32_MAX = 3.4028234663852886e38


def parse_encoding(name):
    """A codec name Python knows (latin-1, cp1252, utf-8, ...), or None for UTF-8 checked lazily."""
    if name is None:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise UsageError(f"--encoding {name!r}: unknown encoding (e.g. utf-8, latin-1, cp1252)") from None


def text_lines(data, name, encoding):
    """Yield (line number, text, clean) of the lines that hold data (not blank, not '#').
    Without an encoding, lines are UTF-8; bytes that are not become surrogates and the line
    is marked not clean, so that only a field that is used is an error (check_text)."""
    if data.startswith(b"\xef\xbb\xbf") and encoding in (None, "utf-8"):
        data = data[3:]
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise InputError(name, line, "NUL byte: this is not a text file")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        clean = True
        if encoding is None:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text, clean = raw.decode("utf-8", "surrogateescape"), False
        else:
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise InputError(name, number, f"not {encoding} text (byte {e.start + 1} of the line)") from None
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        yield number, text, clean


def sniff_separator(line):
    """The separator a data line most likely uses: tab, comma, semicolon, pipe, else blanks."""
    for sep in ("\t", ",", ";", "|"):
        if sep in line:
            return sep
    return " "


def parse_separator(text, what="--sep"):
    if text is None or text == "auto":
        return "auto"
    if text in SEPARATORS:
        return SEPARATORS[text]
    if len(text) == 1 and text not in "\"\r\n" and not text.isalnum():
        return text
    raise UsageError(f"{what} {text!r}: expected one of , tab space ; | auto, or a single punctuation character")


class Table:
    """The rows of one input: fields (stripped strings), their line numbers, and the row
    indices whose line was not valid UTF-8 (checked when one of its fields is used)."""

    def __init__(self, name, lines, sep):
        self.name = name
        self.rows, self.line_numbers, self.unclean = [], [], set()
        if sep == " ":
            for number, text, clean in lines:
                if not clean:
                    self.unclean.add(len(self.rows))
                self.rows.append(text.split())
                self.line_numbers.append(number)
            return
        numbers, cleans = [], []

        def feed():
            for number, text, clean in lines:
                numbers.append(number)
                cleans.append(clean)
                yield text

        if csv.field_size_limit() < (1 << 31) - 1:   # a single field may be as long as the file
            csv.field_size_limit((1 << 31) - 1)
        reader = csv.reader(feed(), delimiter=sep, quotechar='"', strict=True)
        try:
            for fields in reader:
                if not cleans[-1]:
                    self.unclean.add(len(self.rows))
                self.rows.append([f.strip() for f in fields])
                self.line_numbers.append(numbers[-1])
        except csv.Error as e:
            raise InputError(name, numbers[-1] if numbers else None, f"bad quoting: {e}") from None

    def check_text(self, r, text, column):
        """`text` (a field of row r) as it is, or an error when its bytes were not UTF-8."""
        if r in self.unclean:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(self.name, self.line_numbers[r],
                                 f"not UTF-8 text in column {column} (--encoding names the input's encoding, "
                                 "e.g. latin-1)") from None
        return text


def read_table(path, sep, encoding=None):
    """(Table, separator used)."""
    from fmcli.io.sources import read_input

    data, name = read_input(path)
    lines = list(text_lines(data, name, encoding))
    if sep == "auto":
        sep = sniff_separator(lines[0][1]) if lines else ","
    return Table(name, lines, sep), sep


def split_list(value):
    if not value:
        return []
    if isinstance(value, str):
        value = [value]
    return [p.strip() for v in value for p in v.split(",") if p.strip()]


def parse_number(text):
    """float, or None when `text` is not a plain decimal number within float32's range."""
    if not NUMBER.fullmatch(text):
        return None
    v = float(text)
    return v if abs(v) <= FLOAT32_MAX else None


def why_not_number(text):
    if NUMBER.fullmatch(text):
        return "out of range for a 32-bit float"
    return "not a number"


def resolve(spec, names, what):
    """Index of the column named `spec` (a header name or a 0-based index)."""
    if spec in names:
        return names.index(spec)
    if re.fullmatch(r"\d+", spec):
        i = int(spec)
        if i < len(names):
            return i
        raise UsageError(f"{what} {spec}: there are only {len(names)} columns (indices are 0-based)")
    raise UsageError(f"{what} {spec!r}: no such column (columns: {', '.join(names)})")

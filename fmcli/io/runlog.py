"""What a training or tuning run writes: -rlog tables, --log-json lines, tune results.

The writer (`RunLog`, `iteration_line`) is at the end; the rest reads them back.

Which of the three a file is comes from its content, not its name:

- a **tune result** is one JSON object (possibly spread over many lines) with a
  `candidates` member;
- **--log-json lines** are one JSON object per line, each with an `iteration` member
  (`fmcli train --log-json`: iteration, elapsed, time_learn, train / test / validation
  metrics, hyper);
- anything else must be an **-rlog table**: a tab-separated header line that names an
  `rmse` (regression) or `accuracy` (classification) column, then one row of numbers per
  iteration (fmcli's or libFM's table; libFM's has no `elapsed` column).

Tune result layout (what `fmcli tune` writes)::

    {"metric": "rmse",                  # what "score" measures (required)
     "better": "min",                   # optional, "min" or "max"; by default from the
                                        # metric: max for accuracy and auc, min otherwise
     "candidates": [                    # every setting tried (required, at least one)
       {"params": {"dim": 8, "regular": "0,10,10"},  # name -> number, string or true/false
        "score": 0.91,                  # mean over the folds; null or non-finite: failed
        "sd": 0.01},                    # optional, >= 0: standard deviation over the folds
       ...]}

Other members (at the top or in a candidate) are allowed and ignored, so the layout can grow.

Everything read is checked: a malformed line, a field that is not a number, iterations out
of order or an impossible value is an InputError naming the file and line. Metric values
that are NaN, infinite or null are kept as gaps (NaN): the -rlog table writes `nan` for
what it did not measure (no test rows, libFM's unset columns). Values that place a point
on the x axis (iteration, elapsed seconds) must be finite.
"""

import json
import math
import re
from dataclasses import dataclass, field

from fmcli.errors import InputError
from fmcli.io.atomic import atomic_output

NAN = float("nan")
SPLITS = ("train", "test", "validation")
MAIN_METRIC = {"r": "rmse", "c": "accuracy"}
TASK_NAME = {"r": "regression", "c": "classification"}

# metric -> split -> the -rlog columns that hold it (first present wins). In libFM's table
# rmse_train holds the train accuracy for classification, and rmse_val the validation one.
RLOG_COLUMNS = {
    "r": {"rmse": {"test": ("rmse",), "train": ("rmse_train",), "validation": ("rmse_val",)},
          "mae": {"test": ("mae",), "train": ("mae_train",)}},
    "c": {"accuracy": {"test": ("accuracy",), "train": ("rmse_train",), "validation": ("rmse_val",)},
          "auc": {"test": ("auc",), "train": ("auc_train",)},
          "logloss": {"test": ("logloss",), "train": ("logloss_train",)},
          "ll": {"test": ("ll", "ll_mcmc_all")}},
}
# metric -> its key in a --log-json split object
JSON_KEYS = {"rmse": "rmse", "mae": "mae", "accuracy": "accuracy", "auc": "auc", "logloss": "logloss",
             "ll": "ll10"}
# metrics for which a larger score is better (for the others, smaller is)
LARGER_IS_BETTER = {"accuracy", "auc"}


@dataclass
class LearningCurves:
    """One training run's per-iteration values, aligned with `iterations`."""

    path: str
    kind: str                    # "rlog" or "json"
    task: str                    # "r" or "c"
    iterations: list
    lines: list                  # the file line of each iteration (for messages)
    metrics: dict                # metric -> split -> values
    columns: dict                # other quantities (rlog columns, JSON hyper / top level) -> values
    elapsed: list = None         # seconds since training started; None in libFM's table
    first_line: int = 1          # the header (rlog) or the first record (json)

    def series(self, name):
        """split -> values of `name` (a metric); {"": values} for another column; KeyError if absent."""
        if name in self.metrics:
            return self.metrics[name]
        if name in self.columns:
            return {"": self.columns[name]}
        raise KeyError(name)

    def x_values(self, axis):
        """The x coordinates of the iterations: iteration numbers or elapsed seconds."""
        if axis == "iteration":
            return list(self.iterations)
        if self.elapsed is None:
            raise InputError(self.path, self.first_line,
                             "no elapsed column (libFM's -rlog table has none): use --x iteration")
        previous = 0.0
        for value, line in zip(self.elapsed, self.lines):
            if not math.isfinite(value) or value < previous:
                raise InputError(self.path, line, f"elapsed {value!r}: not a finite number of seconds "
                                                  f"at least the previous row's ({previous:g})")
            previous = value
        return list(self.elapsed)


@dataclass
class Candidate:
    params: dict
    score: float                 # NaN: the candidate failed
    sd: float = None
    line: int = None


@dataclass
class TuneResult:
    path: str
    metric: str
    better: str                  # "min", "max"
    candidates: list = field(default_factory=list)

    def hyperparameters(self):
        """Parameter names in order of first appearance."""
        names = {}
        for c in self.candidates:
            names.update(dict.fromkeys(c.params))
        return list(names)


def read_plot_input(path):
    """LearningCurves or TuneResult, from the content of `path` ("-" = stdin; gzip/bz2/xz)."""
    from fmcli.io.sources import read_input

    data, name = read_input(path)
    text = _decode(data, name)
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise InputError(name, None, "empty file: expected an -rlog table, --log-json lines or a tune result")
    head = lines[first].strip()
    if not head.startswith(("{", "[")):
        return _read_rlog(name, lines, first)
    try:
        record = json.loads(head)
    except ValueError:
        record = None
    if isinstance(record, dict) and "iteration" in record:
        return _read_json_lines(name, lines)
    try:
        doc = json.loads(text)
    except ValueError as e:
        if isinstance(record, dict):  # line after line of objects, but not fmcli's records
            raise InputError(name, first + 1, "a JSON object without iteration: not a --log-json record "
                                              "(and the file is not one tune result object)") from None
        raise InputError(name, getattr(e, "lineno", None), f"not valid JSON: {_json_reason(e)}") from None
    return _read_tune(name, text, doc)


def _decode(data, name):
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\x00" in data:
        raise InputError(name, data.count(b"\n", 0, data.index(b"\x00")) + 1, "NUL byte: this is not a text file")
    try:
        return data.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise InputError(name, data.count(b"\n", 0, e.start) + 1, "not UTF-8 text") from None


# ---- -rlog ------------------------------------------------------------------------------------

def _read_rlog(name, lines, first):
    header = [h.strip() for h in lines[first].split("\t")]
    line_no = first + 1
    if "rmse" in header:
        task = "r"
    elif "accuracy" in header:
        task = "c"
    else:
        raise InputError(name, line_no, "not an -rlog table (a tab-separated header with an rmse or accuracy "
                                        "column), --log-json lines or a tune result")
    if "" in header:
        raise InputError(name, line_no, f"empty column name in the header (column {header.index('') + 1})")
    dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
    if dup is not None:
        raise InputError(name, line_no, f"column {dup!r} appears twice in the header")
    columns = {h: [] for h in header}
    rows = []
    for number, line in enumerate(lines[first + 1:], start=first + 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise InputError(name, number, f"{len(fields)} fields, the header has {len(header)}")
        for h, f in zip(header, fields):
            columns[h].append(_number(name, number, f, h))
        rows.append(number)
    if not rows:
        raise InputError(name, line_no, "no rows after the header (no iteration finished)")
    metrics = {}
    for metric, splits in RLOG_COLUMNS[task].items():
        found = {}
        for split, names in splits.items():
            col = next((c for c in names if c in columns), None)
            if col is not None:
                found[split] = columns[col]
        if found:
            metrics[metric] = found
    return LearningCurves(name, "rlog", task, list(range(len(rows))), rows, metrics,
                          {h: v for h, v in columns.items() if h not in metrics},
                          elapsed=columns.get("elapsed"), first_line=line_no)


def _number(name, line, text, column):
    try:
        return float(text.strip())
    except ValueError:
        raise InputError(name, line, f"column {column}: {text.strip()[:40]!r} is not a number") from None


# ---- --log-json -------------------------------------------------------------------------------

def _read_json_lines(name, lines):
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise InputError(name, number, f"not a JSON object: {_json_reason(e)}") from None
        if not isinstance(record, dict):
            raise InputError(name, number, "not a JSON object")
        records.append((number, record))
    first_line, first = records[0]
    train = first.get("train")
    task = "r" if isinstance(train, dict) and "rmse" in train else \
        "c" if isinstance(train, dict) and "accuracy" in train else None
    if task is None:
        raise InputError(name, first_line, "a --log-json record whose train metrics have neither rmse nor accuracy")
    wanted = [m for m in JSON_KEYS if m in RLOG_COLUMNS[task]]
    iterations, row_lines, elapsed = [], [], []
    metrics = {m: {s: [] for s in SPLITS} for m in wanted}
    columns = {}
    for i, (number, record) in enumerate(records):
        it = record.get("iteration")
        if type(it) is not int or not 0 <= it < 2 ** 53:
            raise InputError(name, number, f"iteration {json.dumps(it)[:40]}: not a non-negative integer")
        if iterations and it <= iterations[-1]:
            raise InputError(name, number, f"iteration {it} after iteration {iterations[-1]}")
        iterations.append(it)
        row_lines.append(number)
        value = record.get("elapsed", NAN)
        elapsed.append(NAN if value is None else _json_number(name, number, "elapsed", value))
        for split in SPLITS:
            part = record.get(split)
            if part is None:
                part = {}
            elif not isinstance(part, dict):
                raise InputError(name, number, f"{split}: not an object of metrics")
            if split == "train" and not part:
                raise InputError(name, number, "no train metrics")
            for m in wanted:
                v = part.get(JSON_KEYS[m])
                metrics[m][split].append(NAN if v is None else _json_number(name, number, f"{split}.{JSON_KEYS[m]}", v))
        extra = {k: v for k, v in record.items() if k not in ("iteration", "hyper") + SPLITS}
        hyper = record.get("hyper") or {}
        if not isinstance(hyper, dict):
            raise InputError(name, number, "hyper: not an object")
        extra.update(hyper)
        for key, v in extra.items():
            if v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
                columns.setdefault(key, [NAN] * i).append(NAN if v is None else float(v))
        for values in columns.values():  # a key this record lacks is a gap
            if len(values) == i:
                values.append(NAN)
    return LearningCurves(name, "json", task, iterations, row_lines, metrics, columns,
                          elapsed=elapsed, first_line=first_line)


def _json_number(name, line, what, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(name, line, f"{what}: {json.dumps(value)[:40]} is not a number")
    try:
        return float(value)
    except OverflowError:  # an integer beyond float's range
        return math.copysign(math.inf, value)


def _json_reason(err):
    return getattr(err, "msg", str(err))


# ---- tune results -----------------------------------------------------------------------------

def _read_tune(name, text, doc):
    if not isinstance(doc, dict) or "candidates" not in doc:
        raise InputError(name, 1, "a JSON document that is neither --log-json lines (objects with an "
                                  "iteration) nor a tune result (an object with candidates)")
    metric, better, items = doc.get("metric"), doc.get("better"), doc["candidates"]
    if not isinstance(metric, str) or not metric.strip():
        raise InputError(name, 1, "tune result: metric must be a non-empty string such as \"rmse\"")
    if better is None:
        better = "max" if metric in LARGER_IS_BETTER else "min"
    elif better not in ("min", "max"):
        raise InputError(name, 1, f"tune result: better {json.dumps(better)[:40]}: must be \"min\" or \"max\"")
    if not isinstance(items, list) or not items:
        raise InputError(name, 1, "tune result: candidates must be a non-empty list")
    result = TuneResult(name, metric, better)
    for item, line in zip(items, _candidate_lines(text)):
        result.candidates.append(_candidate(name, line, item))
    if not result.hyperparameters():
        raise InputError(name, 1, "tune result: no candidate has params")
    if not any(math.isfinite(c.score) for c in result.candidates):
        raise InputError(name, 1, "tune result: no candidate has a finite score")
    return result


def _candidate(name, line, item):
    def bad(message):
        return InputError(name, line, f"candidate: {message}")

    if not isinstance(item, dict):
        raise bad("not an object")
    params = item.get("params")
    if not isinstance(params, dict):
        raise bad("params must be an object of name -> value")
    for key, value in params.items():
        if not isinstance(value, (str, int, float)):  # bool is an int
            raise bad(f"params.{key}: {json.dumps(value)[:40]} is not a number, a string or true/false")
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and not math.isfinite(_json_number(name, line, f"params.{key}", value)):
            raise bad(f"params.{key} is not finite")
    if "score" not in item:
        raise bad("no score (write null for a candidate that failed)")
    score = item["score"]
    score = NAN if score is None else _json_number(name, line, "candidate score", score)
    sd = item.get("sd")
    if sd is not None:
        sd = _json_number(name, line, "candidate sd", sd)
        if not (math.isfinite(sd) and sd >= 0):
            raise bad(f"sd {sd!r} must be finite and >= 0")
    return Candidate(params, score, sd, line)


_WS = re.compile(r"[ \t\n\r]*")


def _candidate_lines(text):
    """The line on which each element of the top-level "candidates" list starts.

    json.loads keeps no positions; this walks the (already validated) document's top level
    with raw_decode so that a message can name a candidate's line.
    """
    decoder = json.JSONDecoder()

    def skip(i):
        return _WS.match(text, i).end()

    def line_of(i):
        return text.count("\n", 0, i) + 1

    lines = []
    i = skip(text.index("{") + 1)
    while text[i] != "}":
        key, i = decoder.raw_decode(text, i)
        i = skip(skip(i) + 1)  # past the ':'
        if key == "candidates" and text[i] == "[":
            lines = []  # json.loads keeps the last of repeated keys; so do we
            i = skip(i + 1)
            while text[i] != "]":
                lines.append(line_of(i))
                _, i = decoder.raw_decode(text, i)
                i = skip(i)
                if text[i] == ",":
                    i = skip(i + 1)
            i += 1
        else:
            _, i = decoder.raw_decode(text, i)
        i = skip(i)
        if text[i] == ",":
            i = skip(i + 1)
    return lines



def iteration_line(it, task, train_m, test_m):
    """libFM's per-iteration line, with fmcli's extra classification fields appended."""
    key = "accuracy" if task == "c" else "rmse"
    line = f"#Iter={it:3d}\tTrain={train_m[key]:.6g}"
    if task == "o":     # RMSE of the expected value first (libFM's column), then the classes'
        line += f"\tTrain(acc)={train_m['accuracy']:.6g}"
        if test_m:
            line += (f"\tTest={test_m['rmse']:.6g}\tTest(mae)={test_m['mae']:.6g}\tTest(acc)={test_m['accuracy']:.6g}"
                     f"\tTest(logloss)={test_m['logloss']:.6g}")
        return line
    if test_m:
        line += f"\tTest={test_m[key]:.6g}"
        if task == "c":
            line += (f"\tTest(ll)={test_m['ll10']:.6g}\tTest(auc)={test_m['auc']:.6g}"
                     f"\tTest(logloss)={test_m['logloss']:.6g}")
    return line


class RunLog:
    """-rlog (a header line and tab-separated rows) and --log-json (one JSON object per line).

    -rlog keeps libFM's columns, in libFM's order (libfm-behaviour: `-rlog`), so scripts
    that read libFM's table by name or position keep working; fmcli's own columns follow:

    - SGD, r: rmse mae time_pred time_learn time_learn2 time_learn4 rmse_train
    - SGD, c: accuracy time_pred time_learn time_learn2 time_learn4 rmse_train
      (as in libFM, rmse_train holds the train accuracy for classification)
    - ALS/MCMC: rmse mae (r) or accuracy (c), time_pred time_learn time_learn2
      time_learn4 alpha, then rmse_mcmc_this rmse_mcmc_all rmse_mcmc_all_but5 (r) or
      acc_mcmc_this acc_mcmc_all acc_mcmc_all_but5 ll_mcmc_this ll_mcmc_all
      ll_mcmc_all_but5 (c), then wmu[g] wlambda[g] and vmu[g,f] vlambda[g,f] per group
    - then fmcli's: mae_train (r) or auc logloss ll auc_train logloss_train (c), and elapsed.

    rmse/mae/accuracy (and the *_mcmc_all columns) are the printed Test values (nan
    without labelled test rows); time_learn is the wall-clock seconds of the iteration's
    learning step; elapsed the seconds since training started. Columns fmcli does not
    measure (time_pred, time_learn2, time_learn4, *_this, *_but5) are nan, as libFM
    writes unset fields. Each file is replaced whole after every iteration, so it can be
    watched during a long run and is never half-written.
    """

    def __init__(self, rlog_path, json_path, task, method):
        self.rlog_path, self.json_path = rlog_path, json_path
        self.task, self.coordinate = task, method in ("als", "mcmc")
        self.header, self.rows, self.records = None, [], []

    def columns(self, train_m, test_m, val_m, t_learn, elapsed, hyper):
        """Ordered name -> value of one -rlog row (libFM's columns first)."""
        nan = float("nan")
        it_task = "r" if self.task == "o" else self.task    # ordinal: regression's columns, then its own
        test = test_m or {}
        row = {}
        if it_task == "r":
            row["rmse"], row["mae"] = test.get("rmse", nan), test.get("mae", nan)
        else:
            row["accuracy"] = test.get("accuracy", nan)
        row.update(time_pred=nan, time_learn=t_learn, time_learn2=nan, time_learn4=nan)
        if self.coordinate:
            row["alpha"] = hyper.get("alpha", nan)
            if it_task == "r":
                row.update(rmse_mcmc_this=nan, rmse_mcmc_all=row["rmse"], rmse_mcmc_all_but5=nan)
            else:
                row.update(acc_mcmc_this=nan, acc_mcmc_all=row["accuracy"], acc_mcmc_all_but5=nan,
                           ll_mcmc_this=nan, ll_mcmc_all=test.get("ll10", nan), ll_mcmc_all_but5=nan)
            row.update((k, v) for k, v in hyper.items() if k != "alpha")
        # libFM's SGD table ends with rmse_train; for ALS/MCMC it is one of fmcli's columns
        row["rmse_train"] = train_m["rmse"] if it_task == "r" else train_m["accuracy"]
        if val_m is not None:  # libFM's SGDA column, then its regw/regv (in hyper)
            row["rmse_val"] = val_m["rmse"] if it_task == "r" else val_m["accuracy"]
        if not self.coordinate:
            row.update(hyper)
        if it_task == "r":
            row["mae_train"] = train_m["mae"]
        else:
            row.update(auc=test.get("auc", nan), logloss=test.get("logloss", nan))
            if not self.coordinate:
                row["ll"] = test.get("ll10", nan)
            row.update(auc_train=train_m.get("auc", nan), logloss_train=train_m.get("logloss", nan))
        if self.task == "o":
            row.update(accuracy=test.get("accuracy", nan), logloss=test.get("logloss", nan),
                       accuracy_train=train_m.get("accuracy", nan), logloss_train=train_m.get("logloss", nan))
        row["elapsed"] = elapsed
        return row

    def add(self, it, elapsed, train_m, test_m, val_m, t_learn, hyper):
        row = self.columns(train_m, test_m, val_m, t_learn, elapsed, hyper)
        if self.header is None:
            self.header = list(row)
        self.rows.append("\t".join("%.6g" % row.get(h, float("nan")) for h in self.header))
        if self.rlog_path:
            self._replace(self.rlog_path, "\t".join(self.header) + "\n" + "\n".join(self.rows) + "\n")
        if self.json_path:
            record = {"iteration": it, "elapsed": round(elapsed, 6), "time_learn": round(t_learn, 6),
                      "train": train_m, "test": test_m, "validation": val_m, "hyper": hyper}
            self.records.append(json.dumps(record, default=float))
            self._replace(self.json_path, "\n".join(self.records) + "\n")

    def publish(self, validation, hyper):
        """Write both files in their final state once more (inside publish_together: together
        with the run's other outputs). After no iteration (-iter 0) -rlog is its header line
        (the columns the run would have filled; `validation`: whether it had -validation,
        `hyper`: the learner's log_values) and --log-json an empty file (no record)."""
        if self.header is None:
            nan = float("nan")
            metrics = dict.fromkeys(("rmse", "mae", "accuracy", "auc", "logloss", "ll10"), nan)
            self.header = list(self.columns(metrics, None, metrics if validation else None, nan, nan, hyper))
        if self.rlog_path:
            self._replace(self.rlog_path, "\t".join(self.header) + "\n" + "".join(r + "\n" for r in self.rows))
        if self.json_path:
            self._replace(self.json_path, "".join(r + "\n" for r in self.records))

    @staticmethod
    def _replace(path, text):
        with atomic_output(path) as f:
            f.write(text)

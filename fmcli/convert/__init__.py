"""`fmcli convert`: delimited files (CSV, TSV, space-separated) to libFM text, with side tables
joined on, typed and transformed columns, a feature-group file, a reusable mapping and the
implicit-feedback relations.

Like libFM's `triple_format_to_libfm.pl`, but with typed columns, a feature-group
file and a reusable id mapping:

- One column is the target (a number). Columns may be dropped.
- A *categorical* column is one-hot encoded: each distinct value gets its own
  feature id, with value 1.
- A *numeric* column gets one feature id, whose value is the number as written
  (or its log1p, standardised: `--log1p`, `--standardize`); a 0 is left out, as in
  any sparse file. `--buckets COL:N` makes N quantile buckets of it, a categorical group.
- A *set* column holds several values in one field (`--set COL[:SEP]`), or is a run
  of 0/1 indicator columns declared as one (`--set-columns NAME=FIRST..LAST`); its
  members get 1, 1/n or 1/sqrt(n) (`--set-norm`). A *text* column becomes words
  weighted by TF-IDF (`--tfidf`); a *timestamp* column (Unix seconds) derived
  parts (`--timestamp COL[:day+weekday+hour+daysN]`).
- A column not listed as either is numeric when every value in it is a number,
  categorical otherwise. Ids such as users and items are numbers too, so list them:
  `--categorical user,item`.
- Side tables (`--join FILE:KEY=MAINCOL`) add the features of their row whose KEY
  field equals the row's MAINCOL field; their columns are NAME.COL (NAME: the file's
  name, or `:name=N`) and are typed by the same options.
- Feature ids are 0-based and given column by column, in column order (the main
  table's, then each side table's); within a categorical column in order of first
  appearance over all inputs, in the order the inputs were given. So several inputs
  (train and test) share one id space. Encoders learn their statistics (means,
  quantiles, idf) from all the inputs of the conversion (no targets are used).
- The groups file (`--meta`) has one line per feature id: the number of its column
  among the feature columns (0 for the first one). It is the `-meta` of `fmcli train`.
- The mapping file (`--mapping`, JSON, fmcli/convert/mapping.py) records everything;
  `--use-mapping` converts new data with exactly those ids: categorical values not in
  the mapping are dropped (and counted on stderr); no id is added. With `--no-target`
  (rows to predict), a row left without any known feature is written as `0:0`, which
  contributes nothing, so that predictions stay one per row.
- `--weight COL` names a column of row weights (no feature): each output's weights go to
  OUT.weights, checked as `fmcli train -weights` checks them; the mapping records the column.
- `--user COL --item COL` record the user and item sides in the mapping; `--relations
  BASE` writes the implicit-feedback relations (fmcli/convert/relations.py).
- The first row is a header when `--header` says so, or by default when the target
  is given by name or the first row's target field is not a number.

Fields are stripped of surrounding blanks; an empty field is a missing value (no
feature). Blank lines and lines starting with `#` are skipped. Input is UTF-8 (a
byte-order mark is allowed; bytes that are not UTF-8 are an error only in a field that
is used) unless `--encoding` says otherwise; gzip, bzip2 and xz are recognised by their
first bytes; `-` is standard input. All inputs are read and checked before any output is
written, and every output appears whole or not at all.
"""

from fmcli.convert.binary import convert_format
from fmcli.convert.job import ConvertJob, run_convert

__all__ = ["ConvertJob", "convert_format", "run_convert"]

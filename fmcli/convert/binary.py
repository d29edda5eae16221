"""`fmcli convert --binary` / `--to-text`: libFM text to fmcli's binary data file and back."""

from fmcli.errors import UsageError
from fmcli.io.atomic import check_distinct, check_writable, publish_together


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

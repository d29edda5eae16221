"""The one-line note on stderr when fmcli's kernels compile (fmcli.config.note_compiling)."""


def test_the_compile_note_comes_once_and_only_for_fmcli_kernels():
    import numba

    from fmcli.config import COMPILE_NOTE, note_compiling

    said = []
    note_compiling(said.append)

    def other(x):
        return x * 2

    numba.njit(other)(1)                 # not a kernel of fmcli's: no note
    assert said == []

    def kernel(x):
        return x + 1

    kernel.__module__ = "fmcli.note_check"
    compiled = numba.njit(kernel)        # not cached: compiles at each new signature
    assert compiled(1) == 2 and compiled(1.5) == 2.5
    assert said == [COMPILE_NOTE]

"""Software prefetch for the coordinate sweeps and the SGD epochs: LLVM's llvm.prefetch
intrinsic as a numba function. A hint to the CPU to bring a cache line in; it changes no value."""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fmcli.config import njit

PREFETCH_LAST_BELOW = 32   # rows of a cache with last column < this: their last line is prefetched too


def _prefetch_intrinsic(rw):
    @intrinsic
    def prefetch(typingctx, arr, i, c):
        """Ask the CPU to bring the cache line of arr[i, c] (a 2-D array) into the cache."""
        def codegen(context, builder, sig, args):
            aryty = sig.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            idx = [context.cast(builder, args[1], sig.args[1], types.intp),
                   context.cast(builder, args[2], sig.args[2], types.intp)]
            ptr = cgutils.get_item_pointer2(context, builder, ary.data,
                                            cgutils.unpack_tuple(builder, ary.shape),
                                            cgutils.unpack_tuple(builder, ary.strides), aryty.layout,
                                            idx)
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(), i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [builder.bitcast(ptr, ir.PointerType()), i32(rw), i32(3), i32(1)])
            return context.get_dummy_value()
        return types.void(arr, i, c), codegen
    return prefetch


prefetch_read = _prefetch_intrinsic(0)
prefetch_write = _prefetch_intrinsic(1)


@njit
def prefetch_row(a, i, write):
    """The first cache line of row i of the 2-D array a, and for rows of up to
    PREFETCH_LAST_BELOW columns its last one (a row of k + 1 = 9 float32 spans two lines half
    the time, a factor block's 17 always); at large k the hardware streams the rest
    (bench/notes.md)."""
    last = a.shape[1] - 1
    if write:
        prefetch_write(a, i, 0)
        if last < PREFETCH_LAST_BELOW:
            prefetch_write(a, i, last)
    else:
        prefetch_read(a, i, 0)
        if last < PREFETCH_LAST_BELOW:
            prefetch_read(a, i, last)


@njit(inline="always")
def prefetch_row_features(indptr, indices, i, a, write):
    """prefetch_row of a's row of each feature of CSR row i (an SGD epoch asks for the next
    row's factors while it works on the current one: the rows' features are random lines)."""
    for p in range(indptr[i], indptr[i + 1]):
        prefetch_row(a, indices[p], write)

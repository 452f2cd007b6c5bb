"""Row tiles of the per-row kernels (DSM perturb / loss / backward, corrector norms): program
``(row, chunk)`` of a 2-D grid covers at most BLOCK columns of one row of a ``[rows, row_size]``
tensor whose element 0 is global element ``elem_offset``.

    tile element (r, l)  =  local element  base + VEC·r + l,      r < BLOCK / VEC,  l < VEC
    global index of tile element 0  =  4 · first_group             (aligned to Philox groups)

The row index is the program's, never a per-element division, so per-row scalars (σ, 1/σ, λ, ...)
are one load per program. The tile is aligned to groups of four in the *global* index (so it
draws whole Philox groups: :func:`kernels.tiles.normal_tile`); a row that starts ``head``
elements into its group begins at tile position ``head`` of chunk 0.

Two cases of a constexpr (the launcher picks VEC and the case with :func:`row_vec`):

* ``ROWS_ALIGNED``: every row starts on a group and ``row_size`` is a multiple of VEC. The mask
  is one-sided (``offs < hi``) and constant over each tile row of VEC elements; the kernels
  tell the compiler that ``row_size`` is a multiple of VEC, so their loads and stores are
  16-byte vectors for any such row size (not only multiples of 16, which Triton would see by
  itself), and a reduction can mask whole tile rows after summing them (:func:`row_sum`)
  instead of every element.
* otherwise: a two-sided element mask ``lo <= offs < hi`` (``lo`` the head in chunk 0). The
  base is written as ``4·first_group − elem_offset`` so that a launch whose ``elem_offset``
  Triton specialises as a multiple of 16 (0 on one device) compiles 4-aligned tiles: each thread
  then owns whole Philox groups in memory as in registers, and the noise needs no shared-memory
  reshuffle to meet the (element-masked) loads.

(Generic; a candidate for ``kernels/tiles.py``, which it only imports from.)
"""

import triton
import triton.language as tl

from .tiles import FLAT_BLOCK_GPU, ROW_ELEMS_PER_WARP, launch_options, vec_for


def rows_aligned(row_size: int, elem_offset: int, vec: int) -> bool:
    """The ``ROWS_ALIGNED`` case: every row starts on a Philox group, and ``row_size`` is a
    multiple of the tile row (so a tile row is never cut by the row's end)."""
    return row_size % 4 == 0 and elem_offset % 4 == 0 and row_size % vec == 0


def row_vec(row_size: int, elem_offset: int, *tensors):
    """(VEC, rows_aligned) of a row kernel over ``tensors``: 8 for 16-bit operands (16-byte accesses)
    when the rows are aligned and whole tile rows of 8, else 4 (with a head, the element masks of
    8-wide rows cost more than the wider loads save: `fastlangevin kernels`, 63 vs 48 instructions
    per element for a bf16 loss)."""
    vec = vec_for(*tensors)
    if vec == 8 and not rows_aligned(row_size, elem_offset, 8):
        vec = 4
    return vec, rows_aligned(row_size, elem_offset, vec)


def row_grid_block(need: int) -> int:
    """GPU BLOCK of an elementwise row kernel over rows of ``need`` elements (a row plus its head
    room): the largest power of two from 512 (one warp, 16 elements per thread) to
    FLAT_BLOCK_GPU that leaves under an eighth of the lanes idle, e.g. 1024 (3 full chunks) for a
    3·32·32 row rather than 4096 (a quarter idle); else the one that idles fewest. Only for kernels
    whose results do not depend on BLOCK (no reductions)."""
    sizes = [b for b in (4096, 2048, 1024, 512) if b <= FLAT_BLOCK_GPU]
    for b in sizes:
        if triton.cdiv(need, b) * b * 7 <= need * 8:
            return b
    return min(sizes, key=lambda b: (triton.cdiv(need, b) * b, -b))


def lanes_busy(need: int, block: int) -> float:
    """Fraction of a row grid's lanes that hold an element."""
    return need / (triton.cdiv(need, block) * block)


def row_warps(block: int, elems_per_warp: int = ROW_ELEMS_PER_WARP) -> int:
    return max(1, min(8, block // elems_per_warp))


def row_options(interpreted: bool, block: int, elems_per_warp: int = ROW_ELEMS_PER_WARP) -> dict:
    """Launch options of a row kernel over ``block``-column chunks: one warp per ``elems_per_warp`` columns
    (elementwise kernels: :func:`kernels.tiles.stream_elems_per_warp`; reductions keep the default, their
    summation order follows the layout)."""
    return launch_options(interpreted, row_warps(block, elems_per_warp))


@triton.jit
def row_tile(row, chunk, row_size, elem_offset, BLOCK: tl.constexpr, ROWS_ALIGNED: tl.constexpr, VEC: tl.constexpr):
    """(base, offs, mask, first_group, hi) of program (row, chunk): tile element ``(r, l)`` is local
    element ``base + offs[r, l]`` (``base`` int64 scalar, ``offs = VEC r + l`` int32), valid where
    ``mask``; ``hi`` (int32) bounds the valid offsets (in the aligned case ``mask == offs < hi``)."""
    offs = tl.arange(0, BLOCK // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :]
    start = elem_offset + row * row_size  # global index of the row's first element (>= 0)
    first_group = (start >> 2) + chunk * (BLOCK // 4)
    if ROWS_ALIGNED:
        row_size = (row_size >> (VEC.bit_length() - 1)) * VEC  # tells the compiler what the launcher guarantees
        col0 = chunk * BLOCK  # the row's column at offs == 0
        hi = tl.minimum(row_size - col0, BLOCK).to(tl.int32)
        mask = offs < hi
        base = row * row_size + col0
    else:
        head = (start & 3).to(tl.int32)
        col0 = chunk * BLOCK - head
        hi = tl.minimum(row_size - col0, BLOCK).to(tl.int32)
        lo = tl.where(chunk == 0, head, 0)
        mask = (offs >= lo) & (offs < hi)
        # = row * row_size + col0, written so the compiler sees a 4-aligned base when elem_offset is
        # specialised as a multiple of 16 (module docstring)
        base = 4 * first_group - elem_offset
    return base, offs, mask, first_group, hi


@triton.jit
def row_sum(v, mask, hi, ROWS_ALIGNED: tl.constexpr, VEC: tl.constexpr):
    """Σ of the valid elements of a ``[BLOCK // VEC, VEC]`` tile, in the order
    ``tl.sum(tl.sum(where(mask, v, 0), axis=1), axis=0)`` (adding an exact zero changes no sum,
    so masking whole tile rows after their sum gives the same value)."""
    if ROWS_ALIGNED:
        rows = tl.sum(v, axis=1)
        rows = tl.where(tl.arange(0, v.shape[0]) * VEC < hi, rows, 0.0)
    else:
        rows = tl.sum(tl.where(mask, v, 0.0), axis=1)
    return tl.sum(rows, axis=0)

"""Triton kernel for the fused Langevin update (installed as ``fastlangevin.kernels.langevin_step``).

    out = clamp(x + a * s + b * z, lo, hi),    z ~ N(0, I) drawn in-kernel

One pass: reads x and s (any float dtypes), writes out in x's dtype, never materialises z.
``a``/``b`` are a scalar argument, a 0-d device tensor, or a per-row ``[B]`` device tensor;
``b`` may also be derived in-kernel as ``sqrt(2 a)`` (the Langevin default), so annealed
schedules pass a single ``[B]`` tensor and no host sync happens.

Noise: element with global logical index ``i = elem_offset + local`` gets output ``i % 4`` of
``fast_randn4x(seed, i // 4)`` (tiles). Tiles are aligned to groups of four in the *global* index, so
one Philox call feeds four consecutive elements whatever ``elem_offset`` is, and the stream
never depends on BLOCK, the grid or the batch size.
"""

import functools

import torch
import triton
import triton.language as tl

from .. import modes
from .tiles import (
    BLOCK_INTERPRETER,
    COMPILED,
    FLAT_BLOCK_GPU,
    FLAT_WARPS_GPU,
    HEAD_MAXNREG,
    MAGIC_DIVIDEND_LIMIT,
    _randn4x_rounds,
    flat_launch,
    flat_tile,
    join4,
    magic_rows,
    normal_tile,
    pair_rows,
    row_launch,
    row_magic,
    row_tile,
    stream_elems_per_warp,
    stream_warps,
    tile_load,
    tile_rows,
    tile_store,
    vec_for,
    widen,
)

# The modes of fastlangevin.modes as constexpr globals: Triton lets a @jit body read a module
# global only when it is a tl.constexpr. The Python launchers use the plain ints of `modes`.
SCALE_ARG: tl.constexpr = tl.constexpr(modes.SCALE_ARG)
SCALE_TENSOR: tl.constexpr = tl.constexpr(modes.SCALE_TENSOR)
SCALE_ROWS: tl.constexpr = tl.constexpr(modes.SCALE_ROWS)
NOISE_NONE: tl.constexpr = tl.constexpr(modes.NOISE_NONE)
NOISE_SQRT2A: tl.constexpr = tl.constexpr(modes.NOISE_SQRT2A)

# Launch shapes (BLOCK, warps, VEC, grids) live in .tiles; re-exported for older imports.
BLOCK_GPU, NUM_WARPS_GPU, BLOCK_INTERPRETER = FLAT_BLOCK_GPU, FLAT_WARPS_GPU, BLOCK_INTERPRETER
#: The step's warps on a 4096-element tile of 4-wide rows: 32 elements (8 Philox groups) per thread amortise the
#: per-thread work (Philox key schedule, seed load, index math) over twice the elements of 8 warps; 8-wide
#: (16-bit) rows take 64 elements a thread, 2 warps (tiles.ELEMS_PER_THREAD_GPU: the one place that decides).
STEP_WARPS_GPU = stream_warps(FLAT_BLOCK_GPU, 4)
STEP_ELEMS_PER_WARP = stream_elems_per_warp(4)
#: Per-row scales use the (row, chunk) grid from this row length on (shorter rows would leave most of a
#: tile idle; the flat grid then divides per element). The interpreter runs each program in Python:
#: few, large programs, so only long rows.
ROW_GRID_MIN_GPU = 512
ROW_GRID_MIN_INTERPRETER = 1 << 14
#: The flat grid's per-row layouts whose 16-bit launches take the group-aligned 64 elements a thread (the
#: others 32: see _launch_plan).
PER_TILE_ROW_DIVS = (2,)


@triton.jit
def _load_scale(
    val,
    ptr,
    rows,
    MODE: tl.constexpr,
    mask,
    COMPUTE: tl.constexpr,
    ROW_GRID: tl.constexpr,
    LANES: tl.constexpr,
    EVEN: tl.constexpr = False,
    left=None,
    VEC: tl.constexpr = 4,
    ROW_DIV: tl.constexpr = 0,
    cut=None,
    NEXT: tl.constexpr = False,
    ROW_SHIFT: tl.constexpr = 0,
):
    """One scale: a scalar or, per row on the flat grid (``rows``: _langevin_step_kernel's), a tile row's
    ``[R, 1]``, an element's ``[R, VEC]``, a tile row's first row's ``[R, 1]`` or (NEXT) the next row's, valid where
    it starts in the tile row (ROW_DIV 4: tiles.pair_rows, ``cut``), or (ROW_DIV 3) the ``[R, VEC >> ROW_SHIFT]``
    scales of the tile rows' rows ``W r + cut`` (:func:`_pow2_tile`)."""
    if MODE == SCALE_ARG:
        r = val
    elif MODE == SCALE_TENSOR:
        r = tl.load(ptr).to(COMPUTE)
    elif ROW_GRID:  # one row per program: `rows` is a scalar
        r = tl.load(ptr + rows).to(COMPUTE)
    elif ROW_DIV == 3:
        # rows of 2**ROW_SHIFT < VEC elements from a start on a row (`rows`: the tile's first row, a scalar): the
        # tile's rows are consecutive, so tile row r holds rows rows + W r + j, j < W = VEC >> ROW_SHIFT: W loads
        # per tile row at constant offsets from one address (scale j of each tile row: `cut` = j), not a gather
        # per element; n is a multiple of the row, so is `left`
        W: tl.constexpr = VEC >> ROW_SHIFT
        idx = tl.arange(0, mask.shape[0]) * W + cut
        if EVEN:
            r = tl.load((ptr + rows) + idx).to(COMPUTE)
        else:
            r = tl.load((ptr + rows) + idx, mask=idx < (left >> ROW_SHIFT)).to(COMPUTE)  # masked: not stored
    elif ROW_DIV == 4:
        tr = tl.arange(0, rows.shape[0])[:, None] * VEC  # the tile rows' first columns
        # no `other=`: a masked scale is never selected (the next row's only from column `cut` < VEC on) or only
        # for elements that are not stored, so it needs no defined value (and no zero-fill)
        if NEXT:  # only where the next row starts inside the tile row (and inside the tensor)
            m = cut < VEC
            if not EVEN:
                m = m & (tr + cut < left)
            r = tl.load(ptr + rows + 1, mask=m).to(COMPUTE)
        elif EVEN:
            r = tl.load(ptr + rows).to(COMPUTE)
        else:
            r = tl.load(ptr + rows, mask=tr < left).to(COMPUTE)
    elif EVEN:  # every row index valid
        r = tile_load(ptr + rows, None, LANES).to(COMPUTE)
    elif rows.shape[1] == 1:  # one row per tile row (tiles.magic_rows): valid where the tile row's first element is
        r = tl.load(ptr + rows, mask=tl.arange(0, rows.shape[0])[:, None] * VEC < left, other=0.0).to(COMPUTE)
    else:
        r = tile_load(ptr + rows, mask, LANES, 0.0).to(COMPUTE)
    return r


@triton.jit
def _load_scales(
    step_val,
    step_ptr,
    noise_val,
    noise_scale_ptr,
    rows,
    STEP_MODE: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    mask,
    COMPUTE: tl.constexpr,
    ROW_GRID: tl.constexpr,
    LANES: tl.constexpr,
    EVEN: tl.constexpr,
    left,
    VEC: tl.constexpr,
    ROW_DIV: tl.constexpr,
    cut,
    ROW_SHIFT: tl.constexpr,
    offs,
):
    """(a, b): the step and noise scales (:func:`_load_scale`); ``b`` is ``a`` when NOISE_MODE loads none and for
    NOISE_SQRT2A, except on the flat grid's ROW_DIV 3 and 4: there ``sqrt(2 a)``, taken of the loaded scales (one
    per row, not per element) before the per-element select of ROW_DIV 4 and the repeat of ROW_DIV 3."""
    FLAT: tl.constexpr = not ROW_GRID
    POW2_A: tl.constexpr = FLAT and ROW_DIV == 3 and STEP_MODE == SCALE_ROWS
    if POW2_A:
        a, ab = _pow2_tile(step_ptr, rows, mask, left, EVEN, COMPUTE, VEC, ROW_SHIFT, NOISE_MODE == NOISE_SQRT2A)
    else:
        a = _load_scale(
            step_val, step_ptr, rows, STEP_MODE, mask, COMPUTE, ROW_GRID, LANES, EVEN, left, VEC, ROW_DIV, cut, False,
            ROW_SHIFT,
        )  # fmt: skip
    if NOISE_MODE == NOISE_NONE:
        b = a
    elif NOISE_MODE == NOISE_SQRT2A and POW2_A:
        b = ab
    elif NOISE_MODE == NOISE_SQRT2A and FLAT and ROW_DIV == 4:
        b = tl.sqrt(2.0 * a)  # of the first row's scale (the next row's below), before the select
    elif NOISE_MODE == NOISE_SQRT2A:
        b = a  # _step_body takes sqrt(2 a) (after the loads' branches: fp64 with a head 95.81 -> 94.38 against here)
    elif FLAT and ROW_DIV == 3 and NOISE_MODE == SCALE_ROWS:
        b, _ = _pow2_tile(noise_scale_ptr, rows, mask, left, EVEN, COMPUTE, VEC, ROW_SHIFT, False)
    else:
        b = _load_scale(
            noise_val, noise_scale_ptr, rows, NOISE_MODE, mask, COMPUTE, ROW_GRID, LANES, EVEN, left, VEC, ROW_DIV,
            cut, False, ROW_SHIFT,
        )  # fmt: skip
    if FLAT and ROW_DIV == 4:
        # a tile row's elements from column `cut` on are the next row's (tiles.pair_rows): its scales, selected
        if STEP_MODE == SCALE_ROWS:
            a1 = _load_scale(
                step_val, step_ptr, rows, STEP_MODE, mask, COMPUTE, ROW_GRID, LANES, EVEN, left, VEC, ROW_DIV, cut,
                True,
            )  # fmt: skip
            if NOISE_MODE == NOISE_SQRT2A:
                b = _pick_rows(offs, cut, b, tl.sqrt(2.0 * a1), LANES)
            a = _pick_rows(offs, cut, a, a1, LANES)
        if NOISE_MODE == SCALE_ROWS:
            b1 = _load_scale(
                noise_val, noise_scale_ptr, rows, NOISE_MODE, mask, COMPUTE, ROW_GRID, LANES, EVEN, left, VEC,
                ROW_DIV, cut, True,
            )  # fmt: skip
            b = _pick_rows(offs, cut, b, b1, LANES)
    return a, b


@triton.jit
def _pow2_col(ptr, rows, mask, left, EVEN: tl.constexpr, COMPUTE: tl.constexpr, VEC: tl.constexpr, SHIFT: tl.constexpr,
              J: tl.constexpr):  # fmt: skip
    """Scale J of each tile row of rows of 2**SHIFT elements (``[R]``: _load_scale's ROW_DIV 3)."""
    return _load_scale(0.0, ptr, rows, SCALE_ROWS, mask, COMPUTE, False, False, EVEN, left, VEC, 3, J, False, SHIFT)


@triton.jit
def _pow2_tile(ptr, rows, mask, left, EVEN: tl.constexpr, COMPUTE: tl.constexpr, VEC: tl.constexpr, SHIFT: tl.constexpr,
               SQRT2: tl.constexpr):  # fmt: skip
    """The ``[R, VEC]`` scales of rows of 2**SHIFT < VEC elements (ROW_DIV 3) and, SQRT2, their ``sqrt(2 a)``: W =
    VEC >> SHIFT loads per tile row (one per row), joined column by column (tiles.join4, _join_halves: in-thread),
    the square roots taken once per row. (One ``[R, W]`` load and in-thread repeats by ``tl.join`` compiled to
    60.5 instructions per element, the bf16 step with a clamp and sqrt(2 a): layout conversions.)"""
    c0 = _pow2_col(ptr, rows, mask, left, EVEN, COMPUTE, VEC, SHIFT, 0)
    c1 = c0
    c2 = c0
    c3 = c0
    if (VEC >> SHIFT) >= 2:
        c1 = _pow2_col(ptr, rows, mask, left, EVEN, COMPUTE, VEC, SHIFT, 1)
    if (VEC >> SHIFT) >= 4:
        c2 = _pow2_col(ptr, rows, mask, left, EVEN, COMPUTE, VEC, SHIFT, 2)
        c3 = _pow2_col(ptr, rows, mask, left, EVEN, COMPUTE, VEC, SHIFT, 3)
    c4 = c0
    c5 = c0
    c6 = c0
    c7 = c0
    if (VEC >> SHIFT) == 8:
        c4 = _pow2_col(ptr, rows, mask, left, EVEN, COMPUTE, VEC, SHIFT, 4)
        c5 = _pow2_col(ptr, rows, mask, left, EVEN, COMPUTE, VEC, SHIFT, 5)
        c6 = _pow2_col(ptr, rows, mask, left, EVEN, COMPUTE, VEC, SHIFT, 6)
        c7 = _pow2_col(ptr, rows, mask, left, EVEN, COMPUTE, VEC, SHIFT, 7)
    t = _repeat_cols(c0, c1, c2, c3, c4, c5, c6, c7, VEC, SHIFT)
    s = t
    if SQRT2:
        s0 = tl.sqrt(2.0 * c0)
        s1 = s0
        s2 = s0
        s3 = s0
        s4 = s0
        s5 = s0
        s6 = s0
        s7 = s0
        if (VEC >> SHIFT) >= 2:
            s1 = tl.sqrt(2.0 * c1)
        if (VEC >> SHIFT) >= 4:
            s2 = tl.sqrt(2.0 * c2)
            s3 = tl.sqrt(2.0 * c3)
        if (VEC >> SHIFT) == 8:
            s4 = tl.sqrt(2.0 * c4)
            s5 = tl.sqrt(2.0 * c5)
            s6 = tl.sqrt(2.0 * c6)
            s7 = tl.sqrt(2.0 * c7)
        s = _repeat_cols(s0, s1, s2, s3, s4, s5, s6, s7, VEC, SHIFT)
    return t, s


@triton.jit
def _repeat_cols(c0, c1, c2, c3, c4, c5, c6, c7, VEC: tl.constexpr, SHIFT: tl.constexpr):
    """The ``[R, VEC]`` tile whose column l is ``c[l >> SHIFT]`` (``[R]`` columns; those past VEC >> SHIFT unused)."""
    if SHIFT == 0:
        t = join4(c0, c1, c2, c3)
        if VEC == 8:
            t = _join_halves(t, join4(c4, c5, c6, c7))
    elif SHIFT == 1:
        t = join4(c0, c0, c1, c1)
        if VEC == 8:
            t = _join_halves(t, join4(c2, c2, c3, c3))
    else:
        t = _join_halves(join4(c0, c0, c0, c0), join4(c1, c1, c1, c1))
    return t


@triton.jit
def _pick_rows(offs, cut, v0, v1, LANES: tl.constexpr):
    """The ``[R, VEC]`` tile (``offs``'s) of ``v1`` (``[R, 1]``) from column ``cut`` on, ``v0`` before.

    Built column by column from ``[R]`` selects and joined (tiles.join4, _join_halves: in-thread, each tile row in
    its thread as the loads and the noise). A ``[R, VEC]`` select against ``tl.arange(0, VEC)[None, :]`` or the
    tile's offsets compiled (Triton 3.9, sm_90) to column 0's select for every column: the LLVM IR held one
    ``cut < 1`` per tile row and multiplied each tile row by one scale, a wrong result the interpreter does not
    show. Column 0 is always the first row's (``cut >= 1``)."""
    R: tl.constexpr = cut.shape[0]
    c = tl.reshape(cut, (R,))
    w0 = tl.reshape(v0, (R,))
    w1 = tl.reshape(v1, (R,))
    t = join4(w0, tl.where(c <= 1, w1, w0), tl.where(c <= 2, w1, w0), tl.where(c <= 3, w1, w0))
    if offs.shape[1] == 8:
        hi = join4(
            tl.where(c <= 4, w1, w0), tl.where(c <= 5, w1, w0), tl.where(c <= 6, w1, w0), tl.where(c <= 7, w1, w0)
        )
        t = _join_halves(t, hi)
    return t


@triton.jit
def _load(ptrs, mask, EVEN: tl.constexpr, LANES: tl.constexpr = False):
    # No `other=`: masked lanes are never stored, so they need no defined value. EVEN (every tile full)
    # drops the mask, and with it the zeroing of the masked registers and the compares.
    if EVEN:
        return tile_load(ptrs, None, LANES)
    elif LANES:
        return tile_load(ptrs, mask, LANES)
    else:
        return tl.load(ptrs, mask=mask)


@triton.jit
def _halves(t):
    """The ``[R, 4]`` column halves (0-3, 4-7) of an ``[R, 8]`` tile (in-thread: a split, no data movement)."""
    return tl.split(tl.permute(tl.reshape(t, (t.shape[0], 2, 4)), (0, 2, 1)))


@triton.jit
def _join_halves(a, b):
    """The ``[R, 8]`` tile whose column halves are ``a`` and ``b`` (the inverse of :func:`_halves`)."""
    return tl.reshape(tl.permute(tl.join(a, b), (0, 2, 1)), (a.shape[0], 8))


@triton.jit
def _load_tile(
    ptr,
    start,
    offs,
    mask,
    left,
    EVEN: tl.constexpr,
    LANES: tl.constexpr,
    COMPUTE: tl.constexpr,
    HALVES: tl.constexpr,
):
    """The tile ``ptr[start + offs]`` widened to COMPUTE. A 32-bit operand of an 8-wide tile (beside a 16-bit
    one) is read as two 4-wide (16-byte) halves and joined: each thread then holds whole tile rows of it, as
    of the 16-bit operand and the noise; one 8-wide load gets a layout of 4-wide thread pieces, and the
    compiler moves the tile through shared memory to meet the others (`fastlangevin kernels`). HALVES: the
    tile's valid elements are ``offs < left`` (no head)."""
    if HALVES and offs.shape[1] == 8 and ptr.dtype.element_ty.primitive_bitwidth == 32:
        oa = tl.arange(0, offs.shape[0])[:, None] * 8 + tl.arange(0, 4)[None, :]
        ob = oa + 4
        if EVEN:
            xa = tl.load(ptr + start + oa)
            xb = tl.load(ptr + start + ob)
        else:
            xa = tl.load(ptr + start + oa, mask=oa < left)
            xb = tl.load(ptr + start + ob, mask=ob < left)
        return _join_halves(xa.to(COMPUTE), xb.to(COMPUTE))
    # bf16 widened by a shift or a mask of the loaded word (tiles.widen: one integer op per element)
    return widen(_load(ptr + start + offs, mask, EVEN, LANES), COMPUTE)


@triton.jit
def _store_tile(
    ptr,
    start,
    offs,
    values,
    mask,
    left,
    EVEN: tl.constexpr,
    LANES: tl.constexpr,
    HALVES: tl.constexpr,
):
    """``ptr[start + offs] = values`` (masked unless EVEN); in two 4-wide halves for a 32-bit ``ptr`` of an
    8-wide tile (see :func:`_load_tile`)."""
    if HALVES and offs.shape[1] == 8 and ptr.dtype.element_ty.primitive_bitwidth == 32:
        oa = tl.arange(0, offs.shape[0])[:, None] * 8 + tl.arange(0, 4)[None, :]
        ob = oa + 4
        va, vb = _halves(values)
        if EVEN:
            tl.store(ptr + start + oa, va)
            tl.store(ptr + start + ob, vb)
        else:
            tl.store(ptr + start + oa, va, mask=oa < left)
            tl.store(ptr + start + ob, vb, mask=ob < left)
    elif EVEN:
        tile_store(ptr + start + offs, values, None, LANES)
    elif LANES:
        tile_store(ptr + start + offs, values, mask, LANES)
    else:
        tl.store(ptr + start + offs, values, mask=mask)


@triton.jit
def _langevin_step_kernel(
    x_ptr,
    score_ptr,
    out_ptr,
    seed_ptr,
    noise_ptr,  # injected noise (test hook) when NOISE_FROM_PTR, else unused
    step_ptr,
    noise_scale_ptr,
    step_val,
    noise_val,
    lo,
    hi,
    n_elements,
    row_size,
    group_offset,
    div_magic,  # tiles.row_magic(row_size) when ROW_DIV, else unused
    HEAD: tl.constexpr,
    STEP_MODE: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    HAS_CLAMP: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    ROW_GRID: tl.constexpr = False,
    EVEN: tl.constexpr = False,
    DIV32: tl.constexpr = False,
    ROW_DIV: tl.constexpr = 0,
    ROW_SHIFT: tl.constexpr = 0,
):
    # A start mid-way into a Philox group: unaligned (scalar) accesses, column by column, so that each row
    # of four stays in the thread that drew its Philox group (tiles.tile_load).
    LANES: tl.constexpr = HEAD != 0 and VEC == 4
    # Scalar or 0-d scales: the tiles of a mid-group start run on aligned memory rows (_head_interior). Not float64
    # (8 warps of 16 doubles a thread: its layout does not keep a thread's rows whole; `fastlangevin kernels`, 35.12
    # -> 51.62 instructions per element)
    HEAD_ALIGNED: tl.constexpr = (
        HEAD != 0 and not ROW_GRID and STEP_MODE != SCALE_ROWS and NOISE_MODE != SCALE_ROWS and COMPUTE != tl.float64
    )
    if ROW_GRID:
        # Per-row scales on a (row, chunk) grid of group-aligned rows (HEAD == 0, row_size % 4 == 0): the
        # row is the program's, so each scale is one scalar load, not a per-element 64-bit division.
        row = tl.program_id(0).to(tl.int64)
        start, offs, mask, _ = row_tile(row, tl.program_id(1), row_size, 4 * group_offset, BLOCK, True, VEC)
        # the tile's first group from its local base (a multiple of 4 here): row_tile's (4 * group_offset +
        # row * row_size) >> 2 + chunk * GROUPS is the same integer, from a second 64-bit multiply-add
        first_group = group_offset + (start >> 2)
        rows = row
        cut = None
        # the row's columns from this chunk on (not (row + 1) * row_size - start: one 64-bit product less)
        left = tl.minimum(row_size - tl.program_id(1).to(tl.int64) * BLOCK, BLOCK).to(tl.int32)
    else:
        start, offs, mask, first_group = flat_tile(group_offset, n_elements, HEAD, BLOCK, VEC)
        # per-row scales only (dead code otherwise): ROW_DIV 0 divides (tiles.tile_rows), 1 multiplies per element,
        # 2 per tile row (tiles.magic_rows), 3 shifts (rows of 2**ROW_SHIFT < VEC elements, a group-aligned start:
        # `start` is a multiple of the row, so the tile's rows are consecutive from start >> ROW_SHIFT and each
        # scale a load at a constant offset from one address), 4 multiplies per tile row for its first row and
        # finds the column where the next begins (tiles.pair_rows: rows of >= VEC - 1 elements)
        cut = None
        if ROW_DIV == 0:
            rows = tile_rows(start, offs, row_size, DIV32)
        elif ROW_DIV == 3:
            rows = start >> ROW_SHIFT  # the tile's first row (_load_scale)
        elif ROW_DIV == 4:
            rows, cut = pair_rows(start, offs, div_magic, row_size, HEAD)
        elif ROW_DIV == 5:  # ROW_DIV 3's rows, each element's (gathered per element)
            rows = (start >> ROW_SHIFT).to(tl.int32) + (offs >> ROW_SHIFT)
        else:
            rows = magic_rows(start, offs, div_magic, ROW_DIV == 2)
        left = tl.minimum(n_elements - start, BLOCK).to(tl.int32)  # the tile's elements in the tensor

    if HEAD != 0 or not EVEN:
        # A mid-group start: only program 0 (the head) and the last tile need element masks; every other tile
        # runs the body unmasked (column loads and stores without predicates). The masked copy comes first,
        # so ptxas lays it out as the jumped-over one (`fastlangevin kernels`: bf16 step with a clamp and a head
        # 44.94 -> 38.38 instructions per element at 8 warps).
        # The row grid alike: only a row's last chunk is partial, so its full chunks run the EVEN body (stores
        # without predicates; a branch on the loads alone kept 16 store masks live across the body and, for an fp32
        # state beside a 16-bit score, repacked the score's halves after the join: `fastlangevin kernels`, fp32
        # state, fp16 score, per-row scales, clamp 32.64 -> 31.30 instructions per element, 253 -> 214 registers).
        if HEAD != 0:
            masked = (tl.program_id(0) == 0) | (left < BLOCK)
            if HEAD_ALIGNED:
                # the aligned interior also reads the HEAD elements past the tile (_head_interior)
                masked = (tl.program_id(0) == 0) | (n_elements - start < BLOCK + HEAD)
        elif ROW_GRID:
            # the row's last chunk, the one partial (not EVEN): a 32-bit compare of the chunk index, not of the
            # 64-bit count left (`fastlangevin kernels`: fp32, per-row a and b, clamp 32.19 -> 32.09)
            masked = tl.program_id(1) == tl.num_programs(1) - 1
        else:
            # a group-aligned flat launch: its last tile is the one partial; the others run the EVEN body, stores
            # without predicates too (`fastlangevin kernels`: fp32 with 0-d scales and a clamp 32.25 -> 31.6, the
            # fp32 state beside an fp16 score 32.34 -> 31.2, against a branch on the loads alone)
            masked = left < BLOCK
        if masked and HEAD_ALIGNED:
            _head_interior(
                x_ptr, score_ptr, out_ptr, seed_ptr, noise_ptr, step_ptr, noise_scale_ptr, step_val, noise_val,
                lo, hi, start, first_group, HEAD, STEP_MODE, NOISE_MODE, NOISE_FROM_PTR, HAS_CLAMP, COMPUTE, BLOCK,
                VEC, False, n_elements,
            )  # fmt: skip
        elif masked:
            _step_body(
                x_ptr, score_ptr, out_ptr, seed_ptr, noise_ptr, step_ptr, noise_scale_ptr, step_val, noise_val,
                lo, hi, start, offs, mask, left, rows, first_group, HEAD, STEP_MODE, NOISE_MODE, NOISE_FROM_PTR,
                HAS_CLAMP, COMPUTE, BLOCK, VEC, ROW_GRID, False, LANES, ROW_DIV, cut, ROW_SHIFT,
            )  # fmt: skip
        elif HEAD_ALIGNED:
            _head_interior(
                x_ptr, score_ptr, out_ptr, seed_ptr, noise_ptr, step_ptr, noise_scale_ptr, step_val, noise_val,
                lo, hi, start, first_group, HEAD, STEP_MODE, NOISE_MODE, NOISE_FROM_PTR, HAS_CLAMP, COMPUTE, BLOCK,
                VEC,
            )  # fmt: skip
        else:
            _step_body(
                x_ptr, score_ptr, out_ptr, seed_ptr, noise_ptr, step_ptr, noise_scale_ptr, step_val, noise_val,
                lo, hi, start, offs, mask, left, rows, first_group, HEAD, STEP_MODE, NOISE_MODE, NOISE_FROM_PTR,
                HAS_CLAMP, COMPUTE, BLOCK, VEC, ROW_GRID, True, LANES, ROW_DIV, cut, ROW_SHIFT,
            )  # fmt: skip
    else:
        _step_body(
            x_ptr, score_ptr, out_ptr, seed_ptr, noise_ptr, step_ptr, noise_scale_ptr, step_val, noise_val,
            lo, hi, start, offs, mask, left, rows, first_group, HEAD, STEP_MODE, NOISE_MODE, NOISE_FROM_PTR,
            HAS_CLAMP, COMPUTE, BLOCK, VEC, ROW_GRID, EVEN, LANES, ROW_DIV, cut, ROW_SHIFT,
        )  # fmt: skip


@triton.jit
def _step_body(
    x_ptr,
    score_ptr,
    out_ptr,
    seed_ptr,
    noise_ptr,
    step_ptr,
    noise_scale_ptr,
    step_val,
    noise_val,
    lo,
    hi,
    start,
    offs,
    mask,
    left,
    rows,
    first_group,
    HEAD: tl.constexpr,
    STEP_MODE: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    HAS_CLAMP: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    ROW_GRID: tl.constexpr,
    EVEN: tl.constexpr,
    LANES: tl.constexpr,
    ROW_DIV: tl.constexpr,
    cut,
    ROW_SHIFT: tl.constexpr,
):
    """The update of one tile (see :func:`_langevin_step_kernel`); EVEN: every element of it is valid."""
    # An fp32 state in an 8-wide tile (beside a 16-bit score) is read and written in 4-wide halves (_load_tile);
    # an fp32 score beside a 16-bit state is not: its one load costs fewer instructions (`fastlangevin kernels`).
    HALVES: tl.constexpr = HEAD == 0
    # Masks only where the tile is partial: the kernel runs this body as an unmasked (EVEN) copy for full tiles and
    # a masked one for the launch's partial tiles (_langevin_step_kernel). Inside the masked copy, branching once
    # more on the loads alone (as the group-aligned launches did before) compiled to the same code (`fastlangevin
    # kernels --subset`), so there is none.
    x = _load_tile(x_ptr, start, offs, mask, left, EVEN, LANES, COMPUTE, HALVES)
    s = _load_tile(score_ptr, start, offs, mask, left, EVEN, LANES, COMPUTE, False)
    a, b = _load_scales(
        step_val, step_ptr, noise_val, noise_scale_ptr, rows, STEP_MODE, NOISE_MODE, mask, COMPUTE, ROW_GRID,
        LANES, EVEN, left, VEC, ROW_DIV, cut, ROW_SHIFT, offs,
    )  # fmt: skip
    out = x + a * s
    if NOISE_MODE != NOISE_NONE:
        if NOISE_MODE == NOISE_SQRT2A and (ROW_GRID or (ROW_DIV != 3 and ROW_DIV != 4)):
            b = tl.sqrt(2.0 * a)  # (ROW_DIV 3 and 4: per row, in _load_scales)
        if NOISE_FROM_PTR:
            z = _load(noise_ptr + start + offs, mask, EVEN, LANES).to(tl.float32)
        else:
            z = normal_tile(seed_ptr, first_group, BLOCK // 4, VEC, LANES, True)
        out = out + b * z.to(COMPUTE)
    OUT: tl.constexpr = out_ptr.dtype.element_ty
    if HAS_CLAMP and OUT.primitive_bitwidth == 16 and COMPILED:
        # Clamp after the rounding to the 16-bit output, against the bounds rounded the same way: rounding
        # is monotone, so round(clamp(v, lo, hi)) == clamp(round(v), round(lo), round(hi)) for every v (NaN
        # stays NaN), and the 16-bit min/max work on two elements per instruction (HMNMX2: -1 per element).
        # Compiled launches only: the interpreter's 16-bit min/max are wrong (Triton 3.9), so it clamps in
        # fp32; tests/test_step_launch.py checks the identity in PyTorch.
        out = tl.clamp(out.to(OUT), tl.cast(lo, OUT), tl.cast(hi, OUT), propagate_nan=tl.PropagateNan.ALL)
    else:
        if HAS_CLAMP:
            out = tl.clamp(out, lo, hi, propagate_nan=tl.PropagateNan.ALL)
        out = out.to(OUT)
    _store_tile(out_ptr, start, offs, out, mask, left, EVEN, LANES, HALVES)


@triton.jit
def _finish(out, lo, hi, HAS_CLAMP: tl.constexpr, OUT: tl.constexpr):
    """The clamp and the cast to the output dtype (see :func:`_step_body`)."""
    if HAS_CLAMP and OUT.primitive_bitwidth == 16 and COMPILED:
        out = tl.clamp(out.to(OUT), tl.cast(lo, OUT), tl.cast(hi, OUT), propagate_nan=tl.PropagateNan.ALL)
    else:
        if HAS_CLAMP:
            out = tl.clamp(out, lo, hi, propagate_nan=tl.PropagateNan.ALL)
        out = out.to(OUT)
    return out


@triton.jit
def _clamp_pairs(v, lo, hi):
    """``tl.clamp(v, lo, hi, propagate_nan=ALL)`` of a 16-bit tile (compiled launches): the same packed min/max
    (``max.NaN``/``min.NaN`` on ``bf16x2``/``f16x2``, HMNMX2), on pairs of neighbouring columns. From tl.clamp
    the compiler paired a mid-group tile's elements by their Philox groups (odd heads: pairs across the 32-bit
    words of the stores), and re-paired the results with one PRMT per two elements (`fastlangevin kernels`: bf16
    with a clamp and a head of 1 or 3, 31.95 -> 31.64)."""
    if v.dtype == tl.bfloat16:
        asm: tl.constexpr = "{ .reg .b32 t; max.NaN.bf16x2 t, $1, $2; min.NaN.bf16x2 $0, t, $3; }"
    else:
        asm: tl.constexpr = "{ .reg .b32 t; max.NaN.f16x2 t, $1, $2; min.NaN.f16x2 $0, t, $3; }"
    lo_t = tl.full(v.shape, lo, tl.float32).to(v.dtype)
    hi_t = tl.full(v.shape, hi, tl.float32).to(v.dtype)
    return tl.inline_asm_elementwise(asm, "=r,r,r,r", [v, lo_t, hi_t], dtype=v.dtype, is_pure=True, pack=2)


@triton.jit
def _bits(v):
    """``v``'s bits as an integer of its width (the row picks below sum integers: ``v + 0`` folds away)."""
    if v.dtype.primitive_bitwidth == 16:
        w = v.to(tl.int16, bitcast=True)
    elif v.dtype.primitive_bitwidth == 64:
        w = v.to(tl.int64, bitcast=True)
    else:
        w = v.to(tl.int32, bitcast=True)
    return w


@triton.jit
def _row(v, k: tl.constexpr):
    """Row ``k`` (dim 0, held in each thread's registers) of ``v``: a sum of one nonzero term per thread, which
    LLVM folds into a register choice (no instruction)."""
    w = _bits(v)
    pick = tl.where(tl.arange(0, v.shape[0])[:, None] == k, w, 0)
    return tl.sum(pick, axis=0, dtype=w.dtype).to(v.dtype, bitcast=True)


@triton.jit
def _row3(v, k: tl.constexpr):
    """:func:`_row` of a 3-D tile."""
    r = tl.arange(0, v.shape[0])[:, None, None]
    w = _bits(v)
    return tl.sum(tl.where(r == k, w, 0), axis=0, dtype=w.dtype).to(v.dtype, bitcast=True)


@triton.jit
def _join4(c0, c1, c2, c3):
    """tiles.join4 of ``[R, T]`` columns: the ``[R, T, 4]`` tile whose last index ``l`` is ``c_l`` (in-thread)."""
    return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), (c0.shape[0], c0.shape[1], 4))


@triton.jit
def _shift_rows(v):
    """``w[j] = v[j - 1]`` along dim 0 of an ``[R, T]`` tile (``w[0] = v[0]``), in-thread: folds as :func:`_row`."""
    R: tl.constexpr = v.shape[0]
    i = tl.arange(0, R)[:, None, None]
    j = tl.arange(0, R)[None, :, None]
    w = _bits(v)
    pick = tl.where(i == tl.maximum(j - 1, 0), w[:, None, :], 0)
    return tl.sum(pick, axis=0, dtype=w.dtype).to(v.dtype, bitcast=True)


@triton.jit
def _lane(n0, n1, n2, n3, L: tl.constexpr):
    """Output ``L`` of a Philox group's four normals."""
    if L == 0:
        v = n0
    elif L == 1:
        v = n1
    elif L == 2:
        v = n2
    else:
        v = n3
    return v


@triton.jit
def _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD: tl.constexpr, W: tl.constexpr, C: tl.constexpr):
    """Column ``C`` of :func:`_head_interior`'s memory rows ``W_j`` (``[M, T]``) and of its row ``W_M`` (``[T]``)
    from the normals of the groups ``(W / 4) j`` (``e*``) and, for W 8, ``2 j + 1`` (``o*``) of each thread's
    memory rows ``j``: the column is tile position ``W (j - 1) + HEAD + C`` of the thread's, output ``L`` of its
    group ``(W / 4) (j - 1) + Q``; ``Q < W / 4`` is a group of the row before (the rows shifted one down; row
    ``W_M`` takes the thread's last row), ``Q = W / 4`` the row's own."""
    Q: tl.constexpr = (HEAD + C) // 4
    L: tl.constexpr = (HEAD + C) % 4
    if Q % (W // 4) == 0:
        n = _lane(e0, e1, e2, e3, L)
    else:
        n = _lane(o0, o1, o2, o3, L)
    if Q < W // 4:
        col = _shift_rows(n)
    else:
        col = n
    return col, _row(n, n.shape[0] - 1)


@triton.jit
def _join_cols(c0, c1, c2, c3, c4, c5, c6, c7, W: tl.constexpr):
    """The tile (last index the column, in-thread) of ``W`` (4 or 8) columns ``c*`` (2-D ``[M, T]``)."""
    if W == 8:
        # nested joins, the last the column's lowest bit: the tile's registers in column order, as the loaded
        # rows' (a join of two 4-wide halves puts column 4 next to column 0, and the 16-bit packing of the
        # results then pairs the wrong neighbours: one PRMT per two elements to re-pair them for the stores)
        t = tl.join(tl.join(tl.join(c0, c4), tl.join(c2, c6)), tl.join(tl.join(c1, c5), tl.join(c3, c7)))
        t = tl.reshape(t, (c0.shape[0], c0.shape[1], 8))
    else:
        t = _join4(c0, c1, c2, c3)
    return t


@triton.jit
def _join_cols1(c0, c1, c2, c3, c4, c5, c6, c7, W: tl.constexpr):
    """:func:`_join_cols` of 1-D ``[T]`` columns: a ``[T, W]`` tile."""
    if W == 8:
        t = tl.join(tl.join(tl.join(c0, c4), tl.join(c2, c6)), tl.join(tl.join(c1, c5), tl.join(c3, c7)))
        t = tl.reshape(t, (c0.shape[0], 8))
    else:
        t = join4(c0, c1, c2, c3)
    return t


@triton.jit
def _head_normals(seed_ptr, first_group, HEAD: tl.constexpr, R: tl.constexpr, T: tl.constexpr, W: tl.constexpr):
    """The normals of :func:`_head_interior`'s memory rows: (``[M, T, W]`` tile of rows ``W_0 .. W_{M-1}``,
    ``[T, W]`` row ``W_M``; ``M = 4 R / W``). Thread ``t`` draws Philox groups ``first_group + R t + g``
    (``g < R``) once each; :func:`_noise_col` permutes their outputs onto the memory columns in registers
    (``W_0``'s first ``W - HEAD`` columns are the thread before's, ``W_M``'s last HEAD the next one's: not
    stored)."""
    words = seed_ptr.to(tl.pointer_type(tl.uint32))
    k0 = tl.load(words)
    k1 = tl.load(words + 1)
    M: tl.constexpr = 4 * R // W
    grp = (tl.arange(0, T)[None, :] * R + tl.arange(0, M)[:, None] * (W // 4)).to(tl.uint32)
    first_group = first_group.to(tl.int64)
    g_lo = first_group.to(tl.uint32)
    g_hi = (first_group >> 32).to(tl.uint32)
    x_lo = g_hi ^ k0
    c0 = g_lo + grp
    # as normal_tile: the tile whose counters' low words wrap selects the high word per counter (cold)
    if g_lo > 0xFFFFFFFF - (R * T - 1):
        x_hi = (g_hi + 1) ^ k0
        e0, e1, e2, e3 = _randn4x_rounds(k0, k1, c0, tl.where(c0 < g_lo, x_hi, x_lo))
        if W == 8:
            o0, o1, o2, o3 = _randn4x_rounds(k0, k1, c0 + 1, tl.where(c0 + 1 < g_lo, x_hi, x_lo))
        else:
            o0, o1, o2, o3 = e0, e1, e2, e3
    else:
        e0, e1, e2, e3 = _randn4x_rounds(k0, k1, c0, x_lo)
        if W == 8:
            o0, o1, o2, o3 = _randn4x_rounds(k0, k1, c0 + 1, x_lo)
        else:
            o0, o1, o2, o3 = e0, e1, e2, e3
    z0, y0 = _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD, W, 0)
    z1, y1 = _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD, W, 1)
    z2, y2 = _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD, W, 2)
    z3, y3 = _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD, W, 3)
    if W == 8:
        z4, y4 = _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD, W, 4)
        z5, y5 = _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD, W, 5)
        z6, y6 = _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD, W, 6)
        z7, y7 = _noise_col(e0, e1, e2, e3, o0, o1, o2, o3, HEAD, W, 7)
    else:
        z4, y4, z5, y5, z6, y6, z7, y7 = z0, y0, z0, y0, z0, y0, z0, y0
    z = _join_cols(z0, z1, z2, z3, z4, z5, z6, z7, W)
    e = _join_cols1(y0, y1, y2, y3, y4, y5, y6, y7, W)
    return z, e


@triton.jit
def _head_interior(
    x_ptr,
    score_ptr,
    out_ptr,
    seed_ptr,
    noise_ptr,
    step_ptr,
    noise_scale_ptr,
    step_val,
    noise_val,
    lo,
    hi,
    start,
    first_group,
    HEAD: tl.constexpr,
    STEP_MODE: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    HAS_CLAMP: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    EVEN: tl.constexpr = True,
    n_elements=0,
):
    """An interior tile of a mid-group start (every element valid, and the HEAD elements past it exist) with
    aligned accesses. The tile is local elements ``start .. start + BLOCK`` (Philox groups ``first_group ..``),
    ``start + HEAD`` a multiple of BLOCK. Thread ``t`` owns its ``4 R`` elements from ``4 R t`` (R groups: 8 for
    W 4, 16 for W 8, as the group-aligned launches' ELEMS_PER_THREAD_GPU) and reads the W-element (16-byte
    for 32-bit data in W 4, 16-bit in W 8) memory rows ``W_j = start + HEAD - W + 4 R t + W j + [0, W)``,
    ``j = 0 .. M`` (M = 4 R / W): vector loads where the column-by-column accesses (tiles.tile_load) read one
    element each. It stores ``W_1 .. W_{M-1}`` whole, the last HEAD elements of ``W_0`` and the first W - HEAD of
    ``W_M`` (the rest of those two rows are its neighbours'). The noise is the same: one draw per group, its
    outputs permuted in registers (:func:`_head_normals`)."""
    R: tl.constexpr = min(8 * (VEC // 4), BLOCK // 4)
    # 16-byte rows: 8 elements when both operands are 16-bit; 4 beside an fp32 one (an 8-wide fp32 row would take
    # two threads' 16-byte pieces and the noise a shared-memory trip), at 64 elements a thread still (VEC 8)
    SAME: tl.constexpr = x_ptr.dtype.element_ty.primitive_bitwidth == score_ptr.dtype.element_ty.primitive_bitwidth
    W: tl.constexpr = VEC if SAME else 4
    T: tl.constexpr = BLOCK // (4 * R)
    M: tl.constexpr = 4 * R // W
    # [M, T, W] with the rows first: the loads' layout then keeps a thread's M rows in its registers (lanes
    # along T; a [T, M, W] tile would spread the rows over the lanes)
    woffs = tl.arange(0, M)[:, None, None] * W + tl.arange(0, T)[None, :, None] * (4 * R)
    woffs += tl.arange(0, W)[None, None, :]
    c = tl.arange(0, W)[None, :]
    eoffs = tl.arange(0, T)[:, None] * (4 * R) + (4 * R) + c
    base = start + HEAD - W
    if EVEN:
        wmask = None
        emask = None
    else:
        # program 0 and the last tiles: the local elements in [0, n_elements) only (scalar accesses; cold)
        first = tl.maximum(-base, 0).to(tl.int32)
        last = tl.minimum(n_elements - base, BLOCK + W).to(tl.int32)
        wmask = (woffs >= first) & (woffs < last)
        emask = (eoffs >= first) & (eoffs < last)
    x = widen(tl.load(x_ptr + base + woffs, mask=wmask), COMPUTE)
    s = widen(tl.load(score_ptr + base + woffs, mask=wmask), COMPUTE)
    xe = widen(tl.load(x_ptr + base + eoffs, mask=emask), COMPUTE)
    se = widen(tl.load(score_ptr + base + eoffs, mask=emask), COMPUTE)
    a, b = _load_scales(
        step_val, step_ptr, noise_val, noise_scale_ptr, 0, STEP_MODE, NOISE_MODE, None, COMPUTE, False, False,
        True, 0, 4, 0, None, 0, None,
    )  # fmt: skip
    out = x + a * s
    oute = xe + a * se
    if NOISE_MODE != NOISE_NONE:
        if NOISE_MODE == NOISE_SQRT2A:
            b = tl.sqrt(2.0 * a)
        if NOISE_FROM_PTR:
            z = tl.load(noise_ptr + base + woffs, mask=wmask).to(tl.float32)
            ze = tl.load(noise_ptr + base + eoffs, mask=emask).to(tl.float32)
        else:
            z, ze = _head_normals(seed_ptr, first_group, HEAD, R, T, W)
        out = out + b * z.to(COMPUTE)
        oute = oute + b * ze.to(COMPUTE)
    OUT: tl.constexpr = out_ptr.dtype.element_ty
    if HAS_CLAMP and OUT.primitive_bitwidth == 16 and COMPILED and HEAD % 2 == 1:
        out = _clamp_pairs(out.to(OUT), lo, hi)
        oute = _clamp_pairs(oute.to(OUT), lo, hi)
    else:
        out = _finish(out, lo, hi, HAS_CLAMP, OUT)
        oute = _finish(oute, lo, hi, HAS_CLAMP, OUT)
    # W_1 .. W_{M-1} whole (the mask is one per row: the stores stay vectors, and row 0's never runs)
    wkeep = tl.arange(0, M)[:, None, None] > 0
    offs0 = tl.arange(0, T)[:, None] * (4 * R) + c
    keep0 = c >= W - HEAD
    ekeep = c < W - HEAD
    if not EVEN:
        wkeep = wkeep & wmask
        keep0 = keep0 & (offs0 >= first) & (offs0 < last)
        ekeep = ekeep & emask
    tl.store(out_ptr + base + woffs, out, mask=wkeep)
    # W_0's last HEAD elements and W_M's first W - HEAD (scalar stores)
    tl.store(out_ptr + base + offs0, _row3(out, 0), mask=keep0)
    tl.store(out_ptr + base + eoffs, oute, mask=ekeep)


def _scale_launch_args(value, tensor, as_tensor: bool, device):
    """(mode, scalar value, pointer tensor or None) for a scale given as ``value`` or ``tensor``.

    ``as_tensor``: pass a scalar as a 0-d float64 tensor (kernel scalar arguments are fp32;
    float64 runs keep float64 scales that way)."""
    if tensor is None:
        if not as_tensor:
            return modes.SCALE_ARG, value, None
        tensor = torch.tensor(value, dtype=torch.float64, device=device)
    return modes.scale_mode(tensor), 0.0, tensor


def _vec(x, score, elem_offset, step_mode, noise_mode) -> int:
    """The launch's tile-row width: tiles.vec_for at a group-aligned start. A mid-group start with per-row scales
    has scalar accesses: 4-wide tile rows (one Philox group each, loaded column by column, tiles.tile_load) then
    beat 8-wide ones for 16-bit dtypes too. With scalar or 0-d scales its interior tiles read aligned memory rows
    (_head_interior) of 8 elements (16 bytes) when both operands are 16-bit; an fp32 operand keeps 4."""
    if elem_offset % 4 == 0:
        return vec_for(x, score)
    if modes.SCALE_ROWS in (step_mode, noise_mode):
        return 4
    return vec_for(x, score)


def launch_langevin_step(
    x,
    score,
    out,
    seed,
    *,
    step_value,
    step_tensor,
    noise_mode,
    noise_value,
    noise_tensor,
    lo,
    hi,
    row_size,
    elem_offset,
    injected_noise=None,
    block=None,
    vec=None,
    row_grid=None,
):
    """Run the kernel. ``x``, ``score``, ``out`` (and ``injected_noise``) contiguous, same numel.

    Scales: ``*_value`` (float) when ``*_tensor`` is None, else a 0-d or ``[B]`` tensor;
    ``noise_mode``: :data:`modes.NOISE_NONE`, :data:`modes.NOISE_SQRT2A` or a ``SCALE_*``
    mode; ``lo``/``hi``: the clamp (None: none). ``out`` may alias ``x`` (each element is read
    before it is written, by the same program). ``block``, ``vec``, ``row_grid`` override the
    launch shape (tests: the values never depend on it); ``row_grid`` (None: by row length) puts per-row
    scales on a (row, chunk) grid when rows are group-aligned.
    """
    n = x.numel()
    if n == 0:
        return out
    fp64 = x.element_size() == 8  # float64 states: the only 8-byte float dtype
    step_mode, step_val, step_t = _scale_launch_args(step_value, step_tensor, fp64, x.device)
    if noise_mode in (modes.NOISE_NONE, modes.NOISE_SQRT2A):
        noise_val, noise_t = 0.0, None
    else:
        noise_mode, noise_val, noise_t = _scale_launch_args(noise_value, noise_tensor, fp64, x.device)
    grid, consts = _launch_plan(
        n,
        row_size,
        elem_offset,
        step_mode,
        noise_mode,
        fp64,
        x.is_cpu,
        vec or _vec(x, score, elem_offset, step_mode, noise_mode),
        block,
        row_grid,
        # an fp32 operand beside a 16-bit one (8-wide rows: fp32 tiles of 64 registers a thread at 64 elements)
        x.element_size() != score.element_size() and not fp64,
        x.element_size() < score.element_size(),
    )
    # Unused pointer slots get x (never dereferenced: their constexpr mode disables the load).
    _langevin_step_kernel[grid](
        x,
        score,
        out,
        seed,
        injected_noise if injected_noise is not None else x,
        step_t if step_t is not None else x,
        noise_t if noise_t is not None else x,
        step_val,
        noise_val,
        0.0 if lo is None else lo,
        0.0 if hi is None else hi,
        n,
        row_size,
        elem_offset // 4,
        HAS_CLAMP=lo is not None,
        NOISE_FROM_PTR=injected_noise is not None,
        **consts,
    )
    return out


@functools.lru_cache(maxsize=1024)
def _launch_plan(
    n,
    row_size,
    elem_offset,
    step_mode,
    noise_mode,
    fp64,
    interpreted,
    vec,
    block,
    row_grid,
    mixed=False,
    wide_score=False,
):
    """(grid, constexpr and launch keywords) of one launch: a function of these arguments only, cached
    (a sampling loop launches the same shape every step; the keywords are shared: read-only). ``mixed``: the
    state and the score differ in width (an fp32 operand beside a 16-bit one); ``wide_score``: the score is the
    wider."""
    per_row = modes.SCALE_ROWS in (step_mode, noise_mode)
    row_div = 0
    if row_grid is None:
        row_grid = per_row and row_size >= (ROW_GRID_MIN_INTERPRETER if interpreted else ROW_GRID_MIN_GPU)
    row_grid = row_grid and per_row and row_size % 4 == 0 and elem_offset % 4 == 0
    if row_grid:
        rl = row_launch(row_size, elem_offset, interpreted, 16, 0, stream_elems_per_warp(vec))
        grid, blk, options = (n // row_size, rl.n_chunks), block or rl.block, rl.options
        if block:
            grid = (n // row_size, triton.cdiv(row_size, block))
        even = row_size % blk == 0
    else:
        # Per-row scales here find each element's row by a multiply-high (tiles.magic_rows, below 2**31 elements;
        # a division past that), or each tile row's when every tile row lies in one row (ROW_DIV 2: rows a
        # multiple of VEC, a group-aligned start): one row and one scale load per tile row; rows of 1, 2 (or 4
        # in 8-wide rows) by a shift (ROW_DIV 3: one load per row at constant offsets from one address, joined
        # into the tile, sqrt(2 a) per row; `fastlangevin kernels`, rows of 2, bf16 with a clamp and sqrt(2 a):
        # 41.03 -> 36.22 -> 34.66; 33.42 at 64 elements a thread, where fp16 spilled 16 bytes to the stack with two
        # per-row scales, so 32). Where a tile row spans at most two rows (rows of >= VEC
        # - 1), 8-wide tiles and mid-group starts take each tile row's first row and the next (ROW_DIV 4:
        # tiles.pair_rows, a multiply-high and two scale loads per tile row, a compare and a select per element;
        # bf16 with a clamp and sqrt(2 a) 41.03 -> 38.25, fp32 with a head and two per-row scales 44.88 -> 41.53);
        # group-aligned 4-wide (fp32) tiles keep the row per element (ROW_DIV 4 took 41.12 against 39.69: eight
        # tile rows a thread). An fp32 operand beside a 16-bit one keeps its rows of 1, 2, 4 per element (ROW_DIV 5,
        # the shift per element: ROW_DIV 3 left an fp32 state with an fp16 score and one per-row scale at 128
        # registers with a 16-bit half of the score spilled to the stack, 8 bytes, 2 local accesses).
        # Float64 states run 8 warps (32 doubles a thread with per-row scales spill past 255 registers; 16 do
        # not). Per-row scales per element or per pair of rows take 32 elements a thread even in 8-wide rows (64
        # spill: `fastlangevin kernels`, bf16 with a clamp 255 registers, 8 bytes of stack; ROW_DIV 4 with sqrt(2 a)
        # 38.69 with 43 local loads and stores against 38.34 at 32), and 16 with a row per element and a mid-group
        # start (HEAD: scalar accesses in 4-wide rows; 32 took 206 registers with the division; 32 with two rows
        # per tile row: 4-wide rows of four, 165 registers, no local memory). Per tile row they take the
        # group-aligned launch's 64 in 8-wide rows (bf16 with a clamp and sqrt(2 a) 34.12 -> 32.89 at 96 -> 243
        # registers, no local memory) unless an operand is fp32 (32: at 64 the fp32 state with a bf16 score and
        # two per-row scales took 255 registers and 48 bytes of stack, 12 local accesses). Other mid-group starts
        # (scalar or 0-d scales: _head_interior's aligned rows) take the group-aligned launch's elements a thread, 32
        # in 4-wide rows, 64 beside a 16-bit operand (bf16 with a clamp and a head 35.88 -> 31.64 at 236 registers,
        # no local memory; at 32 a thread, 8-byte rows, 33.41).
        head = elem_offset % 4 != 0
        if per_row and n <= MAGIC_DIVIDEND_LIMIT:
            if row_size % vec == 0 and not head:
                row_div = 2
            elif row_size & (row_size - 1) == 0 and not head:  # 1, 2 (or 4 in 8-wide rows): a power of two below VEC
                row_div = 5 if mixed else 3
            elif row_size >= vec - 1 and (head or vec == 8):  # a tile row spans at most two rows
                row_div = 4
            else:
                row_div = 1
        if fp64 or (head and per_row and row_div == 1):
            warps = FLAT_WARPS_GPU
        else:
            per_elem = per_row and (row_div not in PER_TILE_ROW_DIVS or mixed)
            # heads: per-row scales 32 a thread (4-wide rows); scalar or 0-d scales the aligned interior's elements a
            # thread (_head_interior: 32 in 4-wide rows, 64 in 8-wide)
            warps = stream_warps(FLAT_BLOCK_GPU, 4 if per_elem else vec)
        cfg = flat_launch(interpreted, n, elem_offset, block, vec, warps)
        grid, blk, options = cfg.grid, cfg.block, cfg.options
        even = elem_offset % 4 == 0 and n % blk == 0
        if wide_score and not (per_row or head or even) and options:
            # a 16-bit state beside an fp32 score, scalar scales, a partial tile (the kernel's masked copy of the body):
            # ptxas took 168 registers and 8 bytes of stack; given the hardware's 255, ~234 and none, the same
            # instructions (`fastlangevin kernels`: step-bf16-fp32-a0-b1-head0 29.52 -> 29.50)
            options = dict(options, maxnreg=HEAD_MAXNREG)
    consts = dict(
        HEAD=elem_offset % 4,
        STEP_MODE=step_mode,
        NOISE_MODE=noise_mode,
        COMPUTE=tl.float64 if fp64 else tl.float32,
        BLOCK=blk,
        VEC=vec,
        ROW_GRID=row_grid,
        EVEN=even,
        DIV32=row_size + blk < (1 << 31),
        ROW_DIV=row_div,
        ROW_SHIFT=row_size.bit_length() - 1 if row_div in (3, 5) else 0,
        div_magic=row_magic(row_size) if row_div in (1, 2, 4) else 0,
        **options,
    )
    return grid, consts

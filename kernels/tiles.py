"""Tile helpers shared by the kernels: group-aligned element tiles and their Philox normals.

Every kernel draws noise the same way: element ``i`` of the global index gets output ``i % 4``
of ``tl.randn4x(seed, i // 4)``. Tiles are shaped ``[BLOCK // 4, 4]`` and aligned to those
groups of four, so each Philox call feeds four consecutive elements (no wasted outputs).
"""

import functools
from typing import NamedTuple, Optional, Tuple

import triton
import triton.language as tl

# Launch settings of every kernel, in one place.
#: Elementwise kernels on a GPU: 4096 elements per program = 1024 Philox groups; 8 warps give each
#: thread 4 groups (16 contiguous fp32), enough bytes in flight to saturate HBM.
FLAT_BLOCK_GPU = 4096
FLAT_WARPS_GPU = 8
#: The interpreter runs each program in Python: few, large programs.
BLOCK_INTERPRETER = 1 << 16
#: Row kernels (per-row reductions): a program covers at most FLAT_BLOCK_GPU columns of a row, with
#: one warp per ROW_ELEMS_PER_WARP columns (4096 / 8 warps, as for the flat kernels).
ROW_ELEMS_PER_WARP = 512


def launch_options(interpreted: bool, num_warps: int) -> dict:
    """Launch keyword arguments for our kernels.

    Compiled launches turn off FMA contraction: ``x + a * s`` then rounds twice, exactly as in
    the interpreter and the PyTorch fallback, so every backend gives bitwise the same affine
    update (the noise aside). The kernels are memory-bound: the unfused multiply costs nothing.
    """
    return {} if interpreted else {"num_warps": num_warps, "enable_fp_fusion": False}


def vec_for(*tensors) -> int:
    """Elements per tile row: 8 when any operand is 16-bit (so its accesses are 16 bytes, as
    fp32's are with 4), else 4."""
    for t in tensors:
        if t.element_size() == 2:
            return 8
    return 4


class FlatLaunch(NamedTuple):
    grid: Tuple[int]
    block: int
    vec: int
    options: dict


@functools.lru_cache(maxsize=1024)
def _flat_launch(interpreted: bool, n: int, head: int, block: Optional[int], vec: int) -> FlatLaunch:
    block = block or (BLOCK_INTERPRETER if interpreted else FLAT_BLOCK_GPU)
    return FlatLaunch((triton.cdiv(n + head, block),), block, vec, launch_options(interpreted, FLAT_WARPS_GPU))


def flat_launch(interpreted: bool, n: int, elem_offset: int, block: Optional[int], vec: int) -> FlatLaunch:
    """Grid, BLOCK, VEC and options of an elementwise kernel over ``n`` elements whose first is
    global element ``elem_offset`` (tiles aligned to its Philox groups). Cached: a sampling loop
    launches the same shape every step. Treat the returned ``options`` as read-only."""
    return _flat_launch(interpreted, n, elem_offset % 4, block, vec)


class RowLaunch(NamedTuple):
    block: int
    n_chunks: int
    num_warps: int
    aligned: bool
    options: dict


@functools.lru_cache(maxsize=1024)
def row_launch(
    row_size: int, elem_offset: int, interpreted: bool, min_block: int = 16, head_room: Optional[int] = None
):
    """(BLOCK, n_chunks, num_warps, rows_aligned, options) of a 2-D ``(row, chunk)`` grid over rows
    of ``row_size`` elements, the first row starting at global element ``elem_offset``.

    Rows start mid-group unless every row start is 4-aligned; then a chunk must cover up to 3
    more elements (``head_room``; pass 3 for a kernel that always handles the head). Depends
    on the row length and offset alignment only, never on the batch size.
    """
    aligned = row_size % 4 == 0 and elem_offset % 4 == 0
    if head_room is None:
        head_room = 0 if aligned else 3
    cap = BLOCK_INTERPRETER if interpreted else FLAT_BLOCK_GPU
    block = max(min_block, min(cap, triton.next_power_of_2(row_size + head_room)))
    n_chunks = triton.cdiv(row_size + head_room, block)
    num_warps = max(1, min(FLAT_WARPS_GPU, block // ROW_ELEMS_PER_WARP))
    return RowLaunch(block, n_chunks, num_warps, aligned, launch_options(interpreted, num_warps))


@triton.jit
def flat_tile(group_offset, n_elements, HEAD: tl.constexpr, BLOCK: tl.constexpr, VEC: tl.constexpr = 4):
    """This program's ``[BLOCK // VEC, VEC]`` tile of a flat tensor whose element 0 is global
    element ``4 * group_offset + HEAD``. Returns (local element indices (int64), mask, first
    Philox group). VEC (4 or 8) consecutive elements per tile row: 8 lets 16-bit dtypes load
    16 bytes per thread (one row spans two Philox groups).

    HEAD (0..3) is a constexpr so the common aligned case keeps provable 16-byte alignment
    (vectorised loads) and a one-sided mask.
    """
    pid = tl.program_id(0).to(tl.int64)
    first_group = group_offset + pid * (BLOCK // 4)
    local = pid * BLOCK + (tl.arange(0, BLOCK // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :]).to(tl.int64)
    if HEAD != 0:
        local = local - HEAD
        mask = (local >= 0) & (local < n_elements)
    else:
        mask = local < n_elements
    return local, mask, first_group


@triton.jit
def _pick4(lane, n0, n1, n2, n3):
    return tl.where(
        lane == 0, n0[:, None], tl.where(lane == 1, n1[:, None], tl.where(lane == 2, n2[:, None], n3[:, None]))
    )


@triton.jit
def normal_tile(seed_ptr, first_group, GROUPS: tl.constexpr, VEC: tl.constexpr = 4):
    """Standard normals for the tile of :func:`flat_tile`: shape ``[GROUPS * 4 // VEC, VEC]``,
    element ``(r, l)`` is global element ``4 * first_group + VEC * r + l`` — output ``l % 4``
    of ``randn4x`` at counter ``first_group + (VEC * r + l) // 4``."""
    seed = tl.load(seed_ptr)
    ROWS: tl.constexpr = GROUPS * 4 // VEC
    if VEC == 4:
        counter = first_group + tl.arange(0, ROWS).to(tl.int64)
        n0, n1, n2, n3 = tl.randn4x(seed, counter)
        z = _pick4(tl.arange(0, 4)[None, :], n0, n1, n2, n3)
    else:
        tl.static_assert(VEC == 8, "VEC must be 4 or 8")
        counter = first_group + 2 * tl.arange(0, ROWS).to(tl.int64)
        n0, n1, n2, n3 = tl.randn4x(seed, counter)
        m0, m1, m2, m3 = tl.randn4x(seed, counter + 1)
        lane = tl.arange(0, 8)[None, :]
        z = tl.where(lane < 4, _pick4(lane, n0, n1, n2, n3), _pick4(lane - 4, m0, m1, m2, m3))
    return z

"""Tile helpers shared by the kernels: group-aligned element tiles and their Philox normals.

Every kernel draws noise the same way: element ``i`` of the global index gets output ``i % 4``
of ``tl.randn4x(seed, i // 4)``. Tiles are shaped ``[BLOCK // 4, 4]`` and aligned to those
groups of four, so each Philox call feeds four consecutive elements (no wasted outputs).
"""

import triton
import triton.language as tl


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
    return 8 if min(t.element_size() for t in tensors) == 2 else 4


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

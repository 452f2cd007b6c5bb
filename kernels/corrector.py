"""Triton kernel for pass 1 of the Langevin corrector (installed as ``fastlangevin.kernels.corrector``).

The score-SDE Langevin corrector (signal-to-noise-ratio step size r):

    ε = 2 α (r ‖z‖ / ‖s‖)²,     x ← x + ε s + √(2ε) z,      z ~ N(0, I)

needs the norms of z *before* it can use z. Instead of storing z we run two passes over the
same Philox stream:

* pass 1 (this kernel): per row, partial sums of ‖s‖² and ‖z‖² with z generated in-kernel and
  thrown away. A 2-D grid ``(row, chunk)`` writes deterministic partial sums to a
  ``[rows, n_chunks, 2]`` buffer (no atomics: bitwise reproducible); a tiny reduction over
  chunks and the step-size formula then run on the device (``fastlangevin.ops.corrector``);
* pass 2: the core fused update ``fastlangevin.kernels.langevin_step`` with the per-row ``[B]``
  step tensor and the *same seed*, which regenerates exactly the same z (noise depends only on
  the seed and the global element index).

Noise convention (shared with every kernel): global element ``i = (sample_offset + row) *
row_size + col`` takes output ``i % 4`` of ``fast_randn4x(seed, i // 4)`` (tiles). A row need not start
on a group boundary, so each program covers a group-aligned range of the global index and
masks the elements outside its row.
"""

import functools

import triton
import triton.language as tl

from .row_tiles import row_tile, row_vec, row_warps
from .tiles import FLAT_BLOCK_GPU, FLAT_WARPS_GPU, launch_options, normal_tile, row_launch, tile_load

# Launch shapes live in .tiles. GPU: 4096 elements per program (1024 Philox groups) keeps a
# 3·32·32 row in one program and 4 warps busy (tiles.ROW_ELEMS_PER_WARP); small rows (2-D toys) shrink
# BLOCK to the row.
BLOCK_GPU, NUM_WARPS_GPU = FLAT_BLOCK_GPU, FLAT_WARPS_GPU
# One Philox call yields 4 normals; a tile is at least one group.
MIN_BLOCK = 4
# The kernel always handles a row's head inside its first group: chunks cover row_size + 3.
HEAD_ROOM = 3


@triton.jit
def _corrector_norms_kernel(
    score_ptr,
    seed_ptr,
    partial_ptr,  # [rows, n_chunks, 2]: (Σ s², Σ z²) of each chunk of each row
    row_size,
    sample_offset,
    n_chunks,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS_ALIGNED: tl.constexpr = False,
    VEC: tl.constexpr = 4,
):
    GROUPS: tl.constexpr = BLOCK // 4
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    # the tile, group-aligned in the global index (row_tiles.row_tile); ROWS_ALIGNED drops the head
    # and its two-sided mask
    base, offs, mask, first_group, _ = row_tile(
        row, chunk, row_size, sample_offset * row_size, BLOCK, ROWS_ALIGNED, VEC
    )

    LANES: tl.constexpr = not ROWS_ALIGNED and VEC == 4  # rows start mid-group: tiles.tile_load
    s = tile_load(score_ptr + base + offs, mask, LANES, 0.0).to(COMPUTE)
    z = normal_tile(seed_ptr, first_group, GROUPS, VEC, LANES).to(COMPUTE)
    # s is 0 where masked, so this is where(mask, z, 0). Written with s, it computes z in s's register
    # layout: with a constant 0 the compiler gives z a layout of its own and moves it through shared
    # memory to meet the mask (`fastlangevin kernels --match corrector`: 58 -> 43 instructions/element).
    z = tl.where(mask, z, s)
    ss = tl.sum(tl.sum(s * s, axis=1), axis=0)
    zz = tl.sum(tl.sum(z * z, axis=1), axis=0)
    out = partial_ptr + (row * n_chunks + chunk) * 2
    tl.store(out, ss)
    tl.store(out + 1, zz)


def block_for(row_size: int, interpreted: bool) -> int:
    """Power-of-two BLOCK covering a row plus its ≤ 3-element head, capped per target."""
    return row_launch(row_size, 0, interpreted, MIN_BLOCK, HEAD_ROOM).block


def n_chunks_for(row_size: int, block: int) -> int:
    # A row's first column can sit up to 3 elements into a group: cover row_size + 3.
    return -(-(row_size + HEAD_ROOM) // block)  # ceil division (triton.cdiv costs a JIT-function call per use)


@functools.lru_cache(maxsize=1024)
def _norms_plan(row_size: int, vec: int, aligned: bool, interpreted: bool, block, fp64: bool):
    """(n_chunks, constexpr and launch keywords) of a norms launch, cached (a sampler launches the same
    shape every step; the keywords are shared: read-only)."""
    if block is None:
        block = block_for(row_size, interpreted)
    consts = dict(
        COMPUTE=tl.float64 if fp64 else tl.float32,
        BLOCK=block,
        ROWS_ALIGNED=aligned,
        VEC=vec,
        **launch_options(interpreted, row_warps(block)),
    )
    return n_chunks_for(row_size, block), consts


def launch_corrector_norms(score, seed, *, sample_offset, block=None, out=None):
    """Per-row ``(‖s‖², ‖z‖²)`` of a contiguous ``[B, row_size]`` score, as ``[B, 2]``.

    fp32 sums (fp64 for float64 scores). z is the kernels' Philox stream for ``seed`` at the
    rows' global indices (``sample_offset`` is the global index of row 0). The reduction over
    chunks is a fixed-shape ``sum`` over a ``[B, n_chunks]`` buffer: deterministic. ``out``: a contiguous
    ``[B, 2]`` buffer of the sums' dtype to write when a row is one chunk (else a new one is returned).
    """
    import torch

    rows, row_size = score.shape
    acc_dtype = torch.float64 if score.dtype == torch.float64 else torch.float32
    if rows == 0 or row_size == 0:
        return torch.zeros(rows, 2, dtype=acc_dtype, device=score.device)
    vec, aligned = row_vec(row_size, sample_offset * row_size, score)
    n_chunks, consts = _norms_plan(row_size, vec, aligned, score.is_cpu, block, acc_dtype is torch.float64)
    # one chunk: [rows, 2] is the [rows, 1, 2] buffer's memory (the kernel's addressing), without a view to take
    if out is not None and n_chunks == 1:
        partial = out
    else:
        partial = score.new_empty((rows, n_chunks, 2) if n_chunks > 1 else (rows, 2), dtype=acc_dtype)
    _corrector_norms_kernel[(rows, n_chunks)](
        score,
        seed,
        partial,
        row_size,
        sample_offset,
        n_chunks,
        **consts,
    )
    return partial.sum(dim=1) if n_chunks > 1 else partial

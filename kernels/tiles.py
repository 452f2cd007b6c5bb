"""Tile helpers shared by the kernels: group-aligned element tiles and their Philox normals.

Every kernel draws noise the same way: element ``i`` of the global index gets output ``i % 4``
of ``fast_randn4x(seed, i // 4)`` (Philox4x32-10 and the normal transform below; the convention and
the transform's error bounds are documented in ``fastlangevin._rng``). Tiles are shaped
``[BLOCK // VEC, VEC]`` and aligned to those groups of four, so each Philox call feeds four
consecutive elements (no wasted outputs).
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
#: one warp per ROW_ELEMS_PER_WARP columns: 4 warps on 4096 columns, 32 elements (8 Philox groups) per
#: thread as in the step, which amortises the per-thread work (key schedule, seed and per-row loads, index
#: math) over twice the elements of 8 warps (`fastlangevin kernels`: DSM perturb fp32 33.2 -> 30.6,
#: corrector norms bf16 unaligned 41.8 -> 37.6 instructions per element; no spills).
ROW_ELEMS_PER_WARP = 1024
#: Elements per thread of a compiled group-aligned elementwise program (the step, the DSM perturb), by tile-row width
#: VEC: 32 (8 Philox groups) for 4-wide rows (fp32; the step's mid-group starts), 64 (16 groups, 2 warps on 4096
#: elements) for 8-wide (16-bit) ones. The per-thread work (Philox key schedule, seed and scale loads, index math, the
#: partial-tile branch: ~100 instructions) is then spread over twice the elements, 1-1.5 per element less (`fastlangevin
#: kernels`: bf16 step with a clamp, masked 33.09 -> 31.91 at 96 -> 168 registers, row grid 33.44 -> 31.98 at 96 -> 186;
#: no local memory). A 16-bit operand of 64 elements fills 32 registers, an fp32 one 64 (fp32 data beside 16-bit data in
#: 8-wide rows: 253-255 registers, no spills). Reductions keep ROW_ELEMS_PER_WARP (their summation tree follows the
#: layout) and so do per-row scales on the flat grid (the per-element row division spills at 64 elements a thread).
#:
#: Why the occupancy cost is acceptable (a prediction for bench/gpu_check.sh's step section to verify: the bf16
#: step's % of copy should not drop; not measured): the kernels are memory-bound, so what matters is bytes in flight,
#: not warps. Little's law: H200 streams ~4.3 TB/s (read plus written) at a loaded HBM latency of ~1 us (an
#: assumption: 0.6-1 us is the usual figure), so 4.3e12 x 1e-6 / 132 SMs = ~33 KB must be in flight per SM (less
#: in fact: only the reads wait). A thread issues all its loads before the Philox work (the SASS: every LDG at
#: the kernel's top), so at 64 elements a thread a warp has 8 KB in flight for a bf16 step (x and the score, 2 B
#: each), 12 KB with an fp32 operand. 168-212 registers leave 8-12 resident warps per SM (65536 registers /
#: (32 x regs rounded up to 8), in whole programs of 2): 64-96 KB; 255 registers 8 warps: 96 KB. The 4-warp
#: launches held 20 warps (96 registers) x 4 KB = 80 KB. Either covers the ~33 KB 2-3 times over, so the halved
#: occupancy should cost no bandwidth, and the fewer instructions raise the issue ceiling
#: (fastlangevin/kernel_budget.py).
ELEMS_PER_THREAD_GPU = {4: 32, 8: 64}


def stream_elems_per_warp(vec: int) -> int:
    """Elements per warp of a compiled group-aligned elementwise program with ``vec``-wide tile rows."""
    return 32 * ELEMS_PER_THREAD_GPU[vec]


def stream_warps(block: int, vec: int) -> int:
    """Warps of a compiled group-aligned elementwise program over ``block`` elements in ``vec``-wide tile rows
    (ELEMS_PER_THREAD_GPU; 1 to FLAT_WARPS_GPU)."""
    return max(1, min(FLAT_WARPS_GPU, block // stream_elems_per_warp(vec)))


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


#: Register limit of compiled mid-group (HEAD) flat launches: the hardware's. Without an explicit one, ptxas
#: (Triton 3.9) squeezed the fp16 step with a head (8 warps, before its interior tiles ran unmasked) into 64
#: registers and spilled 24 bytes to local memory (`fastlangevin kernels`); given 255 it took 90 registers and no
#: local memory (the step's heads with scalar scales now run 32 or 64 elements a thread at 150-255, no local memory).
HEAD_MAXNREG = 255


def head_options(options: dict, head: int) -> dict:
    """Launch options of a flat launch whose start is ``head`` elements into a Philox group."""
    return dict(options, maxnreg=HEAD_MAXNREG) if head and options else options


@functools.lru_cache(maxsize=1024)
def _flat_launch(interpreted: bool, n: int, head: int, block: Optional[int], vec: int, warps: int) -> FlatLaunch:
    block = block or (BLOCK_INTERPRETER if interpreted else FLAT_BLOCK_GPU)
    options = head_options(launch_options(interpreted, warps), head)
    return FlatLaunch((triton.cdiv(n + head, block),), block, vec, options)


def flat_launch(
    interpreted: bool, n: int, elem_offset: int, block: Optional[int], vec: int, warps: int = FLAT_WARPS_GPU
) -> FlatLaunch:
    """Grid, BLOCK, VEC and options of an elementwise kernel over ``n`` elements whose first is
    global element ``elem_offset`` (tiles aligned to its Philox groups), ``warps`` warps per program on
    a GPU. Cached: a sampling loop launches the same shape every step. Treat the returned ``options`` as
    read-only."""
    return _flat_launch(interpreted, n, elem_offset % 4, block, vec, warps)


class RowLaunch(NamedTuple):
    block: int
    n_chunks: int
    num_warps: int
    aligned: bool
    options: dict


@functools.lru_cache(maxsize=1024)
def row_launch(
    row_size: int,
    elem_offset: int,
    interpreted: bool,
    min_block: int = 16,
    head_room: Optional[int] = None,
    elems_per_warp: int = ROW_ELEMS_PER_WARP,
):
    """(BLOCK, n_chunks, num_warps, rows_aligned, options) of a 2-D ``(row, chunk)`` grid over rows
    of ``row_size`` elements, the first row starting at global element ``elem_offset``.

    Rows start mid-group unless every row start is 4-aligned; then a chunk must cover up to 3
    more elements (``head_room``; pass 3 for a kernel that always handles the head). Depends
    on the row length and offset alignment only, never on the batch size. One warp per
    ``elems_per_warp`` columns of a chunk (at most FLAT_WARPS_GPU).
    """
    aligned = row_size % 4 == 0 and elem_offset % 4 == 0
    if head_room is None:
        head_room = 0 if aligned else 3
    cap = BLOCK_INTERPRETER if interpreted else FLAT_BLOCK_GPU
    block = max(min_block, min(cap, triton.next_power_of_2(row_size + head_room)))
    n_chunks = triton.cdiv(row_size + head_room, block)
    num_warps = max(1, min(FLAT_WARPS_GPU, block // elems_per_warp))
    return RowLaunch(block, n_chunks, num_warps, aligned, launch_options(interpreted, num_warps))


@triton.jit
def flat_tile(group_offset, n_elements, HEAD: tl.constexpr, BLOCK: tl.constexpr, VEC: tl.constexpr = 4):
    """This program's ``[BLOCK // VEC, VEC]`` tile of a flat tensor whose element 0 is global
    element ``4 * group_offset + HEAD``. Returns (start, offs, mask, first Philox group): the tile's
    element ``(r, l)`` is local element ``start + offs[r, l]``, ``start`` an int64 scalar (this
    program's base; ``-HEAD`` for program 0) and ``offs = VEC * r + l`` an int32 in [0, BLOCK). VEC
    (4 or 8) consecutive elements per tile row: 8 lets 16-bit dtypes load 16 bytes per thread (one
    row spans two Philox groups).

    Why split: an address is then a scalar 64-bit base (computed once per program) plus a small 32-bit
    offset (one wide multiply-add per access), and the mask one 32-bit compare against the scalar count
    left, instead of 64-bit arithmetic per element; the global index stays int64 throughout.
    HEAD (0..3) is a constexpr so the common aligned case keeps provable 16-byte alignment
    (vectorised loads) and a one-sided mask.
    """
    pid = tl.program_id(0).to(tl.int64)
    first_group = group_offset + pid * (BLOCK // 4)
    start = pid * BLOCK - HEAD
    offs = tl.arange(0, BLOCK // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :]
    left = tl.minimum(n_elements - start, BLOCK).to(tl.int32)  # elements of this tile in the tensor
    mask = offs < left
    if HEAD != 0:
        mask = mask & (offs >= tl.where(pid == 0, HEAD, 0))
    return start, offs, mask, first_group


@triton.jit
def row_tile(row, chunk, row_size, elem_offset, BLOCK: tl.constexpr, ROWS_ALIGNED: tl.constexpr, VEC: tl.constexpr):
    """Program (row, chunk)'s tile of a ``[rows, row_size]`` tensor whose element 0 is global element
    ``elem_offset``: (base, offs, mask, first Philox group), the tile's element ``(r, l)`` being local
    element ``base + offs[r, l]`` (``base`` int64 scalar, ``offs = VEC * r + l`` int32; see
    :func:`flat_tile` for why).

    The tile is aligned to groups of four in the *global* element index: a row starting ``head``
    elements into its group begins at tile position ``head`` of chunk 0. ``ROWS_ALIGNED`` (every
    row starts on a group: row_size and elem_offset multiples of 4) drops the head, so the compiler
    can prove 16-byte alignment and vectorise the loads, and the mask is one-sided.
    """
    GROUPS: tl.constexpr = BLOCK // 4
    start = elem_offset + row * row_size  # global index of the row's first element
    offs = tl.arange(0, BLOCK // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :]
    if ROWS_ALIGNED:
        col0 = chunk * BLOCK  # the row's column at offs == 0
    else:
        head = start % 4
        col0 = chunk * BLOCK - head
    left = tl.minimum(row_size - col0, BLOCK).to(tl.int32)
    mask = offs < left
    if not ROWS_ALIGNED:
        mask = mask & (offs >= tl.where(chunk == 0, head, 0).to(tl.int32))
    first_group = (start >> 2) + chunk * GROUPS  # start >= 0: a shift, not a signed division
    return row * row_size + col0, offs, mask, first_group


@triton.jit
def tile_rows(start, offs, row_size, DIV32: tl.constexpr):
    """``(start + offs) // row_size`` (the row of each tile element; int64 ``start`` and ``row_size``, int32
    ``offs``). DIV32 (the launcher's choice when ``row_size + BLOCK < 2**31``): one 64-bit division per
    program, then 32-bit divisions of the in-tile remainder (a reciprocal multiply: ~5 instructions per
    element instead of ~40 for a 64-bit division). The same integers: ``start = row0 * row_size + rem``
    exactly, and for a valid element ``rem + offs >= 0`` (it is ``start + offs - row0 * row_size`` with
    ``start + offs >= 0`` and ``row0 <= 0`` when ``start < 0``), where truncating and flooring agree."""
    if DIV32:
        row0 = start // row_size
        rem = (start - row0 * row_size).to(tl.int32)
        return row0 + (rem + offs) // row_size.to(tl.int32)
    else:
        return (start + offs) // row_size


#: The dividends :func:`magic_rows` divides exactly: local element indices below 2**31 (their doubles fit a uint32).
MAGIC_DIVIDEND_LIMIT = 1 << 31


@functools.lru_cache(maxsize=1024)
def row_magic(row_size: int) -> int:
    """The multiplier ``m`` and shift ``s`` of a division by ``row_size`` for :func:`magic_rows`, packed as
    ``m | (s + 1) << 32``: one kernel argument, always at least 2**32, so Triton always passes it as an int64
    (a value in [2**31, 2**32) would be a uint32, which the interpreter sign-extends; a separate shift argument
    would be specialised on the value 1).

    ``n // row_size == (umulhi(2 n, m) >> s)`` for every ``0 <= n < 2**31`` (MAGIC_DIVIDEND_LIMIT), ``umulhi`` the
    high word of a 32x32-bit product: that is ``floor(n m / 2**p)`` with ``p = 31 + s``, exact for all such ``n``
    when ``2**p <= m row_size <= 2**p + 2**(p - 31)`` (Granlund and Montgomery, "Division by invariant integers
    using multiplication", 1994, theorem 4.2). ``m = ceil(2**p / row_size)`` meets it at ``p = 31 +
    ceil(log2(row_size))`` with ``m < 2**32`` (``m <= 2**31`` times ``2**l / row_size < 2``); the smallest such
    ``p`` is taken. Doubling ``n`` (free: the kernel doubles its scalar base and its constant offsets) lets
    ``p`` reach 31, so ``row_size == 1`` needs no special case."""
    if not 1 <= row_size < MAGIC_DIVIDEND_LIMIT:
        raise ValueError(f"row_size must be in [1, 2**31), got {row_size}")
    for p in range(31, 63):
        m = -(-(1 << p) // row_size)
        if m * row_size - (1 << p) <= 1 << (p - 31):
            if m >= 1 << 32:  # unreachable by the bound above; the kernel's umulhi takes a uint32
                raise AssertionError(f"magic multiplier of {row_size} exceeds 32 bits")
            while m < 1 << 31:  # m 2**k over 2**(p + k): the same quotients (a normal form: m in [2**31, 2**32))
                m, p = 2 * m, p + 1
            return m | (p - 30) << 32
    raise AssertionError(f"no magic multiplier for {row_size}")


@triton.jit
def magic_rows(start, offs, magic, PER_TILE_ROW: tl.constexpr):
    """``(start + offs) // row_size`` as int32 by a multiply-high (:func:`row_magic`'s ``magic``; int64
    ``start``, int32 ``offs``), exact for the elements below MAGIC_DIVIDEND_LIMIT (the launcher's condition).
    Masked elements of the first tile of a mid-group start (``start + offs < 0``) and past the tensor's end get
    some row: their loads are masked. PER_TILE_ROW (rows a multiple of the tile-row width, a group-aligned
    start): every tile row lies in one row, so the ``[R, 1]`` rows of the tile rows' first elements, one
    division and one scale load per tile row instead of per element.

    About 3 instructions an element (an add, ``IMAD.HI``, a shift), or per tile row, against ~10 for the
    32-bit division of :func:`tile_rows` (sign fix-ups and two correction steps per quotient)."""
    magic = magic.to(tl.int64)
    m = (magic & 0xFFFFFFFF).to(tl.uint32)
    s = ((magic >> 32) - 1).to(tl.uint32)
    base2 = (2 * start).to(tl.uint32)  # the doubled local index of offs == 0, modulo 2**32
    if PER_TILE_ROW:
        offs2 = (2 * offs.shape[1]) * tl.arange(0, offs.shape[0])[:, None]
    else:
        offs2 = 2 * offs
    return (tl.umulhi(base2 + offs2.to(tl.uint32), m) >> s).to(tl.int32, bitcast=True)


@triton.jit
def pair_rows(start, offs, magic, row_size, HEAD: tl.constexpr = 0):
    """Each tile row's first row and the column where the next begins, for rows of at least ``VEC - 1`` elements
    (``offs.shape[1]``; below MAGIC_DIVIDEND_LIMIT elements, :func:`row_magic`'s ``magic``): ``(r0, cut)``, both
    ``[R, 1]`` int32, with the tile's element ``(r, l)`` in row ``r0[r] + (l >= cut[r])``. A tile row then spans
    at most two rows: ``cut`` (the next row's first element, ``(r0 + 1) row_size``, less the tile row's first,
    ``start + VEC r``) is in ``[1, row_size + 3]`` and the row after starts ``row_size >= VEC - 1`` columns later.
    One multiply-high per tile row instead of per element (:func:`magic_rows`); the caller loads two scales per
    tile row and selects per element.

    HEAD (a mid-group start): the first tile row begins up to 3 elements before the tensor (``start + VEC r <
    0``); its row is that of element 0 (the masked elements before it need none), ``cut`` still counts from the
    tile row's first column. The products wrap modulo 2**32 (uint32): ``(r0 + 1) row_size`` may pass 2**31, the
    difference is small."""
    VEC: tl.constexpr = offs.shape[1]
    lane_row = VEC * tl.arange(0, offs.shape[0])[:, None]
    first = start.to(tl.int32) + lane_row  # a local index below 2**31 (or -HEAD)
    if HEAD != 0:
        base2 = 2 * tl.maximum(first, 0).to(tl.uint32)
    else:  # the doubled dividend as a scalar plus constants (one add per tile row)
        base2 = (2 * start).to(tl.uint32) + (2 * lane_row).to(tl.uint32)
    magic = magic.to(tl.int64)
    m = (magic & 0xFFFFFFFF).to(tl.uint32)
    s = ((magic >> 32) - 1).to(tl.uint32)
    r0 = tl.umulhi(base2, m) >> s
    cut = (r0 + 1) * row_size.to(tl.uint32) - first.to(tl.uint32, bitcast=True)
    return r0.to(tl.int32, bitcast=True), cut.to(tl.int32, bitcast=True)


# The fast Gaussian transform (see fastlangevin._rng, "Normal transform", for the derivation and its
# error bounds; `_rng._box_muller` is the same arithmetic in PyTorch). Coefficients are fp32 minimax
# fits: -2 ln(1 + t) = t (L0 + t (L1 + ...)) on [sqrt(1/2) - 1, sqrt(2) - 1], relative error 1.2e-6;
# sin(pi v / 2) = v P(v^2) and cos(pi v / 2) = Q(v^2) on [-1, 1], absolute errors 6.1e-7 and 8.3e-8
# (interpreter only: compiled kernels take the angle's sine and cosine from the hardware, HW_SINCOS below,
# within _rng.GPU_ANGLE_BOUND = 9.6e-6 of the polynomials' normals). The log stays a polynomial everywhere:
# the hardware log2's absolute error would cost up to 5.7e-4 at small radii (_rng, "Normal transform").
MINUS_2_LN2 = tl.constexpr(-1.3862943649291992)
INV_2_31 = tl.constexpr(4.656612873077393e-10)
#: fp32(pi / 2**32): the angle pi v / 2 = int32(b) * pi / 2**32 in one multiply (GPU path).
PI_2_M32 = tl.constexpr(7.31459059988282e-10)
#: The angle's sine and cosine on the hardware (MUFU.SIN/MUFU.COS via ``sin/cos.approx.ftz.f32``, 4
#: instructions a pair instead of 10 for the two polynomials) in compiled launches; Triton's interpreter
#: cannot run inline PTX and keeps the polynomials, which `_rng._box_muller` emulates bit for bit. Decided
#: exactly as ``triton.jit`` decides whether this module's functions are interpreted: at import, from
#: TRITON_INTERPRET. The two paths differ by at most ``_rng.GPU_ANGLE_BOUND`` (derivation in
#: fastlangevin._rng, "Normal transform"; tests/test_normals.py checks it on CPU).
COMPILED = tl.constexpr(not triton.knobs.runtime.interpret)
HW_SINCOS = COMPILED


@triton.jit
def _log_poly(x):
    """(-2 ln(1 + x)) / x, Horner with fused multiply-adds (one rounding each, as the interpreter)."""
    p = tl.full(x.shape, -0.23792189359664917, tl.float32)
    p = tl.fma(p, x, 0.37335699796676636)
    p = tl.fma(p, x, -0.4099266231060028)
    p = tl.fma(p, x, 0.4981949031352997)
    p = tl.fma(p, x, -0.6662901639938354)
    p = tl.fma(p, x, 1.000022292137146)
    p = tl.fma(p, x, -2.000001907348633)
    return p


@triton.jit
def _sin_poly(x):
    """sin(pi v / 2) / v as a polynomial in x = v^2."""
    p = tl.full(x.shape, -0.004333095159381628, tl.float32)
    p = tl.fma(p, x, 0.0794343426823616)
    p = tl.fma(p, x, -0.645892858505249)
    p = tl.fma(p, x, 1.5707910060882568)
    return p


@triton.jit
def _cos_poly(x):
    """cos(pi v / 2) as a polynomial in x = v^2."""
    p = tl.full(x.shape, 0.0008581906440667808, tl.float32)
    p = tl.fma(p, x, -0.020810628309845924)
    p = tl.fma(p, x, 0.2536507546901703)
    p = tl.fma(p, x, -1.2336982488632202)
    p = tl.fma(p, x, 0.9999999403953552)
    return p


@triton.jit
def fast_box_muller(a, b):
    """Two standard normals from two uint32 Philox words: ``(s r cos(pi v / 2), r sin(pi v / 2))`` with
    ``r = sqrt(-2 ln U)``, ``U = (2 (a mod 2**31) + 1) / 2**32``, ``v = int32(b) / 2**31`` in [-1, 1) and
    the sign ``s`` = bit 31 of ``a``: the angle spans a half circle, the sign flips it onto the other."""
    # Radius. U = 2**k m with m in [sqrt(1/2), sqrt(2)): k and m straight from U's fp32 bits (the 2**-32
    # is folded into k), so ln U = k ln 2 + ln m keeps its relative accuracy as U -> 1.
    bits = (a * 2 + 1).to(tl.float32).to(tl.int32, bitcast=True)
    k = (bits - 0x3F3504F3) >> 23
    m = (bits - (k << 23)).to(tl.float32, bitcast=True)
    t = m - 1.0
    w = tl.fma((k - 32).to(tl.float32), MINUS_2_LN2, t * _log_poly(t))
    r = tl.sqrt(w)
    # Angle pi v / 2 in [-pi/2, pi/2): cos >= 0 there, so a random sign on the first output (a's bit 31,
    # which U does not use) completes the circle; no range reduction, shorter polynomials.
    r_signed = (r.to(tl.uint32, bitcast=True) ^ (a & 0x80000000)).to(tl.float32, bitcast=True)
    if HW_SINCOS:
        # |angle| <= pi / 2, inside the [-pi, pi] where the hardware's absolute error bounds hold; .ftz
        # changes nothing (a nonzero |angle| >= pi / 2**32, far above the subnormals).
        angle = b.to(tl.int32, bitcast=True).to(tl.float32) * PI_2_M32
        sin_v, cos_v = tl.inline_asm_elementwise(
            "sin.approx.ftz.f32 $0, $2;\n\tcos.approx.ftz.f32 $1, $2;",
            "=f,=f,f",
            [angle],
            dtype=(tl.float32, tl.float32),
            is_pure=True,
            pack=1,
        )
        return r_signed * cos_v, r * sin_v
    v = b.to(tl.int32, bitcast=True).to(tl.float32) * INV_2_31
    v2 = v * v
    return r_signed * _cos_poly(v2), r * (v * _sin_poly(v2))


@triton.jit
def _philox_rounds(k0, k1, c0, x0):
    """Philox4x32-10 on counter words (c0, c1, 0, 0) given ``x0 = c1 ^ k0`` (round 1's first output
    word: a caller whose c1 takes one of two values per program selects it from two precomputed
    scalars instead of adding a carry and xor-ing per counter). Each round's 32x32 products are taken
    as one 64-bit product: a single wide multiply gives both halves (``tl.umulhi`` plus ``*`` costs two)."""
    # Round 1 by hand: its c2 = c3 = 0, so it has one product and its second word is 0.
    c2 = tl.umulhi(c0, 0xD2511F53) ^ k1
    c3 = c0 * 0xD2511F53
    # Round 2 by hand: c1 = 0 drops from the first xor.
    k0 = k0 + 0x9E3779B9
    k1 = k1 + 0xBB67AE85
    p0 = x0.to(tl.uint64) * 0xD2511F53
    c0, c1, c2, c3 = (
        tl.umulhi(c2, 0xCD9E8D57) ^ k0,
        c2 * 0xCD9E8D57,
        (p0 >> 32).to(tl.uint32) ^ c3 ^ k1,
        p0.to(tl.uint32),
    )
    for _ in tl.static_range(8):
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
        p0 = c0.to(tl.uint64) * 0xD2511F53
        p2 = c2.to(tl.uint64) * 0xCD9E8D57
        c0, c1, c2, c3 = (
            (p2 >> 32).to(tl.uint32) ^ c1 ^ k0,
            p2.to(tl.uint32),
            (p0 >> 32).to(tl.uint32) ^ c3 ^ k1,
            p0.to(tl.uint32),
        )
    return c0, c1, c2, c3


@triton.jit
def philox4x32_10(k0, k1, c0, c1):
    """``tl.randint4x(seed, counter)`` bit for bit (Philox4x32-10; key words ``k0``, ``k1`` = low and
    high uint32 halves of the int64 seed; counter words (c0, c1, 0, 0) = low and high halves of the
    int64 counter); see :func:`_philox_rounds`."""
    return _philox_rounds(k0, k1, c0, c1 ^ k0)


@triton.jit
def _randn4x_rounds(k0, k1, c0, x0):
    i0, i1, i2, i3 = _philox_rounds(k0, k1, c0, x0)
    n0, n1 = fast_box_muller(i0, i1)
    n2, n3 = fast_box_muller(i2, i3)
    return n0, n1, n2, n3


@triton.jit
def fast_randn4x(k0, k1, c0, c1):
    """Four standard normals per counter (uint32 words c0 = low, c1 = high of the int64 counter):
    Philox4x32-10 (:func:`philox4x32_10`, the words of ``tl.randint4x``) and two
    :func:`fast_box_muller` pairs, words (0, 1) and (2, 3)."""
    return _randn4x_rounds(k0, k1, c0, c1 ^ k0)


@triton.jit
def join4(c0, c1, c2, c3):
    """``[R, 4]`` tile whose column ``l`` is ``c_l`` (four ``[R]`` tensors): built by joins, so the four
    columns of a row stay in one thread's registers (no shared-memory layout conversion)."""
    return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), (c0.shape[0], 4))


@triton.jit
def split4(t):
    """The four ``[R]`` columns of an ``[R, 4]`` tile (the inverse of :func:`join4`)."""
    even, odd = tl.split(tl.reshape(t, (t.shape[0], 2, 2)))  # columns (0, 2) and (1, 3)
    c0, c2 = tl.split(even)
    c1, c3 = tl.split(odd)
    return c0, c1, c2, c3


@triton.jit
def widen(x, COMPUTE: tl.constexpr):
    """``x.to(COMPUTE)``; a bf16 ``x`` to fp32 as its bits shifted into the high half of a 32-bit word (a
    bf16 is the high half of its fp32: exact). The compiler's own conversion spends two integer
    instructions on every odd element of a packed pair; this spends one on each (``w << 16`` and
    ``w & 0xFFFF0000`` of the loaded word)."""
    if x.dtype == tl.bfloat16 and COMPUTE == tl.float32:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(COMPUTE)


@triton.jit
def tile_load(ptrs, mask, LANES: tl.constexpr, other=None):
    """``tl.load(ptrs, mask=mask, other=other)`` of an ``[R, 4]`` tile; with LANES as four column loads
    joined back (:func:`join4`). LANES is for tiles whose memory is not 16-byte aligned (a start mid-way
    into a Philox group): their loads are scalar anyway, and the compiler then keeps each row of four in
    the thread that drew its Philox group (with one 2-D load it gives the load a layout of its own and moves
    the noise through shared memory to meet it: `fastlangevin kernels`, 51 -> 41 instructions per element
    for an fp32 step with a head). The values are the same either way. ``mask`` None: every element valid."""
    if LANES and mask is None:
        p0, p1, p2, p3 = split4(ptrs)
        return join4(tl.load(p0), tl.load(p1), tl.load(p2), tl.load(p3))
    elif mask is None:
        return tl.load(ptrs)
    elif LANES:
        p0, p1, p2, p3 = split4(ptrs)
        m0, m1, m2, m3 = split4(mask)
        return join4(
            tl.load(p0, mask=m0, other=other),
            tl.load(p1, mask=m1, other=other),
            tl.load(p2, mask=m2, other=other),
            tl.load(p3, mask=m3, other=other),
        )
    else:
        return tl.load(ptrs, mask=mask, other=other)


@triton.jit
def tile_store(ptrs, values, mask, LANES: tl.constexpr):
    """``tl.store(ptrs, values, mask=mask)`` of an ``[R, 4]`` tile; column by column with LANES
    (see :func:`tile_load`); ``mask`` None: every element valid."""
    if LANES and mask is None:
        p0, p1, p2, p3 = split4(ptrs)
        v0, v1, v2, v3 = split4(values)
        tl.store(p0, v0)
        tl.store(p1, v1)
        tl.store(p2, v2)
        tl.store(p3, v3)
    elif mask is None:
        tl.store(ptrs, values)
    elif LANES:
        p0, p1, p2, p3 = split4(ptrs)
        v0, v1, v2, v3 = split4(values)
        m0, m1, m2, m3 = split4(mask)
        tl.store(p0, v0, mask=m0)
        tl.store(p1, v1, mask=m1)
        tl.store(p2, v2, mask=m2)
        tl.store(p3, v3, mask=m3)
    else:
        tl.store(ptrs, values, mask=mask)


@triton.jit
def _pick4(lane, n0, n1, n2, n3):
    return tl.where(
        lane == 0, n0[:, None], tl.where(lane == 1, n1[:, None], tl.where(lane == 2, n2[:, None], n3[:, None]))
    )


@triton.jit
def normal_tile(
    seed_ptr,
    first_group,
    GROUPS: tl.constexpr,
    VEC: tl.constexpr = 4,
    JOIN: tl.constexpr = False,
    SPLIT_JOIN: tl.constexpr = False,
):
    """Standard normals for the tile of :func:`flat_tile`: shape ``[GROUPS * 4 // VEC, VEC]``,
    element ``(r, l)`` is global element ``4 * first_group + VEC * r + l`` — output ``l % 4``
    of :func:`fast_randn4x` at counter ``first_group + (VEC * r + l) // 4``. JOIN (VEC 4) builds the tile
    by joins, for tiles loaded with :func:`tile_load`'s LANES (the same values); SPLIT_JOIN: a JOIN tile takes the
    two copies of the rounds too (below)."""
    # The seed's two 32-bit words, loaded apart: LLVM then keeps Philox in 32-bit words (from one
    # int64 it fuses the first rounds into 64-bit ops that ptxas cannot turn into wide multiplies).
    words = seed_ptr.to(tl.pointer_type(tl.uint32))
    k0 = tl.load(words)
    k1 = tl.load(words + 1)
    ROWS: tl.constexpr = GROUPS * 4 // VEC
    # Counter words from 32-bit arithmetic (in-tile offsets are < 2**31; the high word takes the carry).
    # Words cut out of an int64 reach ptxas as 64-bit values, which it multiplies in 64 bits instead of
    # one wide 32x32 multiply per Philox product.
    tl.static_assert(VEC == 4 or VEC == 8, "VEC must be 4 or 8")
    offs = (tl.arange(0, ROWS) * (VEC // 4)).to(tl.uint32)
    first_group = first_group.to(tl.int64)  # a launch may pass it as a 32-bit scalar
    g_lo = first_group.to(tl.uint32)
    g_hi = (first_group >> 32).to(tl.uint32)
    # c1 is g_hi, or g_hi + 1 past a carry out of the low word: Philox's round 1 needs only c1 ^ k0. No counter
    # of a tile carries unless its low words wrap (one tile in 2**32 / GROUPS): there every counter selects
    # one of the two program scalars; elsewhere x0 is the one scalar, and so is round 2's product of it (a
    # compare, a select, a register copy and a wide multiply less per Philox group). Two copies of the
    # rounds; the wrapping tile's is the cold one. The same values either way. Mid-group (JOIN) tiles keep the
    # one copy with the selects unless SPLIT_JOIN: the step's, whose interior tiles run unmasked, gain by the
    # split (`fastlangevin kernels`: bf16 with a clamp and a head 38.38 -> 38.25 at 8 warps); the corrector's
    # unaligned norms lose (37.6 -> 39.5).
    x_lo = g_hi ^ k0
    c0 = g_lo + offs
    # the wrapping tile first: ptxas lays it out as the cold one
    if (JOIN and not SPLIT_JOIN) or g_lo > 0xFFFFFFFF - (GROUPS - 1):
        x_hi = (g_hi + 1) ^ k0
        z = _tile_normals(k0, k1, c0, tl.where(c0 < g_lo, x_hi, x_lo), tl.where(c0 + 1 < g_lo, x_hi, x_lo), VEC, JOIN)
    else:
        z = _tile_normals(k0, k1, c0, x_lo, x_lo, VEC, JOIN)
    return z


@triton.jit
def _tile_normals(k0, k1, c0, x0, x0b, VEC: tl.constexpr, JOIN: tl.constexpr):
    """:func:`normal_tile`'s tile from its counters' low words ``c0`` (``c0 + 1`` too for VEC 8: the second
    group of each 8-wide row) and their round-1 words ``x0``, ``x0b`` (scalars or per counter)."""
    n0, n1, n2, n3 = _randn4x_rounds(k0, k1, c0, x0)
    if VEC == 4 and JOIN:
        z = join4(n0, n1, n2, n3)
    elif VEC == 4:
        z = _pick4(tl.arange(0, 4)[None, :], n0, n1, n2, n3)
    else:
        m0, m1, m2, m3 = _randn4x_rounds(k0, k1, c0 + 1, x0b)
        lane = tl.arange(0, 8)[None, :]
        z = tl.where(lane < 4, _pick4(lane, n0, n1, n2, n3), _pick4(lane - 4, m0, m1, m2, m3))
    return z

"""Row tiles (``kernels/row_tiles.py``): the launch choices, and the row-grid DSM kernels against the
PyTorch fallback for rows long enough to take the row grid (aligned and mid-group rows, 16-bit rows
that are and are not whole tile rows of 8). Triton runs under the interpreter on CPU.
"""

import pytest
import torch

from fastlangevin.fallback import dsm as fb

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
row_tiles = pytest.importorskip("fastlangevin.kernels.row_tiles")
tile_rows = pytest.importorskip("fastlangevin.kernels.tiles").tile_rows
magic_rows = pytest.importorskip("fastlangevin.kernels.tiles").magic_rows
pair_rows = pytest.importorskip("fastlangevin.kernels.tiles").pair_rows
kd = pytest.importorskip("fastlangevin.kernels.dsm")


def test_row_grid_block_leaves_few_lanes_idle():
    assert row_tiles.row_grid_block(3 * 32 * 32) == 1024  # three full chunks, not one 3/4-full 4096
    assert row_tiles.row_grid_block(4096) == 4096
    assert row_tiles.lanes_busy(4099 + 3, row_tiles.row_grid_block(4099 + 3)) >= 7 / 8
    assert row_tiles.lanes_busy(300, row_tiles.row_grid_block(300)) < kd.ROW_GRID_MIN_BUSY  # -> flat grid


@pytest.mark.parametrize(
    "row_size,elem_offset,dtype,want",
    [
        (1024, 0, torch.bfloat16, (8, True)),
        (12, 0, torch.bfloat16, (4, True)),  # 16-bit rows not whole tile rows of 8: 4 wide
        (1030, 0, torch.bfloat16, (4, False)),  # a head: 4 wide
        (8, 3, torch.float32, (4, False)),
        (1024, 16, torch.float32, (4, True)),
    ],
)
def test_row_vec(row_size, elem_offset, dtype, want):
    assert row_tiles.row_vec(row_size, elem_offset, torch.empty(1, dtype=dtype)) == want


def _inputs(B, D, dtype):
    g = torch.Generator().manual_seed(B * 7919 + D)
    x = torch.randn(B * D, generator=g).to(dtype)
    z = torch.randn(B * D, generator=g)
    sigma, alpha, w = torch.rand(B, generator=g) + 0.1, torch.rand(B, generator=g) + 0.5, torch.rand(B, generator=g)
    return x, z, sigma, alpha, w


class _Spy:
    """Stands in for a kernel in the launcher module and records that it was launched."""

    def __init__(self, kernel, ran, name):
        self.kernel, self.ran, self.name = kernel, ran, name

    def __getitem__(self, grid):
        self.ran.append(self.name)
        return self.kernel[grid]


@pytest.mark.parametrize(
    "D,elem_offset,path",
    [(1024, 0, "rows"), (4099, 0, "rows"), (4099, 3, "rows"), (1024, 3, "flat"), (520, 8, "flat")],
    ids=str,
)
def test_row_grid_perturb_matches_fallback(monkeypatch, D, elem_offset, path):
    """The row grid for long rows (aligned or not), the flat grid where a row grid would idle a quarter
    of its lanes. Injected noise: bitwise the fallback's x̃ (fp32), whatever the BLOCK; generated
    noise: the fallback's PyTorch Philox to 1e-5."""
    ran = []
    monkeypatch.setattr(kd, "_dsm_perturb_kernel", _Spy(kd._dsm_perturb_kernel, ran, "rows"))
    monkeypatch.setattr(kd, "_dsm_perturb_flat_kernel", _Spy(kd._dsm_perturb_flat_kernel, ran, "flat"))
    x, z, sigma, alpha, _ = _inputs(3, D, torch.float32)
    kw = dict(row_size=D, elem_offset=elem_offset)
    seed = torch.tensor([777], dtype=torch.int64)
    got = kd.launch_dsm_perturb(x, torch.empty_like(x), seed, alpha, sigma, injected_noise=z, **kw)
    small = kd.launch_dsm_perturb(x, torch.empty_like(x), seed, alpha, sigma, injected_noise=z, block=256, **kw)
    want = fb.dsm_perturb_torch(x, torch.empty_like(x), seed, alpha, sigma, rng="philox", injected_noise=z, **kw)
    assert torch.equal(got, want) and torch.equal(small, want)
    got = kd.launch_dsm_perturb(x, torch.empty_like(x), seed, None, sigma, **kw)
    want = fb.dsm_perturb_torch(x, torch.empty_like(x), seed, None, sigma, rng="philox", **kw)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert ran == [path] * 3


@pytest.mark.parametrize("D,elem_offset", [(1024, 0), (12, 0), (1030, 3), (1024, 16)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_row_kernels_match_fallback(D, elem_offset, dtype):
    """Loss rows (fp32 sums, to summation order) and ∂L/∂s (injected noise: bitwise for fp32)."""
    x, z, sigma, _, w = _inputs(2, D, dtype)
    kw = dict(row_size=D, elem_offset=elem_offset, injected_noise=z)
    seed = torch.zeros(1, dtype=torch.int64)
    inv = 1 / sigma
    rows = kd.launch_dsm_loss_rows(x, torch.empty(2), seed, inv, w, **kw)
    torch.testing.assert_close(rows, fb.dsm_loss_rows_torch(x, seed, inv, w, rng="philox", **kw), atol=0, rtol=1e-5)
    grad = kd.launch_dsm_loss_backward(x, torch.empty_like(x), seed, inv, w, **kw)
    want = fb.dsm_loss_backward_torch(x, torch.empty_like(x), seed, inv, w, rng="philox", **kw)
    if dtype == torch.float32:
        assert torch.equal(grad, want)
    else:
        torch.testing.assert_close(grad.float(), want.float(), atol=0, rtol=2**-7)  # one bf16 ulp


@triton.jit
def _rows_kernel(out_ptr, start, row_size, R: tl.constexpr, DIV32: tl.constexpr):
    offs = tl.arange(0, R)[:, None] * 4 + tl.arange(0, 4)[None, :]
    tl.store(out_ptr + offs, tile_rows(start.to(tl.int64), offs, row_size.to(tl.int64), DIV32))


@pytest.mark.parametrize("row_size", [1, 2, 3, 5, 7, 37, 511, 4096, 5000])
@pytest.mark.parametrize("start", [-3, -1, 0, 1, 4093, 123456789, (1 << 40) + 17])
def test_tile_rows_32_bit_division_equals_64_bit(row_size, start):
    """tiles.tile_rows with DIV32 (one 64-bit division per program, then 32-bit ones) gives the row of every
    element a tile can hold, as the per-element 64-bit division does; negative starts (program 0 with a head)
    included: the elements with start + offs < 0 are masked in the kernels and not compared."""
    R = 1024
    got, want = torch.empty(4 * R, dtype=torch.int64), torch.empty(4 * R, dtype=torch.int64)
    _rows_kernel[(1,)](got, start, row_size, R=R, DIV32=True)
    _rows_kernel[(1,)](want, start, row_size, R=R, DIV32=False)
    valid = torch.arange(4 * R) + start >= 0
    assert torch.equal(got[valid], want[valid])
    assert torch.equal(want[valid], (torch.arange(4 * R)[valid] + start) // row_size)


def _magic_quotients(n, magic):
    """The kernel's tiles.magic_rows arithmetic in numpy uint64: the doubled dividend modulo 2**32, the high word
    of its 32x32-bit product with the multiplier, shifted right."""
    import numpy as np

    m, s = np.uint64(magic & 0xFFFFFFFF), np.uint64((magic >> 32) - 1)
    n2 = (np.asarray(n, dtype=np.uint64) * np.uint64(2)) & np.uint64(0xFFFFFFFF)
    return ((n2 * m) >> np.uint64(32)) >> s


def _magic_divisors():
    primes = [2, 3, 5, 7, 11, 13, 509, 521, 65521, 2147483647]
    pow2 = [(1 << k) + e for k in range(1, 31) for e in (-1, 0, 1)]
    return sorted(set(range(1, 4097)) | set(primes) | set(pow2) | {511, 1000003, (1 << 31) - 2, (1 << 31) - 1})


def test_row_magic_divides_exactly():
    """tiles.row_magic's multiplier and shift give floor(n / d) for every dividend below 2**31, in the kernel's
    uint32 arithmetic, for divisors 1..4096, primes, 2**k +- 1 and the largest: the range ends, the quotient
    boundaries q d - 1, q d around both ends and random dividends (the bound is a theorem; this checks the
    host's arithmetic)."""
    import numpy as np
    from fastlangevin.kernels.tiles import MAGIC_DIVIDEND_LIMIT, row_magic

    rng = np.random.default_rng(12)
    top = MAGIC_DIVIDEND_LIMIT - 1
    for d in _magic_divisors():
        magic = row_magic(d)
        assert magic & 0xFFFFFFFF >= 1 << 31 and 1 <= magic >> 32 <= 32, d
        qs = np.array([0, 1, 2, 3, top // d - 1, top // d], dtype=np.int64)
        n = np.concatenate(
            [
                np.arange(0, min(3 * d + 5, 20000)),
                (qs[:, None] * d + np.arange(-1, 2)[None, :]).ravel(),
                np.arange(top - 4100, top + 1),
                rng.integers(0, MAGIC_DIVIDEND_LIMIT, 2000),
            ]
        )
        n = n[(n >= 0) & (n <= top)].astype(np.uint64)
        got = _magic_quotients(n, magic)
        want = n // np.uint64(d)
        assert np.array_equal(got, want), (d, n[got != want][:5])


def test_row_magic_rejects_bad_divisors():
    from fastlangevin.kernels.tiles import row_magic

    for d in (0, -1, 1 << 31):
        with pytest.raises(ValueError, match="row_size"):
            row_magic(d)


@triton.jit
def _magic_rows_kernel(out_ptr, start, magic, R: tl.constexpr, VEC: tl.constexpr, PER_TILE_ROW: tl.constexpr):
    offs = tl.arange(0, R)[:, None] * VEC + tl.arange(0, VEC)[None, :]
    rows = magic_rows(start.to(tl.int64), offs, magic, PER_TILE_ROW)
    tl.store(out_ptr + offs, rows + tl.zeros_like(offs))  # an [R, 1] result broadcast over its tile rows


@pytest.mark.parametrize("row_size", [1, 2, 3, 7, 8, 100, 511, 4096, 5000])
@pytest.mark.parametrize("start", [-3, -1, 0, 4093, 123456789, (1 << 31) - 4096])
def test_magic_rows_in_a_kernel(row_size, start):
    """tiles.magic_rows (Triton's umulhi, interpreted) gives (start + offs) // row_size for every element below
    2**31 of a tile: per element, and per tile row where the rows are whole tile rows; negative starts (program 0
    with a head) masked in the kernels and not compared."""
    from fastlangevin.kernels.tiles import row_magic

    R, VEC = 512, 8
    got = torch.empty(R * VEC, dtype=torch.int32)
    _magic_rows_kernel[(1,)](got, start, row_magic(row_size), R=R, VEC=VEC, PER_TILE_ROW=False)
    idx = torch.arange(R * VEC, dtype=torch.int64) + start
    valid = idx >= 0
    assert torch.equal(got[valid].long(), idx[valid] // row_size)
    if row_size % VEC == 0 and start % VEC == 0 and start >= 0:
        _magic_rows_kernel[(1,)](got, start, row_magic(row_size), R=R, VEC=VEC, PER_TILE_ROW=True)
        assert torch.equal(got.long(), idx // row_size)


@triton.jit
def _pair_rows_kernel(out_ptr, start, magic, row_size, R: tl.constexpr, VEC: tl.constexpr, HEAD: tl.constexpr):
    offs = tl.arange(0, R)[:, None] * VEC + tl.arange(0, VEC)[None, :]
    r0, cut = pair_rows(start.to(tl.int64), offs, magic, row_size.to(tl.int64), HEAD)
    # each element's row as the step's selects take it: the tile row's first row, the next from column `cut` on
    rows = r0 + (tl.arange(0, VEC)[None, :] >= cut).to(tl.int32)
    tl.store(out_ptr + offs, rows)


@pytest.mark.parametrize("VEC", [4, 8])
@pytest.mark.parametrize("row_size", [3, 4, 5, 7, 9, 100, 511])
@pytest.mark.parametrize("start", [-3, -1, 0, 4096, 123456789, (1 << 31) - 4096])
def test_pair_rows_in_a_kernel(VEC, row_size, start):
    """tiles.pair_rows (interpreted): each tile row's first row and the column where the next begins give
    (start + offs) // row_size for every element below 2**31 of a tile whose tile rows span at most two rows
    (rows of >= VEC - 1); negative starts (program 0 with a head, HEAD set) masked in the kernels and not compared."""
    from fastlangevin.kernels.tiles import row_magic

    if row_size < VEC - 1:
        pytest.skip("a tile row may span more than two rows")
    R = 4096 // VEC
    got = torch.empty(R * VEC, dtype=torch.int32)
    _pair_rows_kernel[(1,)](got, start, row_magic(row_size), row_size, R=R, VEC=VEC, HEAD=int(start < 0))
    idx = torch.arange(R * VEC, dtype=torch.int64) + start
    valid = idx >= 0
    assert torch.equal(got[valid].long(), idx[valid] // row_size)


@pytest.mark.parametrize(
    "D,elem_offset,dtype,row_div",
    [
        (3, 0, torch.float32, 1),
        (7, 0, torch.float32, 1),
        (100, 0, torch.float32, 2),
        (2, 0, torch.float32, 3),
        (1, 0, torch.float32, 3),
        (5, 1, torch.float32, 1),  # a mid-group start: a row per element
        (12, 0, torch.bfloat16, 1),  # 16-bit rows not whole 8-wide tile rows
        (16, 4, torch.bfloat16, 2),
        (4, 0, torch.bfloat16, 3),
        (6, 3, torch.bfloat16, 1),
    ],
    ids=str,
)
def test_flat_perturb_finds_rows(D, elem_offset, dtype, row_div):
    """The flat perturb (short rows) finds each element's row by a multiply-high, per tile row or by a shift
    (kernels/dsm.py flat_row_div): with injected noise bitwise the fallback's x̃ (fp32; bf16 to its rounding
    of the same fp32 value), and with generated noise the fallback's Philox to 1e-5, over several full tiles
    (BLOCK 256: the unmasked copy) and a partial last one."""
    B = 1100 // D + 1
    x, z, sigma, alpha, _ = _inputs(B, D, dtype)
    n = x.numel()
    assert n > 2 * 256 and n % 256  # full tiles and a partial one
    flat, _, scalars, consts = kd._perturb_plan(n, D, elem_offset, dtype != torch.float32, True, True, False, True, 256)
    assert flat and consts["ROW_DIV"] == row_div
    seed = torch.tensor([4242], dtype=torch.int64)
    kw = dict(row_size=D, elem_offset=elem_offset)
    for a in (alpha, None):
        got = kd.launch_dsm_perturb(x, torch.empty_like(x), seed, a, sigma, injected_noise=z, block=256, **kw)
        want = fb.dsm_perturb_torch(x, torch.empty_like(x), seed, a, sigma, rng="philox", injected_noise=z, **kw)
        if dtype == torch.float32:
            assert torch.equal(got, want), (D, elem_offset, a is None)
        else:  # the interpreter's fp32 -> bf16 cast truncates where torch rounds: one ulp
            torch.testing.assert_close(got.float(), want.float(), atol=0, rtol=2**-7)
        got = kd.launch_dsm_perturb(x, torch.empty_like(x), seed, a, sigma, block=256, **kw)
        want = fb.dsm_perturb_torch(x, torch.empty_like(x), seed, a, sigma, rng="philox", **kw)
        if dtype == torch.float32:
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(got.float(), want.float(), atol=1e-5, rtol=2**-7)

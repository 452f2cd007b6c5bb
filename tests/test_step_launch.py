"""The step kernel's launch layouts (kernels/langevin_step.py) give bitwise the same outputs.

The launcher picks, per call, a flat or a (row, chunk) grid (per-row scales on aligned rows) and a
masked or an unmasked (EVEN: every tile full) tile; the noise is keyed by the global element index, so
every layout must agree bit for bit with every other (interpreted here, Triton's CPU interpreter).
"""

import pytest
import torch

from fastlangevin import _backend, modes

pytestmark = pytest.mark.skipif(not _backend.triton_available(), reason="needs Triton (interpreter)")

if _backend.triton_available():
    import triton
    import triton.language as tl
    from fastlangevin.kernels.tiles import widen

    @triton.jit
    def _widen_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK // 8)[:, None] * 8 + tl.arange(0, 8)[None, :]
        tl.store(out_ptr + offs, widen(tl.load(x_ptr + offs), tl.float32))


def _launch(x, s, out, seed, *, step_t=None, noise_mode=modes.NOISE_SQRT2A, clamp=(None, None), **kw):
    from fastlangevin.kernels.langevin_step import launch_langevin_step

    rows = x.shape[0]
    return launch_langevin_step(
        x.view(-1),
        s.view(-1),
        out.view(-1),
        seed,
        step_value=0.05,
        step_tensor=step_t,
        noise_mode=noise_mode,
        noise_value=0.7,
        noise_tensor=kw.pop("noise_t", step_t if noise_mode == modes.SCALE_ROWS else None),
        lo=clamp[0],
        hi=clamp[1],
        row_size=x.numel() // rows,
        **kw,
    )


@pytest.mark.parametrize(
    "dtype,score_dtype",
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16)],
)
@pytest.mark.parametrize("noise_mode", [modes.NOISE_SQRT2A, modes.SCALE_ROWS])
# 72: the last chunk of each row is partial (masked); 68: its last 8-wide tile row too (half of it valid)
@pytest.mark.parametrize("row_size", [64, 72, 68])
def test_row_grid_equals_flat_grid(dtype, score_dtype, noise_mode, row_size):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, row_size, generator=g).to(dtype)
    s = torch.randn(5, row_size, generator=g).to(score_dtype)
    step_t = torch.rand(5, generator=g) * 0.1
    seed = torch.tensor([123456789], dtype=torch.int64)
    outs = []
    for row_grid, block in ((False, None), (True, 16), (True, 32), (True, 128)):
        out = torch.full_like(x, float("nan"))
        _launch(x, s, out, seed, step_t=step_t, noise_mode=noise_mode, clamp=(-2.0, 2.0), elem_offset=8,
                row_grid=row_grid, block=block)  # fmt: skip
        outs.append(out)
    assert not outs[0].isnan().any()
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


@pytest.mark.parametrize("n,block,offset", [(256, 64, 0), (256, 64, 4), (250, 64, 0), (256, 64, 2)])
def test_even_tiles_equal_masked_tiles(n, block, offset):
    """n a multiple of BLOCK at a group-aligned offset launches unmasked (EVEN); the values are those of
    a launch with a BLOCK that leaves a partial tile."""
    g = torch.Generator().manual_seed(4)
    x, s = torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)
    seed = torch.tensor([42], dtype=torch.int64)
    a, b = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    _launch(x, s, a, seed, noise_mode=modes.SCALE_ARG, elem_offset=offset, block=block)
    _launch(x, s, b, seed, noise_mode=modes.SCALE_ARG, elem_offset=offset, block=8 * block)
    assert not a.isnan().any() and torch.equal(a, b)


def test_widen_is_the_exact_bf16_conversion():
    """tiles.widen (bf16 -> fp32 as the bits shifted into the high half; the step's and DSM's loads) gives
    every one of the 2**16 bf16 bit patterns (zeros, subnormals, infinities, NaN payloads) exactly the bits
    of PyTorch's conversion, through an 8-wide tile as the kernels load it."""
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    x = bits.view(torch.bfloat16)
    out = torch.empty(x.numel(), dtype=torch.float32)
    _widen_kernel[(x.numel() // 8192,)](x, out, BLOCK=8192)
    assert torch.equal(out.view(torch.int32), x.float().view(torch.int32))


@pytest.mark.parametrize("n,offset", [(256, 0), (250, 8), (251, 0), (251, 1)])
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float32])
def test_bf16_score_equals_its_fp32_copy(n, offset, x_dtype):
    """A bf16 score (widened in-kernel by tiles.widen) steps bit for bit as its exact fp32 copy does; with an
    fp32 state the bf16 score makes 8-wide tiles, whose fp32 x and out go in 4-wide halves (the 4-wide tiles
    of the all-fp32 launch are the reference)."""
    g = torch.Generator().manual_seed(5)
    x, s = torch.randn(n, 1, generator=g).to(x_dtype), torch.randn(n, 1, generator=g).to(torch.bfloat16)
    seed = torch.tensor([77], dtype=torch.int64)
    a, b = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    _launch(x, s, a, seed, clamp=(-1.5, 1.5), elem_offset=offset, block=64)
    _launch(x, s.float(), b, seed, clamp=(-1.5, 1.5), elem_offset=offset, block=64)
    assert not a.isnan().any() and torch.equal(a, b)


@pytest.mark.parametrize("offset", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_row", [False, True])
def test_mid_group_column_loads_equal_row_loads(offset, dtype, per_row):
    """A start mid-way into a Philox group loads and stores 4-wide tiles column by column (tiles.tile_load,
    LANES: VEC 4 with a head); 8-wide tiles (VEC 8) take the one 2-D load, and the fallback's Philox stream is
    the reference for both: the same values whatever the layout."""
    from fastlangevin import _rng

    g = torch.Generator().manual_seed(6)
    x, s = torch.randn(37, 7, generator=g).to(dtype), torch.randn(37, 7, generator=g).to(dtype)
    step_t = torch.rand(37, generator=g) * 0.1 if per_row else None
    mode = modes.SCALE_ROWS if per_row else modes.SCALE_ARG
    seed = torch.tensor([2024], dtype=torch.int64)
    outs = []
    for vec in (None, 4, 8):
        out = torch.full_like(x, float("nan"))
        _launch(x, s, out, seed, step_t=step_t, noise_mode=mode, clamp=(-2.0, 2.0), elem_offset=offset, block=64,
                vec=vec)  # fmt: skip
        outs.append(out)
    assert not outs[0].isnan().any()
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    # the noise is the Philox stream at the global indices: a noise-only update against rng="philox"'s normals
    zeros = torch.zeros(37, 7)
    out = torch.full_like(zeros, float("nan"))
    _launch(zeros, zeros, out, seed, noise_mode=modes.SCALE_ARG, elem_offset=offset, block=64)
    want = (0.7 * _rng.philox_normal(seed, offset, zeros.numel())).view(37, 7)
    ulp = torch.finfo(torch.float32).eps * want.abs().clamp_min(1.0)
    assert ((out - want).abs() <= ulp).all()


def _head_vs_aligned(x, s, seed, offset, block, vec=None, **kw):
    """(a launch at the mid-group ``offset``, the same elements of a group-aligned launch over ``offset % 4`` more
    leading elements): the aligned launch (HEAD 0) is the reference for the head's aligned interior tiles."""
    h = offset % 4
    got = torch.full_like(x, float("nan"))
    _launch(x.view(1, -1), s.view(1, -1), got.view(1, -1), seed, elem_offset=offset, block=block, vec=vec, **kw)
    pad = lambda t: torch.cat([torch.zeros(h, dtype=t.dtype), t])  # noqa: E731
    want = torch.full_like(pad(x), float("nan"))
    kw = dict(kw, injected_noise=pad(kw["injected_noise"])) if kw.get("injected_noise") is not None else kw
    _launch(pad(x).view(1, -1), pad(s).view(1, -1), want.view(1, -1), seed, elem_offset=offset - h, **kw)
    return got, want[h:]


@pytest.mark.parametrize("head", [1, 2, 3])
@pytest.mark.parametrize(
    "dtype,score_dtype",
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.float32, torch.bfloat16),
        (torch.bfloat16, torch.float32),
    ],
)
def test_head_aligned_interior_equals_group_aligned_launch(head, dtype, score_dtype):
    """A mid-group start with scalar or 0-d scales runs its interior tiles on aligned memory rows (_head_interior:
    the noise permuted in registers) and its first and last tiles masked: bit for bit the group-aligned launch's
    values (and the Philox stream's), over tile sizes (8 to 64 elements a thread, one to many tiles), lengths
    whose last tile is full, one short of the HEAD elements it reads past itself, or partial, and group offsets
    whose Philox low words wrap inside a tile."""
    from fastlangevin import _rng

    g = torch.Generator().manual_seed(11 + head)
    seed = torch.tensor([31337], dtype=torch.int64)
    # (block, n): tile 1 ends at n (full, but nothing past it: masked), has its HEAD elements past it (aligned),
    # or is partial; one program; many
    cases = [(b, n) for b in (16, 64) for n in (3, 2 * b - head, 2 * b, 3 * b + 5)] + [(256, 1000), (None, 1000)]
    for block, n in cases:
        # the second: the counters' low words wrap inside tile 1 (normal_tile's cold copy of the rounds)
        for groups in (5, (1 << 32) - (block or 64) // 4 - 3) if block == 64 else (5,):
            offset = 4 * groups + head
            x = torch.randn(n, generator=g).to(dtype)
            s = torch.randn(n, generator=g).to(score_dtype)
            got, want = _head_vs_aligned(x, s, seed, offset, block, clamp=(-1.25, 1.25))
            assert not got.isnan().any() and torch.equal(got, want), (block, n, groups)
    # every scale form and noise mode, injected noise too, and the 4-wide rows (vec 4) of a 16-bit launch
    n, offset = 777, 4 * 9 + head
    x = torch.randn(n, generator=g).to(dtype)
    s = torch.randn(n, generator=g).to(score_dtype)
    step_t = torch.tensor(0.03)
    for kw in (
        dict(noise_mode=modes.SCALE_ARG),
        dict(noise_mode=modes.SCALE_TENSOR, step_t=step_t, noise_t=torch.tensor(0.4)),
        dict(noise_mode=modes.SCALE_TENSOR, noise_t=torch.tensor(0.4)),
        dict(noise_mode=modes.NOISE_NONE),
        dict(noise_mode=modes.NOISE_SQRT2A, step_t=step_t, clamp=(-0.5, 0.75)),
        dict(noise_mode=modes.SCALE_ARG, injected_noise=torch.randn(n, generator=g)),
    ):
        for vec in (None, 4):
            got, want = _head_vs_aligned(x, s, seed, offset, 64, vec=vec, **kw)
            assert not got.isnan().any() and torch.equal(got, want), kw
    # and the noise is the Philox stream at the global indices
    zeros = torch.zeros(n, dtype=dtype)
    out = torch.full_like(zeros, float("nan"))
    _launch(zeros.view(1, -1), zeros.view(1, -1), out.view(1, -1), seed, noise_mode=modes.SCALE_ARG,
            elem_offset=offset, block=64)  # fmt: skip
    want = (0.7 * _rng.philox_normal(seed, offset, n)).to(dtype)
    ulp = torch.finfo(dtype).eps * want.float().abs().clamp_min(1.0)
    assert ((out.float() - want.float()).abs() <= ulp).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_clamp_after_16_bit_rounding_is_the_same(dtype):
    """Compiled launches clamp a 16-bit output after its rounding, against rounded bounds (the packed
    HMNMX2; kernels/langevin_step.py): round(clamp(v, lo, hi)) == clamp(round(v), round(lo), round(hi)) bit
    for bit, for bounds that are not representable, values at and around them, signed zeros, infinities
    and NaN (the interpreter cannot run that path: it clamps in fp32, the left side)."""
    g = torch.Generator().manual_seed(7)
    big = 7e4 if dtype == torch.float16 else 3e38
    for lo, hi in ((-1.5, 1.5), (-1.0001, 0.99996), (0.0, 2.0), (-3.3e-3, 7.77e-3), (-big, big), (2.0, 1.0)):
        near = torch.tensor([lo, hi]).repeat_interleave(401) + torch.linspace(-0.02, 0.02, 401).repeat(2)
        specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), lo, hi, big, -big])
        v = torch.cat([torch.randn(1 << 16, generator=g) * 3, near, specials])
        ref = v.clamp(lo, hi).to(dtype)
        lo16, hi16 = torch.tensor(lo).to(dtype), torch.tensor(hi).to(dtype)
        got = torch.minimum(torch.maximum(v.to(dtype), lo16), hi16)  # tl.clamp's NaN-propagating min(max())
        assert torch.equal(ref.isnan(), got.isnan())
        ok = ~ref.isnan()
        assert torch.equal(ref[ok].view(torch.int16), got[ok].view(torch.int16)), (lo, hi)


def _short_rows_step(x, s, seed, step_t, noise_t, offset, z=None):
    from fastlangevin.kernels.langevin_step import launch_langevin_step

    out = torch.full_like(x, float("nan"))
    launch_langevin_step(x.view(-1), s.view(-1), out.view(-1), seed, step_value=0.0, step_tensor=step_t,
                         noise_mode=modes.SCALE_ROWS, noise_value=0.0, noise_tensor=noise_t, lo=-2.0, hi=2.0,
                         row_size=x.shape[1], elem_offset=offset, injected_noise=z, block=256)  # fmt: skip
    return out


@pytest.mark.parametrize("row_size", [1, 2, 3, 4, 5, 6, 7, 8, 9, 96, 100, 511])
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize(
    "dtype,score_dtype",
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.bfloat16)],
)
def test_short_rows_multiply_high_equals_division(row_size, offset, dtype, score_dtype, monkeypatch):
    """Per-row scales on rows too short for the row grid: the flat grid's rows by a multiply-high (tiles.magic_rows:
    per element, or per tile row where rows are whole tile rows of a group-aligned launch; tiles.pair_rows: each tile
    row's first row and the next, selected per element, where a tile row spans at most two rows) or, for rows of 1,
    2 (4 in 8-wide tiles) of a group-aligned launch, by a shift give bit for bit the
    outputs of the division they replace (the launcher's path past 2**31 elements, forced here) and, with injected
    noise, of the plain formula (fp32 bitwise; 16-bit within the interpreter's one-ulp truncation)."""
    _check_short_rows(row_size, offset, dtype, score_dtype, 37, "both", monkeypatch)


# rows * row_size a multiple of the block (256): every tile full at a group-aligned start (EVEN)
@pytest.mark.parametrize("row_size", [1, 2, 3, 5, 7, 9])
@pytest.mark.parametrize("offset", [0, 2])
@pytest.mark.parametrize("dtype,score_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_short_rows_full_tiles(row_size, offset, dtype, score_dtype, monkeypatch):
    """As test_short_rows_multiply_high_equals_division, every tile full (no masks at a group-aligned start)."""
    _check_short_rows(row_size, offset, dtype, score_dtype, 256, "both", monkeypatch)


@pytest.mark.parametrize("row_size", [2, 3, 9, 100])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("scales", ["step", "noise"])
@pytest.mark.parametrize("dtype,score_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_short_rows_one_per_row_scale(row_size, offset, scales, dtype, score_dtype, monkeypatch):
    """As test_short_rows_multiply_high_equals_division with one per-row scale, the other a 0-d tensor."""
    _check_short_rows(row_size, offset, dtype, score_dtype, 37, scales, monkeypatch)


def _check_short_rows(row_size, offset, dtype, score_dtype, rows, scales, monkeypatch):
    from fastlangevin.kernels import langevin_step as ls

    from .helpers import plain_step

    g = torch.Generator().manual_seed(row_size)
    x = torch.randn(rows, row_size, generator=g).to(dtype)
    s = torch.randn(rows, row_size, generator=g).to(score_dtype)
    step_t, noise_t = torch.rand(rows, generator=g) * 0.1, torch.rand(rows, generator=g) + 0.5
    if scales == "step":  # one per-row scale: the other a 0-d tensor
        noise_t = torch.tensor(0.7)
    elif scales == "noise":
        step_t = torch.tensor(0.05)
    seed = torch.tensor([31337], dtype=torch.int64)
    # the launcher's tile rows: 8-wide beside a 16-bit operand at a group-aligned start
    n, vec = x.numel(), 8 if torch.bfloat16 in (dtype, score_dtype) and offset % 4 == 0 else 4
    mixed = dtype != score_dtype
    step_mode, noise_mode = modes.scale_mode(step_t), modes.scale_mode(noise_t)
    _, consts = ls._launch_plan(n, row_size, offset, step_mode, noise_mode, False, True, vec, 256, None, mixed)
    pow2 = row_size & (row_size - 1) == 0
    if offset % 4 == 0 and (row_size % vec == 0 or pow2):
        assert consts["ROW_DIV"] == (2 if row_size % vec == 0 else 5 if mixed else 3)
    else:  # two candidate rows per tile row where a tile row spans at most two rows (not in group-aligned 4-wide
        # tiles: more instructions there), else a row per element
        assert consts["ROW_DIV"] == (4 if row_size >= vec - 1 and (offset % 4 or vec == 8) else 1)
    got = _short_rows_step(x, s, seed, step_t, noise_t, offset)
    sqrt2a = torch.full_like(x, float("nan"))
    _launch(x, s, sqrt2a, seed, step_t=step_t, clamp=(-2.0, 2.0), elem_offset=offset, block=256)
    if step_t.dim() == 0:  # the sqrt(2 a) launch has no per-row scale then: nothing to compare
        sqrt2a = torch.zeros_like(x)
    z = torch.randn(rows, row_size, generator=g)
    injected = _short_rows_step(x, s, seed, step_t, noise_t, offset, z)
    ls._launch_plan.cache_clear()
    try:
        monkeypatch.setattr(ls, "MAGIC_DIVIDEND_LIMIT", 0)  # the division of tiles.tile_rows
        assert (
            ls._launch_plan(n, row_size, offset, step_mode, noise_mode, False, True, vec, 256, None)[1]["ROW_DIV"] == 0
        )
        want = _short_rows_step(x, s, seed, step_t, noise_t, offset)
        want_sqrt2a = torch.full_like(x, float("nan"))
        _launch(x, s, want_sqrt2a, seed, step_t=step_t, clamp=(-2.0, 2.0), elem_offset=offset, block=256)
        if step_t.dim() == 0:
            want_sqrt2a = torch.zeros_like(x)
    finally:
        ls._launch_plan.cache_clear()
    assert not got.isnan().any() and torch.equal(got, want)
    assert not sqrt2a.isnan().any() and torch.equal(sqrt2a, want_sqrt2a)
    col = lambda t: t if t.dim() == 0 else t[:, None]  # noqa: E731
    ref = plain_step(x, s, col(step_t), col(noise_t), z, (-2.0, 2.0))
    if dtype == torch.float32:
        assert torch.equal(injected, ref)
    else:
        torch.testing.assert_close(injected, ref, atol=0, rtol=2**-7)

"""The noise streams (fastlangevin._rng): Philox in PyTorch vs the kernels, the chunk-keyed
CPU stream, seed drawing. The convention they implement is the docstring of fastlangevin._rng."""

import pytest
import torch

import fastlangevin as fl
from fastlangevin import _rng

from .helpers import noise_only as _noise_only


def test_fallback_philox_stream_matches_kernel():
    """rng='philox' reproduces the kernel's stream: integers bitwise, normals to ~1e-6."""
    import triton
    import triton.language as tl

    @triton.jit
    def _ints(seed_ptr, out_ptr, N: tl.constexpr):
        seed = tl.load(seed_ptr)
        c = tl.arange(0, N).to(tl.int64) + (1 << 33)  # exercise the high counter word
        a, b, cc, d = tl.randint4x(seed, c)
        tl.store(out_ptr + tl.arange(0, N) * 4 + 0, a.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + tl.arange(0, N) * 4 + 1, b.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + tl.arange(0, N) * 4 + 2, cc.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + tl.arange(0, N) * 4 + 3, d.to(tl.int64) & 0xFFFFFFFF)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    seed = torch.tensor([0x123456789ABCDEF], dtype=torch.int64, device=device)
    got = torch.empty(4 * 64, dtype=torch.int64, device=device)
    _ints[(1,)](seed, got, N=64)
    ref = torch.stack(_rng.philox_randint4x(seed, torch.arange(64, device=device) + (1 << 33)), 1).reshape(-1)
    assert torch.equal(got, ref)

    g = torch.Generator(device=device)
    g.manual_seed(3)
    zk = _noise_only(4099, device, "triton", generator=g, offset=2)
    g.manual_seed(3)
    zf = _noise_only(4099, device, "torch", rng="philox", generator=g, offset=2)
    torch.testing.assert_close(zk, zf, atol=1e-5, rtol=0)


def test_rng_torch_stream_is_chunk_keyed():
    """rng='torch': chunk k of the global index comes from a generator seeded mix(seed, k)."""
    n = _rng.TORCH_RNG_CHUNK * 2 + 17
    g = torch.Generator().manual_seed(4)
    z = _noise_only(n, "cpu", "torch", rng="torch", generator=g)
    seed = int(_rng.draw_seed(torch.device("cpu"), torch.Generator().manual_seed(4)).item())
    assert torch.equal(z, _rng.torch_normal(seed, 0, n))
    g2 = torch.Generator().manual_seed(int(_rng.chunk_seed(seed, 1)))
    assert torch.equal(
        z[_rng.TORCH_RNG_CHUNK : 2 * _rng.TORCH_RNG_CHUNK], torch.randn(_rng.TORCH_RNG_CHUNK, generator=g2)
    )


@pytest.mark.parametrize("n,offset", [(1, 0), (5, 3), (17, 0), (100, 40), (70000, 65530)])
def test_rng_torch_partial_fill_is_prefix_of_full_chunk(n, offset):
    """Small tensors fill only what they need; the values are the full chunk's."""
    C = _rng.TORCH_RNG_CHUNK
    full = torch.empty(C)
    got = _rng.torch_normal(77, offset, n)
    for k in range(offset // C, (offset + n - 1) // C + 1):
        _rng.torch_chunk_normal(77, k, full, torch.Generator())  # needed defaults to the whole chunk
        g0, g1 = max(k * C, offset), min((k + 1) * C, offset + n)
        assert torch.equal(got[g0 - offset : g1 - offset], full[g0 - k * C : g1 - k * C])


@pytest.mark.parametrize("b", [0.0447, 1.7, 3e-5])
def test_rng_torch_scalar_noise_scale_folded_into_normal_is_exact(b):
    """rng='torch' draws b·z as normal_(0, b): bitwise fl(z · b) of the unit stream."""
    n = _rng.TORCH_RNG_CHUNK + 99
    g = torch.Generator().manual_seed(8)
    x = torch.zeros(n)
    out = fl.langevin_step(x, x, 0.0, b, backend="torch", rng="torch", generator=g)
    seed = int(_rng.draw_seed(torch.device("cpu"), torch.Generator().manual_seed(8)).item())
    assert torch.equal(out, _rng.torch_normal(seed, 0, n) * b)
    # a per-row b takes the unfolded path: the same values
    g.manual_seed(8)
    rows = fl.langevin_step(x, x, 0.0, torch.full((n,), b), backend="torch", rng="torch", generator=g)
    assert torch.equal(rows, out)


def test_draw_seed_value_is_the_draw_seed_draw():
    """draw_seed_value consumes the generator exactly as draw_seed and gives the same value."""
    for k in range(20):
        g1, g2 = torch.Generator().manual_seed(k), torch.Generator().manual_seed(k)
        for _ in range(3):
            assert _rng.draw_seed(torch.device("cpu"), g1).item() == _rng.draw_seed_value(g2)
        assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))
    torch.manual_seed(5)
    a = _rng.draw_seed(torch.device("cpu")).item()
    torch.manual_seed(5)
    assert a == _rng.draw_seed_value() and 0 <= a < _rng.SEED_HIGH


def test_philox_fast_integers_match_reference_split():
    """philox4x32's 64-bit-product rounds equal the 16-bit split formulation (uint32 values)."""
    seed = torch.tensor([0x0123456789ABCDEF], dtype=torch.int64)
    c = torch.arange(0, 4096, dtype=torch.int64) * 2654435761 % (1 << 32)
    got = _rng.philox4x32(seed, c, c ^ 0x5555, c * 0 + 7, c >> 3)
    ref = _philox_split(seed, c, c ^ 0x5555, c * 0 + 7, c >> 3)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    assert all(int(t.min()) >= 0 and int(t.max()) < (1 << 32) for t in got)


def _philox_split(seed, c0, c1, c2, c3):
    """Philox4x32-10 with the 32x32-bit products split in 16-bit halves (no int64 overflow)."""
    U = 0xFFFFFFFF

    def mul(m, c):
        lo16, hi16 = c & 0xFFFF, c >> 16
        p_lo, p_hi = lo16 * m, hi16 * m
        return (p_hi + (p_lo >> 16)) >> 16, ((p_hi & 0xFFFF) << 16) + p_lo & U

    seed = seed.reshape(())
    k0, k1 = seed & U, (seed >> 32) & U
    for _ in range(10):
        hi0, lo0 = mul(0xD2511F53, c0)
        hi1, lo1 = mul(0xCD9E8D57, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + 0x9E3779B9) & U, (k1 + 0xBB67AE85) & U
    return c0, c1, c2, c3

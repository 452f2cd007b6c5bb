"""Random numbers: seeds, the kernels' Philox stream in PyTorch, and the fast CPU stream.

This docstring is THE noise convention of fastlangevin; kernels, fallbacks and ops point here.

* **Seed.** Each op call draws one int64 seed in ``[0, SEED_HIGH)`` from torch's generator (the
  ``generator=`` argument, else the device's default): exactly the draw
  ``torch.randint(0, SEED_HIGH, (1,), generator=g)`` makes, whatever the tensor's size, so a
  multi-step run on ``x[:k]`` sees the same seeds as the run on ``x``. :func:`draw_seed` puts it
  in an int64 ``[1]`` tensor on the device (kernels ``tl.load`` it: ``torch.manual_seed`` and
  ``generator=`` govern the noise, and CUDA-graph replays get fresh noise because the captured
  draw refills the tensor); :func:`draw_seed_value` returns the same draw as a Python int for
  CPU code that needs no tensor (one ``random_`` into a reused buffer: ~1 µs instead of ~3 µs).
* **Counter.** Noise for logical element ``i`` (row-major over the *global* batch:
  ``i = (sample_offset + row) * row_size + column``) is output ``i % 4`` of Philox4x32-10 at
  counter ``i // 4`` (``tl.randn4x``: four normals per Philox call). It never depends on BLOCK,
  grid, GPU or batch size.
* **Fallback streams.** ``rng="philox"`` reproduces that stream in PyTorch (integers bitwise,
  normals to ~1e-6 since ``log``/``cos`` differ by an ulp between libms). It costs about 40
  small torch ops per round-trip of 4 normals *for the whole tensor at once*: a fixed ~0.3 ms
  per call at small sizes, then ~10x the cost of ``torch.randn`` per element on CPU — use it
  to compare CPU with GPU, not for speed. ``rng="torch"`` (the CPU default) keys torch's own
  CPU generator by chunk: elements ``[k*C, (k+1)*C)`` of the global index space
  (``C = TORCH_RNG_CHUNK``) take ``normal_`` draws from a generator seeded with
  ``chunk_seed(seed, k)``. It is batch- and shard-invariant in the same way, but its values
  differ from the kernels'.
* **One walk.** The fallbacks visit the flat tensor through :func:`fastlangevin.fallback.chunks.for_pieces`,
  which cuts it on this chunk grid of the global index.
"""

from __future__ import annotations

import threading
from typing import Optional, Tuple

import numpy as np
import torch

#: Seeds are drawn in [0, SEED_HIGH): non-negative, so they print and round-trip through Python ints.
SEED_HIGH = 1 << 62
_SEED_HIGH = SEED_HIGH  # the old private name

# Philox4x32 constants (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011).
_PHILOX_M0 = 0xD2511F53
_PHILOX_M1 = 0xCD9E8D57
_PHILOX_W0 = 0x9E3779B9
_PHILOX_W1 = 0xBB67AE85
_PHILOX_ROUNDS = 10
_U32 = 0xFFFFFFFF
# Triton's uint->uniform scale: largest float with (2**31 - 1) * scale < 1.
_UNIFORM_SCALE = 4.6566127342e-10

#: Chunk of the global element index handled by one reseeded torch generator (rng="torch").
#: 2**16 fp32 values = 256 KiB: stays in L2 while the update consumes it.
TORCH_RNG_CHUNK = 1 << 16


def draw_seed(device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One int64 seed on ``device`` (shape ``[1]``) from ``generator`` or the device default."""
    return torch.randint(0, SEED_HIGH, (1,), device=device, dtype=torch.int64, generator=generator)


_SEED_SCRATCH = threading.local()


def draw_seed_value(generator: Optional[torch.Generator] = None) -> int:
    """The seed :func:`draw_seed` would draw from a CPU ``generator`` (None: torch's default CPU
    generator), as a Python int: the same generator consumption, bitwise the same value.

    ``random_(0, SEED_HIGH)`` runs the kernel ``torch.randint`` runs; drawing into this thread's
    reused one-element buffer saves the allocation and the factory's argument parsing.
    """
    buf = getattr(_SEED_SCRATCH, "buf", None)
    if buf is None:
        buf = _SEED_SCRATCH.buf = torch.empty(1, dtype=torch.int64)
    return buf.random_(0, SEED_HIGH, generator=generator).item()


# ---------------------------------------------------------------------------------------
# Philox4x32-10 in PyTorch (uint32 values carried in int64 tensors)
# ---------------------------------------------------------------------------------------
def _mul_hi_lo(m: int, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of ``m * c`` for a uint32 constant m and uint32 values c.

    The product needs 64 bits: int64 multiplication wraps modulo 2**64 (two's complement),
    so its bit pattern is exact; an arithmetic shift and a mask then read either half. Two
    ops fewer per half than splitting c into 16-bit halves (``tests/test_rng.py`` checks both).
    """
    p = c * m
    return p.bitwise_right_shift(32).bitwise_and_(_U32), p.bitwise_and_(_U32)


def philox4x32(seed: torch.Tensor, c0, c1, c2, c3, rounds: int = _PHILOX_ROUNDS):
    """Philox4x32 with a 64-bit key (``seed``: int64 tensor, 1 element) on uint32 counters.

    Bit-for-bit the same as ``triton.language.philox`` with 32-bit counters.
    Returns four int64 tensors holding uint32 values.
    """
    seed = seed.reshape(()).to(torch.int64)
    if seed.device.type == "cpu" and c0.device.type == "cpu":
        return _philox4x32_numpy(int(seed.item()), c0, c1, c2, c3, rounds)
    # device tensors stay on the device (no sync; CUDA-graph safe)
    k0 = seed.bitwise_and(_U32)
    k1 = seed.bitwise_right_shift(32).bitwise_and(_U32)
    for _ in range(rounds):
        hi0, lo0 = _mul_hi_lo(_PHILOX_M0, c0)
        hi1, lo1 = _mul_hi_lo(_PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1.bitwise_xor_(c1).bitwise_xor_(k0), lo1, hi0.bitwise_xor_(c3).bitwise_xor_(k1), lo0
        k0 = (k0 + _PHILOX_W0) & _U32
        k1 = (k1 + _PHILOX_W1) & _U32
    return c0, c1, c2, c3


def _uint_to_uniform(u: torch.Tensor) -> torch.Tensor:
    # Triton: bitcast to int32, fold negatives with ~x, scale. In uint32 terms:
    # v = u if u < 2**31 else 2**32 - 1 - u.
    v = torch.where(u < (1 << 31), u, _U32 - u)
    return v.to(torch.float32) * torch.tensor(_UNIFORM_SCALE, dtype=torch.float32, device=u.device)


def _box_muller(u1: torch.Tensor, u2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    u1 = torch.clamp_min(u1, 1.0e-7)
    th = u2 * torch.tensor(6.283185307179586, dtype=torch.float32, device=u2.device)
    r = torch.sqrt(torch.log(u1) * -2.0)
    return r * torch.cos(th), r * torch.sin(th)


def _philox4x32_numpy(seed: int, c0, c1, c2, c3, rounds: int):
    """:func:`philox4x32` on CPU in numpy uint64, where a 32x32-bit product cannot overflow:
    bitwise the same integers, ~5x faster than the torch ops at small sizes (each numpy op on a
    small array costs a fraction of a torch op's dispatch)."""
    u = [np.ascontiguousarray(c.numpy()).view(np.uint64) for c in (c0, c1, c2, c3)]
    c0, c1, c2, c3 = u
    mask, shift = np.uint64(_U32), np.uint64(32)
    m0, m1 = np.uint64(_PHILOX_M0), np.uint64(_PHILOX_M1)
    k0, k1 = seed & _U32, (seed >> 32) & _U32
    for _ in range(rounds):
        p0, p1 = c0 * m0, c2 * m1
        hi1 = p1 >> shift
        hi1 ^= c1
        hi1 ^= np.uint64(k0)
        hi0 = p0 >> shift
        hi0 ^= c3
        hi0 ^= np.uint64(k1)
        c0, c1, c2, c3 = hi1, p1 & mask, hi0, p0 & mask
        k0, k1 = (k0 + _PHILOX_W0) & _U32, (k1 + _PHILOX_W1) & _U32
    return tuple(torch.from_numpy(c.view(np.int64)) for c in (c0, c1, c2, c3))


def philox_randint4x(seed: torch.Tensor, counter: torch.Tensor):
    """``tl.randint4x(seed, counter)`` for an int64 counter tensor."""
    c0 = counter.bitwise_and(_U32)
    c1 = counter.bitwise_right_shift(32).bitwise_and(_U32)
    zero = torch.zeros_like(c0)
    return philox4x32(seed, c0, c1, zero, zero)


def philox_randn4x(seed: torch.Tensor, counter: torch.Tensor):
    """``tl.randn4x(seed, counter)``: four float32 normal tensors shaped like ``counter``."""
    i1, i2, i3, i4 = philox_randint4x(seed, counter)
    n1, n2 = _box_muller(_uint_to_uniform(i1), _uint_to_uniform(i2))
    n3, n4 = _box_muller(_uint_to_uniform(i3), _uint_to_uniform(i4))
    return n1, n2, n3, n4


def philox_normal(seed: torch.Tensor, start: int, n: int, device=None) -> torch.Tensor:
    """The kernels' normals for global element indices ``[start, start + n)`` (float32 ``[n]``)."""
    device = seed.device if device is None else device
    if n == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    g0, g1 = start // 4, (start + n - 1) // 4 + 1
    counter = torch.arange(g0, g1, dtype=torch.int64, device=device)
    z = torch.stack(philox_randn4x(seed.to(device), counter), dim=1).reshape(-1)
    return z[start - 4 * g0 : start - 4 * g0 + n]


# ---------------------------------------------------------------------------------------
# Chunk-keyed torch generator stream (rng="torch", CPU)
# ---------------------------------------------------------------------------------------
def chunk_seed(seed: int, chunk: int) -> int:
    """splitmix64 of (seed, chunk): an independent-looking 64-bit seed per chunk."""
    m = 0xFFFFFFFFFFFFFFFF
    z = (seed + (chunk + 1) * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def torch_chunk_normal(
    seed: int,
    chunk: int,
    out: torch.Tensor,
    generator: torch.Generator,
    needed: int = TORCH_RNG_CHUNK,
    std: float = 1.0,
) -> torch.Tensor:
    """Fill ``out`` (float32, ``TORCH_RNG_CHUNK`` elements, CPU) with chunk ``chunk``'s normals.

    ``std`` scales the draws inside ``normal_`` (bitwise ``fl(z * std)`` in fp32).
    Only the first ``needed`` values are guaranteed: torch's CPU ``normal_`` draws all
    uniforms in order, then transforms them in self-contained groups of 16, so a fill of any
    multiple of 16 (≥ 16) is a prefix of the full chunk's fill. Small tensors thus pay for
    what they use, not for 2**16 values.
    """
    fill = min(out.numel(), max(16, -(-needed // 16) * 16))
    generator.manual_seed(chunk_seed(seed, chunk))
    out[:fill].normal_(0.0, std, generator=generator)
    return out


def torch_normal(seed: int, start: int, n: int) -> torch.Tensor:
    """rng="torch" normals for global element indices ``[start, start + n)`` (float32, CPU)."""
    out = torch.empty(n, dtype=torch.float32)
    if n == 0:
        return out
    C = TORCH_RNG_CHUNK
    gen = torch.Generator()
    buf = torch.empty(C, dtype=torch.float32)
    for k in range(start // C, (start + n - 1) // C + 1):
        g0, g1 = max(k * C, start), min((k + 1) * C, start + n)
        torch_chunk_normal(seed, k, buf, gen, needed=g1 - k * C)
        out[g0 - start : g1 - start] = buf[g0 - k * C : g1 - k * C]
    return out

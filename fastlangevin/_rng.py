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
  counter ``i // 4`` (four normals per Philox call, two Box–Muller pairs: "Normal transform"
  below). It never depends on BLOCK, grid, GPU or batch size.
* **Fallback streams.** ``rng="philox"`` reproduces that stream in PyTorch (integers bitwise,
  normals to 1 ulp of the interpreted kernels: the same polynomials; to ``GPU_ANGLE_BOUND`` = 9.6e-6
  of the compiled ones, whose angle goes through the hardware sine and cosine: see "Normal transform").
  It costs about 40 small torch ops per round-trip of 4 normals *for the whole tensor at once*: a fixed ~0.3 ms
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
        with torch.inference_mode(False):  # kept across calls: never an inference tensor (see _backend.KEPT)
            buf = _SEED_SCRATCH.buf = torch.empty(1, dtype=torch.int64)
    return buf.random_(0, SEED_HIGH, generator=generator).item()


_SEED_BUFFERS = threading.local()  # .d: {device or CUDA stream: int64 [1] buffer} of this thread


def draw_seed_reused(device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """:func:`draw_seed`'s draw into an int64 ``[1]`` buffer reused per (thread, device, CUDA stream).

    The same value and the same generator advance: ``torch.randint(low, high, size, generator)`` is
    ``at::empty(size).random_(low, high, generator)`` in ATen (``native/TensorFactories.cpp``), and
    the kernel's Philox offset advance depends on the element count only (``random_from_to_kernel``).
    It saves the factory's allocation and argument parsing.

    Only for a seed that the caller's launches consume before it returns, with no other code in between
    (the lean step and corrector paths): the buffer is overwritten by the next draw. On CUDA the next
    draw into the same buffer is on the same stream (the key), so it is ordered after this call's
    kernels; another thread or stream has its own buffer. During CUDA-graph capture a fresh
    :func:`draw_seed` tensor is drawn instead (the graph must own its seed's memory). Never for seeds
    that leave the call (``step_args``, autograd's saved tensors).
    """
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return draw_seed(device, generator)
        key = torch.cuda.current_stream(device)
    else:
        key = device
    bufs = getattr(_SEED_BUFFERS, "d", None)
    if bufs is None:
        bufs = _SEED_BUFFERS.d = {}
    buf = bufs.get(key)
    if buf is None:
        if len(bufs) >= 64:  # streams come and go: a dropped buffer is freed stream-ordered by the allocator
            bufs.clear()
        with torch.inference_mode(False):  # kept across calls (see _backend.KEPT)
            buf = bufs[key] = torch.empty(1, dtype=torch.int64, device=device)
    if generator is None:
        return buf.random_(0, SEED_HIGH)
    return buf.random_(0, SEED_HIGH, generator=generator)


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


# ---------------------------------------------------------------------------------------
# Normal transform (the kernels' `fast_box_muller`, kernels/tiles.py; the same arithmetic here)
# ---------------------------------------------------------------------------------------
# Box–Muller on the two uint32 words (a, b) of a Philox output pair, over half a circle plus a sign:
#
#     z0 = s r cos(pi v / 2),  z1 = r sin(pi v / 2),   r = sqrt(-2 ln U),
#     U = (2 (a mod 2**31) + 1) / 2**32,  v = int32(b) / 2**31 in [-1, 1),  s = -1 if bit 31 of a else 1
#
# * (s cos, sin) of an angle uniform on [-pi/2, pi/2) with an independent fair sign is uniform on the
#   circle (s = -1 maps the angle phi to pi - phi), so (z0, z1) is exactly Box–Muller's pair.
# * U = (j + 1/2) / 2**31 for j = a mod 2**31: the midpoint grid of 2**31 cells in (0, 1), never 0 or 1
#   before the fp32 rounding of 2j + 1 (24 bits; U then rounds to 1 within 2**-25 of it, giving r = 0).
#   Tail truncation: |z| <= r_max = sqrt(-2 ln 2**-32) = sqrt(64 ln 2) = 6.66 (P(|Z| > 6.66) = 2.7e-11;
#   the old ``tl.randn4x`` clamped U at 1e-7: r_max = 5.68).
# * ln U = k ln 2 + ln m with U = 2**k m, m in [sqrt(1/2), sqrt(2)), read from U's fp32 bits, and
#   -2 ln m = t (L0 + t (L1 + ... + t L6)), t = m - 1 (exact): a minimax fit with relative error
#   1.2e-6 on that interval, so w = -2 ln U keeps its relative accuracy as U -> 1 (r -> 0).
# * The angle pi v / 2 lies in [-pi/2, pi/2) by construction (no range reduction): sin(pi v / 2) = v P(v^2)
#   and cos(pi v / 2) = Q(v^2), minimax fits of degree 7 and 8 with absolute errors 6.1e-7 and 8.3e-8.
# * Every polynomial step is a fused multiply-add (one rounding, on the GPU and in Triton's
#   interpreter alike); here an fma is the float64 product (exact) plus the addend, rounded once to
#   float64 and then to float32: equal to the single rounding except when the float64 sum lands on
#   a float32 tie (double rounding, ~2**-29 per operation), then 1 ulp apart.
# * sqrt: correctly rounded here and in the interpreter; the GPU's ``sqrt.approx.f32`` is within 2**-22 relative.
#
# Measured against float64 Box–Muller on the same (U, v, s) over 2**22 random word pairs plus the extreme
# words (tests/test_normals.py asserts the bounds on 2**18): |z - z_exact| <= 3.7e-6 absolute (at r ~ 5.9)
# and <= 1.4e-6 relative to r (at v ~ -1: the sine fit plus rounding); the tests assert 4e-6 and 1.5e-6.
# The interpreted kernel equals this emulation to <= 1 ulp (bitwise but for fma double rounding).
#
# The compiled (GPU) kernel takes the angle's sine and cosine from the hardware instead of the two
# polynomials (kernels/tiles.py, HW_SINCOS): theta = fl(fl(int32(b)) * fl(pi / 2**32)), then
# ``sin.approx.ftz.f32`` / ``cos.approx.ftz.f32`` (FMUL, ptxas's FMUL.RZ, MUFU.SIN, MUFU.COS: 4 SASS per pair
# instead of 10). The interpreter cannot run inline PTX, so the CPU tests, this emulation and every golden
# value keep the polynomials; the GPU path is emulated within a stated bound instead (issue 12 allows
# either). The bound, |z_gpu - z_cpu| for the same words:
#
#     |dz| <= r * (d_trig + e_hw + 2**-22 + 2**-23) <= r_max * 1.44e-6 = GPU_ANGLE_BOUND = 9.6e-6
#
# * e_hw: the hardware's absolute error on [-pi, pi], 2**-21.41 = 3.6e-7 for sine and 2**-21.19 = 4.2e-7
#   for cosine (CUDA C++ Programming Guide, Mathematical Functions appendix, "Intrinsic Functions": the
#   table of single-precision intrinsics gives these bounds for __sinf / __cosf, which compile to exactly
#   these PTX instructions). |theta| <= pi / 2 is inside that range by construction.
# * d_trig = max over v of |sin(theta) - v P(v^2)| and |cos(theta) - Q(v^2)|, the exact functions of the
#   GPU's fp32 angle against this path's fp32 polynomials (theta's two roundings move it <= 1.1e-7 from
#   pi v / 2): 7.2e-7 (sine, at v ~ 0.76) and 1.9e-7 (cosine), measured on a dense grid of v
#   (tests/test_normals.py asserts <= SIN_POLY_VS_ANGLE, COS_POLY_VS_ANGLE).
# * 2**-22: the GPU's sqrt (above; it was already the one difference before); 2**-23: the product r * trig
#   rounded once on each side.
#
# So the sine output differs by <= r_max (7.2e-7 + 3.6e-7 + 3.6e-7) = 9.6e-6 at the extreme radius
# r_max = 6.66 and <= 1.44e-6 r in general; the cosine output by <= 6.4e-6. Both are under issue 12's 1e-5
# between the kernel and ``rng="philox"``; tests/test_normals.py evaluates the GPU formula in float64 with
# the exact sine and cosine moved by -e_hw and +e_hw (the worst case) against this emulation over the grid
# of v at the extreme radii and asserts it. The statistics are unaffected at this level: a shift of <= 1.44e-6
# relative is far below any test's resolution (5 standard errors of a variance at 2**24 draws: 1.7e-3).
#
# The log stays a polynomial on the GPU too: ``lg2.approx.f32`` (MUFU.LG2) has an *absolute* error of
# 2**-22 on [0.5, 2] (the same table, __log2f), so w = -2 ln U would move by up to 2 ln 2 * 2**-22 = 3.3e-7
# near U = 1, and r = sqrt(w) by min(sqrt(3.3e-7), 3.3e-7 / (2 r)): up to 5.7e-4 as r -> 0, more than 1e-5
# whenever r < 0.017 (1.4e-4 of all draws) — a relative error of order one at small radii.
_LOG_C = (
    -2.000001907348633,
    1.000022292137146,
    -0.6662901639938354,
    0.4981949031352997,
    -0.4099266231060028,
    0.37335699796676636,
    -0.23792189359664917,
)
_SIN_C = (
    1.5707910060882568,
    -0.645892858505249,
    0.0794343426823616,
    -0.004333095159381628,
)
_COS_C = (
    0.9999999403953552,
    -1.2336982488632202,
    0.2536507546901703,
    -0.020810628309845924,
    0.0008581906440667808,
)
_MINUS_2_LN2 = -1.3862943649291992  # fp32(-2 ln 2)
_INV_2_31 = 4.656612873077393e-10  # 2**-31
_PI_2_M32 = 7.31459059988282e-10  # fp32(pi / 2**32): the GPU path's angle scale (tiles.PI_2_M32)
#: Maximum absolute error of the hardware sine and cosine on [-pi, pi] (CUDA C++ Programming Guide, intrinsics).
HW_SIN_ERROR = 2.0**-21.41
HW_COS_ERROR = 2.0**-21.19
#: Largest |sin(theta) - v P(v^2)| and |cos(theta) - Q(v^2)| over v, theta the GPU's fp32 angle (see above).
SIN_POLY_VS_ANGLE = 7.2e-7
COS_POLY_VS_ANGLE = 1.9e-7
#: The largest radius: sqrt(-2 ln 2**-32).
R_MAX = 6.660436889261582
#: |z_gpu - z_cpu| for the same Philox words (the derivation above).
GPU_ANGLE_BOUND = R_MAX * (SIN_POLY_VS_ANGLE + HW_SIN_ERROR + 2.0**-22 + 2.0**-23)
_SIGN_BIT = 1 << 31


def _fma32(a: torch.Tensor, b, c) -> torch.Tensor:
    """fp32 fused multiply-add a * b + c (see the double-rounding note above)."""
    return (a.double() * b + c).float()


def _horner32(x: torch.Tensor, coeffs) -> torch.Tensor:
    p = _fma32(torch.full_like(x, coeffs[-1]), x, coeffs[-2])
    for c in reversed(coeffs[:-2]):
        p = _fma32(p, x, c)
    return p


def _uint_to_uniform(u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(k, t) of U = (2 (u mod 2**31) + 1) / 2**32 = 2**k (1 + t), 1 + t in [sqrt(1/2), sqrt(2)): float32."""
    bits = ((u & (_SIGN_BIT - 1)) * 2 + 1).to(torch.float32).view(torch.int32).to(torch.int64)
    k = (bits - 0x3F3504F3) >> 23
    m = (bits - (k << 23)).to(torch.int32).view(torch.float32)
    return (k - 32).to(torch.float32), m - 1.0


def _radius(a: torch.Tensor) -> torch.Tensor:
    """r = sqrt(-2 ln U) of uint32 words ``a`` (int64 tensor), float32, as the kernels compute it."""
    k, t = _uint_to_uniform(a)
    w = _fma32(k, _MINUS_2_LN2, t * _horner32(t, _LOG_C))
    return torch.sqrt(w.double()).float()  # correctly rounded (torch's fp32 CPU sqrt is not, always)


def _int32_float(b: torch.Tensor) -> torch.Tensor:
    return torch.where(b >= _SIGN_BIT, b - (1 << 32), b).to(torch.float32)


def _poly_cos_sin(b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of the angle pi v / 2 of uint32 words ``b``: the polynomials (interpreter, this module)."""
    v = _int32_float(b) * _INV_2_31
    v2 = v * v
    return _horner32(v2, _COS_C), v * _horner32(v2, _SIN_C)


def gpu_angle(b: torch.Tensor) -> torch.Tensor:
    """The compiled kernel's fp32 angle fl(fl(int32(b)) * fl(pi / 2**32)), whose hardware sine and cosine
    replace :func:`_poly_cos_sin` there (tests model that path with it; see "Normal transform")."""
    return _int32_float(b) * _PI_2_M32


def _box_muller(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two normals of uint32 words (a, b) (int64 tensors), as the interpreted kernels compute them."""
    r = _radius(a)
    r_signed = torch.where(a >= _SIGN_BIT, -r, r)  # the kernel flips r's sign bit: the same value
    c, s = _poly_cos_sin(b)
    return r_signed * c, r * s


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
    """The kernels' ``fast_randn4x(seed, counter)``: four float32 normal tensors shaped like ``counter``
    (Philox4x32-10 words, then :func:`_box_muller` on words (0, 1) and (2, 3))."""
    i1, i2, i3, i4 = philox_randint4x(seed, counter)
    n1, n2 = _box_muller(i1, i2)
    n3, n4 = _box_muller(i3, i4)
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
        if g1 - g0 == C:  # a whole chunk: filled in place (the same values, no copy through buf)
            torch_chunk_normal(seed, k, out[g0 - start : g1 - start], gen)
            continue
        torch_chunk_normal(seed, k, buf, gen, needed=g1 - k * C)
        out[g0 - start : g1 - start] = buf[g0 - k * C : g1 - k * C]
    return out

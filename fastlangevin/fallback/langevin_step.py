"""PyTorch fallback of the fused Langevin update — runs anywhere (the optimised engine; the plain
formula is :func:`fastlangevin.reference.langevin_step`, which the tests hold this against).

    out = clamp(x + a * s + b * z, lo, hi),    z ~ N(0, I)

Same semantics as ``kernels/langevin_step.py``: math in fp32 (fp64 for float64 states),
stored in x's dtype, and the same evaluation order ``(x + a*s) + b*z`` (two roundings, no FMA)
so that with the noise off (or injected) it matches the interpreted kernel exactly in fp32.
Noise: the streams of :mod:`fastlangevin._rng`, visited by the one chunk walk
:func:`fastlangevin.fallback.chunks.for_pieces` (cache-resident pieces, never a full-size z).
"""

from __future__ import annotations

import threading
from typing import Optional, Union

import torch

from .. import modes
from .._rng import TORCH_RNG_CHUNK, chunk_seed, torch_chunk_normal
from .chunks import CPU_PIECE, _workers, compute_dtype, cpu_scratch, for_pieces, scale_slice

__all__ = ["FP32_ONE", "compute_dtype", "fp32_scalar", "langevin_step_torch", "scalar_tensor"]

# ``x.addcdiv_(s, FP32_ONE, value=a)`` is bitwise ``x.add_(torch.mul(s, a))`` for fp32 tensors
# (``s / 1`` is exact, NaN payloads included, and ATen's CPU addcdiv rounds ``a * s`` before the
# add on every CPU capability), in one pass instead of two; ``addcmul_`` and ``add_(alpha=)``
# would contract to an FMA (one rounding) and are not. Checked in tests/test_small_path.py.
FP32_ONE = torch.ones((), dtype=torch.float32)

# Pieces up to this many elements allocate their temporary (cheap below glibc's mmap
# threshold); larger ones reuse a per-thread work buffer.
_SMALL_PIECE = 4096
_WORK = threading.local()
_SCALARS: dict = {}  # dtype -> {value: 0-d tensor}
_MAX_SCALARS = 256
_FP32: dict = _SCALARS.setdefault(torch.float32, {})


def scalar_tensor(value: float, dtype: torch.dtype) -> torch.Tensor:
    """A cached CPU 0-d tensor holding ``value`` in ``dtype`` (never written to).

    ``t * scalar_tensor(a, fp32)`` is bitwise ``t * a`` (ATen casts a Python scalar to the
    op's dtype too) but skips the wrapping of a Python number, about half of a small op's cost.
    """
    cache = _SCALARS.get(dtype)
    if cache is None:
        cache = _SCALARS[dtype] = {}
    t = cache.get(value)
    if t is None:
        if len(cache) >= _MAX_SCALARS:
            cache.clear()
        with torch.inference_mode(False):  # kept across calls (see _backend.KEPT)
            t = cache[value] = torch.tensor(value, dtype=dtype)
    return t


def fp32_scalar(value: float) -> torch.Tensor:
    """``scalar_tensor(value, torch.float32)`` with one dict lookup (the small steps' hot path)."""
    t = _FP32.get(value)
    return t if t is not None else scalar_tensor(value, torch.float32)


def _work_buffer(cdt: torch.dtype, n: int) -> torch.Tensor:
    cache = getattr(_WORK, "cache", None)
    if cache is None:
        cache = _WORK.cache = {}
    buf = cache.get(cdt)
    if buf is None or buf.numel() < n:
        with torch.inference_mode(False):  # kept across calls (see _backend.KEPT)
            buf = cache[cdt] = torch.empty(max(n, CPU_PIECE), dtype=cdt)
    return buf[:n]


def langevin_step_torch(
    x: torch.Tensor,
    score: torch.Tensor,
    out: torch.Tensor,
    seed: Union[int, torch.Tensor],
    *,
    step_value: float,
    step_tensor: Optional[torch.Tensor],
    noise_mode: int,
    noise_value: float,
    noise_tensor: Optional[torch.Tensor],
    lo: Optional[float],
    hi: Optional[float],
    row_size: int,
    elem_offset: int,
    rng: str,
    injected_noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Flat contiguous ``x``, ``score``, ``out`` (``out`` may be ``x``). Returns ``out``.

    ``step_tensor`` / ``noise_tensor``: None (use the float), 0-d or per-row ``[B]``;
    ``noise_mode``: a :mod:`fastlangevin.modes` value (NOISE_NONE, NOISE_SQRT2A or a scale);
    ``lo``/``hi``: the clamp, None for none; ``seed``: int64 tensor, or its value as int on CPU.
    """
    n = x.numel()
    if n == 0:
        return out
    cdt = compute_dtype(x.dtype)
    with_noise = noise_mode != modes.NOISE_NONE
    if noise_mode == modes.NOISE_SQRT2A:  # b = sqrt(2 a), computed like the kernel (in cdt)
        noise_value, noise_tensor = 0.0, torch.sqrt(step_tensor.to(cdt) * 2.0)
    # A scalar fp32 noise scale b is folded into torch's normal_ (std=b gives bitwise
    # fl(z * b), checked in the tests): one pass less per piece.
    std, prescaled = 1.0, False
    if rng == "torch" and injected_noise is None and with_noise and noise_tensor is None and cdt == torch.float32:
        std, prescaled = noise_value, True
    a_scalar = scalar_tensor(step_value, cdt) if step_tensor is None else None
    b_scalar = scalar_tensor(noise_value, cdt) if noise_tensor is None and with_noise and not prescaled else None
    same_dtype = x.dtype == cdt
    in_place = out.data_ptr() == x.data_ptr()

    if prescaled and a_scalar is not None and same_dtype and lo is None and _serial_cpu(x, n, elem_offset):
        return _serial_chunks(x, score, out, seed, a_scalar, std, elem_offset, in_place)

    def body(i0: int, i1: int, z: Optional[torch.Tensor]) -> None:
        """out[i0:i1] = clamp((x + a*s) + b*z) in ``cdt``; ``z`` the piece's noise (or None)."""
        if i0 == 0 and i1 == n:
            xs, ss, o = x, score, out
        else:
            xs, ss, o = x[i0:i1], score[i0:i1], out[i0:i1]
        if ss.dtype != cdt:
            ss = ss.to(cdt)
        a = a_scalar if a_scalar is not None else scale_slice(0.0, step_tensor, i0, i1, row_size, cdt)
        t = torch.mul(ss, a) if i1 - i0 <= _SMALL_PIECE else torch.mul(ss, a, out=_work_buffer(cdt, i1 - i0))
        if same_dtype:
            t = xs.add_(t) if in_place else torch.add(xs, t, out=o)
        else:
            t = t.add_(xs.to(cdt))
        if with_noise:
            if injected_noise is not None:
                z = z.to(torch.float32, copy=True)
            if cdt != torch.float32:
                z = z.to(cdt)
            if not prescaled:
                z = z.mul_(b_scalar if b_scalar is not None else scale_slice(0.0, noise_tensor, i0, i1, row_size, cdt))
            t.add_(z)
        if lo is not None:
            t.clamp_(lo, hi)
        if not same_dtype:
            o.copy_(t)

    for_pieces(
        body,
        seed,
        n,
        elem_offset=elem_offset,
        rng=rng,
        device=x.device,
        injected_noise=injected_noise,
        with_noise=with_noise,
        std=std,
        elementwise=True,
    )
    return out


def _serial_cpu(x: torch.Tensor, n: int, elem_offset: int) -> bool:
    """Whether :func:`for_pieces` would walk this CPU tensor's chunks on one thread, each as one
    piece (then :func:`_serial_chunks` is the same walk with less machinery around it)."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    n_chunks = (elem_offset + n - 1) // TORCH_RNG_CHUNK - elem_offset // TORCH_RNG_CHUNK + 1
    return _workers(x.device, n_chunks) <= 1


def _serial_chunks(x, score, out, seed, a: torch.Tensor, std: float, elem_offset: int, in_place: bool):
    """``out = (x + a*s) + fl(std*z)`` for fp32 flat tensors, chunk by chunk of the torch stream
    (z drawn prescaled into the thread's chunk buffer, ``a*s`` into the work buffer): the
    operations :func:`for_pieces` and the body run for this case, in the same order, so bitwise
    the same; each chunk's passes stay cache-resident (4 x 256 KiB, in L2).

    Python-side cost per chunk, not the arithmetic, is what this walk can still save: the views
    of ``x``, ``score`` and ``out`` come from one ``split`` each (a view made by slicing costs
    ~1 µs alone and 2-3 µs inside the walk, five a chunk did ~5-8% of the call at 2**20), and a
    whole chunk uses the buffers themselves. The noise itself is cheaper here than in the eager
    loop: ``normal_`` on a 256 KiB chunk stays in L2 between its uniform pass and its transform
    pass, where ``randn_like`` of 4 MiB goes to L3 twice (measured: 16 chunk fills take ~10-30%
    less time than one 2**20 ``randn_like``). What the walk loses it loses in the arithmetic:
    its three passes per chunk cost ~1.1 ms at 2**20 against ~0.6 ms for the eager loop's two
    fused ``add_`` when the tensors are L3-resident (alone, on L2-resident data, they cost a
    third of that). Against ``x.add_(s, alpha=a).add_(randn_like(x), alpha=b)`` the walk is then
    ~0.9-1.2x depending on what ran before (measured on a loaded 2-core VM: ~1.15x with the
    caches flushed before each call, 0.9-1.1x alternating with the eager loop on L3-warm data).
    Tried and dropped: smaller pieces inside a chunk (more calls: slower), two to eight chunks
    per arithmetic pass (slower), numpy ufuncs for the passes (~3% faster, but a NaN + NaN sum
    takes numpy's payload, not torch's, and numpy warns on overflow)."""
    C, n = TORCH_RNG_CHUNK, x.numel()
    gen, buf = cpu_scratch()
    a_value = a.item()  # the fp32 value, exactly
    seed_int = seed if isinstance(seed, int) else int(seed.reshape(()).item())
    first, last = elem_offset // C, (elem_offset + n - 1) // C + 1
    # chunk k's local elements: [max(k*C, o), min((k+1)*C, o+n)) - o, so the sizes of a split
    sizes = [min((k + 1) * C, elem_offset + n) - max(k * C, elem_offset) for k in range(first, last)]
    xs, ss = x.split(sizes), score.split(sizes)
    os_ = xs if in_place else out.split(sizes)
    with torch.no_grad():
        for j, k in enumerate(range(first, last)):
            m = sizes[j]
            head = max(k * C, elem_offset) - k * C  # where this piece starts inside its chunk
            if m == C:  # a whole chunk: torch_chunk_normal's fill of all C values, on the buffers themselves
                gen.manual_seed(chunk_seed(seed_int, k))
                buf.normal_(0.0, std, generator=gen)
                z = buf
            else:
                torch_chunk_normal(seed_int, k, buf, gen, needed=head + m, std=std)
                z = buf[head : head + m]
            if in_place:  # x + fl(a*s) in one pass (see FP32_ONE)
                o = xs[j].addcdiv_(ss[j], FP32_ONE, value=a_value)
            else:
                o = torch.addcdiv(xs[j], ss[j], FP32_ONE, value=a_value, out=os_[j])
            o.add_(z)
    return out

"""PyTorch fallback of the fused Langevin update — runs anywhere, and is the kernels' oracle.

    out = clamp(x + a * s + b * z, lo, hi),    z ~ N(0, I)

Same semantics as ``kernels/langevin_step.py``: math in fp32 (fp64 for float64 states),
stored in x's dtype, and the same evaluation order ``(x + a*s) + b*z`` so that with the noise
off (or injected) it matches the interpreted kernel exactly in fp32.

It walks the flat tensor in chunks aligned to the *global* element index, so that

* the noise of a chunk (``rng="torch"``: one reseeded torch generator per chunk;
  ``rng="philox"``: the kernel's counter-based stream) never depends on the batch size or
  on where the tensor starts (``elem_offset``), and
* the update runs on cache-resident pieces: a 256 KiB noise buffer is filled and consumed
  while hot, instead of materialising z, a*s and b*z as full-size temporaries.
"""

from __future__ import annotations

import threading
from typing import Optional, Tuple, Union

import torch

from .._rng import TORCH_RNG_CHUNK, philox_normal, torch_chunk_normal
from .._validate import Scale

#: Chunk for the Philox stream: larger, since the PyTorch Philox costs Python-level op
#: launches per chunk (must be a multiple of 4 so groups never straddle chunks).
PHILOX_CHUNK = 1 << 18


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Math dtype for a storage dtype: fp32, or fp64 for float64 states."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def scale_slice(scale: Scale, i0: int, i1: int, row_size: int, dtype: torch.dtype):
    """The scale for flat elements ``[i0, i1)`` of a ``[B, row_size]`` tensor: a float, a 0-d
    tensor, or a ``[i1 - i0]`` tensor repeating each row's value."""
    if scale.tensor is None:
        return scale.value
    t = scale.tensor
    if t.dim() == 0:
        return t.to(dtype)
    r0, r1 = i0 // row_size, (i1 - 1) // row_size
    if r0 == r1:
        return t[r0].to(dtype)
    rep = t[r0 : r1 + 1].to(dtype).repeat_interleave(row_size)
    return rep[i0 - r0 * row_size : i1 - r0 * row_size]


def resolve_noise_scale(noise: Union[Scale, str], step: Scale, dtype: torch.dtype) -> Union[Scale, str]:
    """``"sqrt2a"`` → the Scale ``sqrt(2 a)``, computed like the kernel (in ``dtype``)."""
    if noise == "sqrt2a":
        return Scale(tensor=torch.sqrt(step.tensor.to(dtype) * 2.0))
    return noise


def langevin_step_torch(
    x: torch.Tensor,
    score: torch.Tensor,
    out: torch.Tensor,
    seed: torch.Tensor,
    step: Scale,
    noise: Union[Scale, str],
    clamp: Optional[Tuple[float, float]],
    *,
    row_size: int,
    elem_offset: int,
    rng: str,
    injected_noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Flat contiguous ``x``, ``score``, ``out`` (``out`` may be ``x``). Returns ``out``."""
    n = x.numel()
    if n == 0:
        return out
    if rng not in ("torch", "philox"):
        raise ValueError(f"rng must be 'torch' or 'philox', got {rng!r}")
    if rng == "torch" and x.device.type != "cpu":
        raise ValueError(f"rng='torch' draws from torch's CPU generator; use rng='philox' on {x.device.type}")
    cdt = compute_dtype(x.dtype)
    noise = resolve_noise_scale(noise, step, cdt)
    C = TORCH_RNG_CHUNK if rng == "torch" else PHILOX_CHUNK
    first, last = elem_offset // C, (elem_offset + n - 1) // C + 1
    seed_int = int(seed.reshape(()).item()) if rng == "torch" else None  # CPU: no device sync
    args = (x, score, out, seed, seed_int, step, noise, clamp, row_size, elem_offset, rng, injected_noise, C)
    workers = _workers(x.device, last - first) if rng == "torch" else 1
    if workers <= 1:
        _update_chunks(first, last, *args)
        return out
    # CPU: chunks are independent (noise keyed by chunk), so threads split them; torch ops
    # release the GIL. Results are identical to the serial loop.
    bounds = [first + (last - first) * w // workers for w in range(workers + 1)]
    futures = [_pool().submit(_update_chunks, bounds[w], bounds[w + 1], *args) for w in range(workers)]
    for f in futures:
        f.result()
    return out


# Below this many chunks the thread hand-off costs more than it saves.
_MIN_CHUNKS_PER_WORKER = 4
_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        import concurrent.futures

        _POOL = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, torch.get_num_threads()), thread_name_prefix="fastlangevin"
        )
    return _POOL


def _workers(device: torch.device, n_chunks: int) -> int:
    if device.type != "cpu" or torch.compiler.is_compiling():
        return 1
    return max(1, min(torch.get_num_threads(), n_chunks // _MIN_CHUNKS_PER_WORKER))


@torch.no_grad()  # worker threads do not inherit the caller's grad mode; the op is not traced
def _update_chunks(
    first, last, x, score, out, seed, seed_int, step, noise, clamp, row_size, elem_offset, rng, injected_noise, C
):
    """The update for global chunks ``[first, last)`` (each C elements of the global index)."""
    n = x.numel()
    cdt = compute_dtype(x.dtype)
    with_noise = noise != "none"
    # Elementwise ops on CPU run in pieces below ATen's parallel grain size (32768): each
    # worker thread then computes serially instead of spawning its own OpenMP team, which
    # oversubscribes the cores. Elsewhere, one piece per chunk.
    piece = _CPU_PIECE if x.device.type == "cpu" else C
    if x.device.type == "cpu":
        gen, zbuf, tbuf = _cpu_scratch(cdt)
    else:
        tbuf = torch.empty(min(piece, n), dtype=cdt, device=x.device)

    # A scalar fp32 noise scale b is folded into torch's normal_ (std=b gives bitwise
    # fl(z * b), checked in the tests): one pass less per piece.
    prescaled = 1.0
    piece_noise = noise
    if rng == "torch" and injected_noise is None and with_noise and noise.tensor is None and cdt == torch.float32:
        prescaled, piece_noise = noise.value, Scale(value=1.0, prescaled=True)
    for k in range(first, last):
        g0, g1 = max(k * C, elem_offset), min((k + 1) * C, elem_offset + n)
        z = None
        if with_noise and injected_noise is None:
            if rng == "torch":
                torch_chunk_normal(seed_int, k, zbuf, gen, needed=g1 - k * C, std=prescaled)
                z = zbuf[g0 - k * C : g1 - k * C]
            else:
                z = philox_normal(seed, g0, g1 - g0)
        for p0 in range(g0, g1, piece):
            p1 = min(p0 + piece, g1)
            zp = None if z is None else z[p0 - g0 : p1 - g0]
            _update_piece(
                x,
                score,
                out,
                tbuf,
                zp,
                p0 - elem_offset,
                p1 - elem_offset,
                step,
                piece_noise,
                clamp,
                row_size,
                injected_noise,
                cdt,
            )
    return out


_SCRATCH = threading.local()


def _cpu_scratch(cdt: torch.dtype):
    """This thread's generator, noise buffer (one chunk) and work buffer (one piece).

    Reused across calls: a fresh 256 KiB buffer per call is an mmap/munmap pair and page
    faults, which small-batch sampling loops would pay at every step.
    """
    cache = getattr(_SCRATCH, "cache", None)
    if cache is None:
        cache = _SCRATCH.cache = {"gen": torch.Generator(), "z": torch.empty(TORCH_RNG_CHUNK, dtype=torch.float32)}
    if cdt not in cache:
        cache[cdt] = torch.empty(_CPU_PIECE, dtype=cdt)
    return cache["gen"], cache["z"], cache[cdt]


_CPU_PIECE = (1 << 15) - 1  # the largest piece ATen still runs serially


def _update_piece(x, score, out, tbuf, z, i0, i1, step, noise, clamp, row_size, injected_noise, cdt):
    """out[i0:i1] = clamp((x + a*s) + b*z) in ``cdt``; ``z`` the piece's noise (or None)."""
    xs, ss, o = x[i0:i1], score[i0:i1], out[i0:i1]
    same_dtype = x.dtype == cdt
    if score.dtype != cdt:
        ss = ss.to(cdt)
    t = torch.mul(ss, scale_slice(step, i0, i1, row_size, cdt), out=tbuf[: i1 - i0])
    t = torch.add(xs, t, out=o) if same_dtype else t.add_(xs.to(cdt))
    if noise != "none":
        if injected_noise is not None:
            z = injected_noise[i0:i1].to(torch.float32, copy=True)
        if cdt != torch.float32:
            z = z.to(cdt)
        t.add_(z if noise.prescaled else z.mul_(scale_slice(noise, i0, i1, row_size, cdt)))
    if clamp is not None:
        t.clamp_(clamp[0], clamp[1])
    if not same_dtype:
        o.copy_(t)

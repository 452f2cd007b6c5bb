"""The one chunk walk of the PyTorch fallbacks: flat elements in pieces, each with its noise.

    for_pieces(body, seed, n, elem_offset=o, rng=...)  calls  body(i0, i1, z)  for local
    elements [i0, i1) of a flat tensor whose element 0 is global element o, z their normals.

The pieces are cut on a grid of the *global* element index (the noise chunks of
:mod:`fastlangevin._rng`, then sub-pieces below ATen's parallel grain on CPU), so the noise of a
piece never depends on the batch size or on where the tensor starts, and only piece-sized
temporaries exist. On CPU with ``rng="torch"`` chunks are spread over torch's intra-op threads
(each chunk has its own generator; torch ops release the GIL): the results are those of the
serial loop. A tensor that fits one piece takes a straight path with none of that machinery.
"""

from __future__ import annotations

import threading
from typing import Callable, List, Optional, TypeVar, Union

import torch

from .. import _backend
from .._rng import TORCH_RNG_CHUNK, philox_normal, torch_chunk_normal, torch_normal

T = TypeVar("T")

#: Chunk for the Philox stream: larger, since the PyTorch Philox costs Python-level op
#: launches per chunk (must be a multiple of 4 so groups never straddle chunks).
PHILOX_CHUNK = 1 << 18
#: The largest piece ATen still runs serially (its parallel grain is 32768): a worker thread
#: then computes on its own instead of spawning an OpenMP team that oversubscribes the cores.
CPU_PIECE = (1 << 15) - 1
#: Below this many chunks per thread the hand-off costs more than it saves.
MIN_CHUNKS_PER_WORKER = 4

RNG_STREAMS = ("torch", "philox")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Math dtype for a storage dtype: fp32, or fp64 for float64 states."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def scale_slice(value: float, tensor: Optional[torch.Tensor], i0: int, i1: int, row_size: int, dtype: torch.dtype):
    """A scale for flat elements ``[i0, i1)`` of a ``[B, row_size]`` tensor: ``value`` when
    ``tensor`` is None, else the 0-d tensor, or a ``[i1 - i0]`` tensor repeating each row's value."""
    if tensor is None:
        return value
    if tensor.dim() == 0:
        return tensor.to(dtype)
    r0, r1 = i0 // row_size, (i1 - 1) // row_size
    if r0 == r1:
        return tensor[r0].to(dtype)
    rep = tensor[r0 : r1 + 1].to(dtype).repeat_interleave(row_size)
    return rep[i0 - r0 * row_size : i1 - r0 * row_size]


def mul_rows(v: torch.Tensor, rows: torch.Tensor, i0: int, i1: int, row_size: int) -> torch.Tensor:
    """``v * scale`` for flat elements ``[i0, i1)`` of a ``[B, row_size]`` tensor, ``rows`` the
    per-row ``[B]`` scale in v's dtype: a new tensor, the products of :func:`scale_slice`'s
    expansion (bitwise), computed as a partial head row, whole rows broadcast in 2-D, and a
    partial tail row — no ``repeat_interleave`` pass over the piece."""
    r0, r1 = i0 // row_size, (i1 - 1) // row_size
    if r0 == r1:
        return v.mul(rows[r0])
    out = torch.empty_like(v)
    a = (r0 + 1) * row_size if i0 % row_size else i0  # end of the head, start of whole rows
    b = i1 - i1 % row_size  # end of whole rows
    if a > i0:
        torch.mul(v[: a - i0], rows[r0], out=out[: a - i0])
    if b > a:
        ra, rb = a // row_size, b // row_size
        torch.mul(
            v[a - i0 : b - i0].view(rb - ra, row_size),
            rows[ra:rb, None],
            out=out[a - i0 : b - i0].view(rb - ra, row_size),
        )
    if i1 > b:
        torch.mul(v[b - i0 :], rows[r1], out=out[b - i0 :])
    return out


def check_rng(rng: str, device: torch.device) -> None:
    if rng not in RNG_STREAMS:
        raise ValueError(f"rng must be 'torch' or 'philox', got {rng!r}")
    if rng == "torch" and _backend.device_type(device) != "cpu":
        raise ValueError(f"rng='torch' draws from torch's CPU generator; use rng='philox' on {device.type}")


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
    if _backend.device_type(device) != "cpu" or n_chunks < 2 * MIN_CHUNKS_PER_WORKER or torch.compiler.is_compiling():
        return 1
    return max(1, min(torch.get_num_threads(), n_chunks // MIN_CHUNKS_PER_WORKER))


_SCRATCH = threading.local()


class CpuScratch:
    """One thread's reusable CPU state: the chunk generator, a one-chunk fp32 noise buffer
    (``noise``), an int64 ``[1]`` seed
    buffer and ``views``, a cache of views of these buffers keyed by the caller (views cost ~1 µs
    each to make). Per thread: torch ops release the GIL, so threads must not share buffers.

    ``seed_np``: a numpy view of the seed buffer (it lives as long as the scratch, so caching it
    is safe): reading a drawn seed as ``seed_np.item()`` costs 0.08 µs against 0.23 µs for
    ``Tensor.item()``."""

    __slots__ = ("gen", "noise", "seed", "views", "seed_np")

    def __init__(self):
        self.gen = torch.Generator()
        self.noise = torch.empty(TORCH_RNG_CHUNK, dtype=torch.float32)
        self.seed = torch.empty(1, dtype=torch.int64)
        self.views: dict = {}
        self.seed_np = self.seed.numpy()


def thread_scratch() -> CpuScratch:
    """This thread's :class:`CpuScratch`, made on first use."""
    st = getattr(_SCRATCH, "st", None)
    if st is None:
        with torch.inference_mode(False):  # kept across calls (see _backend.KEPT)
            st = _SCRATCH.st = CpuScratch()
    return st


def cpu_scratch():
    """This thread's generator and one-chunk fp32 noise buffer, reused across calls (a fresh
    256 KiB buffer per call is an mmap/munmap pair and page faults, paid at every step)."""
    st = thread_scratch()
    return st.gen, st.noise


def _seed_int(seed: Union[int, torch.Tensor]) -> int:
    return seed if isinstance(seed, int) else int(seed.reshape(()).item())  # CPU: no device sync


def _seed_tensor(seed: Union[int, torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.tensor([seed], dtype=torch.int64, device=device) if isinstance(seed, int) else seed


def draw_noise(seed: Union[int, torch.Tensor], start: int, n: int, *, rng: str, device: torch.device) -> torch.Tensor:
    """A fresh float32 ``[n]`` tensor of the stream's normals for global elements ``[start, start + n)``:
    the values :func:`for_pieces` hands its bodies (one chunk: this thread's reused generator)."""
    check_rng(rng, device)
    if rng == "philox":
        return philox_normal(_seed_tensor(seed, device), start, n)
    C = TORCH_RNG_CHUNK
    k = start // C
    if n == 0 or (start + n - 1) // C != k:
        return torch_normal(_seed_int(seed), start, n)
    gen, buf = cpu_scratch()
    torch_chunk_normal(_seed_int(seed), k, buf, gen, needed=start + n - k * C)
    return buf[start - k * C : start + n - k * C].clone()


def for_pieces(
    body: Callable[[int, int, Optional[torch.Tensor]], T],
    seed: Union[int, torch.Tensor],
    n: int,
    *,
    elem_offset: int,
    rng: str,
    device: torch.device,
    injected_noise: Optional[torch.Tensor] = None,
    with_noise: bool = True,
    std: float = 1.0,
    elementwise: bool = False,
) -> List[T]:
    """Call ``body(i0, i1, z)`` for every piece of local flat elements ``[i0, i1)`` and return
    the results in index order.

    ``seed``: the call's int64 seed tensor (or its value as an int on CPU). ``z``: the piece's
    float32 normals (a reused buffer: use it before returning), the injected noise's slice, or
    None when ``with_noise`` is False. ``std`` (rng="torch" only) scales the draws inside
    ``normal_``: bitwise ``fl(z * std)`` in fp32. ``elementwise``: ``body`` is elementwise (no
    reduction whose order the piece grid fixes), so pieces may follow the threading: whole
    chunks when one thread walks them (ATen may then parallelise each op), else equal pieces
    below ATen's grain.
    """
    check_rng(rng, device)
    if n == 0:
        return []
    torch_stream = rng == "torch" and injected_noise is None and with_noise
    C = TORCH_RNG_CHUNK if rng == "torch" else PHILOX_CHUNK
    first, last = elem_offset // C, (elem_offset + n - 1) // C + 1
    piece = CPU_PIECE if _backend.device_type(device) == "cpu" else C

    if last - first == 1 and (n <= piece or _backend.device_type(device) != "cpu"):  # one piece: the straight path
        z = None
        if injected_noise is not None:
            z = injected_noise
        elif with_noise and rng == "torch":
            gen, buf = cpu_scratch()
            k = first
            torch_chunk_normal(_seed_int(seed), k, buf, gen, needed=elem_offset + n - k * C, std=std)
            z = buf[elem_offset - k * C : elem_offset + n - k * C]
        elif with_noise:
            z = philox_normal(_seed_tensor(seed, device), elem_offset, n)
        return [body(0, n, z)]

    seed_int = _seed_int(seed) if torch_stream else None
    if rng == "philox" and with_noise and injected_noise is None:
        seed = _seed_tensor(seed, device)
    workers = _workers(device, last - first) if seed_int is not None else 1
    if elementwise and piece < C:
        piece = C if workers <= 1 else -(-C // -(-C // CPU_PIECE))

    @torch.no_grad()  # plain arithmetic inside an op; worker threads do not inherit the
    def run(k0: int, k1: int) -> List[T]:  # caller's thread-local autograd state
        if seed_int is not None:
            gen, buf = cpu_scratch()
        results = []
        for k in range(k0, k1):
            g0, g1 = max(k * C, elem_offset), min((k + 1) * C, elem_offset + n)
            z = None
            if seed_int is not None:
                torch_chunk_normal(seed_int, k, buf, gen, needed=g1 - k * C, std=std)
                z = buf[g0 - k * C : g1 - k * C]
            elif with_noise and injected_noise is None:
                z = philox_normal(seed, g0, g1 - g0)
            for pb in range(k * C, (k + 1) * C, piece):
                p0, p1 = max(pb, g0), min(pb + piece, g1)
                if p0 >= p1:
                    continue
                i0, i1 = p0 - elem_offset, p1 - elem_offset
                if injected_noise is not None:
                    zp = injected_noise[i0:i1]
                else:
                    zp = None if z is None else z[p0 - g0 : p1 - g0]
                results.append(body(i0, i1, zp))
        return results

    if workers <= 1:
        return run(first, last)
    bounds = [first + (last - first) * w // workers for w in range(workers + 1)]
    futures = [_pool().submit(run, bounds[w], bounds[w + 1]) for w in range(workers)]
    return [r for f in futures for r in f.result()]

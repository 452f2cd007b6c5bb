"""PyTorch fallback of the Langevin optimizers' multi-tensor update (numpy on CPU, ``torch._foreach_*`` elsewhere).

With ``g = gscale · grad + prior · θ`` (fp32; θ the parameter or its fp32 master copy):

    SGLD:   θ ← (θ − lr·g) + b·z
    pSGLD:  V ← a1·V + a2·g²;   G = 1 / (eps + √V);   θ ← (θ − lr·(G·g)) + √(c·G)·z   (c = b)
    SGHMC:  v ← ((a1·v) − lr·g) + b·z;   θ ← θ + v

Same evaluation order as ``kernels/optim.py``, one rounding per operation (explicit multiplies,
never ``alpha=`` which may fuse into an FMA; correctly rounded √), so with the noise injected it
matches the kernel bitwise.

Noise (shapes: z like θ, standard normal, scaled by b or √(c·G)): element j of the parameter with
optimizer index i is one element of the project's global stream under the step's seed
(:func:`noise_index`):

* ``rng="philox"`` (the kernels' stream): element ``i · PARAM_SLOT + j``.
* ``rng="torch"`` (CPU default; the chunk-keyed torch stream: chunks of ``TORCH_RNG_CHUNK`` of the
  global index, each a reseeded torch generator): element ``HEAD_BASE + i · HEAD + j`` for
  ``j < HEAD`` — a head region all parameters share, 1024 of them per chunk — and
  ``i · PARAM_SLOT + j`` for ``j ≥ HEAD``. A tensor of at most HEAD elements (a norm's weight,
  a bias) so costs a share of one draw instead of its own reseed (~2.5 µs) and call (~2 µs).

Both depend only on (seed, i, j), never on how tensors are grouped, batched, walked or threaded.

Layout: the bucket is cut into batches of at most ``BATCH`` elements. A batch's small tensors
(≤ ``SMALL`` elements, e.g. biases and norms) are gathered into flat fp32 buffers and enter the
update as *one* tensor, then are scattered back; larger tensors are updated in place (slices of
``BATCH`` above it). The torch stream's normals are drawn straight into the batch's noise buffer
(the noise scale folded into ``normal_``; the chunk seeds by one vectorised splitmix per call),
spread over torch's threads when there are several (each chunk has its own generator), else
each chunk just before the update of its slice, into a reused scratch (chunk by chunk: scratch,
noise and slice stay in L2, where a 2**18-element batch's 1 MiB arrays did not); the head
region is drawn once per call and its elements copied in after the chunk fills. Optimizer
indices must be below ``MAX_PARAMS`` (2**20), where the head region begins.

Arithmetic: on CPU the update runs as numpy ufuncs on views of the same memory
(:func:`run_numpy`; ~0.3 µs a call against ~1-2 µs a torch op, which dominates at these sizes),
the same operations in the same order, so bitwise the same fp32 results (tests compare it with the
foreach path); its writes bump autograd's version counters as torch's in-place ops do. Other
devices run :func:`_update` on ``torch._foreach_*`` ops. The optimizers' cached CPU step
(``fastlangevin.optim.base._CpuProgram``) calls :func:`run_numpy` directly with the arrays it keeps.

Where a CPU step's time goes (1 thread, measured in the step, interleaved with an eager loop): the torch
stream's normals cost what the eager loop's ``randn_like`` costs, element for element (~3.4 ns, 3/4 of it
torch's scalar mt19937 uniform loop; MLP 0.69 ms both, ResNet-32 1.67 against 1.73 ms): the same
``normal_`` kernel, and a chunk's fill is as fast as one big fill (fills of 2**10..2**16 on one
generator: within 1-2 %), a reseed ~1.25 µs (seeds passed unsigned: a negative int takes a caught
C++ overflow exception in ``manual_seed``, 2.85 µs). A ufunc pass ~0.1-0.3 ns an element; SGLD's
``θ − fl(lr·g)`` from FUSE_MIN elements is one ``addcdiv`` pass, so SGLD makes 2 passes as the eager
loop's ``add_(alpha=)`` FMAs do (SGHMC 5 against 4: fused, it measured slower). What is left against
an eager loop is the Python-level work (MLP ~60 µs a step, ResNet-32 ~240 µs, hot) and its first-touch
cache misses after other work: ahead where there are many tensors or many per-tensor ops (pSGLD), near
par or behind for SGLD and SGHMC on a few large tensors. Fewer passes need a fused CPU kernel, or FMA
roundings, which would break the bitwise match with the kernels.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import List, Optional

import numpy as np
import torch
from torch.autograd.graph import increment_version

from .._rng import TORCH_RNG_CHUNK, chunk_seed, philox_normal, philox_randn4x, torch_normal
from .chunks import _pool, cpu_scratch
from .langevin_step import FP32_ONE

#: Elements of the global stream reserved for each parameter (the kernel uses 2**40 Philox groups).
PARAM_SLOT = 1 << 42
#: rng="torch": a parameter's first HEAD elements come from a region shared by all parameters
#: (parameter i at ``HEAD_BASE + i·HEAD``), so a tensor of at most HEAD elements (a norm's weight,
#: a bias) costs a share of one draw instead of a generator reseed (~2.5 µs) and a call (~2 µs).
HEAD = 64
#: Global index of the head region: above every parameter slot (optimizer indices < MAX_PARAMS).
HEAD_BASE = 1 << 62
MAX_PARAMS = HEAD_BASE // PARAM_SLOT
#: Elements per flat batch (a multiple of TORCH_RNG_CHUNK): its fp32 buffers (1 MiB each) stay in L2/L3.
BATCH = 1 << 18
#: Tensors of at most this many elements are packed into batches (their update costs more in
#: per-op dispatch than in arithmetic); larger ones are updated in place.
SMALL = 1 << 12
#: From this many elements on, SGLD's ``θ − fl(lr·g)`` (and the prior's ``g + fl(λ·θ)``) run as one
#: torch ``addcdiv`` pass (two torch.from_numpy wrappers, ~1.2 µs, and a torch op's dispatch, ~2 µs)
#: instead of two numpy ufunc passes: measured in the step (1 thread, interleaved with an eager loop),
#: SGLD's update 89 -> 78 µs (MLP), 697 -> 629 µs (one 2**20 tensor); no gain below ~16k elements.
FUSE_MIN = 1 << 14
#: The cached CPU step gathers a group's small gradients by one torch._foreach_copy_ from this many small tensors
#: on; below, from numpy views of each (~0.6 µs a tensor): that op's first call in a step that follows
#: other work costs ~30 µs (its code out of cache), more than a few views.
GATHER_NUMPY_MAX = 16
#: Up to this many chunk seeds a step, splitmix runs on Python ints (~0.6 µs a key, on code every
#: step keeps hot) instead of numpy's uint64 ufuncs (~5 µs hot, but ~50 µs in a step that follows other
#: work, measured: their loops and type tables are out of cache by then).
SPLITMIX_PY_MAX = 48
#: Below this many elements per worker, handing noise draws to another thread costs more than it saves.
MIN_DRAW_PER_WORKER = 1 << 14

#: On CPU the update runs as numpy ufuncs (bitwise the foreach ops, a fraction of their dispatch
#: cost); False forces the ``torch._foreach_*`` path (the one other devices take): tests compare them.
NUMPY_ON_CPU = True

SGLD, PSGLD, SGHMC = 0, 1, 2
_C = TORCH_RNG_CHUNK


def noise_index(index: int, j: int, rng: str) -> int:
    """The global stream element giving the noise of element ``j`` of the parameter with optimizer
    index ``index``: ``index·PARAM_SLOT + j`` (Philox; torch from element HEAD on), or
    ``HEAD_BASE + index·HEAD + j`` (torch, ``j < HEAD``)."""
    if rng == "torch" and j < HEAD:
        return HEAD_BASE + index * HEAD + j
    return index * PARAM_SLOT + j


def param_noise(seed: torch.Tensor, index: int, n: int, rng: str) -> torch.Tensor:
    """The standard normals of parameter ``index``'s first ``n`` elements (float32, flat): a test oracle."""
    if rng == "philox":
        return philox_normal(seed, index * PARAM_SLOT, n)
    s = int(seed.reshape(()).item())
    head = torch_normal(s, noise_index(index, 0, rng), min(n, HEAD))
    return torch.cat([head, torch_normal(s, noise_index(index, HEAD, rng), max(0, n - HEAD))])


_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment


def _int64(c: int) -> int:
    """The int64 with the bits of the uint64 ``c``."""
    return c - (1 << 64) if c >= 1 << 63 else c


def splitmix64_tensor(seed: int, chunk: torch.Tensor) -> torch.Tensor:
    """``fastlangevin._rng.chunk_seed(seed, k)`` for every k of an int64 tensor, as int64 (the same bits).

    In int64 ops: multiplication and addition wrap modulo 2**64 (two's complement) as uint64
    arithmetic does; ``>>`` is arithmetic, so each logical shift masks the sign copies off.
    """
    z = chunk * _int64(_GOLDEN) + _int64((seed + _GOLDEN) % (1 << 64))
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * _int64(0xBF58476D1CE4E5B9)
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * _int64(0x94D049BB133111EB)
    return z ^ ((z >> 31) & ((1 << 33) - 1))


_U_GOLDEN, _U_M1, _U_M2 = np.uint64(_GOLDEN), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_U27, _U30, _U31 = np.uint64(27), np.uint64(30), np.uint64(31)


def splitmix64_np(seed: int, chunk: np.ndarray, chunk_golden: Optional[np.ndarray] = None) -> np.ndarray:
    """``fastlangevin._rng.chunk_seed(seed, k)`` for every k of a uint64 numpy array, as uint64 (uint64
    arithmetic wraps modulo 2**64, ``>>`` is logical); ``chunk_golden``: ``chunk · GOLDEN`` (mod 2**64)
    precomputed. ~4 µs for a hundred keys (in-place ufuncs) instead of ~25 µs of torch ops.

    Kept unsigned on purpose: ``Generator.manual_seed`` of a negative int goes through a caught C++
    overflow exception (~1.6 µs more a call, measured), and it reads an int64 as its uint64 bits anyway."""
    z = chunk * _U_GOLDEN if chunk_golden is None else chunk_golden.copy()
    z += np.uint64((seed + _GOLDEN) % (1 << 64))
    z ^= z >> _U30
    z *= _U_M1
    z ^= z >> _U27
    z *= _U_M2
    z ^= z >> _U31
    return z


def _splitmix_py(seed: int, keys_golden: List[int]) -> List[int]:
    """``chunk_seed(seed, k)`` for the ``(k + 1) · GOLDEN`` of each key, in Python ints (see SPLITMIX_PY_MAX)."""
    m = 0xFFFFFFFFFFFFFFFF
    out = []
    for kg in keys_golden:
        z = (seed + kg) & m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        out.append(z ^ (z >> 31))
    return out


def _sqrt_rn(ts: List[torch.Tensor], out: Optional[List[torch.Tensor]] = None) -> List[torch.Tensor]:
    """Correctly rounded fp32 square roots (the kernel's ``sqrt_rn``), into ``out`` (default: new).

    torch's CPU fp32 sqrt is not always correctly rounded (0.6 % of [2**-7, 1) 1 ulp off, measured);
    numpy's is (the IEEE instruction): bitwise the float64 root rounded to fp32 for every fp32
    (checked exhaustively), which is exact (53 > 2·24 + 2 bits) and what other devices compute.
    """
    out = [torch.empty_like(t) for t in ts] if out is None else out
    for t, o in zip(ts, out):
        if t.device.type == "cpu":
            np.sqrt(t.numpy(), out=o.numpy())
        else:
            o.copy_(t.double().sqrt_())
    return out


def _update(method, theta, g, state, z, lr, gscale, prior, nscale, a1, a2, eps):
    """The update on lists of fp32 tensors (``theta`` and ``state`` in place; ``g`` read-only; ``z``
    the noise, SGLD / SGHMC: already times ``nscale``, pSGLD: standard; or None)."""
    if gscale != 1.0:  # (× 1 is exact: skipping it changes no bit)
        g = torch._foreach_mul(g, gscale)
    if prior != 0.0:  # out of place: g may still be the caller's gradients
        g = torch._foreach_add(g, torch._foreach_mul(theta, prior))
    if method == SGLD:
        torch._foreach_sub_(theta, torch._foreach_mul(g, lr))
        if z is not None:
            torch._foreach_add_(theta, z)
    elif method == PSGLD:
        torch._foreach_mul_(state, a1)
        gg = torch._foreach_mul(g, g)
        torch._foreach_mul_(gg, a2)
        torch._foreach_add_(state, gg)
        precond = _sqrt_rn(state, gg)
        torch._foreach_add_(precond, eps)
        torch._foreach_reciprocal_(precond)
        step = torch._foreach_mul(precond, g)
        torch._foreach_mul_(step, lr)
        torch._foreach_sub_(theta, step)
        if z is not None:
            torch._foreach_mul_(precond, nscale)
            noise_std = _sqrt_rn(precond, precond)
            torch._foreach_mul_(noise_std, z)
            torch._foreach_add_(theta, noise_std)
    elif method == SGHMC:
        torch._foreach_mul_(state, a1)
        torch._foreach_sub_(state, torch._foreach_mul(g, lr))
        if z is not None:
            torch._foreach_add_(state, z)
        torch._foreach_add_(theta, state)
    else:
        raise ValueError(f"unknown method {method}")


_F32 = np.float32
_mul, _sub, _add, _sqrt, _recip = np.multiply, np.subtract, np.add, np.sqrt, np.reciprocal


_NP_SCALARS: dict = {}  # scalars tuple -> np_scalars of it (a step's scalars rarely change)


def np_scalars(scalars: tuple) -> tuple:
    """``(lr, gscale, prior, nscale, a1, a2, eps)`` as the fp32 values torch's ops use (a Python
    float scalar meets an fp32 tensor rounded to fp32); gscale / prior None where ``_update`` skips them.
    Cached (seven numpy scalars cost ~5 µs, ~15 µs in a step that follows other work)."""
    if 0.0 in scalars and any(math.copysign(1.0, v) < 0.0 for v in scalars if v == 0.0):
        return _np_scalars(scalars)  # (a key would not tell -0.0 from 0.0)
    got = _NP_SCALARS.get(scalars)
    if got is None:
        if len(_NP_SCALARS) >= 64:  # (a schedule: a new lr every step)
            _NP_SCALARS.clear()
        got = _NP_SCALARS[scalars] = _np_scalars(scalars)
    return got


def _np_scalars(scalars: tuple) -> tuple:
    lr, gscale, prior, nscale, a1, a2, eps = scalars
    return (
        _F32(lr),
        None if gscale == 1.0 else _F32(gscale),
        None if prior == 0.0 else _F32(prior),
        _F32(nscale),
        _F32(a1),
        _F32(a2),
        _F32(eps),
    )


def _mul_add(x, y, a, t, out, fuse: bool):
    """``out ← x + fl(a·y)`` (fp32 numpy arrays; ``out`` may be ``x``; ``t`` scratch like ``x``): one pass
    (``torch.addcdiv`` with an fp32 ONE: ``y / 1`` exact, ``a·y`` rounded before the add, never an FMA,
    on every CPU capability: checked in tests/test_small_path.py) where ``fuse``, else numpy's
    multiply then add. Bitwise the same either way, and as torch's ``x + a * y`` (NaN payloads too)."""
    if fuse:
        xt = torch.from_numpy(x)
        if out is x:
            xt.addcdiv_(torch.from_numpy(y), FP32_ONE, value=float(a))
        else:
            torch.addcdiv(xt, torch.from_numpy(y), FP32_ONE, value=float(a), out=torch.from_numpy(out))
    else:
        _mul(y, a, t)
        _add(t, x, out)  # (product first: with two NaNs x86 keeps the first one's payload, as torch's ops do)


def _update_np(method, th, g, st, z, sc, t1, t2, t3):
    """:func:`_update` on numpy arrays (CPU): the same operations in the same order, each one IEEE fp32
    rounding (numpy's ufuncs: no FMA, correctly rounded √ and 1/x), so bitwise the same results;
    ~0.3 µs a call instead of ~1-2 µs a torch op. ``th`` / ``st`` in place, ``t1..t3`` scratch shaped
    like ``th``, ``sc`` from :func:`np_scalars`.

    From FUSE_MIN elements on, SGLD's ``θ − fl(lr·g)`` and the prior's ``g + fl(λ·θ)`` are one torch
    ``addcdiv`` pass each (:func:`_mul_add`) instead of two ufunc passes (SGLD 3 passes -> 2; both
    operands come from memory there). SGHMC's and pSGLD's ``x ± fl(a·y)`` stay two ufunc passes: one
    operand is still in cache from the pass before, and the fused pass (it divides by ONE) measured
    5-8 % slower there. ``x − fl(a·y)`` is ``x + fl(−a·y)`` (negation is exact, rounding symmetric)."""
    lr, gscale, prior, nscale, a1, a2, eps = sc
    fuse = th.size >= FUSE_MIN
    if gscale is not None:
        _mul(g, gscale, t3)
        g = t3
    if prior is not None:
        _mul_add(g, th, prior, t1, t3, fuse)
        g = t3
    if method == SGLD:
        _mul_add(th, g, -lr, t1, th, fuse)
        if z is not None:
            _add(th, z, th)
    elif method == PSGLD:
        _mul(st, a1, st)
        _mul(g, g, t1)
        _mul_add(st, t1, a2, t1, st, False)
        _sqrt(st, t1)
        _add(t1, eps, t1)
        _recip(t1, t1)
        _mul(t1, g, t2)
        _mul_add(th, t2, -lr, t2, th, False)
        if z is not None:
            _mul(t1, nscale, t1)
            _sqrt(t1, t1)
            _mul(t1, z, t1)
            _add(th, t1, th)
    elif method == SGHMC:
        _mul(st, a1, st)
        _mul_add(st, g, -lr, t1, st, False)
        if z is not None:
            _add(st, z, st)
        _add(th, st, th)
    else:
        raise ValueError(f"unknown method {method}")


def run_numpy(plan, method: int, th: list, g: list, st: Optional[list], sc: tuple, noise, g_small=None) -> None:
    """The CPU update of a bucket laid out by ``plan``, on numpy arrays shaped like the tensors
    (``th``, ``st`` written in place, ``g`` read; fp32); ``noise``: None (no noise) or a
    :class:`NoiseSource`. Batch by batch: its small tensors are gathered into flat buffers (a numpy
    slice assignment, ~0.1 µs a tensor), updated as one array and scattered back; the others are
    updated in place, one after the other. A serial torch-stream batch draws each noise chunk just
    before the update of its slice (its noise still in cache); otherwise the batch's noise is filled at once
    (threaded draws, Philox, injected). ``g_small``: per batch, its small tensors' gradients already
    gathered (flat, in order), or None. Callers validate shapes (an assignment would broadcast).

    Floating-point errors are ignored as torch ignores them: numpy would warn on an overflow (or raise
    under ``np.seterr(all="raise")``, leaving the bucket half updated) where the foreach ops are silent."""
    with np.errstate(all="ignore"):
        _run_numpy(plan, method, th, g, st, sc, noise, g_small)


def _run_numpy(plan, method: int, th: list, g: list, st: Optional[list], sc: tuple, noise, g_small=None) -> None:
    on = noise is not None
    for b in range(len(plan.packed)):
        ks, flat, views, parts, first = plan.np_batch(b)
        seeds = noise.fill(b) if on else None  # the chunk seeds of a serial batch, drawn below
        if seeds is not None:
            gen, std, fills = noise.gen, noise.std, plan.fills(b)
        if ks:
            if seeds is not None:
                for f, s in zip(fills[:first], seeds):
                    gen.manual_seed(s)
                    f.normal_(0.0, std, generator=gen)
                plan.apply_head(b, parts=False)
            tv, gv, sv = views
            for k, a in zip(ks, tv):
                a[...] = th[k]
            gf = g_small[b] if g_small is not None else None
            if gf is None:
                gf = flat[1]
                for k, c in zip(ks, gv):
                    c[...] = g[k]
            if st:
                for k, a in zip(ks, sv):
                    a[...] = st[k]
            _update_np(method, flat[0], gf, flat[2] if st else None, flat[3] if on else None, sc, *flat[4:])
            for k, a in zip(ks, tv):
                th[k][...] = a
            if st:
                for k, a in zip(ks, sv):
                    st[k][...] = a
        for k, lo, hi, whole, zp, t1, t2, t3, (a, e), pieces in parts:
            if seeds is not None:  # serial torch stream: chunk by chunk, each drawn just before its update
                if whole and len(pieces) == 1:
                    _, _, fill, zp, head, *_ = pieces[0]
                    if fill is not None:
                        gen.manual_seed(seeds[a])
                        fill.normal_(0.0, std, generator=gen)
                    if head is not None:
                        head[0][...] = head[1]
                    _update_np(method, th[k], g[k], st[k] if st else None, zp, sc, t1, t2, t3)
                    continue
                tf, gf = th[k].reshape(-1), g[k].reshape(-1)  # (contiguous: views)
                sf = st[k].reshape(-1) if st else None
                for s, (p0, p1, fill, zp, head, u1, u2, u3) in enumerate(pieces, a):
                    if fill is not None:
                        gen.manual_seed(seeds[s])
                        fill.normal_(0.0, std, generator=gen)
                    if head is not None:
                        head[0][...] = head[1]
                    _update_np(method, tf[p0:p1], gf[p0:p1], sf[p0:p1] if st else None, zp, sc, u1, u2, u3)
                continue
            if whole:
                _update_np(method, th[k], g[k], st[k] if st else None, zp if on else None, sc, t1, t2, t3)
            else:  # a slice of a tensor above BATCH (th and st contiguous: reshape is a view)
                sp = st[k].reshape(-1)[lo:hi] if st else None
                _update_np(method, th[k].reshape(-1)[lo:hi], g[k].reshape(-1)[lo:hi], sp, zp if on else None, sc,
                           t1, t2, t3)  # fmt: skip


class _Plan:
    """The batches of one bucket layout (shapes and optimizer indices), with their buffers.

    A batch holds at most ``BATCH`` elements: whole tensors, or one slice of a tensor above
    ``BATCH``. Its small tensors (at most ``SMALL`` elements: dispatch costs them more than
    arithmetic) are gathered into flat fp32 buffers, which enter the update as one tensor; the
    others are updated in place. ``packed[b]``: batch b's small tensors; ``parts[b]``: its other
    ``(k, lo, hi)`` (tensor k's flat elements [lo, hi)); ``segs[b]``: its noise chunks ``(chunk
    key, offset in the batch, elements needed, elements filled)``, small tensors first.
    """

    def __init__(self, shapes, indices, device):
        self.shapes, self.device = shapes, device
        self.packed, self.parts = [], []
        numels = [s.numel() for s in shapes]
        packed, parts, total = [], [], 0
        for k, n in enumerate(numels):
            if n == 0:
                continue
            if total + min(n, BATCH) > BATCH:
                self.packed.append(packed), self.parts.append(parts)
                packed, parts, total = [], [], 0
            if n <= SMALL:
                packed.append(k)
            elif n <= BATCH:
                parts.append((k, 0, n))
            else:  # its own batches, slice by slice (BATCH is a multiple of the noise chunk)
                for lo in range(0, n, BATCH):
                    self.packed.append([]), self.parts.append([(k, lo, min(n, lo + BATCH))])
                continue
            total += n
        if packed or parts:
            self.packed.append(packed), self.parts.append(parts)
        self.n_small = [sum(numels[k] for k in ks) for ks in self.packed]
        self.totals = [ns + sum(hi - lo for _, lo, hi in ps) for ns, ps in zip(self.n_small, self.parts)]
        if indices and max(indices) >= MAX_PARAMS:
            raise ValueError(f"optimizer indices must be < {MAX_PARAMS}, got {max(indices)}")
        spans = [[(k, 0, numels[k]) for k in ks] + ps for ks, ps in zip(self.packed, self.parts)]
        self.psegs = [self._segments(sp, indices, 0) for sp in spans]  # Philox: every element
        self.segs = [self._segments(sp, indices, HEAD) for sp in spans]  # torch: from element HEAD on
        self._head_layout(spans, indices)
        self.whole = [[lo == 0 and hi == numels[k] for k, lo, hi in ps] for ps in self.parts]
        self._buffers, self._flat, self._views = {}, {}, {}
        self._philox, self._fills, self._keys, self._seeds, self._np = {}, {}, None, (None, []), {}
        self._head_np, self._head_fills = {}, None

    @staticmethod
    def _segments(parts, indices, skip):
        """The chunks of the parameter slots covering each part's elements from ``skip`` on: ``(chunk
        key, offset in the batch, elements needed, elements filled)``; a chunk's fill starts at its
        element 0 (a prefix of the chunk: the first ``skip`` values are drawn and overwritten)."""
        segs, off = [], 0
        for k, lo, hi in parts:
            base = indices[k] * (PARAM_SLOT // _C)  # PARAM_SLOT is a multiple of the chunk
            for c in range(max(lo, skip) // _C, -(-hi // _C) if hi > skip else 0):
                need = min(hi, (c + 1) * _C) - c * _C
                segs.append((base + c, off + c * _C - lo, need, min(_C, max(16, -(-need // 16) * 16))))
            off += hi - lo
        return segs

    def _head_layout(self, spans, indices):
        """The torch stream's head region: the chunks it needs (``head_segs``: key, offset in the
        "head" buffer, fill), and per batch the copies into its noise buffer: ``head_copy[b]`` =
        (destinations, sources) index lists of its small tensors' head elements, and per part
        ``(offset in the batch, sources start, count)`` (None: a slice not at element 0)."""
        want = {}  # head chunk key -> elements of it needed (a prefix)
        for sp in spans:
            for k, lo, hi in sp:
                if lo == 0 and HEAD:
                    g = HEAD_BASE + indices[k] * HEAD
                    key = g // _C
                    want[key] = max(want.get(key, 0), g - key * _C + min(hi, HEAD))
        self.head_segs, start, off = [], {}, 0
        for key in sorted(want):
            fill = max(16, -(-want[key] // 16) * 16)
            self.head_segs.append((key, off, fill))
            start[key], off = off, off + fill
        self.head_size = off
        self.head_copy = []
        for b, sp in enumerate(spans):
            dst, src, parts, pos = [], [], [], 0
            for j, (k, lo, hi) in enumerate(sp):
                small = j < len(self.packed[b])
                if lo == 0 and HEAD:
                    g = HEAD_BASE + indices[k] * HEAD
                    s0, cnt = start[g // _C] + g % _C, min(hi, HEAD)
                    if small:
                        dst += range(pos, pos + cnt)
                        src += range(s0, s0 + cnt)
                    else:
                        parts.append((pos, s0, cnt))
                elif not small:
                    parts.append(None)
                pos += hi - lo
            self.head_copy.append((dst, src, parts))

    def draw_head(self, seed_int: int, std: float) -> None:
        """Fill the "head" buffer with ``std ·`` the head region's normals under ``seed_int``."""
        if not self.head_segs:
            return
        gen, _ = cpu_scratch()
        fills = self._head_fills
        if fills is None:  # (cached: a slice costs ~1 µs, more when its code is out of cache)
            head = self._head_buffer()
            fills = self._head_fills = [(key, head[off : off + fill]) for key, off, fill in self.head_segs]
        for key, view in fills:
            gen.manual_seed(chunk_seed(seed_int, key))  # (a chunk per 1024 parameters: Python ints, unsigned)
            view.normal_(0.0, std, generator=gen)

    def _head_buffer(self) -> torch.Tensor:
        buf = self._buffers.get("head")
        if buf is None:
            with torch.inference_mode(False):  # kept across steps (see _backend.KEPT)
                buf = self._buffers["head"] = torch.empty(self.head_size, dtype=torch.float32)
        return buf

    def head_np(self, b: int):
        """Batch ``b``'s head copies as numpy: (z of its small part, destination and source index
        arrays, the head buffer, per part (its z head view, its source view)); cached."""
        got = self._head_np.get(b)
        if got is None:
            dst, src, parts = self.head_copy[b]
            z, head = self.buffer("z", self.totals[b]).numpy(), self._head_buffer().numpy()
            views = [None if c is None else (z[c[0] : c[0] + c[2]], head[c[1] : c[1] + c[2]]) for c in parts]
            got = (z, np.array(dst, dtype=np.int64), np.array(src, dtype=np.int64), head, views)
            self._head_np[b] = got
        return got

    def apply_head(self, b: int, small: bool = True, parts: bool = True) -> None:
        """Copy the head elements of batch ``b``'s small tensors and/or parts into its noise buffer
        (after its chunk fills, which write those places too)."""
        z, dst, src, head, part_views = self.head_np(b)
        if small and len(dst):
            z[dst] = head[src]
        if parts:
            for v in part_views:
                if v is not None:
                    v[0][...] = v[1]

    def buffer(self, name: str, n: int) -> torch.Tensor:
        """Flat fp32 buffer ``name``'s first ``n`` elements (16 spare for the last fill; cached views)."""
        key = (name, n)
        view = self._flat.get(key)
        if view is None:
            buf = self._buffers.get(name)
            if buf is None:
                with torch.inference_mode(False):  # kept across steps (see _backend.KEPT)
                    buf = torch.empty(max(self.totals) + 16, dtype=torch.float32, device=self.device)
                self._buffers[name] = buf
            view = self._flat[key] = buf[:n]
        return view

    def views(self, name: str, b: int, small: bool) -> List[torch.Tensor]:
        """Buffer ``name`` cut like batch ``b``'s small tensors (``small``) or its other parts, each
        shaped like its tensor (a slice: flat). Cached: a view costs a microsecond per step."""
        key = (name, b, small)
        v = self._views.get(key)
        if v is None:
            buf = self.buffer(name, self.totals[b])
            if small:
                shapes = [self.shapes[k] for k in self.packed[b]]
                sizes, off = [s.numel() for s in shapes], 0
            else:
                shapes = [self.shapes[k] if w else None for (k, _, _), w in zip(self.parts[b], self.whole[b])]
                sizes, off = [hi - lo for _, lo, hi in self.parts[b]], self.n_small[b]
            v = []
            for size, shape in zip(sizes, shapes):
                piece = buf[off : off + size]
                v.append(piece if shape is None else piece.view(shape))
                off += size
            self._views[key] = v
        return v

    def np_batch(self, b: int):
        """Batch ``b``'s numpy views, cached: ``(small tensor indices, flat arrays (theta, g, state, z,
        t1, t2, t3) of its small part, per-tensor views (theta, g, state) into them, parts)``, a part
        ``(k, lo, hi, whole, z, t1, t2, t3, segment range)`` with its arrays shaped like the tensor
        (whole) or flat; the scratch t1..t3 of every part and of the small part starts at element 0,
        so it stays in cache from one tensor to the next. ``segs[b][a:e]`` are the noise chunks of a
        part (the small part: ``[0, first part's a)``)."""
        got = self._np.get(b)
        if got is None:
            ns = self.n_small[b]
            names = ("theta", "g", "state", "z", "t1", "t2", "t3")
            flat = [self.buffer(name, ns).numpy() for name in names]
            views = [[v.numpy() for v in self.views(name, b, True)] for name in names[:3]]
            zs = [v.numpy() for v in self.views("z", b, False)]
            starts, parts = [seg[1] for seg in self.segs[b]], []
            for (k, lo, hi), w, z in zip(self.parts[b], self.whole[b], zs):
                temps = [self.buffer(name, hi - lo).numpy() for name in names[4:]]
                if w:
                    temps = [t.reshape(self.shapes[k]) for t in temps]
                off = ns + sum(h - lo_ for _, lo_, h in self.parts[b][: len(parts)])
                a, e = bisect.bisect_left(starts, off), bisect.bisect_left(starts, off + hi - lo)
                parts.append((k, lo, hi, w, z, *temps, (a, e), self._serial(b, len(parts), off, a, e)))
            first = parts[0][-2][0] if parts else len(self.segs[b])
            got = self._np[b] = (self.packed[b], flat, views, parts, first)
        return got

    def _serial(self, b: int, j: int, off: int, a: int, e: int):
        """Part j of batch b drawn serially, one noise chunk at a time into the scratch "zs" from element
        0, and updated chunk by chunk: the scratch, the noise and the tensor's slice stay in L2 (a
        whole batch's would not: 2**18 elements are 1 MiB an array). Its pieces ``(start, end, fill,
        noise, head, t1, t2, t3)``: flat elements [start, end) of the tensor (one chunk ``segs[b][a + i]``
        each; None-fill: no chunk, head elements only), the chunk's fill (a torch view) and the piece's
        noise (numpy; shaped like the tensor for a whole one-piece part), its head destination and
        source (the first piece of a part starting at element 0) or None, flat scratch from element 0."""
        k, lo, hi = self.parts[b][j]
        zs = self.buffer("zs", self.totals[b] + 16)
        segs = self.segs[b][a:e]
        starts = [lo + o - off for _, o, _, _ in segs] or [lo]
        ends = starts[1:] + [hi]
        c = self.head_copy[b][2][j]
        pieces = []
        for i, (p0, p1) in enumerate(zip(starts, ends)):
            fill = zs[: segs[i][3]] if segs else None
            z = zs[: p1 - p0].numpy()
            if self.whole[b][j] and len(starts) == 1:
                z = z.reshape(self.shapes[k])
            head = None
            if i == 0 and c is not None:
                head = (zs[: c[2]].numpy(), self._head_buffer()[c[1] : c[1] + c[2]].numpy())
            temps = [self.buffer(name, p1 - p0).numpy() for name in ("t1", "t2", "t3")]
            pieces.append((p0, p1, fill, z, head, *temps))
        return pieces

    def fills(self, b: int) -> List[torch.Tensor]:
        """Batch ``b``'s noise-buffer slices that its chunks' fills write (cached)."""
        got = self._fills.get(b)
        if got is None:
            z = self.buffer("z", self.totals[b] + 16)
            got = self._fills[b] = [z[off : off + fill] for _, off, _, fill in self.segs[b]]
        return got

    def chunk_seeds(self, seed_int: int, b: int) -> List[int]:
        """The generator seeds of batch ``b``'s noise chunks under ``seed_int`` (non-negative Python ints):
        one vectorised splitmix for all batches per seed."""
        if self._seeds[0] != seed_int:
            if self._keys is None:
                keys = np.array([seg[0] for segs in self.segs for seg in segs], dtype=np.uint64)
                self._keys = (keys, keys * _U_GOLDEN, [(int(k) + 1) * _GOLDEN for k in keys.tolist()])
            if len(self._keys[2]) <= SPLITMIX_PY_MAX:
                flat = _splitmix_py(seed_int, self._keys[2])
            else:
                flat = splitmix64_np(seed_int, self._keys[0], self._keys[1]).tolist()
            self._seeds = (seed_int, [])
            for segs in self.segs:
                self._seeds[1].append(flat[: len(segs)])
                flat = flat[len(segs) :]
        return self._seeds[1][b]

    def philox_gather(self, b: int):
        """(Philox group counters, positions of batch b's normals in their 4-wide output): cached."""
        got = self._philox.get(b)
        if got is None:
            counters, pos, g0 = [], [], 0
            for key, off, need, _ in self.psegs[b]:
                start = key * _C  # the segment's first global element, a multiple of 4
                groups = -(-need // 4)
                counters.append(torch.arange(start // 4, start // 4 + groups, dtype=torch.int64))
                pos.append(torch.arange(4 * g0, 4 * g0 + need, dtype=torch.int64))
                g0 += groups
            with torch.inference_mode(False):  # kept across steps (see _backend.KEPT)
                got = self._philox[b] = (torch.cat(counters).to(self.device), torch.cat(pos).to(self.device))
        return got


_PLANS = threading.local()


def _plan(shapes, indices, device) -> _Plan:
    cache = getattr(_PLANS, "cache", None)
    if cache is None:
        cache = _PLANS.cache = {}
    key = (device, shapes, tuple(indices))
    plan = cache.get(key)
    if plan is None:
        if len(cache) >= 16:
            cache.clear()
        plan = cache[key] = _Plan(shapes, indices, device)
    return plan


def _draw_workers(plan, b: int) -> int:
    """Threads for batch ``b``'s draws: torch's thread count, at least MIN_DRAW_PER_WORKER elements each."""
    if torch.compiler.is_compiling():
        return 1
    return min(torch.get_num_threads(), plan.totals[b] // MIN_DRAW_PER_WORKER)


def _draw_torch(plan, b: int, seed_int: int, std: float) -> None:
    """Fill batch ``b``'s noise buffer with ``std ·`` the torch stream's normals, over torch's threads.

    A fill rounds up to 16 values (see ``torch_chunk_normal``), spilling into the next segment's
    place, which that segment's own fill then overwrites: so a thread's last spilling segment is
    drawn into its scratch buffer instead (its successor may belong to another thread).
    """
    segs, fills = plan.segs[b], plan.fills(b)
    seeds = plan.chunk_seeds(seed_int, b)
    total = plan.totals[b]
    workers = min(_draw_workers(plan, b), len(segs))  # (a batch of head-only tensors has no chunk)
    if workers <= 1:
        _draw_range(fills, seeds, std)
        return
    cuts = [0]
    for w in range(1, workers):  # balance elements, not segments
        target = total * w // workers
        first = next((s for s, seg in enumerate(segs) if seg[1] >= target), len(segs))
        cuts.append(min(len(segs), max(cuts[-1] + 1, first)))
    cuts.append(len(segs))
    jobs = []
    for a, e in zip(cuts, cuts[1:]):
        if a < e:
            end = segs[e][1] if e < len(segs) else total + 16
            jobs.append((a, e, {s for s in range(a, e) if segs[s][1] + segs[s][3] > end}))
    z = plan.buffer("z", total)
    futures = [_pool().submit(_draw_range, fills[a:e], seeds[a:e], std, z, segs, a, s) for a, e, s in jobs[1:]]
    a, e, s = jobs[0]
    _draw_range(fills[a:e], seeds[a:e], std, z, segs, a, s)
    for f in futures:
        f.result()


def _draw_range(fills, seeds, std, z=None, segs=None, first=0, spill=()):
    """``torch_chunk_normal``'s fills, inlined (it costs a few µs a call in Python, per tensor);
    the segments in ``spill`` (indices into ``segs``) are drawn through this thread's scratch buffer."""
    gen, buf = cpu_scratch()
    for s, (view, seed) in enumerate(zip(fills, seeds), first):
        gen.manual_seed(seed)
        if s not in spill:
            view.normal_(0.0, std, generator=gen)
        else:
            _, off, need, fill = segs[s]
            buf[:fill].normal_(0.0, std, generator=gen)
            z[off : off + need].copy_(buf[:need])


def _noise(plan, b, seed, rng, std, injected):
    """Batch ``b``'s noise in its flat buffer "z": drawn (std-scaled) or the injected tensors."""
    n = plan.totals[b]
    z = plan.buffer("z", n)
    if injected is not None:
        _copy_(plan.views("z", b, True), [injected[k] for k in plan.packed[b]])
        _copy_(plan.views("z", b, False), _parts(plan, b, injected))
    elif rng == "philox":
        counter, pos = plan.philox_gather(b)
        z4 = torch.stack(philox_randn4x(seed.to(plan.device), counter), dim=1).reshape(-1)
        torch.index_select(z4, 0, pos, out=z)
    else:
        _draw_torch(plan, b, seed, std)
        plan.apply_head(b)  # (the head itself drawn once per call: Plan.draw_head)
        return
    if std != 1.0:
        z.mul_(std)


class NoiseSource:
    """The noise of one :func:`run_numpy` call: ``fill(b)`` puts batch b's noise in the plan's "z"
    buffer and returns None, or, for a serial torch-stream batch, returns its chunk seeds and leaves
    the draws (``gen``, ``std``) to the update loop: the same values either way. ``seed``: an int
    for the torch stream, the int64 ``[1]`` tensor for Philox."""

    def __init__(self, plan, seed, rng: str, std: float, injected=None):
        self.plan, self.seed, self.rng, self.std, self.injected = plan, seed, rng, std, injected
        self.torch = injected is None and rng == "torch"
        self.gen = cpu_scratch()[0] if self.torch else None
        if self.torch:
            plan.draw_head(seed, std)

    def fill(self, b: int):
        plan = self.plan
        if not self.torch:
            _noise(plan, b, self.seed, self.rng, self.std, self.injected)
        elif _draw_workers(plan, b) > 1:
            _draw_torch(plan, b, self.seed, self.std)
            plan.apply_head(b)
        else:
            return plan.chunk_seeds(self.seed, b)
        return None


def _copy_(dst: List[torch.Tensor], src: List[torch.Tensor]) -> None:
    if dst:  # (foreach ops refuse empty lists)
        torch._foreach_copy_(dst, src)


def _parts(plan, b, tensors):
    """Batch ``b``'s in-place parts of ``tensors``: the tensors themselves, or flat slices."""
    return [tensors[k] if w else tensors[k].view(-1)[lo:hi] for (k, lo, hi), w in zip(plan.parts[b], plan.whole[b])]


@torch.no_grad()
def optim_update_torch(method: int, tensors: tuple, scalars: tuple, has_noise: bool, rng: str, injected=None) -> None:
    """Update a bucket in place: ``tensors = (params, grads, masters, states, indices, seed)`` (lists
    of contiguous tensors on one device; masters: fp32 copies of 16-bit params or empty; states:
    fp32 V / v or empty; indices: the optimizer indices; seed: int64 ``[1]``), ``scalars = (lr,
    gscale, prior, nscale, a1, a2, eps)`` (floats, see the module docstring), ``injected``: fp32
    standard normals shaped like the params instead of the stream, or None.
    """
    params, grads, masters, states, indices, seed = tensors
    if not params:
        return
    device = params[0].device
    if rng == "torch" and device.type != "cpu":
        raise ValueError(f"rng='torch' draws from torch's CPU generator; use rng='philox' on {device.type}")
    if not masters and params[0].dtype != torch.float32:
        raise ValueError(f"16-bit parameters need fp32 master copies, got {params[0].dtype} without")
    theta = masters if masters else params
    plan = _plan(tuple(t.shape for t in theta), indices, device)
    # SGLD and SGHMC have a scalar noise scale: fold it into the draw. pSGLD scales per element.
    std = 1.0 if method == PSGLD else scalars[3]  # nscale
    noise_seed = seed
    if has_noise and injected is None and rng == "torch":
        noise_seed = int(seed.reshape(()).item())  # once per call (CPU)
    if device.type == "cpu" and NUMPY_ON_CPU:
        th = [t.detach().numpy() for t in theta]
        g = [(t if t.dtype == torch.float32 else t.float()).detach().numpy() for t in grads]
        st = [t.detach().numpy() for t in states] if states else None
        noise = NoiseSource(plan, noise_seed, rng, std, injected) if has_noise else None
        run_numpy(plan, method, th, g, st, np_scalars(scalars), noise)
        if masters:
            torch._foreach_copy_(params, masters)
        # numpy writes bypass autograd's version counters; bump them as the torch ops would
        increment_version(theta + states if states else theta)
        return
    if has_noise and injected is None and rng == "torch":
        plan.draw_head(noise_seed, std)
    for b, ks in enumerate(plan.packed):
        if has_noise:
            _noise(plan, b, noise_seed, rng, std, injected)
        th = big_th = _parts(plan, b, theta)
        g = _parts(plan, b, grads)
        if grads[0].dtype != torch.float32:
            _copy_(plan.views("g", b, False), g)
            g = plan.views("g", b, False)
        s = _parts(plan, b, states) if states else []
        z = plan.views("z", b, False) if has_noise else None
        ns = plan.n_small[b]
        if ks:  # the small tensors enter as one flat tensor, gathered here and scattered below
            th_v = plan.views("theta", b, True)
            _copy_(th_v, [theta[k] for k in ks])
            _copy_(plan.views("g", b, True), [grads[k] for k in ks])  # casts 16-bit gradients
            th, g = [plan.buffer("theta", ns)] + th, [plan.buffer("g", ns)] + g
            if states:
                s_v = plan.views("state", b, True)
                _copy_(s_v, [states[k] for k in ks])
                s = [plan.buffer("state", ns)] + s
            if has_noise:
                z = [plan.buffer("z", ns)] + z
        _update(method, th, g, s, z, *scalars)
        if ks:
            _copy_([theta[k] for k in ks], th_v)
            if states:
                _copy_([states[k] for k in ks], s_v)
            if masters:
                _copy_([params[k] for k in ks], th_v)
        if masters:
            _copy_(_parts(plan, b, params), big_th)

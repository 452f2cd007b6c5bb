"""Multi-tensor Triton kernel of the Langevin optimizers (installed as ``fastlangevin.kernels.optim``).

One launch updates every tensor of a bucket (a param group's tensors of one dtype pair), in the
manner of apex's ``multi_tensor_apply``: a table of pointers and sizes, one row per tensor, and a
block table mapping each program to (tensor, chunk). With ``g = gscale * grad + prior * θ`` (fp32):

    SGLD   (METHOD 0):  θ ← (θ − lr·g) + b·z
    pSGLD  (METHOD 1):  V ← a1·V + a2·g²;   G = 1 / (eps + √V);   θ ← (θ − lr·(G·g)) + √(c·G)·z   (c = b)
    SGHMC  (METHOD 2):  v ← ((a1·v) − lr·g) + b·z;   θ ← θ + v

Storage: θ is the parameter (fp32) or its fp32 master copy (16-bit parameters, which are then
rewritten from it); gradients of any float dtype; V and v fp32. Math in fp32, no FMA contraction
(``launch_options``), and correctly rounded ``√`` and ``/``, so the fallback's foreach ops give
bitwise the same affine part.

Noise: element j of the parameter with optimizer index i is element ``i·2**42 + j`` of the
project's Philox stream under the step's seed (``normal_tile`` at group ``i·2**40 + j // 4``): a
per-parameter slot of 2**42 elements, so the noise of (i, j) depends on nothing else — not the
grouping, bucketing, BLOCK or grid. ``fastlangevin.fallback.optim.PARAM_SLOT`` is the same constant.
"""

import triton
import triton.language as tl

from .tiles import launch_options, normal_tile

SGLD, PSGLD, SGHMC = 0, 1, 2

#: Columns of the per-tensor table (int64): pointers, then sizes and indices.
COL_PARAM, COL_GRAD, COL_MASTER, COL_STATE, COL_NOISE, COL_NUMEL, COL_INDEX = range(7)
META_COLS = 7

BLOCK_GPU = 4096
#: 32 elements (8 Philox groups) a thread, as the step (kernels/tiles.py ELEMS_PER_THREAD_GPU): the per-program
#: work (the table row, the Philox key schedule) over twice the elements of 8 warps (`fastlangevin kernels`, with
#: the 16-byte accesses: SGLD fp32 34.94 -> 32.84 hot instructions per element at 73 -> 128 registers). A bucket
#: with a pointer not 16-byte aligned (scalar accesses) keeps 8 warps: at 4, pSGLD with bf16 parameters spilled
#: (255 registers, 120 bytes of stack).
NUM_WARPS_GPU = 4
NUM_WARPS_UNALIGNED_GPU = 8
# The interpreter runs each program in Python; parameters are often small, so a moderate tile.
BLOCK_INTERPRETER = 1 << 11


@triton.jit
def _optim_kernel(
    meta_ptr,
    blocks_ptr,
    seed_ptr,
    lr,
    gscale,
    prior,
    nscale,
    a1,
    a2,
    eps,
    METHOD: tl.constexpr,
    HAS_MASTER: tl.constexpr,
    HAS_PRIOR: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    PARAM_DTYPE: tl.constexpr,
    GRAD_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
    ALIGNED: tl.constexpr = False,
):
    pid = tl.program_id(0).to(tl.int64)
    t = tl.load(blocks_ptr + 2 * pid)
    chunk = tl.load(blocks_ptr + 2 * pid + 1)
    row = meta_ptr + t * 7
    n = tl.load(row + 5)
    # [BLOCK // 4, 4] tile: row r holds Philox group (first_group + r), matching normal_tile. The tensor's offset
    # in int64 once per program; in-tile offsets int32.
    base = chunk * BLOCK
    offs = tl.arange(0, BLOCK // 4)[:, None] * 4 + tl.arange(0, 4)[None, :]
    # Only a tensor's last block is partial: the others run an unmasked copy of the update (the masked one comes
    # first, so ptxas lays it out as the jumped-over one), whose 16-byte accesses need the table's pointers known
    # 16-byte aligned (ALIGNED: the launcher checked every one) — a pointer loaded from memory is otherwise
    # assumed 1-byte aligned and each element is its own access.
    if base + BLOCK > n:
        _update_tile(
            row, seed_ptr, base, offs, (n - base).to(tl.int32), chunk, lr, gscale, prior, nscale, a1, a2, eps,
            METHOD, HAS_MASTER, HAS_PRIOR, HAS_NOISE, NOISE_FROM_PTR, PARAM_DTYPE, GRAD_DTYPE, BLOCK, False, False,
        )  # fmt: skip
    else:
        _update_tile(
            row, seed_ptr, base, offs, BLOCK, chunk, lr, gscale, prior, nscale, a1, a2, eps,
            METHOD, HAS_MASTER, HAS_PRIOR, HAS_NOISE, NOISE_FROM_PTR, PARAM_DTYPE, GRAD_DTYPE, BLOCK, True, ALIGNED,
        )  # fmt: skip


@triton.jit
def _ptr(row, col, DTYPE: tl.constexpr, base, ALIGNED: tl.constexpr):
    """Column ``col`` of a tensor's table row as a ``DTYPE`` pointer to element ``base``."""
    p = tl.load(row + col).to(tl.pointer_type(DTYPE))
    if ALIGNED:
        p = tl.multiple_of(p, 16)
    return p + base


@triton.jit
def _ld(ptrs, offs, left, EVEN: tl.constexpr):
    if EVEN:
        return tl.load(ptrs + offs)
    return tl.load(ptrs + offs, mask=offs < left, other=0.0)


@triton.jit
def _st(ptrs, offs, values, left, EVEN: tl.constexpr):
    if EVEN:
        tl.store(ptrs + offs, values)
    else:
        tl.store(ptrs + offs, values, mask=offs < left)


@triton.jit
def _update_tile(
    row, seed_ptr, base, offs, left, chunk, lr, gscale, prior, nscale, a1, a2, eps,
    METHOD: tl.constexpr, HAS_MASTER: tl.constexpr, HAS_PRIOR: tl.constexpr, HAS_NOISE: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr, PARAM_DTYPE: tl.constexpr, GRAD_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
    EVEN: tl.constexpr, ALIGNED: tl.constexpr,
):  # fmt: skip
    """The update of elements ``base + offs`` of one tensor (``offs < left`` valid; EVEN: all of them)."""
    p_ptr = _ptr(row, 0, PARAM_DTYPE, base, ALIGNED)
    g_ptr = _ptr(row, 1, GRAD_DTYPE, base, ALIGNED)
    index = tl.load(row + 6)
    if HAS_MASTER:
        m_ptr = _ptr(row, 2, tl.float32, base, ALIGNED)
        theta = _ld(m_ptr, offs, left, EVEN)
    else:
        theta = _ld(p_ptr, offs, left, EVEN).to(tl.float32)
    g = _ld(g_ptr, offs, left, EVEN).to(tl.float32) * gscale
    if HAS_PRIOR:
        g = g + prior * theta
    if HAS_NOISE:
        if NOISE_FROM_PTR:
            z = _ld(_ptr(row, 4, tl.float32, base, ALIGNED), offs, left, EVEN)
        else:
            # 2**40 Philox groups (2**42 elements) per parameter slot.
            z = normal_tile(seed_ptr, index * 1099511627776 + chunk * (BLOCK // 4), BLOCK // 4, 4)

    if METHOD == 0:
        new = theta - lr * g
        if HAS_NOISE:
            new = new + nscale * z
    elif METHOD == 1:
        s_ptr = _ptr(row, 3, tl.float32, base, ALIGNED)
        v = _ld(s_ptr, offs, left, EVEN)
        v = a1 * v + a2 * (g * g)
        _st(s_ptr, offs, v, left, EVEN)
        precond = tl.div_rn(1.0, eps + tl.sqrt_rn(v))
        new = theta - lr * (precond * g)
        if HAS_NOISE:
            new = new + tl.sqrt_rn(nscale * precond) * z
    else:
        s_ptr = _ptr(row, 3, tl.float32, base, ALIGNED)
        mom = a1 * _ld(s_ptr, offs, left, EVEN)
        mom = mom - lr * g
        if HAS_NOISE:
            mom = mom + nscale * z
        _st(s_ptr, offs, mom, left, EVEN)
        new = theta + mom

    if HAS_MASTER:
        _st(m_ptr, offs, new, left, EVEN)
    if PARAM_DTYPE == tl.bfloat16:
        _st(p_ptr, offs, _bf16_rtne(new), left, EVEN)
    else:
        _st(p_ptr, offs, new.to(PARAM_DTYPE), left, EVEN)


@triton.jit
def _bf16_rtne(x):
    """fp32 -> bf16, round to nearest even, in integer ops: the interpreter's cast truncates, the
    GPU's rounds; this is torch's ``.to(bfloat16)`` on both (NaN stays a quiet NaN)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + (0x7FFF + ((bits >> 16) & 1))
    hi = tl.where(x != x, 0x7FC0, bits >> 16).to(tl.uint16)
    return hi.to(tl.bfloat16, bitcast=True)


_TL_DTYPES = {}


def _tl_dtype(dtype):
    import torch

    if not _TL_DTYPES:
        _TL_DTYPES.update({torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16})
    return _TL_DTYPES[dtype]


# Device-side tables, cached by content. On CUDA they are built from pinned host memory with an
# asynchronous copy: no host sync, and a copy made while a CUDA graph is being captured stays
# valid at replay (its pinned source is kept alive: tables built under capture are never dropped).
_TABLES = {}
_CAPTURED_TABLES = {}
_ALIGNED: dict = {}  # id(meta table) -> (the table, whether all its pointers are 16-byte aligned)


def _device_table(key, build, device):
    """The int64 table ``build()`` (a CPU tensor) on ``device``, cached under ``key``."""
    got = _TABLES.get(key)
    if got is None:
        got = _CAPTURED_TABLES.get(key)
    if got is not None:
        return got[0]
    host = build()
    if device.type == "cpu":
        got = (host,)
    else:
        import torch

        pinned = host.pin_memory()
        got = (pinned.to(device, non_blocking=True), pinned)
        if torch.cuda.is_current_stream_capturing():
            _CAPTURED_TABLES[key] = got
            return got[0]
    if len(_TABLES) > 64:
        _TABLES.clear()
    _TABLES[key] = got
    return got[0]


def _block_rows(numels, block):
    """int64 ``[n_blocks, 2]`` (tensor, chunk) rows: program p updates chunk ``chunk`` of tensor ``tensor``."""
    import torch

    counts = torch.tensor([triton.cdiv(n, block) for n in numels], dtype=torch.int64)
    tensor_ids = torch.repeat_interleave(torch.arange(len(numels), dtype=torch.int64), counts)
    starts = torch.cumsum(counts, 0) - counts
    chunks = torch.arange(int(counts.sum()), dtype=torch.int64) - torch.repeat_interleave(starts, counts)
    return torch.stack([tensor_ids, chunks], 1).contiguous()


def launch_optim(method, tensors, scalars, has_noise, injected=None, block=None):
    """One launch over all ``tensors = (params, grads, masters, states, indices, seed)``: params one
    dtype, grads one dtype, all contiguous, one device; masters: fp32 copies (16-bit params) or
    empty; states: fp32 V / v (pSGLD / SGHMC) or empty; seed: int64 ``[1]`` on the device.
    ``scalars``: ``(lr, gscale, prior, nscale, a1, a2, eps)``.
    No host sync: the tables of pointers and blocks are cached device tensors (CUDA-graph capturable
    once a step has run outside the capture, or with the copies captured).
    """
    import torch

    params, grads, masters, states, indices, seed = tensors
    live = [k for k, p in enumerate(params) if p.numel() > 0]
    if not live:
        return
    device = params[0].device
    interpreted = device.type == "cpu"
    if block is None:
        block = BLOCK_INTERPRETER if interpreted else BLOCK_GPU
    rows = tuple(
        (
            params[k].data_ptr(),
            grads[k].data_ptr(),
            masters[k].data_ptr() if masters else 0,
            states[k].data_ptr() if states else 0,
            injected[k].data_ptr() if injected is not None else 0,
            params[k].numel(),
            indices[k],
        )
        for k in live
    )
    meta = _device_table(("meta", rows, device), lambda: torch.tensor(rows, dtype=torch.int64), device)
    # every pointer 16-byte aligned: the full blocks' accesses are then 16 bytes wide; kept per table (by the
    # table's identity: no second hash of the rows on the host path)
    got = _ALIGNED.get(id(meta))
    if got is None or got[0] is not meta:
        if len(_ALIGNED) > 64:
            _ALIGNED.clear()
        got = _ALIGNED[id(meta)] = (meta, all(r[c] % 16 == 0 for r in rows for c in range(COL_NUMEL)))
    aligned = got[1]
    numels = tuple(r[5] for r in rows)
    blocks = _device_table(("blocks", numels, block, device), lambda: _block_rows(numels, block), device)
    _optim_kernel[(blocks.shape[0],)](
        meta,
        blocks,
        seed,
        *scalars,
        METHOD=method,
        HAS_MASTER=bool(masters),
        HAS_PRIOR=scalars[2] != 0.0,
        HAS_NOISE=has_noise,
        NOISE_FROM_PTR=injected is not None,
        PARAM_DTYPE=_tl_dtype(params[0].dtype),
        GRAD_DTYPE=_tl_dtype(grads[0].dtype),
        BLOCK=block,
        ALIGNED=aligned,
        **launch_options(interpreted, NUM_WARPS_GPU if aligned else NUM_WARPS_UNALIGNED_GPU),
    )

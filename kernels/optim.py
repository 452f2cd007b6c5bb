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
NUM_WARPS_GPU = 8
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
):
    pid = tl.program_id(0).to(tl.int64)
    t = tl.load(blocks_ptr + 2 * pid)
    chunk = tl.load(blocks_ptr + 2 * pid + 1)
    row = meta_ptr + t * 7
    p_ptr = tl.load(row + 0).to(tl.pointer_type(PARAM_DTYPE))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(GRAD_DTYPE))
    n = tl.load(row + 5)
    index = tl.load(row + 6)
    # [BLOCK // 4, 4] tile: row r holds Philox group (first_group + r), matching normal_tile.
    local = chunk * BLOCK + (tl.arange(0, BLOCK // 4)[:, None] * 4 + tl.arange(0, 4)[None, :]).to(tl.int64)
    mask = local < n

    if HAS_MASTER:
        m_ptr = tl.load(row + 2).to(tl.pointer_type(tl.float32))
        theta = tl.load(m_ptr + local, mask=mask, other=0.0)
    else:
        theta = tl.load(p_ptr + local, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + local, mask=mask, other=0.0).to(tl.float32) * gscale
    if HAS_PRIOR:
        g = g + prior * theta
    if HAS_NOISE:
        if NOISE_FROM_PTR:
            z_ptr = tl.load(row + 4).to(tl.pointer_type(tl.float32))
            z = tl.load(z_ptr + local, mask=mask, other=0.0)
        else:
            # 2**40 Philox groups (2**42 elements) per parameter slot.
            z = normal_tile(seed_ptr, index * 1099511627776 + chunk * (BLOCK // 4), BLOCK // 4, 4)

    if METHOD == 0:
        new = theta - lr * g
        if HAS_NOISE:
            new = new + nscale * z
    elif METHOD == 1:
        s_ptr = tl.load(row + 3).to(tl.pointer_type(tl.float32))
        v = tl.load(s_ptr + local, mask=mask, other=0.0)
        v = a1 * v + a2 * (g * g)
        tl.store(s_ptr + local, v, mask=mask)
        precond = tl.div_rn(1.0, eps + tl.sqrt_rn(v))
        new = theta - lr * (precond * g)
        if HAS_NOISE:
            new = new + tl.sqrt_rn(nscale * precond) * z
    else:
        s_ptr = tl.load(row + 3).to(tl.pointer_type(tl.float32))
        mom = a1 * tl.load(s_ptr + local, mask=mask, other=0.0)
        mom = mom - lr * g
        if HAS_NOISE:
            mom = mom + nscale * z
        tl.store(s_ptr + local, mom, mask=mask)
        new = theta + mom

    if HAS_MASTER:
        tl.store(m_ptr + local, new, mask=mask)
    if PARAM_DTYPE == tl.bfloat16:
        tl.store(p_ptr + local, _bf16_rtne(new), mask=mask)
    else:
        tl.store(p_ptr + local, new.to(PARAM_DTYPE), mask=mask)


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
        **launch_options(interpreted, NUM_WARPS_GPU),
    )

"""The fused denoising score-matching (DSM) loss: custom ops and the public function.

    x̃   = α · x + σ · z,              z ~ N(0, I)     (fastlangevin::dsm_perturb)
    s    = score_fn(x̃, σ)                              (the user's network, plain autograd)
    ℓ_i  = ½ · λ_i · Σ_j (s_ij + z_ij / σ_i)²          (fastlangevin::dsm_loss_rows)
    ∂ℓ_i/∂s_ij = λ_i · (s_ij + z_ij / σ_i)            (fastlangevin::dsm_loss_rows_backward)

In the ops the noise z exists only inside the kernels: one int64 seed tensor (drawn from torch's
generator) is an input of every op, and each pass regenerates z from it with the same counters.
The loss saves the score (the one ``[B, ...]`` tensor it keeps for backward), the seed and ``[B]``
vectors; the perturb op saves only α. Each op dispatches to the Triton kernels
(``fastlangevin.kernels.dsm``) or the PyTorch fallback (``fastlangevin.fallback.dsm``).

The CPU default (``save_noise``, see :func:`dsm_loss`) draws z once per forward from the same
stream instead and runs the fallback's arithmetic as plain tensor code under one autograd node
(:class:`_SavedNoiseLoss`), keeping the residual ``s + z/σ`` for a one-multiply backward: bitwise
the ops' losses and gradients, without the dispatcher or a second noise pass. Small fp32 batches
take a straight path (:func:`_small_cpu_saved`) with the same operations.

On the Triton path, plain tensors with nothing intercepting skip the dispatcher
(:func:`_lean_triton_loss`): the same checks, seed and launches, perturb and loss as lean autograd
Functions taking one tensor and one tuple, the ``[B]`` rows of Python-float scales cached (never
written, never evicted), the seed drawn into a pooled buffer no live graph holds (:func:`_lean_seed`),
a reduced loss's partial sums and rows in reused per-thread buffers (:func:`_loss_buffers`), every
launch plan read from one geometry per (shape, dtype, device, sample_offset) (:class:`_Geometry`), no
flat views (the launchers take contiguous tensors of any shape).
"""

from __future__ import annotations

import functools
import math
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import _backend
from .._backend import _dispatch_modes, _function_mode_on, _is_compiling
from .._rng import SEED_HIGH, TORCH_RNG_CHUNK, chunk_seed, draw_seed, draw_seed_value
from .._validate import FLOAT_DTYPES, Scale, check_generator, check_like, check_offset, check_scale, check_state
from ..fallback.chunks import CPU_PIECE, cpu_scratch, draw_noise
from ..fallback.dsm import dsm_loss_backward_torch, dsm_loss_rows_torch, dsm_perturb_torch, residual_loss_rows_
from ..fallback.langevin_step import compute_dtype, scalar_tensor
from .langevin_step import RNG_ENV_VAR, resolve_rng

REDUCTIONS = ("mean", "sum", "none")


def _row_size(t: torch.Tensor) -> int:
    return math.prod(t.shape[1:])


def _flat(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.contiguous().reshape(-1)


def _rows_view(rows: torch.Tensor, ndim: int) -> torch.Tensor:
    return rows.reshape((-1,) + (1,) * (ndim - 1))


# ---------------------------------------------------------------------------------------
# Custom ops
# ---------------------------------------------------------------------------------------
@torch.library.custom_op("fastlangevin::dsm_perturb", mutates_args=())
def _dsm_perturb_op(
    x: torch.Tensor,
    seed: torch.Tensor,
    alpha_rows: Optional[torch.Tensor],
    sigma_rows: torch.Tensor,
    backend: str,
    rng: str,
    injected_noise: Optional[torch.Tensor],
    sample_offset: int = 0,
) -> torch.Tensor:
    """x̃ = α x + σ z (x + σ z when ``alpha_rows`` is None); rows ``[B]`` in the compute dtype."""
    _backend.record("dsm_perturb", backend)
    xc = x.contiguous()
    out = torch.empty_like(xc)
    args = (xc.reshape(-1), out.reshape(-1), seed, alpha_rows, sigma_rows)
    kw = dict(row_size=_row_size(x), elem_offset=sample_offset * _row_size(x), injected_noise=_flat(injected_noise))
    if backend == "triton":
        from ..kernels.dsm import launch_dsm_perturb

        launch_dsm_perturb(*args, **kw)
    else:
        dsm_perturb_torch(*args, rng=rng, **kw)
    return out


@_dsm_perturb_op.register_fake
def _(x, seed, alpha_rows, sigma_rows, backend, rng, injected_noise, sample_offset=0):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _perturb_setup_context(ctx, inputs, output):
    x, _seed, alpha_rows = inputs[:3]
    ctx.x_dtype = x.dtype
    ctx.save_for_backward(alpha_rows)


def _perturb_backward(ctx, grad):
    """∂x̃/∂x = α (per row): the noise does not enter the gradient."""
    (alpha_rows,) = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        if alpha_rows is None:
            grad_x = grad.to(ctx.x_dtype)
        else:
            cdt = alpha_rows.dtype
            grad_x = (grad.to(cdt) * _rows_view(alpha_rows, grad.dim())).to(ctx.x_dtype)
    return grad_x, None, None, None, None, None, None, None


_dsm_perturb_op.register_autograd(_perturb_backward, setup_context=_perturb_setup_context)


@torch.library.custom_op("fastlangevin::dsm_loss_rows", mutates_args=())
def _dsm_loss_rows_op(
    score: torch.Tensor,
    seed: torch.Tensor,
    inv_sigma_rows: torch.Tensor,
    weight_rows: torch.Tensor,
    backend: str,
    rng: str,
    injected_noise: Optional[torch.Tensor],
    sample_offset: int = 0,
) -> torch.Tensor:
    """Per-sample loss ``½ λ_i Σ_j (s_ij + z_ij / σ_i)²``: ``[B]`` in ``inv_sigma_rows``' dtype."""
    _backend.record("dsm_loss", backend)
    sc = score.contiguous().reshape(-1)
    kw = dict(
        row_size=_row_size(score), elem_offset=sample_offset * _row_size(score), injected_noise=_flat(injected_noise)
    )
    if backend == "triton":
        from ..kernels.dsm import launch_dsm_loss_rows

        out = torch.empty(score.shape[0], dtype=inv_sigma_rows.dtype, device=score.device)
        return launch_dsm_loss_rows(sc, out, seed, inv_sigma_rows, weight_rows, **kw)
    return dsm_loss_rows_torch(sc, seed, inv_sigma_rows, weight_rows, rng=rng, **kw)


@_dsm_loss_rows_op.register_fake
def _(score, seed, inv_sigma_rows, weight_rows, backend, rng, injected_noise, sample_offset=0):
    return score.new_empty((score.shape[0],), dtype=inv_sigma_rows.dtype)


@torch.library.custom_op("fastlangevin::dsm_loss_rows_backward", mutates_args=())
def _dsm_loss_rows_backward_op(
    score: torch.Tensor,
    seed: torch.Tensor,
    inv_sigma_rows: torch.Tensor,
    coef_rows: torch.Tensor,
    backend: str,
    rng: str,
    injected_noise: Optional[torch.Tensor],
    sample_offset: int = 0,
) -> torch.Tensor:
    """∂L/∂s = c_i (s_ij + z_ij / σ_i) with z regenerated from ``seed``; score's shape and dtype."""
    _backend.record("dsm_loss_backward", backend)
    sc = score.contiguous()
    grad = torch.empty_like(sc)
    args = (sc.reshape(-1), grad.reshape(-1), seed, inv_sigma_rows, coef_rows)
    kw = dict(
        row_size=_row_size(score), elem_offset=sample_offset * _row_size(score), injected_noise=_flat(injected_noise)
    )
    if backend == "triton":
        from ..kernels.dsm import launch_dsm_loss_backward

        launch_dsm_loss_backward(*args, **kw)
    else:
        dsm_loss_backward_torch(*args, rng=rng, **kw)
    return grad


@_dsm_loss_rows_backward_op.register_fake
def _(score, seed, inv_sigma_rows, coef_rows, backend, rng, injected_noise, sample_offset=0):
    return torch.empty_like(score, memory_format=torch.contiguous_format)


def _loss_setup_context(ctx, inputs, output):
    score, seed, inv_sigma_rows, weight_rows, backend, rng, injected_noise = inputs[:7]
    ctx.backend, ctx.rng = backend, rng
    ctx.sample_offset = inputs[7] if len(inputs) > 7 else 0
    # The one [B, ...] tensor kept for backward is the score; z is regenerated from the seed.
    # (injected_noise is None except in the test hook.)
    ctx.save_for_backward(score, seed, inv_sigma_rows, weight_rows, injected_noise)


def _loss_backward(ctx, grad_rows):
    score, seed, inv_sigma_rows, weight_rows, injected_noise = ctx.saved_tensors
    grad_s = None
    if ctx.needs_input_grad[0]:
        coef = weight_rows * grad_rows.to(weight_rows.dtype)
        grad_s = torch.ops.fastlangevin.dsm_loss_rows_backward(
            score, seed, inv_sigma_rows, coef, ctx.backend, ctx.rng, injected_noise, ctx.sample_offset
        )
    return grad_s, None, None, None, None, None, None, None


_dsm_loss_rows_op.register_autograd(_loss_backward, setup_context=_loss_setup_context)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    seed: torch.Tensor
    alpha_rows: Optional[torch.Tensor]
    sigma_rows: torch.Tensor
    inv_sigma_rows: torch.Tensor
    weight_rows: torch.Tensor
    sigma_arg: torch.Tensor  # what score_fn receives: [B]
    backend: str
    rng: str
    reduction: str
    sample_offset: int = 0


def _rows_of(scale, batch: int, cdt: torch.dtype, device: torch.device) -> torch.Tensor:
    """A validated Scale as a contiguous ``[batch]`` tensor in the compute dtype."""
    if scale.tensor is None:
        return torch.full((batch,), scale.value, dtype=cdt, device=device)
    return scale.tensor.to(cdt).expand(batch).contiguous()


def _prepare(
    score_fn, x, sigma, alpha, weight, reduction, generator, backend, rng, injected_noise=None, sample_offset=0
) -> _Prepared:
    """Validate every argument (before the generator is touched) and build the ops' inputs."""
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x_tilde, sigma), got {type(score_fn).__name__}")
    check_state("x", x)
    if x.numel() == 0:
        raise ValueError(
            "x must be non-empty (a [B, ...] batch with B ≥ 1 and a non-empty sample shape), "
            f"got shape {tuple(x.shape)}"
        )
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")
    batch, device = x.shape[0], x.device
    cdt = compute_dtype(x.dtype)
    sig = check_scale("sigma", sigma, batch=batch, device=device, allow_zero=False)
    alp = None if alpha is None else check_scale("alpha", alpha, batch=batch, device=device)
    wgt = None if weight is None else check_scale("weight", weight, batch=batch, device=device)
    generator = check_generator(generator, device)
    sample_offset = check_offset("sample_offset", sample_offset)
    chosen = _backend.resolve_backend(device, backend)
    stream = resolve_rng(rng, chosen, device)
    _TRITON_CHOICE[(device, backend, rng)] = chosen == "triton"  # valid (hashable) arguments: the lean path's key
    if injected_noise is not None:
        check_like("noise", injected_noise, x, "x")

    sigma_rows, alpha_rows, inv_sigma_rows, weight_rows, sigma_arg = _scale_rows(sig, alp, wgt, batch, cdt, device)
    if injected_noise is not None:
        seed = torch.zeros(1, dtype=torch.int64, device=device)  # unused: no draw, generator untouched
    else:
        seed = draw_seed(device, generator)
    return _Prepared(
        seed,
        alpha_rows,
        sigma_rows,
        inv_sigma_rows,
        weight_rows,
        sigma_arg,
        chosen,
        stream,
        reduction,
        sample_offset,
    )


def _scale_rows(sig, alp, wgt, batch: int, cdt: torch.dtype, device: torch.device) -> tuple:
    """(σ, α or None, 1/σ, λ) as contiguous ``[batch]`` rows in the compute dtype (λ = σ² unless given), and
    the ``[B]`` sigma the score function receives, from validated Scales."""
    sigma_rows = _rows_of(sig, batch, cdt, device)
    alpha_rows = None if alp is None else _rows_of(alp, batch, cdt, device)
    weight_rows = sigma_rows * sigma_rows if wgt is None else _rows_of(wgt, batch, cdt, device)
    if sig.per_row:
        sigma_arg = sig.tensor  # the caller's own [B] tensor
    elif sig.tensor is not None:
        sigma_arg = sig.tensor.expand(batch)
    else:
        sigma_arg = sigma_rows
    return sigma_rows, alpha_rows, torch.reciprocal(sigma_rows), weight_rows, sigma_arg


_FLOAT_DTYPE_SET = frozenset(FLOAT_DTYPES)


def _check_score(s, x: torch.Tensor) -> torch.Tensor:
    if (
        type(s) is torch.Tensor
        and s.shape == x.shape
        and s.dtype in _FLOAT_DTYPE_SET
        and ((s.is_cpu and x.is_cpu) or s.device == x.device)
    ):
        return s  # the common case in a handful of attribute reads; the checks below name what is wrong
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"score_fn must return a torch.Tensor, got {type(s).__name__}")
    if s.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"score_fn must return a floating tensor (float32, bfloat16, float16, float64), got dtype {s.dtype}"
        )
    if s.shape != x.shape:
        raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {tuple(s.shape)}")
    if s.device != x.device:
        raise ValueError(f"score_fn must return a tensor on x's device {x.device}, got {s.device}")
    return s


def _run(score_fn, x, p: _Prepared, injected_noise=None) -> torch.Tensor:
    x_tilde = torch.ops.fastlangevin.dsm_perturb(
        x, p.seed, p.alpha_rows, p.sigma_rows, p.backend, p.rng, injected_noise, p.sample_offset
    )
    s = _check_score(score_fn(x_tilde, p.sigma_arg), x)
    losses = torch.ops.fastlangevin.dsm_loss_rows(
        s, p.seed, p.inv_sigma_rows, p.weight_rows, p.backend, p.rng, injected_noise, p.sample_offset
    )
    if p.reduction == "mean":
        return losses.mean()
    if p.reduction == "sum":
        return losses.sum()
    return losses


def _plain_call(x: torch.Tensor) -> bool:
    """Plain tensors, no function/dispatch modes: plain autograd code may stand in for the ops."""
    if type(x) is not torch.Tensor:
        return False
    try:
        return not (torch._C._is_torch_function_mode_enabled() or torch._C._len_torch_dispatch_stack() > 0)
    except AttributeError:  # pragma: no cover - private API moved: use the ops
        return False


def _count(r: torch.Tensor) -> torch.Tensor:
    """The batch size as a cached 0-d CPU tensor in r's dtype: dividing by it is bitwise dividing
    by the Python int (ATen casts that to the op's dtype too), at half the cost of wrapping it."""
    return scalar_tensor(float(r.shape[0]), r.dtype)


@functools.lru_cache(maxsize=64)
def _row_shape(batch: int, ndim: int) -> tuple:
    """``(batch, 1, ...)``: a ``[B]`` vector viewed to broadcast over ``ndim``-dim rows."""
    return (batch,) + (1,) * (ndim - 1)


def _as_rows(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """A ``[B]`` vector viewed ``[B, 1, ...]`` to broadcast over ``ndim``-dim rows (2-D, the
    common case: one unsqueeze, without building the shape)."""
    return v.unsqueeze(1) if ndim == 2 else v.view(_row_shape(v.shape[0], ndim))


class _SavedNoiseLoss(torch.autograd.Function):
    """The reduced loss from ``r = z · (1/σ)`` (drawn once, before the score), completed in place
    into the residual ``r = s + z/σ`` and kept for backward, where the gradient ``c_i r`` is one
    multiply: the fallback ops' own arithmetic, so their values and gradients bitwise. The
    reduction is taken inside (one graph node fewer); backward scales the incoming gradient as
    autograd's mean / sum backward would (each row's ``g / B``), so bitwise as before."""

    @staticmethod
    def forward(ctx, score, r, weight_rows, how):
        sample_offset, rng, reduction, one_piece = how  # one argument: less for autograd to sort
        _backend.record("dsm_loss", "torch")
        offset = 0 if one_piece else sample_offset * _row_size(r)
        losses = residual_loss_rows_(r, score, weight_rows, offset, rng, one_piece)
        ctx.save_for_backward(r, weight_rows)
        ctx.dtype, ctx.reduction = score.dtype, reduction
        if reduction == "mean":  # ATen's CPU mean is this sum, then div_ by the count (B as a 0-d tensor)
            return losses.sum().div_(_count(r)) if r.is_cpu else losses.mean()
        return losses.sum() if reduction == "sum" else losses

    @staticmethod
    def backward(ctx, grad):
        r, weight_rows = ctx.saved_tensors
        if grad.dtype is not weight_rows.dtype:
            grad = grad.to(weight_rows.dtype)
        if ctx.reduction == "mean":  # autograd's mean backward, g.expand(B) / B, on the one value
            grad = grad / _count(r)
        coef = weight_rows * grad  # [B], or 0-d for a scalar weight and a reduced loss
        _backend.record("dsm_loss_backward", "torch")
        g = r * (coef if coef.dim() == 0 else _as_rows(coef, r.dim()))
        return g if g.dtype is ctx.dtype else g.to(ctx.dtype), None, None, None


try:  # Function.apply's own path when no functorch transform is active, minus its Python wrapper
    _apply_node = torch._C._FunctionBase.__dict__["apply"].__get__(None, _SavedNoiseLoss)
    _unwrap_if_dead = torch._C._functorch.unwrap_if_dead
    _functorch_active = torch._C._are_functorch_transforms_active
except (AttributeError, KeyError):  # pragma: no cover - private API moved: the public apply
    _apply_node = None


def _apply_saved_loss(score, *rest):
    """``_SavedNoiseLoss.apply(score, *rest)``. The public ``apply`` wraps the C++ one in Python
    (argument binding, a scan for dead functorch wrappers: ~10 µs, a twentieth of a small
    call); with no functorch transform active it does exactly this."""
    if _apply_node is None or _functorch_active():
        return _SavedNoiseLoss.apply(score, *rest)
    return _apply_node(_unwrap_if_dead(score), *rest)  # r and the weights are this module's own


def _saved_loss(
    score_fn, x, z, owns_z, sigma, inv_sigma, alpha, weight, sigma_arg, reduction, sample_offset, rng, one_piece
):
    """The loss with z given once (shaped like x, compute dtype), for plain tensors on the
    fallback: x̃ = α x + σ z in plain autograd ops (the perturb op's arithmetic: σz + αx in the
    compute dtype), z·(1/σ) from the same z, the loss through :class:`_SavedNoiseLoss`.

    ``sigma``, ``inv_sigma``, ``alpha`` (None: 1), ``weight``: ``[B, 1, ...]`` row views or 0-d
    tensors in the compute dtype (a scalar multiply is bitwise the broadcast one). ``z`` is read
    before ``score_fn`` runs and not kept: it may be a reused buffer, or (``owns_z``) a fresh
    tensor whose storage then holds the residual. ``one_piece``: x is one
    piece of the fallback's walk (see :func:`fastlangevin.fallback.dsm.residual_loss_rows_`)."""
    _backend.record("dsm_perturb", "torch")
    t = z * sigma
    r = z.mul_(inv_sigma) if owns_z else z * inv_sigma  # the residual's first term, completed in the loss
    xs = x if x.dtype is z.dtype else x.to(z.dtype)
    if alpha is not None:
        xs = xs * alpha
    x_tilde = t + xs if xs.requires_grad and torch.is_grad_enabled() else t.add_(xs)
    if x_tilde.dtype is not x.dtype:
        x_tilde = x_tilde.to(x.dtype)
    s = _check_score(score_fn(x_tilde, sigma_arg), x)
    return _apply_saved_loss(s, r, weight, (sample_offset, rng, reduction, one_piece))


def _run_saved(score_fn, x, p: _Prepared) -> torch.Tensor:
    """:func:`_run` with z drawn once (:func:`_saved_loss`)."""
    z = draw_noise(p.seed, p.sample_offset * _row_size(x), x.numel(), rng=p.rng, device=x.device)
    cdt, ndim = p.sigma_rows.dtype, x.dim()
    rows = [None if v is None else _rows_view(v, ndim) for v in (p.sigma_rows, p.inv_sigma_rows, p.alpha_rows)]
    return _saved_loss(
        score_fn, x, z.view(x.shape).to(cdt), True, *rows, p.weight_rows, p.sigma_arg, p.reduction, p.sample_offset,
        p.rng, False,
    )  # fmt: skip


_CPU = torch.device("cpu")
_NOISE_VIEWS: dict = {}  # (x.shape, head) -> (fill view, noise view shaped like x) of this thread's buffer


#: Python-float scales the straight path takes: their fp32 roundings, σ², 1/σ stay finite and
#: normal in fp32 (numpy would warn on overflow); others take the general path.
_SCALAR_MAX = 1e18


def _fp32_scalar(v: float) -> float:
    """``v`` rounded to float32 (a Python float holding a float32 value)."""
    return float(np.float32(v))


#: (σ, α, λ) Python floats -> (σ as fp32 float, then 0-d fp32 tensors σ, 1/σ, λ, α or None) of the straight
#: path (scalar_tensor's, kept: never written); α = 0 or λ = 0 not cached (0.0 and -0.0 are equal keys), nor
#: what inference mode built
_FLOAT_SCALARS: dict = {}


def _float_scalars(sigma: float, alpha, weight) -> tuple:
    """The straight path's fp32 scalars of float σ (α, λ: None or floats), cached: σ and 1/σ, σ² unless
    λ is given, rounded to fp32 as the general path's ``[B]`` rows are."""
    key = (sigma, alpha, weight)
    got = _FLOAT_SCALARS.get(key)
    if got is None:
        s32 = _fp32_scalar(sigma)
        inv = scalar_tensor(_fp32_scalar(np.float32(1.0) / np.float32(s32)), torch.float32)
        if weight is not None:
            w = scalar_tensor(_fp32_scalar(weight), torch.float32)
        else:
            w = scalar_tensor(_fp32_scalar(np.float32(s32) * np.float32(s32)), torch.float32)
        a = None if alpha is None else scalar_tensor(_fp32_scalar(alpha), torch.float32)
        got = (s32, scalar_tensor(s32, torch.float32), inv, w, a)
        if alpha != 0.0 and weight != 0.0 and not torch.is_inference_mode_enabled():
            if len(_FLOAT_SCALARS) >= 256:
                _FLOAT_SCALARS.clear()
            _FLOAT_SCALARS[key] = got
    return got


def _small_cpu_saved(score_fn, x, sigma, alpha, weight, reduction, generator, backend, rng, sample_offset):
    """The default CPU loss for the common small case, straight through: the loss, or None when
    the call is not that case (the general path then validates and runs it, raising where it must).

    The case: a plain fp32 contiguous CPU ``x`` that fits one noise chunk and one fallback piece,
    sigma a positive finite float or fp32 ``[B]`` CPU tensor, alpha None or a float, weight None
    or a float, the fallback with the torch stream, nothing intercepting. The general path's
    operations on the same values (the scalars rounded to fp32 as its ``[B]`` rows would be, the
    same generator draw), so bitwise its result; it skips the machinery around them (the seed
    drawn as an int, z read from this thread's noise buffer, no ``[B]`` rows for scalars)."""
    if (
        type(x) is not torch.Tensor
        or x.dtype is not torch.float32
        or not x.is_cpu
        or not callable(score_fn)
        or not (alpha is None or (type(alpha) is float and 0.0 <= alpha <= _SCALAR_MAX))
        or not (weight is None or (type(weight) is float and 0.0 <= weight <= _SCALAR_MAX))
        or reduction not in REDUCTIONS
        or type(sample_offset) is not int
        or sample_offset < 0
        or (generator is not None and (type(generator) is not torch.Generator or generator.device != _CPU))
        or x.dim() == 0
        or not x.is_contiguous()
    ):
        return None
    if not _backend.can_call_directly():  # tracing (torch.compile), modes: the ops, before any tensor op
        return None
    n, batch = x.numel(), x.shape[0]
    row_size = n // batch if batch else 0
    start = sample_offset * row_size
    chunk = start // TORCH_RNG_CHUNK
    if n == 0 or n > CPU_PIECE or (start + n - 1) // TORCH_RNG_CHUNK != chunk:
        return None
    if type(sigma) is float:
        if not (1.0 / _SCALAR_MAX <= sigma <= _SCALAR_MAX):
            return None
        s32, sig, inv, w, a = _float_scalars(sigma, alpha, weight)
        sigma_arg = None
    elif (
        type(sigma) is torch.Tensor
        and sigma.dtype is torch.float32
        and sigma.is_cpu
        and sigma.shape == (batch,)
        and sigma.is_contiguous()
        and not (sigma.requires_grad and torch.is_grad_enabled())
    ):
        lo, hi = torch.aminmax(sigma)  # NaN propagates: refused below like the general check
        if not (lo.item() > 0.0 and hi.item() < math.inf):
            return None
        sig, sigma_arg = _as_rows(sigma, x.dim()), sigma
        inv, w = torch.reciprocal(sig), None
    else:
        return None
    if _backend.resolve_backend(_CPU, backend) != "torch":
        return None
    if (rng if rng is not None else _backend.env_setting(RNG_ENV_VAR)) not in (None, "torch"):
        return None
    # validated: draw
    seed = draw_seed_value(generator)
    gen, buf = cpu_scratch()
    head = start - chunk * TORCH_RNG_CHUNK
    key = (x.shape, head)
    views = _NOISE_VIEWS.get(key)
    if views is None or views[0].data_ptr() != buf.data_ptr():
        if len(_NOISE_VIEWS) > 256:
            _NOISE_VIEWS.clear()
        fill = min(buf.numel(), max(16, -(-(head + n) // 16) * 16))
        views = _NOISE_VIEWS[key] = (buf[:fill], buf[head : head + n].view(x.shape))
    gen.manual_seed(chunk_seed(seed, chunk))
    views[0].normal_(generator=gen)
    if sigma_arg is None:
        sigma_arg = torch.full((batch,), s32, dtype=torch.float32)
    elif weight is not None:
        w = scalar_tensor(_fp32_scalar(weight), torch.float32)
    else:
        w = sigma * sigma
    if type(sigma) is not float:
        a = None if alpha is None else scalar_tensor(_fp32_scalar(alpha), torch.float32)
    return _saved_loss(score_fn, x, views[1], False, sig, inv, a, w, sigma_arg, reduction, sample_offset, "torch", True)


# ---------------------------------------------------------------------------------------
# The Triton path without the dispatcher (plain tensors, nothing intercepting)
# ---------------------------------------------------------------------------------------
_TRITON_LAUNCHERS: list = []
_TENSOR, _FP32, _FP64, _INF = torch.Tensor, torch.float32, torch.float64, math.inf

#: (device, backend, rng) arguments -> whether dsm_loss resolves them to the Triton backend; filled by
#: :func:`_prepare` once they resolved without error (so the lean path never has to raise about them).
_TRITON_CHOICE = _backend.derived_cache()


def _dsm_launchers():
    """``kernels.dsm`` (importing it imports Triton), imported on first use."""
    if not _TRITON_LAUNCHERS:
        from ..kernels import dsm as kd

        _TRITON_LAUNCHERS.append(kd)
    return _TRITON_LAUNCHERS[0]


class _Geometry:
    """One lean-path x's launch geometry, a function of (shape, dtype, device, sample_offset) alone: the row
    length and element offset, the compute dtype, the device type, the perturb plans (without and with α),
    each score dtype's (loss plan, backward plan) (``kernels.dsm.loss_plans``) and the batch as a cached 0-d
    CPU tensor (:func:`_count`). Built once per key (:func:`_geometry`), read-only after: a training loop
    looks its plans up with one dict probe a call instead of per-launch keyed lookups. Hashed by identity
    (the per-thread loss buffers are keyed by it)."""

    __slots__ = ("rs", "offset", "cdt", "kind", "perturb", "loss", "count")

    def __init__(self, x: torch.Tensor, sample_offset: int):
        kd = _dsm_launchers()
        batch, n = x.shape[0], x.numel()
        rs = n // batch
        offset = sample_offset * rs
        fp64, cpu, half = x.dtype is _FP64, x.is_cpu, x.element_size() == 2
        self.rs, self.offset, self.cdt = rs, offset, _FP64 if fp64 else _FP32
        self.kind = _backend.device_type(x.device)
        self.perturb = tuple(kd.perturb_plan(n, rs, offset, half, a, fp64, cpu) for a in (False, True))
        self.loss = {dt: kd.loss_plans(batch, rs, offset, dt.itemsize == 2, fp64, cpu) for dt in FLOAT_DTYPES}
        with torch.inference_mode(False):  # kept across calls (see _backend.KEPT)
            self.count = scalar_tensor(float(batch), self.cdt)


#: (x.shape, x.dtype, x.device, sample_offset) -> _Geometry of the lean path
_GEOMETRIES: dict = {}


def _geometry(x: torch.Tensor, sample_offset: int) -> Optional[_Geometry]:
    """The lean path's :class:`_Geometry` of ``x`` (a plain tensor) at ``sample_offset`` (an int), or None
    when x is not a non-empty float batch or the offset is negative (the general path then refuses it)."""
    key = (x.shape, x.dtype, x.device, sample_offset)
    geo = _GEOMETRIES.get(key)
    if geo is None:
        if x.dtype not in _FLOAT_DTYPE_SET or not x.dim() or not x.numel() or sample_offset < 0:
            return None
        if len(_GEOMETRIES) >= 256:  # shapes come and go (the per-thread buffers keep what they use)
            _GEOMETRIES.clear()
        geo = _GEOMETRIES[key] = _Geometry(x, sample_offset)
    return geo


def _perturb_body(x, seed, alpha_rows, sigma_rows, geo: _Geometry):
    """``fastlangevin::dsm_perturb``'s body on the Triton path: x̃ = α x + σ z, z drawn in the kernel (the
    launchers take contiguous tensors of any shape: no flat views), the launch from ``geo``'s plan."""
    if _backend._RECORDERS:
        _backend.record("dsm_perturb", "triton")
    xc = x.contiguous()
    out = torch.empty_like(xc)
    _TRITON_LAUNCHERS[0].launch_perturb_planned(
        geo.perturb[alpha_rows is not None], xc, out, seed, alpha_rows, sigma_rows
    )
    return out


class _LeanPerturb(torch.autograd.Function):
    """``fastlangevin::dsm_perturb`` on the Triton path as one autograd node: the op's body and its
    backward (∂x̃/∂x = α), without the custom-op dispatcher (~100 µs a call on the host). Only
    applied when x needs a gradient; otherwise the body runs alone (nothing to record). ``pack``:
    (seed, α rows or None, σ rows, geometry), one argument (autograd sorts only x)."""

    @staticmethod
    def forward(ctx, x, pack):
        seed, alpha_rows, sigma_rows, geo = pack
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(alpha_rows)  # (it may view the caller's α: saved, so an in-place change is caught)
        return _perturb_body(x, seed, alpha_rows, sigma_rows, geo)

    @staticmethod
    def backward(ctx, grad):
        return _perturb_backward(ctx, grad)[0], None


#: this thread's reused loss buffers: .d = {(geometry, score dtype[, CUDA stream]): (partial, out)}
_LOSS_SCRATCH = threading.local()


def _loss_buffers(geo: _Geometry, score_dtype, like: torch.Tensor, n_chunks: int, reduced: bool) -> tuple:
    """(partial, out) of one loss launch: the ``[B · n_chunks]`` partial sums and the ``[B]`` losses in
    ``like``'s dtype and device.

    The buffers are read before the call returns when the loss is reduced (mean, sum), partial always: they
    then come from this thread's, reused per (geometry, score dtype, CUDA stream) (the next launch into them
    is queued on the same stream, after this call's reads; CPU calls are synchronous). An unreduced loss
    returns ``out``: a new one. Fresh ones during CUDA-graph capture (the graph owns its memory) and in
    inference mode (its tensors could not be used outside it as others are)."""
    kind = geo.kind
    if kind == "cpu":
        key = (geo, score_dtype)
    elif kind == "cuda" and not torch.cuda.is_current_stream_capturing():
        key = (geo, score_dtype, torch.cuda.current_stream(like.device))
    else:
        key = None
    rows = like.shape[0]
    if key is None or torch.is_inference_mode_enabled():
        return like.new_empty(rows * n_chunks), like.new_empty(rows)
    bufs = getattr(_LOSS_SCRATCH, "d", None)
    if bufs is None:
        bufs = _LOSS_SCRATCH.d = {}
    state = bufs.get(key)
    if state is None:
        if len(bufs) >= 64:  # shapes and streams come and go
            bufs.clear()
        state = bufs[key] = (like.new_empty(rows * n_chunks), like.new_empty(rows))
    return state if reduced else (state[0], like.new_empty(rows))


def _loss_body(ctx, score, pack):
    """``fastlangevin::dsm_loss_rows``'s body on the Triton path and the reduction; with a ``ctx``, what
    backward needs rides on it (the score saved, and the caller's own λ tensor when λ views one; this
    module's own seed and rows and the geometry as one attribute). ``pack``: (seed, 1/σ rows, λ rows,
    geometry, reduction, whether λ views the caller's tensor)."""
    seed, inv_sigma_rows, weight_rows, geo, reduction, user_weight = pack
    if _backend._RECORDERS:
        _backend.record("dsm_loss", "triton")
    plan = geo.loss[score.dtype][0]
    partial, out = _loss_buffers(geo, score.dtype, inv_sigma_rows, plan[0], reduction != "none")
    _TRITON_LAUNCHERS[0].launch_loss_planned(
        plan, score.contiguous(), out, partial, seed, inv_sigma_rows, weight_rows, geo.rs, geo.offset
    )
    if ctx is not None:
        if user_weight:  # saved like the op saves it: backward refuses a λ changed in place since
            ctx.save_for_backward(score, weight_rows)
        else:
            ctx.save_for_backward(score)
        ctx.rows = pack  # (no saved-variable packing and unpacking for this module's own tensors)
    if reduction == "mean":
        return out.mean()
    return out.sum() if reduction == "sum" else out


def _loss_backward_body(ctx, grad):
    """∂L/∂s = c_i (s_ij + z_ij / σ_i) with c = λ · (each row's share of ``grad``): autograd's mean / sum
    backward on the one value (``g.expand(B) / B``, ``g.expand(B)``: bitwise the same rows), then the
    backward op's body (z regenerated from the seed), launched from the geometry's plan."""
    seed, inv_sigma_rows, weight_rows, geo, reduction, user_weight = ctx.rows
    if user_weight:
        score, weight_rows = ctx.saved_tensors
    else:
        (score,) = ctx.saved_tensors
    if grad.dtype is not weight_rows.dtype:
        grad = grad.to(weight_rows.dtype)
    if reduction == "mean":  # each row's g / B, computed once (B as a cached 0-d CPU tensor: bitwise / B)
        grad = grad / geo.count
    coef = weight_rows * grad  # a 0-d grad broadcasts: bitwise the rows of g.expand(B) (/ B)
    if _backend._RECORDERS:
        _backend.record("dsm_loss_backward", "triton")
    sc = score.contiguous()
    g = torch.empty_like(sc)
    _TRITON_LAUNCHERS[0].launch_backward_planned(
        geo.loss[sc.dtype][1], sc, g, seed, inv_sigma_rows, coef, geo.rs, geo.offset
    )
    return g, None


# the backward kernel has no derivative: under create_graph a second backward raises, as the op's did
_loss_backward_once = once_differentiable(_loss_backward_body)


class _LeanLoss(torch.autograd.Function):
    """``fastlangevin::dsm_loss_rows`` and its reduction as one autograd node on the Triton path (see
    :func:`_loss_body`, :func:`_loss_backward_body`): ``apply(score, pack)``, one argument besides the
    score (autograd sorts one tensor in, one gradient out)."""

    @staticmethod
    def forward(ctx, score, pack):
        return _loss_body(ctx, score, pack)

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph=True: once_differentiable's error node for a second backward
            return _loss_backward_once(ctx, grad)
        return _loss_backward_body(ctx, grad)  # (once_differentiable would only add a no_grad block here)


def _lean_run(score_fn, x, seed, alpha_rows, sigma_rows, inv_sigma_rows, weight_rows, sigma_arg, how):
    """:func:`_run` on the Triton path for plain tensors: the same kernels, seed and arithmetic, each op
    one autograd node (perturb only when x needs a gradient), no dispatcher. ``how``: (geometry,
    reduction, whether λ views the caller's tensor); ``sigma_arg`` None: a copy of the σ rows (cached rows)."""
    geo = how[0]
    if torch.is_grad_enabled() and x.requires_grad:
        x_tilde = _apply(_LeanPerturb, x, (seed, alpha_rows, sigma_rows, geo))
    else:  # nothing to differentiate: the body alone (its inputs need no gradient, so nothing is recorded)
        x_tilde = _perturb_body(x, seed, alpha_rows, sigma_rows, geo)
    if sigma_arg is None:
        # the score's own σ, never the cache's: a copy of the rows (bitwise torch.full of the value), made once
        # the perturb kernel is queued (it needs nothing of it: the launch goes out a copy's host time sooner)
        sigma_arg = sigma_rows.clone()
    s = _check_score(score_fn(x_tilde, sigma_arg), x)
    pack = (seed, inv_sigma_rows, weight_rows, geo, how[1], how[2])
    if not (torch.is_grad_enabled() and s.requires_grad):
        return _loss_body(None, s, pack)
    if _lean_loss_apply is None or _functorch_active():
        return _LeanLoss.apply(s, pack)
    return _lean_loss_apply(_unwrap_if_dead(s), pack)  # the rest: our own


def _run_lean_triton(score_fn, x, p: _Prepared) -> torch.Tensor:
    """:func:`_lean_run` with a :class:`_Prepared` call (its x validated: it has a geometry)."""
    return _lean_run(
        score_fn, x, p.seed, p.alpha_rows, p.sigma_rows, p.inv_sigma_rows, p.weight_rows, p.sigma_arg,
        (_geometry(x, p.sample_offset), p.reduction, True),
    )  # fmt: skip


#: (σ, α, λ: Python floats or None; compute dtype, device, batch[, CUDA stream]) -> (σ, α, 1/σ, λ) rows built
#: by :func:`_scale_rows`. Never written after creation: no op writes its row inputs, and the score function
#: gets a fresh σ tensor, never these. Never evicted (a CUDA graph captured with them keeps reading their
#: memory): at most _MAX_SCALAR_ROWS keys, of batches up to _SCALAR_ROWS_BATCH; others are built per call.
_SCALAR_ROWS: dict = {}
_MAX_SCALAR_ROWS = 64
_SCALAR_ROWS_BATCH = 4096


def _scalar_rows(sig, alp, wgt, batch: int, cdt: torch.dtype, device: torch.device, where: tuple) -> tuple:
    """:func:`_scale_rows`' first four for Python-float scales (Scales without tensors), cached
    (:func:`_float_rows`)."""
    return _float_rows(sig.value, None if alp is None else alp.value, None if wgt is None else wgt.value,
                       batch, cdt, device, where)  # fmt: skip


def _where(device: torch.device) -> tuple:
    """(device type, current CUDA stream or None, capturing a CUDA graph?): asked once per call."""
    kind = _backend.device_type(device)
    if kind == "cuda":
        return kind, torch.cuda.current_stream(device), torch.cuda.is_current_stream_capturing()
    return kind, None, False


def _float_rows(sigma: float, alpha, weight, batch: int, cdt: torch.dtype, device: torch.device, where) -> tuple:
    """(σ, α or None, 1/σ, λ) rows of validated Python-float scales (α, λ: None or a float), cached.

    On CUDA the key holds the current stream: the rows' fill kernels were queued on it, so every later
    kernel on that stream reads them filled; another stream builds its own. Nothing is cached while a
    CUDA graph is being captured (the graph owns the tensors it fills) or in inference mode (its tensors
    could not be saved for backward later). α = 0 or λ = 0 is not cached (0.0 and -0.0 are equal keys)."""
    kind, stream, capturing = where  # (see _where)
    if kind == "cpu":
        key = (sigma, alpha, weight, cdt, device, batch)
    elif kind == "cuda":
        key = (sigma, alpha, weight, cdt, device, batch, stream)
    else:
        key = None
    rows = _SCALAR_ROWS.get(key)
    if rows is None:
        sig, alp, wgt = Scale(sigma), None if alpha is None else Scale(alpha), None if weight is None else Scale(weight)
        rows = _scale_rows(sig, alp, wgt, batch, cdt, device)[:4]
        if (
            key is not None
            and len(_SCALAR_ROWS) < _MAX_SCALAR_ROWS
            and batch <= _SCALAR_ROWS_BATCH
            and alpha != 0.0
            and weight != 0.0
            and not torch.is_inference_mode_enabled()
            and not capturing
        ):
            _SCALAR_ROWS[key] = rows
    return rows


#: this thread's seed buffers: .d = {device or CUDA stream: [int64 [1] tensors]}
_LEAN_SEEDS = threading.local()
#: seed buffers kept per device (or stream): a loop keeps one loss (and its graph) alive at the next call
_SEED_POOL = 4


def _lean_seed(device: torch.device, generator, where: tuple) -> torch.Tensor:
    """:func:`draw_seed`'s draw (the same value and generator advance: ``torch.randint`` is ``empty`` then
    ``random_``, see :func:`fastlangevin._rng.draw_seed_reused`) into one of this thread's int64 ``[1]``
    buffers for (device, CUDA stream) that no earlier call's graph still holds, saving the factory.

    A lean call's seed leaves it only in its loss node's ``ctx.rows`` (Python references, the pool's own
    aside; never a saved variable, never handed to the score): a buffer whose reference count is the
    pool's alone is read by no live graph. Earlier reads of it were queued on the same stream (the key)
    before this draw; CPU calls are synchronous. A fresh tensor during CUDA-graph capture, or when every
    pooled buffer is held."""
    kind, stream, capturing = where  # (see _where)
    if kind == "cpu":
        key = device
    elif kind == "cuda" and not capturing:
        key = stream
    else:
        return draw_seed(device, generator)
    pools = getattr(_LEAN_SEEDS, "d", None)
    if pools is None:
        pools = _LEAN_SEEDS.d = {}
    pool = pools.get(key)
    if pool is None:
        if len(pools) >= 64:  # streams come and go
            pools.clear()
        pool = pools[key] = []
    for buf in pool:
        if _refcount(buf) == _FREE_REFS:  # the list's and this loop's, and getrefcount's argument
            break
    else:
        if len(pool) >= _SEED_POOL:
            return draw_seed(device, generator)
        with torch.inference_mode(False):  # a normal tensor: drawn into in and outside inference mode alike
            buf = torch.empty(1, dtype=torch.int64, device=device)
        pool.append(buf)
    if generator is None:
        return buf.random_(0, SEED_HIGH)
    return buf.random_(0, SEED_HIGH, generator=generator)


_refcount = sys.getrefcount
_FREE_REFS = 3


def _lean_triton_loss(score_fn, x, sigma, alpha, weight, reduction, generator, backend, rng, sample_offset):
    """:func:`dsm_loss` on the Triton path (noise regenerated) for plain tensors with nothing intercepting:
    :func:`_prepare`'s checks (same order, same messages) and seed draw, then :func:`_lean_run`, without
    ``_Prepared``; the rows of Python-float scales cached (:func:`_float_rows`), the seed drawn into a
    pooled buffer (:func:`_lean_seed`). Returns the loss, or None when the call is not that case (the
    general path then runs it, raising where it must). Nothing is drawn before every check has passed; the
    same seed, rows and launches: bitwise the general path."""
    if (
        type(x) is not _TENSOR
        or _is_compiling()
        or _function_mode_on()
        or _dispatch_modes()
        or type(sample_offset) is not int  # (before the key: True and 1.0 are equal keys to 1)
        or type(reduction) is not str
    ):
        return None
    device = x.device
    try:
        if not _TRITON_CHOICE[(device, backend, rng)]:  # resolved to Triton by an earlier call
            return None
    except (KeyError, TypeError):
        return None
    if reduction not in REDUCTIONS or not callable(score_fn):
        return None
    geo = _geometry(x, sample_offset)  # (None: not a non-empty float batch, or a negative offset)
    if geo is None:
        return None
    batch, cdt = x.shape[0], geo.cdt
    where = _where(device)  # (the rows and the seed are used first on this call's stream)
    if (
        type(sigma) is float
        and 0.0 < sigma < _INF
        and (alpha is None or (type(alpha) is float and 0.0 <= alpha < _INF))
        and (weight is None or (type(weight) is float and 0.0 <= weight < _INF))
    ):  # valid Python floats (what check_scale accepts of them): no Scales needed
        if generator is not None:
            check_generator(generator, device)
        rows = _float_rows(sigma, alpha, weight, batch, cdt, device, where)
        sigma_rows, alpha_rows, inv_sigma_rows, weight_rows = rows
        sigma_arg, user_weight = None, False  # (None: the score's own copy of the cached rows, see _lean_run)
    else:
        sig = check_scale("sigma", sigma, batch=batch, device=device, allow_zero=False)
        alp = None if alpha is None else check_scale("alpha", alpha, batch=batch, device=device)
        wgt = None if weight is None else check_scale("weight", weight, batch=batch, device=device)
        if generator is not None:
            check_generator(generator, device)
        user_weight = wgt is not None and wgt.tensor is not None
        if sig.tensor is None and (alp is None or alp.tensor is None) and not user_weight:
            sigma_rows, alpha_rows, inv_sigma_rows, weight_rows = _scalar_rows(sig, alp, wgt, batch, cdt, device, where)
            sigma_arg = None
        else:
            sigma_rows, alpha_rows, inv_sigma_rows, weight_rows, sigma_arg = _scale_rows(
                sig, alp, wgt, batch, cdt, device
            )
    seed = _lean_seed(device, generator, where)  # validated: draw
    return _lean_run(
        score_fn, x, seed, alpha_rows, sigma_rows, inv_sigma_rows, weight_rows, sigma_arg,
        (geo, reduction, user_weight),
    )  # fmt: skip


_APPLY_NODES: dict = {}


def _apply(fn_cls, *args):
    """``fn_cls.apply(*args)`` as :func:`_apply_saved_loss` does it: with no functorch transform active,
    the C++ apply after the public wrapper's one step (unwrapping dead functorch wrappers), without
    its Python argument binding."""
    if _apply_node is None or _functorch_active():
        return fn_cls.apply(*args)
    node = _APPLY_NODES.get(fn_cls)
    if node is None:
        node = _APPLY_NODES[fn_cls] = torch._C._FunctionBase.__dict__["apply"].__get__(None, fn_cls)
    return node(*[_unwrap_if_dead(a) if isinstance(a, torch.Tensor) else a for a in args])


_lean_loss_apply = None if _apply_node is None else torch._C._FunctionBase.__dict__["apply"].__get__(None, _LeanLoss)


def dsm_loss(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma,
    *,
    alpha=None,
    weight=None,
    reduction: str = "mean",
    generator: Optional[torch.Generator] = None,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
    save_noise: Optional[bool] = None,
) -> torch.Tensor:
    """Denoising score-matching loss with fused kernels.

        x̃   = alpha · x + sigma · z,          z ~ N(0, I) (fresh per call)
        s    = score_fn(x̃, sigma_b)            sigma_b: the per-sample sigma, a [B] tensor
        ℓ_i  = ½ · λ_i · Σ_j (s_ij + z_ij / sigma_i)²     (sum over all non-batch dims)

    Mappings to published losses (both checked in ``tests/test_dsm.py``):

    * NCSN's annealed DSM loss (Song & Ermon 2019, ``anneal_power = 2``): per-sample levels
      ``sigma = sigmas[idx]`` (see :func:`fastlangevin.sample_noise_levels`), ``alpha=None``,
      ``weight=None`` (λ = σ², the default) and ``reduction="mean"``.
    * Score SDE's loss with likelihood weighting (Song et al. 2021, sum over dims):
      ``alpha = m(t)`` (the SDE's mean scale: 1 for VE), ``sigma = std(t)``,
      ``weight = g(t)²`` (the squared diffusion coefficient: β(t) for VP,
      ``σ(t)² · 2 log(σ_max/σ_min)`` for VE), ``reduction="mean"``. Without likelihood
      weighting, score SDE's loss is ``weight=None`` (λ = std², the NCSN weighting).

    Args:
        score_fn: ``score_fn(x_tilde, sigma_b) -> s``; ``s`` must have x's shape and device and a
            floating dtype (it may differ from x's, e.g. bf16 under autocast; math is fp32).
            ``sigma_b`` is the caller's ``[B]`` sigma tensor when one was passed, else a ``[B]``
            tensor (fp32; fp64 for float64 x) holding the scalar.
        x: clean data ``[B, ...]`` (float32 / bfloat16 / float16 / float64). Gradients flow to it
            (∂x̃/∂x = alpha) when it requires grad.
        sigma: noise level σ > 0: float, 0-d tensor or per-sample ``[B]`` tensor (a constant).
        alpha: signal scale α ≥ 0 (same forms); None → 1.
        weight: per-sample λ ≥ 0 (``[B]`` tensor, 0-d tensor or float); None → σ².
        reduction: "mean" over the batch, "sum", or "none" for the ``[B]`` per-sample losses.
        generator: torch generator (on x's device type) the noise seed is drawn from.
        backend: "triton", "torch" or None (→ ``FASTLANGEVIN_BACKEND``, else auto).
        rng: fallback noise stream, "torch" (CPU default, fast) or "philox" (the kernels').
        save_noise: how backward gets z. False: the memory-saving mode — z is never stored,
            the ops regenerate it from the seed in every pass (forward and backward) and the
            loss keeps only the score. Its cost on CPU, fwd+bwd time over the default's (1
            thread, loaded 2-core machine, medians of interleaved per-round ratios, 3 runs):
            3.3x at (256, 2) with a linear score (the custom-op dispatcher per op), 1.9-2.1x
            at (128, 3·64·64) with a trivial score (a second noise generation, the residual
            built twice). True: z drawn once per forward from the same stream (identical
            values, so bitwise the same losses and gradients). For plain CPU tensors the loss
            then runs as plain tensor code under one autograd node and keeps the residual
            ``s + z/σ`` (one compute-dtype tensor shaped like x, instead of the score); under
            tensor subclasses or modes the ops read the drawn z, kept beside the score. None
            (default): True for the PyTorch fallback on CPU (memory is cheap there and it is
            the fast mode), False elsewhere (on CUDA the noise stays regenerated). Under
            ``torch.compile`` the regenerating ops are used.
        sample_offset: global index of ``x[0]``: z is keyed by the global sample index, so a shard
            ``x[i:j]`` with ``sample_offset=i`` (and the same generator state) draws rows ``i:j``
            of the whole batch's noise. Data-parallel training gives each rank its shard's start
            (see :mod:`fastlangevin.distributed`): ranks' noise is distinct and reproducible.

    Returns:
        the loss in fp32 (fp64 for float64 x): a scalar, or ``[B]`` for ``reduction="none"``.
        Differentiable with respect to ``x`` and everything ``score_fn`` depends on. The
        backward pass keeps one ``[B, ...]`` tensor: the score, z regenerated from its seed
        (``save_noise=False``), or the residual (the CPU default).

    Values of sigma/alpha/weight tensors on an accelerator are not inspected (no host sync);
    CPU tensors and Python numbers are. Under ``torch.compile(fullgraph=True)`` leave
    ``generator=None`` (seed with ``torch.manual_seed``): Dynamo cannot trace a generator object.
    """
    if save_noise is not None and not isinstance(save_noise, bool):
        raise TypeError(f"save_noise must be True, False or None, got {save_noise!r}")
    if save_noise is not False and backend != "triton":  # (it refuses "triton" anyway, after a dozen checks)
        loss = _small_cpu_saved(score_fn, x, sigma, alpha, weight, reduction, generator, backend, rng, sample_offset)
        if loss is not None:
            return loss
    if save_noise is not True:
        loss = _lean_triton_loss(score_fn, x, sigma, alpha, weight, reduction, generator, backend, rng, sample_offset)
        if loss is not None:
            return loss
    p = _prepare(score_fn, x, sigma, alpha, weight, reduction, generator, backend, rng, sample_offset=sample_offset)
    if save_noise is None:
        save_noise = p.backend == "torch" and _backend.device_type(x.device) == "cpu"
    if not save_noise or torch.compiler.is_compiling():
        if p.backend == "triton" and not torch.compiler.is_compiling() and _plain_call(x):
            return _run_lean_triton(score_fn, x, p)
        return _run(score_fn, x, p)
    if p.backend == "torch" and _plain_call(x):
        return _run_saved(score_fn, x, p)
    z = draw_noise(p.seed, p.sample_offset * _row_size(x), x.numel(), rng=p.rng, device=x.device).view(x.shape)
    return _run(score_fn, x, p, injected_noise=z)


def dsm_loss_with_noise(
    score_fn, x, sigma, noise, *, alpha=None, weight=None, reduction="mean", backend=None, rng=None
) -> torch.Tensor:
    """Test hook: :func:`dsm_loss` with the noise ``z`` supplied (shaped like x) instead of drawn.

    Every pass (kernels included) reads ``noise`` where it would regenerate z, so the Triton
    kernels, the fallback and a plain formula can be compared exactly.
    """
    p = _prepare(score_fn, x, sigma, alpha, weight, reduction, None, backend, rng, injected_noise=noise)
    return _run(score_fn, x, p, injected_noise=noise.contiguous())

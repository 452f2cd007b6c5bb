"""The score-SDE Langevin corrector as fused ops: SNR step size computed on the device.

    ε = 2 α (r ‖z‖ / ‖s‖)²,     x ← clamp(x + ε s + √(2ε) z),     z ~ N(0, I)

(Song et al. 2020, predictor–corrector sampling; r is the target signal-to-noise ratio, α = 1
for the VE SDE and the discrete ``1 - β_i`` for the VP SDE.)

Two passes over one Philox stream, no z stored and no host sync:

1. ``fastlangevin::corrector_norms`` (custom op; Triton kernel ``fastlangevin.kernels.corrector``
   or the PyTorch fallback ``fastlangevin.fallback.corrector``): per-row ``(‖s‖², ‖z‖²)`` as a
   ``[B, 2]`` tensor, z generated from the call's seed and thrown away;
2. ε on the device, from batch-averaged norms (as in the published code: ``mean_i ‖z_i‖ /
   mean_i ‖s_i‖``, one ε for the batch) or per-sample norms (one ε per row): on the Triton path one
   tiny kernel (``fastlangevin::snr_step``, ``fastlangevin.kernels.snr_step``: one launch instead of
   ~9 small torch ops, each a launch on a GPU; its batch means differ from ``torch.mean``'s in
   summation order only), on the PyTorch fallback :func:`snr_step_size`'s torch ops;
3. the core in-place op ``fastlangevin::langevin_step_`` with the ``[B]`` (or 0-d) ε tensor and
   the *same* seed tensor, which regenerates the same z.

The corrector is a sampler-only op: it is not differentiable (no ``register_autograd``; the
in-place update refuses tensors that require grad) — samplers run it under ``torch.no_grad()``.

Norm choice: batch-averaged norms (default) make ε a property of the whole batch, so a sample's
trajectory depends on the other samples (not batch-invariant). A batch sharded across
processes gets the whole batch's ε through ``gather_norms``: each shard's ``[b, 2]`` per-row
norms are all-gathered into the batch's ``[B, 2]`` before :func:`snr_step_size`, so the means
are the ones one process computes on the whole batch (see :mod:`fastlangevin.distributed`).
Per-sample norms are batch-invariant but unstable in low dimension: a row whose ‖s‖ is
near zero gets a huge step (a 2-D Gaussian run came out with ~20x the true variance, against 3%
off with batch-averaged norms). In high dimension ‖z‖/‖s‖ concentrates and both agree.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from .. import _backend, modes
from .._rng import draw_seed, draw_seed_reused
from .._validate import FLOAT_DTYPES, check_clamp, check_generator, check_like, check_offset, check_scale, check_state
from ..fallback.corrector import corrector_norms_torch
from .langevin_step import (
    StepArgs,
    _triton_launcher,
    check_call_options,
    draw_cpu_seed,
    lean_triton_case,
    resolve_rng,
    run_inplace_op,
)

NORM_MODES = ("batch", "per_sample")


# ---------------------------------------------------------------------------------------
# Pass 1: per-row norms (custom op)
# ---------------------------------------------------------------------------------------
def _corrector_norms_impl(
    score: torch.Tensor, seed: torch.Tensor, sample_offset: int, backend: str, rng: str
) -> torch.Tensor:
    if _backend._RECORDERS:
        _backend.record("corrector_norms", backend)
    rows = score.shape[0]
    flat = score.contiguous().view(rows, -1)
    if backend == "triton":
        from ..kernels.corrector import launch_corrector_norms

        out = launch_corrector_norms(flat, seed, sample_offset=sample_offset)
    else:
        out = corrector_norms_torch(flat, seed, sample_offset=sample_offset, rng=rng)
    return out.contiguous()


_corrector_norms_op = torch.library.custom_op("fastlangevin::corrector_norms", mutates_args=())(_corrector_norms_impl)


def _norms(score, seed, sample_offset, backend, rng):
    if _backend.can_call_directly(score, seed):  # skip the dispatcher's per-call overhead
        return _corrector_norms_impl(score, seed, sample_offset, backend, rng)
    return torch.ops.fastlangevin.corrector_norms(score, seed, sample_offset, backend, rng)


@_corrector_norms_op.register_fake
def _(score, seed, sample_offset, backend, rng):
    acc = torch.float64 if score.dtype == torch.float64 else torch.float32
    return score.new_empty((score.shape[0], 2), dtype=acc)


def corrector_norms(
    score: torch.Tensor,
    seed: torch.Tensor,
    *,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
) -> torch.Tensor:
    """Per-row squared norms ``[B, 2]`` = ``(‖s_i‖², ‖z_i‖²)``, z the noise of ``seed``.

    Args:
        score: ``[B, ...]`` float tensor.
        seed: int64 ``[1]`` tensor on score's device (from ``fastlangevin._rng.draw_seed``); the
            same seed given to the update regenerates the same z.
        backend, rng, sample_offset: as in :func:`fastlangevin.langevin_step`.

    Returns:
        float32 ``[B, 2]`` (float64 for float64 scores), deterministic (no atomics).
    """
    check_state("score", score)
    if not isinstance(seed, torch.Tensor) or seed.dtype != torch.int64 or seed.numel() != 1:
        raise TypeError("seed must be an int64 tensor with one element (see fastlangevin._rng.draw_seed)")
    if seed.device != score.device:
        raise ValueError(f"seed must be on score's device {score.device}, got {seed.device}")
    sample_offset = check_offset("sample_offset", sample_offset)
    chosen = _backend.resolve_backend(score.device, backend)
    stream = resolve_rng(rng, chosen, score.device)
    return _norms(score, seed, sample_offset, chosen, stream)


# ---------------------------------------------------------------------------------------
# Step size on the device
# ---------------------------------------------------------------------------------------
def snr_step_size(norms: torch.Tensor, snr, alpha=1.0, *, norm: str = "batch") -> torch.Tensor:
    """ε = 2 α (r ‖z‖ / ‖s‖)² from ``[B, 2]`` squared norms, without leaving the device.

    ``norm="batch"``: ‖z‖ and ‖s‖ are the batch means of the per-row norms (published code);
    ``norm="per_sample"``: each row's own norms. ``snr`` and ``alpha``: float, 0-d or ``[B]``
    tensors. Returns a 0-d tensor when everything is batch-wide, else ``[B]``.
    A zero ‖s‖ gives an infinite ε (as in the published code); samplers' ``on_nonfinite``
    catches what follows.
    """
    if norm not in NORM_MODES:
        raise ValueError(f"norm must be 'batch' or 'per_sample', got {norm!r}")
    s_norm = norms[:, 0].sqrt()
    z_norm = norms[:, 1].sqrt()
    if norm == "batch":
        ratio = z_norm.mean() / s_norm.mean()
    else:
        ratio = z_norm / s_norm
    if type(snr) is float and type(alpha) is float:  # the same operations, in place on the 0-d/[B] ratio
        eps = ratio.mul_(snr).pow_(2).mul_(2)
        return eps if alpha == 1.0 else eps.mul_(alpha)  # (x * 1.0 == x: one op less)
    if isinstance(snr, torch.Tensor):
        snr = snr.to(ratio.dtype)
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(ratio.dtype)
    return (snr * ratio) ** 2 * 2 * alpha


_KERNELS: list = []


def _kernel_launchers():
    """(norms launcher, step-size launcher), imported on first use (importing them imports Triton)."""
    if not _KERNELS:
        from ..kernels.corrector import launch_corrector_norms
        from ..kernels.snr_step import launch_snr_step

        _KERNELS.append((launch_corrector_norms, launch_snr_step))
    return _KERNELS[0]


def _snr_step_impl(
    norms: torch.Tensor,
    snr_value: float,
    snr_tensor: Optional[torch.Tensor],
    alpha_value: float,
    alpha_tensor: Optional[torch.Tensor],
    per_sample: bool,
) -> torch.Tensor:
    """ε from ``[B, 2]`` norms by the Triton kernel (``fastlangevin.kernels.snr_step``); a scale is
    ``*_value`` when ``*_tensor`` is None."""
    return _kernel_launchers()[1](
        norms.contiguous(), snr_value, snr_tensor, alpha_value, alpha_tensor, per_sample=per_sample
    )


_snr_step_op = torch.library.custom_op("fastlangevin::snr_step", mutates_args=())(_snr_step_impl)


@_snr_step_op.register_fake
def _(norms, snr_value, snr_tensor, alpha_value, alpha_tensor, per_sample):
    rows = per_sample or any(t is not None and t.dim() == 1 for t in (snr_tensor, alpha_tensor))
    return norms.new_empty((norms.shape[0],) if rows else ())


def _step_size(norms, snr_s, alpha_s, norm: str, backend: str) -> torch.Tensor:
    """ε of the corrector from validated scales: the kernel on the Triton path (through the dispatcher
    when something intercepts it), :func:`snr_step_size`'s torch ops on the fallback."""
    if _backend._RECORDERS:
        _backend.record("snr_step", backend)
    if backend != "triton" or norms.shape[0] == 0:
        return snr_step_size(
            norms,
            snr_s.value if snr_s.tensor is None else snr_s.tensor,
            alpha_s.value if alpha_s.tensor is None else alpha_s.tensor,
            norm=norm,
        )
    args = (norms, snr_s.value, snr_s.tensor, alpha_s.value, alpha_s.tensor, norm == "per_sample")
    if _backend.can_call_directly(norms, snr_s.tensor, alpha_s.tensor):
        return _snr_step_impl(*args)
    return torch.ops.fastlangevin.snr_step(*args)


def _gathered(gather_norms, norms: torch.Tensor) -> torch.Tensor:
    out = gather_norms(norms)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != 2 or out.shape[0] < norms.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            "gather_norms must return the whole batch's [B, 2] norms "
            f"(B >= this shard's {norms.shape[0]} rows), got {got}"
        )
    if out.dtype != norms.dtype or out.device != norms.device:
        raise ValueError(
            f"gather_norms must return {norms.dtype} on {norms.device} (the norms' dtype and device), "
            f"got {out.dtype} on {out.device}"
        )
    return out


_TENSOR, _INF = torch.Tensor, float("inf")
_FLOAT_SET = frozenset(FLOAT_DTYPES)


def _scale_arg(name: str, v, batch: int, device):
    """(value, tensor) of a validated scale: a non-negative finite float inline, anything else through
    :func:`check_scale` (which raises naming the argument)."""
    if type(v) is float and 0.0 <= v < _INF:
        return v, None
    sc = check_scale(name, v, batch=batch, device=device)
    return sc.value, sc.tensor


_BUFFERS = threading.local()  # .d: {device or CUDA stream: {(tag, shape, dtype): buffer}} of this thread


def _call_buffers(device: torch.device, on_cpu: bool) -> Optional[dict]:
    """This thread's buffers for tensors that one call's own launches write and read before it returns
    (the norms, an ε that is not returned), keyed by the device on CPU (synchronous) and by the current
    stream on CUDA, where the next call's writes are ordered after this call's kernels (another
    stream or thread has its own); None during CUDA-graph capture (the graph must own its memory)."""
    if on_cpu:
        key = device
    elif torch.cuda.is_current_stream_capturing():
        return None
    else:
        key = torch.cuda.current_stream(device)
    d = getattr(_BUFFERS, "d", None)
    if d is None:
        d = _BUFFERS.d = {}
    bufs = d.get(key)
    if bufs is None:
        if len(d) >= 64:  # streams come and go: dropped buffers are freed stream-ordered by the allocator
            d.clear()
        bufs = d[key] = {}
    return bufs


def _buffer(bufs: dict, key: tuple, device) -> torch.Tensor:
    buf = bufs.get(key)
    if buf is None:
        if len(bufs) >= 32:
            bufs.clear()
        with torch.inference_mode(False):  # kept across calls (see _backend.KEPT)
            buf = bufs[key] = torch.empty(key[1], dtype=key[2], device=device)
    return buf


def _lean_triton(x, score, snr, alpha, norm, add_noise, clamp, generator, backend, rng, sample_offset, keep_eps):
    """The corrector on the Triton path for plain contiguous tensors with nothing intercepting: the
    general path's checks (same order, same messages), seed draw and three launches (norms, ε, update)
    without its wrappers. Returns ε, or None when the call is not that case (the general path then
    runs it, raising where it must). Nothing is drawn or written before every check has passed."""
    if not lean_triton_case(x, score, backend, rng, sample_offset) or not x.shape[0]:
        return None
    shape, device = x.shape, x.device
    batch = shape[0]
    if type(snr) is float and 0.0 <= snr < _INF:  # the common case inline; else _scale_arg (raises)
        snr_v, snr_t = snr, None
    else:
        snr_v, snr_t = _scale_arg("snr", snr, batch, device)
    if type(alpha) is float and 0.0 <= alpha < _INF:
        alpha_v, alpha_t = alpha, None
    else:
        alpha_v, alpha_t = _scale_arg("alpha", alpha, batch, device)
    if norm not in NORM_MODES:
        raise ValueError(f"norm must be 'batch' or 'per_sample', got {norm!r}")
    lo_hi = check_clamp(clamp) if clamp is not None else None
    if generator is not None:
        check_generator(generator, device)
    # validated: draw (CPU: the thread's buffer, both passes run before this call returns)
    seed = draw_cpu_seed(generator) if x.is_cpu else draw_seed_reused(device, generator)
    launch_norms, launch_snr = _kernel_launchers()
    if _backend._RECORDERS:
        _backend.record("corrector_norms", "triton")
        _backend.record("snr_step", "triton")
        _backend.record("langevin_step", "triton")
    row_size = x.numel() // batch
    per_sample = norm == "per_sample"
    bufs = _call_buffers(device, x.is_cpu)
    norms_out = eps_out = None
    if bufs is not None:
        acc = torch.float64 if score.dtype is torch.float64 else torch.float32
        norms_out = _buffer(bufs, ("norms", (batch, 2), acc), device)
        if not keep_eps:  # a returned ε is the caller's: a new tensor then
            rows = (
                per_sample or (snr_t is not None and snr_t.dim() == 1) or (alpha_t is not None and alpha_t.dim() == 1)
            )
            eps_out = _buffer(bufs, ("eps", (batch,) if rows else (), acc), device)
    flat = score if len(shape) == 2 else score.view(batch, row_size)
    norms = launch_norms(flat, seed, sample_offset=sample_offset, out=norms_out)
    eps = launch_snr(norms, snr_v, snr_t, alpha_v, alpha_t, per_sample=per_sample, out=eps_out)
    lo, hi = (None, None) if lo_hi is None else lo_hi
    _triton_launcher()(
        x,
        score,
        x,
        seed,
        step_value=0.0,
        step_tensor=eps,
        noise_mode=modes.NOISE_SQRT2A if add_noise else modes.NOISE_NONE,
        noise_value=0.0,
        noise_tensor=None,
        lo=lo,
        hi=hi,
        row_size=row_size,
        elem_offset=sample_offset * row_size,
    )
    torch.autograd.graph.increment_version(x)  # the kernel wrote x: tell autograd, as an in-place torch op does
    return eps


# ---------------------------------------------------------------------------------------
# Public corrector
# ---------------------------------------------------------------------------------------
def langevin_corrector_(
    x: torch.Tensor,
    score: torch.Tensor,
    snr,
    *,
    alpha=1.0,
    norm: str = "batch",
    add_noise: bool = True,
    clamp: Optional[Sequence[Optional[float]]] = None,
    generator: Optional[torch.Generator] = None,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
    return_step_size: bool = False,
    gather_norms: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One Langevin corrector step with SNR step size, in place on ``x``.

        ε = 2 α (snr ‖z‖ / ‖s‖)²,    x ← clamp(x + ε s + √(2ε) z)

    Args:
        x: state ``[B, ...]``, updated in place (not differentiable).
        score: ``s(x)``, same shape and device.
        snr: target signal-to-noise ratio r: float, 0-d or per-sample ``[B]`` tensor.
        alpha: α (1 for VE; ``1 - β_i`` for VP): float, 0-d or ``[B]`` tensor.
        norm: "batch" (default; batch-averaged norms, as published — couples the samples of a
            batch) or "per_sample" (batch-invariant, but unstable in low dimension: a row with a
            tiny ‖s‖ gets a huge step; see the module docstring).
        add_noise: False gives the noise-free mean ``x + ε s`` (final "noise removal"); ε still
            uses ‖z‖ of the call's noise, as in the published sampler.
        clamp, generator, backend, rng, sample_offset: as in :func:`fastlangevin.langevin_step_`.
        return_step_size: also return ε (0-d or ``[B]`` device tensor).
        gather_norms: for a batch sharded across processes, with ``norm="batch"``: called with
            this shard's ``[b, 2]`` per-row squared norms, returns the whole batch's ``[B, 2]``
            (rows in global order, e.g. an all-gather across ranks:
            :func:`fastlangevin.distributed.gather_rows`). ε is then computed from the whole
            batch's norms, as one process computes it on the whole batch. Ignored with
            ``norm="per_sample"`` (each row's ε is its own).

    One seed is drawn from ``generator`` per call, whatever the batch size.
    """
    if gather_norms is None:
        eps = _lean_triton(
            x, score, snr, alpha, norm, add_noise, clamp, generator, backend, rng, sample_offset, return_step_size
        )
        if eps is not None:
            return (x, eps) if return_step_size else x
    check_state("x", x)
    check_like("score", score, x, "x")
    if gather_norms is not None and not callable(gather_norms):
        raise TypeError(
            f"gather_norms must be callable(norms [b, 2]) -> [B, 2] or None, got {type(gather_norms).__name__}"
        )
    batch, device = x.shape[0], x.device
    snr_s = check_scale("snr", snr, batch=batch, device=device)
    alpha_s = check_scale("alpha", alpha, batch=batch, device=device)
    if norm not in NORM_MODES:
        raise ValueError(f"norm must be 'batch' or 'per_sample', got {norm!r}")
    lo_hi, chosen, stream = check_call_options(device, clamp, generator, sample_offset, backend, rng)
    if torch.is_grad_enabled() and (x.requires_grad or score.requires_grad):
        raise RuntimeError("langevin_corrector_ is a sampler op without autograd; run it under torch.no_grad()")

    if gather_norms is None and device.type == "cpu" and _backend.can_call_directly(x, score):
        seed = draw_cpu_seed(generator)  # used by both passes before this call returns (no user code between)
    else:
        seed = draw_seed(device, generator)
    norms = _norms(score, seed, sample_offset, chosen, stream)
    if gather_norms is not None and norm == "batch":
        norms = _gathered(gather_norms, norms)
    eps = _step_size(norms, snr_s, alpha_s, norm, chosen)
    if eps.dim() == 1:
        eps = eps.contiguous()
    lo, hi = (None, None) if lo_hi is None else lo_hi
    run_inplace_op(
        StepArgs(
            x=x,
            score=score,
            seed=seed,
            step_tensor=eps,
            noise_mode=modes.NOISE_SQRT2A if add_noise else modes.NOISE_NONE,
            lo=lo,
            hi=hi,
            sample_offset=sample_offset,
            backend=chosen,
            rng=stream,
        )
    )
    return (x, eps) if return_step_size else x


__all__ = ["corrector_norms", "langevin_corrector_", "snr_step_size", "NORM_MODES"]

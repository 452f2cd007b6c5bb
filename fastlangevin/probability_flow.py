"""Probability-flow ODE of a score SDE (Song et al. 2020, §4.3): deterministic sampling and encoding.

    dx/dt = f_t x − ½ g(t)² s(x, t)        (f_t, g² of the SDE: :meth:`VESDE.drift_coeff` / ``diffusion_sq``)

x: ``[B, ...]`` (dim 0 the batch); ``score_fn(x, t)`` gets ``t`` as a per-sample ``[B]`` tensor (all
entries equal; fp32, fp64 for fp64 states), as in :func:`fastlangevin.pc_sample`.

* :func:`ode_sample` integrates from t = 1 (``x0``, or a prior draw N(0, prior_std² I)) down to
  t = eps (noise → data);
* :func:`ode_encode` integrates the same ODE from t = eps up to 1 (data → latent).

Noise: none in the updates (the fused op's deterministic mode, see :mod:`fastlangevin.ode_solvers`);
the only random numbers are the prior draw of ``ode_sample`` (one seed from ``generator``, keyed by
global sample index like every op, so ``x[:k]`` is the first k samples of the larger batch).
Solvers, host syncs and batch invariance: :mod:`fastlangevin.ode_solvers` (fixed-step methods are
batch-invariant bitwise and never sync; rk45 syncs once per attempted step and is batch-invariant
within its tolerance).

Checkpoint/resume (``ode_sample(..., checkpoint=PATH, checkpoint_every=k)``, ``resume=PATH``): the
solver's whole state is written atomically after every k-th step (rk45: every k-th accepted step;
never after the last) with the NFE count; a resumed call continues bitwise, NFE count included.
The fingerprint holds the arguments that shape the numbers (the method's own: ``n_steps`` for the
fixed-step methods, ``rtol``/``atol``/``max_steps`` for rk45) and the state at t = 1 (``x0``, or
the prior draw); see :mod:`fastlangevin.sampling.checkpoint`.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch

from ._validate import check_state
from .ode_solvers import FIXED_METHODS, check_method, check_tolerances, integrate_fixed, integrate_rk45
from .sampling.checkpoint import Checkpointer, fingerprint
from .sampling.loop import _progress_bar, checked_score, compute_dtype, phase
from .sampling.pc import sample_prior
from .sde import check_sde, pf_coeffs

#: Default number of steps of the fixed-step methods.
DEFAULT_STEPS = 100


def check_eps(sde, eps) -> float:
    eps = sde.sampling_eps if eps is None else eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
        raise ValueError(f"eps must be a number in (0, 1) (the data end of the ODE's time interval), got {eps!r}")
    return float(eps)


def check_steps(method: str, n_steps, max_steps) -> Optional[int]:
    if method == "rk45":
        if n_steps is not None:
            raise ValueError("n_steps is for the fixed-step methods (euler, heun, rk4); rk45 chooses its own steps")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        return None
    n = DEFAULT_STEPS if n_steps is None else n_steps
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
    return n


class Counter:
    """Number of score evaluations (NFE)."""

    def __init__(self):
        self.n = 0


def pf_field(score_fn, sde, B: int, tdtype, device, nfe: Counter) -> Callable:
    """The PF-ODE vector field for the solvers: ``([x], t, sign) -> [sign · (f_t x − ½ g² s(x, t))]``."""

    def field(ys: List[torch.Tensor], t: float, sign: float) -> List[torch.Tensor]:
        (x,) = ys
        cx, cs = pf_coeffs(sde, t)
        with phase("fastlangevin.score"):
            s = score_fn(x, torch.full((B,), t, dtype=tdtype, device=device))
        s = checked_score(s, x)
        nfe.n += 1
        k = s.to(x.dtype) * (sign * cs)
        if cx != 0.0:
            k.add_(x, alpha=sign * cx)
        return [k]

    return field


def solve(
    field, ys, t0, t1, method, n_steps, rtol, atol, backend, max_steps, progress, desc, *, resume=None, on_step=None
):
    bar = _progress_bar(progress, n_steps or max_steps, desc)
    if bar is not None and resume is not None:
        bar.update(resume["steps"] if method in FIXED_METHODS else resume["accepted"])
    solver = dict(resume=resume, on_step=on_step)
    try:
        if method in FIXED_METHODS:
            return integrate_fixed(field, ys, t0, t1, method, n_steps, backend, bar, **solver)
        return integrate_rk45(field, ys, t0, t1, rtol, atol, backend, max_steps, bar, **solver)[0]
    finally:
        if bar is not None:
            bar.close()


def _checkpointing(ckpt: Optional[Checkpointer], method: str, n_steps: Optional[int], nfe: Counter, device):
    """(resume, on_step) for the solver: the restored solver state (NFE count set) or None, and
    the hook writing the solver state after every k-th (accepted) step, or None."""
    if ckpt is None:
        return None, None
    fixed = method in FIXED_METHODS
    resume = None
    if ckpt.resume is not None:
        payload = ckpt.load(device)
        resume, nfe.n = payload["solver"], int(payload["nfe"])
    if ckpt.path is None:
        return resume, None

    def on_step(state) -> None:
        done = state["steps"] if fixed else state["accepted"]
        if not state.get("done") and ckpt.due(done, n_steps if fixed else None):
            solver = {k: [y.detach().clone() for y in v] if k in ("ys", "k1") else v for k, v in state.items()}
            ckpt.save({"steps_done": done, "solver": solver, "nfe": nfe.n})

    return resume, on_step


def _run(
    score_fn, sde, x, t0, t1, method, n_steps, rtol, atol, backend, max_steps, progress, return_nfe, desc, ckpt=None
):
    nfe = Counter()
    field = pf_field(score_fn, sde, x.shape[0], compute_dtype(x.dtype), x.device, nfe)
    resume, on_step = _checkpointing(ckpt, method, n_steps, nfe, x.device)
    hooks = dict(resume=resume, on_step=on_step)
    with torch.no_grad():
        (out,) = solve(field, [x], t0, t1, method, n_steps, rtol, atol, backend, max_steps, progress, desc, **hooks)
    return (out, nfe.n) if return_nfe else out


def _common_checks(score_fn, sde, method, n_steps, rtol, atol, eps, max_steps):
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable(x, t) -> score, got {type(score_fn).__name__}")
    check_sde(sde)
    method = check_method(method)
    n = check_steps(method, n_steps, max_steps)
    rtol, atol = check_tolerances(rtol, atol)
    return method, n, rtol, atol, check_eps(sde, eps)


def ode_sample(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde,
    x0: Optional[torch.Tensor] = None,
    *,
    shape: Optional[Sequence[int]] = None,
    method: str = "rk45",
    n_steps: Optional[int] = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype: Optional[torch.dtype] = None,
    progress: bool = False,
    return_nfe: bool = False,
    max_steps: int = 10_000,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
    checkpoint=None,
    checkpoint_every: Optional[int] = None,
    resume=None,
):
    """Sample by integrating the probability-flow ODE from t = 1 to ``eps``.

    Args:
        score_fn: ``score_fn(x, t) -> s`` with ``t`` a per-sample ``[B]`` tensor.
        sde: :class:`fastlangevin.VESDE` or :class:`fastlangevin.VPSDE`.
        x0: the state at t = 1; None draws it from the prior with ``shape`` / ``dtype``
            (default float32) / ``device`` (one seed from ``generator``, keyed by global sample
            index ``sample_offset + row``; ``rng`` picks the fallback's stream as for the ops).
        method: "euler", "heun", "rk4" (``n_steps`` uniform steps in t, default 100) or "rk45"
            (adaptive, ``rtol`` > 0 / ``atol`` >= 0, at most ``max_steps`` attempted steps).
        eps: the final time (default ``sde.sampling_eps``), in (0, 1).
        backend: backend of the fused update op ("triton", "torch" or None = auto).
        return_nfe: also return the number of score evaluations.
        checkpoint, checkpoint_every: write the solver's state to the file ``checkpoint``
            atomically after every ``checkpoint_every``-th step (rk45: accepted step).
        resume: a checkpoint file of the same call: continue from it (bitwise, NFE included).

    Returns:
        x at t = eps (a new tensor), or ``(x, nfe)``.
    """
    method, n, rtol, atol, eps = _common_checks(score_fn, sde, method, n_steps, rtol, atol, eps, max_steps)
    if (x0 is None) == (shape is None):
        raise ValueError("pass exactly one of x0 (the state at t = 1) and shape (to draw it from the prior)")
    # the checkpoint arguments are checked before the prior draw (a refused call leaves the
    # generator untouched); the fingerprint, which hashes the draw, is filled in after it
    ckpt = Checkpointer.from_args(checkpoint, checkpoint_every, resume, dict)
    if x0 is not None:
        check_state("x0", x0)
        if dtype is not None and dtype != x0.dtype:
            raise ValueError(f"dtype={dtype} conflicts with x0.dtype={x0.dtype}; convert x0 instead")
        x = x0.detach().clone(memory_format=torch.contiguous_format)
    else:
        x = sample_prior(
            sde,
            shape,
            dtype=dtype or torch.float32,
            device=device,
            generator=generator,
            backend=backend,
            rng=rng,
            sample_offset=sample_offset,
        )
    if ckpt is not None:
        adaptive = method == "rk45"
        ckpt.fp = fingerprint(
            "ode_sample",
            score_fn=score_fn,
            sde=sde,
            x0=x0,
            shape=None if shape is None else list(x.shape),
            prior_draw=None if x0 is not None else x,  # generator, rng and sample_offset shape it
            dtype=x.dtype,
            device=str(x.device),
            method=method,
            n_steps=n,
            rtol=rtol if adaptive else None,
            atol=atol if adaptive else None,
            max_steps=max_steps if adaptive else None,
            eps=eps,
            backend=backend,
        )
    return _run(
        score_fn, sde, x, 1.0, eps, method, n, rtol, atol, backend, max_steps, progress, return_nfe, "ode_sample", ckpt
    )


def ode_encode(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde,
    x: torch.Tensor,
    *,
    method: str = "rk45",
    n_steps: Optional[int] = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: Optional[float] = None,
    progress: bool = False,
    return_nfe: bool = False,
    max_steps: int = 10_000,
    backend: Optional[str] = None,
):
    """Encode data ``x`` (at t = eps) to its latent at t = 1: the probability-flow ODE run forwards.

    Arguments as :func:`ode_sample`. Returns the latent (a new tensor), or ``(latent, nfe)``.
    """
    method, n, rtol, atol, eps = _common_checks(score_fn, sde, method, n_steps, rtol, atol, eps, max_steps)
    check_state("x", x)
    x = x.detach().clone(memory_format=torch.contiguous_format)
    return _run(
        score_fn, sde, x, eps, 1.0, method, n, rtol, atol, backend, max_steps, progress, return_nfe, "ode_encode"
    )

"""The fused multi-tensor update as a torch custom op, dispatched to the Triton kernel or the fallback.

``fastlangevin::langevin_optim_`` updates a bucket of tensors in place (see ``kernels/optim.py``
for the equations): parameters, their fp32 master copies (16-bit parameters) and the per-method
state (pSGLD's V, SGHMC's v). It mutates its inputs and is not differentiable (optimizers run
under ``no_grad``). The seed is an int64 tensor input, so the op is a pure function of its inputs.
Both backends take ``(method, params, grads, masters, states, indices, seed, scalars, has_noise,
...)`` with ``scalars = (lr, gscale, prior, nscale, a1, a2, eps)``.
"""

from __future__ import annotations

from typing import List

import torch

from .. import _backend
from ..fallback.optim import optim_update_torch

OP_NAMES = {0: "sgld", 1: "psgld", 2: "sghmc"}


def _impl(
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    masters: List[torch.Tensor],
    states: List[torch.Tensor],
    indices: List[int],
    seed: torch.Tensor,
    method: int,
    lr: float,
    gscale: float,
    prior: float,
    nscale: float,
    a1: float,
    a2: float,
    eps: float,
    has_noise: bool,
    backend: str,
    rng: str,
    injected: List[torch.Tensor],
) -> None:
    injected = injected if injected else None  # empty list: draw the noise
    _backend.record(OP_NAMES[method], backend)
    tensors = (params, grads, masters, states, indices, seed)
    scalars = (lr, gscale, prior, nscale, a1, a2, eps)
    if backend == "triton":
        from ..kernels.optim import launch_optim

        launch_optim(method, tensors, scalars, has_noise, injected=injected)
        # the kernel wrote these: bump their versions, as in-place torch ops (and the fallback) do
        for t in (*params, *masters, *states):
            torch.autograd.graph.increment_version(t)
    else:
        optim_update_torch(method, tensors, scalars, has_noise, rng, injected)


langevin_optim_ = torch.library.custom_op(
    "fastlangevin::langevin_optim_", mutates_args=("params", "masters", "states")
)(_impl)


@langevin_optim_.register_fake
def _(*args):  # mutates its inputs only: nothing to allocate
    return None


def run_update(tensors, method, scalars, has_noise, backend, rng, injected):
    """Call the op on ``tensors = (params, grads, masters, states, indices, seed)`` (directly when
    nothing intercepts the dispatcher: the custom-op wrapper costs ~100 µs a call)."""
    injected = list(injected) if injected is not None else []
    params, grads, *_, seed = tensors
    args = (*tensors, method, *scalars, has_noise, backend, rng, injected)
    if _backend.can_call_directly(*params, *grads, seed):
        _impl(*args)
    else:
        langevin_optim_(*args)

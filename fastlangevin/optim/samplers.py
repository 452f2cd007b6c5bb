"""SGLD, pSGLD and SGHMC as fused ``torch.optim`` optimizers.

With ∇U = N · p.grad + λ θ (see :mod:`fastlangevin.optim.base`), step size lr, temperature T,
z ~ N(0, I) from the optimizer's counter-based stream:

    SGLD  (Welling & Teh 2011):  θ ← θ − lr ∇U + sqrt(2 lr T) z
    pSGLD (Li et al. 2016):      V ← α V + (1 − α) (∇U)²,   G = 1 / (λ_eps + sqrt V),
                                 θ ← θ − lr G ∇U + sqrt(2 lr T G) z
    SGHMC (Chen et al. 2014, eq. 15, with lr = η, friction = α, noise_estimate = β̂):
                                 v ← (1 − α) v − η ∇U + sqrt(2 (α − β̂) η T) z,   θ ← θ + v

pSGLD drops the Γ(θ) = Σ_j ∂G/∂θ_j correction term, as Li et al. do in practice: it is
O(1 − α) small when V changes slowly, and omitting it is the common choice (the stationary
distribution is then exact only up to that bias). V starts at zero.

All three are ``torch.optim.Optimizer`` subclasses (param groups, closures, ``zero_grad``,
``state_dict``, LR schedulers); every hyper-parameter is per group. Tensors: fp32, bf16 or fp16
parameters (16-bit ones with an fp32 master copy), gradients of any float dtype.
"""

from __future__ import annotations

import math

from .base import LangevinOptimizer, _check_float, check_common

_COMMON_DOC = """
    Args:
        params: iterable of parameters or param-group dicts.
        lr: step size (η). Required.
        num_data: N; when given, ``p.grad`` is the gradient of the minibatch *mean* negative
            log-likelihood and is scaled by N. None: ``p.grad`` is ∇U itself.
        prior_precision: λ of a N(0, 1/λ) prior on every parameter (adds λθ to ∇U).
        temperature: T (posterior ∝ exp(−U/T)); 0 gives the noise-free optimiser.
        generator: torch.Generator from which the stream's seed is drawn (default: torch's).
        seed: the stream's seed as an int instead (e.g. the same on every DDP rank).
        backend: "triton", "torch" or None (auto: Triton for CUDA parameters).
        rng: fallback noise stream, "torch" (CPU default) or "philox" (the kernels' stream).
"""


class SGLD(LangevinOptimizer):
    __doc__ = "Stochastic gradient Langevin dynamics: θ ← θ − lr ∇U + sqrt(2 lr T) z.\n" + _COMMON_DOC
    METHOD = 0

    def __init__(self, params, lr, *, num_data=None, prior_precision=0.0, temperature=1.0, **kw):
        check_common(lr, num_data, prior_precision, temperature)
        defaults = dict(lr=lr, num_data=num_data, prior_precision=prior_precision, temperature=temperature)
        super().__init__(params, defaults, **kw)

    def _scalars(self, group):
        lr, T = float(group["lr"]), float(group["temperature"])
        gscale = 1.0 if group["num_data"] is None else float(group["num_data"])
        return (lr, gscale, float(group["prior_precision"]), math.sqrt(2.0 * lr * T), 0.0, 0.0, 0.0)


class pSGLD(LangevinOptimizer):  # noqa: N801 - the name the literature uses
    __doc__ = (
        "Preconditioned SGLD (RMSprop preconditioner G = 1 / (eps + sqrt V)):\n"
        "θ ← θ − lr G ∇U + sqrt(2 lr T G) z, V ← α V + (1 − α) ∇U².\n"
        + _COMMON_DOC
        + "        alpha: decay α of the squared-gradient average V (default 0.99).\n"
        "        eps: λ_eps of the preconditioner (default 1e-5).\n"
    )
    METHOD = 1
    STATE_KEY = "square_avg"

    def __init__(self, params, lr, *, alpha=0.99, eps=1e-5, num_data=None, prior_precision=0.0, temperature=1.0, **kw):
        check_common(lr, num_data, prior_precision, temperature)
        _check_float("alpha", alpha, high=1.0)
        if alpha == 1.0:
            raise ValueError("alpha must be < 1 (V would never see a gradient), got 1.0")
        _check_float("eps", eps, low_open=True)
        defaults = dict(
            lr=lr, alpha=alpha, eps=eps, num_data=num_data, prior_precision=prior_precision, temperature=temperature
        )
        super().__init__(params, defaults, **kw)

    def _scalars(self, group):
        lr, T = float(group["lr"]), float(group["temperature"])
        gscale = 1.0 if group["num_data"] is None else float(group["num_data"])
        alpha = float(group["alpha"])
        return (lr, gscale, float(group["prior_precision"]), 2.0 * lr * T, alpha, 1.0 - alpha, float(group["eps"]))


class SGHMC(LangevinOptimizer):
    __doc__ = (
        "Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014, eq. 15):\n"
        "v ← (1 − α) v − η ∇U + sqrt(2 (α − β̂) η T) z, θ ← θ + v (v starts at zero).\n"
        + _COMMON_DOC
        + "        friction: α in (0, 1] (default 0.1).\n"
        "        noise_estimate: β̂ in [0, α], the estimated gradient-noise term (default 0).\n"
    )
    METHOD = 2
    STATE_KEY = "momentum"

    def __init__(
        self,
        params,
        lr,
        *,
        friction=0.1,
        noise_estimate=0.0,
        num_data=None,
        prior_precision=0.0,
        temperature=1.0,
        **kw,
    ):
        check_common(lr, num_data, prior_precision, temperature)
        _check_float("friction", friction, low_open=True, high=1.0)
        _check_float("noise_estimate", noise_estimate, high=float(friction))
        defaults = dict(
            lr=lr,
            friction=friction,
            noise_estimate=noise_estimate,
            num_data=num_data,
            prior_precision=prior_precision,
            temperature=temperature,
        )
        super().__init__(params, defaults, **kw)

    def _scalars(self, group):
        lr, T = float(group["lr"]), float(group["temperature"])
        gscale = 1.0 if group["num_data"] is None else float(group["num_data"])
        a = float(group["friction"])
        nscale = math.sqrt(2.0 * (a - float(group["noise_estimate"])) * lr * T)
        return (lr, gscale, float(group["prior_precision"]), nscale, 1.0 - a, 0.0, 0.0)

"""The shared machinery of the Langevin optimizers: potential convention, noise stream, buckets.

Convention: ``p.grad`` is the gradient of the potential U(θ) = −log p(θ | data) — or, with
``num_data = N``, of a minibatch *mean* negative log-likelihood, which is scaled by N. A Gaussian
prior N(0, 1/λ) adds λθ (``prior_precision`` = λ, like weight decay):

    ∇U(θ) = N · p.grad + λ θ        (N = 1 when ``num_data`` is None)

``temperature`` T scales the injected noise variance (T < 1: cold posteriors; T = 0: the
noise-free optimiser).

Noise stream: the optimizer owns a counter-based stream, ``(seed, step)``. ``seed`` is drawn
once at construction from ``generator`` (or torch's default CPU generator; or given as
``seed=``); step k uses the int64 seed ``mix(seed, k)`` (splitmix64), placed on the parameters'
device and ``tl.load``ed by the kernel. Element j of the parameter with index i (its position
over all param groups, in order, counting parameters without a gradient too) takes element
``i · 2**42 + j`` of the project's stream under that seed (``fastlangevin/_rng.py``), so the noise
never depends on how parameters are grouped, bucketed or chunked. ``(seed, step)`` is saved in
``state_dict()["noise_stream"]``: a loaded optimizer continues the stream exactly, whatever
generator it was built with. Replicas (DDP) built with the same seed draw identical noise.

One fused launch per param group and (device, parameter dtype, gradient dtype) bucket per step.
16-bit (bf16 / fp16) parameters keep an fp32 master copy in ``state["master"]``; the update runs
on it and the parameter is rewritten from it.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch

from .._backend import resolve_backend
from .._rng import _SEED_HIGH, chunk_seed, draw_seed
from ..ops.langevin_step import resolve_rng
from ._update import run_update

_SUPPORTED = (torch.float32, torch.bfloat16, torch.float16)


def _check_float(name: str, value, *, low: float = 0.0, low_open: bool = False, high: Optional[float] = None):
    if isinstance(value, torch.Tensor) or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < low or (low_open and v == low) or (high is not None and v > high):
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and <= {high}")
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def check_common(lr, num_data, prior_precision, temperature):
    _check_float("lr", lr, low_open=True)
    if num_data is not None and (isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1):
        raise ValueError(f"num_data must be None or a positive int, got {num_data!r}")
    _check_float("prior_precision", prior_precision)
    _check_float("temperature", temperature)


def step_seed(seed: int, step: int) -> int:
    """The int64 seed of step ``step`` of the stream ``seed``: splitmix64, in [0, 2**62)."""
    return chunk_seed(seed, step) % _SEED_HIGH


class LangevinOptimizer(torch.optim.Optimizer):
    """Base class: subclasses set ``METHOD`` and implement :meth:`_scalars` and :meth:`_state_key`."""

    METHOD: int = -1
    STATE_KEY: Optional[str] = None  # per-parameter fp32 state tensor ("square_avg", "momentum")

    def __init__(self, params, defaults, *, generator=None, seed=None, backend=None, rng=None):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise ValueError(f"seed must be None or an int in [0, 2**63), got {seed!r}")
        if backend is not None and backend not in ("triton", "torch", "auto"):
            raise ValueError(f"backend must be one of 'triton', 'torch', 'auto' or None, got {backend!r}")
        if rng is not None and rng not in ("torch", "philox"):
            raise ValueError(f"rng must be 'torch', 'philox' or None, got {rng!r}")
        defaults = dict(defaults, explore=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dtype not in _SUPPORTED:
                    raise TypeError(
                        f"params: {type(self).__name__} supports float32, bfloat16 and float16, got {p.dtype}"
                    )
        if seed is None:
            device = generator.device if generator is not None else torch.device("cpu")
            seed = int(draw_seed(device, generator).item())
        self._backend, self._rng = backend, rng
        self._stream_seed, self._stream_step = int(seed), 0

    # ---------------------------------------------------------------- noise stream / state
    @property
    def noise_stream(self) -> Dict[str, int]:
        """``{"seed": ..., "step": ...}``: where the optimizer's noise stream stands."""
        return {"seed": self._stream_seed, "step": self._stream_step}

    def state_dict(self):
        sd = super().state_dict()
        sd["noise_stream"] = dict(self.noise_stream)
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        stream = state_dict.pop("noise_stream", None)
        if stream is None:
            raise KeyError("state_dict has no 'noise_stream' entry: not saved by a fastlangevin optimizer")
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        # torch casts floating state to the parameter's dtype: our fp32 masters and moments must
        # stay fp32 (a bf16 parameter's master would lose its low bits). Clone: no aliasing.
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params):
            if pid in saved and p in self.state:
                for key, value in saved[pid].items():
                    if isinstance(value, torch.Tensor) and value.is_floating_point():
                        self.state[p][key] = value.to(device=p.device, dtype=torch.float32, copy=True)
        self._stream_seed, self._stream_step = int(stream["seed"]), int(stream["step"])

    # ---------------------------------------------------------------- the step
    def _scalars(self, group) -> tuple:
        """(lr, gscale, prior, nscale, a1, a2, eps) for the kernel (floats)."""
        raise NotImplementedError

    def _has_noise(self, group) -> bool:
        return group["temperature"] > 0.0 and not group["explore"]

    # Never traced: the stream's step counter is Python state, which a compiled step would freeze
    # (the same noise at every step). Under torch.compile the step runs eagerly (a graph break;
    # fullgraph=True raises) while the model's forward/backward stay compiled.
    @torch.compiler.disable
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None, *, noise: Optional[List] = None):
        """One Langevin step on every parameter with a gradient; returns ``closure()``'s loss.

        ``noise`` (testing hook): a list, one entry per parameter over all groups in order, of
        standard-normal tensors shaped like the parameter (or None) used instead of the stream.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        all_params = [p for g in self.param_groups for p in g["params"]]
        if noise is not None and len(noise) != len(all_params):
            raise ValueError(f"noise must have one entry per parameter ({len(all_params)}), got {len(noise)}")
        plans = []
        index = 0
        for group in self.param_groups:
            buckets: Dict[tuple, list] = {}
            for p in group["params"]:
                i, index = index, index + 1
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients (parameter {i})")
                if g.shape != p.shape or g.device != p.device or not g.is_floating_point():
                    raise ValueError(
                        f"parameter {i}: grad {tuple(g.shape)} {g.dtype} on {g.device} does not match "
                        f"the parameter {tuple(p.shape)} on {p.device}"
                    )
                z = None
                if noise is not None:
                    z = noise[i]
                    if z is None or z.shape != p.shape or z.device != p.device:
                        raise ValueError(f"noise[{i}] must be a tensor shaped {tuple(p.shape)} on {p.device}")
                buckets.setdefault((p.device, p.dtype, g.dtype), []).append((i, p, z))
            plans.append((group, buckets))
        # Everything validated: now mutate.
        seeds = {}
        for group, buckets in plans:
            has_noise = self._has_noise(group)
            scalars = self._scalars(group)
            for (device, pdtype, _gdtype), items in buckets.items():
                backend = resolve_backend(device, self._backend)
                rng = resolve_rng(self._rng, backend, device)
                if device not in seeds:
                    s = step_seed(self._stream_seed, self._stream_step)
                    # Built on the host, copied without a blocking sync (torch.tensor(..., device=cuda)
                    # would wait for the GPU queue to drain at every step).
                    seeds[device] = torch.tensor([s], dtype=torch.int64).to(device, non_blocking=True)
                self._run_bucket(items, pdtype, seeds[device], scalars, has_noise, backend, rng, noise is not None)
        self._stream_step += 1
        return loss

    def _run_bucket(self, items, pdtype, seed, scalars, has_noise, backend, rng, injected):
        params, grads, masters, states, indices, zs, copy_back = [], [], [], [], [], [], []
        for i, p, z in items:
            st = self.state[p]
            if pdtype != torch.float32 and "master" not in st:
                st["master"] = torch.empty(p.shape, dtype=torch.float32, device=p.device).copy_(p)
            if self.STATE_KEY is not None and self.STATE_KEY not in st:
                st[self.STATE_KEY] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            # Kernels walk flat contiguous memory; a strided parameter is updated through a copy.
            pc = p if p.is_contiguous() else p.contiguous()
            if pc is not p:
                copy_back.append((p, pc))
            params.append(pc)
            grads.append(p.grad.contiguous())
            if pdtype != torch.float32:
                masters.append(st["master"])
            if self.STATE_KEY is not None:
                states.append(st[self.STATE_KEY])
            indices.append(i)
            if injected:
                zs.append(z.detach().to(torch.float32).contiguous())
        run_update(
            params,
            grads,
            masters,
            states,
            indices,
            seed,
            self.METHOD,
            scalars,
            has_noise,
            backend,
            rng,
            zs if injected else None,
        )
        for p, pc in copy_back:
            p.copy_(pc)

"""Workload ``dsm``: the denoising score-matching loss, forward + backward (NCSN weighting λ = σ²).

    x̃ = x + σ z,   s = score(x̃, σ),   loss = mean_i ½ σ_i² ‖s_i + z_i / σ_i‖²,   loss.backward()

``--param score=trivial`` (default: ``s = b - x̃``, saving nothing, so the loss itself is measured; bytes
``8 * numel * itemsize``: perturb 2, score 2, loss 1 + 2, parameter gradient 1) or ``linear`` (``x̃ W^T + c``
on the flattened sample); per-sample σ; also the bytes saved for backward and, on CUDA, the peak memory.
Provider factory: ``make(case, score_fn, noise) -> loss_fn(x, sigma)`` (``noise`` None draws z, a tensor
injects it). Check: with injected z, loss and gradients match :func:`fastlangevin.reference.dsm_loss` in
float64 to 1e-4 relative (16-bit: 2e-2); with drawn z, two calls differ and the mean loss of 8 calls
matches the reference's over 8 fresh draws within 6 standard errors plus that rounding.
"""

import math
import statistics
from typing import Any

import torch

from ... import dsm_loss, reference
from ...ops.dsm import dsm_loss_with_noise
from ..checks import Z_BOUND, expect
from ..engine import CheckFailed, Provider, Workload, synchronize
from .common import compile_provider, ours

SIGMA_LEVELS = (0.1, 0.2, 0.35, 0.5, 0.7, 0.9)  # σ ≠ 1 keeps the noise term of s + z/σ alive
STAT_CALLS = 8


def score_model(kind: str, params):
    if kind == "trivial":
        return lambda xt, sig: params[0] - xt
    if kind == "linear":
        return lambda xt, sig: (xt.flatten(1) @ params[0].T + params[1]).reshape(xt.shape)
    raise ValueError(f"--param score={kind!r}: choose trivial or linear")


def _fastlangevin(case, score_fn, noise, backend):
    if noise is None:
        return lambda x, sigma: dsm_loss(score_fn, x, sigma, backend=backend)
    return lambda x, sigma: dsm_loss_with_noise(score_fn, x, sigma, noise, backend=backend)


def _naive(case, score_fn, noise):
    """The loss as usually written (the reference formula with ``z = randn_like(x)``)."""
    return lambda x, sigma: reference.dsm_loss(score_fn, x, sigma, torch.randn_like(x) if noise is None else noise)


def _loss_and_grads(loss_fn, x, sigma, params):
    loss = loss_fn(x, sigma)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise CheckFailed(f"loss must be a 0-d tensor, got {type(loss).__name__} {getattr(loss, 'shape', '')}")
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    if any(g is None for g in grads):
        raise CheckFailed("no gradient reached the score model's parameters")
    return float(loss.detach().double()), [g.double() for g in grads]


class DSM(Workload):
    name = "dsm"
    description = "DSM loss forward+backward (x~ = x + sigma z, NCSN weighting), trivial or linear score model"
    bytes_note = "dsm: 8 x numel x itemsize (perturb 2, score 2, loss fwd 1, loss bwd 2, param grad 1)"
    bytes_per_element = 8
    memory_per_element = 16
    provider_list = (
        *ours(_fastlangevin, "dsm_loss", 1 << 16),
        Provider("naive", "naive loss: z = randn_like(x), x~, (s + z/sigma)^2, per-sample sum, mean", _naive),
        compile_provider("torch.compile of the naive loss (fwd and bwd)", _naive),
    )

    def setup(self, case, opts) -> dict[str, Any]:
        g = torch.Generator(device=case.device).manual_seed(opts.seed)
        dev, f32, d = case.device, torch.float32, math.prod(case.shape[1:])
        x = torch.randn(case.shape, generator=g, device=dev, dtype=f32).to(case.dtype)
        levels = torch.tensor(SIGMA_LEVELS, dtype=f32, device=dev)
        sigma = levels[torch.arange(case.shape[0], device=dev) % len(SIGMA_LEVELS)].contiguous()
        kind = case.param("score", "trivial")
        if kind == "linear":
            params = [torch.randn(d, d, generator=g, device=dev, dtype=f32) / d**0.5, torch.zeros(d, device=dev)]
        else:
            params = [0.1 * torch.randn(case.shape[1:], generator=g, device=dev, dtype=f32)]
        params = [p.to(case.dtype).requires_grad_(True) for p in params]
        return {"x": x, "sigma": sigma, "params": params, "score_fn": score_model(kind, params), "kind": kind}

    def check(self, provider, case, inp, opts):
        x, sigma, params = inp["x"], inp["sigma"], inp["params"]
        rtol = 1e-4 if case.dtype in (torch.float32, torch.float64) else 2e-2
        ref_params = [p.detach().double().requires_grad_(True) for p in params]
        ref_fn = score_model(inp["kind"], ref_params)
        ref_loss = lambda z: reference.dsm_loss(ref_fn, x.double(), sigma.double(), z)  # noqa: E731
        g = torch.Generator(device=x.device).manual_seed(opts.seed + 7)
        z = torch.randn(x.shape, generator=g, device=x.device, dtype=torch.float32).to(x.dtype)
        loss, grads = _loss_and_grads(provider.make(case, inp["score_fn"], z), x, sigma, params)
        want, want_g = _loss_and_grads(lambda *_: ref_loss(z.double()), x, sigma, ref_params)
        expect(f"loss with injected noise (reference, rtol {rtol:g})", loss, want, rtol * abs(want))
        gerr = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(grads, want_g))
        expect("gradient with injected noise: max error / max of the reference's", gerr, 0.0, rtol)
        injected = {"loss": loss, "loss_reference": want, "grad_max_rel_err": gerr}
        loss_fn = provider.make(case, inp["score_fn"], None)
        calls = [_loss_and_grads(loss_fn, x, sigma, params) for _ in range(STAT_CALLS)]
        losses = [c[0] for c in calls]
        refs = [float(ref_loss(torch.randn(x.shape, generator=g, device=x.device, dtype=torch.float64)).detach())
                for _ in range(STAT_CALLS)]  # fmt: skip
        m, mr, ses = statistics.fmean(losses), statistics.fmean(refs), [statistics.stdev(v) for v in (losses, refs)]
        tol = Z_BOUND * math.hypot(*ses) / math.sqrt(STAT_CALLS) + rtol * abs(mr)
        # freshness first: frozen noise has no spread across calls, so its mean would fail or pass by luck
        if all(torch.equal(a, b) for a, b in zip(calls[0][1], calls[1][1])):
            raise CheckFailed("two calls gave the same gradient (noise not fresh)")
        expect(f"mean loss over {STAT_CALLS} calls (reference's mean, 6 SE)", m, mr, tol)
        drawn = {"losses": losses, "loss_mean": m, "reference_mean": mr, "tolerance": tol}
        return {"numel": x.numel(), "injected_noise": injected, "drawn_noise": drawn}

    def timed(self, provider, case, inp, opts):
        x, sigma, params = inp["x"], inp["sigma"], inp["params"]
        loss_fn = provider.make(case, inp["score_fn"], None)

        def fwd_bwd():
            loss = loss_fn(x, sigma)
            loss.backward()
            for p in params:
                p.grad = None
            return loss

        extra = dict(getattr(loss_fn, "extra", {}))
        fwd_bwd()  # warm-up before measuring memory (compilation, lazy inits)
        seen: dict[Any, int] = {}  # the distinct storages autograd saves for backward: their bytes

        def pack(t):
            st = t.untyped_storage()
            seen.setdefault((st.data_ptr(), st.nbytes()), st.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss_fn(x, sigma)
        extra["saved_bytes"] = sum(seen.values())
        if case.device.type == "cuda":
            synchronize(case.device)
            torch.cuda.reset_peak_memory_stats(case.device)
            base = torch.cuda.memory_allocated(case.device)
            fwd_bwd()
            synchronize(case.device)
            extra["peak_bytes"] = torch.cuda.max_memory_allocated(case.device) - base
        return fwd_bwd, extra | {"noise_tensor_bytes": x.nbytes}

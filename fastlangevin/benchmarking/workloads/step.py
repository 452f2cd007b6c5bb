"""Workload ``langevin_step``: one Langevin update ``x + eps * s + sqrt(2 eps) * z``.

Bytes the op must move: read ``x`` and ``s``, write the result (in place: ``x`` itself) —
``3 * numel * itemsize``; the noise never has to touch memory. Every provider is charged the
same count, so GB/s compares implementations of one op (an eager expression that moves 8x
this still gets the 3x figure: that is the point of "effective" bandwidth).

Provider factory signature (``Provider.make``)::

    make(case, s, eps, noise_scale) -> step(x) -> out

``noise_scale`` None means the Langevin default ``sqrt(2 eps)``, 0.0 the deterministic update
(a provider that cannot turn the noise off raises ``ProviderUnavailable``). In mode
``"inplace"``, ``step(x)`` must update ``x`` and return it (unless the provider ``rebinds``: then
it returns the new state as a new tensor, like ``x = x + ...`` in a user's loop); in mode
``"out"`` it returns a new tensor (or a preallocated output buffer) and leaves ``x`` alone.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from ..checks import check_deterministic, check_fresh, check_noise, check_output_like, noise_statistics
from ..registry import BenchOptions, Case, Provider, ProviderUnavailable, Workload, register_workload
from .common import call_checked, compile_unavailable, compiled_step, make_state, triton_unavailable

#: Noise statistics need enough draws: cases smaller than this are checked at this size.
MIN_CHECK_NUMEL = 1 << 16
#: The Triton interpreter runs on the CPU in Python: only tiny sizes.
MAX_INTERPRETER_NUMEL = 1 << 18


def default_noise(eps: float, noise_scale: Optional[float]) -> float:
    return math.sqrt(2.0 * eps) if noise_scale is None else float(noise_scale)


# ---------------------------------------------------------------------------------------
# Providers: fastlangevin
# ---------------------------------------------------------------------------------------
def _fastlangevin_make(backend: str) -> Callable:
    def make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
        import fastlangevin as fl

        if case.mode == "inplace":
            return lambda x: fl.langevin_step_(x, s, eps, noise_scale, backend=backend)
        return lambda x: fl.langevin_step(x, s, eps, noise_scale, backend=backend)

    return make


# ---------------------------------------------------------------------------------------
# Providers: eager PyTorch and torch.compile
# ---------------------------------------------------------------------------------------
def _eager_make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
    """The textbook expression (out of place even in the in-place mode: ``x = x + ...``)."""
    if noise_scale is None:
        return lambda x: x + eps * s + (2 * eps) ** 0.5 * torch.randn_like(x)
    b = float(noise_scale)
    return lambda x: x + eps * s + b * torch.randn_like(x)


def _eager_inplace_make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
    """Best eager form: noise drawn at its scale into a reused buffer, then two in-place adds
    (3 kernels, no allocation). Mode "out" writes into a reused output buffer instead of x."""
    b = default_noise(eps, noise_scale)
    z = torch.empty_like(s)
    if case.mode == "inplace":

        def step(x):
            z.normal_(0.0, b)
            return x.add_(s, alpha=eps).add_(z)

        return step
    out = torch.empty_like(s)

    def step_out(x):
        z.normal_(0.0, b)
        return torch.add(x, s, alpha=eps, out=out).add_(z)

    return step_out


def _compile_make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
    """``torch.compile`` of the textbook expression (default mode, static shapes, one graph);
    in the in-place mode the result is copied into x inside the graph (one fused kernel)."""
    b = default_noise(eps, noise_scale)

    def build():
        if case.mode == "inplace":

            def f(x, s):
                x.copy_(x + eps * s + b * torch.randn_like(x))
                return x

        else:

            def f(x, s):
                return x + eps * s + b * torch.randn_like(x)

        return f

    return compiled_step(case, (eps, b), build, s)


# ---------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------
class LangevinStepWorkload(Workload):
    name = "langevin_step"
    description = "Langevin step x + eps*s + sqrt(2 eps)*z (fp32, bf16; in place and out of place)"
    bytes_note = "langevin_step: 3 x numel x itemsize (read x, read s, write the new state; z never touches memory)"
    default_sizes_cuda = tuple(range(16, 29, 2))
    default_sizes_cpu = (12, 16, 20)
    dtypes = ("fp32", "bf16", "fp16")
    modes = ("out", "inplace")

    def bytes_moved(self, case: Case) -> int:
        return 3 * case.numel * torch.empty((), dtype=case.dtype).element_size()

    def setup(self, case: Case, opts: BenchOptions) -> Dict[str, Any]:
        x, s = make_state(case.numel, case.dtype, case.device, opts.seed)
        return {"x": x, "s": s}

    def copy_baseline(self, case: Case, inputs) -> Tuple[torch.Tensor, torch.Tensor]:
        return inputs["x"], torch.empty_like(inputs["x"])

    def check(self, provider: Provider, case: Case, inputs, opts: BenchOptions) -> Dict[str, Any]:
        if case.numel >= MIN_CHECK_NUMEL:
            x, s = inputs["x"], inputs["s"]
        else:
            x, s = make_state(MIN_CHECK_NUMEL, case.dtype, case.device, opts.seed + 1)
        eps = opts.eps
        result: Dict[str, Any] = {"numel": x.numel()}

        def call(step, what):
            return call_checked(step, x, case, provider, what)

        try:
            step0 = provider.make(case, s, eps, 0.0)
        except ProviderUnavailable as exc:
            result["noise_off"] = f"not checked: {exc}"
        else:
            result["noise_off"] = check_deterministic(call(step0, "noise-off output"), x, s, eps)
        b = math.sqrt(2.0 * eps)
        step = provider.make(case, s, eps, None)
        out1 = call(step, "noisy output")
        out2 = call(step, "second noisy output")
        check_output_like(out1, x, "noisy output")
        result["noise"] = check_noise(noise_statistics(out1, x, s, eps, b), case.dtype, b)
        result["fresh_fraction"] = check_fresh(out1, out2)
        return result

    def timed(self, provider: Provider, case: Case, inputs, opts: BenchOptions):
        s = inputs["s"]
        step = provider.make(case, s, opts.eps, None)
        x = inputs["x"].clone() if case.mode == "inplace" else inputs["x"]
        extra = {}
        compiled = getattr(step, "compiled_fn", None)
        if compiled is not None and compiled.first_call_ms is not None:
            extra["compile_ms"] = compiled.first_call_ms  # compiled during the check, same function
        return (lambda: step(x)), extra


def register(workload: LangevinStepWorkload) -> None:
    add = workload.add_provider
    add(
        Provider(
            "triton",
            "fastlangevin Triton",
            _fastlangevin_make("triton"),
            kind="ours",
            unavailable=lambda c, o: triton_unavailable(c, o, MAX_INTERPRETER_NUMEL),
        )
    )
    add(Provider("torch", "fastlangevin PyTorch fallback", _fastlangevin_make("torch"), kind="ours"))
    add(Provider("eager", "textbook eager x + eps*s + (2*eps)**0.5*randn_like(x)", _eager_make, rebinds=True))
    add(Provider("eager_inplace", "eager, best in-place form (normal_ into a buffer, 2 add_)", _eager_inplace_make))
    add(Provider("compile", "torch.compile of the textbook expression", _compile_make, unavailable=compile_unavailable))
    from ..peers import register_step_peers

    register_step_peers(workload)


WORKLOAD = register_workload(LangevinStepWorkload())
register(WORKLOAD)

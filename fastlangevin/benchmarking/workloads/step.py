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

from ..checks import CheckFailed, check_deterministic, check_fresh, check_noise, noise_statistics
from ..registry import BenchOptions, Case, Provider, ProviderUnavailable, Workload, register_workload

#: Noise statistics need enough draws: cases smaller than this are checked at this size.
MIN_CHECK_NUMEL = 1 << 16
#: The state is shaped ``[numel // ROW, 1, 1, ROW]`` (image-like, as peers' schedulers expect).
ROW = 1024
#: The Triton interpreter runs on the CPU in Python: only tiny sizes.
MAX_INTERPRETER_NUMEL = 1 << 18


def state_shape(numel: int) -> Tuple[int, ...]:
    row = ROW if numel % ROW == 0 else numel
    return (numel // row, 1, 1, row)


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


def _triton_unavailable(case: Case, opts: BenchOptions) -> Optional[str]:
    from ... import _backend

    if case.device.type == "cpu":
        if not opts.interpret:
            return "needs a CUDA GPU (pass --interpret to run the Triton interpreter at tiny sizes)"
        if case.numel > MAX_INTERPRETER_NUMEL:
            return f"interpreter limited to <= 2^{MAX_INTERPRETER_NUMEL.bit_length() - 1} elements"
    try:
        _backend.resolve_backend(case.device, "triton")
    except Exception as exc:
        return str(exc)
    return None


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


class _CompiledStep:
    """A ``torch.compile``'d step that remembers how long its first call took (the compile
    warm-up, reported apart from the timings). Shared by the check and the timing of a case."""

    def __init__(self, compiled):
        self.compiled, self.first_call_ms = compiled, None

    def bind(self, s: torch.Tensor):
        return lambda x: self(x, s)

    def __call__(self, x, s):
        if self.first_call_ms is not None:
            return self.compiled(x, s)
        import time

        t0 = time.perf_counter()
        out = self.compiled(x, s)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        self.first_call_ms = (time.perf_counter() - t0) * 1e3
        return out


_COMPILED: Dict[Any, Any] = {"case": None}


def _compile_make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
    """``torch.compile`` of the textbook expression (default mode, static shapes, one graph).

    Dynamo's cache is reset when a new case starts, so a long size sweep never hits the
    recompile limit (past it, dynamo would silently run eager code); within a case the compiled
    function is shared by the check and the timing (the step tensor ``s`` is an argument, not a
    constant), so a case compiles once per noise setting."""
    import torch._dynamo

    if _COMPILED["case"] != case:
        torch._dynamo.reset()
        _COMPILED.clear()
        _COMPILED["case"] = case
    b = default_noise(eps, noise_scale)
    key = (eps, b)
    if key not in _COMPILED:
        if case.mode == "inplace":

            def f(x, s):
                x.copy_(x + eps * s + b * torch.randn_like(x))
                return x

        else:

            def f(x, s):
                return x + eps * s + b * torch.randn_like(x)

        _COMPILED[key] = _CompiledStep(torch.compile(f, dynamic=False, fullgraph=True))
    step = _COMPILED[key].bind(s)
    step.compiled_step = _COMPILED[key]
    return step


def _compile_unavailable(case: Case, opts: BenchOptions) -> Optional[str]:
    if case.device.type == "cpu":
        import shutil

        if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            return "torch.compile on CPU needs a C++ compiler (none on PATH)"
    return None


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

    def make_inputs(self, numel: int, dtype: torch.dtype, device: torch.device, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device=device).manual_seed(seed)
        shape = state_shape(numel)
        x = torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype)
        s = torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype)
        return x, s

    def setup(self, case: Case, opts: BenchOptions) -> Dict[str, Any]:
        x, s = self.make_inputs(case.numel, case.dtype, case.device, opts.seed)
        return {"x": x, "s": s}

    def copy_baseline(self, case: Case, inputs) -> Tuple[torch.Tensor, torch.Tensor]:
        return inputs["x"], torch.empty_like(inputs["x"])

    def check(self, provider: Provider, case: Case, inputs, opts: BenchOptions) -> Dict[str, Any]:
        if case.numel >= MIN_CHECK_NUMEL:
            x, s = inputs["x"], inputs["s"]
        else:
            x, s = self.make_inputs(MIN_CHECK_NUMEL, case.dtype, case.device, opts.seed + 1)
        eps = opts.eps
        result: Dict[str, Any] = {"numel": x.numel()}

        def call(step, what):
            xc = x.clone()
            out = step(xc)
            if case.mode == "inplace" and not provider.rebinds:
                if out is not xc and (not isinstance(out, torch.Tensor) or out.data_ptr() != xc.data_ptr()):
                    raise CheckFailed(f"{what}: in-place provider returned a new tensor instead of updating x")
            else:
                if isinstance(out, torch.Tensor) and out.data_ptr() == xc.data_ptr():
                    raise CheckFailed(f"{what}: out-of-place provider overwrote x")
                if not torch.equal(xc, x):
                    raise CheckFailed(f"{what}: out-of-place provider modified x")
            return out.clone() if isinstance(out, torch.Tensor) else out

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
        from ..checks import check_output_like

        check_output_like(out1, x, "noisy output")
        result["noise"] = check_noise(noise_statistics(out1, x, s, eps, b), case.dtype, b)
        result["fresh_fraction"] = check_fresh(out1, out2)
        return result

    def timed(self, provider: Provider, case: Case, inputs, opts: BenchOptions):
        s = inputs["s"]
        step = provider.make(case, s, opts.eps, None)
        x = inputs["x"].clone() if case.mode == "inplace" else inputs["x"]
        extra = {}
        compiled = getattr(step, "compiled_step", None)
        if compiled is not None and compiled.first_call_ms is not None:
            extra["compile_ms"] = compiled.first_call_ms  # compiled during the check, same function
        return (lambda: step(x)), extra


def register(workload: LangevinStepWorkload) -> None:
    add = workload.add_provider
    add(Provider("triton", "fastlangevin Triton", _fastlangevin_make("triton"), kind="ours", unavailable=_triton_unavailable))
    add(Provider("torch", "fastlangevin PyTorch fallback", _fastlangevin_make("torch"), kind="ours"))
    add(Provider("eager", "textbook eager x + eps*s + (2*eps)**0.5*randn_like(x)", _eager_make, rebinds=True))
    add(Provider("eager_inplace", "eager, best in-place form (normal_ into a buffer, 2 add_)", _eager_inplace_make))
    add(Provider("compile", "torch.compile of the textbook expression", _compile_make, unavailable=_compile_unavailable))
    from ..peers import register_step_peers

    register_step_peers(workload)


WORKLOAD = register_workload(LangevinStepWorkload())
register(WORKLOAD)

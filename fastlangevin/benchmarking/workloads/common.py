"""Helpers shared by the workloads: seeded inputs, the state-update workload (step, corrector), the
in/out-of-place contract, torch.compile with its warm-up apart, the fastlangevin and Triton providers."""

from __future__ import annotations

import functools
import shutil
import time
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import torch

from ..checks import check_fresh, check_output_like
from ..engine import Case, CheckFailed, Provider, Workload

#: Noise statistics need enough draws: smaller cases are checked at this size.
MIN_CHECK_NUMEL = 1 << 16


def make_state(shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int, n: int = 2):
    """``n`` tensors of N(0, 1) draws, drawn in fp32 from a fixed seed and cast."""
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype) for _ in range(n)]


def call_checked(step: Callable, x: torch.Tensor, case: Case, provider: Provider, what: str) -> torch.Tensor:
    """Run ``step`` on a copy of ``x``, check the in-place / out-of-place contract, return a copy."""
    xc = x.clone()
    out = step(xc)
    same = isinstance(out, torch.Tensor) and out.data_ptr() == xc.data_ptr()
    if case.mode == "inplace" and not provider.rebinds and not same:
        raise CheckFailed(f"{what}: in-place provider returned a new tensor instead of updating x")
    if (case.mode == "out" or provider.rebinds) and (same or not torch.equal(xc, x)):
        raise CheckFailed(f"{what}: out-of-place provider modified x")
    return out.clone() if isinstance(out, torch.Tensor) else out


class StateUpdate(Workload):
    """An update ``x ← x + a s + b z`` of a state by a score-like ``s`` (both N(0, 1) draws): the step,
    the corrector. Provider factory: ``make(case, s, *self.arguments(opts, noisy)) -> step(x)``.
    Check: ``check_noise_off`` (where the workload has one), then two noisy calls: the first must pass
    ``check_noisy``, the second must draw different noise. Cases under :data:`MIN_CHECK_NUMEL` elements
    are checked on fresh inputs of that size (noise statistics need the draws)."""

    def arguments(self, opts, noisy: bool = True) -> tuple:
        raise NotImplementedError

    def check_noise_off(self, provider, case, x, s, opts) -> Dict[str, Any]:
        return {}

    def check_noisy(self, out, x, s, case, opts) -> Dict[str, Any]:
        raise NotImplementedError

    def setup(self, case, opts):
        x, s = make_state(case.shape, case.dtype, case.device, opts.seed)
        return {"x": x, "s": s}

    def check(self, provider, case, inputs, opts):
        x, s = inputs["x"], inputs["s"]
        if case.numel < MIN_CHECK_NUMEL:
            x, s = make_state(self.shape_for(MIN_CHECK_NUMEL), case.dtype, case.device, opts.seed + 1)
        result = {"numel": x.numel(), **self.check_noise_off(provider, case, x, s, opts)}
        step = provider.make(case, s, *self.arguments(opts))
        out1 = call_checked(step, x, case, provider, f"{self.name} output")
        out2 = call_checked(step, x, case, provider, f"second {self.name} output")
        check_output_like(out1, x, f"{self.name} output")
        return result | self.check_noisy(out1, x, s, case, opts) | {"fresh_fraction": check_fresh(out1, out2)}

    def timed(self, provider, case, inputs, opts):
        step = provider.make(case, inputs["s"], *self.arguments(opts))
        x = inputs["x"].clone() if case.mode == "inplace" else inputs["x"]
        return (lambda: step(x)), dict(getattr(step, "extra", {}))


_COMPILED: Dict[Any, Any] = {"case": None}


def compiled(case: Case, key: Hashable, build: Callable[[], Callable], *bound) -> Callable:
    """``torch.compile(build(), dynamic=False, fullgraph=True)``, called as ``fn(*args, *bound)``; one
    per case and ``key``: dynamo's cache is reset at each new case (a long sweep never hits the
    recompile limit, past which it would silently run eager code); the check and the timing share it.
    The first call's time, the compile warm-up, lands in ``.extra["compile_ms"]``, apart from the timings."""
    import torch._dynamo

    if _COMPILED["case"] != case:
        torch._dynamo.reset()
        _COMPILED.clear()
        _COMPILED["case"] = case
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(build(), dynamic=False, fullgraph=True), {}
    fn, extra = _COMPILED[key]

    def call(*args):
        if extra:
            return fn(*args, *bound)
        t0 = time.perf_counter()
        out = fn(*args, *bound)
        if case.device.type == "cuda":
            torch.cuda.synchronize(case.device)
        extra["compile_ms"] = (time.perf_counter() - t0) * 1e3
        return out

    call.extra = extra
    return call


def compile_unavailable(case: Case, opts) -> Optional[str]:
    if case.device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "torch.compile on CPU needs a C++ compiler (none on PATH)"
    return None


def triton_unavailable(limit: int = 1 << 18) -> Callable[[Case, Any], Optional[str]]:
    """Why the Triton provider cannot run a case: no GPU (unless ``--interpret``, up to ``limit``)."""

    def why(case: Case, opts) -> Optional[str]:
        from ... import _backend

        if case.device.type == "cpu":
            if not opts.interpret:
                return "needs a CUDA device (--device cuda; or --interpret for Triton's interpreter at tiny sizes)"
            if case.numel > limit:
                return f"interpreter limited to <= 2^{limit.bit_length() - 1} elements"
        try:
            _backend.resolve_backend(case.device, "triton")
        except Exception as exc:
            return str(exc)
        return None

    return why


def ours(make: Callable, what: str, limit: int = 1 << 18) -> Tuple[Provider, Provider]:
    """The Triton and PyTorch-fallback providers of a fastlangevin op: ``make(..., backend=)`` on each."""
    triton, torch_ = functools.partial(make, backend="triton"), functools.partial(make, backend="torch")
    return (
        Provider("triton", f"fastlangevin {what} (Triton)", triton, "ours", triton_unavailable(limit)),
        Provider("torch", f"fastlangevin {what} (PyTorch fallback)", torch_, "ours"),
    )

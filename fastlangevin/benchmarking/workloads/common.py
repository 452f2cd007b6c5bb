"""Helpers shared by the elementwise workloads (the step, the corrector)."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Hashable, Tuple

import torch

from ..checks import CheckFailed
from ..registry import Case, Provider

#: The state is shaped ``[numel // ROW, 1, 1, ROW]`` (image-like, as peers' schedulers expect).
ROW = 1024


def state_shape(numel: int) -> Tuple[int, ...]:
    row = ROW if numel % ROW == 0 else numel
    return (numel // row, 1, 1, row)


def make_state(
    numel: int, dtype: torch.dtype, device: torch.device, seed: int, s_scale: float = 1.0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x, s ~ N(0, 1)`` (``s`` scaled by ``s_scale``), drawn in fp32 and cast, from a fixed seed."""
    g = torch.Generator(device=device).manual_seed(seed)
    shape = state_shape(numel)
    x = torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype)
    s = (torch.randn(shape, generator=g, device=device, dtype=torch.float32) * s_scale).to(dtype)
    return x, s


def call_checked(step: Callable, x: torch.Tensor, case: Case, provider: Provider, what: str) -> torch.Tensor:
    """Run ``step`` on a copy of ``x`` and check the in-place / out-of-place contract; return a
    copy of the result (a provider may reuse its output buffer on the next call)."""
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


class CompiledFn:
    """A ``torch.compile``'d function that remembers how long its first call took (the compile
    warm-up, reported apart from the timings)."""

    def __init__(self, compiled):
        self.compiled, self.first_call_ms = compiled, None

    def __call__(self, *args):
        if self.first_call_ms is not None:
            return self.compiled(*args)
        t0 = time.perf_counter()
        out = self.compiled(*args)
        dev = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        if dev is not None and dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.first_call_ms = (time.perf_counter() - t0) * 1e3
        return out


_COMPILED: Dict[Any, Any] = {"case": None}


def compiled_for_case(case: Case, key: Hashable, build: Callable[[], Callable]) -> CompiledFn:
    """``torch.compile(build(), dynamic=False, fullgraph=True)``, cached per case and ``key``.

    Dynamo's cache is reset when a new case starts, so a long size sweep never hits the
    recompile limit (past it, dynamo would silently run eager code); within a case the check
    and the timing share one compiled function (tensors are arguments, not constants)."""
    import torch._dynamo

    if _COMPILED["case"] != case:
        torch._dynamo.reset()
        _COMPILED.clear()
        _COMPILED["case"] = case
    if key not in _COMPILED:
        _COMPILED[key] = CompiledFn(torch.compile(build(), dynamic=False, fullgraph=True))
    return _COMPILED[key]


def compiled_step(case: Case, key: Hashable, build: Callable[[], Callable], s: torch.Tensor) -> Callable:
    """``step(x) = compiled(x, s)`` over :func:`compiled_for_case`, exposing ``compiled_fn``
    (the harness reads its first-call compile time)."""
    compiled = compiled_for_case(case, key, build)

    def step(x):
        return compiled(x, s)

    step.compiled_fn = compiled
    return step


def compile_unavailable(case: Case, opts) -> Any:
    if case.device.type == "cpu":
        import shutil

        if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            return "torch.compile on CPU needs a C++ compiler (none on PATH)"
    return None


def triton_unavailable(case: Case, opts, max_interpreter_numel: int = 1 << 18):
    from ... import _backend

    if case.device.type == "cpu":
        if not opts.interpret:
            return "needs a CUDA device (--device cuda; or --interpret for Triton's interpreter at tiny sizes)"
        if case.numel > max_interpreter_numel:
            return f"interpreter limited to <= 2^{max_interpreter_numel.bit_length() - 1} elements"
    try:
        _backend.resolve_backend(case.device, "triton")
    except Exception as exc:
        return str(exc)
    return None

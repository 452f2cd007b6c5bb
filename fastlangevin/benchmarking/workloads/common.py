"""Helpers shared by the workloads: seeded inputs, the in/out-of-place contract, torch.compile, Triton."""

from __future__ import annotations

import shutil
import time
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import torch

from ..engine import Case, CheckFailed, Provider

#: Noise statistics need enough draws: smaller cases are checked at this size.
MIN_CHECK_NUMEL = 1 << 16


def make_state(shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int, n: int = 2):
    """``n`` tensors of N(0, 1) draws, drawn in fp32 from a fixed seed and cast."""
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype) for _ in range(n)]


def check_inputs(w, case: Case, inputs, opts):
    """``x, s`` of the case, or fresh ones of :data:`MIN_CHECK_NUMEL` elements for small cases."""
    if case.numel >= MIN_CHECK_NUMEL:
        return inputs["x"], inputs["s"]
    return make_state(w.shape_for(MIN_CHECK_NUMEL), case.dtype, case.device, opts.seed + 1)


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


_COMPILED: Dict[Any, Any] = {"case": None}


def compiled(case: Case, key: Hashable, build: Callable[[], Callable]) -> Callable:
    """``torch.compile(build(), dynamic=False, fullgraph=True)``, one per case and ``key``: dynamo's
    cache is reset at each new case (a long sweep never hits the recompile limit, past which it would
    silently run eager code); the check and the timing share it. Its ``first_call_ms`` is the
    compile warm-up, reported apart from the timings."""
    import torch._dynamo

    if _COMPILED["case"] != case:
        torch._dynamo.reset()
        _COMPILED.clear()
        _COMPILED["case"] = case
    if key not in _COMPILED:
        fn = torch.compile(build(), dynamic=False, fullgraph=True)

        def call(*args):
            if call.first_call_ms is not None:
                return fn(*args)
            t0 = time.perf_counter()
            out = fn(*args)
            if case.device.type == "cuda":
                torch.cuda.synchronize(case.device)
            call.first_call_ms = (time.perf_counter() - t0) * 1e3
            return out

        call.first_call_ms = None
        _COMPILED[key] = call
    return _COMPILED[key]


def compile_extra(key: Hashable) -> Dict[str, float]:
    fn = _COMPILED.get(key)
    return {"compile_ms": fn.first_call_ms} if fn is not None and fn.first_call_ms is not None else {}


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


def ours(make: Callable[[str], Callable], what: str, limit: int = 1 << 18) -> Tuple[Provider, Provider]:
    """The Triton and PyTorch-fallback providers of a fastlangevin op; ``make(backend)`` → factory."""
    return (
        Provider("triton", f"fastlangevin {what} (Triton)", make("triton"), "ours", triton_unavailable(limit)),
        Provider("torch", f"fastlangevin {what} (PyTorch fallback)", make("torch"), "ours"),
    )

"""Helpers shared by the workloads: seeded inputs, the fastlangevin providers (Triton and PyTorch
fallback), the ``torch.compile`` provider of an eager one (its warm-up apart), and when they can run."""

import functools
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch

from ... import _backend
from ..engine import Case, Provider, synchronize

#: Noise statistics need enough draws: smaller cases are checked at this size.
MIN_CHECK_NUMEL = 1 << 16
_COMPILED: dict[Any, Any] = {}  # compile_provider's: "case" -> the current case, factory arguments -> (fn, extra)


def make_state(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int, n: int = 2):
    """``n`` tensors of N(0, 1) draws, drawn in fp32 from a fixed seed and cast."""
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype) for _ in range(n)]


def compile_unavailable(case: Case, opts) -> str | None:
    no_cxx = case.device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    return "torch.compile on CPU needs a C++ compiler (none on PATH)" if no_cxx else None


def compile_provider(label: str, eager: Callable) -> Provider:
    """``compile``: ``torch.compile(dynamic=False, fullgraph=True)`` of what ``eager`` makes (in place: copied
    into x in the graph), one per case and arguments, shared by check and timing; dynamo is reset at each new
    case (past its recompile limit it would silently run eager code). The first call's time, the compile
    warm-up, lands in ``.extra["compile_ms"]``, apart from the timings."""

    def make(case, *args):
        import torch._dynamo

        if _COMPILED.get("case") != case:
            torch._dynamo.reset()
            _COMPILED.clear()
            _COMPILED["case"] = case
        if args not in _COMPILED:
            f = eager(case, *args)
            g = (lambda x: x.copy_(f(x))) if case.mode == "inplace" else f
            _COMPILED[args] = torch.compile(g, dynamic=False, fullgraph=True), {}
        fn, extra = _COMPILED[args]

        def call(*inputs):
            t0 = None if extra else time.perf_counter()
            out = fn(*inputs)
            if t0 is not None:
                synchronize(case.device)
                extra["compile_ms"] = (time.perf_counter() - t0) * 1e3
            return out

        call.extra = extra
        return call

    return Provider("compile", label, make, unavailable=compile_unavailable)


def triton_unavailable(case: Case, opts, limit: int = 1 << 18) -> str | None:
    """Why the Triton provider cannot run a case: no GPU (unless ``--interpret``, up to ``limit`` elements)."""
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


def ours(make: Callable, what: str, limit: int = 1 << 18) -> tuple[Provider, Provider]:
    """The Triton and PyTorch-fallback providers of a fastlangevin op: ``make(..., backend=)`` on each."""
    triton, torch_ = functools.partial(make, backend="triton"), functools.partial(make, backend="torch")
    why = functools.partial(triton_unavailable, limit=limit)
    return (
        Provider("triton", f"fastlangevin {what} (Triton)", triton, "ours", why),
        Provider("torch", f"fastlangevin {what} (PyTorch fallback)", torch_, "ours"),
    )

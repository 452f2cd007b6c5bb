"""Backend selection: which implementation (Triton kernel or PyTorch fallback) runs an op.

Rules, in order:

1. an explicit ``backend=`` argument ("triton", "torch" or "auto"/None);
2. the environment variable ``FASTLANGEVIN_BACKEND`` (same values);
3. auto: Triton for CUDA tensors when Triton imports, the PyTorch fallback otherwise.

``"triton"`` on a CPU tensor runs the kernel under Triton's interpreter, which must have
been switched on (``TRITON_INTERPRET=1``) before fastlangevin's kernels were imported;
otherwise it raises :class:`BackendUnavailableError` rather than silently falling back.

Every op implementation calls :func:`record` with the backend that actually ran, so tests
(and curious users) can assert it with :func:`track_backends`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator, List, Optional, Tuple

import torch

BACKENDS = ("triton", "torch")
ENV_VAR = "FASTLANGEVIN_BACKEND"


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this tensor / machine."""


_UNSET = object()
_TRITON_IMPORT_ERROR = _UNSET


#: Tensors kept across calls (per-thread buffers, cached scalars and index tables, seed buffers) are
#: made with inference mode off, at each place that makes one (``with torch.inference_mode(False)``, or
#: :func:`kept` on a cached factory). Made inside ``torch.inference_mode()`` they would be inference
#: tensors, which a later normal call can neither write in place nor save for backward: a first call
#: inside inference mode would break every later one (``tests/test_inference_mode.py``).
KEPT = "tensors kept across calls are made outside inference mode"


def kept(factory):
    """``factory`` (whose tensors are cached, e.g. under ``functools.lru_cache``) run with inference mode
    off: see :data:`KEPT`. Put it under the cache decorator, so that a cache hit pays nothing."""

    @functools.wraps(factory)
    def made(*args, **kwargs):
        with torch.inference_mode(False):
            return factory(*args, **kwargs)

    return made


def triton_import_error() -> Optional[str]:
    """None when ``import triton`` works, else the reason it does not (cached)."""
    global _TRITON_IMPORT_ERROR
    if _TRITON_IMPORT_ERROR is _UNSET:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _TRITON_IMPORT_ERROR = None
        except Exception as exc:  # ImportError, or a broken install raising anything
            _TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    return _TRITON_IMPORT_ERROR


def triton_available() -> bool:
    return triton_import_error() is None


def kernels_interpreted() -> bool:
    """Whether our kernels module was built for the interpreter (decided at import time)."""
    from .kernels import langevin_step as k

    try:
        from triton.runtime.interpreter import InterpretedFunction
    except Exception:
        return False
    return isinstance(k._langevin_step_kernel, InterpretedFunction)


def _normalise(name: Optional[str], source: str) -> str:
    if name is None:
        return "auto"
    if not isinstance(name, str) or name.lower() not in BACKENDS + ("auto",):
        raise ValueError(f"{source} must be one of 'triton', 'torch', 'auto' or None, got {name!r}")
    return name.lower()


_ENV_CACHE: dict = {}
_DEVICE_TYPES: dict = {}


def device_type(device: torch.device) -> str:
    """``device.type``, cached per device (the attribute builds a new string each time, ~1 µs)."""
    try:
        return _DEVICE_TYPES[device]
    except KeyError:
        t = _DEVICE_TYPES[device] = device.type
        return t


def env_setting(name: str) -> Optional[str]:
    """``os.environ.get(name) or None``, read once per process (an environment lookup costs
    ~1 µs, a tenth of a small step). Call :func:`reload_environment` after changing it."""
    try:
        return _ENV_CACHE[name]
    except KeyError:
        value = _ENV_CACHE[name] = os.environ.get(name) or None
        return value


def reload_environment() -> None:
    """Forget the cached ``FASTLANGEVIN_*`` settings: the next op reads the environment again."""
    _ENV_CACHE.clear()
    _RESOLVED.clear()
    for cache in _DERIVED:
        cache.clear()


# Callers' caches of choices derived from the settings (see derived_cache): cleared with them.
_DERIVED: List[dict] = []


def derived_cache() -> dict:
    """A new dict for choices computed from the cached settings and resolved backends (e.g. "may
    this argument combination take a straight path"); :func:`reload_environment` empties it."""
    cache: dict = {}
    _DERIVED.append(cache)
    return cache


# (device, backend argument) -> resolved backend, for the combinations that cannot change
# during a process once resolved (the environment is cached, Triton's import state is fixed).
_RESOLVED: dict = {}


def resolve_backend(device: torch.device, backend: Optional[str] = None) -> str:
    """The backend an op runs on a tensor of ``device`` with the given ``backend=`` argument.

    Raises :class:`BackendUnavailableError` when "triton" is asked for and cannot run.
    """
    key = (device, backend)  # hashing a device is cheap; `device.type` costs ~1 µs
    try:
        return _RESOLVED[key]
    except (KeyError, TypeError):  # TypeError: an unhashable backend argument, refused below
        pass
    chosen = _resolve(device, backend)
    _RESOLVED[key] = chosen
    return chosen


def _resolve(device: torch.device, backend: Optional[str]) -> str:
    choice = _normalise(backend, "backend")
    if choice == "auto":
        choice = _normalise(env_setting(ENV_VAR), f"environment variable {ENV_VAR}")
    device = torch.device(device)
    if choice == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if choice == "triton":
        err = triton_import_error()
        if err is not None:
            raise BackendUnavailableError(f"backend='triton' requested but Triton does not import ({err})")
        if device.type == "cpu":
            if not kernels_interpreted():
                raise BackendUnavailableError(
                    "backend='triton' on a CPU tensor needs Triton's interpreter: set "
                    "TRITON_INTERPRET=1 in the environment before importing fastlangevin "
                    "(or use backend='torch')"
                )
        elif device.type != "cuda":
            raise BackendUnavailableError(
                f"backend='triton' supports CUDA (and CPU via the interpreter), not {device.type}"
            )
    return choice


def backend_for(tensor: torch.Tensor, backend: Optional[str] = None) -> str:
    """Public: the backend fastlangevin's ops would use for ``tensor`` ("triton" or "torch")."""
    return resolve_backend(tensor.device, backend)


def can_call_directly(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether an op may run its implementation as a plain function, skipping the dispatcher.

    The Python path of a ``torch.library.custom_op`` costs ~100 µs a call (measured on CPU:
    argument default filling, autograd and dispatch wrappers), which dominates small-batch
    sampling loops. The implementation is the same function either way; the dispatcher is
    needed only where something intercepts it: torch.compile tracing, tensor subclasses
    (FakeTensor, ...), active function/dispatch modes, or autograd recording a graph.
    """
    if not no_interception():
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or (grad and t.requires_grad)):
            return False
    return True


_is_compiling = torch.compiler.is_compiling
try:
    _function_mode_on = torch._C._is_torch_function_mode_enabled
    _dispatch_modes = torch._C._len_torch_dispatch_stack
except AttributeError:  # pragma: no cover - private API moved: be safe, always use the dispatcher
    _function_mode_on, _dispatch_modes = (lambda: True), (lambda: 1)


def no_interception() -> bool:
    """No torch.compile tracing and no active torch function / dispatch mode: the tensor-free part
    of :func:`can_call_directly` (~0.3 µs; callers check their tensors' types themselves)."""
    return not (_is_compiling() or _function_mode_on() or _dispatch_modes())


# ---------------------------------------------------------------------------------------
# Recording which backend actually ran
# ---------------------------------------------------------------------------------------
_RECORDERS: List[List[Tuple[str, str]]] = []


def record(op: str, backend: str) -> None:
    for rec in _RECORDERS:
        rec.append((op, backend))


@contextlib.contextmanager
def track_backends() -> Iterator[List[Tuple[str, str]]]:
    """Context manager yielding a list that fills with ``(op_name, backend)`` per op run.

    >>> with track_backends() as ran:
    ...     langevin_step(x, s, 0.1)
    >>> ran
    [('langevin_step', 'torch')]
    """
    rec: List[Tuple[str, str]] = []
    _RECORDERS.append(rec)
    try:
        yield rec
    finally:
        _RECORDERS.remove(rec)

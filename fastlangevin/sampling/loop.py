"""The step loop shared by every sampler: options, tracing, profiling labels, CUDA graphs.

A sampler describes one step as two callables:

* ``prepare(j)`` — load step j's parameters (noise level, step size, time) into its *slots*:
  Python floats in eager mode, static device buffers under ``cuda_graph=True``;
* ``body(last)`` — score evaluation(s) and fused update(s), in place on the state tensors.

:class:`Loop` runs them eagerly, or captures ``body`` once in a CUDA graph and replays it:
every replay re-runs the captured ``torch.randint`` that fills the ops' seed tensor, so each
replay gets fresh noise, and the step's parameters are read from the static buffers that
``prepare`` refilled.

Profiler labels (``torch.profiler.record_function``, plus NVTX ranges when CUDA is present)
mark the phases of each step: ``fastlangevin.score``, ``fastlangevin.update``,
``fastlangevin.correct`` and ``fastlangevin.denoise`` (:data:`PHASES`).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch

PHASES = ("fastlangevin.score", "fastlangevin.update", "fastlangevin.correct", "fastlangevin.denoise")
NONFINITE_MODES = ("ignore", "raise")


# ---------------------------------------------------------------------------------------
# Profiler phases
# ---------------------------------------------------------------------------------------
_NVTX: list = []  # [torch.cuda.is_available()], asked once on first use


def _nvtx_enabled() -> bool:
    if not _NVTX:
        _NVTX.append(torch.cuda.is_available())
    return _NVTX[0]


_NO_LABEL = contextlib.nullcontext()
_profiler_enabled = torch.autograd._profiler_enabled


def labels_on() -> bool:
    """Whether :func:`phase` labels are recorded now (a torch profiler runs, or NVTX on CUDA
    machines); a sampler step skips entering the no-op label otherwise (~0.3 µs a step)."""
    return _profiler_enabled() or (_NVTX[0] if _NVTX else _nvtx_enabled())


@contextlib.contextmanager
def _labelled(name: str):
    with torch.profiler.record_function(name):
        if _nvtx_enabled():
            torch.cuda.nvtx.range_push(name)
            try:
                yield
            finally:
                torch.cuda.nvtx.range_pop()
        else:
            yield


def phase(name: str):
    """``record_function(name)`` (+ an NVTX range on CUDA machines) while a torch profiler runs.

    Without a profiler (and without CUDA, where NVTX ranges are always pushed for nsys) it is a
    shared no-op context: entering ``record_function`` costs ~10 µs a label, as much as a whole
    small step, and only a profiler reads it.
    """
    if labels_on():
        return _labelled(name)
    return _NO_LABEL


# ---------------------------------------------------------------------------------------
# Errors and checks
# ---------------------------------------------------------------------------------------
class NonFiniteError(FloatingPointError):
    """A state became NaN/Inf under ``on_nonfinite="raise"``; ``step`` is the step that did it."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def check_n(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be an int >= 1, got {n!r}")
    return n


def checked_score(s, x: torch.Tensor, fn_name: str = "score_fn") -> torch.Tensor:
    """``s`` must be a float tensor shaped like ``x`` on its device (metadata only: no sync)."""
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{fn_name} must return a torch.Tensor, got {type(s).__name__}")
    if s.shape != x.shape:
        raise ValueError(f"{fn_name} must return a tensor shaped like x {tuple(x.shape)}, got {tuple(s.shape)}")
    if s.device != x.device:
        raise ValueError(f"{fn_name} must return a tensor on x's device {x.device}, got {s.device}")
    if not s.dtype.is_floating_point:
        raise TypeError(f"{fn_name} must return a floating tensor, got {s.dtype}")
    return s


def eval_score(score_fn, x: torch.Tensor, *args) -> torch.Tensor:
    if labels_on():
        with _labelled("fastlangevin.score"):
            s = score_fn(x, *args)
    else:
        s = score_fn(x, *args)
    # the common case in one expression (~0.3 µs); anything else gets the checks with their messages
    if type(s) is torch.Tensor and s.shape == x.shape and s.device == x.device and s.dtype.is_floating_point:
        return s
    return checked_score(s, x)


# ---------------------------------------------------------------------------------------
# Trace
# ---------------------------------------------------------------------------------------
@dataclass
class Trace:
    """Records the state every ``every`` steps into one preallocated device tensor.

    After a sampler ran: ``states`` is ``[R, *x.shape]`` on x's device (``states[0]`` is the
    starting state, ``states[r]`` the state after ``steps[r]`` steps) and ``steps`` the list of
    step counts. Recording is a device-to-device copy: no host transfer, no sync. Reusing a
    Trace for another run overwrites it.
    """

    every: int = 1
    states: Optional[torch.Tensor] = field(default=None, init=False)
    steps: List[int] = field(default_factory=list, init=False)

    def __post_init__(self):
        check_n("Trace.every", self.every)

    def _start(self, x: torch.Tensor, n_steps: int) -> None:
        self.steps = [0] + list(range(self.every, n_steps + 1, self.every))
        self.states = torch.empty((len(self.steps),) + tuple(x.shape), dtype=x.dtype, device=x.device)
        self.states[0].copy_(x)

    def _record(self, step: int, x: torch.Tensor) -> None:
        if step % self.every == 0:
            self.states[step // self.every].copy_(x)


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------
class _LineStream:
    """A file for tqdm when stderr is not a terminal (logs, CI): each refresh becomes one
    plain line instead of a ``\\r`` overwrite, so a log holds a few readable lines, not KBs."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> None:
        line = s.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


#: Seconds between progress lines when stderr is not a terminal.
LOG_INTERVAL_S = 30.0


def _progress_bar(progress, total: int, desc: str):
    """A tqdm bar (rate and ETA in its default format). On a terminal or in a notebook: tqdm's
    live bar; otherwise a line every :data:`LOG_INTERVAL_S` seconds and one at the end."""
    if not progress:
        return None
    from tqdm import std
    from tqdm.auto import tqdm

    stream = sys.stderr
    notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
    if notebook or (hasattr(stream, "isatty") and stream.isatty()):
        return tqdm(total=total, desc=desc, unit="step")
    return std.tqdm(
        total=total,
        desc=desc,
        unit="step",
        file=_LineStream(stream),
        mininterval=LOG_INTERVAL_S,
        maxinterval=LOG_INTERVAL_S,
        ncols=100,
        ascii=True,
    )


# ---------------------------------------------------------------------------------------
# Slots: per-step parameters
# ---------------------------------------------------------------------------------------
class Slot:
    """A per-step parameter, set by ``prepare`` and read by ``body``.

    Eager mode: a batch-wide float stays a Python float (a kernel scalar argument, nothing on
    the device); tensors are used as given. Under CUDA graphs (``static=True``): a buffer of
    fixed ``shape`` on the device, captured by address and refilled before every replay.
    Per-sample slots (``shape=(B,)``, e.g. the σ or t handed to score functions) are always
    device tensors.
    """

    def __init__(self, static: bool, device, dtype, shape=()):
        self.static, self.shape, self.device, self.dtype = static, tuple(shape), device, dtype
        self.value = 0.0
        self.buf: Optional[torch.Tensor] = None
        self._owned = False
        if static or self.shape:
            self._own()

    def _own(self) -> None:
        self.buf = torch.zeros(self.shape, device=self.device, dtype=self.dtype)
        self._owned = True

    def set(self, v) -> None:
        """``v``: a Python float, or a tensor broadcastable to the slot's shape."""
        if isinstance(v, torch.Tensor):
            if self.static:
                self.buf.copy_(v)
            else:
                v = v.to(self.dtype)
                self.buf = v if tuple(v.shape) == self.shape else v.expand(self.shape).contiguous()
                self._owned = False
        elif self.static or self.shape:
            if not self._owned:
                self._own()
            self.buf.fill_(float(v))
        else:
            self.value, self.buf, self._owned = float(v), None, False

    def get(self):
        return self.buf if self.buf is not None else self.value


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------
@dataclass
class LoopOptions:
    """Options every sampler takes (see the samplers' docstrings)."""

    generator: Optional[torch.Generator] = None
    callback: Optional[Callable[[int, torch.Tensor], None]] = None
    progress: bool = False
    trace: Optional[Trace] = None
    on_nonfinite: str = "ignore"
    cuda_graph: bool = False
    stats: Optional[object] = None  # a fastlangevin.RunningStats

    def validate(self, x: torch.Tensor) -> "LoopOptions":
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable(step, x) or None, got {type(self.callback).__name__}")
        if self.trace is not None and not isinstance(self.trace, Trace):
            raise TypeError(f"trace must be a fastlangevin.Trace or None, got {type(self.trace).__name__}")
        from .stats import RunningStats  # stats imports this module's helpers

        if self.stats is not None and not isinstance(self.stats, RunningStats):
            raise TypeError(f"stats must be a fastlangevin.RunningStats or None, got {type(self.stats).__name__}")
        if self.on_nonfinite not in NONFINITE_MODES:
            raise ValueError(f"on_nonfinite must be 'ignore' or 'raise', got {self.on_nonfinite!r}")
        if not isinstance(self.cuda_graph, bool):
            raise TypeError(f"cuda_graph must be a bool, got {type(self.cuda_graph).__name__}")
        if self.cuda_graph:
            if x.device.type != "cuda":
                raise ValueError(
                    f"cuda_graph=True captures GPU kernels and needs the state on a CUDA device, "
                    f"got x on {x.device.type!r}; "
                    "run without cuda_graph on this device"
                )
            if torch.cuda.is_current_stream_capturing():
                raise RuntimeError("cuda_graph=True cannot be used while another CUDA graph is being captured")
        return self


class Loop:
    """Runs ``n_steps`` of (prepare, body) with the options' callback / trace / progress / checks."""

    def __init__(
        self,
        name: str,
        opts: LoopOptions,
        state: Sequence[torch.Tensor],
        n_steps: int,
        describe: Callable[[int], str],
        *,
        warm_up: int = 0,
        checkpointer=None,
    ):
        """``warm_up``: steps run before the ``n_steps`` kept ones (MALA's adaptation): always
        eager, not seen by trace, stats and callback (which count kept steps from 1)."""
        self.name, self.opts, self.state, self.n, self.describe = name, opts, list(state), n_steps, describe
        self.warm = warm_up
        self.total = warm_up + n_steps
        self.ckpt = checkpointer  # a fastlangevin.sampling.checkpoint.Checkpointer or None

    @property
    def static(self) -> bool:
        return self.opts.cuda_graph

    def _after(self, j: int, bar) -> None:
        x = self.state[0]
        step = j + 1 - self.warm
        if self.opts.on_nonfinite == "raise" and not bool(torch.isfinite(x).all()):  # host sync (documented)
            where = f"step {step} of {self.n}" if step > 0 else f"warm-up step {j + 1} of {self.warm}"
            msg = f"{self.name}: non-finite values in the state after {where} ({self.describe(j)})"
            raise NonFiniteError(msg, step)
        if bar is not None:
            bar.update(1)
        if step == 0:  # the warm-up ended: the kept chain starts here
            self._start_records()
        if step > 0:
            self._record_step(step, x)
        if self.ckpt is not None and self.ckpt.due(j + 1, self.total):
            self.ckpt.write(self, j + 1, records_started=step >= 0)

    def _nothing_after(self) -> bool:
        """Whether :meth:`_after` has nothing to do at any step (no check, record, callback or
        checkpoint): the loop then skips calling it."""
        o = self.opts
        quiet = o.on_nonfinite != "raise" and o.callback is None and self.ckpt is None
        return quiet and o.trace is None and o.stats is None

    def _record_step(self, step: int, x: torch.Tensor) -> None:
        if self.opts.trace is not None:
            self.opts.trace._record(step, x)
        if self.opts.stats is not None:
            self.opts.stats._record(step, x)
        if self.opts.callback is not None:
            self.opts.callback(step, x)

    def _start_records(self) -> None:
        if self.opts.trace is not None:
            self.opts.trace._start(self.state[0], self.n)
        if self.opts.stats is not None:
            self.opts.stats._start(self.state[0], self.n)

    def run(self, prepare: Callable[[int], None], body: Callable[[bool], None], *, last_differs: bool = False) -> None:
        """``last_differs``: the last step runs ``body(True)`` (e.g. without noise); under CUDA
        graphs it then runs eagerly after the replays."""
        start = 0
        if self.warm == 0:
            self._start_records()
        if self.ckpt is not None and self.ckpt.resume is not None:
            start = self.ckpt.restore(self)  # after the records' start: restores them too
        bar = _progress_bar(self.opts.progress, self.total, self.name)
        if bar is not None and start:
            bar.update(start)
        last = self.total - 1
        try:
            if not self.opts.cuda_graph:
                if bar is None and self._nothing_after():
                    for j in range(start, self.total):
                        prepare(j)
                        body(j == last)
                    return
                for j in range(start, self.total):
                    prepare(j)
                    body(j == last)
                    self._after(j, bar)
                return
            for j in range(start, self.warm):
                prepare(j)
                body(False)
                self._after(j, bar)
            first = max(start, self.warm)
            stop = last if last_differs else self.total
            graph = self._capture(prepare, body, first) if stop > first else None
            for j in range(first, stop):
                prepare(j)
                graph.replay()
                self._after(j, bar)
            if last_differs:
                prepare(last)
                body(True)
                self._after(last, bar)
        finally:
            if bar is not None:
                bar.close()

    def _capture(self, prepare, body, j0: int = 0):
        """Warm up once (compiles kernels, sizes workspaces), undo its effect on the state and
        the generator, then record one ``body(False)`` (step ``j0``'s). Returns an object with ``replay()``."""
        self._warm_up(prepare, body, j0)
        prepare(j0)
        return self._record(body)

    def _generator(self) -> torch.Generator:
        if self.opts.generator is not None:
            return self.opts.generator
        device = self.state[0].device
        if device.type == "cuda":
            return torch.cuda.default_generators[
                device.index if device.index is not None else torch.cuda.current_device()
            ]
        return torch.default_generator

    def _warm_up(self, prepare, body, j0: int = 0) -> None:
        device = self.state[0].device
        gen = self._generator()
        snapshot = [t.clone() for t in self.state]
        gen_state = gen.get_state()
        if device.type == "cuda":  # warm-up on a side stream, as torch.cuda.graph requires
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                prepare(j0)
                body(False)
            torch.cuda.current_stream(device).wait_stream(side)
        else:
            prepare(j0)
            body(False)
        for t, s in zip(self.state, snapshot):
            t.copy_(s)
        gen.set_state(gen_state)

    def _record(self, body) -> "torch.cuda.CUDAGraph":
        graph = torch.cuda.CUDAGraph()
        if self.opts.generator is not None:
            if not hasattr(graph, "register_generator_state"):
                raise RuntimeError(
                    "cuda_graph=True with a custom generator needs torch>=2.6 (CUDAGraph.register_generator_state)"
                )
            graph.register_generator_state(self.opts.generator)
        try:
            with torch.cuda.graph(graph):
                body(False)
        except Exception as exc:
            raise RuntimeError(
                f"{self.name}: cuda_graph=True could not capture one step ({type(exc).__name__}: {exc}). "
                "The score function must be capturable: no host syncs (.item(), printing or branching on CUDA values), "
                "no CPU tensors moved to the GPU per call, fixed shapes. Run with cuda_graph=False otherwise."
            ) from exc
        return graph


# ---------------------------------------------------------------------------------------
# Arguments forwarded to the fused ops
# ---------------------------------------------------------------------------------------
def op_kwargs(x: torch.Tensor, *, clamp, generator, backend, rng, sample_offset) -> dict:
    """Validate (before any work) and return the keyword arguments every fused op call gets."""
    from .._backend import resolve_backend
    from .._validate import check_clamp, check_generator, check_offset
    from ..ops.langevin_step import resolve_rng

    check_clamp(clamp)
    check_generator(generator, x.device)
    check_offset("sample_offset", sample_offset)
    chosen = resolve_backend(x.device, backend)
    stream = resolve_rng(rng, chosen, x.device)
    # resolved once per run: the ops then skip the environment lookups per step (same choice, same numbers)
    return dict(clamp=clamp, generator=generator, backend=chosen, rng=stream, sample_offset=sample_offset)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of per-step parameters handed to ops and score functions: fp32 (fp64 for fp64 states)."""
    return torch.float64 if dtype == torch.float64 else torch.float32

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
device and ``tl.load``ed by the kernel. On the Triton path and on GPUs the step counter k is an
int64 device tensor and ``mix`` runs there (:func:`step_seed_tensor`): ``step()`` makes no host
sync, and a CUDA graph that captured a step replays fresh noise (the captured ``k += 1`` advances
it). Capture after one eager step (which creates the state); ``state_dict`` reads the counter.
Element j of the parameter with index i (its position over all param groups, in order,
counting parameters without a gradient too) takes element
``i · 2**42 + j`` of the project's stream under that seed (``fastlangevin/_rng.py``; the CPU
fallback's torch stream takes ``j < 64`` from a head region all parameters share, see
:func:`fastlangevin.fallback.optim.noise_index`), so the noise
never depends on how parameters are grouped, bucketed or chunked. ``(seed, step)`` is saved in
``state_dict()["noise_stream"]``: a loaded optimizer continues the stream exactly, whatever
generator it was built with. Replicas (DDP) built with the same seed draw identical noise.

One fused launch per param group and (device, parameter dtype, gradient dtype) bucket per step.
16-bit (bf16 / fp16) parameters keep an fp32 master copy in ``state["master"]``; the update runs
on it and the parameter is rewritten from it.
"""

from __future__ import annotations

import math
import operator
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch.autograd.graph import increment_version

from .. import _backend
from .._backend import resolve_backend
from .._rng import _SEED_HIGH, chunk_seed, draw_seed
from ..fallback import optim as _fb
from ..fallback.optim import splitmix64_tensor
from ..ops.langevin_step import resolve_rng
from ._update import OP_NAMES, run_update

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


def step_seed_tensor(seed: int, step: torch.Tensor) -> torch.Tensor:
    """:func:`step_seed` of an int64 step-counter tensor, on its device (no host round trip)."""
    return splitmix64_tensor(seed, step) & (_SEED_HIGH - 1)


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


try:  # torch.optim's global step hooks, which its step wrapper runs (and ours, see LangevinOptimizer.step)
    from torch.optim.optimizer import _global_optimizer_post_hooks as _GLOBAL_POST
    from torch.optim.optimizer import _global_optimizer_pre_hooks as _GLOBAL_PRE

    _profiling = torch._C._autograd._profiler_enabled
except (ImportError, AttributeError):  # pragma: no cover - private API moved: always take the full path
    _GLOBAL_PRE, _GLOBAL_POST, _profiling = {0: None}, {}, (lambda: True)

_CPU = torch.device("cpu")
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # Parameter disables __torch_function__: a plain tensor
_F32 = np.dtype(np.float32)  # builtin dtypes are singletons: `is` is the cheap test
_ONLY_TENSOR, _ONLY_F32, _ONLY_NP_F32 = {torch.Tensor}, {torch.float32}, {_F32}
_DATA_PTR, _DTYPE, _SHAPE = torch.Tensor.data_ptr, operator.attrgetter("dtype"), operator.attrgetter("shape")


class _CpuProgram:
    """The CPU fallback's step for an optimizer whose active parameters are all plain fp32 CPU
    tensors with fp32 gradients, with what does not change between steps cached: the layout
    (:class:`fastlangevin.fallback.optim._Plan`), numpy views of the parameters and states, the
    optimizer indices. Built after an ordinary step (which made the state); each step first checks,
    touching nothing, that it still applies — the same groups and parameters, the same parameters
    with a gradient, unmoved parameter storage (``data_ptr``), the same state tensors, every
    gradient a plain fp32 CPU tensor of its parameter's shape — else the ordinary step runs (its
    checks raise the errors) and a program is rebuilt. The update is
    :func:`fastlangevin.fallback.optim.run_numpy`: the fallback's arithmetic, bitwise.
    """

    def __init__(self, opt: "LangevinOptimizer", rng: str):
        self.state, self.rng, self.groups = opt.state, rng, []
        key = opt.STATE_KEY
        index = 0
        for group in opt.param_groups:
            params = list(group["params"])
            active = [p.grad is not None for p in params]
            act = [p for p, a in zip(params, active) if a]
            indices = [i for i, a in enumerate(active, index) if a]
            index += len(params)
            dicts = [opt.state[p] for p in act]
            states = [d[key] for d in dicts] if key is not None else []
            plan = _fb._plan(tuple(p.shape for p in act), indices, _CPU) if act else None
            # A small tensor's gradient is gathered by one torch._foreach_copy_ per group (in the plan's order,
            # flattened) where there are many (see grads); the others are read through numpy views.
            small = [False] * len(act)
            for ks in plan.packed if act else ():
                for k in ks:
                    small[k] = True
            n_small = plan.n_small if act else []
            gbuf = torch.empty(sum(n_small), dtype=torch.float32)
            cuts, off = [], 0
            for n in n_small:
                cuts.append(gbuf.numpy()[off : off + n] if n else None)
                off += n
            arrays = [p.detach().numpy() for p in act]
            small_idx = [k for k, sm in enumerate(small) if sm]
            large_idx = [k for k, sm in enumerate(small) if not sm]
            # views of gbuf shaped like the small parameters, in gather order: one _foreach_copy_ fills them
            # (no per-tensor reshape for torch.cat: measured 65 against 83 µs for ResNet-32's 81, caches cold)
            offsets = np.cumsum([0] + [act[k].numel() for k in small_idx]).tolist()
            gviews = [gbuf[o : o + act[k].numel()].view(act[k].shape) for o, k in zip(offsets, small_idx)]
            layout = (
                small_idx,
                [act[k].shape for k in small_idx],
                gviews,
                large_idx,
                [arrays[k].shape for k in large_idx],
                [a.shape for a in arrays],
            )
            self.groups.append(
                (group, params, active, act, [p.data_ptr() for p in act], layout, arrays, dicts, states,
                 [t.numpy() for t in states], plan, gbuf, cuts)
            )  # fmt: skip
        self.written = [p for g in self.groups for p in g[3]] + [t for g in self.groups for t in g[8]]
        self.key = key

    @staticmethod
    def build(opt: "LangevinOptimizer") -> Optional["_CpuProgram"]:
        """A program for ``opt``'s present parameters, or None where they are not all eligible."""
        key, rng = opt.STATE_KEY, None
        for group in opt.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if type(p) not in _PLAIN or type(g) is not torch.Tensor or p.device != _CPU or g.device != _CPU:
                    return None
                if p.dtype != torch.float32 or g.dtype != torch.float32 or g.layout != torch.strided:
                    return None
                if not p.is_contiguous() or p.is_inference() or g.shape != p.shape:
                    return None
                st = opt.state.get(p)
                if st is None or (key is not None and not isinstance(st.get(key), torch.Tensor)):
                    return None
                if key is not None:
                    t = st[key]
                    if type(t) is not torch.Tensor or t.device != _CPU or t.dtype != torch.float32:
                        return None
                    if t.shape != p.shape or not t.is_contiguous():
                        return None
                if resolve_backend(_CPU, opt._backend) != "torch":
                    return None
                rng = resolve_rng(opt._rng, "torch", _CPU)
        return _CpuProgram(opt, rng) if rng is not None else None

    def grads(self, opt: "LangevinOptimizer") -> Optional[list]:
        """Per group, ``(numpy gradients of its active parameters, flat small gradients per batch)``: with
        more than ``GATHER_NUMPY_MAX`` small tensors, this gathers their gradients into the group's flat
        buffer by one torch._foreach_copy_ (their entries None), else every gradient is a numpy view and the second
        item None (:func:`run_numpy` gathers them); None where the program does not apply."""
        if opt.state is not self.state or len(opt.param_groups) != len(self.groups):
            return None
        out = []
        key = self.key
        for group, (cached, params, active, act, ptrs, layout, _, dicts, states, _, _, gbuf, cuts) in zip(
            opt.param_groups, self.groups
        ):
            small_idx, small_shapes, gviews, large_idx, large_shapes, all_shapes = layout
            ps = group is cached and group["params"]
            if not ps or len(ps) != len(params) or not all(map(operator.is_, ps, params)):
                return None
            gs = [p.grad for p in ps]
            if [g is not None for g in gs] != active:
                return None
            if len(act) != len(ps):
                gs = [g for g in gs if g is not None]
            # Checks as whole-list builtins (C loops; ~0.5 µs a parameter less than a Python loop):
            # plain tensors, unmoved parameter storage, the small ones fp32 of their parameter's shape.
            if set(map(type, gs)) != _ONLY_TENSOR or list(map(_DATA_PTR, act)) != ptrs:
                return None
            if key is not None:
                get = opt.state.get
                for p, d, t in zip(act, dicts, states):
                    if get(p) is not d or d.get(key) is not t:
                        return None
            small = [gs[k] for k in small_idx]
            if len(small) <= _fb.GATHER_NUMPY_MAX:  # few: numpy views of every gradient, no gather op
                try:  # raises for sparse, bf16 or grad-requiring tensors
                    arrays = [g.numpy() for g in gs]
                except (RuntimeError, TypeError):
                    return None
                if list(map(_SHAPE, arrays)) != all_shapes or set(map(_DTYPE, arrays)) != _ONLY_NP_F32:
                    return None
                out.append((arrays, None))  # (run_numpy gathers the small ones from these views)
                continue
            if set(map(_DTYPE, small)) != _ONLY_F32 or list(map(_SHAPE, small)) != small_shapes:
                return None
            try:  # into our scratch: a failure (a sparse gradient, say) touches nothing of the user's
                torch._foreach_copy_(gviews, small)  # (dtypes and shapes checked above: copy_ would convert)
            except (RuntimeError, TypeError):
                return None
            arrays = [None] * len(act)
            try:  # numpy views of the others: raises for sparse, bf16 or grad-requiring tensors
                large = [gs[k].numpy() for k in large_idx]
            except (RuntimeError, TypeError):
                return None
            if large:
                if [a.shape for a in large] != large_shapes or set(map(_DTYPE, large)) != _ONLY_NP_F32:
                    return None
                for k, a in zip(large_idx, large):
                    arrays[k] = a
            out.append((arrays, cuts))
        return out

    def run(self, opt: "LangevinOptimizer", grads: list) -> None:
        seed = step_seed(opt._stream_seed, opt._stream_step)
        if self.rng == "philox":
            seed = torch.tensor([seed], dtype=torch.int64)
        method = opt.METHOD
        for (group, _, _, act, _, _, arrays, _, _, st, plan, _, _), (g, cuts) in zip(self.groups, grads):
            if not act:
                continue
            _backend.record(OP_NAMES[method], "torch")
            scalars = opt._scalars(group)
            noise = None
            if opt._has_noise(group):
                noise = _fb.NoiseSource(plan, seed, self.rng, 1.0 if method == _fb.PSGLD else scalars[3])
            state = st if self.key is not None else None
            _fb.run_numpy(plan, method, arrays, g, state, _fb.np_scalars(scalars), noise, cuts)
        increment_version(self.written)  # numpy writes bypass the version counters torch's ops bump


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
        self._step_counters: Dict[torch.device, torch.Tensor] = {}  # device path: k on the device
        self._program: Optional[_CpuProgram] = None  # the CPU fallback's cached step (see _CpuProgram)

    # ---------------------------------------------------------------- noise stream / state
    @property
    def noise_stream(self) -> Dict[str, int]:
        """``{"seed": ..., "step": ...}``: where the optimizer's noise stream stands."""
        step = self._stream_step
        for counter in self._step_counters.values():  # the truth once graphs may have replayed steps
            step = int(counter.item())
        return {"seed": self._stream_seed, "step": step}

    def state_dict(self):
        sd = super().state_dict()
        sd["noise_stream"] = dict(self.noise_stream)
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        self._program = None
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
        for counter in self._step_counters.values():  # in place: a captured graph keeps its counter
            counter.fill_(self._stream_step)

    # ---------------------------------------------------------------- the step
    def _scalars(self, group) -> tuple:
        """(lr, gscale, prior, nscale, a1, a2, eps) for the kernel (floats)."""
        raise NotImplementedError

    def _has_noise(self, group) -> bool:
        return group["temperature"] > 0.0 and not group["explore"]

    # Never traced (_step is compiler-disabled): the CPU fallback's step counter is Python state,
    # which a compiled step would freeze (the same noise at every step). Under torch.compile the
    # step runs eagerly (a graph break; fullgraph=True raises) while the model's forward/backward
    # stay compiled.
    def step(self, closure: Optional[Callable[[], float]] = None, *, noise: Optional[List] = None):
        """One Langevin step on every parameter with a gradient; returns ``closure()``'s loss.

        ``noise`` (testing hook): a list, one entry per parameter over all groups in order, of
        standard-normal tensors shaped like the parameter (or None) used instead of the stream.

        torch.optim's step wrapper (``Optimizer.profile_hook_step``: a ``record_function`` scope,
        the step pre/post hooks) is reproduced here, with the scope opened only while a profiler
        runs: inside one every torch and numpy call of the step costs ~0.2 µs more (measured: ~0.2 ms
        of a ~2.5 ms CPU step). Hooks run as torch runs them.
        """
        if not torch.compiler.is_compiling() and not (
            _profiling()
            or _GLOBAL_PRE
            or _GLOBAL_POST
            or self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
        ):  # (traced, it takes torch's path: the hooks, then the compiler-disabled _step, a graph break)
            return self._step(closure, noise)
        args = (self,) if closure is None else (self, closure)
        kwargs = {} if noise is None else {"noise": noise}
        with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
            for pre_hook in (*_GLOBAL_PRE.values(), *self._optimizer_step_pre_hooks.values()):
                result = pre_hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(f"{pre_hook} must return None or a tuple of (new_args, new_kwargs)")
                    args, kwargs = result
            out = LangevinOptimizer._step_args(*args, **kwargs)
            self._optimizer_step_code()
            for post_hook in (*self._optimizer_step_post_hooks.values(), *_GLOBAL_POST.values()):
                post_hook(self, args, kwargs)
            return out

    step.hooked = True  # torch.optim: do not wrap it again (Optimizer._patch_step_function)

    def _step_args(self, closure=None, *, noise=None):
        return self._step(closure, noise)

    @torch.compiler.disable  # (see the comment above step)
    @torch.no_grad()
    def _step(self, closure, noise):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        program = self._program
        if program is not None and noise is None and _backend.no_interception():
            grads = program.grads(self)  # checks only: nothing is touched until they pass
            if grads is not None:
                program.run(self, grads)
                self._stream_step += 1
                return loss
        self._program = None
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
                    seeds[device] = self._step_seed(device, backend)
                self._run_bucket(items, pdtype, seeds[device], scalars, has_noise, backend, rng, noise is not None)
        self._stream_step += 1
        for counter in self._step_counters.values():
            counter.add_(1)
        if not self._step_counters:
            self._program = _CpuProgram.build(self)
        return loss

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        self._program = None
        n = sum(len(g["params"]) for g in self.param_groups)
        if n > _fb.MAX_PARAMS:  # the noise index space: parameter slots below the torch stream's head region
            self.param_groups.pop()
            raise ValueError(f"params: at most {_fb.MAX_PARAMS} parameter tensors per optimizer, got {n}")

    def _step_seed(self, device: torch.device, backend: str) -> torch.Tensor:
        """This step's int64 ``[1]`` seed on ``device``: from the device counter on the Triton path
        and on GPUs (no host sync), else built on the host (the CPU fallback reads it as an int)."""
        if backend != "triton" and device.type == "cpu":
            return torch.tensor([step_seed(self._stream_seed, self._stream_step)], dtype=torch.int64)
        counter = self._step_counters.get(device)
        if counter is None:
            if _capturing(device):
                raise RuntimeError(f"{type(self).__name__}: run one step before capturing a CUDA graph")
            counter = torch.full((1,), self.noise_stream["step"], dtype=torch.int64, device=device)
            self._step_counters[device] = counter
        return step_seed_tensor(self._stream_seed, counter)

    def _run_bucket(self, items, pdtype, seed, scalars, has_noise, backend, rng, injected):
        params, grads, masters, states, indices, zs, copy_back = [], [], [], [], [], [], []
        capturing = _capturing(items[0][1].device)
        for i, p, z in items:
            st = self.state[p]
            new_master = pdtype != torch.float32 and "master" not in st
            new_state = self.STATE_KEY is not None and self.STATE_KEY not in st
            if (new_master or new_state) and capturing:  # a graph would re-make (zero) it at every replay
                raise RuntimeError(f"{type(self).__name__}: run one step before capturing a CUDA graph")
            if new_master:
                st["master"] = torch.empty(p.shape, dtype=torch.float32, device=p.device).copy_(p)
            if new_state:
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
        tensors = (params, grads, masters, states, indices, seed)
        run_update(tensors, self.METHOD, scalars, has_noise, backend, rng, zs if injected else None)
        for p, pc in copy_back:
            p.copy_(pc)

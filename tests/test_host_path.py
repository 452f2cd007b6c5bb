"""The lean Triton call paths (issue 11) and the corrector's step-size kernel.

* ``kernels/snr_step.py`` (interpreted on CPU) against the reference formula
  :func:`fastlangevin.reference.corrector.snr_step_size_from_norms`, in every mode;
* the lean paths (:func:`fastlangevin.ops.langevin_step._lean_triton_step`, the corrector's
  ``_lean_triton``) against the general path, which a no-op torch function mode forces: bitwise
  the same outputs, the same generator draw, the same recorded backends;
* refused calls on the lean paths leave the input and the generator untouched.
"""

import contextlib

import pytest
import torch

import fastlangevin as fl
from fastlangevin import reference, track_backends

triton = pytest.importorskip("triton")
if not fl._backend.kernels_interpreted() and not torch.cuda.is_available():  # pragma: no cover
    pytest.skip("Triton kernels need the interpreter (TRITON_INTERPRET=1) or a GPU", allow_module_level=True)

from fastlangevin.kernels.snr_step import launch_snr_step  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

#: fp32: the batch means sum per lane then across lanes (torch.mean: its own order), each a few ulps;
#: and the interpreter multiplies by r, α as doubles where torch rounds them to fp32 first: 16 ulps of ε.
#: fp64: the summation order alone.
TOL = {torch.float32: dict(rtol=16 * 2.0**-23, atol=0.0), torch.float64: dict(rtol=1e-13, atol=0.0)}


class _NoOpMode(torch.overrides.TorchFunctionMode):
    """An active torch function mode: the ops then take their general (dispatcher) path."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _scales(kind, batch, dtype, g):
    if kind == "float":
        return 0.16, 0.7
    if kind == "alpha1":
        return 0.2, 1.0
    if kind == "tensor0d":
        return torch.tensor(0.3, dtype=dtype, device=DEVICE), torch.tensor(0.9, dtype=dtype, device=DEVICE)
    return (  # per-sample r and α
        torch.rand(batch, generator=g, dtype=dtype).add_(0.05).to(DEVICE),
        torch.rand(batch, generator=g, dtype=dtype).add_(0.5).to(DEVICE),
    )


def _split(v):
    return (0.0, v) if isinstance(v, torch.Tensor) else (v, None)


@pytest.mark.parametrize("batch", [1, 7, 1500])  # one lane, a partial block, two loop iterations
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("norm", ["batch", "per_sample"])
@pytest.mark.parametrize("kind", ["float", "alpha1", "tensor0d", "rows"])
def test_snr_kernel_matches_reference(batch, dtype, norm, kind):
    g = torch.Generator().manual_seed(batch)
    norms = (torch.rand(batch, 2, generator=g, dtype=dtype) * 50 + 0.01).to(DEVICE)
    snr, alpha = _scales(kind, batch, dtype, g)
    with torch.no_grad():
        got = launch_snr_step(norms, *_split(snr), *_split(alpha), per_sample=norm == "per_sample")
    want = reference.snr_step_size_from_norms(norms.double(), _dbl(snr), _dbl(alpha), norm)
    rows = norm == "per_sample" or kind == "rows"
    assert got.shape == ((batch,) if rows else ()) and got.dtype == dtype and got.device == norms.device
    torch.testing.assert_close(got.double(), want.to(got.device), **TOL[dtype])


def _dbl(v):
    return v.double() if isinstance(v, torch.Tensor) else v


@pytest.mark.filterwarnings("ignore:divide by zero")  # the interpreter's numpy division
def test_snr_kernel_zero_score_norm_is_infinite():
    norms = torch.tensor([[0.0, 4.0], [0.0, 1.0]], device=DEVICE)
    assert torch.isinf(launch_snr_step(norms, 0.16, None, 1.0, None, per_sample=False)).all()
    assert torch.isinf(launch_snr_step(norms, 0.16, None, 1.0, None, per_sample=True)).all()


def test_snr_op_opcheck():
    norms = torch.rand(6, 2, device=DEVICE) + 0.1
    rows = torch.rand(6, device=DEVICE)
    for args in [
        (norms, 0.16, None, 0.5, None, False),
        (norms, 0.0, rows, 1.0, None, False),
        (norms, 0.2, None, 1.0, None, True),
    ]:
        torch.library.opcheck(torch.ops.fastlangevin.snr_step.default, args)


def _pair(fn):
    """(lean result, general result): the same call with the same generator state, the second
    under a no-op torch function mode (the general path); both generators must advance alike."""
    outs = []
    for mode in (None, _NoOpMode()):
        g = torch.Generator(device=DEVICE).manual_seed(11)
        with torch.no_grad(), track_backends() as ran:
            if mode is None:
                out = fn(g)
            else:
                with mode:
                    out = fn(g)
        outs.append((out, g.get_state(), ran))
    return outs


def _assert_same(lean, general):
    (a, ga, ra), (b, gb, rb) = lean, general
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert torch.equal(ga, gb) and ra == rb


@pytest.mark.parametrize("shape", [(256, 2), (5, 3, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
def test_lean_step_matches_general_path(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=gen).to(DEVICE, dtype)
    s = torch.randn(shape, generator=gen).to(DEVICE, dtype)
    rows = (torch.rand(shape[0], generator=gen) * 0.1).to(DEVICE)
    kw = dict(backend="triton", sample_offset=3)
    fl.langevin_step_(x0.clone(), s, 0.01, **kw)  # resolve (and cache) the backend choice first
    calls = [
        lambda g: fl.langevin_step_(x0.clone(), s, 0.01, generator=g, **kw),
        lambda g: fl.langevin_step(x0, s, 0.01, 0.05, generator=g, clamp=(-1.0, None), **kw),
        lambda g: fl.langevin_step_(x0.clone(), s, rows, generator=g, **kw),
        lambda g: fl.langevin_step(x0, s, rows[0], generator=g, **kw),
    ]
    for fn in calls:
        lean, general = _pair(fn)
        _assert_same(lean, general)
        assert lean[2] == [("langevin_step", "triton")]


@pytest.mark.parametrize("norm", ["batch", "per_sample"])
@pytest.mark.parametrize("kind", ["float", "tensor0d", "rows"])
def test_lean_corrector_matches_general_path(norm, kind):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(9, 2, 3, generator=gen).to(DEVICE)
    s = torch.randn(9, 2, 3, generator=gen).to(DEVICE)
    snr, alpha = _scales(kind, 9, torch.float32, gen)
    kw = dict(alpha=alpha, norm=norm, backend="triton", sample_offset=2, return_step_size=True)
    fl.langevin_corrector_(x0.clone(), s, snr, **kw)
    for extra in (dict(), dict(add_noise=False, clamp=(-2.0, 2.0)), dict(return_step_size=False)):
        call = {**kw, **extra}  # return_step_size=False: the lean path writes ε into its reused buffer
        for _ in range(2):  # twice: the second call reuses the first one's buffers
            lean, general = _pair(lambda g: fl.langevin_corrector_(x0.clone(), s, snr, generator=g, **call))
            _assert_same(lean, general)
        assert lean[2] == [("corrector_norms", "triton"), ("snr_step", "triton"), ("langevin_step", "triton")]


def test_lean_paths_refuse_before_drawing():
    x = torch.randn(4, 3, device=DEVICE)
    s = torch.randn(4, 3, device=DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(3)
    fl.langevin_step_(x, s, 0.1, backend="triton")  # choice cached: the lean path is the one refusing
    state, before = g.get_state(), x.clone()
    bad = [
        (
            lambda: fl.langevin_step_(
                x, s, torch.tensor([0.1, -0.1, 0.1, 0.1], device=DEVICE), generator=g, backend="triton"
            ),
            "step_size",
        ),
        (lambda: fl.langevin_step_(x, s, 0.1, generator=g, clamp=(1.0, 0.0), backend="triton"), "clamp"),
        (lambda: fl.langevin_corrector_(x, s, -0.2, generator=g, backend="triton"), "snr"),
        (lambda: fl.langevin_corrector_(x, s, 0.2, alpha=torch.ones(3), generator=g, backend="triton"), "alpha"),
        (lambda: fl.langevin_corrector_(x, s, 0.2, norm="mean", generator=g, backend="triton"), "norm"),
    ]
    for fn, name in bad:
        with pytest.raises((ValueError, TypeError), match=name):
            fn()
        assert torch.equal(g.get_state(), state) and torch.equal(x, before)
    with pytest.raises(RuntimeError, match="autograd"):
        fl.langevin_step_(x.requires_grad_(), s, 0.1, generator=g, backend="triton")
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_reused_seed_buffer_draws_what_randint_draws(device):
    """``random_(0, SEED_HIGH)`` into the reused buffer: the value and generator advance of ``draw_seed``."""
    from fastlangevin._rng import draw_seed, draw_seed_reused

    dev = torch.device(device)
    ga, gb = torch.Generator(device=device).manual_seed(5), torch.Generator(device=device).manual_seed(5)
    first = draw_seed_reused(dev, ga)
    assert torch.equal(first, draw_seed(dev, gb))
    for _ in range(5):
        got = draw_seed_reused(dev, ga)
        assert got is first  # the same buffer, refilled
        want = draw_seed(dev, gb)
        assert got.dtype == want.dtype == torch.int64 and got.shape == want.shape == (1,)
        assert torch.equal(got, want)
    assert torch.equal(ga.get_state(), gb.get_state())
    torch.manual_seed(3)
    a = draw_seed_reused(dev).clone()
    torch.manual_seed(3)
    assert torch.equal(a, draw_seed(dev))


def test_snr_kernel_compiles_for_sm90():
    """Every mode combination of the step-size kernel builds a cubin (Triton's compiler, no GPU needed):
    what the interpreter accepts and the compiler would not (``tests/snr_compile_check.py``)."""
    import json
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "snr_compile_check.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0 and "ptxas" in proc.stderr:  # pragma: no cover - a Triton build without ptxas
        pytest.skip(f"no CUDA toolchain in this Triton install: {proc.stderr[-300:]}")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == 36 and set(report.values()) == {"ok"}


# ---------------------------------------------------------------------------------------
# DSM on the Triton path: the lean entry (fastlangevin.ops.dsm._lean_triton_loss) against the ops
# ---------------------------------------------------------------------------------------
class _Affine(torch.nn.Module):
    """A score with parameters (so the loss node and the score's own graph both run backward)."""

    def __init__(self, row, dtype):
        super().__init__()
        self.m = torch.nn.Parameter(torch.linspace(-1.0, 1.0, row, dtype=dtype))
        self.c = torch.nn.Parameter(torch.tensor(0.7, dtype=dtype))

    def forward(self, xt, sig):
        s = -(xt.flatten(1) - self.m) * self.c / (1 + sig.to(xt.dtype).view(-1, 1) ** 2)
        return s.view(xt.shape)


def _dsm_pair(shape, dtype, kw, x_grad=True):
    """(lean, general) of one ``dsm_loss`` forward and backward on the Triton path with the same generator
    state: the loss, the gradients of x and of the score's parameters, the generator state after, the
    backends recorded; the general path (the custom ops) forced by a no-op torch function mode."""
    from fastlangevin.ops import dsm as od

    outs = []
    for mode in (None, _NoOpMode()):
        gen = torch.Generator().manual_seed(sum(shape))
        x = torch.randn(shape, generator=gen).to(DEVICE, dtype).requires_grad_(x_grad)
        net = _Affine(x[0].numel(), dtype).to(DEVICE)
        g = torch.Generator(device=DEVICE).manual_seed(11)
        prepared = []
        real_prepare = od._prepare
        od._prepare = lambda *a, **k: prepared.append(1) or real_prepare(*a, **k)
        try:
            with track_backends() as ran:
                if mode is None:
                    loss = fl.dsm_loss(net, x, generator=g, backend="triton", **kw)
                    (loss * torch.arange(1, loss.numel() + 1, device=DEVICE)).sum().backward()
                else:
                    with mode:
                        loss = fl.dsm_loss(net, x, generator=g, backend="triton", **kw)
                        (loss * torch.arange(1, loss.numel() + 1, device=DEVICE)).sum().backward()
        finally:
            od._prepare = real_prepare
        assert bool(prepared) == (mode is not None)  # the lean call never reached _prepare; the general one did
        outs.append((loss.detach(), x.grad, net.m.grad, net.c.grad, g.get_state(), ran))
    return outs


def _dsm_scales(kind, batch, gen):
    rows = lambda lo, hi: (torch.rand(batch, generator=gen) * (hi - lo) + lo).to(DEVICE)  # noqa: E731
    return {
        "floats": dict(sigma=0.37),
        "floats-alpha-weight": dict(sigma=1.7, alpha=0.8, weight=2.5),
        "tensor0d": dict(sigma=torch.tensor(0.6, device=DEVICE), alpha=torch.tensor(0.9, device=DEVICE)),
        "rows": dict(sigma=rows(0.05, 1.5), alpha=rows(0.5, 1.0), weight=rows(0.0, 2.0)),
        "rows-sigma-float-alpha": dict(sigma=rows(0.05, 1.5), alpha=0.95),
    }[kind]


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((5, 7), torch.float32),  # B not a power of two: the mean's 1/B share is inexact
        ((3, 2, 5), torch.float32),  # rows start mid Philox group
        ((4, 8), torch.bfloat16),
        ((6, 3), torch.float64),
    ],
    ids=["fp32-5x7", "fp32-3x2x5", "bf16-4x8", "fp64-6x3"],
)
@pytest.mark.parametrize("kind", ["floats", "floats-alpha-weight", "tensor0d", "rows", "rows-sigma-float-alpha"])
def test_lean_dsm_matches_general_path(shape, dtype, kind):
    fl.dsm_loss(lambda xt, sig: -xt, torch.ones(1, 1, device=DEVICE), 1.0, backend="triton")  # choice resolved
    scales = _dsm_scales(kind, shape[0], torch.Generator().manual_seed(4))
    # x needing a gradient: the perturb node; else its body alone. Calls after the first with
    # Python-float scales read the rows cached by the first.
    combos = [
        (dict(), True),
        (dict(), False),
        (dict(reduction="sum", sample_offset=3), True),
        (dict(reduction="none"), False),
    ]
    for extra, x_grad in combos:
        lean, general = _dsm_pair(shape, dtype, {**scales, **extra}, x_grad)
        for u, v in zip(lean[:5], general[:5]):
            assert (u is None and v is None) or torch.equal(u, v)
        assert lean[5] == general[5] and lean[5] == [
            ("dsm_perturb", "triton"),
            ("dsm_loss", "triton"),
            ("dsm_loss_backward", "triton"),
        ]


def test_lean_dsm_cached_rows_are_never_the_score_sigma():
    """The score function receives a fresh σ: writing to it changes neither this call's loss nor the rows
    the next call with that σ reads from the cache; the cached rows keep their values."""
    from fastlangevin.ops import dsm as od

    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), device=DEVICE)
    net = lambda xt, sig: -xt / (1 + sig.view(-1, 1))  # noqa: E731

    def vandal(xt, sig):
        out = net(xt, sig)
        sig.mul_(100.0)  # a score function writing to its argument
        return out

    def loss(fn, seed):
        gen = torch.Generator(device=DEVICE).manual_seed(seed)
        return fl.dsm_loss(fn, x, 0.43, weight=1.5, generator=gen, backend="triton")

    fl.dsm_loss(net, x, 0.43, weight=1.5, backend="triton")  # resolved, and the rows cached
    want = [loss(net, seed) for seed in (1, 2)]
    with _NoOpMode():  # the general path: its own rows
        want_general = [loss(net, seed) for seed in (1, 2)]
    assert torch.equal(loss(vandal, 1), want[0])
    assert torch.equal(loss(net, 2), want[1])
    assert all(torch.equal(a, b) for a, b in zip(want, want_general))
    cached = [v for k, v in od._SCALAR_ROWS.items() if k[:3] == (0.43, None, 1.5) and k[5] == 6]
    assert len(cached) == 1
    sigma_rows, alpha_rows, inv, weight_rows = cached[0]
    s32 = torch.full((6,), 0.43, device=DEVICE)
    assert alpha_rows is None and torch.equal(sigma_rows, s32) and torch.equal(inv, torch.reciprocal(s32))
    assert torch.equal(weight_rows, torch.full((6,), 1.5, device=DEVICE))


def test_lean_dsm_rows_built_in_inference_mode_are_not_cached():
    """Rows first built under inference mode are not kept (inference tensors cannot be saved for backward):
    a later differentiable call with the same σ builds and caches its own."""
    from fastlangevin.ops import dsm as od

    x = torch.randn(3, 5, device=DEVICE)
    fl.dsm_loss(lambda xt, sig: -xt, x, 0.5, backend="triton")  # resolved
    sigma = 0.123456  # a value no other test uses
    with torch.inference_mode():
        fl.dsm_loss(lambda xt, sig: -xt, x, sigma, alpha=0.7, backend="triton")
    assert not [k for k in od._SCALAR_ROWS if k[0] == sigma]
    xg = x.clone().requires_grad_()
    fl.dsm_loss(lambda xt, sig: -xt, xg, sigma, alpha=0.7, backend="triton").backward()  # saves α rows
    assert xg.grad is not None and [k for k in od._SCALAR_ROWS if k[0] == sigma]


def test_lean_dsm_refuses_before_drawing():
    x = torch.randn(4, 3, device=DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(3)
    fl.dsm_loss(lambda xt, sig: -xt, x, 0.5, backend="triton")  # choice cached: the lean path is the one refusing
    state = g.get_state()
    score = lambda xt, sig: -xt  # noqa: E731
    bad = [
        (dict(sigma=-0.5), "sigma"),
        (dict(sigma=torch.tensor([0.1, 0.0, 0.1, 0.1], device=DEVICE)), "sigma"),
        (dict(sigma=0.5, alpha=-1.0), "alpha"),
        (dict(sigma=0.5, weight=torch.ones(3, device=DEVICE)), "weight"),
        (dict(sigma=0.5, reduction="avg"), "reduction"),
        (dict(sigma=0.5, sample_offset=-1), "sample_offset"),
    ]
    for kw, name in bad:
        with pytest.raises((ValueError, TypeError), match=name):
            fl.dsm_loss(score, x, generator=g, backend="triton", **kw)
        assert torch.equal(g.get_state(), state)
    with pytest.raises(TypeError, match="score_fn"):
        fl.dsm_loss(None, x, 0.5, generator=g, backend="triton")
    with pytest.raises(ValueError, match="score_fn"):  # refused after the draw, as on the general path
        fl.dsm_loss(lambda xt, sig: xt[:1], x, 0.5, backend="triton")


def test_lean_dsm_backward_twice_raises_under_create_graph():
    """The backward kernel has no derivative: under create_graph=True the loss's backward is once
    differentiable (differentiating its result raises), and its first-order gradient is unchanged."""
    x = torch.randn(5, 2, device=DEVICE)
    w = torch.tensor(-1.0, device=DEVICE, requires_grad=True)
    score = lambda xt, sig: xt * w  # noqa: E731
    fl.dsm_loss(score, x, 0.5, backend="triton")  # resolved

    def grad_w(**kw):
        gen = torch.Generator(device=DEVICE).manual_seed(1)
        return torch.autograd.grad(fl.dsm_loss(score, x, 0.5, backend="triton", generator=gen), w, **kw)[0]

    v = torch.ones((), device=DEVICE, requires_grad=True)  # a differentiable incoming gradient
    gw = grad_w(grad_outputs=v, create_graph=True)
    assert gw.requires_grad and torch.equal(gw, grad_w())
    with pytest.raises(RuntimeError, match="trying to differentiate twice"):
        gw.backward()


def test_lean_dsm_geometry_plans_follow_shape_offset_and_score_dtype():
    """The lean path keeps one geometry per (shape, dtype, device, sample_offset) with plans per score dtype,
    and reuses this thread's loss buffers per (geometry, score dtype): calls alternating shapes, offsets and
    a bf16 / fp32 score beside an fp32 x are each bitwise the general path (the custom ops)."""
    from fastlangevin.ops import dsm as od

    fl.dsm_loss(lambda xt, sig: -xt, torch.ones(1, 1, device=DEVICE), 1.0, backend="triton")  # choice resolved
    w = torch.tensor(-0.8, device=DEVICE, requires_grad=True)
    calls = [((5, 7), 0, torch.bfloat16), ((5, 7), 0, torch.float32), ((3, 6), 2, torch.bfloat16)]
    for shape, offset, score_dtype in calls + calls[:1]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(offset + shape[1])).to(DEVICE)
        got = []
        for mode in (contextlib.nullcontext(), _NoOpMode()):
            gen = torch.Generator(device=DEVICE).manual_seed(5)
            with mode:
                loss = fl.dsm_loss(
                    lambda xt, sig: (xt * w).to(score_dtype), x, 0.45, generator=gen, backend="triton",
                    sample_offset=offset,
                )  # fmt: skip
                got.append((loss.detach(), torch.autograd.grad(loss, w)[0], gen.get_state()))
        assert all(torch.equal(a, b) for a, b in zip(*got)), (shape, offset, score_dtype)
        assert (x.shape, x.dtype, x.device, offset) in od._GEOMETRIES  # the lean call kept its geometry


def test_lean_dsm_seeds_of_live_graphs_are_never_redrawn():
    """The lean path draws its seed into a pooled buffer only when no live graph holds it: with more
    losses alive than the pool keeps, each backward still regenerates its own forward's noise (bitwise
    the general path's gradients, call by call), and the generator advances as the general path's."""
    from fastlangevin.ops import dsm as od

    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(5), device=DEVICE)
    fl.dsm_loss(lambda xt, sig: -xt, x, 0.5, backend="triton")  # resolved
    n = od._SEED_POOL + 2

    def grads(mode):
        g = torch.Generator(device=DEVICE).manual_seed(21)
        nets = [_Affine(3, torch.float32).to(DEVICE) for _ in range(n)]
        with mode or contextlib.nullcontext():
            losses = [fl.dsm_loss(net, x, 0.3 + 0.1 * i, generator=g, backend="triton") for i, net in enumerate(nets)]
            for loss in reversed(losses):  # the last drawn first: every earlier seed must still be its own
                loss.backward()
        return [(loss.detach(), net.m.grad, net.c.grad) for loss, net in zip(losses, nets)], g.get_state()

    lean, lean_state = grads(None)
    general, general_state = grads(_NoOpMode())
    assert torch.equal(lean_state, general_state)
    for u, v in zip(lean, general):
        assert all(torch.equal(a, b) for a, b in zip(u, v))
    # the loop case: one loss kept alive while the next is drawn reuses the pool, never its buffer
    pool = od._LEAN_SEEDS.d[x.device if x.is_cpu else torch.cuda.current_stream(x.device)]
    kept = fl.dsm_loss(lambda xt, sig: -xt * x.new_ones(()).requires_grad_(), x, 0.5, backend="triton")
    held = [b for b in pool if od._refcount(b) > od._FREE_REFS]
    assert len(pool) <= od._SEED_POOL and held
    assert all(b.data_ptr() != h.data_ptr() for b in pool for h in held if b is not h)
    del kept


def test_lean_dsm_weight_changed_in_place_before_backward_raises():
    """A ``[B]`` weight tensor in the compute dtype is viewed, not copied, by both paths: changed in place
    between forward and backward, backward refuses it on the lean path as on the general one."""
    x = torch.randn(4, 3, device=DEVICE)
    w = torch.tensor(-1.0, device=DEVICE, requires_grad=True)
    fl.dsm_loss(lambda xt, sig: xt * w, x, 0.5, backend="triton")  # resolved
    for mode in (None, _NoOpMode()):
        weight = torch.full((4,), 2.0, device=DEVICE)
        with mode or contextlib.nullcontext():
            loss = fl.dsm_loss(lambda xt, sig: xt * w, x, 0.5, weight=weight, backend="triton")
            weight.mul_(3.0)
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                loss.backward()


def test_lean_dsm_unreduced_losses_are_fresh_tensors():
    """Reduced losses read their ``[B]`` rows from a reused buffer before returning; ``reduction='none'``
    returns the rows: a new tensor every call, never overwritten by a later call."""
    x = torch.randn(6, 2, device=DEVICE)
    score = lambda xt, sig: -xt  # noqa: E731
    fl.dsm_loss(score, x, 0.5, backend="triton")  # resolved
    g = torch.Generator(device=DEVICE).manual_seed(8)
    first = fl.dsm_loss(score, x, 0.5, reduction="none", generator=g, backend="triton")
    keep = first.clone()
    means = [fl.dsm_loss(score, x, 0.5, generator=g, backend="triton") for _ in range(2)]
    second = fl.dsm_loss(score, x, 0.5, reduction="none", generator=g, backend="triton")
    assert torch.equal(first, keep) and first.data_ptr() != second.data_ptr()
    g.manual_seed(8)
    fl.dsm_loss(score, x, 0.5, reduction="none", generator=g, backend="triton")
    with _NoOpMode():
        want = [fl.dsm_loss(score, x, 0.5, generator=g, backend="triton") for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(means, want))


def test_lean_dsm_seed_pool_made_in_inference_mode_serves_normal_calls():
    """Pooled seed buffers are normal tensors even when the first lean call runs in inference mode: later
    calls outside it draw into them (an inference tensor refuses in-place draws outside inference mode)."""
    from fastlangevin.ops import dsm as od

    x = torch.randn(4, 3, device=DEVICE)
    score = lambda xt, sig: -xt  # noqa: E731
    fl.dsm_loss(score, x, 0.5, backend="triton")  # resolved
    getattr(od._LEAN_SEEDS, "d", {}).clear()  # (buffers a live graph holds stay alive with it)
    g = torch.Generator(device=DEVICE).manual_seed(9)
    with torch.inference_mode():
        a = fl.dsm_loss(score, x, 0.5, generator=g, backend="triton")
    b = fl.dsm_loss(score, x, 0.5, generator=g, backend="triton")
    g.manual_seed(9)
    with _NoOpMode():
        want = [fl.dsm_loss(score, x, 0.5, generator=g, backend="triton") for _ in range(2)]
    assert torch.equal(a, want[0]) and torch.equal(b, want[1])

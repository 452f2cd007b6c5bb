"""The fused Langevin step: kernel (interpreted on CPU) vs fallback vs the plain formula."""

import math

import numpy as np
import pytest
import torch

import fastlangevin as fl
from fastlangevin import _backend, _rng
from fastlangevin.ops.langevin_step import _small_cpu_step_, langevin_step_with_noise

from .conftest import device_backends, requires_cuda
from .helpers import backend_ran, make_state, noise_only, plain_step

# (x dtype, score dtype, atol, rtol): the kernel computes in fp32 and stores x's dtype. The
# interpreter truncates fp32→bf16/fp16 where PyTorch rounds to nearest: one storage ulp.
DTYPES = [
    pytest.param(torch.float32, torch.float32, 0.0, 0.0, id="fp32"),
    pytest.param(torch.float32, torch.bfloat16, 0.0, 0.0, id="fp32-state-bf16-score"),
    pytest.param(torch.bfloat16, torch.bfloat16, 0.0, 2**-7, id="bf16"),
    pytest.param(torch.float16, torch.float16, 0.0, 2**-10, id="fp16"),
    pytest.param(torch.bfloat16, torch.float32, 0.0, 2**-7, id="bf16-state-fp32-score"),
    pytest.param(torch.float64, torch.float64, 0.0, 0.0, id="fp64"),
]
SHAPES = [(0,), (1,), (1023,), (1025,), (3, 5, 7), (4, 0, 3), (17, 33)]


_make, _plain, _backend_ran = make_state, plain_step, backend_ran


# --------------------------------------------------------------------------------------------
# Exactness against the plain formula, both backends
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,score_dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_noise_off_matches_formula(device_backend, shape, dtype, score_dtype, atol, rtol):
    device, backend = device_backend
    x, s = _make(shape, dtype, score_dtype, device)
    out, ran = _backend_ran(lambda: fl.langevin_step(x, s, 0.1, 0.0, backend=backend))
    assert ran == [backend]
    expected = _plain(x, s, 0.1, 0.0, None)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype,score_dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("clamp", [None, (-0.5, 0.7)], ids=["noclamp", "clamp"])
def test_injected_noise_kernel_vs_fallback_vs_formula(device_backend, dtype, score_dtype, atol, rtol, clamp):
    device, backend = device_backend
    x, s = _make((5, 201), dtype, score_dtype, device)
    z = torch.randn(5, 201, generator=torch.Generator().manual_seed(7)).to(device)
    out, ran = _backend_ran(lambda: langevin_step_with_noise(x, s, z, 0.03, 0.4, clamp=clamp, backend=backend))
    assert ran == [backend]
    torch.testing.assert_close(out, _plain(x, s, 0.03, 0.4, z, clamp), atol=atol, rtol=rtol)
    # in place on a copy gives the same values
    xi = x.clone()
    langevin_step_with_noise(xi, s, z, 0.03, 0.4, clamp=clamp, backend=backend, inplace=True)
    torch.testing.assert_close(xi, out, atol=0, rtol=0)


def test_interpreted_kernel_equals_fallback_bitwise_fp32_noise_off():
    """The fallback mirrors the kernel's evaluation order: fp32 results are identical."""
    x, s = _make((7, 131), torch.float32, torch.float32)
    step = torch.rand(7) * 0.2
    a = fl.langevin_step(x, s, step, 0.0, backend="triton", clamp=(-1.0, 2.0))
    b = fl.langevin_step(x, s, step, 0.0, backend="torch", clamp=(-1.0, 2.0))
    assert torch.equal(a, b)


@pytest.mark.parametrize("form", ["float", "0d", "rows"])
def test_scale_forms_and_default_noise(device_backend, form):
    device, backend = device_backend
    x, s = _make((6, 9), torch.float32, torch.float32, device)
    z = torch.randn(6, 9, generator=torch.Generator().manual_seed(3)).to(device)
    a_rows = torch.tensor([0.0, 0.01, 0.1, 0.2, 0.5, 1.0])
    step = {"float": 0.2, "0d": torch.tensor(0.2), "rows": a_rows}[form]
    step = step.to(device) if isinstance(step, torch.Tensor) else step
    out = langevin_step_with_noise(x, s, z, step, backend=backend)  # noise_scale=None → sqrt(2a)
    a = (a_rows if form == "rows" else torch.full((6,), 0.2)).to(device)[:, None]
    torch.testing.assert_close(out, x + a * s + torch.sqrt(2 * a) * z, atol=1e-6, rtol=1e-6)


def test_noncontiguous_inputs(device_backend):
    device, backend = device_backend
    base = torch.randn(9, 14, device=device)
    x = base[:, ::2]  # strided
    s = torch.randn(7, 9, device=device).t()  # transposed
    assert not x.is_contiguous() and not s.is_contiguous()
    g = torch.Generator(device=device)
    g.manual_seed(1)
    out = fl.langevin_step(x, s, 0.1, backend=backend, generator=g)
    g.manual_seed(1)
    ref = fl.langevin_step(x.contiguous(), s.contiguous(), 0.1, backend=backend, generator=g)
    assert torch.equal(out, ref)
    before = base.clone()
    g.manual_seed(1)
    r = fl.langevin_step_(x, s, 0.1, backend=backend, generator=g)
    assert r is x and torch.equal(x, ref)
    assert torch.equal(base[:, 1::2], before[:, 1::2])  # the other columns untouched


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------
_noise_only = noise_only


@pytest.mark.parametrize("backend,rng", [("triton", "philox"), ("torch", "torch"), ("torch", "philox")])
def test_noise_moments_and_ks(backend, rng):
    stats = pytest.importorskip("scipy.stats")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    z = _noise_only(1 << 20, device, backend, rng, torch.Generator(device=device).manual_seed(123)).double().cpu()
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z**3).mean().item()) < 5 * math.sqrt(15 / n)  # skewness of N(0,1) is 0, var of z^3 is 15
    assert abs((z**4).mean().item() - 3) < 5 * math.sqrt(96 / n)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    # every lane of the randn4x groups is N(0, 1) too (a lane mix-up would show here)
    for lane in range(4):
        zl = z[lane::4]
        assert abs(zl.std().item() - 1) < 0.01


@pytest.mark.parametrize("device,backend", device_backends())
def test_consecutive_calls_independent_and_reproducible(device, backend):
    g = torch.Generator(device=device).manual_seed(5)
    z1 = _noise_only(1 << 16, device, backend, generator=g)
    z2 = _noise_only(1 << 16, device, backend, generator=g)
    r = torch.corrcoef(torch.stack([z1, z2]).cpu())[0, 1].item()
    assert abs(r) < 5 / math.sqrt(z1.numel())
    assert not torch.equal(z1, z2)
    g.manual_seed(5)
    assert torch.equal(_noise_only(1 << 16, device, backend, generator=g), z1)
    # the global torch seed governs the default generator
    torch.manual_seed(11)
    a = _noise_only(999, device, backend)
    torch.manual_seed(11)
    assert torch.equal(_noise_only(999, device, backend), a)


@pytest.mark.parametrize("device,backend", device_backends())
@pytest.mark.parametrize("shape", [(10, 3), (33, 2, 5), (7,)], ids=["10x3", "33x2x5", "7"])
def test_batch_invariance_and_offsets(device, backend, shape):
    """Same generator state: x[:k] gives the first k rows; x[i:j] with sample_offset=i gives rows i:j."""
    g = torch.Generator(device=device)
    x, s = _make(shape, torch.float32, torch.float32, device)
    g.manual_seed(9)
    full = fl.langevin_step(x, s, 0.05, backend=backend, generator=g)
    g.manual_seed(9)
    assert torch.equal(fl.langevin_step(x[:4], s[:4], 0.05, backend=backend, generator=g), full[:4])
    g.manual_seed(9)
    part = fl.langevin_step(x[3:6], s[3:6], 0.05, backend=backend, generator=g, sample_offset=3)
    assert torch.equal(part, full[3:6])
    # the generator advanced by one draw whatever the batch size
    g.manual_seed(9)
    fl.langevin_step(x[:1], s[:1], 0.05, backend=backend, generator=g)
    after_small = torch.randint(0, 100, (4,), generator=g, device=device)
    g.manual_seed(9)
    fl.langevin_step(x, s, 0.05, backend=backend, generator=g)
    assert torch.equal(torch.randint(0, 100, (4,), generator=g, device=device), after_small)


def test_block_size_invariance():
    from fastlangevin.kernels.langevin_step import launch_langevin_step

    from fastlangevin import modes

    x = torch.randn(3001)
    s = torch.randn(3001)
    seed = torch.tensor([987654321], dtype=torch.int64)
    outs = []
    for block in (64, 256, 4096):
        for offset in (0, 5):
            for vec in (4, 8):  # elements per tile row: the noise must not depend on it either
                out = torch.full_like(x, float("nan"))
                launch_langevin_step(
                    x,
                    s,
                    out,
                    seed,
                    step_value=0.1,
                    step_tensor=None,
                    noise_mode=modes.SCALE_ARG,
                    noise_value=1.0,
                    noise_tensor=None,
                    lo=None,
                    hi=None,
                    row_size=1,
                    elem_offset=offset,
                    block=block,
                    vec=vec,
                )
                outs.append((offset, out))
    for offset, out in outs:
        assert not out.isnan().any()
        assert torch.equal(out, [o for off, o in outs if off == offset][0])
    # the stream is keyed by the global index: offset 5 is the same stream shifted by 5
    big = torch.full((3006,), float("nan"))
    launch_langevin_step(
        torch.zeros(3006),
        torch.zeros(3006),
        big,
        seed,
        step_value=0.0,
        step_tensor=None,
        noise_mode=modes.SCALE_ARG,
        noise_value=1.0,
        noise_tensor=None,
        lo=None,
        hi=None,
        row_size=1,
        elem_offset=0,
    )
    shifted = [o for off, o in outs if off == 5][0] - x - 0.1 * s
    torch.testing.assert_close(shifted, big[5:], atol=1e-6, rtol=0)


def test_threaded_fallback_equals_serial(monkeypatch):
    from fastlangevin.fallback import chunks

    x, s = _make((8, 40000), torch.float32, torch.float32)
    g = torch.Generator()
    g.manual_seed(2)
    monkeypatch.setattr(chunks, "MIN_CHUNKS_PER_WORKER", 1)  # 5 chunks: split over the threads
    threaded = fl.langevin_step(x, s, 0.1, backend="torch", generator=g)
    monkeypatch.setattr(chunks, "MIN_CHUNKS_PER_WORKER", 10**9)
    g.manual_seed(2)
    assert torch.equal(fl.langevin_step(x, s, 0.1, backend="torch", generator=g), threaded)


# --------------------------------------------------------------------------------------------
# Autograd, opcheck, compile
# --------------------------------------------------------------------------------------------
def _op_args(x, s, seed, step=0.1, step_t=None, noise=0.3, clamp=(None, None), backend="torch", rng="philox"):
    return (x, s, seed, step, step_t, noise, None, 0, clamp[0], clamp[1], 0, backend, rng, None)


@pytest.mark.parametrize("device,backend", device_backends())
def test_gradients(device, backend):
    x = torch.randn(4, 6, device=device, requires_grad=True)
    s = torch.randn(4, 6, device=device, requires_grad=True)
    step = torch.tensor([0.1, 0.2, 0.3, 0.4], device=device)
    out = fl.langevin_step(x, s, step, clamp=(-0.5, 0.5), backend=backend)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    inside = ((out > -0.5) & (out < 0.5)).float()
    torch.testing.assert_close(x.grad, w * inside)
    torch.testing.assert_close(s.grad, w * inside * step[:, None])


def test_gradients_through_threaded_fallback():
    """Large inputs that require grad: the fallback's worker threads must not record autograd."""
    x = torch.randn(10 * 65536, requires_grad=True)
    s = torch.randn(10 * 65536, requires_grad=True)
    fl.langevin_step(x, s, 0.1, backend="torch").sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x)) and torch.allclose(s.grad, torch.full_like(s, 0.1))


def test_gradcheck_fp64_fallback():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    seed = torch.tensor([42])
    step_t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    f = lambda x, s: torch.ops.fastlangevin.langevin_step(*_op_args(x, s, seed, step_t=step_t, clamp=(-1.5, 1.5)))  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, s))


@pytest.mark.parametrize("device,backend", device_backends())
def test_opcheck(device, backend):
    seed = torch.tensor([7], device=device)
    x = torch.randn(5, 3, device=device, requires_grad=True)
    s = torch.randn(5, 3, device=device, requires_grad=True)
    st = torch.rand(5, device=device)
    rng = "philox"
    torch.library.opcheck(torch.ops.fastlangevin.langevin_step.default, _op_args(x, s, seed, backend=backend, rng=rng))
    torch.library.opcheck(
        torch.ops.fastlangevin.langevin_step.default,
        _op_args(x, s, seed, step_t=st, clamp=(-1.0, 1.0), backend=backend, rng=rng),
    )
    torch.library.opcheck(
        torch.ops.fastlangevin.langevin_step_.default,
        _op_args(x.detach().clone(), s.detach(), seed, backend=backend, rng=rng),
    )


@pytest.mark.parametrize("device,backend", device_backends())
def test_torch_compile_fullgraph(device, backend):
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    def step(x, s):
        return fl.langevin_step(x * 1.0, s, 0.05, clamp=(-3.0, 3.0), backend=backend)

    x = torch.randn(6, 5, device=device)
    s = torch.randn(6, 5, device=device)
    with fl.track_backends() as ran:
        torch.manual_seed(0)
        out = step(x, s)
    assert [b for _, b in ran] == [backend]
    torch.manual_seed(0)
    ref = fl.langevin_step(x, s, 0.05, clamp=(-3.0, 3.0), backend=backend)
    assert torch.equal(out, ref)


# --------------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------------
def test_backend_selection(monkeypatch):
    """The environment is read once (cached); reload_environment() makes a change visible."""
    x = torch.zeros(3)
    monkeypatch.delenv("FASTLANGEVIN_BACKEND", raising=False)
    _backend.reload_environment()
    assert fl.backend_for(x) == "torch"
    monkeypatch.setenv("FASTLANGEVIN_BACKEND", "triton")
    assert fl.backend_for(x) == "torch"  # cached: no per-call environment read
    _backend.reload_environment()
    assert fl.backend_for(x) == "triton"
    with fl.track_backends() as ran:
        fl.langevin_step(x, x, 0.1)
    assert [b for _, b in ran] == ["triton"]
    assert fl.backend_for(x, "torch") == "torch"  # the argument beats the environment
    monkeypatch.setenv("FASTLANGEVIN_BACKEND", "cuda-magic")
    _backend.reload_environment()
    with pytest.raises(ValueError, match="FASTLANGEVIN_BACKEND"):
        fl.backend_for(x)
    monkeypatch.delenv("FASTLANGEVIN_BACKEND")
    _backend.reload_environment()
    with pytest.raises(ValueError, match="backend"):
        fl.langevin_step(x, x, 0.1, backend="cuda")


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setattr(_backend, "kernels_interpreted", lambda: False)
    _backend.reload_environment()  # forget resolved backends
    with pytest.raises(fl.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        fl.langevin_step(torch.zeros(3), torch.zeros(3), 0.1, backend="triton")


@requires_cuda
def test_auto_backend_on_cuda_is_triton():
    x = torch.zeros(3, device="cuda")
    assert fl.backend_for(x) == "triton"


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
def _bad_cases():
    x = torch.randn(4, 3)
    s = torch.randn(4, 3)
    return [
        ("x-int", dict(x=x.long()), TypeError, "x must have a floating dtype"),
        ("x-0d", dict(x=torch.tensor(1.0), score=torch.tensor(1.0)), ValueError, "x must have at least 1"),
        ("x-not-tensor", dict(x=[1.0]), TypeError, "x must be a torch.Tensor"),
        ("score-shape", dict(score=torch.randn(4, 2)), ValueError, "score must have the shape"),
        ("score-int", dict(score=s.int()), TypeError, "score must have a floating dtype"),
        ("score-device", dict(score=s.to("meta")), ValueError, "score must be on x's device"),
        ("step-negative", dict(step_size=-0.1), ValueError, "step_size must be finite and ≥ 0"),
        ("step-nan", dict(step_size=float("nan")), ValueError, "step_size must be finite"),
        (
            "step-inf-tensor",
            dict(step_size=torch.tensor([0.1, float("inf"), 0.1, 0.1])),
            ValueError,
            "step_size must be finite",
        ),
        (
            "step-wrong-len",
            dict(step_size=torch.rand(3)),
            ValueError,
            r"step_size tensor must be 0-d or per-sample of shape \[4\]",
        ),
        ("step-2d", dict(step_size=torch.rand(4, 1)), ValueError, "step_size tensor must be 0-d"),
        (
            "step-int-tensor",
            dict(step_size=torch.tensor([1, 1, 1, 1])),
            TypeError,
            "step_size tensor must have a floating",
        ),
        ("step-bool", dict(step_size=True), TypeError, "step_size must be a float"),
        ("step-str", dict(step_size="0.1"), TypeError, "step_size must be a float"),
        ("noise-negative", dict(noise_scale=-1.0), ValueError, "noise_scale must be finite and ≥ 0"),
        (
            "noise-negative-rows",
            dict(noise_scale=torch.tensor([1.0, -1.0, 1.0, 1.0])),
            ValueError,
            "noise_scale must be finite",
        ),
        (
            "noise-wrong-len",
            dict(noise_scale=torch.rand(5)),
            ValueError,
            "noise_scale tensor must be 0-d or per-sample",
        ),
        ("clamp-order", dict(clamp=(1.0, -1.0)), ValueError, "clamp must satisfy lo <= hi"),
        ("clamp-arity", dict(clamp=(1.0,)), TypeError, "clamp must be a"),
        ("clamp-nan", dict(clamp=(float("nan"), 1.0)), ValueError, "clamp lo must not be NaN"),
        ("generator-type", dict(generator=3), TypeError, "generator must be a torch.Generator"),
        ("backend-name", dict(backend="cuda"), ValueError, "backend must be one of"),
        ("rng-name", dict(rng="mt"), ValueError, "rng must be"),
        ("rng-torch-on-triton", dict(rng="torch", backend="triton"), ValueError, "rng='torch'"),
        ("offset-negative", dict(sample_offset=-1), ValueError, "sample_offset must be a non-negative int"),
        (
            "step-requires-grad",
            dict(step_size=torch.tensor(0.1, requires_grad=True)),
            ValueError,
            "step_size is treated as a constant",
        ),
    ]


@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input(case, inplace):
    _, over, exc, msg = case
    kwargs = dict(x=torch.randn(4, 3), score=torch.randn(4, 3), step_size=0.1)
    kwargs.update(over)
    x = kwargs.pop("x")
    before = x.clone() if isinstance(x, torch.Tensor) else None
    fn = fl.langevin_step_ if inplace else fl.langevin_step
    with pytest.raises(exc, match=msg):
        fn(x, kwargs.pop("score"), kwargs.pop("step_size"), **kwargs)
    if before is not None:
        assert torch.equal(x, before), "a failed call must leave x untouched"


def test_inplace_refuses_autograd():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="does not support autograd"):
        fl.langevin_step_(x, torch.randn(3), 0.1)


@pytest.mark.parametrize("generator", [True, False], ids=["generator", "default-generator"])
def test_refused_inplace_call_draws_nothing(generator):
    """Every check runs before the seed draw: a refused call leaves x and the generator as they were."""
    g = torch.Generator().manual_seed(11) if generator else None
    torch.manual_seed(11)
    x = torch.randn(4, 3, requires_grad=True)
    s = torch.randn(4, 3)
    before = x.detach().clone()
    state = (g if generator else torch.default_generator).get_state()
    with pytest.raises(RuntimeError, match="does not support autograd"):
        fl.langevin_step_(x, s, 0.1, generator=g)
    with pytest.raises(ValueError, match="sample_offset"):
        fl.langevin_step_(x.detach(), s, 0.1, generator=g, sample_offset=-1)
    assert torch.equal((g if generator else torch.default_generator).get_state(), state)
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize(
    "step", [np.float32(0.05), np.float64(0.05), np.float16(0.05), torch.tensor(0.05, dtype=torch.float16), 0.05]
)
def test_real_scalars_of_any_float_type(step):
    """numpy/torch float scalars of every precision are accepted, as their Python float value."""
    x, s = make_state((5, 3), torch.float32, torch.float32)
    value = float(step)
    got = fl.langevin_step(x, s, step, step, generator=torch.Generator().manual_seed(1), clamp=(np.float32(-2), 2))
    ref = fl.langevin_step(x, s, value, value, generator=torch.Generator().manual_seed(1), clamp=(-2.0, 2.0))
    assert torch.equal(got, ref)
    with pytest.raises(TypeError, match="step_size must be a float"):
        fl.langevin_step(x, s, np.bool_(True))


SMALL_CASES = [
    ((256, 2), 0, None, True),
    ((4096, 2), 0, None, True),
    ((7, 3, 5), 3, 0.2, True),
    ((300,), 65400, None, True),  # crosses a noise chunk: the serial chunk walk, straight through
    ((2, 20000), 0, None, True),  # beyond one piece: the serial chunk walk, straight through
]


@pytest.mark.parametrize("shape,offset,noise,straight", SMALL_CASES, ids=lambda v: str(v))
def test_small_cpu_straight_path_is_the_general_path(shape, offset, noise, straight):
    """The in-place straight path for small fp32 CPU steps gives bitwise the general path's
    result (out-of-place op, same generator state) and the reference formula with the
    stream's noise; it consumes exactly one seed draw."""
    from fastlangevin import reference

    x, s = make_state(shape, torch.float32, torch.float32)
    g = torch.Generator().manual_seed(5)
    general = fl.langevin_step(x, s, 0.03, noise, generator=g, sample_offset=offset)
    after_general = torch.rand(3, generator=g)
    g.manual_seed(5)
    xi = x.clone()
    with fl.track_backends() as ran:
        took = _small_cpu_step_(xi, s, 0.03, noise, None, g, None, None, offset)
        if not took:
            fl.langevin_step_(xi, s, 0.03, noise, generator=g, sample_offset=offset)
    assert took == straight and [b for _, b in ran] == ["torch"]
    assert torch.equal(xi, general)
    assert torch.equal(torch.rand(3, generator=g), after_general)
    g.manual_seed(5)  # the out-of-place straight path: the same values, x untouched
    new = _small_cpu_step_(x, s, 0.03, noise, None, g, None, None, offset, True)
    assert (new is not False) == straight
    if straight:
        assert torch.equal(new, general) and torch.equal(torch.rand(3, generator=g), after_general)
    seed = _rng.draw_seed_value(torch.Generator().manual_seed(5))
    row = x.numel() // shape[0]
    z = _rng.torch_normal(seed, offset * row, x.numel()).view(shape)
    b = math.sqrt(2 * 0.03) if noise is None else noise
    torch.testing.assert_close(xi, reference.langevin_step(x, s, 0.03, b, z), atol=2e-7, rtol=1e-6)


@requires_cuda
def test_generator_device_mismatch():
    x = torch.zeros(3, device="cuda")
    with pytest.raises(ValueError, match="generator must be on x's device type"):
        fl.langevin_step(x, x, 0.1, generator=torch.Generator())


def test_cpu_scalar_tensor_accepted_for_cuda_x_and_zero_noise_leaves_generator():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5)
    out = fl.langevin_step(x, x, torch.tensor(0.5), 0.0, generator=g)
    assert torch.equal(out, x + 0.5 * x)
    assert torch.equal(
        torch.randint(0, 1000, (3,), generator=g),
        torch.randint(0, 1000, (3,), generator=torch.Generator().manual_seed(0)),
    )


@pytest.mark.parametrize("shape,offset", [((4, 40000), 0), ((3, 70001), 5), ((1, 50000), 0), ((8, 100), 3)])
def test_serial_chunk_walk_is_the_piece_walk(shape, offset, monkeypatch):
    """The one-thread multi-chunk shortcut of the fallback gives bitwise what the generic piece
    walk (for_pieces) gives, in and out of place (<= 4 chunks: one worker whatever the threads)."""
    from fastlangevin.fallback import langevin_step as fb

    x, s = make_state(shape, torch.float32, torch.float32)
    g = torch.Generator().manual_seed(3)
    out = fl.langevin_step(x, s, 0.02, generator=g, sample_offset=offset)
    xi = x.clone()
    g.manual_seed(3)
    fl.langevin_step_(xi, s, 0.02, generator=g, sample_offset=offset)
    monkeypatch.setattr(fb, "_serial_cpu", lambda *args: False)
    g.manual_seed(3)
    generic = fl.langevin_step(x, s, 0.02, generator=g, sample_offset=offset)
    assert torch.equal(out, generic) and torch.equal(xi, generic)


def test_stepper_is_the_public_step():
    """The samplers' InplaceStepper is bitwise langevin_step_ (same draws), fast case or not."""
    from fastlangevin.ops.langevin_step import InplaceStepper

    x, s = make_state((64, 3), torch.float32, torch.float32)
    for noise, step in ((None, 0.01), (0.3, 0.02), (None, torch.full((64,), 0.01))):
        a, b = x.clone(), x.clone()
        ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        stepper = InplaceStepper(a, noise, generator=ga)
        for _ in range(3):
            stepper(s, step)
            fl.langevin_step_(b, s, step, noise, generator=gb)
        assert torch.equal(a, b) and torch.equal(ga.get_state(), gb.get_state())

"""The lean Triton call paths (issue 11) and the corrector's step-size kernel.

* ``kernels/snr_step.py`` (interpreted on CPU) against the reference formula
  :func:`fastlangevin.reference.corrector.snr_step_size_from_norms`, in every mode;
* the lean paths (:func:`fastlangevin.ops.langevin_step._lean_triton_step`, the corrector's
  ``_lean_triton``) against the general path, which a no-op torch function mode forces: bitwise
  the same outputs, the same generator draw, the same recorded backends;
* refused calls on the lean paths leave the input and the generator untouched.
"""

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

"""Tests of the fused DSM loss (fastlangevin.dsm_loss) and its custom ops (schedules:
tests/test_schedules.py).

Three implementations are compared: the Triton kernels (under TRITON_INTERPRET=1 on CPU), the
PyTorch fallback, and the reference formula (fastlangevin.reference.dsm) with ordinary autograd:

    x̃ = α x + σ z,   s = score_fn(x̃, σ),   ℓ_i = ½ λ_i Σ_j (s_ij + z_ij / σ_i)²
"""

import math

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks

import fastlangevin as fl
from fastlangevin import _rng, reference
from fastlangevin.fallback import dsm as fb
from fastlangevin.ops.dsm import dsm_loss_with_noise

OPS = torch.ops.fastlangevin


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def rows_view(t, ndim):
    return t.reshape((-1,) + (1,) * (ndim - 1))


def formula_rows(s, z, sigma, weight=None):
    """:func:`fastlangevin.reference.dsm_loss_rows` in the math dtype of sigma."""
    return reference.dsm_loss_rows(s.to(sigma.dtype), z.to(sigma.dtype), sigma, weight)


class AffineScore(torch.nn.Module):
    """A small row-wise score model with parameters: s = -c (x̃ - m) / (1 + σ²)."""

    def __init__(self, sample_shape, dtype=torch.float32, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.m = torch.nn.Parameter(torch.randn(sample_shape, generator=g, dtype=dtype))
        self.c = torch.nn.Parameter(torch.tensor(0.7, dtype=dtype))
        self.seen = None

    def forward(self, xt, sigma):
        self.seen = xt
        sig = rows_view(sigma, xt.dim()).to(xt.dtype)
        return -(xt - self.m.to(xt.dtype)) * self.c.to(xt.dtype) / (1 + sig * sig)


def make_inputs(shape, dtype, seed=0, per_sample=True):
    g = torch.Generator().manual_seed(seed)
    B = shape[0]
    x = torch.randn(shape, generator=g).to(dtype)
    z = torch.randn(shape, generator=g)
    sigma = (torch.rand(B, generator=g) * 1.5 + 0.05) if per_sample else 0.37
    alpha = torch.rand(B, generator=g) * 0.5 + 0.6
    weight = torch.rand(B, generator=g) * 2.0
    return x, z, sigma, alpha, weight


def assert_within_ulps(actual, expected, ulps=1):
    """|actual - expected| ≤ ulps · spacing of ``expected``'s dtype at |expected| (elementwise)."""
    assert actual.dtype == expected.dtype
    eps = torch.finfo(expected.dtype).eps
    a, e = actual.double(), expected.double()
    spacing = eps * torch.exp2(torch.floor(torch.log2(e.abs().clamp_min(torch.finfo(expected.dtype).tiny))))
    bad = (a - e).abs() > ulps * spacing
    assert not bad.any(), (
        f"{int(bad.sum())} elements differ by more than {ulps} ulp: {a[bad][:4].tolist()} vs {e[bad][:4].tolist()}"
    )


def rows_for(x, sigma, alpha=None, weight=None):
    """The [B] compute-dtype row tensors the public function builds."""
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    B = x.shape[0]
    sig = (sigma if isinstance(sigma, torch.Tensor) else torch.full((B,), sigma)).to(cdt)
    al = None if alpha is None else alpha.to(cdt)
    w = sig * sig if weight is None else weight.to(cdt)
    return sig, al, torch.reciprocal(sig), w


# ---------------------------------------------------------------------------------------
# Against the plain formula (injected noise): forward and gradients
# ---------------------------------------------------------------------------------------
CASES = [
    # (shape, per-sample sigma, alpha, weight)
    pytest.param((5, 3, 7), True, False, False, id="B5x3x7-sigmaB"),
    pytest.param((4, 33), False, True, False, id="B4x33-sigma_scalar-alpha"),
    pytest.param((3, 2, 3, 5), True, True, True, id="B3x2x3x5-alpha-weight"),
    pytest.param((7, 1), True, False, True, id="B7x1-weight"),
]

DTYPES = [
    pytest.param(torch.float32, 1e-6, 1e-5, id="fp32"),
    # bf16: stored tensors (x̃, ∂L/∂s) within 1 ulp — the interpreter truncates fp32→bf16, torch
    # rounds to nearest; the loss of a given score is fp32 math (summation-order tolerance).
    pytest.param(torch.bfloat16, 1e-6, 1e-5, id="bf16"),
]


@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("shape,per_sample,use_alpha,use_weight", CASES)
def test_matches_formula(device_backend, shape, per_sample, use_alpha, use_weight, dtype, atol, rtol):
    device, backend = device_backend
    x0, z, sigma, alpha, weight = make_inputs(shape, dtype, per_sample=per_sample)
    x0, z = x0.to(device), z.to(device)
    sigma = sigma.to(device) if isinstance(sigma, torch.Tensor) else sigma
    alpha = alpha.to(device) if use_alpha else None
    weight = weight.to(device) if use_weight else None
    B, nd = shape[0], len(shape)
    sig_rows = sigma if isinstance(sigma, torch.Tensor) else torch.full((B,), sigma, device=device)
    a = 1.0 if alpha is None else rows_view(alpha, nd)
    gl = torch.linspace(0.5, 1.5, B, device=device)  # upstream gradient of the per-sample losses

    net = AffineScore(shape[1:], seed=1).to(device)
    kept = {}

    def score_fn(xt, sig):
        assert sig.shape == (B,)
        kept["xt"] = xt
        kept["s"] = s = net(xt, sig)
        s.retain_grad()
        return s

    x = x0.clone().requires_grad_()
    with fl.track_backends() as ran:
        losses = dsm_loss_with_noise(
            score_fn, x, sigma, z, alpha=alpha, weight=weight, reduction="none", backend=backend
        )
        (losses * gl).sum().backward()
    assert [b for _, b in ran] == [backend] * 3
    assert [op for op, _ in ran] == ["dsm_perturb", "dsm_loss", "dsm_loss_backward"]
    assert losses.shape == (B,) and losses.dtype == torch.float32
    xt_seen, s_seen, gs_seen = kept["xt"].detach(), kept["s"].detach(), kept["s"].grad

    # forward: x̃ = α x + σ z — exact in fp32 on CPU (same operations), 1 ulp in bf16
    xt_ref = (a * x0.float() + rows_view(sig_rows, nd) * z).to(dtype)
    if dtype == torch.float32 and device == "cpu":
        assert torch.equal(xt_seen, xt_ref)
    else:
        assert_within_ulps(xt_seen, xt_ref)
    # forward: the loss of the score the network returned
    ref_rows = formula_rows(s_seen, z, sig_rows.float(), weight)
    torch.testing.assert_close(losses.detach(), ref_rows, atol=atol, rtol=rtol)
    # backward: ∂L/∂s = gl_i λ_i (s + z/σ_i), stored in the score's dtype
    lam = sig_rows.float() ** 2 if weight is None else weight
    gs_ref = (rows_view(gl * lam, nd) * (s_seen.float() + z / rows_view(sig_rows.float(), nd))).to(dtype)
    if dtype == torch.float32:
        torch.testing.assert_close(gs_seen, gs_ref, atol=atol, rtol=rtol)
    else:
        assert_within_ulps(gs_seen, gs_ref)
    # backward: x gets α · (∂s/∂x̃)ᵀ ∂L/∂s (exactly, given the network's own backward)
    leaf = xt_seen.clone().requires_grad_()
    (g_xt,) = torch.autograd.grad(net(leaf, sig_rows), leaf, gs_seen)
    assert torch.equal(x.grad, (g_xt.float() * a).to(dtype))

    if dtype == torch.float32:
        # the whole plain formula with autograd: losses and every gradient
        grads = [x.grad] + [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        xr = x0.clone().requires_grad_()
        ref = formula_rows(net(a * xr + rows_view(sig_rows, nd) * z, sig_rows), z, sig_rows, weight)
        (ref * gl).sum().backward()
        torch.testing.assert_close(losses.detach(), ref.detach(), atol=atol, rtol=rtol)
        for got, want in zip(grads, [xr.grad] + [p.grad for p in net.parameters()]):
            torch.testing.assert_close(got, want, atol=atol * want.abs().max().item(), rtol=rtol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(device_backend, reduction):
    device, backend = device_backend
    x, z, sigma, _, _ = make_inputs((6, 5), torch.float32)
    net = AffineScore((5,))
    rows = dsm_loss_with_noise(net, x.to(device), sigma.to(device), z.to(device), reduction="none", backend=backend)
    out = dsm_loss_with_noise(net, x.to(device), sigma.to(device), z.to(device), reduction=reduction, backend=backend)
    want = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]
    assert torch.equal(out, want)


def test_grad_wrt_score_is_weighted_residual(device_backend):
    """∂L/∂s = λ_i (s + z/σ_i) / B for the mean reduction."""
    device, backend = device_backend
    x, z, sigma, _, weight = make_inputs((4, 3, 5), torch.float32)
    x, z, sigma, weight = x.to(device), z.to(device), sigma.to(device), weight.to(device)
    kept = {}

    def score_fn(xt, sig):
        s = (xt * -0.4).requires_grad_()
        kept["s"] = s
        return s

    dsm_loss_with_noise(score_fn, x, sigma, z, weight=weight, backend=backend).backward()
    s = kept["s"].detach()
    want = rows_view(weight, 3) * (s + z / rows_view(sigma, 3)) / x.shape[0]
    torch.testing.assert_close(kept["s"].grad, want, atol=1e-6, rtol=1e-5)


def test_non_contiguous_inputs(device_backend):
    device, backend = device_backend
    base = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(2), device=device)
    x = base.transpose(1, 2)  # [5, 6, 4], non-contiguous
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), device=device)
    sigma = torch.full((5,), 0.5, device=device)
    score_fn = lambda xt, s: (xt * -2.0).transpose(1, 2).contiguous().transpose(1, 2)  # noqa: E731 non-contiguous output
    got = dsm_loss_with_noise(score_fn, x, sigma, z, reduction="none", backend=backend)
    xt = x + 0.5 * z
    torch.testing.assert_close(got, formula_rows(xt * -2.0, z, sigma), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Kernel against fallback, op by op
# ---------------------------------------------------------------------------------------
def _kernel_pairs():
    from fastlangevin import _backend

    if not _backend.triton_available():
        pytest.skip("Triton not installed")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return dev


@pytest.mark.parametrize("shape", [(5, 7), (3, 2, 9), (6, 4)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("injected", [True, False], ids=["injected", "philox"])
def test_kernel_vs_fallback_fp32(shape, injected):
    """Injected noise: perturb and backward bitwise equal, per-row loss to summation order.
    Generated noise: the fallback's PyTorch Philox is the kernel's stream to ~1e-6."""
    dev = _kernel_pairs()
    x, z, sigma, alpha, weight = make_inputs(shape, torch.float32, seed=4)
    x, z = x.to(dev), z.to(dev)
    sig, al, inv, w = [t.to(dev) for t in rows_for(x, sigma, alpha, weight)]
    seed = (
        torch.zeros(1, dtype=torch.int64, device=dev)
        if injected
        else _rng.draw_seed(torch.device(dev), torch.Generator(device=dev).manual_seed(9))
    )
    noise = z if injected else None
    out, grads = {}, {}
    for backend in ("triton", "torch"):
        xt = OPS.dsm_perturb(x, seed, al, sig, backend, "philox", noise)
        s = (xt * -0.6).detach().requires_grad_()
        rows = OPS.dsm_loss_rows(s, seed, inv, w, backend, "philox", noise)
        rows.backward(torch.linspace(0.2, 2.0, shape[0], device=dev))
        out[backend], grads[backend] = (xt, rows), s.grad
    (xt_k, rows_k), (xt_t, rows_t) = out["triton"], out["torch"]
    if injected and dev == "cpu":
        assert torch.equal(xt_k, xt_t)
        assert torch.equal(grads["triton"], grads["torch"])
    else:
        torch.testing.assert_close(xt_k, xt_t, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grads["triton"], grads["torch"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rows_k, rows_t, atol=1e-6, rtol=1e-6 if injected else 1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_kernel_vs_fallback_half_within_one_ulp(dtype):
    """Half-precision storage: x̃ and ∂L/∂s within 1 ulp; the loss of a given score is fp32 math."""
    dev = _kernel_pairs()
    x, z, sigma, alpha, weight = make_inputs((4, 3, 5), dtype, seed=5)
    x, z = x.to(dev), z.to(dev)
    sig, al, inv, w = [t.to(dev) for t in rows_for(x, sigma, alpha, weight)]
    seed = torch.zeros(1, dtype=torch.int64, device=dev)
    s0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).to(dtype).to(dev)
    res = {}
    for backend in ("triton", "torch"):
        xt = OPS.dsm_perturb(x, seed, al, sig, backend, "philox", z)
        s = s0.clone().requires_grad_()
        rows = OPS.dsm_loss_rows(s, seed, inv, w, backend, "philox", z)
        rows.sum().backward()
        assert xt.dtype == dtype and rows.dtype == torch.float32 and s.grad.dtype == dtype
        res[backend] = (xt, rows, s.grad)
    assert_within_ulps(res["triton"][0], res["torch"][0])
    assert_within_ulps(res["triton"][2], res["torch"][2])
    torch.testing.assert_close(res["triton"][1], res["torch"][1], atol=0, rtol=1e-6)
    torch.testing.assert_close(res["torch"][1], formula_rows(s0.float(), z, sig, w), atol=0, rtol=1e-5)


def test_outputs_fully_written():
    """Launchers and fallback write every element of NaN-prefilled outputs (odd row sizes)."""
    from fastlangevin.kernels import dsm as kd

    dev = _kernel_pairs()
    for B, D in [(3, 7), (5, 1), (2, 13)]:
        x = torch.randn(B * D, device=dev)
        seed = torch.tensor([12345], device=dev)
        sig, al, inv, w = [
            t.to(dev) for t in rows_for(x.view(B, D), torch.rand(B) + 0.1, torch.rand(B) + 0.5, torch.rand(B))
        ]
        for run in (
            lambda o: kd.launch_dsm_perturb(x, o, seed, al, sig, row_size=D),
            lambda o: kd.launch_dsm_loss_backward(x, o, seed, inv, w, row_size=D),
            lambda o: fb.dsm_perturb_torch(x, o, seed, al, sig, row_size=D, elem_offset=0, rng="philox"),
            lambda o: fb.dsm_loss_backward_torch(x, o, seed, inv, w, row_size=D, elem_offset=0, rng="philox"),
        ):
            out = torch.full_like(x, float("nan"))
            run(out)
            assert not out.isnan().any()
        out = torch.full((B,), float("nan"), device=dev)
        kd.launch_dsm_loss_rows(x, out, seed, inv, w, row_size=D)
        assert not out.isnan().any()


def test_perturb_noise_is_standard_normal_and_block_independent():
    """(x̃ - x)/σ is N(0, 1) and the kernel's stream does not depend on BLOCK."""
    from fastlangevin.kernels import dsm as kd

    dev = _kernel_pairs()
    B, D = 4, 4099  # rows start mid Philox group
    x = torch.zeros(B * D, device=dev)
    sig = torch.ones(B, device=dev)
    seed = torch.tensor([2024], device=dev)
    a = kd.launch_dsm_perturb(x, torch.empty_like(x), seed, None, sig, row_size=D)
    b = kd.launch_dsm_perturb(x, torch.empty_like(x), seed, None, sig, row_size=D, block=256)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, _rng.philox_normal(seed, 0, B * D), atol=1e-5, rtol=1e-5)
    n = a.numel()
    assert abs(a.mean().item()) < 5 / math.sqrt(n)
    assert abs(a.var().item() - 1) < 5 * math.sqrt(2 / n)


@pytest.mark.parametrize("elem_offset", [0, 3, 6])
@pytest.mark.parametrize("B,D", [(3, 7), (2, 8)], ids=["3x7", "2x8-aligned"])
def test_launchers_honour_elem_offset(B, D, elem_offset):
    """The noise of element i is the global stream's element elem_offset + i in every kernel."""
    from fastlangevin.kernels import dsm as kd

    dev = _kernel_pairs()
    x = torch.randn(B * D, generator=torch.Generator().manual_seed(1)).to(dev)
    seed = torch.tensor([4242], device=dev)
    sig, _, inv, w = [None if t is None else t.to(dev) for t in rows_for(x.view(B, D), torch.rand(B) + 0.1)]
    kw = dict(row_size=D, elem_offset=elem_offset)
    fkw = dict(kw, rng="philox")
    pairs = [
        (
            kd.launch_dsm_perturb(x, torch.empty_like(x), seed, None, sig, **kw),
            fb.dsm_perturb_torch(x, torch.empty_like(x), seed, None, sig, **fkw),
        ),
        (
            kd.launch_dsm_loss_backward(x, torch.empty_like(x), seed, inv, w, **kw),
            fb.dsm_loss_backward_torch(x, torch.empty_like(x), seed, inv, w, **fkw),
        ),
        (
            kd.launch_dsm_loss_rows(x, torch.empty(B, device=dev), seed, inv, w, **kw),
            fb.dsm_loss_rows_torch(x, seed, inv, w, **fkw),
        ),
    ]
    for got, want in pairs:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    z = _rng.philox_normal(seed, elem_offset, B * D)
    torch.testing.assert_close(pairs[0][0], x + sig.repeat_interleave(D) * z, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Generated noise: the loss regenerates exactly the perturb's z
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_exact_target_gives_zero_loss(device_backend, dtype):
    """score_fn = -(x̃ - αx)/σ² is the perturbation kernel's score: the loss vanishes."""
    device, backend = device_backend
    x, _, sigma, alpha, _ = make_inputs((4, 3, 5), dtype, seed=7)
    x, sigma, alpha = x.to(device), sigma.to(device).to(dtype), alpha.to(device).to(dtype)
    w = torch.nn.Parameter(torch.ones((), dtype=dtype, device=device))

    def exact(xt, sig):
        return -(xt - rows_view(alpha, 3) * x) / rows_view(sig, 3) ** 2 * w

    loss = fl.dsm_loss(
        exact, x, sigma, alpha=alpha, backend=backend, generator=torch.Generator(device=device).manual_seed(3)
    )
    loss.backward()
    # a zero score's loss is ½ Σ z² ≈ D/2 per sample: rounding leaves ≤ 1e-12 (fp32) of it
    tol = 1e-12 if dtype == torch.float32 else 1e-28
    D = x[0].numel()
    assert 0 <= loss.item() <= tol * D
    assert abs(w.grad.item()) <= math.sqrt(tol) * D
    # ... and a wrong σ in the target is far from 0: the check can fail
    off = fl.dsm_loss(
        lambda xt, sig: exact(xt, sig * 1.1),
        x,
        sigma,
        alpha=alpha,
        backend=backend,
        generator=torch.Generator(device=device).manual_seed(3),
    )
    assert off.item() > 1e-3 * D


@pytest.mark.parametrize(
    "backend,rng,shape",
    [
        pytest.param("torch", "torch", (3, 50001), id="torch-rng_torch-rows_span_chunks"),
        pytest.param("torch", "philox", (3, 5, 7), id="torch-rng_philox"),
        pytest.param("triton", "philox", (3, 5, 7), id="triton"),
    ],
)
def test_generated_noise_matches_formula(backend, rng, shape):
    """Reconstruct z from the drawn seed with fastlangevin._rng and compare with the formula."""
    if backend == "triton":
        _kernel_pairs()
    x, _, sigma, alpha, weight = make_inputs(shape, torch.float32, seed=8)
    net = AffineScore(shape[1:])
    gen = torch.Generator().manual_seed(11)
    twin = torch.Generator()
    twin.set_state(gen.get_state())
    seed = _rng.draw_seed(torch.device("cpu"), twin)  # the seed dsm_loss will draw
    n = x.numel()
    z = (_rng.torch_normal(int(seed), 0, n) if rng == "torch" else _rng.philox_normal(seed, 0, n)).view(shape)
    got = fl.dsm_loss(
        net, x, sigma, alpha=alpha, weight=weight, reduction="none", generator=gen, backend=backend, rng=rng
    )
    a = rows_view(alpha, x.dim())
    want = formula_rows(net(a * x + rows_view(sigma, x.dim()) * z, sigma), z, sigma, weight)
    tol = 1e-5 if rng == "torch" else 1e-4  # PyTorch's Philox normals are the kernel's to ~1e-6
    torch.testing.assert_close(got, want.detach(), atol=0, rtol=tol)


# ---------------------------------------------------------------------------------------
# gradcheck (float64)
# ---------------------------------------------------------------------------------------
def test_gradcheck_fallback_float64():
    x, z, sigma, alpha, weight = make_inputs((3, 2, 3), torch.float64, seed=10)
    z, sigma, alpha, weight = z.double(), sigma.double(), alpha.double(), weight.double()
    x.requires_grad_()
    m = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def score_fn_of(m):
        return lambda xt, sig: -torch.tanh(xt - m) / (1 + rows_view(sig, 3))

    def injected(x, m):
        return dsm_loss_with_noise(
            score_fn_of(m), x, sigma, z, alpha=alpha, weight=weight, reduction="none", backend="torch"
        )

    torch.autograd.gradcheck(injected, (x, m))
    for rng in ("torch", "philox"):  # generated noise: same generator state at every call

        def generated(x, m, rng=rng):
            g = torch.Generator().manual_seed(5)
            return fl.dsm_loss(
                score_fn_of(m), x, sigma, alpha=alpha, reduction="sum", generator=g, backend="torch", rng=rng
            )

        torch.autograd.gradcheck(generated, (x, m))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gradcheck_loss_op_regenerates_noise(backend):
    """The op's backward regenerates z from the seed: gradcheck against its own forward."""
    if backend == "triton":
        _kernel_pairs()
    s = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    seed = torch.tensor([987654321])
    sig, al, inv, w = rows_for(s, torch.tensor([0.3, 1.7]), torch.tensor([0.9, 0.6]), torch.tensor([1.5, 0.25]))
    rng = "philox" if backend == "triton" else "torch"
    torch.autograd.gradcheck(lambda s: OPS.dsm_loss_rows(s, seed, inv, w, backend, rng, None), (s,))
    torch.autograd.gradcheck(lambda x: OPS.dsm_perturb(x, seed, al, sig, backend, rng, None), (x,))


# ---------------------------------------------------------------------------------------
# Optimal score for Gaussian data
# ---------------------------------------------------------------------------------------
def test_gradient_vanishes_at_optimal_score_gaussian():
    """Data N(μ, s²I), x̃ = αx + σz: the optimal score is -(x̃ - αμ)/(α²s² + σ²). A model
    containing it has zero expected loss gradient there, and a clearly non-zero one elsewhere."""
    D, B, K = 4, 4096, 12
    mu = torch.tensor([1.0, -2.0, 0.5, 3.0])
    s_data, alpha = 0.7, 0.8
    sigmas = fl.geometric_sigmas(2.0, 0.1, 5)

    def mean_grads(mu_hat, var_hat):
        mh = torch.nn.Parameter(mu_hat.clone())
        vh = torch.nn.Parameter(torch.tensor(var_hat))
        model = lambda xt, sig: -(xt - alpha * mh) / (alpha**2 * vh + sig[:, None] ** 2)  # noqa: E731
        gen = torch.Generator().manual_seed(21)
        out = []
        for _ in range(K):
            x = mu + s_data * torch.randn(B, D, generator=gen)
            _, sig = fl.sample_noise_levels(sigmas, B, generator=gen)
            gm, gv = torch.autograd.grad(
                fl.dsm_loss(model, x, sig, alpha=alpha, generator=gen, backend="torch"), (mh, vh)
            )
            out.append(torch.cat([gm, gv.reshape(1)]))
        g = torch.stack(out)
        return g.mean(0), g.std(0) / math.sqrt(K)

    mean, se = mean_grads(mu, s_data**2)
    assert (mean.abs() < 5 * se).all(), (mean, se)
    mean, se = mean_grads(mu + 0.3, 1.5 * s_data**2)
    assert (mean.abs() > 10 * se).all(), (mean, se)


# ---------------------------------------------------------------------------------------
# Memory: what is saved for backward
# ---------------------------------------------------------------------------------------
def _saved(fn):
    """Run fn under saved_tensors_hooks: the tensors autograd saved (unique storages)."""
    seen = {}

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen.setdefault(key, t)
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, list(seen.values())


def test_fused_loss_saves_no_noise_tensor():
    B, shape = 8, (3, 16, 16)
    D = math.prod(shape)
    x = torch.randn(B, *shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    sigma = torch.rand(B, generator=torch.Generator().manual_seed(1)) + 0.1
    kept = {}

    def score_fn(xt, sig):  # saves nothing itself, so only the loss's saving is counted
        kept["s"] = xt * -0.5
        return kept["s"]

    # fused, regenerating (save_noise=False): exactly one [B, D] tensor is saved, and it is the score
    loss, saved = _saved(
        lambda: fl.dsm_loss(
            score_fn, x, sigma, generator=torch.Generator().manual_seed(2), backend="torch", save_noise=False
        )
    )
    large = [t for t in saved if t.numel() >= B * D]
    assert len(large) == 1 and large[0].untyped_storage().data_ptr() == kept["s"].untyped_storage().data_ptr()
    fused_bytes = sum(t.numel() * t.element_size() for t in saved)
    assert fused_bytes < B * D * 4 + 1024  # the score + seed + [B] vectors
    loss.backward()  # still differentiable under the hooks
    assert x.grad is not None and torch.isfinite(x.grad).all()

    # saved noise (the CPU default): one [B, D] tensor too — the residual s + z/σ, not z and s
    gen = torch.Generator().manual_seed(2)
    loss_saved, saved_kept = _saved(lambda: fl.dsm_loss(score_fn, x, sigma, generator=gen, backend="torch"))
    large_kept = [t for t in saved_kept if t.numel() >= B * D]
    assert len(large_kept) == 1 and sum(t.numel() * t.element_size() for t in saved_kept) < B * D * 4 + 1024
    assert torch.equal(loss_saved, loss)

    # naive, hand-written (NCSN / score-SDE style): saves the noise-carrying residual s + z/σ
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    sig = rows_view(sigma, 4)

    def naive_square():
        s = score_fn(x + sig * z, sigma)
        return (0.5 * sigma**2 * ((s + z / sig) ** 2).flatten(1).sum(1)).mean()

    _, saved_sq = _saved(naive_square)
    large_sq = [t for t in saved_sq if t.numel() >= B * D]
    assert len(large_sq) == 1 and torch.allclose(large_sq[0], kept["s"] + z / sig)  # a noise tensor
    sq_bytes = sum(t.numel() * t.element_size() for t in saved_sq)

    # naive with mse_loss: saves the target -z/σ itself
    def naive_mse():
        s = score_fn(x + sig * z, sigma)
        per = torch.nn.functional.mse_loss(s, -z / sig, reduction="none").flatten(1).sum(1)
        return (0.5 * sigma**2 * per).mean()

    _, saved_mse = _saved(naive_mse)
    large_mse = [t for t in saved_mse if t.numel() >= B * D]
    assert len(large_mse) == 2 and any(torch.equal(t, -z / sig) for t in large_mse)
    mse_bytes = sum(t.numel() * t.element_size() for t in saved_mse)
    # Bytes: the fused loss keeps as much as the hand-written residual form (one [B, D] tensor,
    # the score instead of a noise-carrying residual; plus seed and [B] vectors) and one [B, D]
    # tensor less than the mse_loss form. Its peak-memory gain is in the forward temporaries
    # (z, σz, x̃ building, target, residual, square), measured by `fastlangevin bench --workloads dsm`.
    assert abs(fused_bytes - sq_bytes) <= 1024
    assert fused_bytes <= mse_bytes - B * D * 4 + 1024


# ---------------------------------------------------------------------------------------
# Reproducibility and batch invariance
# ---------------------------------------------------------------------------------------
def _loss_and_grads(backend, x0, sigma, seed, reduction="none", rng=None, net=None):
    net = net or AffineScore(x0.shape[1:])
    x = x0.clone().requires_grad_()
    out = fl.dsm_loss(
        net,
        x,
        sigma,
        alpha=0.9,
        reduction=reduction,
        generator=torch.Generator(device=x0.device).manual_seed(seed),
        backend=backend,
        rng=rng,
    )
    (out * torch.arange(1, out.numel() + 1, device=x0.device)).sum().backward()
    return out.detach(), x.grad, net.m.grad


def test_bitwise_reproducible(device_backend):
    device, backend = device_backend
    x, _, sigma, _, _ = make_inputs((5, 3, 7), torch.float32, seed=12)
    x, sigma = x.to(device), sigma.to(device)
    a = _loss_and_grads(backend, x, sigma, seed=4, reduction="mean")
    b = _loss_and_grads(backend, x, sigma, seed=4, reduction="mean")
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    c = _loss_and_grads(backend, x, sigma, seed=5, reduction="mean")
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("shape", [(6, 3, 7), (5, 1), (4, 2, 6)], ids=["6x3x7", "5x1", "4x2x6-aligned"])
def test_batch_invariance(device_backend, shape):
    """The per-sample losses (and gradients) of x[:k] are those rows of the full batch."""
    device, backend = device_backend
    x, _, sigma, _, _ = make_inputs(shape, torch.float32, seed=13)
    x, sigma = x.to(device), sigma.to(device)
    full = _loss_and_grads(backend, x, sigma, seed=6)
    for k in (1, 3):
        part = _loss_and_grads(backend, x[:k], sigma[:k], seed=6)
        assert torch.equal(part[0], full[0][:k])
        assert torch.equal(part[1], full[1][:k])


@pytest.mark.parametrize("rng", ["torch", "philox"])
def test_batch_invariance_fallback_long_rows(rng):
    """Fallback with rows longer than the row-sum width and spanning noise chunks."""
    x = torch.randn(24, 3, 41, 41, generator=torch.Generator().manual_seed(14))  # 24 x 5043
    sigma = torch.rand(24, generator=torch.Generator().manual_seed(15)) + 0.1
    full = fl.dsm_loss(
        lambda xt, s: -xt,
        x,
        sigma,
        reduction="none",
        generator=torch.Generator().manual_seed(1),
        backend="torch",
        rng=rng,
    )
    for k in (1, 7, 13):
        part = fl.dsm_loss(
            lambda xt, s: -xt,
            x[:k],
            sigma[:k],
            reduction="none",
            generator=torch.Generator().manual_seed(1),
            backend="torch",
            rng=rng,
        )
        assert torch.equal(part, full[:k])


def test_fallback_threaded_equals_serial():
    """Chunks spread over torch's threads give bitwise the serial result (loss, x̃, gradients)."""
    from fastlangevin.fallback.chunks import _workers

    x = torch.randn(9, 65537, generator=torch.Generator().manual_seed(17))  # 10 noise chunks
    sigma = torch.rand(9, generator=torch.Generator().manual_seed(18)) + 0.1
    threads = torch.get_num_threads()
    if _workers(x.device, 10) < 2:
        pytest.skip("needs 2 torch threads")
    results = []
    try:
        for n in (threads, 1):
            torch.set_num_threads(n)
            b = torch.zeros(65537, requires_grad=True)
            seen = {}
            fn = lambda xt, s: seen.setdefault("xt", xt) * -0.5 + b  # noqa: E731
            loss = fl.dsm_loss(
                fn, x, sigma, reduction="none", generator=torch.Generator().manual_seed(2), backend="torch"
            )
            loss.sum().backward()
            results.append((loss.detach(), seen["xt"], b.grad))
    finally:
        torch.set_num_threads(threads)
    for a, c in zip(*results):
        assert torch.equal(a, c)


def test_row_sums_fixed_order():
    t = torch.randn(5, 3001, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = fb.row_sums(t)
    torch.testing.assert_close(got, t.sum(1), atol=1e-10, rtol=1e-12)
    for k in (1, 2):
        assert torch.equal(fb.row_sums(t[:k]), got[:k])


# ---------------------------------------------------------------------------------------
# Mappings to published losses
# ---------------------------------------------------------------------------------------
def test_mapping_ncsn_annealed_dsm():
    """NCSN (anneal_power 2): x̃ = x + σz, target -(x̃ - x)/σ², ½ Σ (s - target)² σ², mean."""
    B, shape = 16, (2, 3, 3)
    gen = torch.Generator().manual_seed(30)
    x = torch.randn(B, *shape, generator=gen)
    z = torch.randn(B, *shape, generator=gen)
    sigmas = fl.geometric_sigmas(1.0, 0.01, 10)
    idx, used = fl.sample_noise_levels(sigmas, B, generator=gen)
    assert torch.equal(used, sigmas[idx])
    net = AffineScore(shape)

    u = rows_view(used, 4)
    perturbed = x + u * z
    target = -(perturbed - x) / u**2
    ncsn = (0.5 * ((net(perturbed, used) - target) ** 2).flatten(1).sum(-1) * used**2).mean()
    ours = dsm_loss_with_noise(net, x, used, z, backend="torch")
    torch.testing.assert_close(ours, ncsn, atol=0, rtol=1e-5)


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_mapping_score_sde_likelihood_weighting(sde):
    """Score SDE (sum over dims): ½ Σ (s + z/std)² · g(t)², mean  →  alpha=m(t), sigma=std(t),
    weight=g(t)²; without likelihood weighting ½ Σ (s·std + z)²  →  weight=None (λ = std²)."""
    B, shape = 12, (3, 4)
    gen = torch.Generator().manual_seed(31)
    x = torch.randn(B, *shape, generator=gen)
    z = torch.randn(B, *shape, generator=gen)
    t = torch.rand(B, generator=gen) * (1 - 1e-5) + 1e-5
    if sde == "ve":
        smin, smax = 0.01, 50.0
        std = smin * (smax / smin) ** t
        mean_scale = torch.ones(B)
        g2 = std**2 * 2 * math.log(smax / smin)  # d σ(t)² / dt
        obj = fl.VESDE(sigma_min=smin, sigma_max=smax)
    else:
        bmin, bmax = 0.1, 20.0
        log_m = -0.25 * t**2 * (bmax - bmin) - 0.5 * t * bmin
        mean_scale = torch.exp(log_m)
        std = torch.sqrt(1 - torch.exp(2 * log_m))
        g2 = bmin + t * (bmax - bmin)  # β(t)
        obj = fl.VPSDE(beta_min=bmin, beta_max=bmax)
        torch.testing.assert_close(obj.beta(t).float(), g2)
    # the same perturbation kernel as the samplers' SDE objects
    torch.testing.assert_close(obj.marginal_mean_scale(t).float(), mean_scale)
    torch.testing.assert_close(obj.marginal_std(t).float(), std)
    net = AffineScore(shape)
    xt = rows_view(mean_scale, 3) * x + rows_view(std, 3) * z
    s = net(xt, std)
    lik = (0.5 * ((s + z / rows_view(std, 3)) ** 2).flatten(1).sum(-1) * g2).mean()
    plain = (0.5 * ((s * rows_view(std, 3) + z) ** 2).flatten(1).sum(-1)).mean()
    ours_lik = dsm_loss_with_noise(net, x, std, z, alpha=mean_scale, weight=g2, backend="torch")
    ours_plain = dsm_loss_with_noise(net, x, std, z, alpha=mean_scale, backend="torch")
    torch.testing.assert_close(ours_lik, lik, atol=0, rtol=1e-5)
    torch.testing.assert_close(ours_plain, plain, atol=0, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Custom ops: opcheck and torch.compile
# ---------------------------------------------------------------------------------------
def test_opcheck(device_backend):
    device, backend = device_backend
    rng = "torch" if backend == "torch" and device == "cpu" else "philox"
    x = torch.randn(3, 2, 5, device=device, requires_grad=True)
    sig, al, inv, w = [
        None if t is None else t.to(device)
        for t in rows_for(x, torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.9, 0.8, 0.7]))
    ]
    seed = torch.tensor([77], device=device)
    z = torch.randn(x.shape, device=device)
    s = torch.randn(x.shape, device=device, requires_grad=True)
    for args in [(x, seed, al, sig, backend, rng, None), (x, seed, None, sig, backend, rng, z)]:
        torch.library.opcheck(OPS.dsm_perturb, args)
    for noise in (None, z):
        torch.library.opcheck(OPS.dsm_loss_rows, (s, seed, inv, w, backend, rng, noise))
        torch.library.opcheck(OPS.dsm_loss_rows_backward, (s.detach(), seed, inv, w, backend, rng, noise))


def test_compile_fullgraph(device_backend):
    """The whole loss — validation, seed draw, perturb, the user's score_fn, loss — in one graph."""
    device, backend = device_backend
    torch._dynamo.reset()
    x0, _, sigma, _, _ = make_inputs((4, 3, 5), torch.float32, seed=16)
    x0, sigma = x0.to(device), sigma.to(device)
    net = AffineScore((3, 5)).to(device)

    def step(x):
        return fl.dsm_loss(net, x, sigma, alpha=0.9, backend=backend)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (compiled, step):
        torch.manual_seed(123)
        x = x0.clone().requires_grad_()
        loss = fn(x)
        loss.backward()
        results.append((loss.detach(), x.grad, net.m.grad.clone()))
        net.zero_grad()
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------
def _ok_fn(xt, sig):
    return -xt


BAD = [
    (dict(sigma=0.0), ValueError, "sigma"),
    (dict(sigma=-1.0), ValueError, "sigma"),
    (dict(sigma=float("nan")), ValueError, "sigma"),
    (dict(sigma=float("inf")), ValueError, "sigma"),
    (dict(sigma=torch.tensor([0.5, 0.0, 1.0])), ValueError, "sigma"),
    (dict(sigma=torch.tensor([0.5, float("nan"), 1.0])), ValueError, "sigma"),
    (dict(sigma=torch.tensor([0.5, 1.0])), ValueError, r"sigma.*\[3\]"),
    (dict(sigma=torch.ones(3, 1)), ValueError, "sigma"),
    (dict(sigma=torch.ones(3, requires_grad=True)), ValueError, "sigma"),
    (dict(sigma=torch.ones(3, dtype=torch.int64)), TypeError, "sigma"),
    (dict(sigma="1"), TypeError, "sigma"),
    (dict(alpha=torch.ones(4)), ValueError, r"alpha.*\[3\]"),
    (dict(alpha=-0.5), ValueError, "alpha"),
    (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(weight=-1.0), ValueError, "weight"),
    (dict(weight=float("inf")), ValueError, "weight"),
    (dict(sigma=torch.tensor([0.5, float("inf"), 1.0])), ValueError, "sigma"),
    (dict(sigma=torch.tensor([0.5, -0.0, 1.0])), ValueError, "sigma"),
    (dict(weight=torch.ones(2)), ValueError, r"weight.*\[3\]"),
    (dict(weight=torch.tensor([1.0, -1.0, 1.0])), ValueError, "weight"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(score_fn=None), TypeError, "score_fn"),
    (dict(score_fn=lambda xt, s: xt[:, :2]), ValueError, "score_fn.*shape"),
    (dict(score_fn=lambda xt, s: xt.reshape(3, 2, 2)), ValueError, "score_fn.*shape"),
    (dict(score_fn=lambda xt, s: xt.to(torch.int32)), TypeError, "score_fn.*dtype"),
    (dict(score_fn=lambda xt, s: xt.to(torch.complex64)), TypeError, "score_fn.*dtype"),
    (dict(score_fn=lambda xt, s: xt.numpy()), TypeError, "score_fn.*Tensor"),
    (dict(x=torch.ones(3, 4, dtype=torch.int64)), TypeError, "x"),
    (dict(x=torch.ones(0, 4)), ValueError, "x"),
    (dict(x=[1.0, 2.0]), TypeError, "x"),
    (dict(generator="seed"), TypeError, "generator"),
    (dict(backend="cuda"), ValueError, "backend"),
    (dict(rng="mt"), ValueError, "rng"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD, ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None)
def test_bad_input(kwargs, exc, match):
    args = dict(score_fn=_ok_fn, x=torch.ones(3, 4), sigma=0.5)
    args.update(kwargs)
    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    kw = {k: v for k, v in args.items() if k not in ("score_fn", "x", "sigma")}
    kw.setdefault("generator", gen)
    kw.setdefault("backend", "torch")
    with pytest.raises(exc, match=match):
        fl.dsm_loss(args["score_fn"], args["x"], args["sigma"], **kw)
    if "score_fn" not in kwargs and kw["generator"] is gen:  # argument errors: raised before any draw
        assert torch.equal(gen.get_state(), before)


def test_bad_injected_noise_shape():
    with pytest.raises(ValueError, match="noise"):
        dsm_loss_with_noise(_ok_fn, torch.ones(3, 4), 0.5, torch.ones(3, 5), backend="torch")


@pytest.mark.parametrize("rng", ["torch", "philox"])
@pytest.mark.parametrize("shape", [(16, 3, 4, 4), (3, 20000), (5, 2)], ids=lambda s: "x".join(map(str, s)))
def test_saved_noise_equals_regenerated_noise_bitwise(rng, shape):
    """save_noise=True draws z once from the same stream: losses and every gradient are bitwise
    those of the regenerating ops (rows straddling fallback pieces included)."""
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    sigma = torch.rand(shape[0], generator=torch.Generator().manual_seed(5)) + 0.1
    results = []
    for save in (False, True):
        x = x0.clone().requires_grad_()
        w = torch.ones(1, requires_grad=True)
        with fl.track_backends() as ran:
            loss = fl.dsm_loss(
                lambda xt, sig: xt * (-0.7 * w), x, sigma, alpha=0.9, reduction="none",
                generator=torch.Generator().manual_seed(6), backend="torch", rng=rng, save_noise=save,
            )  # fmt: skip
            loss.sum().backward()
        assert {b for _, b in ran} == {"torch"}
        results.append((loss.detach(), x.grad, w.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="save_noise"):
        fl.dsm_loss(lambda xt, sig: xt, x0, 0.5, save_noise="yes")


# ---------------------------------------------------------------------------------------
# The straight CPU path for small fp32 batches (the default: saved noise)
# ---------------------------------------------------------------------------------------
SMALL_CASES = [
    dict(shape=(256, 2), sigma="rows", alpha=None, weight=None, reduction="mean", offset=0, x_grad=False),
    dict(shape=(7, 3, 5), sigma="rows", alpha=0.8, weight=None, reduction="sum", offset=5, x_grad=True),
    dict(shape=(13, 40), sigma=0.37, alpha=None, weight=2.5, reduction="none", offset=0, x_grad=True),
    dict(shape=(1, 3), sigma=0.61, alpha=0.9, weight=None, reduction="mean", offset=0, x_grad=False),
    dict(shape=(5, 2000), sigma="rows", alpha=None, weight=0.0, reduction="mean", offset=7, x_grad=True),
]


@pytest.mark.parametrize("case", SMALL_CASES, ids=lambda c: "x".join(map(str, c["shape"])) + "-" + c["reduction"])
def test_small_cpu_path_bitwise_equals_regenerating_ops(case):
    """The straight path runs (it returns a loss) and gives bitwise the losses, every gradient and
    the generator state of the regenerating ops (save_noise=False) on the same arguments."""
    from fastlangevin.ops import dsm as dsm_ops

    B = case["shape"][0]
    x0 = torch.randn(case["shape"], generator=torch.Generator().manual_seed(21))
    sigma = case["sigma"]
    if sigma == "rows":
        sigma = torch.rand(B, generator=torch.Generator().manual_seed(22)) + 0.1
    results = []
    for straight in (True, False):
        x = x0.clone().requires_grad_(case["x_grad"])
        net = AffineScore(case["shape"][1:])
        gen = torch.Generator().manual_seed(23)
        args = (net, x, sigma, case["alpha"], case["weight"], case["reduction"], gen, "torch", None, case["offset"])
        with fl.track_backends() as ran:
            if straight:
                loss = dsm_ops._small_cpu_saved(*args)
                assert loss is not None, "the straight path declined a case it covers"
            else:
                loss = fl.dsm_loss(
                    net, x, sigma, alpha=case["alpha"], weight=case["weight"], reduction=case["reduction"],
                    generator=gen, backend="torch", sample_offset=case["offset"], save_noise=False,
                )  # fmt: skip
            (loss if loss.dim() == 0 else (loss * torch.arange(1.0, B + 1)).sum()).backward()
        assert {b for _, b in ran} == {"torch"}
        grads = [p.grad for p in net.parameters()] + ([x.grad] if case["x_grad"] else [])
        results.append((loss.detach(), *grads, gen.get_state()))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "change",
    [
        dict(x=torch.randn(4, 6, dtype=torch.float64)),
        dict(x=torch.randn(6, 4).t()),  # non-contiguous
        dict(x=torch.randn(3, 20000)),  # more than one noise chunk / fallback piece
        dict(alpha=torch.full((4,), 0.5)),
        dict(weight=torch.full((4,), 2.0)),
        dict(sigma=torch.full((4,), 0.5, dtype=torch.float64)),
        dict(sigma=torch.tensor(0.5)),
        dict(rng="philox"),
    ],
    ids=["fp64", "noncontig", "multichunk", "alpha-rows", "weight-rows", "sigma-fp64", "sigma-0d", "philox"],
)
def test_small_cpu_path_declines_other_cases(change):
    """Outside its case the straight path returns None (the general path then runs) and leaves
    the generator untouched."""
    from fastlangevin.ops import dsm as dsm_ops

    args = dict(x=torch.randn(4, 6), sigma=0.5, alpha=None, weight=None, rng=None)
    args.update(change)
    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    out = dsm_ops._small_cpu_saved(
        _ok_fn, args["x"], args["sigma"], args["alpha"], args["weight"], "mean", gen, "torch", args["rng"], 0
    )
    assert out is None and torch.equal(gen.get_state(), before)


@pytest.mark.parametrize("sigma,weight", [(1e20, None), (1e-20, None), (0.5, 1e30)], ids=["huge", "tiny", "weight"])
def test_extreme_scalar_scales_no_warning_same_loss(sigma, weight):
    """Python-float scales whose fp32 squares or reciprocals leave the normal range take the
    general path: no numpy overflow warning, the regenerating ops' values."""
    import warnings

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(30))
    got = []
    for save in (None, False):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got.append(
                fl.dsm_loss(
                    _ok_fn,
                    x,
                    sigma,
                    weight=weight,
                    reduction="none",
                    generator=torch.Generator().manual_seed(31),
                    backend="torch",
                    save_noise=save,
                )  # fmt: skip
            )
    assert torch.equal(got[0], got[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_launchers_take_contiguous_tensors_of_any_shape(dtype):
    """The kernels see pointers and dtypes only: a contiguous ``[B, C, W]`` tensor and its flat view launch
    bitwise the same results; a kept plan (``loss_plans``) and a given partial buffer too."""
    from fastlangevin.kernels import dsm as kd

    dev = _kernel_pairs()
    B, C, W = 3, 2, 5  # rows start mid Philox group
    x = torch.randn(B, C, W, generator=torch.Generator().manual_seed(6)).to(dev, dtype)
    seed = torch.tensor([31337], device=dev)
    sig, al, inv, w = [t.to(dev) for t in rows_for(x.view(B, -1), torch.rand(B) + 0.1, torch.rand(B) + 0.5, None)]
    kw = dict(row_size=C * W, elem_offset=3)
    flat, full = x.view(-1), x
    perturb = [kd.launch_dsm_perturb(t, torch.empty_like(t), seed, al, sig, **kw).view(-1) for t in (flat, full)]
    back = [kd.launch_dsm_loss_backward(t, torch.empty_like(t), seed, inv, w, **kw).view(-1) for t in (flat, full)]
    loss_plan, backward_plan = kd.loss_plans(B, C * W, 3, dtype == torch.bfloat16, False, x.is_cpu)
    partial = torch.full((B * loss_plan[0],), float("nan"), device=dev)
    rows = [
        kd.launch_dsm_loss_rows(flat, torch.empty(B, device=dev), seed, inv, w, **kw),
        kd.launch_dsm_loss_rows(full, torch.empty(B, device=dev), seed, inv, w, partial=partial, plan=loss_plan, **kw),
    ]
    planned = kd.launch_dsm_loss_backward(full, torch.empty_like(full), seed, inv, w, plan=backward_plan, **kw)
    assert torch.equal(*perturb) and torch.equal(*back) and torch.equal(*rows)
    assert torch.equal(planned.view(-1), back[0]) and not partial.isnan().any()

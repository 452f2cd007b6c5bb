"""The fused Langevin corrector: per-row norms (pass 1), SNR step size, update (pass 2).

Oracles: the norms and the update written out with ``philox_normal`` (the kernels' stream in
PyTorch) or ``torch_normal`` (the fallback's CPU stream) for the seed the op drew.
"""

import math

import pytest
import torch

import fastlangevin
from fastlangevin import track_backends
from fastlangevin._rng import draw_seed, philox_normal, torch_normal
from fastlangevin.ops.corrector import corrector_norms, langevin_corrector_, snr_step_size

# Odd shapes: rows not a multiple of 4 (rows start mid-Philox-group), 1-element rows, 3-D states.
SHAPES = [(5, 3), (3, 2, 7), (7, 1), (2, 37)]
DTYPES = [
    pytest.param(torch.float32, 2e-5, 1e-5, id="fp32"),
    pytest.param(torch.bfloat16, 2e-5, 1e-5, id="bf16"),  # sums in fp32 of the same bf16 values
    pytest.param(torch.float64, 1e-12, 1e-12, id="fp64"),
]


def _noise(seed, stream, start, n, dtype=torch.float32):
    z = philox_normal(seed, start, n) if stream == "philox" else torch_normal(int(seed.item()), start, n)
    return z.to(dtype)


def _streams(backend):
    return ["philox"] if backend == "triton" else ["philox", "torch"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("offset", [0, 3])
def test_norms_match_oracle(device_backend, shape, dtype, atol, rtol, offset):
    device, backend = device_backend
    g = torch.Generator(device=device).manual_seed(7)
    score = torch.randn(shape, generator=g, device=device).to(dtype)
    seed = draw_seed(torch.device(device), g)
    row = math.prod(shape[1:])
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    for stream in _streams(backend):
        with track_backends() as ran:
            out = corrector_norms(score, seed, backend=backend, rng=stream, sample_offset=offset)
        assert ran == [("corrector_norms", backend)]
        assert out.shape == (shape[0], 2) and out.dtype == acc
        z = _noise(seed.cpu(), stream, offset * row, shape[0] * row, acc).view(shape[0], row)
        s = score.reshape(shape[0], row).to(acc).cpu()
        torch.testing.assert_close(out[:, 0].cpu(), (s * s).sum(1), atol=atol, rtol=rtol)
        # z is fp32 whatever the score dtype; the interpreter's randn4x and philox_normal
        # differ by an ulp or so (libm), hence fp32 tolerances here.
        torch.testing.assert_close(out[:, 1].cpu(), (z * z).sum(1), atol=2e-5, rtol=1e-5)


def test_norms_kernel_chunks_deterministic():
    """Several chunks per row (small BLOCK), rows starting mid-group: same sums, bitwise repeatable."""
    pytest.importorskip("triton")
    if not fastlangevin._backend.kernels_interpreted() and not torch.cuda.is_available():
        pytest.skip("needs the Triton interpreter or CUDA")
    from fastlangevin.kernels.corrector import launch_corrector_norms

    device = "cuda" if torch.cuda.is_available() else "cpu"
    score = torch.randn(3, 29, device=device)
    seed = torch.tensor([12345], dtype=torch.int64, device=device)
    one = launch_corrector_norms(score, seed, sample_offset=1, block=8)  # 4 chunks per row
    again = launch_corrector_norms(score, seed, sample_offset=1, block=8)
    big = launch_corrector_norms(score, seed, sample_offset=1, block=64)
    assert torch.equal(one, again)
    torch.testing.assert_close(one, big, atol=1e-5, rtol=1e-6)
    z = philox_normal(seed.cpu(), 29, 3 * 29).view(3, 29)
    torch.testing.assert_close(one[:, 1].cpu(), (z * z).sum(1), atol=1e-5, rtol=1e-6)


def test_step_size_formula():
    norms = torch.tensor([[4.0, 9.0], [1.0, 16.0], [9.0, 1.0]])  # ‖s‖ = 2, 1, 3; ‖z‖ = 3, 4, 1
    batch = snr_step_size(norms, 0.5, 0.9, norm="batch")
    assert batch.dim() == 0
    assert batch.item() == pytest.approx(2 * 0.9 * (0.5 * (8 / 3) / (6 / 3)) ** 2)
    per = snr_step_size(norms, 0.5, 0.9, norm="per_sample")
    torch.testing.assert_close(per, torch.tensor([2 * 0.9 * (0.5 * z / s) ** 2 for s, z in [(2, 3), (1, 4), (3, 1)]]))
    rows = snr_step_size(norms, torch.tensor([0.1, 0.2, 0.3]), 1.0, norm="batch")
    torch.testing.assert_close(rows, 2 * (torch.tensor([0.1, 0.2, 0.3]) * (8 / 6)) ** 2)


@pytest.mark.parametrize("norm", ["batch", "per_sample"])
@pytest.mark.parametrize("add_noise", [True, False], ids=["noise", "mean"])
def test_corrector_update_matches_equation(device_backend, norm, add_noise):
    """x ← x + ε s + √(2ε) z with ε = 2α(r‖z‖/‖s‖)², z the op's own noise."""
    device, backend = device_backend
    shape, offset, snr, alpha = (5, 3, 3), 2, 0.16, 0.7
    row = 9
    for stream in _streams(backend):
        g = torch.Generator(device=device).manual_seed(3)
        x0 = torch.randn(shape, generator=g, device=device)
        s = torch.randn(shape, generator=g, device=device)
        g_copy = torch.Generator(device=device).set_state(g.get_state())
        x = x0.clone()
        with track_backends() as ran:
            _, eps = langevin_corrector_(
                x,
                s,
                snr,
                alpha=alpha,
                norm=norm,
                add_noise=add_noise,
                generator=g,
                backend=backend,
                rng=stream,
                sample_offset=offset,
                return_step_size=True,
            )
        assert ran == [("corrector_norms", backend), ("langevin_step", backend)]
        seed = draw_seed(torch.device(device), g_copy)  # the one draw the op made
        assert torch.equal(g_copy.get_state(), g.get_state())
        z = _noise(seed.cpu(), stream, offset * row, 5 * row).view(shape)
        zn = z.reshape(5, -1).norm(dim=1)
        sn = s.cpu().reshape(5, -1).norm(dim=1)
        ratio = zn.mean() / sn.mean() if norm == "batch" else zn / sn
        e = 2 * alpha * (snr * ratio) ** 2
        torch.testing.assert_close(eps.cpu(), e if norm == "per_sample" else e.reshape(()), atol=1e-6, rtol=1e-5)
        eb = e.reshape(-1, 1, 1) if norm == "per_sample" else e
        want = x0.cpu() + eb * s.cpu() + ((2 * eb).sqrt() * z if add_noise else 0.0)
        torch.testing.assert_close(x.cpu(), want, atol=1e-5, rtol=1e-5)


def test_corrector_alpha_tensor_and_clamp():
    x = torch.randn(6, 4)
    s = torch.randn(6, 4)
    alpha = torch.tensor(0.5)
    y = x.clone()
    langevin_corrector_(y, s, 5.0, alpha=alpha, clamp=(-0.25, 0.25), rng="philox")
    assert y.min() >= -0.25 and y.max() <= 0.25
    assert (y.abs() == 0.25).any()  # a big SNR step: some entries hit the bounds


def test_per_sample_norms_batch_invariant(device_backend):
    device, backend = device_backend
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(4, 5, generator=g, device=device)
    s = torch.randn(4, 5, generator=g, device=device)
    whole = x.clone()
    langevin_corrector_(
        whole,
        s,
        0.2,
        norm="per_sample",
        generator=torch.Generator(device=device).manual_seed(9),
        backend=backend,
        rng="philox",
    )
    for i in range(4):
        alone = x[i : i + 1].clone()
        langevin_corrector_(
            alone,
            s[i : i + 1],
            0.2,
            norm="per_sample",
            generator=torch.Generator(device=device).manual_seed(9),
            backend=backend,
            rng="philox",
            sample_offset=i,
        )
        torch.testing.assert_close(alone, whole[i : i + 1], atol=1e-6, rtol=1e-6)


def test_corrector_bad_input():
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="score must have the shape of x"):
        langevin_corrector_(x, torch.randn(3, 3), 0.1)
    with pytest.raises(ValueError, match="norm must be"):
        langevin_corrector_(x, torch.randn(3, 2), 0.1, norm="mean")
    with pytest.raises(ValueError, match="snr"):
        langevin_corrector_(x, torch.randn(3, 2), -0.1)
    with pytest.raises(ValueError, match=r"alpha tensor must be 0-d or per-sample of shape \[3\]"):
        langevin_corrector_(x, torch.randn(3, 2), 0.1, alpha=torch.ones(2))
    before = x.clone()
    with pytest.raises(RuntimeError, match="no_grad"):
        langevin_corrector_(x.requires_grad_(), torch.randn(3, 2), 0.1)
    assert torch.equal(x.detach(), before)
    with pytest.raises(TypeError, match="seed must be an int64 tensor"):
        corrector_norms(torch.randn(3, 2), torch.zeros(1))


def test_corrector_norms_opcheck():
    score = torch.randn(5, 3)
    seed = torch.tensor([42], dtype=torch.int64)
    torch.library.opcheck(torch.ops.fastlangevin.corrector_norms.default, (score, seed, 1, "torch", "philox"))


def test_corrector_compiles_fullgraph():
    def step(x, s):
        return langevin_corrector_(x, s, 0.16, backend="torch", rng="philox")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3)
    s = torch.randn(4, 3)
    torch.manual_seed(5)
    a = compiled(x.clone(), s)
    torch.manual_seed(5)
    b = step(x.clone(), s)
    torch.testing.assert_close(a, b)

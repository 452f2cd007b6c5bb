"""The fused Langevin corrector: per-row norms (pass 1), SNR step size, update (pass 2).

Oracle: :mod:`fastlangevin.reference.corrector` (no formula of its own here), fed the op's noise
rebuilt with ``philox_normal`` (the kernels' stream in PyTorch) or ``torch_normal`` (the fallback's
CPU stream) for the seed the op drew. The Triton kernel (interpreted on CPU) and the optimised
PyTorch fallback are both tested against it.
"""

import math

import pytest
import torch

import fastlangevin
from fastlangevin import reference, track_backends
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
        want = reference.corrector_norms(score.reshape(shape[0], row).to(acc).cpu(), z)
        torch.testing.assert_close(out[:, 0].cpu(), want[:, 0], atol=atol, rtol=rtol)
        # z is fp32 whatever the score dtype; the interpreter's randn4x and philox_normal
        # differ by an ulp or so (libm), hence fp32 tolerances here.
        torch.testing.assert_close(out[:, 1].cpu(), want[:, 1], atol=2e-5, rtol=1e-5)


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
    torch.testing.assert_close(one.cpu(), reference.corrector_norms(score.cpu(), z), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("rng", ["philox", "torch"])
def test_fallback_row_blocks_match_reference(monkeypatch, rng):
    """The fallback walks rows in blocks of about BLOCK_ELEMENTS elements: several blocks (and a
    row longer than a block) give the reference's norms, and each row's norms its own alone."""
    from fastlangevin.fallback import corrector as fb

    score = torch.randn(7, 5, generator=torch.Generator().manual_seed(2))
    seed = torch.tensor([99], dtype=torch.int64)
    whole = fb.corrector_norms_torch(score, seed, sample_offset=3, rng=rng)
    monkeypatch.setattr(fb, "BLOCK_ELEMENTS", 12)  # 2 rows per block, then 1 (rows of 5)
    blocks = fb.corrector_norms_torch(score, seed, sample_offset=3, rng=rng)
    monkeypatch.setattr(fb, "BLOCK_ELEMENTS", 3)  # a row is a block of its own
    rows = fb.corrector_norms_torch(score, seed, sample_offset=3, rng=rng)
    z = _noise(seed, rng, 3 * 5, 7 * 5).view(7, 5)
    torch.testing.assert_close(whole, reference.corrector_norms(score, z), atol=1e-6, rtol=1e-6)
    assert torch.equal(blocks, whole) and torch.equal(rows, whole)


def test_step_size_formula():
    norms = torch.tensor([[4.0, 9.0], [1.0, 16.0], [9.0, 1.0]])  # ‖s‖ = 2, 1, 3; ‖z‖ = 3, 4, 1
    batch = snr_step_size(norms, 0.5, 0.9, norm="batch")
    assert batch.dim() == 0
    torch.testing.assert_close(batch, reference.snr_step_size_from_norms(norms, 0.5, 0.9, "batch"))
    per = snr_step_size(norms, 0.5, 0.9, norm="per_sample")
    assert per.shape == (3,)
    torch.testing.assert_close(per, reference.snr_step_size_from_norms(norms, 0.5, 0.9, "per_sample"))
    snr_rows = torch.tensor([0.1, 0.2, 0.3])
    rows = snr_step_size(norms, snr_rows, 1.0, norm="batch")
    assert rows.shape == (3,)
    torch.testing.assert_close(rows, reference.snr_step_size_from_norms(norms, snr_rows, 1.0, "batch"))


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
        assert ran == [("corrector_norms", backend), ("snr_step", backend), ("langevin_step", backend)]
        seed = draw_seed(torch.device(device), g_copy)  # the one draw the op made
        assert torch.equal(g_copy.get_state(), g.get_state())
        z = _noise(seed.cpu(), stream, offset * row, 5 * row).view(shape)
        e = reference.snr_step_size(s.cpu(), z, snr, alpha, norm)
        assert eps.shape == e.shape == ((5,) if norm == "per_sample" else ())
        torch.testing.assert_close(eps.cpu(), e, atol=1e-6, rtol=1e-5)
        want = reference.langevin_corrector(x0.cpu(), s.cpu(), z, snr, alpha, norm, add_noise=add_noise)
        torch.testing.assert_close(x.cpu(), want, atol=1e-5, rtol=1e-5)


def test_corrector_alpha_tensor_and_clamp():
    x = torch.randn(6, 4)
    s = torch.randn(6, 4)
    alpha = torch.tensor(0.5)
    y = x.clone()
    g = torch.Generator().manual_seed(4)
    seed = draw_seed(torch.device("cpu"), torch.Generator().set_state(g.get_state()))
    langevin_corrector_(y, s, 5.0, alpha=alpha, clamp=(-0.25, 0.25), generator=g, backend="torch", rng="philox")
    assert y.min() >= -0.25 and y.max() <= 0.25
    assert (y.abs() == 0.25).any()  # a big SNR step: some entries hit the bounds
    z = philox_normal(seed, 0, x.numel()).view(x.shape)
    want = reference.langevin_corrector(x, s, z, 5.0, alpha, clamp=(-0.25, 0.25))
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


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

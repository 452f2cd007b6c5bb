"""Workload ``dsm``: the denoising score-matching loss, forward + backward.

    x̃ = x + σ z,   s = score_fn(x̃, σ) = b - x̃,   ℓ_i = ½ σ_i² Σ_j (s_ij + z_ij / σ_i)²,   loss = mean_i ℓ_i

then ``loss.backward()`` into the one parameter ``b`` (shaped like a sample). The score network
is deliberately trivial (one subtraction, nothing saved for backward) so that the loss itself is
what is measured; per-sample σ (NCSN's weighting λ = σ²).

Bytes counted: ``8 * numel * itemsize`` — perturb (read x, write x̃), score (read x̃, write s),
loss forward (read s), loss backward (read s, write ∂loss/∂s), parameter gradient (read
∂loss/∂s); z never has to touch memory (regenerated from its seed). Memory is reported too:
the bytes autograd saves for backward (all devices) and, on CUDA, the peak allocated during
one forward + backward above what was allocated before it. The naive loss keeps z (one
noise tensor) for backward; the fused loss keeps only the score.

Provider factory signature: ``make(case, score_fn, noise) -> loss_fn(x, sigma) -> loss``;
``noise`` is None (draw z) or a tensor shaped like x to use as z (a provider that cannot take
it raises ``ProviderUnavailable`` and is checked statistically only).

Checks: with injected z, the loss and ``∂loss/∂b`` must match a float64 evaluation of the
formula (fp32: 1e-4 relative; bf16/fp16: 2e-2, the storage rounding of x̃ and s); with drawn z,
for every provider, the loss must match its exact expectation and ``∂loss/∂b`` must be the
exact mean plus Gaussian noise of the exact standard deviation (both known in closed form,
since s + z/σ = (b - x) + (1/σ - σ) z), and two calls must differ.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch

from ..checks import Z_BOUND, CheckFailed
from ..registry import BenchOptions, Case, Provider, ProviderUnavailable, Workload, register_workload
from .common import compile_unavailable, compiled_for_case, state_shape, triton_unavailable

MIN_CHECK_NUMEL = 1 << 16
#: The check evaluates the formula in float64 on whole tensors: larger cases are checked at this size.
MAX_CHECK_NUMEL = 1 << 22
MAX_INTERPRETER_NUMEL = 1 << 16
#: Per-sample noise levels cycle through these (σ ≠ 1 keeps the noise term of s + z/σ alive).
SIGMA_LEVELS = (0.1, 0.2, 0.35, 0.5, 0.7, 0.9)
#: Independent calls pooled in the statistical check of ∂loss/∂b.
STAT_CALLS = 4


def _rows(t: torch.Tensor, nd: int) -> torch.Tensor:
    return t.reshape((-1,) + (1,) * (nd - 1))


# ---------------------------------------------------------------------------------------
# Providers
# ---------------------------------------------------------------------------------------
def _fastlangevin_make(backend: str):
    def make(case: Case, score_fn, noise: Optional[torch.Tensor]):
        import fastlangevin as fl

        if noise is None:
            return lambda x, sigma: fl.dsm_loss(score_fn, x, sigma, backend=backend)
        from fastlangevin.ops.dsm import dsm_loss_with_noise

        return lambda x, sigma: dsm_loss_with_noise(score_fn, x, sigma, noise, backend=backend)

    return make


def naive_loss(score_fn, x: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    sig = _rows(sigma.to(x.dtype), x.dim())
    s = score_fn(x + sig * z, sigma)
    per = ((s + z / sig) ** 2).flatten(1).sum(1)
    return (0.5 * sigma**2 * per).mean()


def _naive_make(case: Case, score_fn, noise: Optional[torch.Tensor]):
    """The loss as usually written: z = randn_like(x), x̃, residual, square, per-sample sum, mean."""
    if noise is None:
        return lambda x, sigma: naive_loss(score_fn, x, sigma, torch.randn_like(x))
    return lambda x, sigma: naive_loss(score_fn, x, sigma, noise)


def _compile_make(case: Case, score_fn, noise: Optional[torch.Tensor]):
    if noise is not None:
        raise ProviderUnavailable("compiled graph draws its own z (no injected-noise form)")

    def build():
        def f(x, sigma):
            return naive_loss(score_fn, x, sigma, torch.randn_like(x))

        return f

    compiled = compiled_for_case(case, ("dsm", id(score_fn)), build)

    def loss_fn(x, sigma):
        return compiled(x, sigma)

    loss_fn.compiled_fn = compiled
    return loss_fn


# ---------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------
class DSMWorkload(Workload):
    name = "dsm"
    description = "DSM loss forward+backward (x~ = x + sigma z, s = b - x~, NCSN weighting), trivial score net"
    bytes_note = "dsm: 8 x numel x itemsize (perturb 2, score 2, loss forward 1, loss backward 2, parameter gradient 1; z never touches memory)"
    default_sizes_cuda = tuple(range(16, 29, 2))
    default_sizes_cpu = (12, 16, 20)
    dtypes = ("fp32", "bf16", "fp16")
    modes = ("out",)

    def bytes_moved(self, case: Case) -> int:
        return 8 * case.numel * torch.empty((), dtype=case.dtype).element_size()

    def memory_per_element(self, dtype: torch.dtype) -> int:
        return 16 * torch.empty((), dtype=dtype).element_size()  # inputs, the naive loss's temporaries

    def make_inputs(self, numel: int, dtype: torch.dtype, device: torch.device, seed: int) -> Dict[str, Any]:
        shape = state_shape(numel)
        g = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype)
        levels = torch.tensor(SIGMA_LEVELS, dtype=torch.float32, device=device)
        sigma = levels[torch.arange(shape[0], device=device) % len(SIGMA_LEVELS)].contiguous()
        b = (
            (0.1 * torch.randn(shape[1:], generator=g, device=device, dtype=torch.float32))
            .to(dtype)
            .requires_grad_(True)
        )

        def score_fn(xt, sig):
            return b - xt  # one op, saves nothing: the loss is what is measured

        return {"x": x, "sigma": sigma, "b": b, "score_fn": score_fn}

    def setup(self, case: Case, opts: BenchOptions) -> Dict[str, Any]:
        return self.make_inputs(case.numel, case.dtype, case.device, opts.seed)

    def copy_baseline(self, case: Case, inputs):
        return inputs["x"], torch.empty_like(inputs["x"])

    # -- checks ----------------------------------------------------------------------------
    @staticmethod
    def _loss_and_grad(loss_fn, inp) -> tuple:
        b = inp["b"]
        b.grad = None
        loss = loss_fn(inp["x"], inp["sigma"])
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise CheckFailed(f"loss must be a 0-d tensor, got {type(loss).__name__} {getattr(loss, 'shape', '')}")
        loss.backward()
        if b.grad is None:
            raise CheckFailed("no gradient reached the score network's parameter")
        g = b.grad.detach().double().clone()
        b.grad = None
        return float(loss.detach().double()), g

    def check(self, provider: Provider, case: Case, inputs, opts: BenchOptions) -> Dict[str, Any]:
        if MIN_CHECK_NUMEL <= case.numel <= MAX_CHECK_NUMEL:
            inp = inputs
        else:
            inp = self.make_inputs(
                min(max(case.numel, MIN_CHECK_NUMEL), MAX_CHECK_NUMEL), case.dtype, case.device, opts.seed + 1
            )
        x, sigma, b, score_fn = inp["x"], inp["sigma"], inp["b"], inp["score_fn"]
        nd = x.dim()
        xd, bd, sd = x.double(), b.detach().double(), _rows(sigma.double(), nd)
        rtol = 1e-4 if case.dtype in (torch.float32, torch.float64) else 2e-2
        result: Dict[str, Any] = {"numel": x.numel()}

        # 1. injected noise: exact formula in float64
        g = torch.Generator(device=x.device).manual_seed(opts.seed + 7)
        z = torch.randn(x.shape, generator=g, device=x.device, dtype=torch.float32).to(x.dtype)
        try:
            loss_fn = provider.make(case, score_fn, z)
        except ProviderUnavailable as exc:
            result["injected_noise"] = f"not checked: {exc}"
        else:
            loss, grad = self._loss_and_grad(loss_fn, inp)
            zd = z.double()
            resid = bd - (xd + sd * zd) + zd / sd
            loss_ref = float((0.5 * sigma.double() ** 2 * resid.square().flatten(1).sum(1)).mean())
            grad_ref = (sd**2 * resid).sum(0) / x.shape[0]
            if abs(loss - loss_ref) > rtol * abs(loss_ref):
                raise CheckFailed(f"loss with injected noise {loss:.7g} != formula {loss_ref:.7g} (rtol {rtol:g})")
            gerr = float((grad - grad_ref).abs().max() / grad_ref.abs().max())
            if gerr > rtol:
                raise CheckFailed(f"gradient with injected noise off by {gerr:.3g} of its max (rtol {rtol:g})")
            result["injected_noise"] = {"loss": loss, "loss_formula": loss_ref, "grad_max_rel_err": gerr}

        # 2. drawn noise: exact expectation / spread of the loss and of the gradient
        loss_fn = provider.make(case, score_fn, None)
        a = bd - xd  # [B, ...]
        sig = sigma.double()
        c = 1 / sig - sig  # [B]
        D = x[0].numel()
        sum_a2 = a.square().flatten(1).sum(1)
        e_loss = float((0.5 * sig**2 * (sum_a2 + D * c**2)).mean())
        sd_loss = math.sqrt(float((0.25 * sig**4 * (2 * D * c**4 + 4 * c**2 * sum_a2)).sum())) / x.shape[0]
        e_grad = (sd**2 * a).sum(0) / x.shape[0]
        sd_grad = math.sqrt(float((sig**4 * c**2).sum())) / x.shape[0]
        losses, rs = [], []
        for _ in range(STAT_CALLS):
            loss, grad = self._loss_and_grad(loss_fn, inp)
            losses.append(loss)
            rs.append(((grad - e_grad) / sd_grad).reshape(-1))
            if abs(loss - e_loss) > Z_BOUND * sd_loss + rtol * abs(e_loss):
                raise CheckFailed(
                    f"loss {loss:.7g} vs its expectation {e_loss:.7g} ± {Z_BOUND * sd_loss:.3g} (rtol {rtol:g})"
                )
        r = torch.cat(rs)
        n = r.numel()
        rounding = rtol * float(e_grad.abs().max()) / sd_grad
        mean, std = float(r.mean()), float(r.std())
        if abs(mean) > Z_BOUND / math.sqrt(n) + rounding:
            raise CheckFailed(
                f"gradient: mean of (grad - E grad)/sd is {mean:.4g}, expected 0 ± {Z_BOUND / math.sqrt(n) + rounding:.2g}"
            )
        if abs(std - 1) > Z_BOUND / math.sqrt(2 * n) + rounding:
            raise CheckFailed(
                f"gradient: std of (grad - E grad)/sd is {std:.4g}, expected 1 ± {Z_BOUND / math.sqrt(2 * n) + rounding:.2g}"
            )
        if len(set(losses)) < len(losses):
            raise CheckFailed("two calls gave the same loss (noise not fresh)")
        result["drawn_noise"] = {
            "losses": losses,
            "loss_expected": e_loss,
            "loss_sd": sd_loss,
            "grad_r_mean": mean,
            "grad_r_std": std,
            "n": n,
        }
        return result

    # -- timing ----------------------------------------------------------------------------
    def timed(self, provider: Provider, case: Case, inputs, opts: BenchOptions):
        x, sigma, b, score_fn = inputs["x"], inputs["sigma"], inputs["b"], inputs["score_fn"]
        loss_fn = provider.make(case, score_fn, None)

        def fwd_bwd():
            loss = loss_fn(x, sigma)
            loss.backward()
            b.grad = None
            return loss

        extra: Dict[str, Any] = {}
        compiled = getattr(loss_fn, "compiled_fn", None)
        if compiled is not None and compiled.first_call_ms is not None:
            extra["compile_ms"] = compiled.first_call_ms
        fwd_bwd()  # warm-up before measuring memory (compilation, lazy inits)
        extra["saved_bytes"] = saved_for_backward(lambda: loss_fn(x, sigma))
        if case.device.type == "cuda":
            torch.cuda.synchronize(case.device)
            torch.cuda.reset_peak_memory_stats(case.device)
            base = torch.cuda.memory_allocated(case.device)
            fwd_bwd()
            torch.cuda.synchronize(case.device)
            extra["peak_bytes"] = torch.cuda.max_memory_allocated(case.device) - base
        extra["noise_tensor_bytes"] = x.numel() * x.element_size()
        return fwd_bwd, extra


def saved_for_backward(forward) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``forward()`` runs."""
    from torch.autograd.graph import saved_tensors_hooks

    seen: Dict[Any, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen.setdefault((st.data_ptr(), st.nbytes()), st.nbytes())
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def register(workload: DSMWorkload) -> None:
    add = workload.add_provider
    add(
        Provider(
            "triton",
            "fastlangevin.dsm_loss (Triton)",
            _fastlangevin_make("triton"),
            kind="ours",
            unavailable=lambda c, o: triton_unavailable(c, o, MAX_INTERPRETER_NUMEL),
        )
    )
    add(Provider("torch", "fastlangevin.dsm_loss (PyTorch fallback)", _fastlangevin_make("torch"), kind="ours"))
    add(Provider("naive", "naive loss: z = randn_like(x), x~, (s + z/sigma)^2, per-sample sum, mean", _naive_make))
    add(
        Provider(
            "compile",
            "torch.compile of the naive loss (forward and backward)",
            _compile_make,
            unavailable=compile_unavailable,
        )
    )


WORKLOAD = register_workload(DSMWorkload())
register(WORKLOAD)

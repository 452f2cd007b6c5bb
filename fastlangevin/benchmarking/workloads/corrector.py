"""Workload ``corrector``: one Langevin corrector step with the SNR step size (score SDE).

    ε = 2 α (r · mean_i‖z_i‖ / mean_i‖s_i‖)²,    x ← x + ε s + sqrt(2ε) z

Batch-averaged norms, as in the published sampler (and fastlangevin's default). In place only
(``fastlangevin.langevin_corrector_`` updates ``x``); out-of-place expressions rebind ``x``.

Bytes the op must move: ``4 * numel * itemsize`` — the norms must be known before the update,
so ``s`` is read twice (norm pass, then update pass reading ``x`` and ``s`` and writing ``x``);
``z`` never has to touch memory (regenerated from its seed in both passes).

Provider factory signature: ``make(case, s, snr, alpha) -> step(x) -> new state``.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from ..checks import check_fresh, check_snr_update
from ..registry import BenchOptions, Case, Provider, Workload, register_workload
from .common import call_checked, compile_unavailable, compiled_step, make_state, triton_unavailable

MIN_CHECK_NUMEL = 1 << 16
MAX_INTERPRETER_NUMEL = 1 << 18
#: r = 1 keeps ε·‖s‖² of order one, so the check's fit of ε is tight (timing does not depend on it).
SNR = 1.0
ALPHA = 1.0


def _fastlangevin_make(backend: str):
    def make(case: Case, s: torch.Tensor, snr: float, alpha: float):
        import fastlangevin as fl

        return lambda x: fl.langevin_corrector_(x, s, snr, alpha=alpha, backend=backend)

    return make


def _snr_eps(s: torch.Tensor, z: torch.Tensor, snr: float, alpha: float) -> torch.Tensor:
    s_norm = s.reshape(s.shape[0], -1).norm(dim=-1).mean()
    z_norm = z.reshape(z.shape[0], -1).norm(dim=-1).mean()
    return 2 * alpha * (snr * z_norm / s_norm) ** 2


def _eager_make(case: Case, s: torch.Tensor, snr: float, alpha: float):
    """The textbook corrector (as in the score-SDE code): fresh z, norms, then the update."""

    def step(x):
        z = torch.randn_like(x)
        eps = _snr_eps(s, z, snr, alpha)
        return x + eps * s + torch.sqrt(eps * 2) * z

    return step


def _eager_inplace_make(case: Case, s: torch.Tensor, snr: float, alpha: float):
    """Best eager form: z into a reused buffer, ε as a 0-d device tensor (no host sync), two addcmul_."""
    z = torch.empty_like(s)

    def step(x):
        z.normal_()
        eps = _snr_eps(s, z, snr, alpha).to(x.dtype)
        return x.addcmul_(s, eps).addcmul_(z, (2 * eps).sqrt())

    return step


def _compile_make(case: Case, s: torch.Tensor, snr: float, alpha: float):
    def build():
        def f(x, s):
            z = torch.randn_like(x)
            eps = _snr_eps(s, z, snr, alpha)
            x.copy_(x + eps * s + torch.sqrt(eps * 2) * z)
            return x

        return f

    return compiled_step(case, (snr, alpha), build, s)


class CorrectorWorkload(Workload):
    name = "corrector"
    description = (
        "SNR Langevin corrector x + eps*s + sqrt(2 eps)*z, eps = 2 alpha (r mean||z|| / mean||s||)^2 (in place)"
    )
    bytes_note = (
        "corrector: 4 x numel x itemsize (read s for the norms, then read x and s and write x; z never touches memory)"
    )
    default_sizes_cuda = tuple(range(16, 29, 2))
    default_sizes_cpu = (12, 16, 20)
    dtypes = ("fp32", "bf16", "fp16")
    modes = ("inplace",)

    def bytes_moved(self, case: Case) -> int:
        return 4 * case.numel * torch.empty((), dtype=case.dtype).element_size()

    def setup(self, case: Case, opts: BenchOptions) -> Dict[str, Any]:
        x, s = make_state(case.numel, case.dtype, case.device, opts.seed)
        return {"x": x, "s": s}

    def copy_baseline(self, case: Case, inputs):
        return inputs["x"], torch.empty_like(inputs["x"])

    def check(self, provider: Provider, case: Case, inputs, opts: BenchOptions) -> Dict[str, Any]:
        if case.numel >= MIN_CHECK_NUMEL:
            x, s = inputs["x"], inputs["s"]
        else:
            x, s = make_state(MIN_CHECK_NUMEL, case.dtype, case.device, opts.seed + 1)
        step = provider.make(case, s, SNR, ALPHA)
        out1 = call_checked(step, x, case, provider, "corrector output")
        out2 = call_checked(step, x, case, provider, "second corrector output")
        result: Dict[str, Any] = {"numel": x.numel()}
        result.update(check_snr_update(out1, x, s, SNR, ALPHA))
        result["fresh_fraction"] = check_fresh(out1, out2)
        return result

    def timed(self, provider: Provider, case: Case, inputs, opts: BenchOptions):
        step = provider.make(case, inputs["s"], SNR, ALPHA)
        x = inputs["x"].clone()
        extra = {}
        compiled = getattr(step, "compiled_fn", None)
        if compiled is not None and compiled.first_call_ms is not None:
            extra["compile_ms"] = compiled.first_call_ms
        return (lambda: step(x)), extra


def register(workload: CorrectorWorkload) -> None:
    add = workload.add_provider
    add(
        Provider(
            "triton",
            "fastlangevin Triton corrector (2 fused passes)",
            _fastlangevin_make("triton"),
            kind="ours",
            unavailable=lambda c, o: triton_unavailable(c, o, MAX_INTERPRETER_NUMEL),
        )
    )
    add(Provider("torch", "fastlangevin PyTorch fallback corrector", _fastlangevin_make("torch"), kind="ours"))
    add(
        Provider(
            "eager",
            "textbook eager corrector (randn_like, norms, x + eps*s + sqrt(2 eps)*z)",
            _eager_make,
            rebinds=True,
        )
    )
    add(Provider("eager_inplace", "eager, best in-place form (normal_ into a buffer, 2 addcmul_)", _eager_inplace_make))
    add(Provider("compile", "torch.compile of the textbook corrector", _compile_make, unavailable=compile_unavailable))
    from ..peers import register_corrector_peers

    register_corrector_peers(workload)


WORKLOAD = register_workload(CorrectorWorkload())
register(WORKLOAD)

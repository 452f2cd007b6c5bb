"""Workload ``ode``: NFE and wall time of the PF-ODE solvers at the same accuracy (rk45 vs fixed steps).

    error = max |x_eps − x*_eps| / max |x*_eps|,   x* the exact flow of Gaussian data N(μ, s² I)

The score is Gaussian's closed form, so the timings are the solver's own cost (fused updates, host work,
rk45's sync per attempted step); with a network score the NFE is what scales. ``--param``: ``sde=vp|ve``,
``tol`` (rk45's ``rtol = atol``, default 1e-5), ``backend``. Provider factory: ``make(inputs, n_steps) ->
(x, nfe)``. Check: rk45's error below ``ERR_PER_TOL × tol``; each fixed-step method is timed at the fewest
uniform steps (doubling, then bisection to ~1.5%) reaching rk45's error (skipped if ``MAX_FIXED_STEPS`` do
not, e.g. where fp32 rounding floors Euler's). Throughput: solves/s; NFE, steps and error in ``extra``.
"""

import functools

import torch

from ...probability_flow import ode_sample
from ...sde import VESDE, VPSDE
from ..checks import expect
from ..engine import Provider, ProviderUnavailable, Workload

MU, S2 = 0.5, 0.09
MAX_FIXED_STEPS, ERR_PER_TOL = 1 << 14, 100.0


def _solve(inp, n_steps=None, *, method):
    """One solve of the case's ODE by ``method``, ``(x(eps), NFE)``: rk45 at ``rtol = atol = tol``."""
    kw = dict(rtol=inp["tol"], atol=inp["tol"]) if method == "rk45" else dict(n_steps=n_steps)
    return ode_sample(inp["score"], inp["sde"], inp["x1"], method=method, return_nfe=True, backend=inp["backend"], **kw)


class ODE(Workload):
    name = "ode"
    description = "PF-ODE solves of Gaussian data: rk45 vs euler/heun/rk4 at rk45's accuracy; solves/s and NFE"
    bytes_note = "ode: not a bandwidth figure, throughput is whole solves/s (NFE per solve in each provider's extra)"
    default_sizes_cuda = (14, 18)
    default_sizes_cpu = (14,)
    dtypes = ("fp32", "fp64")
    unit = "solves/s"
    provider_list = tuple(
        Provider(m, f"ode_sample(method={m!r})", functools.partial(_solve, method=m), kind)
        for m, kind in (("rk45", "ours"), ("euler", "baseline"), ("heun", "baseline"), ("rk4", "baseline"))
    )

    def shape_for(self, numel):
        return (max(1, numel // 64), min(64, numel))

    def setup(self, case, opts):
        kind = case.param("sde", "vp")
        if kind not in ("vp", "ve"):
            raise ValueError(f"--param sde={kind!r}: choose vp or ve")
        sde, f64 = VPSDE() if kind == "vp" else VESDE(), torch.float64

        def var(t):  # the marginal variance at t of data N(MU, S2 I): x_t = m(t) x_0 + std(t) z
            return sde.marginal_mean_scale(t) ** 2 * S2 + sde.marginal_std(t) ** 2

        def score(x, t):  # its exact score
            td = t.double().reshape((-1,) + (1,) * (x.dim() - 1))
            return (-(x.double() - sde.marginal_mean_scale(td) * MU) / var(td)).to(x.dtype)

        g = torch.Generator().manual_seed(opts.seed)
        x1 = (torch.randn(case.shape, generator=g, dtype=f64) * sde.prior_std).to(case.device, case.dtype)
        te, t1 = torch.tensor(sde.sampling_eps, dtype=f64), torch.tensor(1.0, dtype=f64)  # exact flow x(1) -> x(eps)
        m_e, m_1 = sde.marginal_mean_scale(te), sde.marginal_mean_scale(t1)
        exact = m_e * MU + (x1.cpu().double() - m_1 * MU) * torch.sqrt(var(te) / var(t1))
        inp = dict(sde=sde, score=score, x1=x1, tol=float(case.param("tol", 1e-5)), backend=case.param("backend"))
        inp["err"] = lambda x: ((x.double().cpu() - exact).abs().max() / exact.abs().max()).item()
        inp["target"] = inp["err"](_solve(inp, method="rk45")[0])
        return inp

    def check(self, provider, case, inp, opts):
        err, target = inp["err"], inp["target"]
        if provider.name == "rk45":
            inp["steps_rk45"], e = None, err(provider.make(inp)[0])
            return {"error": expect(f"rk45 error (at most {ERR_PER_TOL:g} x tol)", e, 0, ERR_PER_TOL * inp["tol"])}
        lo, hi = 0, 1
        while err(provider.make(inp, hi)[0]) > target:  # doubling: the error shrinks monotonically here
            lo, hi = hi, hi * 2
            if hi > MAX_FIXED_STEPS:
                raise ProviderUnavailable(f"no step count <= {MAX_FIXED_STEPS} reaches rk45's error {target:.3g}")
        while hi - lo > max(1, hi // 64):
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if err(provider.make(inp, mid)[0]) <= target else (mid, hi)
        inp[f"steps_{provider.name}"] = hi
        return {"n_steps": hi, "error": err(provider.make(inp, hi)[0]), "rk45_error": target}

    def timed(self, provider, case, inp, opts):
        n = inp[f"steps_{provider.name}"]
        x, nfe = provider.make(inp, n)
        extra = {"figures": {"nfe": nfe, "n_steps": n, "error": inp["err"](x)}}
        return (lambda: provider.make(inp, n)), extra

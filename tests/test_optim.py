"""fastlangevin.optim: SGLD, pSGLD, SGHMC against the reference formulas (noise injected: bitwise),
the kernel against the fallback (drawn noise: the same Philox stream), layout invariance of the
noise, state_dict continuation, cSGLD, bad input, and the op under opcheck / torch.compile.

Posterior recovery (conjugate Bayesian linear regression) is in tests/test_optim_posterior.py,
DDP in tests/test_optim_ddp.py.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

import fastlangevin as fl
from fastlangevin import reference as ref
from fastlangevin._rng import torch_normal
from fastlangevin.fallback.optim import HEAD, HEAD_BASE, PARAM_SLOT, param_noise
from fastlangevin.optim import SGHMC, SGLD, CyclicalLR, pSGLD
from fastlangevin.optim.base import step_seed

OPTS = {"sgld": SGLD, "psgld": pSGLD, "sghmc": SGHMC}
HYPER = {
    "sgld": {},
    "psgld": {"alpha": 0.9, "eps": 1e-3},
    "sghmc": {"friction": 0.3, "noise_estimate": 0.05},
}
SHAPES = [(5, 3), (7,), (2, 3, 4, 4), (1,)]


def _torch_stream(seed: int, i: int, n: int) -> torch.Tensor:
    """rng="torch": element j < HEAD of parameter i is global element HEAD_BASE + i·HEAD + j of the
    chunk-keyed torch stream (a region all parameters share), element j >= HEAD is i·PARAM_SLOT + j."""
    head = torch_normal(seed, HEAD_BASE + i * HEAD, min(n, HEAD))
    return torch.cat([head, torch_normal(seed, i * PARAM_SLOT + HEAD, max(0, n - HEAD))])


def make_params(device, dtype=torch.float32, shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in shapes]


def set_grads(params, k):
    for i, p in enumerate(params):  # deterministic, parameter-dependent "gradients"
        p.grad = (torch.sin(p.float() * (k + 1)) + 0.1 * i).to(p.dtype)


def build(name, params, device_backend, rng=None, **kw):
    _, backend = device_backend
    if backend == "triton":
        rng = None
    hyper = dict(lr=0.01, num_data=3, prior_precision=0.5, temperature=0.7, seed=99, **HYPER[name])
    hyper.update(kw)
    return OPTS[name](params, backend=backend, rng=rng, **hyper)


def ref_update(name, theta, grad, state, z, group):
    common = dict(
        num_data=group["num_data"], prior_precision=group["prior_precision"], temperature=group["temperature"]
    )
    lr = group["lr"]
    if name == "sgld":
        return ref.sgld_step(theta, grad, lr, z, **common), None
    if name == "psgld":
        return ref.psgld_step(theta, grad, state, lr, z, alpha=group["alpha"], eps=group["eps"], **common)
    return ref.sghmc_step(
        theta, grad, state, lr, z, friction=group["friction"], noise_estimate=group["noise_estimate"], **common
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(OPTS))
def test_injected_noise_matches_reference_bitwise(device_backend, name, dtype):
    """Three steps with injected z: parameters (fp32) or master copies (bf16, fp16) and the method's
    state equal the reference formulas in fp32 bit for bit; 16-bit parameters are their master rounded
    to nearest even."""
    device, backend = device_backend
    params = make_params(device, dtype)
    opt = build(name, params, device_backend)
    group = opt.param_groups[0]
    theta = [p.detach().float().clone() for p in params]
    state = [torch.zeros_like(t) for t in theta]
    zg = torch.Generator().manual_seed(5)
    for k in range(3):
        set_grads(params, k)
        z = [torch.randn(p.shape, generator=zg).to(device) for p in params]
        for i, p in enumerate(params):
            theta[i], s = ref_update(name, theta[i], p.grad.float(), state[i], z[i], group)
            state[i] = s if s is not None else state[i]
        with fl.track_backends() as ran:
            opt.step(noise=z)
        assert ran == [(name, backend)]
    key = {"sgld": None, "psgld": "square_avg", "sghmc": "momentum"}[name]
    for i, p in enumerate(params):
        got = opt.state[p]["master"] if dtype != torch.float32 else p
        assert torch.equal(got, theta[i]), (i, (got - theta[i]).abs().max())
        assert torch.equal(p, theta[i].to(dtype))
        if key is not None:
            assert torch.equal(opt.state[p][key], state[i])


@pytest.mark.parametrize("name", list(OPTS))
def test_kernel_draws_the_philox_stream(name):
    """Drawn noise: the interpreted kernel and the fallback's rng="philox" use the same stream
    (normals agree to ~1e-6: libm log/cos differ by an ulp), for fp32 and bf16 (masters)."""
    results = {}
    for backend, rng in (("torch", "philox"), ("triton", None)):
        params = make_params("cpu") + make_params("cpu", torch.bfloat16, shapes=[(40, 50)])
        opt = OPTS[name](params, lr=0.01, seed=3, backend=backend, rng=rng, prior_precision=1.0, **HYPER[name])
        for k in range(2):
            set_grads(params, k)
            opt.step()
        results[backend] = [opt.state[p]["master"] if p.dtype != torch.float32 else p for p in params]
    for a, b in zip(results["torch"], results["triton"]):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-6)


def test_noise_is_keyed_by_seed_parameter_and_element(device_backend):
    """With θ = 0, ∇U = 0 an SGLD step is b·z: parameter i's noise is element i·2**42 + j of the
    stream under mix(seed, step) (the torch stream: its first HEAD elements from the shared head
    region), whatever the other parameters' sizes, the grouping or the kernel's BLOCK."""
    device, backend = device_backend
    rng = "philox" if backend == "triton" else "torch"

    def run(shapes, groups=None, block=None):
        params = [torch.zeros(s, device=device) for s in shapes]
        for p in params:
            p.grad = torch.zeros_like(p)
        spec = params if groups is None else [{"params": params[a:b]} for a, b in groups]
        opt = SGLD(spec, lr=0.5, seed=11, backend=backend, rng=None if backend == "triton" else rng)
        if block is not None:
            import fastlangevin.kernels.optim as ko

            orig, ko.BLOCK_INTERPRETER = ko.BLOCK_INTERPRETER, block
            try:
                opt.step()
            finally:
                ko.BLOCK_INTERPRETER = orig
        else:
            opt.step()
        return [p.clone() for p in params]

    base = run([(300,), (17, 3), (70_000,)])
    seed = torch.tensor([step_seed(11, 0)], dtype=torch.int64)
    for i, p in enumerate(base):  # b = sqrt(2 * 0.5) = 1: the parameter is z itself
        want = param_noise(seed, i, p.numel(), rng).reshape(p.shape)
        torch.testing.assert_close(p.cpu(), want, rtol=0, atol=2e-6 if backend == "triton" else 0)
        if rng == "torch":  # the project's global-index torch stream: head region, then the parameter's slot
            assert torch.equal(p.reshape(-1), _torch_stream(int(seed), i, p.numel()))
    assert torch.equal(run([(300,), (17, 3), (70_000,)], groups=[(0, 1), (1, 3)])[1], base[1])
    assert torch.equal(run([(5,), (17, 3)])[1], base[1])  # parameter 0's size does not matter
    if backend == "triton":
        assert torch.equal(run([(300,), (17, 3), (70_000,)], block=1024)[2], base[2])
    # the chunk-keyed torch stream: chunks of the global index, parameter i at i * PARAM_SLOT
    assert PARAM_SLOT % (1 << 16) == 0


@pytest.mark.parametrize("rng", ["torch", "philox"])
def test_drawn_noise_statistics(rng):
    """θ = 0, ∇U = 0: one SGLD step gives sqrt(2 lr T)·z. Mean and variance of 2·10**5 draws
    within 5 standard errors, and two parameters / two steps uncorrelated (5 SE)."""
    n = 100_000
    params = [torch.zeros(n), torch.zeros(n)]
    opt = SGLD(params, lr=0.125, temperature=2.0, seed=4, backend="torch", rng=rng)  # b = sqrt(0.5)
    outs = []
    for _ in range(2):
        for p in params:
            p.zero_()
            p.grad = torch.zeros_like(p)
        opt.step()
        outs.append([p.double() / math.sqrt(0.5) for p in params])
    z = torch.cat(outs[0])
    se = 1 / math.sqrt(z.numel())
    assert abs(z.mean().item()) < 5 * se
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2) * se
    for a, b in ((outs[0][0], outs[0][1]), (outs[0][0], outs[1][0])):
        assert abs((a * b).mean().item()) < 5 / math.sqrt(n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(OPTS))
def test_state_dict_round_trip_continues_exactly(device_backend, name, dtype):
    """3 steps, save, load into a fresh optimizer built with another generator, 3 more steps:
    bitwise the uninterrupted 6-step run (parameters, masters and moments)."""
    device, _ = device_backend

    def steps(opt, params, ks):
        for k in ks:
            set_grads(params, k)
            opt.step()

    params = make_params(device, dtype)
    opt = build(name, params, device_backend)
    steps(opt, params, range(6))

    params2 = make_params(device, dtype)
    opt2 = build(name, params2, device_backend)
    steps(opt2, params2, range(3))
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in params2], "opt": opt2.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    params3 = [p.clone() for p in saved["params"]]
    opt3 = build(name, params3, device_backend, seed=None, generator=torch.Generator().manual_seed(777))
    opt3.load_state_dict(saved["opt"])
    assert opt3.noise_stream == {"seed": 99, "step": 3}
    steps(opt3, params3, range(3, 6))
    for p, q in zip(params, params3):
        assert torch.equal(p, q)
        for key, v in opt.state[p].items():
            assert v.dtype == torch.float32 and torch.equal(v, opt3.state[q][key]), key


def test_cyclical_schedule_and_exploration():
    """cSGLD: the lr of each step is the reference's cosine cycle; exploration steps are noise-free
    (equal the reference SGLD step with z = None); sampling steps are not."""
    p = torch.zeros(64)
    opt = SGLD([p], lr=0.1, seed=1, backend="torch")
    sched = CyclicalLR(opt, total_steps=12, num_cycles=3, exploration=0.5)
    for k in range(12):
        assert opt.param_groups[0]["lr"] == pytest.approx(ref.cyclical_lr(k, 12, 3, 0.1), rel=1e-12)
        before = p.clone()
        p.grad = torch.ones_like(p)
        sampling = sched.is_sampling()
        assert sampling == ((k % 4) / 4 >= 0.5)
        opt.step()
        noiseless = ref.sgld_step(before, p.grad, opt.param_groups[0]["lr"])
        assert torch.equal(p, noiseless) != sampling
        sched.step()


def test_optimizer_protocol():
    """Closures, zero_grad, parameters without grad (skipped, index kept), LR schedulers, param groups."""
    w = torch.nn.Parameter(torch.ones(3))
    unused = torch.nn.Parameter(torch.ones(2))
    opt = SGLD([{"params": [unused]}, {"params": [w], "lr": 0.05}], lr=0.01, temperature=0.0, backend="torch")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 3.0
    assert torch.equal(w.detach(), torch.full((3,), 1 - 0.05 * 2))
    assert torch.equal(unused.detach(), torch.ones(2))
    sched.step()
    assert opt.param_groups[1]["lr"] == 0.025
    assert opt.noise_stream["step"] == 1


def test_bad_input_is_a_clear_error_and_touches_nothing():
    p = torch.zeros(4)
    for cls, kw, word in [
        (SGLD, {"lr": -1.0}, "lr"),
        (SGLD, {"lr": 0.1, "num_data": 0}, "num_data"),
        (SGLD, {"lr": 0.1, "temperature": float("nan")}, "temperature"),
        (SGLD, {"lr": 0.1, "prior_precision": -1.0}, "prior_precision"),
        (pSGLD, {"lr": 0.1, "alpha": 1.0}, "alpha"),
        (pSGLD, {"lr": 0.1, "eps": 0.0}, "eps"),
        (SGHMC, {"lr": 0.1, "friction": 1.5}, "friction"),
        (SGHMC, {"lr": 0.1, "friction": 0.1, "noise_estimate": 0.2}, "noise_estimate"),
        (SGLD, {"lr": 0.1, "backend": "cuda"}, "backend"),
        (SGLD, {"lr": 0.1, "seed": -3}, "seed"),
    ]:
        with pytest.raises((ValueError, TypeError), match=word):
            cls([p], **kw)
    with pytest.raises(TypeError, match="generator"):
        SGLD([p], lr=0.1, generator=3)
    with pytest.raises(TypeError, match="params"):
        SGLD([torch.zeros(3, dtype=torch.float64)], lr=0.1)
    # step-time errors: nothing is updated, the stream does not advance, the generator is untouched
    a, b = torch.zeros(3), torch.zeros(4)
    opt = SGHMC([a, b], lr=0.1, seed=5, backend="torch")
    a.grad, b.grad = torch.ones(3), torch.ones(4)
    g = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"noise\[1\]"):
        opt.step(noise=[torch.zeros(3), torch.zeros(5)])  # parameter 0 valid, parameter 1 not
    assert torch.equal(a, torch.zeros(3)) and opt.state == {} and opt.noise_stream["step"] == 0
    assert torch.equal(torch.get_rng_state(), g)
    with pytest.raises(ValueError, match="one entry per parameter"):
        opt.step(noise=[torch.zeros(3)])
    b.grad = torch.ones(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    with pytest.raises(KeyError, match="noise_stream"):
        opt.load_state_dict(torch.optim.SGD([a, b], lr=0.1).state_dict())


def test_op_opcheck_and_compile(device_backend):
    device, backend = device_backend
    op = torch.ops.fastlangevin.langevin_optim_.default
    rng = "philox"

    def args(method):
        params = [torch.randn(5, device=device), torch.randn(2, 3, device=device)]
        grads = [torch.randn_like(p) for p in params]
        states = [torch.zeros_like(p) for p in params] if method else []
        seed = torch.tensor([7], dtype=torch.int64, device=device)
        return (
            params,
            grads,
            [],
            states,
            [0, 1],
            seed,
            method,
            0.01,
            2.0,
            0.5,
            0.1,
            0.9,
            0.1,
            1e-3,
            True,
            backend,
            rng,
            [],
        )

    for method in (0, 1, 2):
        torch.library.opcheck(op, args(method))

    def f(params, grads, seed):
        torch.ops.fastlangevin.langevin_optim_(
            params, grads, [], [], [0, 1], seed, 0, 0.01, 1.0, 0.0, 0.1, 0.0, 0.0, 0.0, True, backend, rng, []
        )
        return params[0] * 1.0

    a = args(0)
    eager = [p.clone() for p in a[0]]
    f(eager, a[1], a[5])
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(a[0], a[1], a[5])
    assert torch.equal(out, eager[0]) and torch.equal(a[0][1], eager[1])


def test_bayes_demo_small_run():
    """``fastlangevin demo bayes`` (a reduced run): the predictive band is wider in the gap than
    on the data, and the posterior predictive beats the point estimate on held-out data (seeds
    0-2 give gap/data band ratios 1.35-1.89 and log-likelihood margins 2.6-5.1 nats per point)."""
    import dataclasses

    from fastlangevin.demos import bayes
    from fastlangevin.demos.common import DemoContext

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = dataclasses.replace(bayes.BayesConfig.quick(), map_iters=400, iters=800, thin=10, hidden=16)
        with fl.track_backends() as ran:
            r = bayes.run(DemoContext("cpu", 0, None, False), cfg).metrics
    finally:
        torch.set_num_threads(n)
    assert ("psgld", "torch") in ran
    assert r["band_sd_gap"] > 1.2 * r["band_sd_data"]
    assert r["ll_bayes"] > r["ll_point"]


@pytest.mark.slow
def test_kernel_compiles_for_sm90_with_exact_arithmetic(request):
    """Every variant of the multi-tensor kernel builds a cubin for sm_90 (Triton's bundled ptxas,
    no GPU needed); its own arithmetic has no FMA and no approximate sqrt/div: the injected-noise
    variants, free of the normal transform (FMA polynomials, approximate sqrt), show 0 of each."""
    import json
    import os
    import subprocess
    import sys

    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("12 sm_90 compiles (~10 s CPU): run with -m slow")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = os.path.join(os.path.dirname(__file__), "optim_compile_check.py")
    out = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=600)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == 12
    for tag, r in report.items():
        assert r["ok"], (tag, r.get("error"))
        if tag.endswith("injected"):
            assert r["fma"] == 0 and r["approx"] == 0, tag
    # drawn noise: the normal transform's polynomials are FMAs by design (kernels/tiles.py); the
    # update adds none, so every method and dtype shows the transform's count and no other
    drawn = {r["fma"] for tag, r in report.items() if not tag.endswith("injected")}
    assert len(drawn) == 1, drawn


def test_benchmark_workload_rows_and_gate():
    """The optim engine workload: ~100 ResNet tensors, one result per provider (CUDA-only ones skipped
    with a reason), and its correctness gate rejects a provider that skips a tensor."""
    from fastlangevin.benchmarking import BenchOptions, Provider, run
    from fastlangevin.benchmarking.workloads import optim as wl

    assert len(wl.resnet_shapes()) == 101

    def broken(params, grads, lr, temperature, method):
        def step():
            with torch.no_grad():
                for p, g in list(zip(params, grads))[1:]:
                    p.sub_(lr * g)

        return step

    bad = {"optim": [Provider("broken", "b", broken)]}
    opts = BenchOptions(device=torch.device("cpu"), workloads=("optim",), dtypes=("fp32",), params=(("width", 2),),
                        providers=("eager_loop", "torch", "triton"), extra_providers=bad,
                        rep_ms=1.0, warmup_ms=1.0, min_reps=2, quiet=True)  # fmt: skip
    (cr,) = run(opts).cases
    provs = {p.name: p for p in cr.providers}
    assert [p.name for p in cr.providers] == ["eager_loop", "torch", "triton", "broken"]
    assert provs["eager_loop"].timing.median_ms > 0 and provs["torch"].timing.median_ms > 0
    assert provs["triton"].status == "skipped" and provs["broken"].status == "rejected"
    assert "tensor 0" in provs["broken"].reason


@pytest.mark.parametrize("method", ["sgld", "psgld", "sghmc"])
def test_benchmark_workload_method_checks(method):
    """``--param method=``: the case key carries it; the check (two noise-free steps against the float64
    reference) passes for the eager loop and both backends (Triton interpreted, the backend asserted);
    it rejects a loop that loses its state (pSGLD and SGHMC: V or m rezeroed each step); posteriors
    is SGLD-only; an unknown method is a clear error."""
    from fastlangevin.benchmarking import BenchOptions, CheckFailed, Provider, get_workload
    from fastlangevin.benchmarking.workloads import optim as wl

    w = get_workload("optim")
    opts = BenchOptions(device=torch.device("cpu"), workloads=("optim",), dtypes=("fp32",), interpret=True,
                        params=(("method", method), ("width", 4)))  # fmt: skip
    (case,) = w.cases(opts)
    assert f"method={method}" in case.key
    inp, provs = w.setup(case, opts), {p.name: p for p in w.providers(opts)}
    for name, backend in (("eager_loop", None), ("torch", "torch"), ("triton", "triton")):
        assert provs[name].unavailable(case, opts) is None
        with fl.track_backends() as ran:
            assert w.check(provs[name], case, inp, opts)["n_tensors"] == 101
        assert ran == ([(method, backend)] * 2 if backend else [])
    if method == "sgld":
        assert w.cases(opts.replace(params=()))[0].param("method") == "sgld"  # the default
    else:
        assert "SGLD only" in provs["posteriors"].unavailable(case, opts)

        def stateless(params, grads, lr, temperature, method):  # fresh zero state every step
            return lambda: torch.no_grad()(wl._eager(params, grads, lr, temperature, method))()

        with pytest.raises(CheckFailed, match="tensor 0"):
            w.check(Provider("stateless", "s", stateless), case, inp, opts)
    with pytest.raises(ValueError, match="--param method='adam'"):
        w.cases(opts.replace(params=(("method", "adam"),)))


def test_benchmark_workload_model_param():
    """``--param model=mlp|large``: the workload's other sizes (10 MLP tensors; one tensor of 2**16·width
    elements), checked like the ResNet; the default case key does not name a model; unknown: a clear error."""
    from fastlangevin.benchmarking import BenchOptions, get_workload

    w = get_workload("optim")
    opts = BenchOptions(device=torch.device("cpu"), workloads=("optim",), dtypes=("fp32",), params=(("width", 1),))
    assert "model" not in w.cases(opts)[0].key
    provs = {p.name: p for p in w.providers(opts)}
    for model, n_tensors, numel in (("mlp", 10, 16 + 16 + 3 * 272 + 17), ("large", 1, 1 << 16)):
        (case,) = w.cases(opts.replace(params=(("width", 1), ("model", model))))
        assert f"model={model}" in case.key and case.numel == numel
        assert w.check(provs["torch"], case, w.setup(case, opts), opts)["n_tensors"] == n_tensors
    with pytest.raises(ValueError, match="--param model='vgg'"):
        w.cases(opts.replace(params=(("model", "vgg"),)))


def test_compiled_step_runs_eagerly_and_continues_the_stream():
    """torch.compile around ``step`` must not freeze the stream's Python step counter (the same
    noise every step): the step is compiler-disabled, so a compiled caller gets the eager steps
    bit for bit, and fullgraph=True is a clear error instead of silently wrong noise."""

    def run(wrap):
        w = torch.zeros(10)
        w.grad = torch.zeros(10)
        opt = SGLD([w], lr=0.5, seed=1, backend="torch", rng="philox")
        f = wrap(opt.step)
        outs = []
        for _ in range(3):
            f()
            outs.append(w.clone())
        return outs, opt.noise_stream["step"]

    eager, n_eager = run(lambda f: f)
    compiled, n_compiled = run(lambda f: torch.compile(f, backend="eager"))
    assert n_eager == n_compiled == 3
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled))
    assert not torch.equal(eager[1] - eager[0], eager[2] - eager[1])  # fresh noise each step
    with pytest.raises(Exception, match="disable"):
        run(lambda f: torch.compile(f, backend="eager", fullgraph=True))


def test_step_seed_on_the_device_is_the_host_mix():
    """The device path's splitmix64 in int64 tensor ops equals the host's Python-int mix bit for bit
    (seeds up to 2**63 - 1, steps up to 2**40)."""
    from fastlangevin.optim.base import step_seed_tensor

    steps = torch.cat([torch.arange(0, 3000), torch.tensor([2**31, 2**32 + 7, 2**40])]).to(torch.int64)
    for seed in (0, 1, 99, 2**62 + 12345, 2**63 - 1):
        want = torch.tensor([step_seed(seed, int(k)) for k in steps], dtype=torch.int64)
        assert torch.equal(step_seed_tensor(seed, steps), want), seed


_HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


@pytest.mark.parametrize("name", list(OPTS))
def test_triton_step_makes_no_host_sync(name, monkeypatch):
    """The Triton path of ``step()`` is CUDA-graph capturable in what CPU can check: after one
    warm-up step it reads no tensor value on the host (each would be a device sync on CUDA) and
    builds no tensor from host data (an H2D copy): the seed comes from the device step counter,
    the pointer tables from the cache. Traps on those calls are armed around ``step()`` except
    inside the interpreted kernel launch (the interpreter itself copies to numpy; a GPU launch
    does not). The trapped steps equal an untrapped run, and the stream advanced on the device.
    Graph capture itself was not run here (no GPU)."""
    import fastlangevin.kernels.optim as ko

    def run(trapped):
        params = make_params("cpu") + make_params("cpu", torch.bfloat16, shapes=[(40, 50)])
        set_grads(params, 0)
        opt = OPTS[name](params, lr=0.01, seed=3, backend="triton", prior_precision=1.0, **HYPER[name])
        opt.step()  # warm-up: creates the state, the step counter and the device tables
        armed = [trapped]
        if trapped:
            for attr in _HOST_READS:
                orig = getattr(torch.Tensor, attr)

                def trap(self, *a, _orig=orig, _attr=attr, **k):
                    if armed[0]:
                        raise AssertionError(f"host read in step(): Tensor.{_attr}")
                    return _orig(self, *a, **k)

                monkeypatch.setattr(torch.Tensor, attr, trap)
            orig_tensor = torch.tensor

            def trap_tensor(*a, **k):
                if armed[0]:
                    raise AssertionError("tensor built from host data in step()")
                return orig_tensor(*a, **k)

            monkeypatch.setattr(torch, "tensor", trap_tensor)
            kernel = ko._optim_kernel

            class Unarmed:  # the interpreted launch may read its arguments on the host
                def __getitem__(self, grid):
                    def launch(*a, **k):
                        armed[0] = False
                        try:
                            return kernel[grid](*a, **k)
                        finally:
                            armed[0] = True

                    return launch

            monkeypatch.setattr(ko, "_optim_kernel", Unarmed())
        with fl.track_backends() as ran:
            for _ in range(2):
                opt.step()
        armed[0] = False
        monkeypatch.undo()
        assert ran == [(name, "triton")] * 4  # two buckets (fp32, bf16), two steps
        assert opt.noise_stream["step"] == 3 and list(opt._step_counters) == [torch.device("cpu")]
        return [p.clone() for p in params] + [v.clone() for p in params for v in opt.state[p].values()]

    assert all(torch.equal(a, b) for a, b in zip(run(True), run(False)))


def test_capture_refuses_first_step_state(monkeypatch):
    """A step captured into a CUDA graph must not create state (the graph would re-create it, zeroed,
    at every replay): with capture simulated, a first step is refused, touching nothing; after one
    eager step the simulated-capture step runs."""
    import fastlangevin.optim.base as base

    p = torch.zeros(8)
    p.grad = torch.ones(8)
    opt = SGHMC([p], lr=0.1, seed=2, backend="torch", rng="philox")
    monkeypatch.setattr(base, "_capturing", lambda device: True)
    with pytest.raises(RuntimeError, match="run one step before capturing"):
        opt.step()
    assert not any(opt.state.values()) and opt.noise_stream["step"] == 0 and torch.equal(p, torch.zeros(8))
    monkeypatch.undo()
    opt.step()
    monkeypatch.setattr(base, "_capturing", lambda device: True)
    opt.step()
    assert opt.noise_stream["step"] == 2


def test_threaded_draws_equal_the_serial_stream(monkeypatch):
    """The fallback's torch-stream draws spread over threads (each chunk its own generator; a fill
    rounded up to 16 values that would spill into another thread's tensors goes through a scratch
    buffer) give the serial result bit for bit, and each parameter is its slot of the stream."""
    import fastlangevin.fallback.optim as fo

    shapes = [(1,), (3,), (17,), (5, 7), (1,), (2,), (40, 50), (70_001,), (9,), (4, 4), (1,)]

    def run(threads):
        params = [torch.zeros(s) for s in shapes]
        for p in params:
            p.grad = torch.zeros_like(p)
        n = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            SGLD(params, lr=0.5, seed=8, backend="torch").step()  # b = 1: the parameters are z
        finally:
            torch.set_num_threads(n)
        return params

    monkeypatch.setattr(fo, "MIN_DRAW_PER_WORKER", 4)  # split even tiny batches between threads
    monkeypatch.setattr(fo, "BATCH", 1 << 16)
    serial, threaded = run(1), run(3)
    seed = int(step_seed(8, 0))
    for i, (a, b) in enumerate(zip(serial, threaded)):
        assert torch.equal(a, b), i
        assert torch.equal(a.reshape(-1), _torch_stream(seed, i, a.numel())), i


def _run_steps(name, params, backend_opts, steps=3, injected=False, **kw):
    """``steps`` SGLD/pSGLD/SGHMC steps with deterministic gradients; the optimizer and per-step snapshots."""
    hyper = dict(lr=0.01, num_data=3, prior_precision=0.5, temperature=0.7, seed=99, **HYPER[name])
    hyper.update(kw)
    opt = OPTS[name](params, backend="torch", **backend_opts, **hyper)
    zg = torch.Generator().manual_seed(5)
    snaps = []
    for k in range(steps):
        set_grads(params, k)
        z = [torch.randn(p.shape, generator=zg) for p in params] if injected else None
        opt.step(noise=z)
        snaps.append([p.detach().clone() for p in params] + [v.clone() for p in params for v in opt.state[p].values()])
    return opt, snaps


@pytest.mark.parametrize("rng", ["torch", "philox", "injected"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(OPTS))
def test_numpy_update_equals_the_foreach_ops_bitwise(monkeypatch, name, dtype, rng):
    """The CPU fallback's numpy ufuncs give bit for bit what the torch._foreach_* ops (the path other
    devices take) give: every method, drawn (both streams) or injected noise, fp32 parameters or
    bf16 ones with fp32 masters, tensors gathered, whole and sliced above BATCH (BATCH cut to 2**16)."""
    import fastlangevin.fallback.optim as fo

    monkeypatch.setattr(fo, "BATCH", 1 << 16)
    shapes = SHAPES + [(300, 301), (64,), (3, 5000)]
    out = {}
    for on_cpu in (True, False):
        monkeypatch.setattr(fo, "NUMPY_ON_CPU", on_cpu)
        params = make_params("cpu", dtype, shapes=shapes, seed=1)
        opts = {} if rng == "injected" else {"rng": rng}
        _, out[on_cpu] = _run_steps(name, params, opts, injected=rng == "injected")
    for a, b in zip(out[True], out[False]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_numpy_ufuncs_equal_torch_ops_on_hard_values():
    """The ufuncs the CPU update uses against the torch ops they replace, bitwise on 2**20 fp32 values
    over the whole exponent range (subnormals, huge, ±0) and on scalar operands as torch rounds them."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2**31 - 1, (1 << 20,), generator=g, dtype=torch.int64).to(torch.int32)
    x = bits.view(torch.float32)
    x = torch.where(torch.isfinite(x), x, torch.ones_like(x))
    y = x.flip(0).contiguous()
    pos = x.abs()
    xn, yn, pn = x.numpy(), y.numpy(), pos.numpy()
    with np.errstate(all="ignore"):  # overflow to ±inf is part of what is compared
        for s in (1e-4, 0.9, 3.0, 1e-5, 2.0 / 3.0):
            assert np.array_equal(np.multiply(xn, np.float32(s)), torch.mul(x, s).numpy())
            assert np.array_equal(np.add(pn, np.float32(s)), torch.add(pos, s).numpy())
        assert np.array_equal(np.multiply(xn, yn), torch.mul(x, y).numpy())
        assert np.array_equal(np.subtract(xn, yn), torch.sub(x, y).numpy())
        assert np.array_equal(np.add(xn, yn), torch.add(x, y).numpy())
        recip = torch.reciprocal(pos + 1e-5)
        assert np.array_equal(np.reciprocal(np.add(pn, np.float32(1e-5))), recip.numpy())
    # the reference's correctly rounded root (float64, rounded once) is what np.sqrt gives
    assert np.array_equal(np.sqrt(pn), pos.double().sqrt().float().numpy())


def test_fused_mul_add_equals_the_ufunc_passes_on_hard_values():
    """The CPU update's one-pass ``x + fl(a·y)`` (torch ``addcdiv`` with an fp32 ONE, from FUSE_MIN
    elements) gives bit for bit the numpy multiply-then-add below it and torch's ``x + a * y``, in place
    and into another array, on 2**18 random fp32 bit patterns (every exponent, subnormals, ±0, ±inf,
    NaN payloads, two NaNs) with a negated scale (``x − fl(a·y)`` as ``x + fl(−a·y)``) too."""
    import numpy as np

    import fastlangevin.fallback.optim as fo

    g = torch.Generator().manual_seed(3)
    n = 1 << 18
    assert n >= fo.FUSE_MIN
    bits = torch.randint(-(2**31), 2**31 - 1, (n,), generator=g, dtype=torch.int64).to(torch.int32)
    x = bits.view(torch.float32).numpy()
    y = x[::-1].copy()
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3e38], dtype=np.float32)
    x[: len(specials) ** 2] = np.repeat(specials, len(specials))
    y[: len(specials) ** 2] = np.tile(specials, len(specials))
    with np.errstate(all="ignore"):
        for a in (1e-4, 0.9, 3.0, 1e-30, 1e38, 2.0 / 3.0):
            for scale in (np.float32(a), -np.float32(a)):
                want, t = np.empty_like(x), np.empty_like(x)
                fo._mul_add(x, y, scale, t, want, False)
                got_out = np.empty_like(x)
                fo._mul_add(x, y, scale, t, got_out, True)
                got_in_place = x.copy()
                fo._mul_add(got_in_place, y, scale, t, got_in_place, True)
                torch_op = (torch.from_numpy(x) + torch.mul(torch.from_numpy(y), float(scale))).numpy()
                assert np.array_equal(want.view(np.int32), torch_op.view(np.int32)), a
                assert np.array_equal(got_out.view(np.int32), want.view(np.int32)), a
                assert np.array_equal(got_in_place.view(np.int32), want.view(np.int32)), a


def test_cached_cpu_step_equals_the_ordinary_step_through_changes(monkeypatch):
    """The optimizer's cached CPU step (built after the first step) gives bit for bit the ordinary
    step's results, and notices what it must: fresh gradient tensors, a gradient turning None and
    back, a parameter's storage swapped (``p.data = ...``), a state tensor replaced, a new param
    group, load_state_dict; an error after the cache exists still touches nothing."""
    import fastlangevin.optim.base as base

    def run(cached):
        fast, step_k = [], [0]
        orig = base._CpuProgram.run

        def counted(self, opt, grads):
            fast.append(step_k[0])
            return orig(self, opt, grads)

        monkeypatch.setattr(base._CpuProgram, "run", counted)
        params = make_params("cpu", shapes=SHAPES + [(40, 50)], seed=2)
        opt = SGHMC(params, lr=0.01, seed=4, backend="torch", prior_precision=0.5, num_data=3)
        outs = []
        for k in range(9):
            step_k[0] = k
            if not cached:
                opt._program = None  # every step the ordinary path
            set_grads(params, k)
            if k == 2:
                params[1].grad = None
            if k == 4:
                params[2].data = params[2].data.clone() + 1.0  # moved storage
            if k == 5:
                opt.state[params[0]]["momentum"] = opt.state[params[0]]["momentum"].clone() * 0.5
            if k == 6:
                buf = io.BytesIO()
                torch.save(opt.state_dict(), buf)
                buf.seek(0)
                opt.load_state_dict(torch.load(buf))
            if k == 7:
                extra = torch.zeros(6)
                extra.grad = torch.ones(6)
                opt.add_param_group({"params": [extra], "lr": 0.1})
                params.append(extra)
            versions = [p._version for p in params]
            with fl.track_backends() as ran:
                opt.step()
            assert ran == [("sghmc", "torch")] * len(opt.param_groups)
            assert all(p._version > v for p, v in zip(params, versions) if p.grad is not None)
            outs.append([p.clone() for p in params] + [v.clone() for p in params for v in opt.state[p].values()])
        # cached: steps 1 and 8 (nothing changed since the step before); every other one noticed a change
        assert fast == ([1, 8] if cached else [])
        a, b = torch.zeros(3), torch.zeros(4)
        opt2 = SGLD([a, b], lr=0.1, seed=5, backend="torch")
        a.grad, b.grad = torch.ones(3), torch.ones(4)
        opt2.step()
        assert isinstance(opt2._program, base._CpuProgram)
        before = (a.clone(), b.clone(), opt2.noise_stream)
        b.grad = torch.ones(4).to_sparse()
        with pytest.raises(RuntimeError, match="sparse"):
            opt2.step()
        assert torch.equal(a, before[0]) and torch.equal(b, before[1]) and opt2.noise_stream == before[2]
        return outs

    for x, y in zip(run(True), run(False)):
        assert len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y))


@pytest.mark.parametrize("name", list(OPTS))
def test_cached_step_gathers_small_gradients_either_way(monkeypatch, name):
    """The cached CPU step's two ways of gathering small gradients (one torch.cat, or numpy views of
    each: GATHER_NUMPY_MAX) give bit for bit the ordinary step's results over 3 steps, with small
    tensors of several shapes, large ones and a parameter without a gradient."""
    import fastlangevin.fallback.optim as fo

    shapes = [(5, 3), (7,), (2, 3, 4, 4), (1,), (40_000,), (64,), (300, 200), (3, 1, 5)] * 3
    hyper = dict(lr=0.01, num_data=3, prior_precision=0.5, temperature=0.7, seed=99, **HYPER[name])
    out = {}
    for most in (0, 1000, None):  # torch.cat, numpy views, the ordinary step every time
        monkeypatch.setattr(fo, "GATHER_NUMPY_MAX", most or 0)
        params = make_params("cpu", shapes=shapes, seed=4)
        opt = OPTS[name](params, backend="torch", **hyper)
        out[most] = []
        for k in range(3):
            if most is None:
                opt._program = None
            elif k:
                assert opt._program is not None
            set_grads(params, k)
            params[3].grad = None
            opt.step()
            out[most] += [p.clone() for p in params] + [v.clone() for p in params for v in opt.state[p].values()]
    for a, b, c in zip(out[0], out[1000], out[None]):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_cpu_update_keeps_autograd_version_checks():
    """The numpy writes bump the version counters as the torch ops did: a step between forward and
    backward is still caught by autograd (cached step or not)."""
    w = torch.nn.Parameter(torch.ones(5))
    opt = SGLD([w], lr=0.1, seed=1, backend="torch")
    for _ in range(2):
        loss = (w * w).sum()
        w.grad = torch.ones(5)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_step_hooks_and_profiler_label():
    """The step runs torch.optim's step pre/post hooks (per optimizer and global) with the call's
    arguments, a pre-hook may replace them, and a profiler sees the usual ``Optimizer.step#`` scope."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    w = torch.zeros(3)
    w.grad = torch.ones(3)
    opt = SGLD([w], lr=0.1, seed=1, backend="torch")
    calls = []
    handles = [
        opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", a[1:], dict(k)))),
        opt.register_step_post_hook(lambda o, a, k: calls.append(("post", a[1:]))),
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append(("global",))),
    ]
    try:
        opt.step()
        assert calls == [("global",), ("pre", (), {}), ("post", ())]
        calls.clear()
        handles.append(opt.register_step_pre_hook(lambda o, a, k: ((o, lambda: 7.0), k)))
        assert opt.step() == 7.0  # the replaced closure ran
    finally:
        for h in handles:
            h.remove()
    with torch.profiler.profile() as prof:
        opt.step()
    assert any(e.name == "Optimizer.step#SGLD.step" for e in prof.events())
    assert opt.noise_stream["step"] == 3


def test_threaded_draws_update_bitwise_as_serial(monkeypatch):
    """Draws on the pool's threads (3 threads) give bitwise the serial step, with real values through the
    fused passes (θ − fl(lr·g), the prior's g + fl(λ·θ)) on tensors above and below FUSE_MIN."""
    import fastlangevin.fallback.optim as fo

    monkeypatch.setattr(fo, "MIN_DRAW_PER_WORKER", 4)
    shapes = [(70_001,), (3, 6000), (40, 50), (9,)]  # two above FUSE_MIN (the fused pass), two below

    def run(threads):
        g = torch.Generator().manual_seed(3)
        params = [torch.randn(s, generator=g) for s in shapes]
        opt = SGLD(params, lr=1e-3, num_data=10, prior_precision=0.5, seed=8, backend="torch")
        n = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for _ in range(3):
                for p in params:
                    p.grad = torch.randn(p.shape, generator=g)
                opt.step()
        finally:
            torch.set_num_threads(n)
        return params

    for a, b in zip(run(1), run(3)):
        assert torch.equal(a, b)


def test_cached_step_threaded_draws_equal_serial(monkeypatch):
    """Steps 2 and 3 (the cached CPU step) with draws spread over 3 threads equal the serial ones bit
    for bit, and each parameter is its place in the torch stream (head region, then its slot)."""
    import fastlangevin.fallback.optim as fo

    shapes = [(1,), (3,), (17,), (5, 7), (64,), (65,), (40, 50), (70_001,), (9,), (4, 4), (1,)]
    monkeypatch.setattr(fo, "MIN_DRAW_PER_WORKER", 4)
    monkeypatch.setattr(fo, "BATCH", 1 << 16)

    def run(threads):
        params = [torch.zeros(s) for s in shapes]
        opt = SGLD(params, lr=0.5, seed=8, backend="torch")  # b = 1
        n = torch.get_num_threads()
        torch.set_num_threads(threads)
        outs = []
        try:
            for _ in range(3):
                for p in params:
                    p.zero_()
                    p.grad = torch.zeros_like(p)
                opt.step()
                outs.append([p.clone() for p in params])
        finally:
            torch.set_num_threads(n)
        assert opt._program is not None
        return outs

    serial, threaded = run(1), run(3)
    for k, (a, b) in enumerate(zip(serial, threaded)):
        seed = int(step_seed(8, k))
        for i, (x, y) in enumerate(zip(a, b)):
            assert torch.equal(x, y), (k, i)
            assert torch.equal(x.reshape(-1), _torch_stream(seed, i, x.numel())), (k, i)


@pytest.mark.parametrize("name", list(OPTS))
def test_serial_chunk_pieces_equal_the_foreach_ops_and_the_stream(monkeypatch, name):
    """Tensors above one noise chunk (2**16) but within a batch (default BATCH) are drawn and updated
    chunk by chunk on the serial CPU path (one thread): the ordinary and the cached steps give bit for
    bit the foreach ops' results (every method), and with b = 1 each parameter is its place in the stream."""
    import fastlangevin.fallback.optim as fo

    shapes = [(3,), (70_001,), (2, 65_600), (5000,), (64,), (3 * 65_536,)]
    hyper = dict(lr=0.01, num_data=3, prior_precision=0.5, temperature=0.7, seed=99, **HYPER[name])
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for numpy_on in (True, False):
            monkeypatch.setattr(fo, "NUMPY_ON_CPU", numpy_on)
            params = make_params("cpu", shapes=shapes, seed=3)
            opt = OPTS[name](params, backend="torch", **hyper)
            out[numpy_on] = []
            for k in range(3):
                if not numpy_on:
                    opt._program = None  # the cached step is numpy: every step the foreach ops
                elif k:
                    assert opt._program is not None  # steps 2 and 3: the cached step
                set_grads(params, k)
                opt.step()
                out[numpy_on] += [p.clone() for p in params] + [
                    v.clone() for p in params for v in opt.state[p].values()
                ]
        assert all(torch.equal(a, b) for a, b in zip(out[True], out[False]))
        monkeypatch.setattr(fo, "NUMPY_ON_CPU", True)
        params = [torch.zeros(s) for s in shapes]
        opt = SGLD(params, lr=0.5, seed=8, backend="torch")  # b = 1: the parameters are z
        for k in range(2):  # the ordinary step, then the cached one
            for p in params:
                p.zero_()
                p.grad = torch.zeros_like(p)
            opt.step()
            for i, p in enumerate(params):
                assert torch.equal(p.reshape(-1), _torch_stream(int(step_seed(8, k)), i, p.numel())), (k, i)
    finally:
        torch.set_num_threads(n)


def test_parameter_count_limit_is_a_clear_error(monkeypatch):
    """More parameter tensors than the noise index space holds (2**20: slots below the torch stream's
    head region) is refused naming ``params``, at construction or add_param_group (which then adds nothing)."""
    import fastlangevin.fallback.optim as fo

    assert fo.MAX_PARAMS == 2**20 and fo.HEAD_BASE == fo.MAX_PARAMS * PARAM_SLOT
    monkeypatch.setattr(fo, "MAX_PARAMS", 3)
    with pytest.raises(ValueError, match="params"):
        SGLD([torch.zeros(1) for _ in range(4)], lr=0.1)
    opt = SGLD([torch.zeros(1) for _ in range(2)], lr=0.1)
    with pytest.raises(ValueError, match="params"):
        opt.add_param_group({"params": [torch.zeros(1), torch.zeros(1)]})
    assert len(opt.param_groups) == 1


def test_cpu_update_overflow_is_silent_like_torch():
    """An overflowing update gives inf as the foreach ops do: no numpy warning, and no FloatingPointError
    half-way through the bucket under ``np.seterr(all="raise")``."""
    import warnings

    import numpy as np

    def run():
        p = torch.nn.Parameter(torch.full((64,), 3e38))
        opt = fl.optim.SGLD([p], lr=1.0, temperature=0.0, backend="torch")
        p.grad = torch.full((64,), -3e38)
        opt.step()
        return p.detach()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isinf(run()).all()
    old = np.seterr(all="raise")
    try:
        assert torch.isinf(run()).all()
    finally:
        np.seterr(**old)


@pytest.mark.parametrize("method", [0, 1, 2], ids=["sgld", "psgld", "sghmc"])
@pytest.mark.parametrize("misaligned", [False, True], ids=["aligned", "misaligned"])
def test_kernel_full_and_partial_blocks_match_fallback(method, misaligned):
    """The multi-tensor kernel's full blocks (the unmasked copy, 16-byte accesses when every pointer is
    16-byte aligned) and each tensor's partial last block give the fallback's update: bitwise with injected
    noise, and the fallback's Philox stream to ~1e-6 with drawn noise; a tensor starting 4 bytes into its
    storage turns the aligned accesses off (kernels/optim.py ALIGNED) with the same results."""
    from fastlangevin.kernels import optim as ko

    from fastlangevin.fallback.optim import optim_update_torch

    block = 256
    sizes = [3 * block, 2 * block + 5, 7, block]
    g = torch.Generator().manual_seed(11)

    store = [torch.randn(n + 1, generator=g) for n in sizes]
    grads = [torch.randn(n, generator=g) for n in sizes]
    states = [torch.rand(n, generator=g) for n in sizes] if method else []
    z = [torch.randn(n, generator=g) for n in sizes]
    scalars = (0.01, 3.0, 0.5, 0.02 if method == 1 else 0.1, 0.9, 0.1, 1e-3)
    seed = torch.tensor([1234], dtype=torch.int64)
    for injected in (z, None):
        results = []
        for run in ("kernel", "fallback"):
            copies = [s.clone() for s in store]  # parameter k = 1 starts 4 bytes into its storage when misaligned
            ps = [c[1:] if misaligned and k == 1 else c[:-1] for k, c in enumerate(copies)]
            assert (ps[1].data_ptr() % 16 != 0) == misaligned
            gs, st = [t.clone() for t in grads], [t.clone() for t in states]
            tensors = (ps, gs, [], st, list(range(len(ps))), seed)
            if run == "kernel":
                ko._ALIGNED.clear()
                ko.launch_optim(method, tensors, scalars, True, injected=injected, block=block)
                assert [a for _, a in ko._ALIGNED.values()] == [not misaligned]
            else:
                optim_update_torch(method, tensors, scalars, True, "philox", injected=injected)
            results.append(ps + st)
        for a, b in zip(*results):
            if injected is not None:
                assert torch.equal(a, b), (a - b).abs().max()
            else:
                torch.testing.assert_close(a, b, rtol=0, atol=2e-6)

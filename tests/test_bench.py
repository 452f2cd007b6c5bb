"""The benchmark harness and profiler: CLI on CPU at tiny sizes, correctness gate, profile output."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from fastlangevin import _backend, cli
from fastlangevin.benchmarking import BenchOptions, CheckFailed, Provider, checks, get_workload, run
from fastlangevin.benchmarking.cli import parse_shapes, parse_sizes
from fastlangevin.benchmarking.engine import summarize_samples
from fastlangevin.benchmarking.workloads import step as step_workload

TINY = dict(rep_ms=5.0, warmup_ms=1.0, min_reps=3, quiet=True)


# ---------------------------------------------------------------------------------------
# The CLI end to end
# ---------------------------------------------------------------------------------------
# The Triton provider runs on the CPU only where this process built the kernels for the
# interpreter (tests/conftest.py does so without CUDA); on a GPU machine it is left out here.
CPU_TRITON = _backend.kernels_interpreted() or not torch.cuda.is_available()


def test_bench_cli_json_plot_table(tmp_path, capsys):
    jpath, ppath = tmp_path / "b.json", tmp_path / "b.png"
    ours = "triton,torch" if CPU_TRITON else "torch"
    argv = [
        "bench",
        "--device",
        "cpu",
        "--sizes",
        "10",
        "--dtypes",
        "fp32,bf16",
        "--modes",
        "out,inplace",
        "--providers",
        f"{ours},eager,eager_inplace",
    ]
    argv += (["--interpret"] if CPU_TRITON else []) + [
        "--rep-ms",
        "5",
        "--warmup-ms",
        "1",
        "--min-reps",
        "3",
        "--json",
        str(jpath),
        "--plot",
        str(ppath),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "GB/s" in out.out and "%copy" in out.out and "langevin_step  bf16  in-place  2^10" in out.out
    assert "torch is" in out.out  # the speed-up summary
    assert "langevin_step/fp32/out/2^10" in out.err  # progress lines

    data = json.loads(jpath.read_text())
    meta = data["meta"]
    for key in ("date", "device", "device_name", "torch", "triton", "fastlangevin", "python", "options", "peers"):
        assert key in meta, key
    assert meta["device"] == "cpu"
    assert data["bytes_notes"]["langevin_step"].startswith("langevin_step: 3 x numel")
    assert len(data["cases"]) == 4
    for case in data["cases"]:
        assert case["numel"] == 1024
        item = 4 if case["dtype"] == "fp32" else 2
        assert case["bytes_moved"] == 3 * 1024 * item
        assert case["copy"]["gbps"] > 0 and case["copy"]["bytes"] == 2 * 1024 * item
        provs = {p["name"]: p for p in case["providers"]}
        assert set(provs) == {"torch", "eager", "eager_inplace"} | ({"triton"} if CPU_TRITON else set())
        for p in provs.values():
            assert p["status"] == "ok", p
            t = p["timing_ms"]
            assert t["p20_ms"] <= t["median_ms"] <= t["p80_ms"]
            assert len(t["samples_ms"]) == t["reps"] >= 3
            assert math.isclose(p["gbps"], case["bytes_moved"] / (t["median_ms"] * 1e-3) / 1e9, rel_tol=1e-9)
            assert math.isclose(p["pct_of_copy"], 100 * p["gbps"] / case["copy"]["gbps"], rel_tol=1e-9)
            assert p["check"]["noise"]["n"] == 1 << 16  # tiny cases are checked at 2^16 draws
            assert p["check"]["noise_off"]["max_err_ulp"] <= 2
        assert case["shape"] == [1, 1024] and case["threads"] >= 1
        sp = case["speedups"]
        assert math.isclose(sp["torch"]["eager"] * sp["eager"]["torch"], 1.0, rel_tol=1e-9)
    with open(ppath, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bench_cli_triton_on_cpu_skipped_with_message(capsys):
    argv = [
        "bench",
        "--device",
        "cpu",
        "--sizes",
        "8",
        "--dtypes",
        "fp32",
        "--modes",
        "out",
        "--providers",
        "triton,eager",
        "--rep-ms",
        "2",
        "--min-reps",
        "2",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "triton" in out and "skipped: needs a CUDA device (--device cuda; or --interpret" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--providers", "nope"], "--providers: unknown ['nope']"),
        (["--dtypes", "int8"], "--dtypes: unknown 'int8'"),
        (["--modes", "sideways"], "--modes: unknown 'sideways'"),
        (["--workloads", "nope"], "--workloads: unknown 'nope'"),
        (["--sizes", "99"], "out of range"),
        (["--shapes", "2xq"], "--shapes '2xq'"),
        (["--param", "score"], "NAME=VALUE"),
    ],
    ids=["provider", "dtype", "mode", "workload", "size", "shape", "param"],
)
def test_bench_cli_bad_arguments(argv, message, capsys):
    assert cli.main(["bench", "--device", "cpu"] + argv) == 2
    assert message in capsys.readouterr().err


def test_bench_list(capsys):
    assert cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "triton",
        "torch",
        "eager",
        "eager_inplace",
        "compile",
        "eager_buffer",
        "torchebm_fused",
        "naive",
        "triton_graph",
    ):
        assert f"- {name} " in out


def test_parse_sizes():
    assert parse_sizes("16,20") == [16, 20]
    assert parse_sizes("16:20") == [16, 17, 18, 19, 20]
    assert parse_sizes("16:28:4") == [16, 20, 24, 28]
    assert parse_sizes(None) is None
    with pytest.raises(ValueError, match="LO:HI"):
        parse_sizes("1:2:3:4")
    assert parse_shapes("256x2,128x3x64x64") == [(256, 2), (128, 3, 64, 64)] and parse_shapes(None) is None


def test_timing_quantiles_match_torch():
    vals = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    t = summarize_samples(vals, "test")
    for q, got in ((0.2, t.p20_ms), (0.5, t.median_ms), (0.8, t.p80_ms)):
        assert math.isclose(got, torch.quantile(torch.tensor(vals, dtype=torch.float64), q).item())
    assert t.reps == 6 and t.samples_ms == vals


# ---------------------------------------------------------------------------------------
# The correctness gate: wrong providers are rejected, never timed
# ---------------------------------------------------------------------------------------
def _broken_wrong_noise(case, s, eps, noise_scale):  # sqrt(eps) instead of sqrt(2 eps)
    b = math.sqrt(eps) if noise_scale is None else noise_scale
    return lambda x: x + eps * s + b * torch.randn_like(x)


def _broken_wrong_step(case, s, eps, noise_scale):  # 2 eps * s
    b = math.sqrt(2 * eps) if noise_scale is None else noise_scale
    return lambda x: x + 2 * eps * s + b * torch.randn_like(x)


def _broken_stale_noise(case, s, eps, noise_scale):  # the same z at every call
    b = math.sqrt(2 * eps) if noise_scale is None else noise_scale
    z = torch.randn_like(s)
    return lambda x: x + eps * s + b * z


def _broken_uniform_noise(case, s, eps, noise_scale):  # unit-variance but not normal
    b = math.sqrt(2 * eps) if noise_scale is None else noise_scale
    return lambda x: x + eps * s + b * (torch.rand_like(x) * 2 - 1) * math.sqrt(3)


def _broken_inplace(case, s, eps, noise_scale):  # claims in-place, returns a new tensor
    b = math.sqrt(2 * eps) if noise_scale is None else noise_scale
    return lambda x: x + eps * s + b * torch.randn_like(x)


def _broken_dtype(case, s, eps, noise_scale):  # returns float32 for a bf16 state
    b = math.sqrt(2 * eps) if noise_scale is None else noise_scale
    return lambda x: x.float() + eps * s.float() + b * torch.randn_like(x, dtype=torch.float32)


BROKEN = [
    ("wrong_noise", _broken_wrong_noise, "std of (out - x - a*s)/b", "out"),
    ("wrong_step", _broken_wrong_step, "difference from x + a*s in ulp", "out"),
    ("stale_noise", _broken_stale_noise, "noise not fresh", "out"),
    ("uniform_noise", _broken_uniform_noise, "tail2", "out"),
    ("not_inplace", _broken_inplace, "returned a new tensor", "inplace"),
]


@pytest.mark.parametrize("name, make, message, mode", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_provider_rejected(name, make, message, mode):
    bad = Provider(name, f"broken: {name}", make, kind="ours")
    opts = BenchOptions(
        device=torch.device("cpu"),
        dtypes=("fp32",),
        modes=(mode,),
        sizes=(12,),
        providers=("eager_inplace",),
        extra_providers={"langevin_step": [bad]},
        **TINY,
    )
    result = run(opts)
    (case,) = result.cases
    provs = {p.name: p for p in case.providers}
    assert provs["eager_inplace"].status == "ok"  # the good one is timed
    assert provs[name].status == "rejected", provs[name]
    assert provs[name].timing is None  # never timed
    assert message in provs[name].reason
    assert name not in case.to_dict()["speedups"]


def test_wrong_dtype_rejected():
    bad = Provider("f32out", "broken: dtype", _broken_dtype, kind="ours")
    opts = BenchOptions(
        device=torch.device("cpu"),
        dtypes=("bf16",),
        modes=("out",),
        sizes=(12,),
        providers=(),
        extra_providers={"langevin_step": [bad]},
        **TINY,
    )
    (case,) = run(opts).cases
    assert case.providers[0].status == "rejected" and "dtype" in case.providers[0].reason


def test_crashing_provider_reported_not_fatal():
    def make(case, s, eps, noise_scale):
        def step(x):
            raise RuntimeError("boom")

        return step

    opts = BenchOptions(
        device=torch.device("cpu"),
        dtypes=("fp32",),
        modes=("out",),
        sizes=(10,),
        providers=("eager",),
        extra_providers={"langevin_step": [Provider("crash", "crash", make)]},
        **TINY,
    )
    (case,) = run(opts).cases
    provs = {p.name: p for p in case.providers}
    assert provs["crash"].status == "error" and "boom" in provs["crash"].reason
    assert provs["eager"].status == "ok"


def test_noise_checks_pass_and_fail_directly():
    g = torch.Generator().manual_seed(0)
    n, eps = 1 << 16, 0.5
    x, s = torch.randn(n, generator=g), torch.randn(n, generator=g)
    b = math.sqrt(2 * eps)
    good = x + eps * s + b * torch.randn(n, generator=g)
    stats = checks.check_noise(good, x, s, eps, b)
    assert abs(stats["std"] - 1) < 0.02
    # a noise term correlated with the state (x leaks into z) is caught by the regression on x
    leaky = x * 1.05 + eps * s + b * torch.randn(n, generator=g)
    with pytest.raises(CheckFailed, match="coef_x"):
        checks.check_noise(leaky, x, s, eps, b)
    with pytest.raises(CheckFailed, match="ulp"):
        checks.check_deterministic(x + eps * s * (1 + 1e-5), x, s, eps)
    checks.check_deterministic(x + eps * s, x, s, eps)


# ---------------------------------------------------------------------------------------
# Peers: optional, skipped with a message when absent
# ---------------------------------------------------------------------------------------
def test_missing_peer_is_skipped_with_message(monkeypatch):
    def fail():
        raise ImportError("No module named 'torchebm'")

    monkeypatch.setattr(step_workload, "_fused", fail)
    opts = BenchOptions(
        device=torch.device("cpu"), dtypes=("fp32",), modes=("out",), sizes=(10,), providers=("torchebm_fused",), **TINY
    )
    (case,) = run(opts).cases
    (p,) = case.providers
    assert p.status == "skipped" and "not importable" in p.reason and "pip install torchebm" in p.reason, p


def test_chi_mean():
    z = torch.randn(20000, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(z.norm(dim=1).mean().item() - checks.chi_mean(64)) < 0.02


# ---------------------------------------------------------------------------------------
# fastlangevin profile
# ---------------------------------------------------------------------------------------
def test_profile_writes_trace_and_table(tmp_path, capsys):
    trace, summary = tmp_path / "trace.json", tmp_path / "summary.json"
    argv = [
        "profile",
        "--device",
        "cpu",
        "--n",
        "64",
        "--dim",
        "8",
        "--steps",
        "3",
        "--trace",
        str(trace),
        "--json",
        str(summary),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    tr = json.loads(trace.read_text())
    names = {e.get("name") for e in tr["traceEvents"]}
    assert {"fastlangevin.score", "fastlangevin.update", "fastlangevin.profile"} <= names
    table = (tmp_path / "trace.txt").read_text()
    assert "fastlangevin.score" in table and "top kernels / ops" in table and "aten::addmm" in table
    assert table.strip() in out
    s = json.loads(summary.read_text())
    shares = {p["label"]: p for p in s["phases"]}
    assert shares["fastlangevin.score"]["calls"] == 3 and shares["fastlangevin.update"]["calls"] == 3
    total = sum(p["share"] for p in s["phases"])
    assert (
        all(p["share"] > 0 for p in s["phases"]) and total <= 1.0 + 1e-6
    )  # parts of the run, never more than all of it
    assert math.isclose(sum(p["cpu_ms"] for p in s["phases"]), total * s["total_ms"], rel_tol=1e-6)
    assert all(0 <= r["share"] <= 1 for r in s["top"]) and s["top"][0]["self_ms"] >= s["top"][-1]["self_ms"]


# ---------------------------------------------------------------------------------------
# bench/ (pytest-benchmark) stays runnable
# ---------------------------------------------------------------------------------------
def test_pytest_benchmark_files_run():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        FASTLANGEVIN_BENCH_DEVICE="cpu",
        FASTLANGEVIN_BENCH_SIZES="10",
        FASTLANGEVIN_BENCH_DTYPES="fp32",
        FASTLANGEVIN_BENCH_MODES="out",
        FASTLANGEVIN_BENCH_PROVIDERS="torch,eager",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-disable",
            os.path.join(root, "bench"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 passed" in proc.stdout


def test_compile_provider_passes_checks():
    from fastlangevin.benchmarking.workloads.common import compile_unavailable

    opts = BenchOptions(
        device=torch.device("cpu"), dtypes=("fp32",), modes=("inplace",), sizes=(10,), providers=("compile",), **TINY
    )
    w = get_workload("langevin_step")
    reason = compile_unavailable(w.cases(opts)[0], opts)
    if reason:
        pytest.skip(reason)
    (case,) = run(opts).cases
    p = case.providers[0]
    assert p.status == "ok", p
    assert p.check["noise_off"]["max_err_ulp"] <= 2
    assert p.extra["first_call_ms"] > 0  # the compile warm-up, reported apart from the timings


# ---------------------------------------------------------------------------------------
# Corrector and annealed-sampler workloads
# ---------------------------------------------------------------------------------------
def _corrector_half_step(case, s, snr, alpha):  # eps without its factor 2
    def step(x):
        z = torch.randn_like(x)
        eps = alpha * (snr * z.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean()) ** 2
        return x + eps * s + torch.sqrt(2 * eps) * z

    return step


def _corrector_per_noise(case, s, snr, alpha):  # right eps, noise sqrt(eps) instead of sqrt(2 eps)
    def step(x):
        z = torch.randn_like(x)
        eps = 2 * alpha * (snr * z.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean()) ** 2
        return x + eps * s + torch.sqrt(eps) * z

    return step


def test_corrector_workload_checks_and_rejects():
    bad = [
        Provider("half_step", "broken", _corrector_half_step, rebinds=True),
        Provider("weak_noise", "broken", _corrector_per_noise, rebinds=True),
    ]
    opts = BenchOptions(
        device=torch.device("cpu"),
        workloads=("corrector",),
        dtypes=("fp32", "bf16"),
        modes=("inplace",),
        sizes=(10,),
        providers=("torch", "eager", "eager_inplace"),
        extra_providers={"corrector": bad},
        **TINY,
    )
    result = run(opts)
    assert len(result.cases) == 2
    for cr in result.cases:
        provs = {p.name: p for p in cr.providers}
        for name in ("torch", "eager", "eager_inplace"):
            assert provs[name].status == "ok", provs[name]
            chk = provs[name].check
            assert abs(chk["eps_fit"] / chk["eps_formula"] - 1) < 0.1
        assert cr.bytes_moved == 4 * 1024 * (4 if cr.case.dtype == torch.float32 else 2)
        assert provs["half_step"].status == "rejected" and "step size" in provs["half_step"].reason
        assert provs["weak_noise"].status == "rejected" and "std" in provs["weak_noise"].reason


def _too_little_noise(case, score_fn, sch):  # sqrt(a) instead of sqrt(2a)
    from fastlangevin import reference

    def run_(x):
        for sig, a, n in sch["levels"]:
            sigma = torch.full((x.shape[0],), sig)
            for _ in range(n):
                x = reference.langevin_step(x, score_fn(x, sigma), a, math.sqrt(a), torch.randn_like(x))
        return x

    return run_


def _skips_a_level(case, score_fn, sch):
    from fastlangevin.benchmarking.workloads import sampler

    return sampler._naive(case, score_fn, {**sch, "sigmas": sch["sigmas"][1:]})


@pytest.mark.parametrize("kind", ["annealed", "langevin"])
def test_sampler_workload_steps_per_second_and_rejects(tmp_path, kind):
    from fastlangevin.benchmarking import report

    bad = [Provider("little_noise", "broken", _too_little_noise)] if kind == "annealed" else []
    bad += [Provider("skip_level", "broken", _skips_a_level)] if kind == "annealed" else []
    opts = BenchOptions(
        device=torch.device("cpu"),
        workloads=("sampler",),
        dtypes=("fp32",),
        modes=("out",),
        shapes=((64, 2),),
        params=(("sampler", kind), ("score", "neg_x"), ("steps", 20)),
        providers=("naive", "torch", "triton_graph"),
        extra_providers={"sampler": bad},
        **TINY,
    )
    result = run(opts)
    (cr,) = result.cases
    provs = {p.name: p for p in cr.providers}
    assert provs["naive"].status == "ok" and provs["torch"].status == "ok", provs
    assert provs["triton_graph"].status == "skipped" and "CUDA" in provs["triton_graph"].reason
    if kind == "annealed":
        assert provs["little_noise"].status == "rejected" and "variance" in provs["little_noise"].reason
        assert provs["skip_level"].status == "rejected"
    d = cr.to_dict()
    assert d["bytes_moved"] is None and d["throughput_unit"] == "steps/s" and d["items_per_call"] == 20
    assert d["params"] == {"sampler": kind, "score": "neg_x", "steps": 20} and d["shape"] == [64, 2]
    p = {q["name"]: q for q in d["providers"]}["torch"]
    assert math.isclose(p["throughput"], d["items_per_call"] / (p["timing_ms"]["median_ms"] * 1e-3), rel_tol=1e-9)
    assert "steps/s" in report.table(result) and "20 per call" in report.table(result)
    report.write_plot(result, str(tmp_path / "a.png"))
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_sampler_predicted_moments_match_a_direct_simulation():
    from fastlangevin.benchmarking.engine import Case
    from fastlangevin.benchmarking.workloads import sampler as sw

    # the recursion itself: against a float64 simulation of the same linear dynamics
    case = Case("sampler", (8, 8), torch.float32, "out", torch.device("cpu"), (("steps", 50),))
    levels = sw.schedule(case)["levels"]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200_000, dtype=torch.float64, generator=g)
    for sig, a, n in levels:
        c = sw.TARGET_VAR + sig**2
        for _ in range(n):
            x = x + a * (sw.TARGET_MEAN - x) / c + math.sqrt(2 * a) * torch.randn(x.shape, dtype=x.dtype, generator=g)
    m, v = sw.predicted_moments(0.0, 1.0, levels)
    assert abs(x.mean().item() - m) < 6 * math.sqrt(v / x.numel())
    assert abs(x.var().item() - v) < 6 * v * math.sqrt(2 / x.numel())


def test_profile_library_sampler_phases_do_not_overlap(tmp_path):
    summary = tmp_path / "s.json"
    argv = [
        "profile",
        "--sampler",
        "annealed",
        "--device",
        "cpu",
        "--n",
        "32",
        "--dim",
        "8",
        "--steps",
        "20",
        "--trace",
        str(tmp_path / "t.json"),
        "--json",
        str(summary),
    ]
    assert cli.main(argv) == 0
    s = json.loads(summary.read_text())
    ph = {p["label"]: p for p in s["phases"]}
    # the sampler workload's schedule: 10 levels x 20 // 10 steps, then the denoising step
    assert ph["fastlangevin.score"]["calls"] == 10 * 2 + 1  # every step, plus the denoising step's score
    assert ph["fastlangevin.update"]["calls"] == 20 and ph["fastlangevin.denoise"]["calls"] == 1
    # the denoising step's score is nested in its label: counted once, under score
    assert ph["fastlangevin.denoise"]["share"] < ph["fastlangevin.denoise"]["inclusive_share"]
    assert sum(p["share"] for p in s["phases"]) <= 1.0 + 1e-6


def test_profile_pc_sampler_records_the_corrector(tmp_path):
    summary = tmp_path / "s.json"
    argv = ["profile", "--sampler", "pc", "--device", "cpu", "--n", "32", "--dim", "8", "--steps", "4"]
    assert cli.main(argv + ["--trace", str(tmp_path / "t.json"), "--json", str(summary)]) == 0
    s = json.loads(summary.read_text())
    ph = {p["label"]: p for p in s["phases"]}
    assert "pc_sample" in s["description"] and "sampler=pc" in s["description"]
    # each step: one predictor update and one corrector step, each with its own score evaluation
    assert ph["fastlangevin.update"]["calls"] == 4 and ph["fastlangevin.correct"]["calls"] == 4
    assert ph["fastlangevin.score"]["calls"] == 8
    assert sum(p["share"] for p in s["phases"]) <= 1.0 + 1e-6


def test_profile_cuda_graph_flag_needs_cuda(capsys):
    assert cli.main(["profile", "--sampler", "annealed", "--device", "cpu", "--cuda-graph"]) == 2
    assert "--cuda-graph needs --device cuda" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# DSM loss workload
# ---------------------------------------------------------------------------------------
def _dsm_wrong_weight(case, score_fn, noise):  # λ = σ instead of σ²
    from fastlangevin.reference import rows

    def loss_fn(x, sigma):
        z = torch.randn_like(x) if noise is None else noise
        sig = rows(sigma.to(x.dtype), x)
        per = ((score_fn(x + sig * z, sigma) + z / sig) ** 2).flatten(1).sum(1)
        return (0.5 * sigma * per).mean()

    return loss_fn


def _dsm_frozen_noise(case, score_fn, noise):  # right with injected noise, but one drawn z for every call
    from fastlangevin.reference import dsm_loss

    frozen = {"z": noise}

    def loss_fn(x, sigma):
        z = frozen["z"] if frozen["z"] is not None else frozen.setdefault("drawn", torch.randn_like(x))
        return dsm_loss(score_fn, x, sigma, z)

    return loss_fn


def test_dsm_workload_checks_memory_and_rejects():
    bad = [Provider("wrong_weight", "broken", _dsm_wrong_weight), Provider("frozen_noise", "broken", _dsm_frozen_noise)]
    opts = BenchOptions(
        device=torch.device("cpu"),
        workloads=("dsm",),
        dtypes=("fp32", "bf16"),
        modes=("out",),
        sizes=(10,),
        providers=("torch", "naive"),
        extra_providers={"dsm": bad},
        **TINY,
    )
    for cr in run(opts).cases:
        provs = {p.name: p for p in cr.providers}
        for name in ("torch", "naive"):
            p = provs[name]
            assert p.status == "ok", p
            assert isinstance(p.check["injected_noise"], dict) and len(p.check["drawn_noise"]["losses"]) == 8
            assert p.extra["saved_bytes"] > 0 and p.extra["noise_tensor_bytes"] == 1024 * (
                4 if cr.case.dtype == torch.float32 else 2
            )
        assert cr.bytes_moved == 8 * 1024 * (4 if cr.case.dtype == torch.float32 else 2)
        assert provs["wrong_weight"].status == "rejected" and "injected noise" in provs["wrong_weight"].reason
        assert provs["frozen_noise"].status == "rejected" and "not fresh" in provs["frozen_noise"].reason


# ---------------------------------------------------------------------------------------
# Drop-in suite (issue 11) and rough edges a new user hit
# ---------------------------------------------------------------------------------------
def test_dropin_suite_reports_targets_and_raw_json(tmp_path, monkeypatch, capsys):
    from fastlangevin.benchmarking import cli as bench_cli

    suite = [e for e in bench_cli.SUITE if e[0].startswith(("step 256x2", "langevin"))]
    monkeypatch.setattr(bench_cli, "SUITE", suite)
    monkeypatch.setattr(bench_cli, "SWEEP", (8,))
    path = tmp_path / "d.json"
    argv = ["bench", "--suite", "dropin", "--device", "cpu", "--rep-ms", "2", "--warmup-ms", "1", "--min-reps", "3"]
    assert cli.main(argv + ["--quiet", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| step 256x2 in place | eager_inplace |" in out and ">= 0.75x" in out and "| 2^8 |" in out
    data = json.loads(path.read_text())
    assert data["meta"]["torch"] == torch.__version__ and data["meta"]["date"] and data["dry_run"] is False
    t = {(r["work"], r["baseline"]): r for r in data["targets"]}
    assert set(t) == {("step 256x2 in place", "eager"), ("step 256x2 in place", "eager_inplace"),
                      ("langevin 256x2, 300 steps, score -x", "naive")}  # fmt: skip
    keys = {c["key"]: c for c in data["cases"]}
    for r in t.values():
        case = keys[r["key"]]
        assert case["threads"] == 1 and r["met"] == (r["speedup"] >= r["target"])
        times = {p["name"]: p["timing_ms"]["median_ms"] for p in case["providers"]}
        assert math.isclose(r["speedup"], times[r["baseline"]] / times["torch"], rel_tol=1e-9)
        assert all(len(p["timing_ms"]["samples_ms"]) >= 3 for p in case["providers"])  # raw times kept
    sampler = keys[t[("langevin 256x2, 300 steps, score -x", "naive")]["key"]]
    assert sampler["items_per_call"] == 300 and sampler["shape"] == [256, 2] and sampler["params"]["score"] == "neg_x"
    assert "langevin_step/fp32/inplace/2^8/1t" in keys


def test_profile_backend_accepts_auto_and_none():
    parser = cli.build_parser()
    for given, want in (("None", "auto"), ("auto", "auto"), ("AUTO", "auto"), ("torch", "torch")):
        assert parser.parse_args(["profile", "--backend", given]).backend == want
    with pytest.raises(SystemExit):
        parser.parse_args(["profile", "--backend", "cuda"])


def test_help_texts_say_where_the_trace_goes_and_what_device_means(capsys):
    for argv in (["profile", "--help"], ["bench", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
    out = " ".join(capsys.readouterr().out.split())
    assert "fastlangevin_trace.json" in out and "--trace" in out and "working directory" in out
    assert "device to run on: cpu, cuda or cuda:N" in out


def test_plot_has_log_axes_and_a_legend_outside_the_data(tmp_path):
    from fastlangevin.benchmarking import report

    opts = BenchOptions(device=torch.device("cpu"), dtypes=("fp32",), modes=("out",), sizes=(8, 10),
                        providers=("eager", "eager_inplace"), **TINY)  # fmt: skip
    fig = report.write_plot(run(opts), str(tmp_path / "p.png"))
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["eager", "eager_inplace", "copy y.copy_(x)"] and legend.get_texts()[0].get_fontsize() >= 9
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # right of the axes: hides no line


def test_cpu_step_gate_scales_with_n(capsys):
    # the old script's fixed 1e-3 mean tolerance failed at 2^16; the engine's gate is 6 standard errors at n
    # (the README's CPU step line, at 2^16)
    argv = ["bench", "--device", "cpu", "--workloads", "langevin_step", "--sizes", "16", "--dtypes", "fp32"]
    argv += ["--providers", "torch,eager,eager_inplace,eager_buffer", "--quiet"]
    assert cli.main(argv + ["--rep-ms", "2", "--warmup-ms", "1", "--min-reps", "2"]) == 0
    out = capsys.readouterr().out
    assert "REJECTED" not in out and "torch is" in out and "eager_buffer" in out


def test_ode_workload_matches_rk45_accuracy_and_rejects():
    from fastlangevin.benchmarking.workloads import ode

    def sloppy(inp, n_steps=None):  # rk45 at 1e4 x the requested tolerance: misses the accuracy gate
        x, nfe = ode._solve({**inp, "tol": 1e4 * inp["tol"]}, method="rk45")
        return x + 10.0, nfe

    bad = [Provider("rk45", "rk45 (sloppy)", sloppy)]
    opts = BenchOptions(device=torch.device("cpu"), workloads=("ode",), dtypes=("fp32",), shapes=((32, 8),),
                        params=(("tol", 1e-3),), providers=("rk45", "rk4"), **TINY)  # fmt: skip
    (cr,) = run(opts).cases
    provs = {p.name: p for p in cr.providers}
    assert provs["rk45"].status == "ok" and provs["rk4"].status == "ok", provs
    fig = provs["rk4"].extra["figures"]
    assert fig["error"] <= provs["rk4"].check["rk45_error"] and fig["nfe"] == 4 * fig["n_steps"]
    assert provs["rk45"].extra["figures"]["nfe"] > 0 and cr.to_dict()["throughput_unit"] == "solves/s"
    (cr,) = run(opts.replace(providers=(), extra_providers={"ode": bad})).cases
    assert cr.providers[0].status == "rejected" and "rk45 error" in cr.providers[0].reason

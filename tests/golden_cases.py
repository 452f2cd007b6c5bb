"""Golden cases: a few outputs of every public op and sampler, recorded from main before the
restructuring (issue 10) and checked bitwise by ``tests/test_golden.py``.

Each case is a function returning a dict of tensors, run on CPU with a fixed seed and small
shapes. Case names carry their noise stream: ``*-philox`` / ``*-triton`` use the Philox stream
(a deliberate change of its normal transform regenerates those in a commit that says so);
``*-torch`` use the default CPU stream, whose values must never change.

Regenerate (only on purpose): ``python tests/golden_cases.py [NAME_SUBSTRING ...]``.

**Platforms.** The file maps each case to ``{platform: values}`` (:func:`platform_key`: the CPU
vendor and ATen's CPU capability). Most cases are elementwise arithmetic on the noise streams and
give the same bits on every CPU: they hold one entry, checked bitwise everywhere. The cases of
:data:`PLATFORM_SENSITIVE` also sum over rows (the corrector's norms, the DSM loss, the PC
sampler's corrector) or multiply matrices in the score (MKL): the summation order of those
kernels follows the CPU, and their last bits differed between an AMD EPYC (where the file was
first recorded) and an Intel Xeon (by up to ~8 ulp). They are checked bitwise against the entry of
the running platform when it has one, and otherwise against a recorded entry within
:data:`FOREIGN_PLATFORM_TOLERANCE` (the test says which). Recording adds or replaces the
running platform's entry only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

GOLDEN_FILE = Path(__file__).with_name("golden") / "golden.pt"

#: Case families whose values depend on the CPU's reduction/BLAS kernels (see the docstring).
PLATFORM_SENSITIVE_FAMILIES = ("corrector-", "dsm-", "pc-")
#: On a platform without its own entry: a few float32 ulps of the values (which are O(1)).
FOREIGN_PLATFORM_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def platform_sensitive(name: str) -> bool:
    return name.startswith(PLATFORM_SENSITIVE_FAMILIES)


def platform_key() -> str:
    """``"<CPU vendor>/<ATen CPU capability>"``, e.g. ``"GenuineIntel/AVX512"``."""
    vendor = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    vendor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        import platform

        vendor = platform.processor() or "unknown"
    return f"{vendor}/{torch.backends.cpu.get_cpu_capability()}"


def _gen(seed: int = 1234) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _state(shape=(6, 5), seed=7, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def _step_case(backend, rng, dtype=torch.float32, inplace=False):
    import fastlangevin as fl

    x = _state(dtype=dtype)
    s = -_state(seed=8, dtype=dtype)
    if inplace:
        out = fl.langevin_step_(x, s, 0.05, generator=_gen(), backend=backend, rng=rng)
    else:
        out = fl.langevin_step(x, s, 0.05, 0.3, clamp=(-1.5, 1.5), generator=_gen(), backend=backend, rng=rng)
    return {"out": out.clone()}


def _corrector_case(backend, rng):
    import fastlangevin as fl

    x = _state((4, 3, 5))
    s = -x * 1.3
    out, eps = fl.langevin_corrector_(x, s, 0.16, generator=_gen(), backend=backend, rng=rng, return_step_size=True)
    return {"out": out.clone(), "eps": eps.clone()}


def _dsm_case(backend, rng):
    import fastlangevin as fl

    x = _state((5, 7)).requires_grad_(True)
    w = torch.nn.Parameter(torch.eye(7) * -0.7 + 0.01 * _state((7, 7), seed=3))
    sigma = torch.tensor([0.5, 1.0, 2.0, 0.3, 0.7])

    def score(xt, sig):
        return xt @ w / sig.view(-1, 1)

    loss = fl.dsm_loss(score, x, sigma, generator=_gen(), backend=backend, rng=rng)
    loss.backward()
    return {"loss": loss.detach().clone(), "grad_w": w.grad.clone(), "grad_x": x.grad.clone()}


def _langevin_case(backend, rng):
    import fastlangevin as fl

    out = fl.langevin(
        lambda x: -x, _state((8, 2)), step_size=0.1, n_steps=5, generator=_gen(), backend=backend, rng=rng
    )
    return {"out": out.clone()}


def _annealed_case(backend, rng):
    import fastlangevin as fl

    sigmas = fl.geometric_sigmas(1.0, 0.1, 3)
    out = fl.annealed_langevin(
        lambda x, s: -x / (1 + s.view(-1, 1) ** 2),
        _state((8, 2)),
        sigmas,
        n_steps_each=3,
        step_lr=0.01,
        generator=_gen(),
        backend=backend,
        rng=rng,
    )
    return {"out": out.clone(), "sigmas": torch.as_tensor(sigmas).clone()}


def _pc_case(backend, rng, sde_name):
    import fastlangevin as fl

    sde = fl.VESDE(sigma_min=0.01, sigma_max=2.0) if sde_name == "ve" else fl.VPSDE()

    def score(x, t):
        std = sde.marginal_std(t).view(-1, 1)
        return -x / (1.0 + std**2)

    out = fl.pc_sample(score, sde, shape=(6, 3), n_steps=25, generator=_gen(), backend=backend, rng=rng)
    return {"out": out.clone()}


def _mala_case(backend, rng):
    import fastlangevin as fl

    out, acc = fl.mala(
        lambda x: -0.5 * (x**2).sum(-1),
        _state((6, 3)),
        step_size=0.2,
        n_steps=5,
        generator=_gen(),
        backend=backend,
        rng=rng,
    )
    return {"out": out.clone(), "accept": acc.clone()}


def _schedule_case():
    import fastlangevin as fl

    idx, sig = fl.sample_noise_levels(fl.geometric_sigmas(10.0, 0.01, 8), 9, generator=_gen())
    return {"idx": idx.clone(), "sigma": sig.clone()}


def cases():
    """name -> zero-argument callable returning {key: tensor}."""
    streams = [("torch", "torch"), ("torch", "philox"), ("triton", None)]
    out = {"schedules": _schedule_case}
    for backend, rng in streams:
        tag = f"{backend}-{rng}" if backend == "torch" else "triton"
        out[f"step-{tag}"] = lambda b=backend, r=rng: _step_case(b, r)
        out[f"step_-{tag}"] = lambda b=backend, r=rng: _step_case(b, r, inplace=True)
        out[f"step-bf16-{tag}"] = lambda b=backend, r=rng: _step_case(b, r, dtype=torch.bfloat16)
        out[f"corrector-{tag}"] = lambda b=backend, r=rng: _corrector_case(b, r)
        out[f"dsm-{tag}"] = lambda b=backend, r=rng: _dsm_case(b, r)
        out[f"langevin-{tag}"] = lambda b=backend, r=rng: _langevin_case(b, r)
        out[f"annealed-{tag}"] = lambda b=backend, r=rng: _annealed_case(b, r)
        out[f"pc-ve-{tag}"] = lambda b=backend, r=rng: _pc_case(b, r, "ve")
        out[f"pc-vp-{tag}"] = lambda b=backend, r=rng: _pc_case(b, r, "vp")
        out[f"mala-{tag}"] = lambda b=backend, r=rng: _mala_case(b, r)
    return out


def main(argv):
    os.environ.setdefault("TRITON_INTERPRET", "1")
    torch.set_num_threads(1)
    golden = torch.load(GOLDEN_FILE) if GOLDEN_FILE.exists() else {}
    here = platform_key()
    for name, fn in cases().items():
        if argv and not any(a in name for a in argv):
            continue
        # a platform-independent case keeps one entry; a sensitive one gains this platform's
        golden[name] = {**golden.get(name, {}), here: fn()} if platform_sensitive(name) else {here: fn()}
        print("recorded", name, "on", here)
    GOLDEN_FILE.parent.mkdir(exist_ok=True)
    torch.save(golden, GOLDEN_FILE)


if __name__ == "__main__":
    main(sys.argv[1:])

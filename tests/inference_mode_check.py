"""Run every public op and sampler once, optionally inside ``torch.inference_mode()`` first, then again
normally (autograd included): prints a digest of the normal run's outputs. ``tests/test_inference_mode.py``
runs it in fresh processes: a first call under inference mode must leave no inference tensor in a cache
that a later normal call writes in place or saves for backward."""

import hashlib
import sys

import torch

import fastlangevin as fl
from fastlangevin.optim import SGLD


def run():
    torch.manual_seed(0)  # the big step's inputs
    out = []
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    s = -x
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    out.append(fl.langevin_step_(x.clone(), s, 0.01, generator=g()))
    out.append(fl.langevin_step(x, s, 0.01, generator=g()))
    out.append(fl.langevin_step(torch.randn(1 << 18), torch.randn(1 << 18), 0.01, generator=g()))
    out.append(fl.langevin_step(x, s, torch.full((64,), 0.01), generator=g()))
    out.append(fl.langevin_step(x, s, 0.01, generator=g(), rng="philox"))
    out.append(fl.langevin_corrector_(x.clone(), s, 0.1, generator=g()))
    out.append(fl.langevin(lambda y: -y, x.clone(), step_size=0.01, n_steps=3, generator=g()))
    out.append(fl.annealed_langevin(lambda y, sg: -y, x.clone(), fl.geometric_sigmas(1.0, 0.1, 3),
                                    n_steps_each=2, generator=g()))  # fmt: skip
    lin = torch.nn.Linear(3, 3)
    torch.nn.init.constant_(lin.weight, 0.1)
    torch.nn.init.constant_(lin.bias, 0.0)
    for sigma in (0.5, torch.full((64,), 0.5)):
        if torch.is_inference_mode_enabled():
            out.append(fl.dsm_loss(lambda a, sg: lin(a), x, sigma, generator=g()))
        else:
            loss = fl.dsm_loss(lambda a, sg: lin(a), x, sigma, generator=g())
            lin.zero_grad()
            loss.backward()
            out += [loss.detach(), lin.weight.grad.clone()]
    if not torch.is_inference_mode_enabled():
        p = torch.nn.Parameter(torch.ones(5, 4))
        opt = SGLD([p], lr=1e-3, generator=g())
        for _ in range(2):
            p.grad = torch.full_like(p, 0.5)
            opt.step()
        out.append(p.detach().clone())
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    if "--inference-first" in sys.argv:
        with torch.inference_mode():
            run()
    from fastlangevin import _backend

    h = hashlib.sha256()
    with _backend.track_backends() as ran:
        outs = run()
    for t in outs:
        h.update(t.detach().contiguous().numpy().tobytes())
    print("backends:", " ".join(sorted({b for _, b in ran})))
    print(h.hexdigest())

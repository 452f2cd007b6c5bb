"""Runs for the checkpoint/resume tests, importable by the tests and runnable as a subprocess:

    python tests/ckpt_harness.py SAMPLER PATH MODE K

runs SAMPLER with ``checkpoint=PATH`` and kills itself with SIGKILL — MODE "between": right after
step K (from the callback, between writes; the ODE runs, which take no callback: inside the K-th
score evaluation, i.e. in the middle of a step); "before_rename": inside the 2nd checkpoint write,
with the new file complete but not yet renamed onto PATH; "mid_write": inside the 2nd write, half of
it on disk.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

import fastlangevin as fl

EVERY = 4  # checkpoint_every in every run here


def _score(x, *args):
    return -x


def _log_prob(x):
    return -0.5 * (x.square() * torch.tensor([1.0, 4.0], dtype=x.dtype)).sum(1)


_VE = fl.VESDE(sigma_min=0.01, sigma_max=5.0)
_KILL_AT_EVALUATION = [0]  # > 0: the ODE's score function kills the process at that evaluation
_evaluations = [0]


def _ode_score(x, t):  # nonlinear, so rk45 takes ~20 steps and rejects some
    _evaluations[0] += 1
    if _evaluations[0] == _KILL_AT_EVALUATION[0]:
        _kill()
    return -x / (1.0 + _VE.marginal_std(t)[:, None] ** 2) + 0.5 * torch.sin(3 * x)


#: The ODE runs: ode_sample with these options (rk4: 12 steps, 4 score evaluations each; rk45: 21
#: accepted and 2 rejected steps, 140 evaluations).
ODE_RUNS = {
    "ode_sample-rk4": dict(method="rk4", n_steps=12),
    "ode_sample-rk45": dict(method="rk45", rtol=1e-4, atol=1e-4),
}


def run(name: str, **kw):
    """The run of sampler ``name`` (fixed inputs and seed), with extra keyword arguments; returns
    (result tensors..., trace states, stats mean, stats var); the ODE runs: (x, NFE)."""
    if name in ODE_RUNS:
        g = torch.Generator().manual_seed(7)
        x, nfe = fl.ode_sample(_ode_score, _VE, shape=(6, 2), generator=g, return_nfe=True, **ODE_RUNS[name], **kw)
        return x, torch.tensor(nfe)
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(8))
    trace, stats = fl.Trace(every=3), fl.RunningStats(every=2, batch_size=2)
    common = dict(generator=g, trace=trace, stats=stats, **kw)
    if name == "langevin":
        out = (fl.langevin(_score, x0, step_size=0.1, n_steps=21, **common),)
    elif name == "annealed_langevin":
        out = (fl.annealed_langevin(_score, x0, [1.0, 0.5, 0.2], n_steps_each=7, step_lr=0.05, **common),)
    elif name == "pc_sample":
        out = (fl.pc_sample(_score, fl.VESDE(sigma_max=5.0), shape=(6, 2), n_steps=21, **common),)
    elif name == "mala":
        res = fl.mala(_log_prob, x0, step_size=0.3, n_steps=13, adapt_steps=8, precondition=True, **common)
        out = (res[0], res[1], res.step_size, res.inv_metric)
    else:
        raise ValueError(name)
    return out + (trace.states, stats.mean, stats.var)


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    name, path, mode, k = argv[0], argv[1], argv[2], int(argv[3])
    kw = dict(checkpoint=path, checkpoint_every=EVERY)
    if mode == "between" and name in ODE_RUNS:
        _KILL_AT_EVALUATION[0] = k
    elif mode == "between":
        steps = [0]

        def callback(step, x):  # counts every kept step; MALA's 8 warm-up steps are not seen
            steps[0] += 1
            if steps[0] == k:
                _kill()

        kw["callback"] = callback
    else:
        writes = [0]
        real_save, real_replace = torch.save, os.replace

        def save(obj, f, *a, **kws):
            writes[0] += 1
            if writes[0] == 2 and mode == "mid_write":
                import io

                buf = io.BytesIO()
                real_save(obj, buf, *a, **kws)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                _kill()
            return real_save(obj, f, *a, **kws)

        def replace(src, dst):
            if writes[0] == 2 and mode == "before_rename":
                _kill()
            return real_replace(src, dst)

        torch.save, os.replace = save, replace
    run(name, **kw)
    sys.exit(3)  # not killed: the test fails on this exit code


if __name__ == "__main__":
    main(sys.argv[1:])

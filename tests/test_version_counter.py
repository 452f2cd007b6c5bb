"""In-place updates bump the version counter on every backend, so autograd refuses a backward through
a tensor that an op overwrote after it was saved (a Triton kernel's write is invisible to autograd unless
the op says so; the torch fallback's in-place ops say it themselves)."""

import pytest
import torch

import fastlangevin as fl
from fastlangevin._backend import track_backends


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize(
    "update",
    [
        lambda x, s, b: fl.langevin_step_(x, s, 0.01, backend=b),
        lambda x, s, b: fl.langevin_step_(x, s, torch.full((x.shape[0],), 0.01), backend=b),
        lambda x, s, b: fl.langevin_corrector_(x, s, 0.1, backend=b),
    ],
    ids=["step", "step-per-row", "corrector"],
)
def test_inplace_update_bumps_version(backend, update):
    x, s = torch.randn(8, 4), torch.randn(8, 4)
    leaf = torch.randn(8, 4, requires_grad=True)
    y = (leaf * x).sum()  # saves x for the backward
    before = x._version
    with track_backends() as ran:
        update(x, s, backend)
    assert ("langevin_step", backend) in ran
    assert x._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_optimizer_step_bumps_parameter_versions(backend):
    model = torch.nn.Linear(4, 3)
    opt = fl.optim.SGLD(model.parameters(), lr=1e-3, backend=backend)
    model(torch.randn(5, 4)).sum().backward()
    before = [p._version for p in model.parameters()]
    opt.step()
    assert all(p._version > v for p, v in zip(model.parameters(), before))

"""Test set-up: without a GPU, Triton kernels run under the interpreter.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is created (Triton decides
at decoration time), so it is set here, before fastlangevin is imported by any test.
On a CUDA machine the compiled kernels are tested instead.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fastlangevin import _backend  # noqa: E402

# Keep CPU test timings stable on the 2-core CI machine.
torch.set_num_threads(min(2, torch.get_num_threads()))


def device_backends():
    """(device, backend) pairs every op test runs on: fallback on CPU, the Triton kernel on CPU
    through the interpreter, and both on CUDA when present."""
    pairs = [("cpu", "torch")]
    if _backend.triton_available():
        pairs.append(("cpu", "triton"))
    if torch.cuda.is_available():
        pairs += [("cuda", "torch"), ("cuda", "triton")]
    return pairs


@pytest.fixture(params=device_backends(), ids=lambda p: f"{p[0]}-{p[1]}")
def device_backend(request):
    return request.param


def requires_cuda(fn):
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(pytest.mark.gpu(fn))

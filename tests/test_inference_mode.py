"""A first call inside ``torch.inference_mode()`` must not break later normal calls: every tensor the
package keeps across calls (per-thread buffers, cached scalars, seed buffers, index tables) is made
with inference mode off (``fastlangevin._backend.KEPT``). Fresh processes (the caches are per process):
``tests/inference_mode_check.py`` runs the public ops and samplers, optionally under inference mode
first, then normally with autograd and an optimizer step, and prints a digest of the normal run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("inference_mode_check.py")


def _digest(backend: str, inference_first: bool) -> str:
    env = dict(os.environ, FASTLANGEVIN_BACKEND=backend, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(SCRIPT)] + (["--inference-first"] if inference_first else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran, digest = proc.stdout.strip().splitlines()[-2:]
    assert ran == f"backends: {backend}", ran  # every op of the run took the backend asked for
    return digest


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_first_call_in_inference_mode_leaves_later_calls_unchanged(backend):
    assert _digest(backend, inference_first=True) == _digest(backend, inference_first=False)

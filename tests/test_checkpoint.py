"""Checkpoint/resume: a run killed by SIGKILL (between writes, or during one) and resumed equals the
uninterrupted run bitwise, for every sampler; a checkpoint of another call is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

import fastlangevin as fl

from . import ckpt_harness as H

HARNESS = os.path.join(os.path.dirname(__file__), "ckpt_harness.py")
SAMPLERS = ("langevin", "annealed_langevin", "pc_sample", "mala")


def _killed_run(name, path, mode, k):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__))] + sys.path))
    proc = subprocess.run([sys.executable, HARNESS, name, str(path), mode, str(k)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.decode()[-2000:])


def _assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


@pytest.mark.parametrize("name", SAMPLERS)
def test_killed_between_writes_resumes_bitwise(tmp_path, name):
    path = tmp_path / "run.ckpt"
    _killed_run(name, path, "between", 10)  # after 10 (kept) steps: last checkpoint at step 8 (MALA: 16, warm-up incl.)
    assert path.is_file()
    _assert_same(H.run(name, resume=path), H.run(name))


@pytest.mark.parametrize("name,mode", [("langevin", "before_rename"), ("langevin", "mid_write"), ("mala", "mid_write")])
def test_killed_during_a_write_resumes_from_the_previous_checkpoint(tmp_path, name, mode):
    path = tmp_path / "run.ckpt"
    _killed_run(name, path, mode, 0)  # killed inside the 2nd write: PATH still holds the 1st (after step 4)
    assert torch.load(path, weights_only=False)["steps_done"] == H.EVERY
    _assert_same(H.run(name, resume=path, checkpoint=path, checkpoint_every=H.EVERY), H.run(name))


def test_checkpointing_does_not_change_the_run(tmp_path):
    _assert_same(H.run("langevin", checkpoint=tmp_path / "c", checkpoint_every=3), H.run("langevin"))
    # the file of a finished run holds the state after the last multiple of 3 before the end (step 21 = end)
    assert torch.load(tmp_path / "c", weights_only=False)["steps_done"] == 18


def test_a_checkpoint_of_another_call_is_refused(tmp_path):
    path = tmp_path / "c"
    x0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    fl.langevin(H._score, x0, step_size=0.1, n_steps=10, checkpoint=path, checkpoint_every=5)
    with pytest.raises(ValueError, match=r"step_size differ.*checkpoint 0\.1, this call 0\.2"):
        fl.langevin(H._score, x0, step_size=0.2, n_steps=10, resume=path)
    with pytest.raises(ValueError, match="x0 differ"):
        fl.langevin(H._score, x0 + 1, step_size=0.1, n_steps=10, resume=path)
    with pytest.raises(ValueError, match="sampler: checkpoint 'langevin', this call 'annealed_langevin'"):
        fl.annealed_langevin(H._score, x0, [1.0], n_steps_each=10, resume=path)


def test_bad_checkpoint_arguments(tmp_path):
    x0 = torch.zeros(2, 2)
    kw = dict(step_size=0.1, n_steps=3)
    with pytest.raises(ValueError, match="checkpoint=PATH needs checkpoint_every"):
        fl.langevin(H._score, x0, checkpoint=tmp_path / "c", **kw)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint"):
        fl.langevin(H._score, x0, checkpoint_every=2, **kw)
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1"):
        fl.langevin(H._score, x0, checkpoint=tmp_path / "c", checkpoint_every=0, **kw)
    with pytest.raises(FileNotFoundError, match="resume="):
        fl.langevin(H._score, x0, resume=tmp_path / "missing", **kw)
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable fastlangevin checkpoint"):
        fl.langevin(H._score, x0, resume=tmp_path / "junk", **kw)

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


# killed inside a score evaluation: rk4's 42nd is in step 11 (last checkpoint after step 8);
# rk45's 100th is in its ~16th accepted step (checkpoints after every 4th accepted step)
@pytest.mark.parametrize("name,evaluation,steps_done", [("ode_sample-rk4", 42, 8), ("ode_sample-rk45", 100, 12)])
def test_ode_killed_mid_step_resumes_bitwise_nfe_included(tmp_path, name, evaluation, steps_done):
    path = tmp_path / "run.ckpt"
    _killed_run(name, path, "between", evaluation)
    saved = torch.load(path, weights_only=False)
    assert saved["steps_done"] == steps_done and 0 < saved["nfe"] < evaluation
    resumed, whole = H.run(name, resume=path), H.run(name)
    _assert_same(resumed, whole)  # (x, NFE)
    resumed_and_writing = H.run(name, resume=path, checkpoint=path, checkpoint_every=H.EVERY)
    _assert_same(resumed_and_writing, whole)


def test_ode_checkpointing_does_not_change_the_run(tmp_path):
    for name in H.ODE_RUNS:
        _assert_same(H.run(name, checkpoint=tmp_path / name, checkpoint_every=1), H.run(name))
    # never after the last step: rk4's 12 steps leave the state after step 11
    assert torch.load(tmp_path / "ode_sample-rk4", weights_only=False)["steps_done"] == 11


def test_ode_checkpoint_of_another_call_is_refused(tmp_path):
    path = tmp_path / "c"
    H.run("ode_sample-rk45", checkpoint=path, checkpoint_every=4)
    sde, score = H._VE, H._ode_score
    kw = dict(shape=(6, 2), method="rk45", rtol=1e-4, atol=1e-4, resume=path)
    with pytest.raises(ValueError, match=r"rtol differ.*checkpoint 0\.0001, this call 0\.001"):
        fl.ode_sample(score, sde, generator=torch.Generator().manual_seed(7), **{**kw, "rtol": 1e-3})
    with pytest.raises(ValueError, match=r"prior_draw differ"):  # another seed: another start
        fl.ode_sample(score, sde, generator=torch.Generator().manual_seed(8), **kw)
    with pytest.raises(ValueError, match=r"method, n_steps, rtol differ.*method: checkpoint 'rk45', this call 'rk4'"):
        fl.ode_sample(score, sde, generator=torch.Generator().manual_seed(7), shape=(6, 2), method="rk4", resume=path)
    with pytest.raises(ValueError, match="sampler: checkpoint 'ode_sample', this call 'langevin'"):
        fl.langevin(H._score, torch.zeros(6, 2), step_size=0.1, n_steps=3, resume=path)
    g = torch.Generator().manual_seed(7)
    before = g.get_state()
    with pytest.raises(ValueError, match="checkpoint=PATH needs checkpoint_every"):  # refused before the prior draw
        fl.ode_sample(score, sde, shape=(6, 2), generator=g, checkpoint=path)
    assert torch.equal(g.get_state(), before)


@pytest.mark.parametrize(
    "name,mode",
    [("langevin", "before_rename"), ("langevin", "mid_write"), ("mala", "mid_write"), ("ode_sample-rk45", "mid_write")],
)
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


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "copy"])
def test_keep_previous_keeps_the_replaced_generation(tmp_path, monkeypatch, links):
    from fastlangevin.sampling.checkpoint import keep_previous

    if not links:  # a filesystem without hard links: the previous file is copied instead

        def no_link(src, dst):
            raise OSError("no hard links here")

        monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "c"
    with keep_previous():
        whole = H.run("langevin", checkpoint=path, checkpoint_every=H.EVERY)
    steps = [torch.load(p, weights_only=False)["steps_done"] for p in (path, f"{path}.prev")]
    assert steps == [20, 16] and sorted(os.listdir(tmp_path)) == ["c", "c.prev"]  # no temporary file left
    _assert_same(H.run("langevin", resume=f"{path}.prev"), whole)
    H.run("langevin", checkpoint=tmp_path / "d", checkpoint_every=H.EVERY)  # off by default
    assert not os.path.exists(f"{tmp_path / 'd'}.prev")

"""The README's Quick start runs as pasted (on a CPU), and the demo CLI refuses bad arguments clearly."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quick_start_runs_on_cpu():
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mean, var = map(float, out.stdout.split())
    # 4096 chains x 2 dims after 1000 steps of ULA (eps=0.01) from N(0, 9): stationary variance 1/(1-eps/2);
    # the sample variance's SE is var*sqrt(2/8192) ~ 0.016, the mean's SE 1/sqrt(8192) ~ 0.011: 5 SE bounds.
    assert abs(mean) < 5 * 0.011
    assert abs(var - 1 / (1 - 0.005)) < 5 * 0.016


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "0"], "--threads: must be a positive integer, got 0"),
        (["--threads", "x"], "--threads: must be a positive integer"),
    ],
)
def test_demo_refuses_bad_threads(args, message):
    out = subprocess.run([sys.executable, "-m", "fastlangevin", "demo", *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_demo_says_no_cuda_before_announcing_the_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = subprocess.run(
        [sys.executable, "-m", "fastlangevin", "demo", "--device", "cuda"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "no CUDA device" in out.stderr and "on cuda" not in out.stdout

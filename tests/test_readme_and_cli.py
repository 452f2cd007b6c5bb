"""Every README Python block runs as pasted (on a CPU), and the demo CLI refuses bad arguments clearly."""

import os
import re
import shlex
import subprocess
import sys
import textwrap
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


def readme_python_blocks():
    """Every fenced block of README.md whose info string is ``python``, as ``(line, code)``: a fence
    indented under a list item counts too (its code dedented). There is no opt-out: every block is
    meant to paste and run."""
    text = README.read_text()
    fence = re.compile(r"^( *)```python\n(.*?)^\1```$", re.S | re.M)
    return [(text[: m.start()].count("\n") + 1, textwrap.dedent(m.group(2))) for m in fence.finditer(text)]


README_BLOCKS = readme_python_blocks()


def test_readme_has_its_python_blocks():
    # quick start, diagnostics, distributed sampling, register_sharding, DDP training, SGLD: a broken
    # fence pattern must not make the test below pass by finding nothing
    assert len(README_BLOCKS) >= 6, [line for line, _ in README_BLOCKS]


@pytest.mark.parametrize("line, code", README_BLOCKS, ids=[f"README.md:{line}" for line, _ in README_BLOCKS])
def test_readme_python_block_runs_on_cpu(line, code, tmp_path):
    """The block runs on its own in a fresh interpreter on the CPU: no torchrun variables (the
    distributed blocks then start their one-process gloo group), no GPU, one thread (a loaded
    2-core CI machine runs the small tensors of these blocks fastest on one), run in a scratch
    directory (a block that writes files leaves none in the checkout)."""
    torchrun_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in torchrun_vars}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    first = code.strip().splitlines()[0]
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"README.md:{line} block ({first!r}) ran past 120 s")
    assert out.returncode == 0, f"README.md:{line} block ({first!r}) failed:\n{out.stderr[-3000:]}"


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


def readme_commands():
    """Every ``fastlangevin ...`` command of the README: its indented code lines (``python -m`` and
    ``&&``-chained set-up included, a trailing ``# comment`` dropped) and its inline `code` spans
    (those with a placeholder such as NAME left out)."""
    text = README.read_text()
    pieces = [line for line in text.splitlines() if line.startswith("    ")]
    pieces += [span for span in re.findall(r"`([^`\n]+)`", text) if not re.search(r"\b[A-Z]{3,}\b", span)]
    cmds = []
    for line in pieces:
        for part in line.split("&&"):
            part = part.split("#", 1)[0].strip()
            for prefix in ("python -m fastlangevin ", "fastlangevin "):
                if part.startswith(prefix):
                    cmds.append(shlex.split(part[len(prefix) :]))
    return cmds


def test_readme_commands_parse():
    """The README's commands name only subcommands and options the CLI has (parsed, not run)."""
    from fastlangevin.cli import build_parser

    cmds = readme_commands()
    assert len(cmds) >= 8 and ["demo"] in cmds, cmds  # the set-up line's `python -m fastlangevin demo`
    for argv in cmds:
        args = build_parser().parse_args(argv)
        assert args.command == argv[0], argv


@pytest.mark.parametrize("command", ["", "demo", "bench", "profile", "kernels"])
def test_every_command_has_help(command, capsys):
    from fastlangevin.cli import main

    with pytest.raises(SystemExit) as exc:
        main([*command.split(), "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fastlangevin {command}".rstrip())


def test_readme_ebm_band_table_is_what_the_demo_prints():
    """The README pastes the ebm demo's radial-band table: same header, the same rows in the same
    order, each row's masses a distribution (they sum to 1 up to rounding)."""
    import torch

    from fastlangevin.demos.ebm import BAND_ROWS, _band_lines

    text = README.read_text()
    start = text.index("      mass by radius in bands")
    pasted = text[start:].split("\n\n", 1)[0].splitlines()
    fake = {key: (torch.full((5,), 0.2, dtype=torch.float64), 0.0, 0.0, 0.0) for key in BAND_ROWS}
    printed = _band_lines(fake)
    assert len(pasted) == len(printed)
    assert [line[2:] for line in pasted[:3]] == printed[:3]  # the summary indents each line by 2
    for line, label in zip(pasted[3:], BAND_ROWS.values()):
        assert line[2:].startswith(f"        {label}"), line
        masses = [float(v) for v in line[2 + 8 + len(label) :].split()[:5]]
        assert abs(sum(masses) - 1) <= 0.003, line

"""bench/gpu_check.sh --dry-run: every section of the GPU check at tiny sizes on the CPU, so it cannot rot."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gc"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), str(out), "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    summary = (out / "summary.md").read_text()
    assert proc.returncode == 0, summary + proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("tests", "step_fp32", "dsm", "sampler", "host", "profile"):
        assert f"| {name} | ok |" in summary, name
    for name in ("step_fp32", "dsm", "sampler"):
        data = json.loads((out / f"{name}.json").read_text())
        assert data["meta"]["device"] == "cpu" and data["cases"], name
        ours = [p for c in data["cases"] for p in c["providers"] if p["kind"] == "ours"]
        assert ours and all(p["status"] in ("ok", "skipped") for p in ours), name
        assert any(p["status"] == "ok" and p["timing_ms"]["median_ms"] > 0 for p in ours), name
    step = json.loads((out / "step_fp32.json").read_text())
    assert {p["name"]: p["status"] for p in step["cases"][0]["providers"]}["triton"] == "ok"  # the interpreter ran
    assert all(c["copy"]["gbps"] > 0 for c in step["cases"])
    host = json.loads((out / "host.json").read_text())
    assert host["langevin_step_"]["host_us_per_call"] > 0 and host["textbook"]["host_us_per_call"] > 0
    assert (out / "trace.json").stat().st_size > 0 and "fastlangevin.update" in summary
    assert "n/a" in summary or (out / "kernels.json").stat().st_size > 0

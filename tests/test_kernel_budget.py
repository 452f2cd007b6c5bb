"""``fastlangevin kernels`` (fastlangevin/kernel_budget.py): the offline instruction budget.

The SASS reader is checked on a hand-written listing; the tool itself runs in a subprocess without
TRITON_INTERPRET (Triton's bundled ptxas/nvdisasm, no GPU) on the quick subset of variants, and on every
variant in a slow-marked test. The budget targets of issue 12 are asserted on what it measures.
"""

import json
import os
import subprocess
import sys

import pytest

from fastlangevin import kernel_budget as kb

SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/              @!P0 BRA `(.L_x_1) ;
        /*0020*/                   FADD R2, R2, R3 ;
        /*0030*/               @P1 BRA `(.L_x_2) ;
        /*0040*/                   FMUL R2, R2, R3 ;
.L_x_2:
        /*0050*/                   FMUL R4, R2, R3 ;
.L_x_1:
        /*0060*/                   STG.E.128 desc[UR4][R6.64], R8 ;
        /*0070*/               @P2 BRA `(.L_x_0) ;
        /*0080*/                   EXIT ;
.L_x_0:
        /*0090*/                   BRA `(.L_x_0);
        /*00a0*/                   NOP;
"""


def test_hot_path_skips_forward_predicated_branches():
    instrs = kb.parse_sass(SASS)
    assert len(instrs) == 11
    hot = kb.hot_path(instrs)
    # LDC, BRA (to .L_x_1, skipping 0x20-0x50), STG, BRA (@P2 jumps forward over the EXIT, so it is cold
    # too); the loop and padding after the last EXIT never count.
    assert [i["op"] for i in hot] == ["LDC", "BRA", "STG.E.128", "BRA"]
    assert kb._widths(hot, "STG") == [16]


def test_variants_cover_the_launchers_choices():
    names = [v.name for v in kb.variants()]
    assert len(names) == len(set(names))
    step = [v for v in kb.variants() if v.kernel == "_langevin_step_kernel"]
    modes = {(dict(v.constexprs)["STEP_MODE"], dict(v.constexprs)["NOISE_MODE"]) for v in step}
    assert modes >= {(a, b) for a in (0, 1, 2) for b in (0, 1, 2, 3, 4)}
    kernels = {v.kernel for v in kb.variants()}
    assert kernels == {
        "_langevin_step_kernel",
        "_dsm_perturb_kernel",
        "_dsm_loss_partial_kernel",
        "_dsm_loss_backward_kernel",
        "_corrector_norms_kernel",
    }


def _run_tool(tmp_path, *args):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "budget.json"
    cmd = [sys.executable, "-m", "fastlangevin.kernel_budget", "--json", str(out), "--cubin-dir", str(tmp_path), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0 and "ptxas" in proc.stderr:  # pragma: no cover - a Triton build without ptxas
        pytest.skip(f"no CUDA toolchain in this Triton install: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| family |" in proc.stdout
    return json.loads(out.read_text())


# Regression guards on the hot path (instructions per element, aligned variants, sm_90), a few percent
# above what the tool measured when they were set (issue 12's targets, 32 and 40, are not reached yet:
# Philox4x32-10 alone costs ~10 and the Box–Muller ~17 per element).
HOT_PATH_GUARD = {
    "_langevin_step_kernel": 43.0,  # scalar or 0-d scales (per-row ones divide: not guarded)
    "_dsm_perturb_kernel": 51.0,
    "_dsm_loss_partial_kernel": 45.0,
    "_dsm_loss_backward_kernel": 42.5,
    "_corrector_norms_kernel": 62.5,
}


def _check_report(report, tmp_path, guard: bool):
    for name, rec in report.items():
        assert "error" not in rec, (name, rec)
        assert (tmp_path / f"{name}.cubin").stat().st_size > 0
        assert rec["elements_per_thread"] == 16
        assert rec["local_bytes"] == 0 and rec["stack_bytes"] == 0 and rec["local_memory_instr_hot"] == 0, name
        assert 0 < rec["ceiling_pct_H200"] <= rec["ceiling_pct_H100"] <= 100
        head = rec["constexprs"].get("HEAD", 0) or not rec["constexprs"].get("ROWS_ALIGNED", True)
        vec8 = rec["constexprs"].get("VEC") == 8
        per_row = rec["constexprs"].get("STEP_MODE") == 2 or rec["constexprs"].get("NOISE_MODE") == 2
        if guard and not head and rec["constexprs"].get("COMPUTE") != "tl.float64" and not per_row:
            assert rec["hot_instr_per_element"] <= HOT_PATH_GUARD[rec["kernel"]], (name, rec["hot_instr_per_element"])
        if not head and rec["constexprs"].get("COMPUTE") != "tl.float64":
            # 16-byte global accesses on the aligned streams (the row kernels' partial sums are scalars;
            # the corrector reads 16-bit scores 8 bytes at a time, VEC 4, as before: fewer instructions)
            if rec["kernel"] == "_corrector_norms_kernel" and "16-bit" in rec["family"]:
                assert 8 in rec["global_load_bytes"], name
            else:
                assert 16 in rec["global_load_bytes"], (name, vec8)
            if rec["kernel"] in ("_langevin_step_kernel", "_dsm_perturb_kernel", "_dsm_loss_backward_kernel"):
                assert rec["global_store_bytes"] == [16], name


def test_tool_subset(tmp_path):
    report = _run_tool(tmp_path, "--subset", "--jobs", "2")
    assert len(report) == sum(v.core for v in kb.variants())
    _check_report(report, tmp_path, guard=True)


@pytest.mark.slow
def test_tool_every_variant(tmp_path):
    report = _run_tool(tmp_path, "--jobs", "2")
    assert len(report) == len(kb.variants())
    _check_report(report, tmp_path, guard=False)

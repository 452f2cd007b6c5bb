"""Every Triton kernel compiles for an H100 (sm_90) — checked without a GPU.

The interpreter runs the kernels' semantics on CPU; this compiles them for real (Triton front
end, LLVM, the bundled ptxas) in a subprocess without TRITON_INTERPRET, and reads the PTX: the
hot kernels must use 16-byte vector loads and stores in the aligned case (the bandwidth the
fused step lives on), for 16-bit dtypes too.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_compile_check.py")


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0 and "ptxas" in proc.stderr:  # pragma: no cover - a Triton build without ptxas
        pytest.skip(f"no CUDA toolchain in this Triton install: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_kernel_variant_compiles_for_sm90(report):
    failed = {k: v["error"] for k, v in report.items() if not v["ok"]}
    assert not failed, failed
    assert len(report) >= 19


@pytest.mark.parametrize(
    "variant",
    [
        "step-fp32-scalars",
        "step-bf16-rows-sqrt2a-clamp",
        "step-bf16-rows-pairs-sqrt2a-clamp",
        "step-fp32-rows-pow2",
        "step-fp32-state-bf16-score-0d",
        "step-fp16-deterministic",
        "step-bf16-head1-sqrt2a-clamp",  # a mid-group start's interior tiles
        "step-fp32-head3-0d",
        "dsm-perturb-fp32",
        "dsm-backward-fp32-alignedTrue",
        "dsm-perturb-bf16",
        "dsm-backward-bf16-alignedTrue",
    ],
)
def test_hot_kernels_use_16_byte_accesses(report, variant):
    assert "ld.global.v4.b32" in report[variant]["vector_loads"], report[variant]
    assert "st.global.v4.b32" in report[variant]["vector_stores"], report[variant]


# fma.rn.f32 per Box–Muller pair in the compiled normal transform (kernels/tiles.py): 6 (log polynomial) + 1
# (-2 ln U); the angle's sine and cosine are the hardware's (sin/cos.approx, one each per pair), not the
# interpreter's polynomials. Those are explicit ``tl.fma`` calls; anything else would be a contraction.
FMA_PER_PAIR = 7


def test_affine_update_is_not_contracted_to_fma(report):
    """launch_options turns FMA contraction off: x + a*s rounds like the fallback and interpreter. The only
    fused multiply-adds are the normal transform's explicit ones."""
    assert report["step-fp16-deterministic"]["fma"] == 0
    for variant in (
        "step-fp32-scalars",
        "step-bf16-rows-sqrt2a-clamp",
        "dsm-perturb-fp32",
        "dsm-backward-fp32-alignedTrue",
    ):
        fma = report[variant]["fma"]
        assert fma > 0 and fma % FMA_PER_PAIR == 0, (variant, fma)
        # one hardware sine and one cosine per pair: as many pairs as the fma count says
        pairs = fma // FMA_PER_PAIR
        assert report[variant]["sin_approx"] == report[variant]["cos_approx"] == pairs, (variant, report[variant])
    assert report["step-fp16-deterministic"]["sin_approx"] == 0  # no noise, no transform

"""Compile every Triton kernel for an NVIDIA GPU (sm_90, the H100) without a GPU.

Run as a script (``python tests/gpu_compile_check.py``) in a process *without*
``TRITON_INTERPRET``: Triton's front end, its optimiser, LLVM and the bundled ``ptxas`` then
build real cubins, which catches what the interpreter never sees (type errors only the
compiler checks, bad constexpr branches, register blow-ups) and lets us inspect the PTX.
Prints one JSON object: variant name → {"ok", "error", "vector_loads", "vector_stores", "fma"}.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from fastlangevin.kernels import corrector, dsm, langevin_step  # noqa: E402
from fastlangevin.kernels.tiles import launch_options, stream_warps  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
# Arguments Triton sees as 16-byte aligned / divisible by 16 in a typical launch (torch's
# allocations are aligned; sizes that are multiples of 16): they enable vectorised accesses.
ALIGNED = ("x_ptr", "score_ptr", "out_ptr", "grad_ptr", "partial_ptr", "n_elements", "row_size")


def compile_variant(kernel, ptrs: dict, floats: tuple, constexprs: dict, num_warps: int):
    names = kernel.arg_names
    signature = {}
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ptrs:
            signature[name] = "*" + ptrs[name]
        elif name in floats:
            signature[name] = "fp32"
        else:
            signature[name] = "i64"
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in ALIGNED if a in names}
    src = ASTSource(
        fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()}, attrs=attrs
    )
    return triton.compile(src, target=TARGET, options=launch_options(False, num_warps))


def variants():
    ls, f32, bf16 = langevin_step._langevin_step_kernel, "fp32", "bf16"

    def step_ptrs(x, s, noise=f32):
        return {
            "x_ptr": x,
            "score_ptr": s,
            "out_ptr": x,
            "seed_ptr": "i64",
            "noise_ptr": noise,
            "step_ptr": f32,
            "noise_scale_ptr": f32,
        }

    step_floats = ("step_val", "noise_val", "lo", "hi")
    base = {
        "HEAD": 0,
        "STEP_MODE": 0,
        "NOISE_MODE": 0,
        "NOISE_FROM_PTR": False,
        "HAS_CLAMP": False,
        "COMPUTE": tl.float32,
        "BLOCK": langevin_step.BLOCK_GPU,
        "VEC": 4,
        "ROW_GRID": False,
        "EVEN": False,
        "DIV32": False,  # the row-index constexprs (defaults given: an unnamed one would compile as an i64 argument)
        "ROW_DIV": 0,
        "ROW_SHIFT": 0,
    }
    W = langevin_step.NUM_WARPS_GPU
    yield "step-fp32-scalars", ls, step_ptrs(f32, f32), step_floats, base, W
    yield (
        "step-bf16-rows-sqrt2a-clamp",
        ls,
        step_ptrs(bf16, bf16),
        step_floats,
        {**base, "STEP_MODE": 2, "NOISE_MODE": 4, "HAS_CLAMP": True, "VEC": 8},
        W,
    )
    yield (
        "step-fp32-state-bf16-score-0d",
        ls,
        step_ptrs(f32, bf16),
        step_floats,
        {**base, "STEP_MODE": 1, "NOISE_MODE": 1, "VEC": 8},
        W,
    )
    yield (
        "step-bf16-rows-rowgrid-even",
        ls,
        step_ptrs(bf16, bf16),
        step_floats,
        {**base, "STEP_MODE": 2, "NOISE_MODE": 4, "VEC": 8, "ROW_GRID": True, "EVEN": True},
        stream_warps(langevin_step.BLOCK_GPU, 8),  # the launcher's: 64 elements a thread in 8-wide rows
    )
    # per-row scales on short rows: two candidate rows per tile row (ROW_DIV 4, tiles.pair_rows), with a head too,
    # and rows of 2 by a shift (ROW_DIV 3: one scale load per row, joined into the tile)
    yield (
        "step-bf16-rows-pairs-sqrt2a-clamp",
        ls,
        step_ptrs(bf16, bf16),
        step_floats,
        {**base, "STEP_MODE": 2, "NOISE_MODE": 4, "HAS_CLAMP": True, "VEC": 8, "DIV32": True, "ROW_DIV": 4},
        4,
    )
    yield (
        "step-fp32-rows-pairs-head1",
        ls,
        step_ptrs(f32, f32),
        step_floats,
        {**base, "HEAD": 1, "STEP_MODE": 2, "NOISE_MODE": 2, "DIV32": True, "ROW_DIV": 4},
        4,
    )
    yield (
        "step-fp32-rows-pow2",
        ls,
        step_ptrs(f32, f32),
        step_floats,
        {**base, "STEP_MODE": 2, "NOISE_MODE": 2, "ROW_DIV": 3, "ROW_SHIFT": 1},
        4,
    )
    yield "step-fp16-deterministic", ls, step_ptrs("fp16", "fp16"), step_floats, {**base, "NOISE_MODE": 3, "VEC": 8}, W
    # mid-group starts with scalar scales: aligned interior tiles (16-byte rows; kernels/langevin_step.py
    # _head_interior), at the launcher's 32 (fp32) or 64 (16-bit) elements a thread; the odd head's 16-bit clamp
    yield (
        "step-bf16-head1-sqrt2a-clamp",
        ls,
        step_ptrs(bf16, bf16),
        step_floats,
        {**base, "HEAD": 1, "NOISE_MODE": 4, "HAS_CLAMP": True, "VEC": 8},
        stream_warps(langevin_step.BLOCK_GPU, 8),
    )
    yield (
        "step-fp32-head3-0d",
        ls,
        step_ptrs(f32, f32),
        step_floats,
        {**base, "HEAD": 3, "STEP_MODE": 1, "NOISE_MODE": 1},
        stream_warps(langevin_step.BLOCK_GPU, 4),
    )
    yield (
        "step-fp64-head3-injected",
        ls,
        {**step_ptrs("fp64", "fp64"), "step_ptr": "fp64", "noise_scale_ptr": "fp64"},
        step_floats,
        {**base, "HEAD": 3, "STEP_MODE": 1, "NOISE_MODE": 1, "NOISE_FROM_PTR": True, "COMPUTE": tl.float64},
        W,
    )

    for dt, cdt, vec in ((f32, tl.float32, 4), (bf16, tl.float32, 8)):
        rows = {"alpha_ptr": f32, "sigma_ptr": f32, "inv_sigma_ptr": f32, "coef_ptr": f32, "weight_ptr": f32}
        yield (
            f"dsm-perturb-{dt}",
            dsm._dsm_perturb_kernel,
            {"x_ptr": dt, "out_ptr": dt, "seed_ptr": "i64", "noise_ptr": f32, **rows},
            (),
            {"HEAD": 0, "HAS_ALPHA": True, "NOISE_FROM_PTR": False, "COMPUTE": cdt, "BLOCK": dsm.BLOCK_GPU, "VEC": vec},
            W,
        )
        for aligned in (True, False):
            yield (
                f"dsm-loss-partial-{dt}-aligned{aligned}",
                dsm._dsm_loss_partial_kernel,
                {"score_ptr": dt, "partial_ptr": f32, "seed_ptr": "i64", "noise_ptr": f32, **rows},
                (),
                {"NOISE_FROM_PTR": False, "ROWS_ALIGNED": aligned, "COMPUTE": cdt, "BLOCK": 2048, "VEC": vec},
                W,
            )
            yield (
                f"dsm-backward-{dt}-aligned{aligned}",
                dsm._dsm_loss_backward_kernel,
                {"score_ptr": dt, "grad_ptr": dt, "seed_ptr": "i64", "noise_ptr": f32, **rows},
                (),
                {"NOISE_FROM_PTR": False, "ROWS_ALIGNED": aligned, "COMPUTE": cdt, "BLOCK": 2048, "VEC": vec},
                W,
            )
        yield (
            f"corrector-norms-{dt}",
            corrector._corrector_norms_kernel,
            {"score_ptr": dt, "seed_ptr": "i64", "partial_ptr": f32},
            (),
            {"COMPUTE": cdt, "BLOCK": 2048, "ROWS_ALIGNED": True, "VEC": 4},
            W,
        )
    for chunks in (2, 64):
        yield (
            f"dsm-loss-reduce-{chunks}",
            dsm._dsm_loss_reduce_kernel,
            {"partial_ptr": "fp32", "weight_ptr": "fp32", "out_ptr": "fp32"},
            (),
            {"CHUNKS": chunks},
            1,
        )


def main() -> int:
    report = {}
    for name, kernel, ptrs, floats, constexprs, warps in variants():
        try:
            ptx = compile_variant(kernel, ptrs, floats, constexprs, warps).asm["ptx"]
            report[name] = {
                "ok": True,
                "vector_loads": sorted(set(re.findall(r"ld\.global[\.\w]*\.v[24]\.\w+", ptx))),
                "vector_stores": sorted(set(re.findall(r"st\.global[\.\w]*\.v[24]\.\w+", ptx))),
                "fma": ptx.count("fma.rn.f32"),
                # the hardware sine/cosine of the Box–Muller angle (kernels/tiles.py, HW_SINCOS)
                "sin_approx": ptx.count("sin.approx.ftz.f32"),
                "cos_approx": ptx.count("cos.approx.ftz.f32"),
            }
        except Exception as exc:  # report every variant, not just the first failure
            report[name] = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-2000:],
            }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

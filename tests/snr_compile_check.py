"""Compile the corrector's step-size kernel (``kernels/snr_step.py``) for sm_90 without a GPU.

Run as a script in a process without ``TRITON_INTERPRET`` (``tests/test_host_path.py`` does): every
mode combination the launcher can pick goes through Triton's front end, LLVM and ``ptxas``, which
catches what the interpreter accepts and the compiler does not. Prints one JSON object: variant → ok
or the error's last line.
"""

from __future__ import annotations

import itertools
import json
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"

import triton  # noqa: E402
from fastlangevin.kernels import snr_step  # noqa: E402
from fastlangevin.kernels.tiles import launch_options  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def main() -> int:
    kernel = snr_step._snr_step_kernel
    names = kernel.arg_names
    out = {}
    for per_sample, snr_mode, alpha_mode, has_alpha, fp64 in itertools.product(
        (False, True), (0, 1, 2), (0, 1, 2), (False, True), (False, True)
    ):
        if fp64 and (snr_mode == 0 or (has_alpha and alpha_mode == 0)):
            continue  # float64 runs pass scalars as 0-d tensors (launch_snr_step)
        if not has_alpha and alpha_mode != 0:
            continue
        dt = "fp64" if fp64 else "fp32"
        out_rows, consts = snr_step._plan(256, snr_mode, alpha_mode, has_alpha, per_sample, fp64, False)
        warps = consts.pop("num_warps")
        consts.pop("enable_fp_fusion")
        ptrs = {"norms_ptr": dt, "snr_ptr": dt, "alpha_ptr": dt, "out_ptr": dt}
        sig = {n: "constexpr" if n in consts else ("*" + ptrs[n] if n in ptrs else "fp32") for n in names}
        sig["batch"] = "i32"
        src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items()})
        norm = "per_sample" if per_sample else "batch"
        name = f"snr-{dt}-{norm}-snr{snr_mode}-alpha{alpha_mode if has_alpha else 'none'}"
        try:
            triton.compile(src, target=TARGET, options=launch_options(False, warps))
            out[name] = "ok"
        except Exception as exc:  # report every variant, not just the first failure
            out[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
    print(json.dumps(out))
    return 0 if all(v == "ok" for v in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

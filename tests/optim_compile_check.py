"""Compile the optimizers' multi-tensor kernel for sm_90 without a GPU (see gpu_compile_check.py).

Run as a script without ``TRITON_INTERPRET``; prints one JSON object: variant → {"ok", "error",
"fma", "approx"} where "fma" / "approx" count ``fma.rn.f32`` and approximate ``sqrt`` / ``div``
instructions in the PTX (both must be 0: the fallback rounds every operation once).
"""

from __future__ import annotations

import json
import re
import sys
import traceback

sys.path.insert(0, __import__("os").path.dirname(__file__))

import triton.language as tl  # noqa: E402
from fastlangevin.kernels import optim  # noqa: E402
from gpu_compile_check import compile_variant  # noqa: E402

FLOATS = ("lr", "gscale", "prior", "nscale", "a1", "a2", "eps")
PTRS = {"meta_ptr": "i64", "blocks_ptr": "i64", "seed_ptr": "i64"}


def variants():
    for method, name in ((0, "sgld"), (1, "psgld"), (2, "sghmc")):
        for pdt, gdt, master in ((tl.float32, tl.float32, False), (tl.bfloat16, tl.bfloat16, True)):
            for injected in (False, True):
                tag = f"{name}-{'bf16-master' if master else 'fp32'}{'-injected' if injected else ''}"
                yield (
                    tag,
                    {
                        "METHOD": method,
                        "HAS_MASTER": master,
                        "HAS_PRIOR": True,
                        "HAS_NOISE": True,
                        "NOISE_FROM_PTR": injected,
                        "PARAM_DTYPE": pdt,
                        "GRAD_DTYPE": gdt,
                        "BLOCK": optim.BLOCK_GPU,
                        "ALIGNED": True,  # the usual launch (kernels/optim.py): 16-byte accesses
                    },
                )


def main():
    out = {}
    for tag, constexprs in variants():
        try:
            k = compile_variant(optim._optim_kernel, PTRS, FLOATS, constexprs, optim.NUM_WARPS_GPU)
            ptx = k.asm["ptx"]
            out[tag] = {
                "ok": True,
                "fma": len(re.findall(r"\bfma\.rn\.f32", ptx)),
                "approx": len(re.findall(r"\b(sqrt|div|rcp)\.approx", ptx)),
            }
        except Exception as exc:  # report every variant
            out[tag] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

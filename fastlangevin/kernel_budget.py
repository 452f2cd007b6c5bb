"""``fastlangevin kernels``: the kernels' instruction budget, measured offline (no GPU needed).

    ceiling = min(1, T_issue · B / (W_copy · N))         (fraction of copy bandwidth a kernel can reach)

with, per launch variant, ``N`` = hot-path SASS instructions per element and ``B`` = bytes moved per
element (every streamed operand read plus every one written). The model: a memory-bound kernel runs at
copy bandwidth only if its instructions issue at least as fast as its bytes stream. An SM has four
schedulers, each issuing one warp instruction (32 thread-instructions) per cycle at best, so

* H200 SXM: 132 SMs × 4 × 32 lanes × 1.98 GHz ≈ 33.4 T thread-instr/s; copy ≈ 4.3 TB/s (a measured
  device-to-device copy, bytes read plus written, about 90 % of the 4.8 TB/s HBM3e peak);
* H100 SXM: the same 132 SMs at the same 1.98 GHz boost clock (NVIDIA H100 datasheet) ≈ 33.4 T
  thread-instr/s; copy ≈ 3.0 TB/s (90 % of the datasheet's 3.35 TB/s HBM3, the ratio H200 measures).

Perfect issue is an upper bound (dependencies, memory stalls and the other warps' issue slots all cost
more), so a variant needs its ceiling well above 100 % to be bandwidth-bound in practice.

How a variant is measured: each ``@triton.jit`` kernel is compiled with Triton's own front end, LLVM
and bundled ``ptxas`` for the target (sm_90 by default; ``--arch`` adds others the bundled ptxas
supports), exactly as a launch would specialise it (constexprs, 16-byte divisibility of the pointers
and sizes in the aligned case); the cubin is disassembled with the bundled ``nvdisasm``. The **hot
path** is every SASS instruction up to the kernel's last ``EXIT`` except those jumped over by a
forward predicated branch on the hot path (cold slow paths, e.g. libdevice's Payne–Hanek range reduction, or
a launch's one partial tile; a branch inside a cold block marks nothing); dividing
it by the elements each thread handles (BLOCK / (32 · num_warps)) gives ``N``. Registers, stack and
local memory come from ``cuobjdump -res-usage``; the global access widths from the ``LDG``/``STG``
opcodes (``.128`` = 16 bytes per thread). ``--json FILE`` writes variant → record, ``--cubin-dir DIR``
keeps ``DIR/<variant>.cubin``.

Where the step's instructions go (fp32, scalar scales, 32 elements = 8 Philox groups per thread, sm_90):
per group of four elements Philox4x32-10 costs ~42 (20 wide multiplies ``IMAD.WIDE.U32``/``IMAD.HI`` giving
the product halves, ~22 three-input xors ``LOP3``), the two Box–Muller pairs 24 each (the radius: 2a + 1 and
the fp32 bit split of U in 5 integer ops, 2 conversions, 6 + 1 FFMA of the log polynomial, 1 FMUL,
``MUFU.SQRT``, the sign ``LOP3``; the angle: 1 conversion, 1 FMUL and ptxas's ``FMUL.RZ`` range scaling,
``MUFU.SIN`` and ``MUFU.COS``; 2 FMUL by r), the update ``x + a s + b z`` 4 per element (unfused, to round as
the fallback does), and the per-thread work (key schedule, seed load, index math) ~1.5 per element at 32
elements per thread. 8-wide (16-bit) tiles run 64 elements a thread (2 warps on 4096: ``kernels/tiles.py``
ELEMS_PER_THREAD_GPU), which halves that share (bf16 step with a clamp 33.09 -> 31.91) at 168-255 registers
instead of 80-127, so about half the resident warps. The model counts issue slots only; what the occupancy costs
a memory-bound kernel is bytes in flight, and by Little's law (the derivation in that comment: ~33 KB per SM
needed at 4.3 TB/s and ~1 us loaded latency, 64-96 KB resident at 64 elements a thread) it should cost nothing:
a prediction for the GPU benchmark to check (2 against 4 warps), not a measurement.
(The interpreter evaluates the angle's sine and cosine as polynomials instead:
``kernels/tiles.py`` HW_SINCOS, bound in ``fastlangevin._rng``; 7 FFMA and 2 FMUL more per pair.)
Masked tiles add ~1 (the count left, the stores' predicates; the step's masked loads, whose registers
Triton zero-fills first, run in the launch's one partial tile only, jumped over elsewhere); a clamp 2
(``FMNMX.NAN``; 1 on a 16-bit output: ``HMNMX2``); 16-bit operands 1 per element each to widen
(``kernels/tiles.py`` widen) and 0.5 to narrow.
The Philox counters' carry into the high word is selected per counter only in the tile whose low words wrap
(``normal_tile``: that copy of the rounds is jumped over, cold, everywhere else). Launch layouts (the variant
name's suffix): none = masked flat grid, ``-even`` = every tile full (unmasked), ``-rowgrid`` = per-row scales
on a (row, chunk) grid (a row's partial last chunk runs a masked copy of the body, which full chunks jump
over); per-row scales on the flat grid (rows < 512 elements): ``-divide`` = in 8-wide (16-bit) tiles and with a
mid-group start, each tile row's first row by a multiply-high and the next row's from a column on (``kernels/tiles.py``
pair_rows: two scale loads per tile row, a select per element; rows of >= VEC - 1 elements), in group-aligned 4-wide
(fp32) tiles each element's row by a multiply-high (magic_rows); ``-divide-short`` = each element's row where a tile
row may span more than two rows (rows of 3, 5, 6 in 8-wide tiles, of 1 and 2 with a head); ``-divide-tilerow`` =
each tile row's where rows are whole tile rows (one scale load per tile row); ``-divide-pow2`` = rows of 2 by a shift
(1 and 4 alike: one scale load per row, joined into the tile; each element's beside a 16-bit operand an fp32
one). ``head1``/``head3`` = a start mid-way into a Philox group: with scalar or 0-d scales (and not float64) every
thread reads its elements as aligned 16-byte memory rows (``kernels/langevin_step.py`` _head_interior: one Philox
draw per group, its outputs moved onto the rows in registers; the two rows shared with the neighbouring threads
stored element by element), 32 elements a thread in 4-wide rows, 64 in 8-wide (both operands 16-bit) or beside a
16-bit operand (4-wide rows); masks only in program 0 and the last tile, the interior tiles' unmasked copy is the hot
one. Per-row scales (``-divide``: 4 warps, ``-divide-short``: 8) and float64 keep scalar accesses column by
column.
``dsm-perturb-flat-*``: the DSM perturb's flat grid for short rows, its rows found as the step's per-row scales'.
``optim-*``: the optimizers' multi-tensor kernel (one launch per bucket; full blocks unmasked with 16-byte accesses
when every pointer of the bucket is 16-byte aligned, ``-unaligned`` otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from typing import Dict, Iterator, List, Optional, Tuple

# (name, thread-instructions issued per second, copy bandwidth in bytes/s (read + written)).
DEVICES = (
    ("H100", 132 * 4 * 32 * 1.98e9, 3.0e12),
    ("H200", 132 * 4 * 32 * 1.98e9, 4.3e12),
)

#: Warps of the group-aligned elementwise launches (the step, the DSM perturb) at BLOCK 4096, by tile-row
#: width: kernels/tiles.py ELEMS_PER_THREAD_GPU (32 elements a thread in 4-wide rows, 64 in 8-wide 16-bit
#: ones; not imported: this module loads without Triton). The step's exceptions: float64 states and mid-group
#: starts with a row per element (-divide-short) run FLAT_WARPS_GPU = 8; other mid-group starts (4-wide rows) and
#: per-row scales on the flat grid with a row per element or two per tile row (-divide, -divide-short) 4 warps, and
#: so do those per tile row and by a shift (-divide-tilerow, -divide-pow2) with an fp32 operand beside a 16-bit one
#: (the others the stream's).
STREAM_WARPS = {4: 4, 8: 2}
STEP_WARPS = STREAM_WARPS[4]
#: The row kernels' warps at BLOCK 4096 (kernels/tiles.py ROW_ELEMS_PER_WARP = 1024 columns per warp).
ROW_WARPS = 4
_DTYPE_BYTES = {"fp64": 8, "fp32": 4, "bf16": 2, "fp16": 2}
_STEP_DTYPES = ("fp32", "bf16", "fp16")
# Integer arguments a typical launch passes as multiples of 16 (torch allocations are 16-byte
# aligned; Triton specialises such arguments, which is what lets it vectorise).
_DIVISIBLE = ("x_ptr", "score_ptr", "out_ptr", "grad_ptr", "partial_ptr", "n_elements", "row_size")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One specialisation of a kernel, as a launcher would pick it."""

    name: str
    family: str
    module: str  # kernels submodule holding the kernel
    kernel: str
    ptrs: Tuple[Tuple[str, str], ...]  # argument -> pointee type
    constexprs: Tuple[Tuple[str, object], ...]  # argument -> value ("tl.float32" strings for dtypes)
    num_warps: int
    block: int
    bytes_per_element: int
    floats: Tuple[str, ...] = ()
    core: bool = False  # in the quick subset (`--subset`) that CI compiles by default
    maxnreg: Optional[int] = None  # a register limit the launcher sets (kernels/langevin_step.py _launch_plan)


def _step_layouts(head: int, per_row: bool, vec: int = 4, mixed: bool = False) -> Iterator[Tuple[str, bool, bool, int]]:
    """(name suffix, ROW_GRID, EVEN, ROW_DIV) of the step launches for one head, scale kind and tile-row width
    (see ``launch_langevin_step``): group-aligned starts run masked or, when every tile is full, unmasked
    (EVEN); per-row scales run on the (row, chunk) grid for aligned rows of >= ROW_GRID_MIN_GPU
    elements and otherwise on the flat grid: each tile row's first row by a multiply-high and the next row's
    from a column on ("-divide", ROW_DIV 4: rows of >= VEC - 1 elements), each element's row by a multiply-high
    ("-divide-short", ROW_DIV 1: rows of 3, 5, 6 in 8-wide tiles, of 1, 2 with a head), each tile row's where rows
    are whole tile rows ("-divide-tilerow", ROW_DIV 2) or by a shift ("-divide-pow2", ROW_DIV 3: rows of 1, 2 and 4
    below VEC; ROW_DIV 5, the shift per element, with an fp32 operand beside a 16-bit one: ``mixed``). Mid-group starts
    run 4-wide rows."""
    if head:
        if per_row:
            yield "-divide", False, False, 4
            yield "-divide-short", False, False, 1
        else:
            yield "", False, False, 0
        return
    if per_row:
        yield "-rowgrid", True, False, 0
        yield "-rowgrid-even", True, True, 0
        if vec == 8:
            yield "-divide", False, False, 4
            yield "-divide-short", False, False, 1
        else:  # 4-wide group-aligned rows: a row per element (two candidates measured more instructions)
            yield "-divide", False, False, 1
        yield "-divide-tilerow", False, False, 2
        yield "-divide-pow2", False, False, 5 if mixed else 3  # beside a 16-bit operand an fp32 one per element
    else:
        yield "", False, False, 0
        yield "-even", False, True, 0


def _step_warps(head: int, fp64: bool, row_grid: bool, suffix: str, vec: int, mixed: bool = False) -> int:
    """The step launcher's warps (kernels/langevin_step.py ``_launch_plan``; ``mixed``: an fp32 operand beside a
    16-bit one)."""
    if (head and suffix == "-divide-short") or (fp64 and not row_grid):
        return 8
    if head and suffix == "":  # scalar scales: the aligned interior's 32 (4-wide rows) or 64 elements a thread
        return STREAM_WARPS[vec]
    if head or suffix in ("-divide", "-divide-short", "-divide-pow2") or (suffix.startswith("-divide") and mixed):
        return STEP_WARPS
    return STREAM_WARPS[vec]


def _step_variants() -> Iterator[Variant]:
    # x (and out) dtype, score dtype: any float dtypes; fp64 only pairs with fp64 and the launcher then
    # passes its scales as 0-d tensors (modes 1/2), never as fp32 scalars.
    pairs = [(x, s) for x in _STEP_DTYPES for s in _STEP_DTYPES] + [("fp64", "fp64")]
    core = {
        ("fp32", "fp32", 0, 0, False, 0, ""),
        ("fp32", "fp32", 0, 4, False, 0, "-even"),
        ("bf16", "bf16", 2, 4, True, 0, "-rowgrid"),
        ("bf16", "bf16", 0, 4, True, 0, ""),
        ("fp32", "bf16", 1, 3, False, 0, ""),
        ("fp16", "fp16", 1, 1, False, 0, "-even"),
        ("bf16", "bf16", 0, 4, True, 3, ""),
        ("bf16", "bf16", 2, 4, True, 0, "-divide"),
        ("bf16", "bf16", 2, 4, True, 0, "-divide-tilerow"),
        ("fp32", "fp32", 2, 2, True, 0, "-divide-pow2"),
        ("fp16", "fp16", 2, 2, True, 1, "-divide"),
        ("bf16", "bf16", 2, 4, True, 0, "-divide-short"),
        ("fp16", "fp16", 2, 2, True, 1, "-divide-short"),
    }
    for x, s in pairs:
        compute = "tl.float64" if x == "fp64" else "tl.float32"
        scale = "fp64" if x == "fp64" else "fp32"
        vec = 8 if min(_DTYPE_BYTES[x], _DTYPE_BYTES[s]) == 2 else 4
        mixed = _DTYPE_BYTES[x] != _DTYPE_BYTES[s]  # an fp32 operand beside a 16-bit one
        wide_score = _DTYPE_BYTES[x] < _DTYPE_BYTES[s]  # a 16-bit state beside an fp32 score
        for step_mode in (1, 2) if x == "fp64" else (0, 1, 2):
            for noise_mode in (1, 2, 3, 4) if x == "fp64" else (0, 1, 2, 3, 4):
                for clamp in (False, True):
                    for head in (0, 1, 3):
                        if head == 3 and not (x == "bf16" and s == "bf16"):
                            continue  # heads 1..3 compile alike; one extra head checks that
                        per_row = 2 in (step_mode, noise_mode)
                        for suffix, row_grid, even, row_div in _step_layouts(head, per_row, 4 if head else vec, mixed):
                            name = (
                                f"step-{x}-{s}-a{step_mode}-b{noise_mode}{'-clamp' if clamp else ''}-head{head}{suffix}"
                            )
                            yield Variant(
                                name=name,
                                family=f"step {'16-bit' if vec == 8 else x}",
                                module="langevin_step",
                                kernel="_langevin_step_kernel",
                                ptrs=(
                                    ("x_ptr", x),
                                    ("score_ptr", s),
                                    ("out_ptr", x),
                                    ("seed_ptr", "i64"),
                                    ("noise_ptr", "fp32"),
                                    ("step_ptr", scale),
                                    ("noise_scale_ptr", scale),
                                ),
                                floats=("step_val", "noise_val", "lo", "hi"),
                                constexprs=(
                                    ("HEAD", head),
                                    ("STEP_MODE", step_mode),
                                    ("NOISE_MODE", noise_mode),
                                    ("NOISE_FROM_PTR", False),
                                    ("HAS_CLAMP", clamp),
                                    ("COMPUTE", compute),
                                    ("BLOCK", 4096),
                                    # the launcher's choice: 4-wide rows for heads with per-row scales
                                    ("VEC", vec if not head or suffix == "" else 4),
                                    ("ROW_GRID", row_grid),
                                    ("EVEN", even),
                                    ("DIV32", True),  # the launcher's choice below 2**31 - BLOCK per row
                                    ("ROW_DIV", row_div),  # the launcher's choice below 2**31 elements
                                    ("ROW_SHIFT", 1 if row_div in (3, 5) else 0),  # rows of 2 (-divide-pow2)
                                ),
                                num_warps=_step_warps(head, x == "fp64", row_grid, suffix, vec, mixed),
                                block=4096,
                                bytes_per_element=2 * _DTYPE_BYTES[x] + _DTYPE_BYTES[s],
                                core=(x, s, step_mode, noise_mode, clamp, head, suffix) in core,
                                maxnreg=255 if wide_score and not head and suffix == "" else None,  # _launch_plan
                            )


def _flat_perturb_warps(row_div: int, vec: int, fp64: bool) -> int:
    """kernels/dsm.py ``flat_warps``: 32 elements a thread with a row per element, 64 in 8-wide rows per tile row."""
    if fp64:
        return 8
    return STREAM_WARPS[vec] if row_div == 2 else STREAM_WARPS[4]


def _dsm_variants() -> Iterator[Variant]:
    for dt in ("fp32", "bf16", "fp16", "fp64"):
        compute = "tl.float64" if dt == "fp64" else "tl.float32"
        rows = "fp64" if dt == "fp64" else "fp32"
        # the launchers' choice (kernels/row_tiles.py: row_vec): 8-wide rows for aligned 16-bit operands
        vec_of = lambda aligned: 8 if _DTYPE_BYTES[dt] == 2 and aligned else 4  # noqa: E731
        fam = "16-bit" if _DTYPE_BYTES[dt] == 2 else dt
        row_ptrs = tuple((p, rows) for p in ("alpha_ptr", "sigma_ptr", "inv_sigma_ptr", "coef_ptr", "weight_ptr"))
        for has_alpha in (False, True):
            for head in (0, 1):

                def perturb(name, kernel, vec, extra, warps, core):
                    return Variant(
                        name=name,
                        family=f"dsm perturb {fam}",
                        module="dsm",
                        kernel=kernel,
                        ptrs=(("x_ptr", dt), ("out_ptr", dt), ("seed_ptr", "i64"), ("noise_ptr", rows)) + row_ptrs,
                        constexprs=(
                            ("HEAD", head),
                            ("HAS_ALPHA", has_alpha),
                            ("NOISE_FROM_PTR", False),
                            ("COMPUTE", compute),
                            ("BLOCK", 4096),
                            ("VEC", vec),
                        )
                        + extra,
                        num_warps=warps,
                        block=4096,
                        bytes_per_element=2 * _DTYPE_BYTES[dt],
                        core=core,
                    )

                tag = f"{dt}{'-alpha' if has_alpha else ''}-head{head}"
                yield perturb(  # elementwise (kernels/dsm.py _perturb_plan)
                    f"dsm-perturb-{tag}", "_dsm_perturb_kernel", vec_of(head == 0), (),
                    STREAM_WARPS[vec_of(head == 0)], dt in ("fp32", "bf16") and has_alpha and head == 0,
                )  # fmt: skip
                # short rows (kernels/dsm.py ROW_GRID_MIN_BUSY): the flat grid, each element's row found as the step's
                # per-row scales find it (flat_row_div: -divide, -divide-tilerow, -divide-pow2 as there; heads -divide)
                flat_vec = 4 if head else vec_of(True)
                layouts = (("-divide", 1), ("-divide-tilerow", 2), ("-divide-pow2", 3))
                for suffix, row_div in layouts[:1] if head else layouts:
                    extra = (("DIV32", True), ("ROW_DIV", row_div), ("ROW_SHIFT", 1 if row_div == 3 else 0))
                    yield perturb(
                        f"dsm-perturb-flat-{tag}{suffix}", "_dsm_perturb_flat_kernel", flat_vec, extra,
                        _flat_perturb_warps(row_div, flat_vec, dt == "fp64"),
                        dt == "bf16" and has_alpha and suffix == "-divide-tilerow" and not head,
                    )  # fmt: skip
        for aligned in (True, False):
            tail = "aligned" if aligned else "unaligned"
            common = dict(
                module="dsm",
                constexprs=(
                    ("NOISE_FROM_PTR", False),
                    ("ROWS_ALIGNED", aligned),
                    ("COMPUTE", compute),
                    ("BLOCK", 4096),
                    ("VEC", vec_of(aligned)),
                ),
                num_warps=ROW_WARPS,
                block=4096,
            )
            yield Variant(
                name=f"dsm-loss-partial-{dt}-{tail}",
                core=dt == "fp32" and aligned,
                family=f"dsm loss {fam}",
                kernel="_dsm_loss_partial_kernel",
                ptrs=(("score_ptr", dt), ("partial_ptr", rows), ("seed_ptr", "i64"), ("noise_ptr", rows)) + row_ptrs,
                bytes_per_element=_DTYPE_BYTES[dt],
                **common,
            )
            yield Variant(
                name=f"dsm-backward-{dt}-{tail}",
                core=(dt == "bf16" and aligned) or (dt == "fp32" and not aligned),
                family=f"dsm backward {fam}",
                kernel="_dsm_loss_backward_kernel",
                ptrs=(("score_ptr", dt), ("grad_ptr", dt), ("seed_ptr", "i64"), ("noise_ptr", rows)) + row_ptrs,
                bytes_per_element=2 * _DTYPE_BYTES[dt],
                **common,
            )


def _corrector_variants() -> Iterator[Variant]:
    for dt in ("fp32", "bf16", "fp16", "fp64"):
        acc = "fp64" if dt == "fp64" else "fp32"
        for aligned in (True, False):
            vec = 8 if _DTYPE_BYTES[dt] == 2 and aligned else 4  # the launcher's row_vec (kernels/row_tiles.py)
            yield Variant(
                name=f"corrector-norms-{dt}-{'aligned' if aligned else 'unaligned'}",
                family=f"corrector norms {'16-bit' if _DTYPE_BYTES[dt] == 2 else dt}",
                module="corrector",
                kernel="_corrector_norms_kernel",
                ptrs=(("score_ptr", dt), ("seed_ptr", "i64"), ("partial_ptr", acc)),
                constexprs=(
                    ("ROWS_ALIGNED", aligned),
                    ("COMPUTE", "tl.float64" if dt == "fp64" else "tl.float32"),
                    ("BLOCK", 4096),
                    ("VEC", vec),
                ),
                num_warps=ROW_WARPS,
                block=4096,
                bytes_per_element=_DTYPE_BYTES[dt],
                core=(dt == "fp32" and aligned) or (dt == "bf16" and not aligned),
            )


def _optim_variants() -> Iterator[Variant]:
    """The optimizers' multi-tensor kernel (kernels/optim.py): a launch per bucket, a block per 4096 elements of
    a tensor; ALIGNED (every pointer of the bucket 16-byte aligned, the usual case) or not; the prior on."""
    from_dtype = {"fp32": "tl.float32", "bf16": "tl.bfloat16", "fp16": "tl.float16"}
    for method, name in ((0, "sgld"), (1, "psgld"), (2, "sghmc")):
        for dt in ("fp32", "bf16", "fp16"):
            master = dt != "fp32"  # 16-bit parameters keep an fp32 master copy
            # θ (or its master) read and written, the gradient read, a 16-bit parameter written, V / v read and written
            nbytes = 8 + _DTYPE_BYTES[dt] + (_DTYPE_BYTES[dt] if master else 0) + (8 if method else 0)
            for aligned in (True, False):
                yield Variant(
                    name=f"optim-{name}-{dt}{'' if aligned else '-unaligned'}",
                    family=f"optim {name} {'16-bit' if master else dt}",
                    module="optim",
                    kernel="_optim_kernel",
                    ptrs=(("meta_ptr", "i64"), ("blocks_ptr", "i64"), ("seed_ptr", "i64")),
                    floats=("lr", "gscale", "prior", "nscale", "a1", "a2", "eps"),
                    constexprs=(
                        ("METHOD", method),
                        ("HAS_MASTER", master),
                        ("HAS_PRIOR", True),
                        ("HAS_NOISE", True),
                        ("NOISE_FROM_PTR", False),
                        ("PARAM_DTYPE", from_dtype[dt]),
                        ("GRAD_DTYPE", from_dtype[dt]),
                        ("BLOCK", 4096),
                        ("ALIGNED", aligned),
                    ),
                    num_warps=STREAM_WARPS[4] if aligned else 8,  # kernels/optim.py NUM_WARPS_GPU
                    block=4096,
                    bytes_per_element=nbytes,
                    core=name == "sgld" and dt == "fp32" and aligned,
                )


def variants() -> List[Variant]:
    """Every launch variant the launchers can pick at the bandwidth-relevant launch shape (BLOCK 4096 on
    the launchers' warps; the DSM perturb's flat grid for short rows included, since a large batch of short rows
    streams as much as long ones; the reductions' short-row blocks move too few bytes a program to matter)."""
    return [*_step_variants(), *_dsm_variants(), *_corrector_variants(), *_optim_variants()]


# ---------------------------------------------------------------------------------------
# Compiling and reading SASS
# ---------------------------------------------------------------------------------------
def _nvidia_bin(tool: str) -> str:
    import triton.backends.nvidia as nv

    return os.path.join(os.path.dirname(nv.__file__), "bin", tool)


def compile_cubin(v: Variant, arch: int = 90) -> bytes:
    """The cubin of variant ``v`` for ``sm_<arch>`` (Triton's bundled toolchain, no GPU)."""
    import importlib

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastlangevin.kernels.tiles import head_options, launch_options

    kernel = getattr(importlib.import_module(f"fastlangevin.kernels.{v.module}"), v.kernel)
    names = kernel.arg_names
    ptrs, consts = dict(v.ptrs), {}
    for k, val in v.constexprs:
        if k in names:  # a variant may name a constexpr a kernel version lacks
            consts[k] = getattr(tl, val[3:]) if isinstance(val, str) and val.startswith("tl.") else val
    signature = {}
    for name in names:
        if name in consts:
            signature[name] = "constexpr"
        elif name in ptrs:
            signature[name] = "*" + ptrs[name]
        elif name in v.floats:
            signature[name] = "fp32"
        else:
            signature[name] = "i64"
    missing = [n for n, sig in signature.items() if sig == "constexpr" and n not in consts]
    if missing:
        raise ValueError(f"variant {v.name}: no value for constexpr(s) {missing}")
    aligned = not dict(v.constexprs).get("HEAD", 0) and dict(v.constexprs).get("ROWS_ALIGNED", True)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in _DIVISIBLE if a in names and aligned}
    if not aligned:  # pointers stay 16-byte aligned (torch allocations); sizes may be anything
        attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in _DIVISIBLE if a in names and "ptr" in a}
    src = ASTSource(
        fn=kernel, signature=signature, constexprs={(names.index(k),): x for k, x in consts.items()}, attrs=attrs
    )
    target = GPUTarget("cuda", arch, 32)
    options = launch_options(False, v.num_warps)
    if v.kernel == "_langevin_step_kernel":  # the flat launches' register cap with a head (tiles.head_options)
        options = head_options(options, dict(v.constexprs).get("HEAD", 0))
    if v.maxnreg:
        options = dict(options, maxnreg=v.maxnreg)
    return triton.compile(src, target=target, options=options).asm["cubin"]


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_LABEL = re.compile(r"^\.(L_x_\d+):")


def parse_sass(text: str) -> List[dict]:
    """Instructions of one kernel's SASS: address, guard predicate (or None), opcode, operands."""
    out, labels, pending = [], {}, []
    for line in text.splitlines():
        m = _LABEL.match(line.strip())
        if m:
            pending.append(m.group(1))  # a label names the next instruction's address
            continue
        m = _INSTR.search(line)
        if m:
            addr = int(m.group(1), 16)
            labels.update((k, addr) for k in pending)
            pending = []
            out.append({"addr": addr, "pred": (m.group(2) or "").strip() or None, "op": m.group(3), "args": m.group(4)})
    for ins in out:
        t = re.search(r"`\(\.(L_x_\d+)\)", ins["args"])
        ins["target"] = labels.get(t.group(1)) if t else None
    return out


def hot_path(instrs: List[dict]) -> List[dict]:
    """Instructions up to the last EXIT, minus those a forward predicated branch on the hot path jumps over.

    A branch inside a cold block is that block's own control flow: where it jumps past the block's end (a
    cold if/else whose last arm skips to the join), what it skips beyond the block is reached by the hot
    path, so only branches not already cold mark code cold (in address order)."""
    last_exit = max((i for i, ins in enumerate(instrs) if ins["op"] == "EXIT"), default=len(instrs) - 1)
    cold = set()
    for ins in instrs[: last_exit + 1]:
        if ins["addr"] in cold:
            continue
        if ins["op"].startswith("BRA") and ins["pred"] and ins["target"] is not None and ins["target"] > ins["addr"]:
            cold.update(j["addr"] for j in instrs if ins["addr"] < j["addr"] < ins["target"])
    return [ins for ins in instrs[: last_exit + 1] if ins["addr"] not in cold]


def _widths(instrs: List[dict], prefix: str) -> List[int]:
    """Bytes per thread of the global accesses with opcode prefix LDG/STG (.128 -> 16, .64 -> 8, ...)."""
    widths = set()
    for ins in instrs:
        if ins["op"].startswith(prefix + "."):
            m = re.search(r"\.(128|64|U16|S16|U8|S8)\b", ins["op"])
            bits = {"128": 128, "64": 64, "U16": 16, "S16": 16, "U8": 8, "S8": 8}[m.group(1)] if m else 32
            widths.add(bits // 8)
    return sorted(widths)


def _resources(cubin_path: str) -> Dict[str, int]:
    out = subprocess.run(
        [_nvidia_bin("cuobjdump"), "-res-usage", cubin_path], capture_output=True, text=True, check=True
    )
    res = {}
    for key in ("REG", "STACK", "LOCAL", "SHARED"):
        m = re.search(rf"\b{key}:(\d+)", out.stdout)
        res[key.lower()] = int(m.group(1)) if m else 0
    return res


def analyse(v: Variant, arch: int = 90, cubin_dir: Optional[str] = None) -> dict:
    """The record of one variant (see the module docstring)."""
    import tempfile

    cubin = compile_cubin(v, arch)
    suffix = "" if arch == 90 else f"-sm{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(cubin_dir or tmp, f"{v.name}{suffix}.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        sass = subprocess.run([_nvidia_bin("nvdisasm"), "-c", path], capture_output=True, text=True, check=True).stdout
        res = _resources(path)
    instrs = parse_sass(sass)
    hot = hot_path(instrs)
    ept = v.block / (32 * v.num_warps)
    per_elem = len(hot) / ept
    rec = {
        "kernel": v.kernel,
        "family": v.family,
        "arch": f"sm_{arch}",
        "elements_per_thread": ept,
        "bytes_per_element": v.bytes_per_element,
        "registers": res["reg"],
        "stack_bytes": res["stack"],
        "local_bytes": res["local"],
        "local_memory_instr_hot": sum(1 for i in hot if i["op"].split(".")[0] in ("LDL", "STL")),
        "sass_instr_total": len(instrs),
        "sass_instr_hot": len(hot),
        "hot_instr_per_element": round(per_elem, 2),
        "global_load_bytes": _widths(hot, "LDG"),
        "global_store_bytes": _widths(hot, "STG"),
        "constexprs": {k: val for k, val in v.constexprs},
    }
    for dev, issue, copy in DEVICES:
        rec[f"ceiling_pct_{dev}"] = round(min(100.0, 100.0 * issue * v.bytes_per_element / (copy * per_elem)), 1)
    return rec


def _analyse_job(job):
    v, arch, cubin_dir = job
    try:
        return v.name, arch, analyse(v, arch, cubin_dir)
    except Exception as exc:  # report every variant, not just the first failure
        return v.name, arch, {"kernel": v.kernel, "error": f"{type(exc).__name__}: {exc}"}


def run(selected: List[Variant], archs=(90,), cubin_dir=None, jobs: int = 1) -> Dict[str, dict]:
    """variant name (``-sm<arch>`` appended for archs other than 90) -> record."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("compiling for a GPU needs TRITON_INTERPRET unset (the CLI re-runs itself without it)")
    if cubin_dir:
        os.makedirs(cubin_dir, exist_ok=True)
    work = [(v, a, cubin_dir) for a in archs for v in selected]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_analyse_job, work))
    else:
        results = [_analyse_job(w) for w in work]
    return {(name if arch == 90 else f"{name}-sm{arch}"): rec for name, arch, rec in results}


def summary_table(report: Dict[str, dict]) -> str:
    """Markdown: per family, the hot-path range and worst ceiling."""
    fams: Dict[Tuple[str, str], List[dict]] = {}
    for rec in report.values():
        if "error" not in rec:
            fams.setdefault((rec["family"], rec["arch"]), []).append(rec)
    lines = [
        "| family | arch | variants | hot instr/elem (min–max) | regs (max) | local | LDG / STG bytes "
        "| H100 % | H200 % |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for (fam, arch), recs in sorted(fams.items()):
        n = [r["hot_instr_per_element"] for r in recs]
        ld = sorted({w for r in recs for w in r["global_load_bytes"]})
        st = sorted({w for r in recs for w in r["global_store_bytes"]})
        lines.append(
            f"| {fam} | {arch} | {len(recs)} | {min(n):.1f}–{max(n):.1f} | {max(r['registers'] for r in recs)} "
            f"| {max(r['local_bytes'] + r['local_memory_instr_hot'] for r in recs)} | {ld} / {st} "
            f"| {min(r['ceiling_pct_H100'] for r in recs):.0f} | {min(r['ceiling_pct_H200'] for r in recs):.0f} |"
        )
    return "\n".join(lines)


def _main(args) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        env = {k: val for k, val in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "fastlangevin.kernel_budget", *sys.argv[2:]], env=env)
    selected = [v for v in variants() if (v.core or not args.subset) and all(s in v.name for s in args.match or [])]
    if not selected:
        print("no variant matches", file=sys.stderr)
        return 2
    archs = tuple(int(a) for a in args.arch.split(","))
    report = run(selected, archs, args.cubin_dir, args.jobs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    errors = {k: r["error"] for k, r in report.items() if "error" in r}
    if args.verbose:
        for name, rec in report.items():
            if "error" not in rec:
                print(
                    f"{name:48s} {rec['hot_instr_per_element']:6.1f} instr/elem  regs {rec['registers']:3d}  "
                    f"local {rec['local_bytes']}  LDG {rec['global_load_bytes']} STG {rec['global_store_bytes']}  "
                    f"H100 {rec['ceiling_pct_H100']:.0f}%  H200 {rec['ceiling_pct_H200']:.0f}%"
                )
    print(summary_table(report))
    for name, err in errors.items():
        print(f"FAILED {name}: {err}", file=sys.stderr)
    return 1 if errors else 0


def add_parser(sub) -> None:
    p = sub.add_parser("kernels", help="compile every kernel variant offline and report its instruction budget")
    _add_arguments(p)
    p.set_defaults(func=_main)


def _add_arguments(p) -> None:
    p.add_argument("--json", metavar="FILE", help="write variant -> record as JSON")
    p.add_argument("--cubin-dir", metavar="DIR", help="keep DIR/<variant>.cubin")
    p.add_argument("--arch", default="90", help="comma-separated sm numbers (default 90; e.g. 80,90)")
    p.add_argument("--subset", action="store_true", help="only the quick subset CI compiles")
    p.add_argument("--match", action="append", help="only variants whose name contains this (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per variant")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="fastlangevin kernels")
    _add_arguments(parser)
    sys.argv.insert(1, "kernels")  # so sys.argv[2:] are the options, as under the CLI
    sys.exit(_main(parser.parse_args(sys.argv[2:])))

#!/usr/bin/env bash
# Everything the issues ask of a lent NVIDIA GPU, in one command (≈ 20 min on an H100):
#
#   bash bench/gpu_session.sh [OUT_DIR]        (default: bench/results/gpu-<date>)
#
# 1. the whole test suite on the GPU (compiled Triton kernels, CUDA tests un-skipped);
# 2. issue 2: the fused step vs the textbook expression and the copy bandwidth at 2^28
#    elements, fp32 and bf16, in and out of place;
# 3. issue 5: the full step report 2^16..2^28 (+ JSON and plot), corrector, DSM, annealed;
# 4. issue 3: DSM loss forward+backward time and peak memory at B=128, D=3·64·64;
# 5. issue 4: annealed Langevin steps/s with a small MLP, with and without CUDA graphs;
# 6. a profile of the annealed sampler (Chrome trace + kernel table).
#
# Each part writes its raw output under OUT_DIR and a failing part does not stop the others;
# the exit status counts the failed parts. Commit OUT_DIR afterwards.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/gpu-$(date -u +%Y%m%d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
failed=0

part() {  # part NAME CMD...: run, tee the log, count failures
    local name=$1
    shift
    echo "=== $name: $*" | tee "$OUT/$name.log"
    if ! "$@" 2>&1 | tee -a "$OUT/$name.log"; then
        echo "=== $name FAILED" | tee -a "$OUT/$name.log"
        failed=$((failed + 1))
    fi
}
set -o pipefail

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} >"$OUT/environment.txt" 2>&1

part tests python3 -m pytest -q -x -p no:cacheprovider
part step_2e28 python3 -m fastlangevin bench --workloads langevin_step --sizes 28 --dtypes fp32,bf16 --modes out,inplace \
    --providers triton,torch,eager,eager_inplace,compile,torchebm_fused --json "$OUT/step_2e28.json"
part step_sweep python3 -m fastlangevin bench --workloads langevin_step --sizes 16:28:2 --dtypes fp32,bf16 --modes inplace \
    --providers triton,eager,eager_inplace,compile --json "$OUT/step_sweep.json" --plot "$OUT/step_sweep.png"
part corrector python3 -m fastlangevin bench --workloads corrector --sizes 20,24,26 --dtypes fp32,bf16 --json "$OUT/corrector.json"
part dsm_report python3 -m fastlangevin bench --workloads dsm --json "$OUT/dsm_report.json"
part annealed_report python3 -m fastlangevin bench --workloads annealed --json "$OUT/annealed_report.json"
part dsm python3 bench/bench_dsm.py --device cuda --batch 128 --shape 3,64,64 --dtypes fp32,bf16 --out "$OUT/dsm_b128_3x64x64.json"
part samplers python3 bench/bench_samplers.py --device cuda --batch 4096 --out "$OUT/samplers.json"
part profile python3 -m fastlangevin profile --sampler annealed --n 4096 --dim 3072 --steps 20 --trace "$OUT/annealed_trace.json"

echo "failed parts: $failed (logs in $OUT)"
exit "$failed"

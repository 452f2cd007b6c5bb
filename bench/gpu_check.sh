#!/usr/bin/env bash
# GPU truth in one prepared run (issue 13): <= 8 minutes wall on one H200, install included.
#
#   bash bench/gpu_check.sh OUTDIR [--dry-run]
#
# Time limits (s): install 40, tests 110, kernels 20, step 70+70, dsm 45, sampler 55, host 30, profile 35 = 475.
# Sections, most important first, each time-boxed with `timeout` (a slow one cannot eat the rest) and
# each writing its raw output (log + JSON) into OUTDIR as it finishes, plus one line in OUTDIR/summary.md:
#   0 install   python3 -m pip install --no-deps --no-build-isolation -e .  (no network on the device), and a
#               torchebm wheel when one is carried in bench/wheels/ or shared/
#   1 tests     the GPU-relevant tests with compiled kernels (ids/markers matching cuda or gpu), capped
#   2 step      fused step at 2^28, fp32+bf16, in and out of place: time, GB/s, % of copy (same run) vs
#               textbook, hand-written eager, torch.compile (warm-up apart), torchebm when installed;
#               the predicted ceiling from `fastlangevin kernels --json` beside it (n/a when absent)
#   3 dsm       DSM fwd+bwd time and CUDA peak memory vs the naive loss, fp32+bf16
#   4 sampler   annealed Langevin, small MLP, batch 4096, 2-D and 3x32x32, with/without cuda_graph vs naive
#   5 host      host us per call, 256x2 CUDA state (fused op vs textbook), and a `fastlangevin profile` trace
# --dry-run: every section at tiny sizes on the CPU (Triton under its interpreter), no install, the
# tests only collected; tests/test_gpu_check.py runs it in CI so the script cannot rot.
# The exit status counts the sections that failed or ran out of time.
set -u
OUT=${1:?usage: bash bench/gpu_check.sh OUTDIR [--dry-run]}
DRY=0
[ "${2:-}" = "--dry-run" ] && DRY=1
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
FL="$PY -m fastlangevin"
T0=$(date +%s)
failed=0
SUM="$OUT/summary.md"
printf '# gpu_check %s\n\n| section | status | seconds | limit |\n|---|---|---:|---:|\n' "$(date -u +%FT%TZ)" >"$SUM"

section() { # section NAME LIMIT_S CMD...: run time-boxed, log to OUTDIR/NAME.log, one summary line
    local name=$1 limit=$2 t rc status
    shift 2
    t=$(date +%s)
    echo "=== $name (limit ${limit}s): $*" | tee "$OUT/$name.log"
    timeout -k 5 "$limit" "$@" >>"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT" ;;
    *) status="FAILED (exit $rc)" ;;
    esac
    [ $rc -ne 0 ] && failed=$((failed + 1))
    echo "| $name | $status | $(($(date +%s) - t)) | $limit |" >>"$SUM"
    echo "=== $name: $status after $(($(date +%s) - t)) s" | tee -a "$OUT/$name.log"
}

if [ $DRY -eq 1 ]; then
    DEV=(--device cpu --interpret)
    TIMING=(--rep-ms 5 --warmup-ms 1 --min-reps 2)
    STEP=(--sizes 10 --providers triton,torch,eager,eager_inplace,torchebm_fused)
    DSM=(--shapes 4x256 --dtypes fp32 --providers triton,torch,naive)
    SAMPLER=(--shapes 64x2 --param steps=10 --providers naive,torch,triton_graph)  # the interpreter: too slow here
    HOST_DEV=cpu
    PROFILE=(--device cpu --n 64 --dim 2 --steps 4)
    export TRITON_INTERPRET=1
else
    DEV=(--device cuda)
    TIMING=(--rep-ms 50 --warmup-ms 10)
    STEP=(--sizes 28 --providers triton,eager,eager_inplace,compile,torchebm_fused)
    DSM=(--shapes 128x3x64x64,4096x3072 --dtypes fp32,bf16 --providers triton,torch,naive)
    SAMPLER=(--shapes 4096x2,4096x3072 --param steps=50 --providers naive,triton,triton_graph)
    HOST_DEV=cuda
    PROFILE=(--device cuda --n 4096 --dim 3072 --steps 20)
    unset TRITON_INTERPRET
fi

{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} >"$OUT/environment.txt" 2>&1

if [ $DRY -eq 0 ]; then
    section install 40 $PY -m pip install -q --no-deps --no-build-isolation -e .
    WHEEL=$(ls bench/wheels/torchebm*.whl shared/torchebm*.whl 2>/dev/null | head -n 1)
    [ -n "$WHEEL" ] && section torchebm 20 $PY -m pip install -q --no-deps "$WHEEL" # its fused step, when carried
fi

TESTS=(tests/test_langevin_step.py tests/test_corrector.py tests/test_dsm.py tests/test_samplers.py tests/test_gpu_compile.py)
if [ $DRY -eq 1 ]; then
    section tests 60 $PY -m pytest -q -p no:cacheprovider --co "${TESTS[@]}" -k "cuda or gpu"
else
    section tests 110 $PY -m pytest -q -p no:cacheprovider --maxfail=5 --junitxml="$OUT/tests.xml" "${TESTS[@]}" -k "cuda or gpu"
fi

if timeout 20 $FL kernels --help >/dev/null 2>&1; then
    timeout 20 $FL kernels --json >"$OUT/kernels.json" 2>"$OUT/kernels.log" || echo '"n/a: fastlangevin kernels --json failed"' >"$OUT/kernels.json"
else
    echo '"n/a: this build has no fastlangevin kernels command"' >"$OUT/kernels.json"
fi
for dt in fp32 bf16; do # one section per dtype: a slow torch.compile warm-up costs at most half of the step figures
    [ $DRY -eq 1 ] && [ $dt = bf16 ] && continue
    section step_$dt 70 $FL bench "${DEV[@]}" "${TIMING[@]}" --workloads langevin_step --modes out,inplace \
        --dtypes $dt "${STEP[@]}" --json "$OUT/step_$dt.json"
done
section dsm 45 $FL bench "${DEV[@]}" "${TIMING[@]}" --workloads dsm "${DSM[@]}" --json "$OUT/dsm.json"
section sampler 55 $FL bench "${DEV[@]}" "${TIMING[@]}" --workloads sampler --dtypes fp32 --param sampler=annealed \
    "${SAMPLER[@]}" --json "$OUT/sampler.json"
section host 30 $PY - "$HOST_DEV" "$OUT/host.json" <<'EOF'
# host time per call: many calls on a 256x2 state without a sync in between, then one sync
import json, sys, time
import torch
import fastlangevin as fl
dev, path = torch.device(sys.argv[1]), sys.argv[2]
x, s = torch.randn(256, 2, device=dev), torch.randn(256, 2, device=dev)
calls = {"langevin_step_": lambda: fl.langevin_step_(x, s, 1e-3),
         "textbook": lambda: x + 1e-3 * s + (2e-3) ** 0.5 * torch.randn_like(x)}
res = {"device": str(dev), "backend": fl.backend_for(x), "n": 2000}
for name, f in calls.items():
    for _ in range(200):
        f()
    torch.cuda.synchronize() if dev.type == "cuda" else None
    t0 = time.perf_counter()
    for _ in range(res["n"]):
        f()
    t1 = time.perf_counter()
    torch.cuda.synchronize() if dev.type == "cuda" else None
    res[name] = {"host_us_per_call": (t1 - t0) / res["n"] * 1e6, "wall_us_per_call": (time.perf_counter() - t0) / res["n"] * 1e6}
    print(f"{name:16s} host {res[name]['host_us_per_call']:8.2f} us/call (target <= 15)  wall {res[name]['wall_us_per_call']:8.2f}")
json.dump(res, open(path, "w"), indent=1)
EOF
section profile 35 $FL profile --sampler annealed "${PROFILE[@]}" --trace "$OUT/trace.json" \
    --json "$OUT/profile.json"

{
    echo
    echo "total $(($(date +%s) - T0)) s; $failed section(s) failed or timed out; dry run: $DRY"
    for name in step_fp32 step_bf16 dsm sampler; do
        [ -f "$OUT/$name.log" ] || continue
        echo
        echo "## $name"
        echo '```'
        grep -A200 "^speed-ups of fastlangevin" "$OUT/$name.log" | head -40
        grep -E "^  copy|^  [a-z_]+ +[0-9.]+ +\[|REJECTED|ERROR|skipped|memory|warm-up" "$OUT/$name.log" | head -60
        echo '```'
    done
    echo
    echo "## predicted ceilings (fastlangevin kernels --json)"
    echo '```'
    head -c 3000 "$OUT/kernels.json"
    echo
    echo '```'
    echo
    echo "## host and profile"
    echo '```'
    grep -E "us/call" "$OUT/host.log"
    grep -A12 "^phases" "$OUT/profile.log"
    echo '```'
} >>"$SUM"
echo "wrote $OUT (summary: $SUM); $failed section(s) failed"
exit $failed

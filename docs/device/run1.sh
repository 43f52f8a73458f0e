#!/bin/bash
# GPU machine, call 1 (no CIFAR needed). Parts, all by default, or those named:
#   tests  tests/cuda.rs (with the fixtures), as built (the NVRTC-compiled multi-tensor SGD and
#          fused loss on, the default since run 8) and with LAYERZERO_SGD_MULTI=0
#          LAYERZERO_FUSED_LOSS=0 (the per-parameter cuDNN step and candle's loss ops)
#   sgd    sgdbench: the optimiser step alone, cuDNN calls per parameter against the
#          multi-tensor kernel, at depths 20 and 56
#   alloc  allocbench: a step's allocations, frees and synchronisation, as built and with the
#          defaults open_cuda changes restored (LAYERZERO_CUDA_EVENTS=1 LAYERZERO_CUDA_POOL_RELEASE=1)
#   fp32   `xtask bench --device cuda` against the PyTorch peer with NVIDIA_TF32_OVERRIDE=0 (fp32
#          on both sides), depths 20 and 56, each three ways back to back: as built (open_cuda:
#          cudarc's event tracking off, the memory pool kept; the multi-tensor SGD kernel and the
#          fused loss), "off" (LAYERZERO_SGD_MULTI=0 LAYERZERO_FUSED_LOSS=0: without those two
#          kernels) and "before" (LAYERZERO_CUDA_EVENTS=1 LAYERZERO_CUDA_POOL_RELEASE=1: the
#          device opened as until stop 22); R20_ROUNDS and R56_ROUNDS override the rounds (6
#          and 4), VARIANTS picks and orders the three ways ("built off before" by default)
#   tf32   the same benches as built, PyTorch with its default TF32 convolutions
# Results and logs go to $OUT (all parts write 11 files and a call brings back at most 8: tar
# them at the end of the command, as run 8 did). Each bench has 200 s; if the call's limit is too short for all
# parts, run them over two calls (`… run1.sh tests sgd alloc fp32`, then `… run1.sh tf32`).
#   run: bash .dev1/run1.sh [PART…] 2>&1 | tee $OUT/run1.log     (carry: .dev1)
H=$(cd "$(dirname "$0")" && pwd)
source "$H/env.sh"
unpack "$H"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
PARTS=${*:-tests sgd alloc fp32 tf32}
t0=$(date +%s)
bench() { # name, then xtask bench arguments
  local n=$1; shift
  echo "== bench $n ($(( $(date +%s) - t0 )) s)"
  timeout 200 /root/bin/xtask bench --device cuda --threads 16 --peer "$H/pytorch_peer.py" \
    --out "$OUT/bench-$n.json" "$@" 2>&1 | tail -12
}
for part in $PARTS; do
  case $part in
  tests)
    echo "== cuda tests"
    LAYERZERO_FIXTURES=$H/fixtures timeout 150 /root/bin/cuda-test > "$OUT/cuda-tests.log" 2>&1
    echo "rc=$?"
    grep -E "^test |test result|panicked" "$OUT/cuda-tests.log" | head -40
    # Again with the per-parameter cuDNN optimiser step and candle's loss ops (the paths the
    # two switches turn back on; training tests included).
    echo "== cuda tests, LAYERZERO_SGD_MULTI=0 LAYERZERO_FUSED_LOSS=0"
    LAYERZERO_SGD_MULTI=0 LAYERZERO_FUSED_LOSS=0 LAYERZERO_FIXTURES=$H/fixtures \
      timeout 150 /root/bin/cuda-test \
      > "$OUT/cuda-tests-off.log" 2>&1
    echo "rc=$?"
    grep -E "test result|panicked|FAILED" "$OUT/cuda-tests-off.log" | head -20
    ;;
  sgd)
    echo "== sgdbench ($(( $(date +%s) - t0 )) s)"
    timeout 60 /root/bin/sgdbench --depth 20
    timeout 60 /root/bin/sgdbench --depth 56
    ;;
  alloc)
    echo "== allocbench ($(( $(date +%s) - t0 )) s)"
    for i in 1 2; do
      timeout 60 /root/bin/allocbench
      LAYERZERO_CUDA_EVENTS=1 LAYERZERO_CUDA_POOL_RELEASE=1 timeout 60 /root/bin/allocbench
    done
    ;;
  fp32)
    export NVIDIA_TF32_OVERRIDE=0
    for d in 20 56; do
      r=$([ $d = 20 ] && echo "${R20_ROUNDS:-6}" || echo "${R56_ROUNDS:-4}")
      for v in ${VARIANTS:-built off before}; do
        case $v in
        built) bench r$d-notf32 --depth $d --rounds $r ;;
        before) LAYERZERO_CUDA_EVENTS=1 LAYERZERO_CUDA_POOL_RELEASE=1 \
          bench r$d-notf32-before --depth $d --rounds $r ;;
        off) LAYERZERO_SGD_MULTI=0 LAYERZERO_FUSED_LOSS=0 \
          bench r$d-notf32-off --depth $d --rounds $r ;;
        *) echo "unknown variant $v (built, off, before)" ;;
        esac
      done
    done
    unset NVIDIA_TF32_OVERRIDE
    ;;
  tf32)
    bench r20 --depth 20 --rounds 6
    bench r56 --depth 56 --rounds 4
    ;;
  *) echo "unknown part $part (tests, sgd, alloc, fp32, tf32)" ;;
  esac
done
echo "== done ($(( $(date +%s) - t0 )) s)"

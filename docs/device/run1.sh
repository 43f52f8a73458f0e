#!/bin/bash
# GPU machine, call 1 (no CIFAR needed). Parts, all by default, or those named:
#   tests  tests/cuda.rs (with the fixtures), as built and with LAYERZERO_SGD_MULTI=1
#          LAYERZERO_FUSED_LOSS=1 (both NVRTC-compiled kernels in the training tests)
#   sgd    sgdbench: the optimiser step alone, cuDNN calls per parameter against the
#          multi-tensor kernel, at depths 20 and 56
#   alloc  allocbench: a step's allocations, frees and synchronisation, as built and with the
#          defaults open_cuda changes restored (LAYERZERO_CUDA_EVENTS=1 LAYERZERO_CUDA_POOL_RELEASE=1)
#   fp32   `xtask bench --device cuda` against the PyTorch peer with NVIDIA_TF32_OVERRIDE=0 (fp32
#          on both sides), depths 20 and 56, each three ways back to back: as built (open_cuda:
#          cudarc's event tracking off, the memory pool kept), "before" (LAYERZERO_CUDA_EVENTS=1
#          LAYERZERO_CUDA_POOL_RELEASE=1: both as they were until stop 22), and
#          LAYERZERO_SGD_MULTI=1 LAYERZERO_FUSED_LOSS=1 (the multi-tensor SGD kernel and the
#          fused loss together)
#   tf32   the same benches as built, PyTorch with its default TF32 convolutions
# Results and logs go to $OUT. Each bench has 200 s; if the call's limit is too short for all
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
    # Again with the multi-tensor SGD kernel in every optimiser step and the fused loss in
    # every training step (training tests included).
    echo "== cuda tests, LAYERZERO_SGD_MULTI=1 LAYERZERO_FUSED_LOSS=1"
    LAYERZERO_SGD_MULTI=1 LAYERZERO_FUSED_LOSS=1 LAYERZERO_FIXTURES=$H/fixtures \
      timeout 150 /root/bin/cuda-test \
      > "$OUT/cuda-tests-multi.log" 2>&1
    echo "rc=$?"
    grep -E "test result|panicked|FAILED" "$OUT/cuda-tests-multi.log" | head -20
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
      r=$([ $d = 20 ] && echo 6 || echo 4)
      bench r$d-notf32 --depth $d --rounds $r
      LAYERZERO_CUDA_EVENTS=1 LAYERZERO_CUDA_POOL_RELEASE=1 \
        bench r$d-notf32-before --depth $d --rounds $r
      LAYERZERO_SGD_MULTI=1 LAYERZERO_FUSED_LOSS=1 bench r$d-notf32-multi --depth $d --rounds $r
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

#!/bin/bash
# GPU machine, call 1 (no CIFAR needed): tests/cuda.rs, then `xtask bench --device cuda` against
# the PyTorch peer at depths 20 and 56, with PyTorch's default TF32 convolutions and with
# NVIDIA_TF32_OVERRIDE=0 (fp32 on both sides), the fp32 ones also with LAYERZERO_SGD_MULTI=1;
# and the optimiser step alone (sgdbench: cuDNN calls per parameter against the multi-tensor
# kernel). Results and logs go to $OUT.
#   run: bash .dev1/run1.sh 2>&1 | tee $OUT/run1.log     (carry: .dev1)
H=$(cd "$(dirname "$0")" && pwd)
source "$H/env.sh"
unpack "$H"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
t0=$(date +%s)
echo "== cuda tests"
LAYERZERO_FIXTURES=$H/fixtures timeout 150 /root/bin/cuda-test > "$OUT/cuda-tests.log" 2>&1
echo "rc=$?"
grep -E "^test |test result|panicked" "$OUT/cuda-tests.log" | head -40
bench() { # name, then xtask bench arguments
  local n=$1; shift
  echo "== bench $n ($(( $(date +%s) - t0 )) s)"
  timeout 200 /root/bin/xtask bench --device cuda --threads 16 --peer "$H/pytorch_peer.py" \
    --out "$OUT/bench-$n.json" "$@" 2>&1 | tail -12
}
# The optimiser step alone first, then each fp32 training bench without and with the
# multi-tensor SGD kernel back to back (the A/B that decides its default), then PyTorch's TF32.
echo "== sgdbench ($(( $(date +%s) - t0 )) s)"
timeout 60 /root/bin/sgdbench --depth 20
timeout 60 /root/bin/sgdbench --depth 56
NVIDIA_TF32_OVERRIDE=0 bench r20-notf32 --depth 20 --rounds 6
LAYERZERO_SGD_MULTI=1 NVIDIA_TF32_OVERRIDE=0 bench r20-notf32-multi --depth 20 --rounds 6
NVIDIA_TF32_OVERRIDE=0 bench r56-notf32 --depth 56 --rounds 4
LAYERZERO_SGD_MULTI=1 NVIDIA_TF32_OVERRIDE=0 bench r56-notf32-multi --depth 56 --rounds 4
bench r20 --depth 20 --rounds 6
bench r56 --depth 56 --rounds 4
echo "== done ($(( $(date +%s) - t0 )) s)"

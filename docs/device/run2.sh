#!/bin/bash
# GPU machine, call 2: `paper`-profile epochs of ResNet-20 with the GPU default readback (every
# 32 steps) and with --readback-steps 1, then of ResNet-56, then `xtask reproduce --profile smoke
# --device cuda`. The training set is data_batch_1 copied five times, which costs what the real
# one does per epoch but is not the real one: the epoch times count, the accuracies do not.
#   run: bash .dev2/run2.sh 2>&1 | tee $OUT/run2.log     (carry: .dev2)
H=$(cd "$(dirname "$0")" && pwd)
source "$H/env.sh"
[ -x /root/bin/layerzero ] || unpack "$H"
batch1x5_cifar "$H" || exit 1
# A rerun on a warm machine starts afresh: `layerzero train` refuses a folder that holds a run.
rm -rf /root/runs/r20-readback32 /root/runs/r20-readback1 /root/runs/r56-readback32 /root/runs/smoke
t0=$(date +%s)
train() { # name, then layerzero train arguments
  local n=$1; shift
  echo "== $n ($(( $(date +%s) - t0 )) s)"
  timeout 300 /root/bin/layerzero train --profile paper --device cuda --threads 16 \
    --data-dir /root/cifar --out "/root/runs/$n" "$@" 2>&1 | grep -E "epoch|stopped|device" | tail -5
  cp "/root/runs/$n/metrics.jsonl" "$OUT/$n.metrics.jsonl"
}
train r20-readback32 --arch resnet20 --max-epochs 4
train r20-readback1 --arch resnet20 --max-epochs 4 --readback-steps 1
train r56-readback32 --arch resnet56 --max-epochs "${R56_EPOCHS:-6}"
echo "== reproduce smoke ($(( $(date +%s) - t0 )) s)"
timeout 200 /root/bin/xtask reproduce --profile smoke --device cuda --threads 16 \
  --data-dir /root/cifar --out /root/runs/smoke 2>&1 | tail -15
echo "== done ($(( $(date +%s) - t0 )) s)"

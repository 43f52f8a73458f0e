#!/bin/bash
# GPU machine, call 3 (carry: .dev2, after pack.sh): a `paper`-profile ResNet-20 run on CUDA
# stopped after 2 of 3 epochs and resumed (`--resume`), against the same 3 epochs uninterrupted;
# then `layerzero eval` of the resumed run's weights on CUDA and on the CPU. The training set is
# data_batch_1 five times, as in run2.sh, so the accuracies mean nothing: what counts is that the
# resume finishes and that the two devices' evaluations agree. The two GPU runs need not match
# (GPU training is not bit-reproducible; docs/cuda.md, run 8).
#   run: bash .dev2/run3.sh 2>&1 | tee $OUT/run3.log     (carry: .dev2)
H=$(cd "$(dirname "$0")" && pwd)
source "$H/env.sh"
[ -x /root/bin/layerzero ] || unpack "$H"
batch1x5_cifar "$H" || exit 1
# A rerun on a warm machine starts afresh: `layerzero train` refuses a folder that holds a run.
rm -rf /root/runs/resumed /root/runs/straight
t0=$(date +%s)
train() { # run folder, then layerzero train arguments
  local n=$1; shift
  echo "== train $n $* ($(( $(date +%s) - t0 )) s)"
  timeout 120 /root/bin/layerzero train --profile paper --arch resnet20 --epochs 3 --device cuda \
    --threads 16 --data-dir /root/cifar --out "/root/runs/$n" "$@" 2>&1 | grep -E "epoch|stopped|resum|rror" | tail -5
}
train resumed --max-epochs 2
ls /root/runs/resumed /root/runs/resumed/checkpoints
train resumed --resume
train straight
for n in resumed straight; do
  echo "-- $n"; cut -c1-220 "/root/runs/$n/metrics.jsonl"
  cp "/root/runs/$n/metrics.jsonl" "$OUT/$n.metrics.jsonl"
done
for dev in cuda cpu; do
  echo "== eval on $dev ($(( $(date +%s) - t0 )) s)"
  timeout 60 /root/bin/layerzero eval --weights /root/runs/resumed/weights.safetensors \
    --device $dev --threads 16 --data-dir /root/cifar --json
done
echo "== done ($(( $(date +%s) - t0 )) s)"

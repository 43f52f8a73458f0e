#!/bin/bash
# Packs a `paper`-profile run on the real CIFAR-10 for a borrowed GPU machine (docs/cuda.md,
# "Runs 6 and 7", the bullet "How the ResNet-56 paper run can be done"): the training set is too big for one call (64 MiB), so three calls
# to the same warm machine carry it, in .devA/, .devB/ and .devC/ at the repository root
# (git-ignored through .git/info/exclude):
#   .devA/  `layerzero` (stripped, xz) and data_batch_1, _2      call: bash .devA/data.sh
#   .devB/  data_batch_3, _4                                     call: bash .devB/data.sh
#   .devC/  data_batch_5, test_batch, the SHA-256 sums, paper.sh, and RUN_DIR's files to resume
#           from, if given                                       call: bash .devC/paper.sh start …
# Each data file is xz with a delta filter (21.6 MB of 30.7).
#
#   source /work/cuda-site/env.sh      # from toolkit.sh; then the cuDNN build (pack.sh says how)
#   docs/device/pack-paper.sh /work/cifar-x/cifar-10-batches-bin [RUN_DIR]
set -euo pipefail
CIFAR=${1:?usage: pack-paper.sh CIFAR_BATCHES_DIR [RUN_DIR]}
RUN=${2:-}
ROOT=$(git rev-parse --show-toplevel)
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
cd "$ROOT"
source docs/device/common.sh
exclude_and_reset .devA .devB .devC
for d in .devA .devB .devC; do cp docs/device/env.sh docs/device/data.sh "$d/"; done
pack_binary layerzero "$T/layerzero" .devA
pack_cifar "$CIFAR" data_batch_1.bin .devA; pack_cifar "$CIFAR" data_batch_2.bin .devA
pack_cifar "$CIFAR" data_batch_3.bin .devB; pack_cifar "$CIFAR" data_batch_4.bin .devB
pack_cifar "$CIFAR" data_batch_5.bin .devC; pack_cifar "$CIFAR" test_batch.bin .devC
(cd "$CIFAR" && sha256sum data_batch_{1,2,3,4,5}.bin test_batch.bin) > .devC/SHA256SUMS
cp "$CIFAR/batches.meta.txt" docs/device/paper.sh .devC/
if [ -n "$RUN" ]; then
  # What a resume needs: the configuration, the metrics so far, the initial weights, and the
  # epoch-0 and latest checkpoints (the re-initialisation ablations read epoch 0).
  mkdir -p .devC/run/checkpoints
  cp "$RUN/config.json" "$RUN/metrics.jsonl" "$RUN/init.safetensors" .devC/run/
  last=$(ls "$RUN"/checkpoints/epoch-*.safetensors | sort | tail -1)
  cp "$RUN/checkpoints/epoch-000.safetensors" "$last" .devC/run/checkpoints/
fi
du -sh .devA .devB .devC

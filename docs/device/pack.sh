#!/bin/bash
# Packs what two calls to a borrowed GPU machine carry (docs/cuda.md, "What the next GPU session
# should run first"), into .dev1/ and .dev2/ at the repository root (git-ignored through
# .git/info/exclude). A call carries at most 64 MiB, so:
#   .dev1/  the stripped, xz-compressed `layerzero`, `xtask`, tests/cuda.rs, sgdbench and allocbench binaries, the
#           PyTorch fixtures and peer, run1.sh (tests and benchmarks, no CIFAR needed);
#   .dev2/  `layerzero` and `xtask` again, data_batch_1 and test_batch of CIFAR-10 (xz with a
#           delta filter), run2.sh (paper-profile epochs, the smoke study) and run3.sh (a
#           resumed run and `eval` on the GPU and the CPU).
#
#   source /work/cuda-site/env.sh   # from toolkit.sh
#   cargo build --release -p layerzero-cli -p xtask --features layerzero-cli/cudnn,xtask/cudnn
#   cargo test --release -p layerzero-e2e --features layerzero-e2e/cudnn --test cuda --no-run
#   cargo build --release -p layerzero-kernels --features cudnn --example sgdbench --example allocbench
#   docs/device/pack.sh /work/cifar-x/cifar-10-batches-bin ../shared
set -euo pipefail
CIFAR=${1:?usage: pack.sh CIFAR_BATCHES_DIR SHARED_DIR}
SHARED=${2:?usage: pack.sh CIFAR_BATCHES_DIR SHARED_DIR}
ROOT=$(git rev-parse --show-toplevel)
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
cd "$ROOT"
source docs/device/common.sh
exclude_and_reset .dev1 .dev2
mkdir -p .dev1/fixtures
TEST=$(ls -t "$T"/deps/cuda-* | grep -v '\.d$' | head -1)
pack_binary layerzero "$T/layerzero" .dev1
pack_binary xtask "$T/xtask" .dev1
pack_binary cuda-test "$TEST" .dev1
pack_binary sgdbench "$T/examples/sgdbench" .dev1
pack_binary allocbench "$T/examples/allocbench" .dev1
cp "$SHARED"/fixtures/*.safetensors "$SHARED"/fixtures/README.md .dev1/fixtures/
cp "$SHARED"/bench/pytorch_peer.py .dev1/
cp docs/device/env.sh docs/device/run1.sh .dev1/
ln .dev1/layerzero.xz .dev1/xtask.xz .dev2/
for f in data_batch_1.bin test_batch.bin; do pack_cifar "$CIFAR" "$f" .dev2; done
(cd "$CIFAR" && sha256sum data_batch_1.bin test_batch.bin) > .dev2/SHA256SUMS
cp "$CIFAR/batches.meta.txt" docs/device/env.sh docs/device/run2.sh docs/device/run3.sh .dev2/
du -sh .dev1 .dev2

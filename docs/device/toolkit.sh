#!/bin/bash
# Puts a CUDA 13.0 toolkit and cuDNN 9 together from PyPI wheels on a machine without a GPU, so
# that the `cuda`/`cudnn` builds link there (docs/cuda.md, "Building without a GPU"), and writes
# an environment file to source before `cargo build`.
#
#   docs/device/toolkit.sh /work/cuda-site        # then: source /work/cuda-site/env.sh
#
# The driver's libcuda is replaced by a stub that only carries the names cudarc links against;
# the real one comes from the driver on the GPU machine.
set -euo pipefail
DEST=${1:?usage: toolkit.sh DEST}
mkdir -p "$DEST/wheels"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$DEST/wheels" \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
  nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 \
  nvidia-cuda-nvrtc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cudnn-cu13==9.19.0.56
(cd "$DEST" && for w in wheels/*.whl; do unzip -q -o "$w"; done)
TK=$DEST/nvidia/cu13
ln -sfn lib "$TK/lib64"
(cd "$TK/lib" && for f in *.so.*; do b=${f%%.so.*}.so; [ -e "$b" ] || ln -s "$f" "$b"; done)
ln -sf "$DEST/nvidia/cudnn/lib/libcudnn.so.9" "$TK/lib/libcudnn.so"
# The stub libcuda: every driver function cudarc declares, as an empty symbol (run from the
# repository, so that `cargo fetch` brings cudarc's sources).
cargo fetch -q
SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -1)
mkdir -p "$TK/lib/stubs"
grep -ohE "fn cu[A-Z][A-Za-z0-9_]*" "$SYS" | sort -u | sed 's/^fn \(.*\)/void \1(void){}/' > "$TK/lib/stubs/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TK/lib/stubs/libcuda.so" "$TK/lib/stubs/cuda_stub.c"
cat > "$DEST/env.sh" <<ENV
export CUDA_ROOT=$TK CUDA_HOME=$TK PATH=$TK/bin:\$PATH CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
export RUSTFLAGS="-L $TK/lib/stubs -L $TK/lib"
# A target folder of its own, so that the CPU build's artefacts are not rebuilt each time.
export CARGO_TARGET_DIR=\${CUDA_TARGET_DIR:-$DEST/target}
ENV
echo "toolkit in $TK; source $DEST/env.sh before building"

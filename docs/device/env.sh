# Sourced by run1.sh, run2.sh, run3.sh, data.sh and paper.sh on the GPU machine: library paths
# for the layerzero CUDA binaries (the driver's folder first, then PyTorch's CUDA and cuDNN
# wheels, then the toolkit), `unpack DIR`, which puts DIR's *.xz binaries into /root/bin and
# names any library the loader cannot find, and `batch1x5_cifar DIR` (below). DIR: an absolute
# path (the scripts pass their own folder, `$H`).
NV=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])')
TKLIB=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")/lib64
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:$NV/cu13/lib:$NV/cudnn/lib:$TKLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
unpack() {
  mkdir -p /root/bin
  for f in "$1"/*.xz; do
    n=$(basename "$f" .xz)
    case $n in *.bin) continue ;; esac
    xz -dc "$f" > "/root/bin/$n" && chmod +x "/root/bin/$n"
  done
  for b in /root/bin/*; do ldd "$b" | grep "not found" && echo "MISSING LIBRARIES for $b"; done
  true
}

# batch1x5_cifar DIR (run2.sh, run3.sh): CIFAR-10 under /root/cifar from DIR's data_batch_1 and
# test_batch (xz), checked against DIR/SHA256SUMS, with data_batch_1 copied as batches 2 to 5:
# epochs that cost what real ones do, on 64 MiB of carried data.
batch1x5_cifar() {
  local D=/root/cifar/cifar-10-batches-bin
  mkdir -p $D
  xz -dc "$1/data_batch_1.bin.xz" > $D/data_batch_1.bin
  xz -dc "$1/test_batch.bin.xz" > $D/test_batch.bin
  (cd $D && sha256sum -c "$1/SHA256SUMS") || return 1
  for i in 2 3 4 5; do cp $D/data_batch_1.bin $D/data_batch_$i.bin; done
  cp "$1/batches.meta.txt" $D/
}

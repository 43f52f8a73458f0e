# Sourced by run1.sh and run2.sh on the GPU machine: library paths for the layerzero CUDA
# binaries (the driver's folder first, then PyTorch's CUDA and cuDNN wheels, then the toolkit),
# and `unpack DIR`, which puts DIR's *.xz binaries into /root/bin and names any library the
# loader cannot find.
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

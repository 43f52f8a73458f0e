#!/bin/bash
# GPU machine: unpacks this folder's CIFAR-10 files (and `layerzero`, if here) outside the
# repository, where they stay while the machine is held (a later call's folders replace this
# one's). Called by pack-paper.sh's calls A and B, and by paper.sh.
H=$(cd "$(dirname "$0")" && pwd)
D=/root/cifar/cifar-10-batches-bin
mkdir -p $D
for f in "$H"/*.bin.xz; do
  [ -e "$f" ] && xz -dc "$f" > "$D/$(basename "$f" .xz)"
done
if [ -f "$H/layerzero.xz" ]; then
  mkdir -p /root/bin && xz -dc "$H/layerzero.xz" > /root/bin/layerzero && chmod +x /root/bin/layerzero
fi
ls -la $D

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
# env.sh's `unpack` puts any packed binary (here `layerzero`) in /root/bin.
source "$H/env.sh"
unpack "$H"
ls -la $D

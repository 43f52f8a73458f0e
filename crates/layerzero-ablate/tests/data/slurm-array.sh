#!/bin/bash
# One zero-kernel study split over 8 array tasks: task K runs `layerzero ablate --shard K/8`.
# Submit with `sbatch slurm-array.sh`; merge afterwards (see scale-out.md).
#SBATCH --job-name=lz-ablate
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=logs/ablate-%A_%a.out
set -euo pipefail

N=8  # number of shards: must match --array=0-(N-1) above
if [ "${SLURM_ARRAY_TASK_COUNT:-$N}" != "$N" ]; then
    echo "array has ${SLURM_ARRAY_TASK_COUNT} tasks but N=$N" >&2
    exit 2
fi

OUT=results/resnet56-zero-kernel
mkdir -p "$OUT"
exec layerzero ablate \
    --arch resnet56 \
    --weights runs/resnet56/weights.safetensors \
    --data-dir data \
    --mode zero-kernel \
    --threads "$SLURM_CPUS_PER_TASK" \
    --shard "$SLURM_ARRAY_TASK_ID/$N" \
    --out "$OUT/part-$SLURM_ARRAY_TASK_ID.json"

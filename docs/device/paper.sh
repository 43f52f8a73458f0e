#!/bin/bash
# GPU machine, last call(s) of a `paper`-profile run (pack-paper.sh packs them):
#
#   bash .devC/paper.sh start WAIT_S [ARCH]   checks the six data files against their sums,
#       starts the training in a process session of its own (it outlives the call; resumed from
#       .devC/run if that is there), and waits up to WAIT_S seconds for it;
#   bash .devC/paper.sh wait WAIT_S [stop]    waits up to WAIT_S more seconds; with `stop`, then
#       stops the training (its last finished epoch is on disk, written atomically).
#
# Both end by copying what a resume in a later session needs, and the final weights when all
# epochs have run, to $OUT/run/. Choose WAIT_S so that the copy ends before the session's device
# time does: what is only on the machine is lost when it goes back. LZ_DEVICE (default cuda) and
# LZ_ARGS (more `layerzero train` options, e.g. `--max-epochs 1`) let it be tried on a CPU.
H=$(cd "$(dirname "$0")" && pwd)
RUN=/root/runs/paper
source "$H/env.sh"
collect() {
  mkdir -p "$OUT/run/checkpoints"
  cp $RUN/config.json $RUN/metrics.jsonl $RUN/init.safetensors $RUN/train.log "$OUT/run/"
  [ -f $RUN/weights.safetensors ] && cp $RUN/weights.safetensors "$OUT/run/"
  last=$(ls $RUN/checkpoints/epoch-*.safetensors | sort | tail -1)
  cp $RUN/checkpoints/epoch-000.safetensors "$last" "$OUT/run/checkpoints/"
  tail -2 $RUN/metrics.jsonl
}
wait_for() { # seconds
  local end=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt $end ] && kill -0 "$(cat $RUN/train.pid)" 2> /dev/null; do
    sleep 10
  done
  grep -E "^epoch" $RUN/train.log | tail -1
}
case ${1:?start or wait} in
start)
  bash "$H/data.sh" > /dev/null
  (cd /root/cifar/cifar-10-batches-bin && sha256sum -c "$H/SHA256SUMS") || exit 1
  cp "$H/batches.meta.txt" /root/cifar/cifar-10-batches-bin/
  resume=()
  if [ -d "$H/run" ] && [ ! -d $RUN ]; then
    mkdir -p /root/runs && cp -r "$H/run" $RUN && resume=(--resume)
  fi
  mkdir -p $RUN
  setsid nohup /root/bin/layerzero train --arch "${3:-resnet56}" --profile paper \
    --device "${LZ_DEVICE:-cuda}" --threads "${LZ_THREADS:-16}" --data-dir /root/cifar --out $RUN \
    "${resume[@]}" ${LZ_ARGS:-} >> $RUN/train.log 2>&1 < /dev/null &
  echo $! > $RUN/train.pid
  sleep 5
  head -3 $RUN/train.log
  wait_for "${2:?WAIT_S}"
  collect
  ;;
wait)
  wait_for "${2:?WAIT_S}"
  if [ "${3:-}" = stop ]; then
    kill "$(cat $RUN/train.pid)" 2> /dev/null
    sleep 2
  fi
  collect
  ;;
esac

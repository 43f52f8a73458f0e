#!/usr/bin/env bash
# Runs every fuzz target in turn until 1,000,000 inputs or 600 seconds, whichever comes first,
# from the binaries `cargo +nightly fuzz build -O --debug-assertions` leaves in
# target/x86_64-unknown-linux-gnu/release/. Logs and crash artifacts go under OUT (default
# ./out); the corpus grows in corpus/<target>/, starting from the seeds in seeds/<target>/.
# See docs/reliability.md.
set -u
cd "$(dirname "$0")"
bin=target/x86_64-unknown-linux-gnu/release
out="${OUT:-./out}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(cifar_record checkpoint_read results_json shard_merge weights_import archive_extract)
mkdir -p "$out"
for t in "${targets[@]}"; do
  mkdir -p "$out/$t" "corpus/$t"
  start=$(date +%s)
  "$bin/$t" "corpus/$t" "seeds/$t" -runs=1000000 -max_total_time=600 \
     -artifact_prefix="$out/$t/" -print_final_stats=1 >"$out/$t.log" 2>&1
  status=$?
  echo "$t: exit $status, $(( $(date +%s) - start )) s, $(grep -h stat::number_of_executed_units "$out/$t.log")" | tee -a "$out/summary.txt"
done

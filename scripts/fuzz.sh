#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan+fuzzer coverage) and
# runs each from its checked-in seed corpus (fuzz/corpus/<target>) for
# SECONDS seconds (default 60), the three side by side. New inputs go to a
# scratch directory, never into the repository; a crash leaves its input in
# build-fuzz/findings/ and fails the script.
#   usage: scripts/fuzz.sh [SECONDS] [target ...]   (targets: resp_parser event snapshot)
#   SECONDS 0 only builds them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
targets=("$@")
((${#targets[@]})) || targets=(resp_parser event snapshot)
CXX=clang++ cmake -S . -B build-fuzz -DFKV_FUZZ=ON -DFKV_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}"
((secs > 0)) || exit 0
mkdir -p build-fuzz/findings
scratch=$(mktemp -d /tmp/fkv-fuzz-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
pids=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  build-fuzz/fuzz/fuzz_$t -max_total_time="$secs" -print_final_stats=1 -artifact_prefix=build-fuzz/findings/$t- \
    "$scratch/$t" fuzz/corpus/$t >"$scratch/$t.log" 2>&1 &
  pids+=($!)
done
rc=0
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  if wait "${pids[$i]}"; then
    echo "fuzz_$t: $(grep -o 'stat::number_of_executed_units: [0-9]*' "$scratch/$t.log" | awk '{print $2}') executions in ${secs} s, no finding"
  else
    rc=1
    echo "fuzz_$t: FINDING (input in build-fuzz/findings/):"
    grep -E "ERROR|SUMMARY|runtime error" "$scratch/$t.log" | head -20
  fi
done
exit $rc

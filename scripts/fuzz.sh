#!/usr/bin/env bash
# Long coverage-guided fuzzing campaigns with AFL++ (cargo-afl), one target after another.
#
#   scripts/fuzz.sh                 every target, 600 s each
#   scripts/fuzz.sh ws_read 3600    one target for an hour
#   FUZZ_EXECS=10000000 scripts/fuzz.sh jwt 7200   stop at 10 M executions (or 2 h)
#
# Targets: ws_frame ws_read http_upgrade client_frame jwt grpc_validate (fuzz/src/*.rs).
# Needs `cargo install cargo-afl` (it builds AFL++ from its bundled source on stable Rust).
# Findings go to fuzz/out/<target>/default/{crashes,hangs}; the script prints each
# target's fuzzer_stats and fails if any campaign saved a crash or a hang. A crash input
# becomes a regression seed: copy it into fuzz/corpus/<target>/ and fix the bug.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(ws_frame ws_read http_upgrade client_frame jwt grpc_validate)
target="${1:-all}"
seconds="${2:-600}"
if [ "$target" = all ]; then selected=("${TARGETS[@]}"); else selected=("$target"); fi
for t in "${selected[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "unknown target $t (one of: ${TARGETS[*]})" >&2; exit 2; }
done

command -v cargo-afl >/dev/null || { echo "cargo-afl missing: cargo install cargo-afl" >&2; exit 1; }

# Instrumented builds live apart from the normal ones, so neither rebuilds the other.
export CARGO_TARGET_DIR="${KURIR_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/afl}"
cargo afl build --release --features afl -p kurir-fuzz --bins

# Containers and CI machines rarely let us tune the CPU governor or core_pattern.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
[ -t 1 ] || export AFL_NO_UI=1

stat() { sed -n "s/^$2 *: //p" "$1"; }

failed=0
for t in "${selected[@]}"; do
  out="fuzz/out/$t"
  mkdir -p "$out"
  args=(-i "fuzz/corpus/$t" -o "$out" -V "$seconds")
  [ -n "${FUZZ_EXECS:-}" ] && args+=(-E "$FUZZ_EXECS")
  [ -f "fuzz/dict/$t.dict" ] && args+=(-x "fuzz/dict/$t.dict")
  # A previous run's queue resumes instead of starting from the seeds.
  [ -d "$out/default/queue" ] && args=(-i - "${args[@]:2}")
  echo "==> $t: ${seconds}s${FUZZ_EXECS:+ or $FUZZ_EXECS executions}" >&2
  nice -n "${FUZZ_NICE:-19}" cargo afl fuzz "${args[@]}" "$CARGO_TARGET_DIR/release/$t" >"$out/afl.log" 2>&1 || {
    echo "afl-fuzz failed for $t, see $out/afl.log" >&2; tail -20 "$out/afl.log" >&2; failed=1; continue; }
  s="$out/default/fuzzer_stats"
  crashes="$(stat "$s" saved_crashes)"; hangs="$(stat "$s" saved_hangs)"
  printf '%s: execs %s, %s/s, corpus %s, edges %s/%s, crashes %s, hangs %s, %ss\n' "$t" \
    "$(stat "$s" execs_done)" "$(stat "$s" execs_per_sec)" "$(stat "$s" corpus_count)" \
    "$(stat "$s" edges_found)" "$(stat "$s" total_edges)" "$crashes" "$hangs" "$(stat "$s" run_time)"
  [ "$crashes" = 0 ] && [ "$hangs" = 0 ] || failed=1
done
exit "$failed"

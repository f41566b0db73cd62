#!/usr/bin/env bash
# Runs every fluxgate benchmark once, in order, and writes the results to
# target/bench-results/ (see docs/BENCHMARKS.md):
#
#   micro.txt      criterion micro-benchmarks (credentials, classification, InfluxQL)
#   cache_hit.txt  the decision cache's hit path and memory per entry (benches/cache_hit.rs)
#   load.txt       direct vs fluxgate vs nginx vs bare hyper, + load-raw.csv (every round)
#   authorize.txt  Authorize (SQLite- and PostgreSQL-backed) vs a trivial tonic service
#   store.txt      token creations per second (group commit), cross-replica revocation latency
#   tokens_scale.txt  the token service at 10k/100k/1M tokens (memory, start-up, Authorize, paged listing)
#   proxy_scale.txt   the proxy with 10k/100k/1M cached decisions: fill, hits, churn with evictions
#   machine.txt    nproc, CPU model, load before and after, tool versions
#
# The bench profile is built once (`cargo bench --no-run`); the benchmark
# executables it produced are then run directly, with a copy of the
# `fluxgate` binary built alongside them, so an edit or a build elsewhere in
# the tree during the run changes nothing that is measured. Settings are
# passed through the environment (FLUXGATE_BENCH_SECS, FLUXGATE_BENCH_ROUNDS,
# FLUXGATE_BENCH_CONCURRENCY, FLUXGATE_BENCH_SCENARIOS, FLUXGATE_BENCH_PERF=1,
# …; see the benches' headers).
#
# Usage: scripts/bench.sh [micro|cache|load|authorize|store|scale]...   (default: all)
set -euo pipefail

cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
results="${FLUXGATE_BENCH_RESULTS:-$target/bench-results}"
mkdir -p "$results"
FLUXGATE_BENCH_RESULTS="$(cd "$results" && pwd)"
export FLUXGATE_BENCH_RESULTS

what=("$@")
[ ${#what[@]} -eq 0 ] && what=(micro cache load authorize store scale)
want() { local w; for w in "${what[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

machine() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc: $(rustc --version)"
  echo "nginx: $( (nginx -v 2>&1 || echo absent) | head -1)"
  echo "h2load: $( (h2load --version 2>/dev/null || echo absent) | head -1)"
  echo "wrk: $( (wrk --version 2>&1 || true) | head -1)"
}

names=()
want micro && names+=(micro)
want cache && [ -f benches/cache_hit.rs ] && names+=(cache_hit)
want load && names+=(load)
want authorize && names+=(authorize)
want store && names+=(store)
want scale && names+=(tokens_scale proxy_scale)
[ ${#names[@]} -eq 0 ] && { echo "nothing to run: $*" >&2; exit 2; }

args=()
for n in "${names[@]}"; do args+=(--bench "$n"); done
echo "building the bench profile once: cargo bench --no-run ${args[*]}" >&2
build_log="$results/build.json"
cargo bench --no-run --message-format=json-render-diagnostics "${args[@]}" > "$build_log"

# The executables of this build, by bench name.
executable() {
  jq -r --arg n "$1" 'select(.reason == "compiler-artifact" and .target.name == $n
      and (.target.kind | index("bench")) and .executable != null) | .executable' \
    "$build_log" | tail -1
}
bin_dir="$results/bin"
mkdir -p "$bin_dir"
cp "$target/release/fluxgate" "$bin_dir/fluxgate"
export FLUXGATE_BENCH_BIN="${FLUXGATE_BENCH_BIN:-$bin_dir/fluxgate}"

{ echo "== before"; machine; } > "$results/machine.txt"

run() {
  local name=$1 out=$2 exe
  exe="$(executable "$name")"
  [ -x "$exe" ] || { echo "no executable for bench $name" >&2; exit 1; }
  cp "$exe" "$bin_dir/$name"
  echo "== $name ($(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$bin_dir/$name" --bench 2>&1 | tee "$results/$out"
}

for n in "${names[@]}"; do
  case "$n" in
    micro) run micro micro.txt ;;
    cache_hit) run cache_hit cache_hit.txt ;;
    load) run load load.log ;;
    authorize) run authorize authorize.log ;;
    store) run store store.log ;;
    tokens_scale) run tokens_scale tokens_scale.log ;;
    proxy_scale) run proxy_scale proxy_scale.log ;;
  esac
done

{ echo "== after"; machine; } >> "$results/machine.txt"
echo "results in $results" >&2

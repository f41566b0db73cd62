#!/usr/bin/env bash
# Runs every fluxgate benchmark once, in order, and writes the results to
# target/bench-results/ (see docs/BENCHMARKS.md):
#
#   micro.txt      criterion micro-benchmarks (credentials, classification, InfluxQL)
#   cache_hit.txt  the decision cache's hit path and memory per entry (benches/cache_hit.rs)
#   load.txt       direct vs fluxgate vs nginx, + load-raw.csv (every round)
#   authorize.txt  Authorize vs a trivial tonic service, tonic client and h2load
#   machine.txt    nproc, CPU model, load before and after
#
# The bench profile is built once (`cargo bench --no-run`); every benchmark
# then reuses it, including the `fluxgate` binary the load and authorize
# harnesses start. Settings are passed through the environment
# (FLUXGATE_BENCH_SECS, FLUXGATE_BENCH_ROUNDS, FLUXGATE_BENCH_CONCURRENCY,
# FLUXGATE_BENCH_SCENARIOS, FLUXGATE_BENCH_PERF=1, …; see the benches'
# headers). Usage: scripts/bench.sh [micro|cache|load|authorize]...
set -euo pipefail

cd "$(dirname "$0")/.."
results="${FLUXGATE_BENCH_RESULTS:-${CARGO_TARGET_DIR:-target}/bench-results}"
mkdir -p "$results"
FLUXGATE_BENCH_RESULTS="$(cd "$results" && pwd)"
export FLUXGATE_BENCH_RESULTS

what=("$@")
[ ${#what[@]} -eq 0 ] && what=(micro cache load authorize)
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

{ echo "== before"; machine; } > "$results/machine.txt"

benches=()
want micro && benches+=(--bench micro)
want cache && [ -f benches/cache_hit.rs ] && benches+=(--bench cache_hit)
want load && benches+=(--bench load)
want authorize && benches+=(--bench authorize)
echo "building the bench profile once: cargo bench --no-run ${benches[*]}" >&2
cargo bench --no-run "${benches[@]}"

if want micro; then
  echo "== micro" >&2
  cargo bench --bench micro 2>&1 | tee "$results/micro.txt"
fi
if want cache && [ -f benches/cache_hit.rs ]; then
  echo "== cache_hit" >&2
  cargo bench --bench cache_hit 2>&1 | tee "$results/cache_hit.txt"
fi
if want load; then
  echo "== load" >&2
  cargo bench --bench load 2>&1 | tee "$results/load.log"
fi
if want authorize; then
  echo "== authorize" >&2
  cargo bench --bench authorize 2>&1 | tee "$results/authorize.log"
fi

{ echo "== after"; machine; } >> "$results/machine.txt"
echo "results in $results" >&2

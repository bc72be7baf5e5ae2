#!/usr/bin/env bash
# bench/journal.sh — the cost of -journal (BENCHMARKS.md, "Journal"): upgrades
# per second and bridge CPU per upgrade without and with -journal, in
# alternating runs on one machine, then a -journal-sync always pair.
#
#   bench/journal.sh                  # 5 pairs of 10 s handshake runs, 100 in flight
#   PAIRS=3 DURATION=5s bench/journal.sh
#
# Each run starts a fresh bridge (a fresh journal directory) against the
# mock backend, runs `wsbench handshake` (connect, upgrade, close; the
# DELETE answered before the next cycle of the slot), reads the bridge's
# CPU ticks from /proc before and after, and stops the bridge. One JSON
# line per run on stdout; ports BASEPORT..BASEPORT+2 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build
pairs=${PAIRS:-5} dur=${DURATION:-10s} conns=${CONNS:-100} bp=${BASEPORT:-27100}
clk=$(getconf CLK_TCK)
bin/wsbench backend -listen "127.0.0.1:$bp" >/dev/null 2>&1 &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT

run() { # name, extra bridge flags…
  local name=$1 dir pid c0 c1 size
  shift
  dir=$(mktemp -d)
  local args=()
  for a in "$@"; do args+=("${a//@DIR@/$dir}"); done
  bin/wsbridge -listen "127.0.0.1:$((bp + 1))" -admin "127.0.0.1:$((bp + 2))" \
    -backend "http://127.0.0.1:$bp/" -log-level warn -ping-interval 0 "${args[@]}" 2>"$dir.log" &
  pid=$!
  for _ in $(seq 100); do curl -fs "127.0.0.1:$((bp + 2))/readyz" >/dev/null && break; sleep 0.1; done
  c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  bin/wsbench handshake -url "ws://127.0.0.1:$((bp + 1))" -conns "$conns" -duration "$dur" -prefix "hs" 2>/dev/null | tail -1 >"$dir.json"
  c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill -TERM "$pid"
  wait "$pid" || true
  size=$(du -sb "$dir" | cut -f1)
  jq -c --arg n "$name" --argjson t "$((c1 - c0))" --argjson clk "$clk" --argjson size "$size" \
    '{bridge:$n, upgrades:.upgrades, upgrades_per_sec:(.upgrades_per_sec|floor), cpu_seconds:($t/$clk),
      cpu_us_per_upgrade:(($t/$clk) * 1e6 / .upgrades | floor), p50_ms:.upgrade_ms.p50, p99_ms:.upgrade_ms.p99,
      errors, journal_dir_bytes:$size}' "$dir.json"
  rm -rf "$dir" "$dir.json" "$dir.log"
}

for i in $(seq "$pairs"); do
  if ((i % 2)); then
    run plain
    run journal -journal @DIR@
  else
    run journal -journal @DIR@
    run plain
  fi
done
run journal-sync-always -journal @DIR@ -journal-sync always
run plain

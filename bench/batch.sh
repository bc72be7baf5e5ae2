#!/usr/bin/env bash
# bench/batch.sh — what batched backend calls (-backend-batch-url) buy, on
# this machine: 10,000 msg/s (10,000 connections, one message a second
# each) through wsbridge with one POST per message, with batches, and
# optionally through a peer bridge (ws2api's wsproxy, one POST per
# message); then a 10,000-client reconnect storm with batches on, for
# the DELETEs and GETs (which are not batched).
#
#   bench/batch.sh                       # wsbridge: default, then batched
#   bench/batch.sh --peer /path/to/bin   # and a peer, as bench/compare.sh runs it
#   FIXED_CONNS=1000 FIXED_INTERVAL=100ms bench/batch.sh   # the same rate over fewer connections
#
# Per run: messages, backend requests per message, bridge CPU seconds and
# round trips per bridge CPU-second, the mock backend's CPU per message,
# round-trip p50/p99 and (wsbridge) the bucket the added latency's p99
# falls in. Runs in a network namespace of its own (root), like
# compare.sh. Results: JSON lines in $OUT/results.jsonl.
set -euo pipefail

peer="" out=""
while (($#)); do
  case $1 in
    --peer) peer=$(readlink -f "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
[[ $EUID -eq 0 ]] || { echo "batch.sh: needs root for the network namespace" >&2; exit 2; }
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=bench/lib.sh
. bench/lib.sh
out=${out:-$root/out/batch-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
bin=$root/bin
go build -o "$bin/wsbridge" ./cmd/wsbridge
go build -o "$bin/wsbench" ./cmd/wsbench

ns=wsbbat-$$
if [[ -z ${WSB_IN_NS:-} ]]; then
  trap 'ip netns delete "$ns" 2>/dev/null || true' EXIT
  ns_up "$ns"
  args=(--out "$out")
  [[ -n $peer ]] && args+=(--peer "$peer")
  WSB_IN_NS=1 ip netns exec "$ns" "$0" "${args[@]}"
  exit
fi
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

metrics() { curl -s --max-time 2 "http://$1/metrics" 2>/dev/null || true; }
# posts METRICS_FILE: POST requests (batches count one each) by any outcome.
posts() { awk '/^wsbridge_backend_requests_total\{method="POST"/ {s += $2} END {print s + 0}' "$1"; }
msgs_in() { awk '/^wsbridge_messages_total\{direction="in"\}/ {printf "%d", $2}' "$1"; }
buckets() { sed -n 's/^wsbridge_message_added_latency_seconds_bucket{le="\([^"]*\)"} \([0-9.e+]*\)$/\1 \2/p' "$1"; }
# added_p99 BEFORE AFTER: upper bound (ms) of the bucket the p99 falls in.
added_p99() {
  paste -d' ' <(buckets "$1") <(buckets "$2") | awk '
    { le[NR] = $1; n[NR] = $4 - $2 }
    END { if (NR == 0 || n[NR] == 0) { print "null"; exit }
          for (i = 1; i <= NR; i++) if (n[i] >= 0.99 * n[NR]) { print (le[i] == "+Inf" ? "null" : le[i] * 1000); exit } }'
}

# fixed NAME ADMIN CMD...: 10,000 msg/s for 14 s; measured from 4 s to the end.
# FIXED_CONNS and FIXED_INTERVAL change the shape (10,000 × 1s by default;
# 1,000 × 100ms is the same rate over fewer connections).
conns=${FIXED_CONNS:-10000} interval=${FIXED_INTERVAL:-1s}
fixed() {
  local name=$1 admin=$2; shift 2
  "$bin/wsbench" backend -listen 127.0.0.1:8000 >"$out/$name-backend.log" 2>&1 &
  local be=$!
  wait_port 8000
  (cd "$out" && exec "$@") >"$out/$name.log" 2>&1 &
  local pid=$!
  wait_port 7001
  sleep 1
  "$bin/wsbench" ramp -url ws://127.0.0.1:7001 -conns "$conns" -rate 5000 -interval "$interval" -duration 14s \
    -prefix fixed -quiet -json >"$out/$name-fixed.json" &
  local gen=$!
  sleep 4
  metrics "$admin" >"$out/$name-m0.txt"
  local b0 be0 t0
  b0=$(cpu_ticks "$pid") be0=$(cpu_ticks "$be") t0=$(date +%s.%N)
  wait "$gen"
  local b1 be1 t1
  b1=$(cpu_ticks "$pid") be1=$(cpu_ticks "$be") t1=$(date +%s.%N)
  metrics "$admin" >"$out/$name-m1.txt"
  local msgs reqs
  msgs=$(awk -v a="$t0" -v b="$t1" -v f="$(jq .msgs_per_sec "$out/$name-fixed.json")" 'BEGIN {printf "%d", f * (b - a)}')
  if grep -q "^wsbridge_messages_total" "$out/$name-m1.txt"; then
    msgs=$(($(msgs_in "$out/$name-m1.txt") - $(msgs_in "$out/$name-m0.txt")))
    reqs=$(($(posts "$out/$name-m1.txt") - $(posts "$out/$name-m0.txt")))
  else
    reqs=$msgs # a peer without metrics: one POST per message
  fi
  jq -c --arg n "$name" --argjson bt "$((b1 - b0))" --argjson bet "$((be1 - be0))" --argjson clk "$clk" \
    --argjson msgs "$msgs" --argjson reqs "$reqs" --arg c "$conns" --arg i "$interval" --argjson added "$(added_p99 "$out/$name-m0.txt" "$out/$name-m1.txt")" \
    '{bridge:$n, run:"fixed_10000", shape:"\($c) conns every \($i)", msgs_per_sec:(.msgs_per_sec|floor), window_msgs:$msgs, backend_posts:$reqs,
      posts_per_msg:($reqs/$msgs*10000|round/10000), bridge_cpu_s:($bt/$clk),
      msgs_per_bridge_cpu_s:($msgs/($bt/$clk)|floor), backend_cpu_us_per_msg:($bet/$clk/$msgs*1e6*10|round/10),
      p50_ms:.rtt_ms.p50, p99_ms:.rtt_ms.p99, added_p99_ms_le:$added, errors}' \
    "$out/$name-fixed.json" | tee -a "$out/results.jsonl"
  stop "$pid" "$be"
  sleep 2
}

# storm NAME CMD...: 10,000 clients dropped at once and reconnecting.
storm() {
  local name=$1; shift
  "$bin/wsbench" backend -listen 127.0.0.1:8000 >"$out/$name-backend.log" 2>&1 &
  local be=$!
  wait_port 8000
  (cd "$out" && exec "$@") >"$out/$name.log" 2>&1 &
  local pid=$!
  wait_port 7001
  sleep 1
  metrics 127.0.0.1:7002 >"$out/$name-storm-m0.txt"
  local b0 be0
  b0=$(cpu_ticks "$pid") be0=$(cpu_ticks "$be")
  "$bin/wsbench" storm -url ws://127.0.0.1:7001 -conns 10000 -duration 60s -prefix storm -quiet -json >"$out/$name-storm.json"
  local b1 be1
  b1=$(cpu_ticks "$pid") be1=$(cpu_ticks "$be")
  metrics 127.0.0.1:7002 >"$out/$name-storm-m1.txt"
  local gets dels
  gets=$(awk '/^wsbridge_backend_requests_total\{method="GET"/ {s += $2} END {print s + 0}' "$out/$name-storm-m1.txt")
  dels=$(awk '/^wsbridge_backend_requests_total\{method="DELETE"/ {s += $2} END {print s + 0}' "$out/$name-storm-m1.txt")
  jq -c --arg n "$name" --argjson bt "$((b1 - b0))" --argjson bet "$((be1 - be0))" --argjson clk "$clk" \
    --argjson gets "$gets" --argjson dels "$dels" \
    '{bridge:$n, run:"storm_10000", gets:$gets, deletes:$dels, bridge_cpu_s:($bt/$clk), backend_cpu_s:($bet/$clk)} + .' \
    "$out/$name-storm.json" | tee -a "$out/results.jsonl"
  stop "$pid" "$be"
  sleep 2
}

wsb=("$bin/wsbridge" -listen 127.0.0.1:7001 -admin 127.0.0.1:7002 -backend http://127.0.0.1:8000/ -log-level warn)
batch=(-backend-batch-url http://127.0.0.1:8000/batch)
fixed wsbridge 127.0.0.1:7002 "${wsb[@]}"
fixed wsbridge-batch-1ms 127.0.0.1:7002 "${wsb[@]}" "${batch[@]}"
fixed wsbridge-batch-2ms 127.0.0.1:7002 "${wsb[@]}" "${batch[@]}" -backend-batch-delay 2ms
[[ -n $peer ]] && fixed peer 127.0.0.1:7001 "$peer"
storm wsbridge-batch-1ms "${wsb[@]}" "${batch[@]}"
storm wsbridge "${wsb[@]}"
echo "results: $out/results.jsonl"

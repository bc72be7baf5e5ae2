#!/usr/bin/env bash
# bench/compare.sh — wsbridge, and optionally a peer bridge that speaks the
# same protocol, measured back to back on this machine with the same load
# generator and mock backend (BENCHMARKS.md shows the results).
#
#   bench/compare.sh                         # wsbridge only (defaults, then pipelined)
#   bench/compare.sh --peer /path/to/binary  # and a peer, e.g. ws2api's wsproxy
#   bench/compare.sh --ramp                  # the 250,000-connection ramp (wsbridge)
#   bench/compare.sh --peer BIN --rounds 3   # three rounds, contenders rotated each round
#
# wsbridge is measured twice: with its defaults (adaptive pipelining),
# and tuned by hand for a fast backend ($PIPELINED, by default at most 16
# backend connections carrying up to 16 pipelined requests each).
#
# Environment: CONTENDERS (default "wsbridge wsbridge-pipelined"; "peer"
# is added with --peer; "wsbridge-unpipelined" is -backend-pipeline 1, the
# defaults before the eighth session), RUNS (default "idle throughput handshake push
# fixed"), TCONNS (closed-loop connections of the throughput run, default
# 200), FIXED_RATES (default "5000 10000" msg/s), BACKEND_ARGS (flags
# for the mock backend, e.g. "-delay 20ms -workers 32" for a PHP-FPM-like
# one).
#
# Everything runs inside a network namespace of its own with only a
# loopback interface, so a peer that binds every interface is still
# reachable from nowhere else. The peer is expected to behave like ws2api:
# WebSocket and push API on port 7001, backend calls to
# http://localhost:8000/<prefix>/<ClientId>. It is run as given; this script
# never builds it.
#
# Results: one JSON line per run (with its round) in $OUT/results.jsonl, and
# in $OUT/summary.txt each figure's values over the rounds, their median and
# the ratio of medians to the peer's.
set -euo pipefail

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

peer="" ramp=0 out="" rounds=1
while (($#)); do
  case $1 in
    --peer) peer=$(readlink -f "$2"); shift 2 ;;
    --ramp) ramp=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "compare.sh: unknown argument $1" >&2; usage ;;
  esac
done

[[ $EUID -eq 0 ]] || { echo "compare.sh: needs root for the network namespace" >&2; exit 2; }
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=bench/lib.sh
. bench/lib.sh
out=${out:-$root/out/compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
make -s build
bin=$root/bin

ns=wsbcmp-$$
if [[ -z ${WSB_IN_NS:-} ]]; then
  trap 'ip netns delete "$ns" 2>/dev/null || true' EXIT
  ns_up "$ns"
  args=(--out "$out")
  [[ -n $peer ]] && args+=(--peer "$peer")
  ((ramp)) && args+=(--ramp)
  args+=(--rounds "$rounds")
  WSB_IN_NS=1 ip netns exec "$ns" "$0" "${args[@]}"
  exit
fi
# Whatever ends this script (a failed step under set -e, ^C) stops the
# processes it started: they would otherwise live on in a deleted namespace.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

{
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host:    $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel:  $(uname -r)"
  echo "go:      $(go version)"
  echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
  echo "nofile:  $(ulimit -n) per process"
} | tee "$out/machine.txt"

wsbench() { "$bin/wsbench" "$@" -quiet -json; }

# want RUN: whether $RUNS (default: all) names the run.
want() { [[ " ${RUNS:-idle throughput handshake push fixed} " == *" $1 "* ]]; }

# added_snapshot ADMIN: the cumulative buckets of wsbridge's added-latency
# histogram, "le count" per line (nothing for a bridge without it).
added_snapshot() {
  curl -s --max-time 2 "http://$1/metrics" 2>/dev/null |
    sed -n 's/^wsbridge_message_added_latency_seconds_bucket{le="\([^"]*\)"} \([0-9.e+]*\)$/\1 \2/p' || true
}

# added_quantiles BEFORE AFTER: a JSON object with the buckets that p50
# and p99 of the messages between the two snapshots fall in, in ms.
added_quantiles() {
  paste -d' ' "$1" "$2" | awk '
    { le[NR] = $1; n[NR] = $4 - $2 }
    END {
      if (NR == 0 || n[NR] == 0) { print "{}"; exit }
      for (i = 1; i <= NR; i++) if (!a && n[i] >= 0.5 * n[NR]) a = le[i]
      for (i = 1; i <= NR; i++) if (!b && n[i] >= 0.99 * n[NR]) b = le[i]
      printf "{\"added_messages\":%d,\"added_p50_ms_le\":%s,\"added_p99_ms_le\":%s}\n", n[NR], \
        (a == "+Inf" ? "null" : a * 1000), (b == "+Inf" ? "null" : b * 1000)
    }'
}

# measure NAME ADMIN CMD...: the five side-by-side runs against one bridge.
measure() {
  local name=$1 admin=$2; shift 2
  # shellcheck disable=SC2086 # $BACKEND_ARGS is a list of flags
  "$bin/wsbench" backend -listen 127.0.0.1:8000 ${BACKEND_ARGS:-} >"$out/$name-backend.log" 2>&1 &
  local backend=$!
  wait_port 8000
  (cd "$out" && exec "$@") >"$out/$name.log" 2>&1 &
  local pid=$!
  wait_port 7001
  sleep 1

  # 1. Memory per idle connection: 15,000 connections held, no messages;
  # read 5 s after the last connect, and again ~20 s after it, once the
  # bridge has settled (wsbridge's -trim-memory acts after ~10 quiet seconds).
  local rss0 rss1 rss2
  if want idle; then
  rss0=$(rss_bytes "$pid")
  wsbench ramp -url ws://127.0.0.1:7001 -conns 15000 -rate 5000 -interval 1h -duration 21s \
    -prefix idle >"$out/$name-idle.json" &
  local gen=$!
  sleep 8 # 3 s of ramp, then held
  rss1=$(rss_bytes "$pid")
  sleep 15
  rss2=$(rss_bytes "$pid")
  wait "$gen"
  jq -c --arg n "$name" --argjson a "$rss0" --argjson b "$rss1" --argjson c "$rss2" \
    '{bridge:$n, run:"idle", conns:.max_held, rss_before:$a, rss_held:$b, rss_settled:$c,
      bytes_per_conn:(($b - $a) / .max_held | floor), bytes_per_conn_settled:(($c - $a) / .max_held | floor),
      errors}' "$out/$name-idle.json" >>"$out/results.jsonl"
  sleep 2
  fi

  # 2. Round trips per bridge CPU-second: 200 connections in closed loop.
  local c0 c1
  if want throughput; then
  c0=$(cpu_ticks "$pid")
  wsbench throughput -url ws://127.0.0.1:7001 -conns "${TCONNS:-200}" -duration 10s -prefix tp >"$out/$name-throughput.json"
  c1=$(cpu_ticks "$pid")
  jq -c --arg n "$name" --argjson t "$((c1 - c0))" --argjson clk "$clk" \
    '{bridge:$n, run:"throughput", msgs_per_sec:(.msgs_per_sec|floor), cpu_seconds:($t/$clk),
      msgs_per_cpu_second:(.recv / ($t/$clk) | floor), p50_ms:.rtt_ms.p50, p99_ms:.rtt_ms.p99, errors}' \
    "$out/$name-throughput.json" >>"$out/results.jsonl"
  fi

  # 3. Upgrades per second: connect, upgrade, close, 100 at a time. The
  # load generator and the backend share the two cores, so the bridge's
  # CPU per upgrade is reported too.
  if want handshake; then
  c0=$(cpu_ticks "$pid")
  wsbench handshake -url ws://127.0.0.1:7001 -conns 100 -duration 10s -prefix hs >"$out/$name-handshake.json"
  c1=$(cpu_ticks "$pid")
  jq -c --arg n "$name" --argjson t "$((c1 - c0))" --argjson clk "$clk" \
    '{bridge:$n, run:"handshake", upgrades_per_sec:(.upgrades_per_sec|floor), cpu_seconds:($t/$clk),
      upgrades_per_cpu_second:(.upgrades / ($t/$clk) | floor),
      p50_ms:.upgrade_ms.p50, p99_ms:.upgrade_ms.p99, errors}' "$out/$name-handshake.json" >>"$out/results.jsonl"
  fi

  # 4. Pushes per second: 5,000 clients, backend-initiated POST /<id>.
  if want push; then
  wsbench push -url ws://127.0.0.1:7001 -admin "$admin" -conns 5000 -duration 10s -prefix push >"$out/$name-push.json"
  jq -c --arg n "$name" '{bridge:$n, run:"push", pushes_per_sec:(.pushes_per_sec|floor),
      delivery_p50_ms:.rtt_ms.p50, delivery_p99_ms:.rtt_ms.p99, push_errors:(.push_errors // 0), errors}' \
    "$out/$name-push.json" >>"$out/results.jsonl"
  fi

  # 5. Latency at a fixed load: 5,000 and then 10,000 connections, one
  # message a second each (10,000 msg/s is about half of wsbridge's
  # default maximum here). Last, because it can overload a bridge: what
  # follows it would measure the aftermath. For wsbridge also the latency it
  # adds itself, from its histogram once the connections are open (upper
  # bounds of the buckets p50 and p99 fall in).
  local rate
  want fixed || FIXED_RATES=""
  for rate in ${FIXED_RATES-5000 10000}; do
    wsbench ramp -url ws://127.0.0.1:7001 -conns "$rate" -rate 5000 -interval 1s -duration 14s \
      -prefix "fixed$rate" >"$out/$name-fixed$rate.json" &
    local gen=$!
    sleep 4 # the connections open over 1-2 s: measure the steady state after
    added_snapshot "$admin" >"$out/$name-added-0.txt"
    wait "$gen"
    added_snapshot "$admin" >"$out/$name-added-1.txt"
    jq -c --arg n "$name" --arg run "fixed_${rate}_msgs_per_sec" --argjson added "$(added_quantiles "$out/$name-added-0.txt" "$out/$name-added-1.txt")" \
      '{bridge:$n, run:$run, msgs_per_sec:(.msgs_per_sec|floor),
        p50_ms:.rtt_ms.p50, p90_ms:.rtt_ms.p90, p99_ms:.rtt_ms.p99, max_ms:.rtt_ms.max, errors} + $added' \
      "$out/$name-fixed$rate.json" >>"$out/results.jsonl"
    sleep 2
  done

  stop "$pid" "$backend"
}

# ramp: the headline, 250,000 connections opened in 60 s, one message each
# every 10 s (25,000 msg/s), held a minute. One process may hold at most
# ~19,900 sockets here, so 16 bridge processes share the port with
# -reuseport and wsbench spreads its clients over worker processes.
# RAMP_CONNS, RAMP_TIME, RAMP_INTERVAL and RAMP_HOLD change the shape;
# RAMP_BRIDGE_ARGS adds wsbridge flags (e.g. the pipelined tuning).
# RAMP_GOMAXPROCS (default 1) is each bridge's and each wsbench process's
# GOMAXPROCS: with 30 processes on a few cores, more Ps per process only
# add threads that spin looking for work (docs/scaling.md).
ramp250k() {
  local procs=16 i pids=()
  local conns=${RAMP_CONNS:-250000} over=${RAMP_TIME:-60} every=${RAMP_INTERVAL:-10} hold=${RAMP_HOLD:-60}
  "$bin/wsbench" backend -listen 127.0.0.1:8000 >"$out/ramp-backend.log" 2>&1 &
  local backend=$!
  wait_port 8000
  local extra
  read -r -a extra <<<"${RAMP_BRIDGE_ARGS:-}"
  for ((i = 0; i < procs; i++)); do
    GOMAXPROCS=${RAMP_GOMAXPROCS:-1} "$bin/wsbridge" -listen 127.0.0.1:7001 -reuseport -admin "127.0.0.1:$((7100 + i))" \
      -backend http://127.0.0.1:8000/ -backend-max-conns 256 -loops 1 -log-level warn "${extra[@]}" \
      >"$out/ramp-bridge-$i.log" 2>&1 &
    pids+=($!)
  done
  wait_port 7001
  sleep 1
  local c0=0 c1=0 rss=0 pid
  for pid in "${pids[@]}"; do c0=$((c0 + $(cpu_ticks "$pid"))); done
  GOMAXPROCS=${RAMP_GOMAXPROCS:-1} "$bin/wsbench" ramp -url ws://127.0.0.1:7001 -conns "$conns" -ramp "${over}s" -interval "${every}s" \
    -duration "${hold}s" -sources 128 -json -csv "$out/ramp.csv" >"$out/ramp.json" 2>"$out/ramp.progress" &
  local gen=$!
  # The ramp, then half the hold: sample while all are held. The 16 admin
  # endpoints are read at once and with a deadline: read one after the other
  # from overloaded bridges they once took long enough to straddle wsbench's
  # stop, whose closes then showed up as client_gone.
  sleep $((over + hold / 2))
  for pid in "${pids[@]}"; do rss=$((rss + $(rss_bytes "$pid"))); done
  local curls=()
  for ((i = 0; i < procs; i++)); do
    curl -s --max-time 5 "127.0.0.1:$((7100 + i))/metrics" >"$out/ramp-metrics-$i.txt" &
    curls+=($!)
  done
  for pid in "${curls[@]}"; do wait "$pid" || true; done
  { grep -hE '^wsbridge_(connections|upgrades_refused_total)' "$out"/ramp-metrics-*.txt || true; } |
    awk '{sum[$1] += $2} END {for (k in sum) if (sum[k] > 0) print k, sum[k]}' | sort >"$out/ramp-bridges.txt"
  rm -f "$out"/ramp-metrics-*.txt
  # A non-zero exit (say, a worker that missed its stop deadline) is
  # reported, and the result line still written from what wsbench printed.
  wait "$gen" || echo "compare.sh: wsbench ramp exited with status $?" >&2
  for pid in "${pids[@]}"; do c1=$((c1 + $(cpu_ticks "$pid"))); done
  jq -c --argjson rss "$rss" --argjson t "$((c1 - c0))" --argjson clk "$clk" --argjson p "$procs" \
    --argjson over "$over" --argjson every "$every" --argjson hold "$hold" \
    --arg args "${RAMP_BRIDGE_ARGS:-}" --arg gmp "${RAMP_GOMAXPROCS:-1}" \
    '{bridge:"wsbridge", run:"ramp", asked:.conns, ramp_s:$over, interval_s:$every, hold_s:$hold,
      bridge_args:$args, gomaxprocs:$gmp, bridge_processes:$p, held:.held, max_held:.max_held,
      msgs_per_sec:(.msgs_per_sec|floor), p50_ms:.rtt_ms.p50, p99_ms:.rtt_ms.p99, max_ms:.rtt_ms.max,
      errors, error_kinds, bridges_rss_bytes:$rss, bridges_rss_per_conn:($rss / .max_held | floor),
      bridges_cpu_seconds:($t/$clk)}' "$out/ramp.json" >>"$out/results.jsonl"
  stop "${pids[@]}" "$backend"
}

contender() {
  case $1 in
    wsbridge)
      measure wsbridge 127.0.0.1:7002 "$bin/wsbridge" -listen 127.0.0.1:7001 -admin 127.0.0.1:7002 \
        -backend http://127.0.0.1:8000/ -log-level warn ;;
    wsbridge-pipelined)
      # shellcheck disable=SC2086 # $PIPELINED is a list of flags
      measure wsbridge-pipelined 127.0.0.1:7002 "$bin/wsbridge" -listen 127.0.0.1:7001 -admin 127.0.0.1:7002 \
        -backend http://127.0.0.1:8000/ -log-level warn ${PIPELINED:--backend-max-conns 16 -backend-pipeline 16 -max-pending-upgrades 512} ;;
    wsbridge-unpipelined)
      measure wsbridge-unpipelined 127.0.0.1:7002 "$bin/wsbridge" -listen 127.0.0.1:7001 -admin 127.0.0.1:7002 \
        -backend http://127.0.0.1:8000/ -log-level warn -backend-pipeline 1 ;;
    peer) measure peer 127.0.0.1:7001 "$peer" ;;
  esac
}

# tag_round FROM R: the result lines after line FROM belong to round R.
tag_round() {
  local tmp
  tmp=$(mktemp)
  { head -n "$1" "$out/results.jsonl"; tail -n +"$(($1 + 1))" "$out/results.jsonl" | jq -c --argjson r "$2" '. + {round: $r}'; } >"$tmp"
  mv "$tmp" "$out/results.jsonl"
}

# summarize: per run and figure, the values of every round, their median and
# the ratio of each wsbridge median to the peer's.
summarize() {
  jq -rs '
    def med: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def figs: {idle: ["bytes_per_conn", "bytes_per_conn_settled"], throughput: ["msgs_per_cpu_second", "msgs_per_sec"],
      fixed_5000_msgs_per_sec: ["p99_ms", "added_p99_ms_le", "errors"],
      fixed_10000_msgs_per_sec: ["p99_ms", "added_p99_ms_le", "errors"],
      handshake: ["upgrades_per_sec", "upgrades_per_cpu_second"], push: ["pushes_per_sec", "delivery_p99_ms"]};
    . as $all | figs | to_entries[] | .key as $run | .value[] as $f
    | [$all[] | select(.run == $run and .[$f] != null)] as $rows
    | select($rows | length > 0)
    | ([$rows[] | select(.bridge == "peer") | .[$f]] | med) as $peer
    | ($rows | group_by(.bridge)[] | {bridge: .[0].bridge, vals: [.[] | .[$f]]})
    | "\($run) \($f) \(.bridge): \(.vals | map(tostring) | join(" / ")) median \(.vals | med)"
      + (if $peer != null and $peer != 0 and .bridge != "peer" then
           " (\((.vals | med) / $peer * 100 | round / 100)× the peer)" else "" end)
  ' "$out/results.jsonl" >"$out/summary.txt"
}

if ((ramp)); then
  ramp250k
else
  touch "$out/results.jsonl"
  read -ra contenders <<<"${CONTENDERS:-wsbridge wsbridge-pipelined}"
  [[ -n $peer && " ${contenders[*]} " != *" peer "* ]] && contenders+=(peer)
  for ((r = 1; r <= rounds; r++)); do
    # Rotate the order each round, so no contender always runs first or last.
    for ((k = 0; k < ${#contenders[@]}; k++)); do
      c=${contenders[$(((k + r - 1) % ${#contenders[@]}))]}
      from=$(wc -l <"$out/results.jsonl")
      contender "$c"
      tag_round "$from" "$r"
    done
  done
  summarize
fi
echo
cat "$out/results.jsonl"
if [[ -f $out/summary.txt ]]; then cat "$out/summary.txt"; fi

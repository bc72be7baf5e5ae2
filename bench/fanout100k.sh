#!/usr/bin/env bash
# bench/fanout100k.sh — channel fan-out to 100,000 subscribers on one box.
# One process may hold ~19,900 sockets here, so BRIDGES wsbridge processes
# share one listen port (-reuseport; the kernel spreads the subscribers)
# and form a cluster over a nats-server of their own, and wsbench spreads
# its clients over PROCS worker processes. Each message is published once,
# to the first bridge's admin API, and reaches the other bridges'
# subscribers through NATS; the bridge CPU reported is the sum over all.
#
#   bench/fanout100k.sh                               # 100,000 subscribers, 6 bridges, 6 workers
#   CONNS=2000 BRIDGES=2 PROCS=2 bench/fanout100k.sh  # a smoke run
#
# Environment: CONNS (default 100000), BRIDGES (6), PROCS (6, wsbench
# worker processes), RATE (0.2 messages a second), DURATION (30s),
# BRIDGE_ARGS (extra wsbridge flags), WSBENCH_ARGS (extra wsbench flags,
# e.g. -fanout-push or -json), BIN (where to build, default bin/). Needs nats-server (apt-get install
# nats-server) and curl; plain 127.0.0.1, no root. The connect burst
# meets each bridge's -max-pending-upgrades (half of -backend-max-conns):
# those upgrades get 503 and are retried with backoff, so "errors" counts
# them (refused, 503) while all connections are held in the end. Everything started is
# stopped on exit; the bridges' and nats-server's logs are kept in a
# temporary directory whose name is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

conns=${CONNS:-100000} bridges=${BRIDGES:-6} procs=${PROCS:-6}
rate=${RATE:-0.2} duration=${DURATION:-30s}
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
[[ -x $nats_bin ]] || { echo "fanout100k.sh: nats-server not found (apt-get install nats-server)" >&2; exit 2; }
command -v curl >/dev/null || { echo "fanout100k.sh: needs curl" >&2; exit 2; }

# Every process here holds up to ~20,000 sockets: the hard limit.
ulimit -n "$(ulimit -Hn)"
bin=${BIN:-$PWD/bin}
make -s build BIN="$bin"
logs=$(mktemp -d "${TMPDIR:-/tmp}/fanout100k.XXXXXX")

pids=()
cleanup() {
  ((${#pids[@]})) && stop "${pids[@]}"
  echo "fanout100k.sh: logs in $logs" >&2
}
trap cleanup EXIT

# free_port: a port on 127.0.0.1 nothing listens on and not handed out yet.
taken=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    [[ $taken == *" $p "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    echo "$p"
    return
  done
}
# Assigned here, not in $(...) subshells, so $taken keeps every port.
next_port() { port=$(free_port); taken+="$port "; }

next_port; nport=$port
next_port; wport=$port
next_port; bport=$port
"$nats_bin" -a 127.0.0.1 -p "$nport" >"$logs/nats.log" 2>&1 &
pids+=($!)
wait_port "$nport"

read -r -a extra <<<"${BRIDGE_ARGS:-}"
admins=()
for ((i = 1; i <= bridges; i++)); do
  next_port
  "$bin/wsbridge" -reuseport -listen "127.0.0.1:$wport" -admin "127.0.0.1:$port" \
    -cluster "nats://127.0.0.1:$nport" -node-id "n$i" -backend "http://127.0.0.1:$bport/" \
    -log-level warn -ping-interval 0 -backend-max-conns 64 "${extra[@]}" >"$logs/bridge-$i.log" 2>&1 &
  pids+=($!)
  admins+=("127.0.0.1:$port")
done
# Ready, and on the bus: a publish must reach every node's subscribers.
for a in "${admins[@]}"; do
  for ((j = 0; ; j++)); do
    curl -fs "$a/readyz" >/dev/null 2>&1 &&
      curl -fs "$a/metrics" 2>/dev/null | grep -q '^wsbridge_cluster_up 1' && break
    if ((j >= 200)); then
      echo "fanout100k.sh: bridge $a not ready and on the bus after 20 s" >&2
      exit 1
    fi
    sleep 0.1
  done
done
admin_list=$(IFS=,; echo "${admins[*]}")

read -r -a wextra <<<"${WSBENCH_ARGS:-}"
echo "fanout100k.sh: $conns subscribers, $bridges bridges on 127.0.0.1:$wport, $procs wsbench workers, $rate msg/s for $duration" >&2
"$bin/wsbench" fanout -url "ws://127.0.0.1:$wport" -admin "$admin_list" -backend "127.0.0.1:$bport" \
  -conns "$conns" -rate "$rate" -duration "$duration" -procs "$procs" -sources 64 "${wextra[@]}"

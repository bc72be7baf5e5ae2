#!/usr/bin/env bash
# A cluster on one machine (make cluster): nats-server and three wsbridge
# nodes against one backend, on local ports. Ctrl-C (or DURATION seconds,
# default 3600) stops them all.
#
#   nats-server     127.0.0.1:${NATS_PORT:-4222}
#   node n1, n2, n3 WebSocket 127.0.0.1:7101..7103, admin 127.0.0.1:7201..7203
#
# BACKEND is the backend's base URL; without it each node starts its
# built-in echo backend (-demo). Push to a client through any node:
#   curl -d hi http://127.0.0.1:7202/<ClientId>
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${BIN:-bin}/wsbridge
nats_port=${NATS_PORT:-4222}
duration=${DURATION:-3600}
nats=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
[[ -x $nats ]] || { echo "nats-server not found: apt-get install nats-server" >&2; exit 1; }
[[ -x $bin ]] || { echo "$bin not built: make build" >&2; exit 1; }

pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

"$nats" -a 127.0.0.1 -p "$nats_port" &
pids+=($!)

backend_args=(-demo)
if [[ -n ${BACKEND:-} ]]; then backend_args=(-backend "$BACKEND"); fi
for i in 1 2 3; do
  "$bin" -cluster "nats://127.0.0.1:$nats_port" -node-id "n$i" \
    -listen "127.0.0.1:710$i" -admin "127.0.0.1:720$i" \
    -log-format console "${backend_args[@]}" &
  pids+=($!)
done
echo "cluster up: ws://127.0.0.1:7101..7103, admin 127.0.0.1:7201..7203; Ctrl-C stops (or in ${duration}s)" >&2
sleep "$duration" &
pids+=($!)
wait -n

# bench/lib.sh — what the benchmark scripts (compare.sh, batch.sh) share;
# sourced, not run.
# shellcheck shell=bash

# ns_up NS: a new network namespace with its loopback up and the network
# settings sysctl/tune applies for 250,000 connections (a new namespace
# starts with the kernel's defaults), so every run sees a host tuned as
# the README says.
ns_up() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -q -w net.core.somaxconn=32768 net.ipv4.tcp_max_syn_backlog=32768 \
    net.ipv4.ip_local_port_range="10240 65535" net.ipv4.tcp_fin_timeout=15 net.ipv4.tcp_tw_reuse=1
}

# shellcheck disable=SC2034 # used by the scripts that source this file
clk=$(getconf CLK_TCK)
# cpu_ticks PID: user + system CPU of PID, in clock ticks ($clk a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# rss_bytes PID: resident memory of PID.
rss_bytes() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
  local port=$1 i
  for ((i = 0; i < 200; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$(basename "$0"): nothing listens on $port" >&2
  return 1
}

# stop PID...: SIGTERM, then SIGKILL after 10 s, and reap.
stop() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

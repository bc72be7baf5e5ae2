// Package bench is wsbench, wsbridge's load generator: scenarios, worker
// processes, and result reporting. cmd/wsbench is a thin main over Main.
//
// Connections live in bench/loadgen: a few epoll event loops (raw
// golang.org/x/sys/unix, no goroutine per connection) with a timer heap,
// allocation-free latency histograms (log-linear, 3 % resolution) and
// source addresses cycled over 127.0.x.y with IP_BIND_ADDRESS_NO_PORT, so
// each source has the whole ephemeral port range towards the bridge.
//
// One process holds at most PerProcess (19,000) connections: the machine's
// open-files hard limit is 20,000. Past that, Run re-executes wsbench with
// the hidden WorkerArg, one worker per share; each worker reports its
// counters and latency buckets as JSON lines on stdout four times a second
// and takes "quiesce", "drop" and "stop" on stdin; the parent merges them
// into one progress line per second and one result.
//
// Scenarios:
//
//   - ramp: Conns connections opened evenly over Ramp, each sending one
//     message every Interval (random phase), for Duration after the ramp;
//     per-second series of connections, messages/s and p99 (-csv).
//   - throughput: Conns connections in closed loop (send, wait for the
//     echo, send); messages/s and round-trip percentiles.
//   - handshake: Conns connect-upgrade-close cycles in flight; upgrades/s.
//   - push: Conns idle clients; POST /<ClientId> on the admin API from
//     Inflight goroutines; pushes/s and delivery latency (the payload
//     carries its send time).
//   - storm: Conns clients, then all disconnected at once (dropped, or a
//     -restart-cmd restarts the bridge); reconnects use client.Backoff and
//     honour Retry-After and 1012 "retry=N"; seconds until all are back
//     and backend GETs per second.
//   - density: starts a mock backend and a wsbridge, holds Conns idle
//     connections and reports the bridge's RSS and heap per connection, then
//     messages per bridge CPU-second in a closed-loop run.
//
// Messages are "<seq> <unix ns> <padding>": the mock backend
// (bench/backend, with Sequenced) checks per-connection order and the
// echo carries the send time back for the round trip.
package bench

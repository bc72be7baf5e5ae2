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
//   - fanout: Conns clients subscribed to one channel (the mock backend's
//     GET answers Wsbridge-Subscribe); one message to all of them -rate
//     times a second (a fraction is fine: -rate 0.2), published once to
//     POST /channel/fan, or (-fanout-push) pushed to each; messages that
//     reached every connection, deliveries per bridge CPU-second, and
//     publish-to-last-delivery percentiles.
//
// Fan-out past one process: -procs spreads the subscribers over worker
// processes, whose reports carry each message's delivery count and last
// delivery time (all share one clock), summed and maxed by the parent.
// -admin takes a comma-separated list, one address per bridge, for a
// cluster of bridges that share -url's port (-reuseport) and a NATS bus
// (-cluster): messages and pushes go to the first address and reach the
// other nodes' clients through the cluster; the bridge CPU is the sum of
// every listed bridge's process_cpu_seconds_total, and one that does not
// answer fails the run. bench/fanout100k.sh sets this up for 100,000
// subscribers (6 bridges, 6 workers, a nats-server).
//
// Messages are "<seq> <unix ns> <padding>": the mock backend
// (bench/backend, with Sequenced) checks per-connection order and the
// echo carries the send time back for the round trip.
package bench

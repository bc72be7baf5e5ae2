// Package loadgen is wsbench's load generator: many thousands of WebSocket
// clients per process with no goroutine per connection.
//
// A Gen runs a few loops (loop.go), each its own epoll instance on its own
// goroutine, holding non-blocking sockets with a small state machine per
// connection: connect, upgrade, open, closing. Each loop keeps a timer heap
// of its connections' next deadlines (heap.go) and reads and parses what its
// sockets deliver itself (read.go): the upgrade response, then frames,
// whose payloads carry a send timestamp so replies and pushes give a
// latency (hist.go).
//
// What the connections do once open is the Mode: hold idle (push, storm and
// density scenarios), send one message per Interval (ramp), send the next
// message as soon as the reply came (throughput), or connect and close over
// and over (handshake). Lost connections reconnect with client.Backoff,
// honouring Retry-After and the close codes' hints, when Config.Reconnect is
// set. Counters are per loop and read by any goroutine; Gen.Totals sums
// them.
//
// The package only runs on Linux (epoll).
package loadgen

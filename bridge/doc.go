// Package bridge is wsbridge's backend side: it turns connection events into
// HTTP calls to the user's API and hands the results back to the engine.
//
// The engine's side of the seam is Session, one per connection, embedded in
// the connection's state and used only on its event loop: it owns the
// connection's ids, the message being assembled, the per-connection
// pipeline, request building (forwarded headers, Wsbridge-Replaces,
// Wsbridge-Close-Code) and every pooled Call, acquired and released there.
// The engine asks in plain terms (Upgrade and Authorize for the upgrade's
// GET, Message for a client message, Close and Delete for the DELETE) and
// gets every answer back as a plain Reply through one callback,
// Owner.Finished, run on the loop by Session.Finish.
//
//	engine                       bridge
//	Session.Message ──────────▶  POST built, queued behind the one in flight
//	                             Client.Submit ─▶ worker ─▶ backend
//	conn.Complete   ◀────────── worker: the Call back (only posted to the loop)
//	Session.Finish  ──────────▶  next POST submitted; Reply built
//	conn.Finished   ◀────────── Reply (status, body, binary); Call released
//
// Files: session.go (the seam), request.go (where a backend call is built),
// orphan.go (the DELETE of a connection a crashed process left open, from
// the journal), call.go (Call and its pool), client.go (workers, queue,
// classification),
// pipelined.go (HTTP/1.1 pipelining), breaker.go, probe.go and stale.go
// (the circuit breaker, its probes, sockets the backend closed), batch.go
// (-backend-batch-url: many connections' POSTs in one call).
//
// A Client holds a pool of worker goroutines, each with its own backend
// socket, fed by a FIFO queue: at most MaxConns (-backend-max-conns) whose
// call is not stuck, plus at most MaxStuck whose call has been in flight for
// longer than StuckAfter, so a few stuck calls cannot take every socket. The
// engine never blocks on the backend: a Session fills a Call (a pooled
// request/response pair) and submits it, and the Call comes back through its
// Completer, which runs on a worker goroutine and must only hand the Call
// over to the connection's event loop.
//
// The protocol, compatible with ws2api:
//
//	upgrade  -> GET    <backend><ClientId>[?query]  ("ok" body accepts)
//	message  -> POST   <backend><ClientId>          (non-empty 2xx reply goes back)
//	close    -> DELETE <backend><ClientId>          (once, after the last POST)
//
// Every call carries Wsbridge-Connection-Id and X-Forwarded-For. Per
// connection, the Session keeps one call in flight and the rest in arrival
// order; DELETE is retried a few times when the backend fails. A circuit
// breaker sheds GETs while the backend is unreachable, so a dead backend is
// not hammered by every reconnecting client, and probes it by itself
// (probe.go). An idle socket the backend closed is never taken for the
// backend being down (stale.go).
package bridge

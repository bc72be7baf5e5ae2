// Package bridge is wsbridge's backend side: it turns connection events into
// HTTP calls to the user's API and hands the results back to the engine.
//
// A Client holds a pool of worker goroutines, each with its own backend
// socket, fed by a FIFO queue: at most MaxConns (-backend-max-conns) whose
// call is not stuck, plus at most MaxStuck whose call has been in flight for
// longer than StuckAfter, so a few stuck calls cannot take every socket. The engine never blocks on the
// backend: it fills a Call (a pooled request/response pair), submits it, and
// gets it back through the Call's Completer, which runs on a worker
// goroutine and must only hand the Call over to the connection's event loop.
//
// The protocol, compatible with ws2api:
//
//	upgrade  -> GET    <backend><ClientId>[?query]  ("ok" body accepts)
//	message  -> POST   <backend><ClientId>          (non-empty 2xx reply goes back)
//	close    -> DELETE <backend><ClientId>          (once, after the last POST)
//
// Every call carries Wsbridge-Connection-Id and X-Forwarded-For. Per
// connection, a Pipeline keeps one call in flight and the rest in arrival
// order; DELETE is retried a few times when the backend fails. A circuit
// breaker sheds GETs while the backend is unreachable, so a dead backend is
// not hammered by every reconnecting client, and probes it by itself
// (probe.go). An idle socket the backend closed is never taken for the
// backend being down (stale.go).
package bridge

// Package adminapi is wsbridge's admin HTTP API (docs/protocol.md, "The
// admin API"): push, kick and info per ClientId, /metrics,
// /healthz, /readyz and, with -pprof, /debug/pprof/, behind an optional
// bearer token that /healthz and /readyz do not need.
//
// It holds only the HTTP side: routing, the token check, parsing and
// answering. What a call does to a connection is the engine's, run on that
// connection's event loop and answered back to the fasthttp goroutine:
//
//	POST /<id>    ──▶ engine.Server.Push   ──▶ the client's loop writes the frame
//	DELETE /<id>  ──▶ engine.Server.Kick   ──▶ the loop closes the connection
//	GET /<id>     ──▶ engine.Server.Lookup ──▶ the loop reads the counters
//	GET /readyz   ──▶ engine.Server.Ready
//
// FuzzAdmin drives arbitrary calls through the handler against an engine
// with two open clients.
package adminapi

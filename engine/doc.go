// Package engine is wsbridge's WebSocket side: a gnet v2 event handler that
// holds very many connections on a few epoll event loops, with no goroutine
// per connection.
//
// Each connection is a small state machine, touched only on its own event
// loop:
//
//	handshake ──▶ held ──▶ authorising ──▶ open ──▶ closing
//	                 ╰──────────▶ takeover ──╯
//
// handshake reads the upgrade request (protocol.ParseRequest), after a
// PROXY protocol header (protocol.ParseProxy) if a trusted proxy sent one,
// and admits it (-max-conns, the per-address limits, at most
// MaxWaitersPerClientID waiting per ClientId); held waits
// while the same ClientId's previous lifecycle ends at the backend;
// authorising waits for the backend's GET; takeover waits for the DELETE of
// the open connection this one replaces; open streams frames into POSTs;
// closing sends what is still queued, then the DELETE.
//
// Nothing on a loop blocks. Backend calls go to bridge.Client workers and
// come back through a per-loop mailbox (loop.post), which wakes the loop
// once however many results are waiting. Timers (handshake timeout, hold
// bound, heartbeat, close wait, drain) live in a per-loop timing wheel whose
// cost per tick is the number of connections due, not the number held.
//
// Where things are, by file:
//
//	handler.go    gnet's events (OnOpen, OnTraffic, OnClose)
//	conn.go       the connection's state, setPhase (the one place its phase
//	              changes), the timer, Finished (the one callback from bridge)
//	handshake.go  the handshake phases: the upgrade read (protocol.ParseRequest),
//	              admission, the held and authorising GET, refusals, the 101
//	open.go       the open phase: frames decoded (protocol.Decoder), backpressure,
//	              send (the one send path: replies, pushes, pongs), heartbeat
//	close.go      closing: closeWith, the close frame, end and the DELETE, OnClose
//	reason.go     closeCode (the one switch from reason to close code) and the
//	              refusal table (reason, HTTP status, body)
//	loop.go       the per-loop mailbox and timing wheel
//	deflate.go    permessage-deflate (-deflate): the loop's compressor and
//	              inflater (no context takeover, so no per-connection state),
//	              inflating bounded by -max-message
//	registry.go   the ClientId registry; admin.go push, kick and info (the
//	              admin HTTP API is engine/adminapi)
//	journal.go    -journal (bridge/journal): the opened record before the
//	              101, gone once the DELETE is answered, the orphans' replay
//
// One message's path (engine/ never builds a backend request: it hands
// bridge.Session plain values and gets a bridge.Reply back):
//
//	OnTraffic ─▶ readFrames ─▶ Decoder.Next ─▶ Session.Message ─▶ Client.Submit
//	                                                                  │ worker: POST
//	send ◀─ onPOST ◀─ Finished(Reply) ◀─ Session.Finish ◀─ loop.post ◀─ conn.Complete
//	 │
//	 ╰─▶ Writev to the client (-max-outbound checked: 1013 when over)
//
// Locking: a connection's fields belong to its loop. The ClientId registry
// (registry.go) is the only state shared between loops; its shard locks are
// never held across I/O and are taken before a loop's mailbox lock, never
// after.
package engine

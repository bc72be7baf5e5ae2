package protocol

import (
	"bytes"

	"github.com/gobwas/ws"
)

// Close codes wsbridge sends besides RFC 6455's own, and the two RFC codes
// it gives a meaning of its own (docs/protocol.md, "Close codes"). The
// engine, the client library and the tests all use these.
const (
	CloseReplaced  ws.StatusCode = 4000 // replaced by a newer connection with the same ClientId: do not reconnect
	CloseKicked    ws.StatusCode = 4001 // disconnected by the backend (admin DELETE): do not reconnect
	CloseHeartbeat ws.StatusCode = 4002 // no answer to a ping within the pong timeout: reconnect
	CloseRestart   ws.StatusCode = 1012 // restart or drain; the reason is "retry=<seconds>": reconnect after that
	CloseTryAgain  ws.StatusCode = 1013 // slow consumer or overload: reconnect later, with backoff
	CloseGone      ws.StatusCode = 1006 // reported to the backend only: the connection ended without a close frame
)

// Header names of the backend protocol, in canonical form.
const (
	// HeaderConnectionID is on every backend call: the connection's id,
	// unique across the process's life and restarts.
	HeaderConnectionID = "Wsbridge-Connection-Id"
	// HeaderReplaces is on a GET that would replace an open connection
	// with the same ClientId: that connection's id.
	HeaderReplaces = "Wsbridge-Replaces"
	// HeaderCloseCode is on a DELETE: the code of the close that ended
	// the connection.
	HeaderCloseCode = "Wsbridge-Close-Code"
	// HeaderProbe is on the OPTIONS request with which the bridge probes a
	// backend while its circuit is open.
	HeaderProbe = "Wsbridge-Probe"
)

var ctOctetStream = []byte("application/octet-stream")

// IsBinaryContentType reports whether a message with Content-Type ct is
// sent to the client as a binary message: ct is application/octet-stream,
// in any case, parameters and surrounding white space ignored. Anything
// else, a missing type included, is text. Backend replies and admin pushes
// both follow it.
func IsBinaryContentType(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(TrimASCIISpace(ct), ctOctetStream)
}

// TrimASCIISpace returns b without leading and trailing ASCII white space
// (space, tab, CR, LF, FF, VT); it never allocates.
func TrimASCIISpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'
}

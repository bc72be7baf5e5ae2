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
	// HeaderSubscribe on a backend's accepting GET answer or 2xx POST
	// answer joins the connection to the comma-separated channels.
	HeaderSubscribe = "Wsbridge-Subscribe"
	// HeaderUnsubscribe on a 2xx POST answer makes the connection leave
	// the comma-separated channels.
	HeaderUnsubscribe = "Wsbridge-Unsubscribe"
)

// MaxChannelLen is the longest channel name.
const MaxChannelLen = 128

// ValidChannel reports whether name is a valid channel name: 1 to
// MaxChannelLen bytes of A-Z a-z 0-9 . _ ~ - : (a ClientId's characters and
// the colon, for names like "room:42").
func ValidChannel(name []byte) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for _, c := range name {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '~' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// NextChannel splits the first name off a comma-separated list of channel
// names (a Wsbridge-Subscribe or Wsbridge-Unsubscribe value): name is
// trimmed of ASCII white space and may be empty or invalid (check it with
// ValidChannel); rest is what follows the comma, nil at the end. It never
// allocates; name and rest alias list.
func NextChannel(list []byte) (name, rest []byte) {
	if i := bytes.IndexByte(list, ','); i >= 0 {
		return TrimASCIISpace(list[:i]), list[i+1:]
	}
	return TrimASCIISpace(list), nil
}

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

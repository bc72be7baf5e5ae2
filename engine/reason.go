package engine

import "github.com/gobwas/ws"

// closeReason is why a connection ended. Every reason maps to one RFC 6455
// close code in closeCode and to one label of
// wsbridge_connections_closed_total.
type closeReason uint8

const (
	crClientClose  closeReason = iota // the client sent a close frame
	crClientGone                      // TCP ended without a close frame
	crProtocol                        // frame violating RFC 6455
	crInvalidUTF8                     // text message or close reason not UTF-8
	crTooBig                          // message over -max-message
	crSlowConsumer                    // outbound buffer over its limit
	crOverload                        // too many messages queued for the backend
	crReplaced                        // a newer connection with the same ClientId
	crKicked                          // DELETE /<id> on the admin API
	crHeartbeat                       // no frame within -pong-timeout of a ping
	crDrain                           // graceful shutdown
	crInternal                        // a bug or an unexpected failure
	numCloseReasons
)

// String is the metric label.
func (r closeReason) String() string {
	switch r {
	case crClientClose:
		return "client_close"
	case crClientGone:
		return "client_gone"
	case crProtocol:
		return "protocol_error"
	case crInvalidUTF8:
		return "invalid_utf8"
	case crTooBig:
		return "too_big"
	case crSlowConsumer:
		return "slow_consumer"
	case crOverload:
		return "overload"
	case crReplaced:
		return "replaced"
	case crKicked:
		return "kicked"
	case crHeartbeat:
		return "heartbeat"
	case crDrain:
		return "drain"
	}
	return "internal"
}

// Close codes wsbridge sends besides RFC 6455's own (DESIGN §6).
const (
	CodeReplaced  ws.StatusCode = 4000 // replaced by a newer connection with the same ClientId: do not reconnect
	CodeKicked    ws.StatusCode = 4001 // disconnected by the backend: do not reconnect
	CodeHeartbeat ws.StatusCode = 4002 // heartbeat timeout: reconnect
	CodeRestart   ws.StatusCode = 1012 // service restart or drain: reconnect after the suggested delay
	CodeTryAgain  ws.StatusCode = 1013 // slow consumer or overload: try again later
	CodeGone      ws.StatusCode = 1006 // reported to the backend only: no close frame
)

// closeCode maps a bridge-side close reason to the code sent to the client
// and reported in Wsbridge-Close-Code. For crClientClose the client's own
// code is used instead.
func closeCode(r closeReason) ws.StatusCode {
	switch r {
	case crClientClose:
		return ws.StatusNormalClosure
	case crClientGone:
		return CodeGone
	case crProtocol:
		return ws.StatusProtocolError
	case crInvalidUTF8:
		return ws.StatusInvalidFramePayloadData
	case crTooBig:
		return ws.StatusMessageTooBig
	case crSlowConsumer, crOverload:
		return CodeTryAgain
	case crReplaced:
		return CodeReplaced
	case crKicked:
		return CodeKicked
	case crHeartbeat:
		return CodeHeartbeat
	case crDrain:
		return CodeRestart
	}
	return ws.StatusInternalServerError
}

// closeReasonFor maps a protocol violation's close code to its reason.
func closeReasonFor(code ws.StatusCode) closeReason {
	switch code {
	case ws.StatusProtocolError:
		return crProtocol
	case ws.StatusInvalidFramePayloadData:
		return crInvalidUTF8
	case ws.StatusMessageTooBig:
		return crTooBig
	}
	return crInternal
}

// refuseReason is why an upgrade got no 101; the label of
// wsbridge_upgrades_refused_total.
type refuseReason uint8

const (
	rrBadRequest       refuseReason = iota // malformed request, bad key or ClientId (400, 405, 505)
	rrNotWebSocket                         // plain HTTP or wrong version (426)
	rrTooLarge                             // request head over 8 KiB (431)
	rrOrigin                               // Origin not in -allow-origin (403)
	rrHandshakeTimeout                     // request not complete within -handshake-timeout
	rrBackendRefused                       // backend answered 4xx or a body other than ok
	rrBackendError                         // backend unreachable or 1xx/3xx/5xx (502)
	rrBackendTimeout                       // backend did not answer in time (504)
	rrCircuitOpen                          // circuit breaker open (503)
	rrMaxConns                             // -max-conns reached (503)
	rrAdmission                            // -accept-rate exceeded (503)
	rrDraining                             // shutting down (503)
	rrHoldTimeout                          // previous lifecycle of the ClientId did not end in time (503)
	rrFDLimit                              // out of file descriptors (503)
	rrClientIDBusy                         // MaxWaitersPerClientID upgrades already wait for the ClientId (429)
	rrPerIP                                // -max-conns-per-ip or -max-pending-per-ip reached for the client's address (429)
	rrProxyHeader                          // PROXY protocol header malformed, or from a peer not in -trusted-proxies (400)
	numRefuseReasons
)

// String is the metric label.
func (r refuseReason) String() string {
	switch r {
	case rrBadRequest:
		return "bad_request"
	case rrNotWebSocket:
		return "not_websocket"
	case rrTooLarge:
		return "too_large"
	case rrOrigin:
		return "origin"
	case rrHandshakeTimeout:
		return "handshake_timeout"
	case rrBackendRefused:
		return "backend_refused"
	case rrBackendError:
		return "backend_error"
	case rrBackendTimeout:
		return "backend_timeout"
	case rrCircuitOpen:
		return "circuit_open"
	case rrMaxConns:
		return "max_conns"
	case rrAdmission:
		return "admission"
	case rrDraining:
		return "draining"
	case rrHoldTimeout:
		return "hold_timeout"
	case rrClientIDBusy:
		return "client_id_busy"
	case rrPerIP:
		return "per_ip"
	case rrProxyHeader:
		return "proxy_header"
	}
	return "fd_limit"
}

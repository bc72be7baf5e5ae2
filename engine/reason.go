package engine

import (
	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/protocol"
)

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

// closeCode maps a bridge-side close reason to the code sent to the client
// and reported in Wsbridge-Close-Code (the codes are protocol's, defined
// once for the engine, the client library and the tests). For crClientClose the client's own
// code is used instead.
func closeCode(r closeReason) ws.StatusCode {
	switch r {
	case crClientClose:
		return ws.StatusNormalClosure
	case crClientGone:
		return protocol.CloseGone
	case crProtocol:
		return ws.StatusProtocolError
	case crInvalidUTF8:
		return ws.StatusInvalidFramePayloadData
	case crTooBig:
		return ws.StatusMessageTooBig
	case crSlowConsumer, crOverload:
		return protocol.CloseTryAgain
	case crReplaced:
		return protocol.CloseReplaced
	case crKicked:
		return protocol.CloseKicked
	case crHeartbeat:
		return protocol.CloseHeartbeat
	case crDrain:
		return protocol.CloseRestart
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
	rrJournal                              // -journal broken or its write queue full (503)
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
	case rrJournal:
		return "journal"
	}
	return "fd_limit"
}

// refusal is one way an upgrade is answered without 101: the reason (the
// metric label), the HTTP status and the body. 503 and 429 carry
// Retry-After. Every refusal the engine writes is in this table, but a
// backend's own refusal (its status and body relayed, refusalBackend) and
// a malformed request or PROXY header (protocol's answer, refuseMalformed).
type refusal struct {
	why    refuseReason
	status int
	body   string
}

var (
	refOrigin           = refusal{rrOrigin, 403, "origin not allowed\n"}
	refDraining         = refusal{rrDraining, 503, "shutting down, retry shortly\n"}
	refMaxConns         = refusal{rrMaxConns, 503, "too many connections\n"}
	refAcceptRate       = refusal{rrAdmission, 503, "too many new connections, retry shortly\n"}
	refMaxPending       = refusal{rrAdmission, 503, "too many upgrades waiting for the backend, retry shortly\n"}
	refCircuitOpen      = refusal{rrCircuitOpen, 503, "backend unavailable, retry shortly\n"}
	refPerIPConns       = refusal{rrPerIP, 429, "too many connections from this address, retry later\n"}
	refPerIPPending     = refusal{rrPerIP, 429, "too many upgrades from this address waiting for the backend, retry shortly\n"}
	refClientIDBusy     = refusal{rrClientIDBusy, 429, "too many upgrades waiting for this client id, retry shortly\n"}
	refHoldTimeout      = refusal{rrHoldTimeout, 503, "previous connection still closing, retry shortly\n"}
	refHandshakeTimeout = refusal{rrHandshakeTimeout, 408, "request not received in time\n"}
	refBackendTimeout   = refusal{rrBackendTimeout, 504, "backend timeout\n"}
	refBackendError     = refusal{rrBackendError, 502, "backend error\n"}
	refFDLimit          = refusal{rrFDLimit, 503, "server full, retry shortly\n"} // written before the request is read, with a fixed Retry-After (handler.go)
	// refusalBackend is the backend's own refusal: its status (a 2xx with
	// a body other than ok becomes 403) and body are relayed.
	refusalBackend = refusal{rrBackendRefused, 403, ""}
	// refJournal: the -journal broke or its disk does not keep up
	// (journal.go).
	refJournal = refusal{rrJournal, 503, "cannot record the connection, retry shortly\n"}
)

// refuseReasonForStatus is the reason of protocol's answer to a malformed
// request, by its status.
func refuseReasonForStatus(status int) refuseReason {
	switch status {
	case 426:
		return rrNotWebSocket
	case 431:
		return rrTooLarge
	}
	return rrBadRequest
}

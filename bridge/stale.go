package bridge

import (
	"errors"
	"io"
	"syscall"
)

// Stale connections.
//
// A backend that restarts, or times out its idle keep-alive connections,
// closes sockets the workers still hold. Such a socket says nothing about
// the backend: the backend may be up again (a restart) or never have been
// down. So:
//   - before a request goes out on a socket that has carried one already,
//     the worker peeks at it without blocking (peek_unix.go); a socket the
//     backend closed (EOF, reset) or wrote to unasked is closed and the
//     request goes out on a new one. Nothing was sent, so this holds for
//     every method.
//   - the first such socket is taken as a sign for all of them: every
//     socket dialed before it is dropped before its next use (dropConns).
//   - if the backend closed a reused socket before answering anything on it
//     (the close crossed our write), a GET or DELETE goes again once on a new
//     socket, and a POST, which the backend may have processed, fails as
//     unreachable. Neither counts towards the circuit breaker.

// staleError wraps the error of a call that failed only because the reused
// socket it went out on had been closed by the backend.
type staleError struct{ err error }

func (e *staleError) Error() string {
	return "bridge: the backend closed an idle connection before answering: " + e.err.Error()
}

func (e *staleError) Unwrap() error { return e.err }

// isStale reports whether call failed on a stale socket.
func isStale(call *Call) bool {
	if call.Err == nil {
		return false
	}
	var se *staleError
	return errors.As(call.Err, &se)
}

// closedBeforeAnswer reports whether err, from a request's write or its
// response's first byte, means the peer had closed or reset the socket.
// fasthttp reports any failure to read the first byte of a response as
// io.EOF.
func closedBeforeAnswer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// dropConns makes every worker close the socket it holds before its next
// call: it was dialed before the sign that the backend dropped its sockets.
func (c *Client) dropConns() { c.connGen.Add(1) }

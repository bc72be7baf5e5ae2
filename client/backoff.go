package client

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/protocol"
)

// Backoff is a full-jitter exponential backoff policy ("Exponential Backoff
// and Jitter", AWS Architecture Blog, 2015): the n-th retry waits a uniformly
// random time in [0, min(Max, Base·2ⁿ)), so a crowd of clients that lost
// their server at the same instant spreads out instead of coming back in
// lock-step.
//
// A server hint (Retry-After on a 503 refusal, retry=N in a 1012 close
// reason) is a floor: the wait is the hint plus the jittered term, so no
// client comes back early and the crowd still spreads.
//
// The zero value uses Base 500 ms and Max 30 s. Next is safe for concurrent
// use; Rand, when set, makes the sequence deterministic (tests).
type Backoff struct {
	Base time.Duration // first retry's upper bound; 0 means 500 ms
	Max  time.Duration // cap of the jittered term; 0 means 30 s
	Rand *rand.Rand    // nil means the global source

	mu sync.Mutex
}

// Defaults chosen so that a 250k-client storm spreads over tens of seconds
// after a few attempts, while a single flaky client is back in under a second.
const (
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
)

// Next returns how long to wait before retry number attempt (0 for the
// first retry after a loss), given the server's hint retryAfter (0 if none).
func (b *Backoff) Next(attempt int, retryAfter time.Duration) time.Duration {
	base, maxd := b.Base, b.Max
	if base <= 0 {
		base = DefaultBackoffBase
	}
	if maxd <= 0 {
		maxd = DefaultBackoffMax
	}
	if attempt < 0 {
		attempt = 0
	}
	ceil := maxd
	if attempt < 62 && base <= maxd>>uint(min(attempt, 62)) {
		ceil = base << uint(attempt)
	}
	var j time.Duration
	if ceil > 0 {
		if b.Rand != nil {
			b.mu.Lock()
			j = time.Duration(b.Rand.Int64N(int64(ceil)))
			b.mu.Unlock()
		} else {
			j = time.Duration(rand.Int64N(int64(ceil)))
		}
	}
	if retryAfter < 0 {
		retryAfter = 0
	}
	return retryAfter + j
}

// Action is what a client should do after the server closed its connection.
type Action uint8

const (
	// Reconnect after Backoff.Next(attempt, hint).
	Reconnect Action = iota
	// Stop: the server does not want this client back (do not reconnect).
	Stop
)

func (a Action) String() string {
	if a == Stop {
		return "stop"
	}
	return "reconnect"
}

// Close codes wsbridge sends that a client acts on (docs/protocol.md,
// "Close codes"); the values are protocol's.
const (
	CodeRestart   = protocol.CloseRestart   // drain or restart; reason "retry=N"
	CodeTryAgain  = protocol.CloseTryAgain  // slow consumer or overload
	CodeReplaced  = protocol.CloseReplaced  // a newer connection took the ClientId
	CodeKicked    = protocol.CloseKicked    // the backend disconnected this client
	CodeHeartbeat = protocol.CloseHeartbeat // heartbeat timeout
)

// OnClose maps a close frame from the server to an action and a delay hint:
// 1012 reconnects after the retry=N seconds of its reason; 1013 reconnects
// after backoff; 4000 and 4001 stop; 4002 reconnects. Codes that say the
// client itself is at fault or was sent away on purpose (1000, 1002, 1003,
// 1007, 1008, 1009, 1010) stop too, since reconnecting would only repeat
// them; everything else (1001, 1005, 1006, 1011, 1014, other 4xxx)
// reconnects.
func OnClose(code ws.StatusCode, reason string) (Action, time.Duration) {
	switch code {
	case CodeRestart:
		return Reconnect, ParseRetry(reason)
	case CodeReplaced, CodeKicked,
		ws.StatusNormalClosure, ws.StatusProtocolError, ws.StatusUnsupportedData,
		ws.StatusInvalidFramePayloadData, ws.StatusPolicyViolation,
		ws.StatusMessageTooBig, ws.StatusMandatoryExt:
		return Stop, 0
	}
	return Reconnect, 0
}

// ParseRetry reads "retry=N" (seconds, maybe fractional) from a close reason,
// alone or among other ";"- or space-separated fields. It returns 0 when
// there is none or it does not parse; hints are capped at 10 minutes.
func ParseRetry(reason string) time.Duration {
	for _, f := range strings.FieldsFunc(reason, func(r rune) bool { return r == ';' || r == ' ' || r == ',' }) {
		v, ok := strings.CutPrefix(f, "retry=")
		if !ok {
			continue
		}
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || !(s >= 0) {
			return 0
		}
		if s > maxHint.Seconds() {
			return maxHint
		}
		return time.Duration(s * float64(time.Second))
	}
	return 0
}

// ParseRetryAfter reads an HTTP Retry-After value: delta-seconds or an
// HTTP date (relative to now). It returns 0 when it does not parse; hints
// are capped at 10 minutes.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return capHint(time.Duration(n) * time.Second)
	}
	if t, err := time.Parse(time.RFC1123, v); err == nil {
		if d := t.Sub(now); d > 0 {
			return capHint(d)
		}
	}
	return 0
}

const maxHint = 10 * time.Minute

func capHint(d time.Duration) time.Duration {
	return min(d, maxHint)
}

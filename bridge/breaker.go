package bridge

import (
	"sync"
	"sync/atomic"
	"time"
)

// BreakerConfig tunes the circuit breaker that sheds upgrade GETs while the
// backend keeps failing.
type BreakerConfig struct {
	// Failures is how many consecutive failed calls (unreachable, timeout or
	// 502/503/504) open the circuit; 0 means 20, negative disables the
	// breaker. A call that failed only because the idle socket it was sent
	// on had been closed by the backend does not count (see stale.go).
	Failures int
	// Cooldown is the wait before the first probe once the circuit is
	// open; the wait doubles while probes fail, up to MaxCooldown. 0 means
	// 100ms and 500ms: a dead backend gets two probes a second, and new
	// clients are served again within about half a second of it answering.
	Cooldown, MaxCooldown time.Duration
}

// breaker is a consecutive-failure circuit breaker. While open it sheds
// GETs and the Client probes the backend by itself (probe.go), never with
// a client's upgrade: the first probe the backend answers, or any call of
// a connected client that succeeds meanwhile, closes the circuit. POST and
// DELETE are never shed: they belong to connections the backend already
// accepted.
//
// success is on every call's path: when the circuit is closed and nothing
// failed it only loads two atomics.
type breaker struct {
	cfg BreakerConfig

	fails atomic.Int32 // consecutive failures
	open  atomic.Bool

	mu       sync.Mutex // serialises opening and closing
	openedAt time.Time
}

func newBreaker(cfg BreakerConfig) breaker {
	if cfg.Failures == 0 {
		cfg.Failures = 20
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 100 * time.Millisecond
	}
	if cfg.MaxCooldown <= 0 {
		cfg.MaxCooldown = 500 * time.Millisecond
	}
	cfg.MaxCooldown = max(cfg.MaxCooldown, cfg.Cooldown)
	return breaker{cfg: cfg}
}

// allow reports whether a GET may be sent now.
func (b *breaker) allow() bool { return !b.open.Load() }

// shedding reports whether the circuit is open.
func (b *breaker) shedding() bool { return b.open.Load() }

// success records a call the backend answered. It reports whether that
// closed the circuit, and since when it had been open.
func (b *breaker) success(now time.Time) (closed bool, openFor time.Duration) {
	if b.cfg.Failures < 0 {
		return false, 0
	}
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	if !b.open.Load() {
		return false, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return false, 0
	}
	b.open.Store(false)
	return true, now.Sub(b.openedAt)
}

// failure records a call that says the backend is down. It reports
// whether that opened the circuit.
func (b *breaker) failure(now time.Time) (opened bool) {
	if b.cfg.Failures < 0 {
		return false
	}
	if b.fails.Add(1) < int32(b.cfg.Failures) || b.open.Load() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open.Load() {
		return false
	}
	b.open.Store(true)
	b.openedAt = now
	return true
}

package bridge

import (
	"sync"
	"time"
)

// BreakerConfig tunes the circuit breaker that sheds upgrade GETs while the
// backend keeps failing.
type BreakerConfig struct {
	// Failures is how many consecutive failed calls (unreachable, timeout or
	// 5xx) open the circuit; 0 means 20, negative disables the breaker.
	Failures int
	// Cooldown is the first open period; it doubles while probes fail, up
	// to MaxCooldown. 0 means 1s and 30s.
	Cooldown, MaxCooldown time.Duration
}

// breaker is a consecutive-failure circuit breaker. While open it sheds
// GETs; after the cooldown one GET is let through as a probe (half-open):
// its success closes the circuit, its failure opens it again for twice as
// long. POST and DELETE are never shed: they belong to connections the
// backend already accepted.
type breaker struct {
	cfg BreakerConfig

	mu       sync.Mutex
	fails    int
	openTill time.Time // zero: closed
	cooldown time.Duration
	probing  bool
}

func newBreaker(cfg BreakerConfig) breaker {
	if cfg.Failures == 0 {
		cfg.Failures = 20
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = time.Second
	}
	if cfg.MaxCooldown <= 0 {
		cfg.MaxCooldown = 30 * time.Second
	}
	return breaker{cfg: cfg, cooldown: cfg.Cooldown}
}

// allow reports whether a GET may be sent now.
func (b *breaker) allow(now time.Time) bool {
	if b.cfg.Failures < 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openTill.IsZero() {
		return true
	}
	if now.Before(b.openTill) || b.probing {
		return false
	}
	b.probing = true
	return true
}

func (b *breaker) shedding(now time.Time) bool {
	if b.cfg.Failures < 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.openTill.IsZero() && (now.Before(b.openTill) || b.probing)
}

func (b *breaker) success() {
	if b.cfg.Failures < 0 {
		return
	}
	b.mu.Lock()
	b.fails = 0
	b.openTill = time.Time{}
	b.cooldown = b.cfg.Cooldown
	b.probing = false
	b.mu.Unlock()
}

func (b *breaker) failure(now time.Time) {
	if b.cfg.Failures < 0 {
		return
	}
	b.mu.Lock()
	b.fails++
	switch {
	case b.probing:
		b.probing = false
		b.cooldown = min(2*b.cooldown, b.cfg.MaxCooldown)
		b.openTill = now.Add(b.cooldown)
	case b.openTill.IsZero() && b.fails >= b.cfg.Failures:
		b.openTill = now.Add(b.cooldown)
	}
	b.mu.Unlock()
}

package client

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestBackoffBounds(t *testing.T) {
	b := &Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second, Rand: rand.New(rand.NewPCG(1, 2))}
	for attempt := 0; attempt < 100; attempt++ {
		ceil := min(100*time.Millisecond<<min(attempt, 20), 2*time.Second)
		for range 50 {
			d := b.Next(attempt, 0)
			if d < 0 || d >= ceil {
				t.Fatalf("Next(%d, 0) = %v, want in [0, %v)", attempt, d, ceil)
			}
		}
	}
}

func TestBackoffDeterministic(t *testing.T) {
	seq := func() []time.Duration {
		b := &Backoff{Rand: rand.New(rand.NewPCG(42, 42))}
		var out []time.Duration
		for i := range 10 {
			out = append(out, b.Next(i, 0))
		}
		return out
	}
	a, c := seq(), seq()
	for i := range a {
		if a[i] != c[i] {
			t.Fatalf("attempt %d: got %v and %v with the same seed", i, a[i], c[i])
		}
	}
}

func TestBackoffJitterSpreads(t *testing.T) {
	// Full jitter: a crowd at the same attempt spreads over the whole window.
	b := &Backoff{Base: time.Second, Max: time.Minute, Rand: rand.New(rand.NewPCG(7, 7))}
	var lo, hi int
	for range 1000 {
		d := b.Next(3, 0) // window [0, 8 s)
		if d < 2*time.Second {
			lo++
		}
		if d >= 6*time.Second {
			hi++
		}
	}
	if lo < 150 || hi < 150 {
		t.Fatalf("1000 draws in [0, 8s): got %d below 2s and %d above 6s, want ~250 each", lo, hi)
	}
}

func TestBackoffHonoursHint(t *testing.T) {
	b := &Backoff{Base: 500 * time.Millisecond, Max: 10 * time.Second, Rand: rand.New(rand.NewPCG(3, 3))}
	for attempt := range 5 {
		d := b.Next(attempt, 3*time.Second)
		ceil := min(500*time.Millisecond<<attempt, 10*time.Second)
		if d < 3*time.Second || d >= 3*time.Second+ceil {
			t.Fatalf("Next(%d, 3s) = %v, want in [3s, 3s+%v)", attempt, d, ceil)
		}
	}
	var zero Backoff
	if d := zero.Next(0, 0); d < 0 || d >= DefaultBackoffBase {
		t.Fatalf("zero Backoff: Next(0, 0) = %v, want in [0, %v)", d, DefaultBackoffBase)
	}
	if d := zero.Next(1000, 0); d >= DefaultBackoffMax {
		t.Fatalf("zero Backoff: Next(1000, 0) = %v, want < %v", d, DefaultBackoffMax)
	}
}

func TestOnClose(t *testing.T) {
	for _, tc := range []struct {
		code   ws.StatusCode
		reason string
		act    Action
		hint   time.Duration
	}{
		{1012, "retry=3", Reconnect, 3 * time.Second},
		{1012, "draining; retry=1.5", Reconnect, 1500 * time.Millisecond},
		{1012, "", Reconnect, 0},
		{1012, "retry=abc", Reconnect, 0},
		{1012, "retry=99999", Reconnect, 10 * time.Minute},
		{1013, "slow consumer", Reconnect, 0},
		{4000, "replaced", Stop, 0},
		{4001, "bye", Stop, 0},
		{4002, "heartbeat", Reconnect, 0},
		{1006, "", Reconnect, 0},
		{1011, "", Reconnect, 0},
		{1000, "", Stop, 0},
		{1009, "", Stop, 0},
	} {
		act, hint := OnClose(tc.code, tc.reason)
		if act != tc.act || hint != tc.hint {
			t.Errorf("OnClose(%d, %q) = %v %v, want %v %v", tc.code, tc.reason, act, hint, tc.act, tc.hint)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"3", 3 * time.Second},
		{" 10 ", 10 * time.Second},
		{"", 0},
		{"-1", 0},
		{"soon", 0},
		{"Wed, 01 Jan 2025 00:00:30 GMT", 30 * time.Second},
		{"Tue, 31 Dec 2024 23:00:00 GMT", 0},
		{"100000", 10 * time.Minute},
	} {
		if got := ParseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

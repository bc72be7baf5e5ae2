package bench

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
)

// The defaults (-backend-pipeline 16 with -backend-adapt) through the
// built binary: against a fast backend the bridge settles on a few sockets and
// pipelines on them, every connection's messages still in order (the
// mock backend checks); against a PHP-FPM-like pool it never pipelines
// and keeps every worker busy.
func TestAdaptivePipelining(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge and runs load")
	}
	if raceEnabled {
		// The mock backend runs in this process: with the race detector
		// every call is slow, and the bridge rightly does not pipeline.
		t.Skip("load test: run without -race")
	}
	throughput := func(p *bridgetest.Proc, prefix string, conns int, d time.Duration) *Result {
		return run(t, &Config{Scenario: Throughput, URL: "ws://" + p.Listen, Admin: p.Admin, Backend: "none",
			IDPrefix: prefix, Conns: conns, Duration: d, Size: 64, Sources: 8, Procs: 1, Timeout: 10 * time.Second,
			BackoffBase: 200 * time.Millisecond, BackoffMax: 2 * time.Second})
	}
	gauge := func(p *bridgetest.Proc, name string) float64 {
		v, ok := scrapeFloat(p.Admin, name)
		if !ok {
			t.Fatalf("no %s on %s/metrics", name, p.Admin)
		}
		return v
	}

	t.Run("fast", func(t *testing.T) {
		be, p := setup(t) // Sequenced: a message out of order is a violation
		res := throughput(p, "fast", 300, 4*time.Second)
		sane(t, res, 300)
		limit, piped := gauge(p, "wsbridge_backend_sockets_limit"), gauge(p, "wsbridge_backend_pipelined_calls_total")
		posts := float64(be.Posts.Load())
		t.Logf("%.0f msgs/s; %v sockets; %.0f of %.0f POSTs pipelined", res.MsgsPerSec, limit, piped, posts)
		if limit >= 64 || piped < posts/2 {
			t.Fatalf("fast backend: %v sockets, %.0f of %.0f POSTs pipelined; want fewer than the 64 it starts with, most pipelined", limit, piped, posts)
		}
	})

	// A busy host, open loop: every time the backend has to be woken up it
	// answers 15 ms late (it waited for a core), one time in 4 at once;
	// requests pipelined behind the first are answered at once. So one
	// call per socket takes 15 ms, and a batch 15 ms for all of it. 3,000
	// clients each send a message a second. Before trust was relative to
	// the typical call's time, every connection lost its trust to the 15 ms
	// answers, calls went alone through the few sockets the limit allowed
	// while the backend looked fast, and the queue grew without bound
	// (2,666 of the 3,000 msg/s delivered, p99 500 ms).
	t.Run("busy-host-open-loop", func(t *testing.T) {
		var mu sync.Mutex
		lastEnd := map[uint64]time.Time{}
		var wakes atomic.Int64
		_, p := setupWith(t, backend.Options{Sequenced: true, Hook: func(ctx *fasthttp.RequestCtx, _ *backend.Call) bool {
			mu.Lock()
			follower := time.Since(lastEnd[ctx.ConnID()]) < time.Millisecond
			mu.Unlock()
			if !follower && wakes.Add(1)%4 != 0 {
				time.Sleep(15 * time.Millisecond)
			}
			mu.Lock()
			lastEnd[ctx.ConnID()] = time.Now()
			mu.Unlock()
			return false
		}})
		const conns = 3000
		res := run(t, &Config{Scenario: Ramp, URL: "ws://" + p.Listen, Admin: p.Admin, Backend: "none",
			IDPrefix: "busy", Conns: conns, Rate: 3000, Interval: time.Second, Duration: 6 * time.Second,
			Size: 64, Sources: 8, Procs: 1, Timeout: 10 * time.Second,
			BackoffBase: 200 * time.Millisecond, BackoffMax: 2 * time.Second})
		sane(t, res, conns)
		piped := gauge(p, "wsbridge_backend_pipelined_calls_total")
		t.Logf("%.0f msgs/s of %d asked, p50 %.1f ms, p99 %.1f ms; %.0f calls pipelined, %v sockets",
			res.MsgsPerSec, conns, res.RTT.P50, res.RTT.P99, piped, gauge(p, "wsbridge_backend_sockets_limit"))
		if res.MsgsPerSec < 0.95*conns || res.RTT.P99 > 250 {
			t.Fatalf("%.0f msgs/s of %d asked, p99 %.0f ms; want at least 95 %% delivered with a p99 under 250 ms", res.MsgsPerSec, conns, res.RTT.P99)
		}
	})

	t.Run("php-fpm-like", func(t *testing.T) {
		const workers, delay = 16, 10 * time.Millisecond
		pool := make(chan struct{}, workers)
		var inside, most atomic.Int64
		_, p := setupWith(t, backend.Options{Sequenced: true, Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
			pool <- struct{}{}
			n := inside.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(delay)
			inside.Add(-1)
			<-pool
			return false
		}})
		res := throughput(p, "slow", 200, 4*time.Second)
		sane(t, res, 200)
		limit, piped := gauge(p, "wsbridge_backend_sockets_limit"), gauge(p, "wsbridge_backend_pipelined_calls_total")
		ideal := float64(workers) / delay.Seconds()
		t.Logf("%.0f msgs/s of the pool's %.0f; %v sockets, %.0f calls pipelined; %d calls inside at most", res.MsgsPerSec, ideal, limit, piped, most.Load())
		if piped != 0 || limit < workers {
			t.Fatalf("slow pool of %d: %v sockets, %.0f calls pipelined; want at least %d sockets, none pipelined", workers, limit, piped, workers)
		}
		if most.Load() < workers {
			t.Fatalf("at most %d calls inside the pool at once, want all %d workers busy", most.Load(), workers)
		}
		if res.MsgsPerSec < ideal/2 {
			t.Fatalf("%.0f msgs/s, want at least half the pool's %.0f", res.MsgsPerSec, ideal)
		}
	})
}

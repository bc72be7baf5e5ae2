package bridge

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// run submits n calls at once (from the caller's goroutine, as event loops
// do) and waits for them; it fails the test on any outcome but ok and
// returns the slowest call's time.
func runCalls(t *testing.T, c *Client, n int, prefix string) time.Duration {
	t.Helper()
	d := make(done, n)
	for i := range n {
		c.Submit(post(c, d, prefix+strconv.Itoa(i), "m"))
	}
	var slowest time.Duration
	for _, call := range d.wait(t, n) {
		if call.Outcome != OutcomeOK {
			t.Fatalf("outcome %s: %v", call.Outcome, call.Err)
		}
		slowest = max(slowest, time.Duration(call.Answered-call.Sent))
		ReleaseCall(call)
	}
	return slowest
}

// Against a fast backend the budget keeps a burst on a few sockets with
// deep batches, where a socket per call opens hundreds.
func TestBudgetFastBackendFewSockets(t *testing.T) {
	if raceEnabled {
		// Ten times slower calls deserve ten times the sockets: the
		// backend is not fast under the race detector.
		t.Skip("the backend is not fast under the race detector")
	}
	const n = 2000
	sockets := func(budget time.Duration) (conns, reads int64) {
		ln := echoServer(t, nil)
		c := newClient(t, ln.Addr().String(), Config{MaxConns: 1024, Pipeline: 32, Budget: budget, Timeout: 10 * time.Second})
		for i := range 20 { // learn the backend's speed
			runCalls(t, c, 1, "w"+strconv.Itoa(i)+"-")
		}
		for i := range 5 {
			runCalls(t, c, n, "b"+strconv.Itoa(i)+"-")
		}
		return ln.conns.Load(), ln.reads.Load()
	}
	bConns, bReads := sockets(time.Millisecond)
	fConns, fReads := sockets(0)
	t.Logf("with a 1ms budget: %d sockets, %d reads for %d requests; without: %d sockets, %d reads",
		bConns, bReads, 5*n+20, fConns, fReads)
	if bConns > 64 {
		t.Errorf("with a budget the backend saw %d sockets for a fast burst, want at most 64", bConns)
	}
	if bReads > 5*n/4 {
		t.Errorf("with a budget the backend read %d times for %d requests: hardly pipelined", bReads, 5*n)
	}
	if fConns < 4*bConns {
		t.Errorf("without a budget %d sockets, with %d: the test does not tell them apart", fConns, bConns)
	}
}

// Against a slow backend (a PHP-FPM-like 100 ms per call) the budget
// pipelines nothing and opens a socket per waiting call: a burst is served
// in parallel, not queued behind neighbours.
func TestBudgetSlowBackendKeepsParallelism(t *testing.T) {
	var inside, most atomic.Int64
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		now := inside.Add(1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		time.Sleep(100 * time.Millisecond)
		inside.Add(-1)
		ctx.SetBody(ctx.PostBody())
	})
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 1024, Pipeline: 32, Budget: time.Millisecond, Timeout: 20 * time.Second})
	for i := range 3 {
		runCalls(t, c, 1, "w"+strconv.Itoa(i)+"-")
	}
	if pc := c.PerCall(); pc < 50*time.Millisecond {
		t.Fatalf("per call %v against a 100ms backend", pc)
	}
	most.Store(0)
	const n = 300
	slowest := runCalls(t, c, n, "s")
	t.Logf("%d calls: at most %d at the backend at once, slowest %v", n, most.Load(), slowest)
	// Pipelined 32 deep the last of a batch would wait 3.2 s; queued
	// behind a few sockets, as long.
	if got := most.Load(); got < n/2 {
		t.Errorf("at most %d of %d calls were at the backend at once: they waited behind each other", got, n)
	}
	if slowest > 2*time.Second {
		t.Errorf("slowest call %v against a 100ms backend", slowest)
	}
	if got := ln.reads.Load(); got < int64(n) {
		t.Errorf("%d reads for %d requests: requests were pipelined to a slow backend", got, n)
	}
}

// A backend that slows down gets more sockets and shallower batches within
// a few calls.
func TestBudgetFollowsBackendSlowingDown(t *testing.T) {
	var slow atomic.Bool
	var inside, most atomic.Int64
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		if slow.Load() {
			now := inside.Add(1)
			for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
			}
			time.Sleep(50 * time.Millisecond)
			inside.Add(-1)
		}
		ctx.SetBody(ctx.PostBody())
	})
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 1024, Pipeline: 32, Budget: time.Millisecond, Timeout: 20 * time.Second})
	for i := range 3 {
		runCalls(t, c, 500, "f"+strconv.Itoa(i)+"-")
	}
	slow.Store(true)
	for i := range 3 {
		runCalls(t, c, 200, "s"+strconv.Itoa(i)+"-")
	}
	most.Store(0)
	slowest := runCalls(t, c, 200, "t")
	t.Logf("after slowing down: per call %v, at most %d of 200 at once, slowest %v", c.PerCall(), most.Load(), slowest)
	if got := most.Load(); got < 100 {
		t.Errorf("at most %d of 200 calls at the slowed backend at once", got)
	}
}

package bridge

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// closedLoop runs callers goroutines that each submit a call, wait for
// its answer and submit the next, total calls in all; it fails the test
// on a call that did not succeed.
func closedLoop(t *testing.T, c *Client, callers, total int) {
	t.Helper()
	var left atomic.Int64
	left.Store(int64(total))
	var wg sync.WaitGroup
	var failed atomic.Value
	for g := range callers {
		wg.Go(func() {
			d := make(done, 1)
			for i := 0; left.Add(-1) >= 0; i++ {
				c.Submit(post(c, d, "c"+strconv.Itoa(g), strconv.Itoa(i)))
				select {
				case call := <-d:
					if call.Outcome != OutcomeOK {
						failed.Store(string(call.Outcome) + ": " + errString(call.Err))
					}
					ReleaseCall(call)
				case <-time.After(20 * time.Second):
					failed.Store("no answer in 20 s")
					return
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatalf("a call failed: %v", f)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// slowPool is a backend like a PHP-FPM pool: workers requests served at
// once, each taking delay; the others wait in line. It records the most
// requests inside at once.
type slowPool struct {
	sem          chan struct{}
	inside, most atomic.Int64
	delay        atomic.Int64
}

func newSlowPool(workers int, delay time.Duration) *slowPool {
	p := &slowPool{sem: make(chan struct{}, workers)}
	p.delay.Store(int64(delay))
	return p
}

func (p *slowPool) handle(ctx *fasthttp.RequestCtx) {
	p.sem <- struct{}{}
	now := p.inside.Add(1)
	for m := p.most.Load(); now > m && !p.most.CompareAndSwap(m, now); m = p.most.Load() {
	}
	time.Sleep(time.Duration(p.delay.Load()))
	p.inside.Add(-1)
	<-p.sem
	ctx.SetBody(ctx.PostBody())
}

// Against a slow backend the client never pipelines and keeps every
// worker of the pool busy.
func TestAdaptSlowBackendKeepsParallelism(t *testing.T) {
	pool := newSlowPool(32, 20*time.Millisecond)
	ln := echoServer(t, pool.handle)
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 1024, Pipeline: 16, Adapt: true, Timeout: 10 * time.Second})
	const n = 2000
	start := time.Now()
	closedLoop(t, c, 200, n)
	took := time.Since(start)
	st := c.Adapted()
	reads := ln.reads.Load()
	t.Logf("%d calls in %v (ideal %v); limit %d, depth %d; %d reads, %d at once at most",
		n, took, time.Duration(n/32)*20*time.Millisecond, st.Limit, st.Depth, reads, pool.most.Load())
	if st.Depth != 1 {
		t.Errorf("depth %d against a 20 ms backend, want 1", st.Depth)
	}
	if st.Limit < 32 {
		t.Errorf("socket limit %d, want at least the pool's 32 workers", st.Limit)
	}
	if got := pool.most.Load(); got < 32 {
		t.Errorf("at most %d requests inside the pool at once, want all 32 workers busy", got)
	}
	if reads < n*9/10 {
		t.Errorf("%d reads for %d requests: slow requests were pipelined", reads, n)
	}
}

// feed gives c's adapter one batch sample every step from *now for d,
// with busy sockets in use and queued calls waiting, and returns the
// state after.
func feed(c *Client, now *int64, d time.Duration, step time.Duration, per time.Duration, n, busy, queued int) AdaptState {
	return feedFn(c, now, d, step, func(int) time.Duration { return per }, n, busy, queued)
}

// feedFn is feed with the i-th sample's time of a call per(i).
func feedFn(c *Client, now *int64, d time.Duration, step time.Duration, per func(i int) time.Duration, n, busy, queued int) AdaptState {
	c.mu.Lock()
	c.queued = queued
	for i, end := 0, *now+int64(d); *now < end; i, *now = i+1, *now+int64(step) {
		c.timedAt(*now, int64(per(i))*int64(n), n, min(busy, c.capLocked()))
	}
	c.queued = 0
	c.mu.Unlock()
	st := c.Adapted()
	return st
}

func adaptClient(t *testing.T) *Client {
	t.Helper()
	c, err := New(Config{Backend: "http://127.0.0.1:1/", MaxConns: 1024, Pipeline: 16, Adapt: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// The decisions, from made-up samples: a fast backend on a busy machine
// (calls of 50 µs that take ten times that while the cores are busy) gets
// a few sockets 16 deep; one that turns slow gets depth 1 at its first
// slow batch and its sockets back within about two seconds; a PHP-FPM-like
// pool of 32 workers gets at least 32 sockets, never pipelined.
func TestAdaptDecisions(t *testing.T) {
	c := adaptClient(t)
	now := int64(1e12)
	us := time.Microsecond
	// Calls take 50 µs when the backend gets the CPU at once, one batch in
	// 50; the others wait for it, ten times as long.
	busyBox := func(i int) time.Duration {
		if i%50 == 0 {
			return 50 * us
		}
		return 500 * us
	}
	st := feedFn(c, &now, 3*time.Second, time.Millisecond, busyBox, 16, 64, 500)
	if st.Limit != adaptMinLimit || st.Depth < 4 {
		t.Fatalf("fast backend on a busy machine: limit %d, depth %d, want %d sockets at least 4 deep (%+v)", st.Limit, st.Depth, adaptMinLimit, st)
	}
	// Single calls that waited for a busy core (3 ms, where a batch's
	// calls take 50 µs each) do not shrink the batches: a call's wake-up
	// is not the backend's speed, and with depth 1 on a few sockets the
	// queue would only grow.
	for range 3 {
		st = feed(c, &now, time.Millisecond, time.Millisecond, 3*time.Millisecond, 1, 4, 60)
		if st.Depth < 4 {
			t.Fatalf("after a single call of 3 ms: depth %d, want at least 4 still (%+v)", st.Depth, st)
		}
		st = feed(c, &now, time.Millisecond, time.Millisecond, 50*us, 16, 4, 60)
	}
	// It turns slow: 100 ms a call, and the 64 callers' calls wait.
	st = feed(c, &now, time.Millisecond, time.Millisecond, 100*time.Millisecond, 1, 4, 60)
	if st.Depth != 1 {
		t.Fatalf("after one slow batch: depth %d, want 1", st.Depth)
	}
	for end := now + int64(4*time.Second); now < end && st.Limit < 64; {
		st = feed(c, &now, 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond, 1, st.Limit, 64-st.Limit+1)
	}
	if st.Limit < 64 || st.Depth != 1 {
		t.Fatalf("4 s after turning slow: limit %d, depth %d, want ≥ 64 sockets, depth 1", st.Limit, st.Depth)
	}

	// A pool of 32 workers of 20 ms: with more sockets than workers a call
	// waits for a worker (recent grows with the sockets in use).
	c = adaptClient(t)
	now = int64(1e12)
	for range 500 {
		busy := c.SocketLimit()
		per := 20 * time.Millisecond * time.Duration(max(busy, 32)) / 32
		st = feed(c, &now, 20*time.Millisecond, 20*time.Millisecond/time.Duration(busy), per, 1, busy, 200)
	}
	if st.Limit < 32 || st.Depth != 1 {
		t.Fatalf("PHP-FPM-like pool of 32: limit %d, depth %d, want ≥ 32 sockets, depth 1", st.Limit, st.Depth)
	}
	if c.probeAt(now) != 0 {
		t.Fatal("a 20 ms backend was probed with a pipelined batch")
	}
}

// Probes: a backend of a millisecond a call gets a batch of adaptProbe at
// most every adaptProbeEvery.
func TestAdaptProbes(t *testing.T) {
	c := adaptClient(t)
	now := int64(1e12)
	feed(c, &now, 100*time.Millisecond, time.Millisecond, time.Millisecond, 1, 64, 100)
	c.mu.Lock()
	defer c.mu.Unlock()
	if got := c.probeAt(now); got != adaptProbe {
		t.Fatalf("probe: %d, want %d", got, adaptProbe)
	}
	if got := c.probeAt(now + int64(adaptProbeEvery) - 1); got != 0 {
		t.Fatalf("a second probe within adaptProbeEvery: %d", got)
	}
	if got := c.probeAt(now + int64(adaptProbeEvery)); got != adaptProbe {
		t.Fatalf("probe after adaptProbeEvery: %d, want %d", got, adaptProbe)
	}
}

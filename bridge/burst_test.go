package bridge

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// A burst of calls that arrives while a worker sits idle is served in
// parallel: every call beyond the idle workers starts a worker of its own
// (room permitting), instead of waiting behind the one woken worker.
func TestBurstAfterIdleRunsInParallel(t *testing.T) {
	var inside, most atomic.Int64
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		now := inside.Add(1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		time.Sleep(100 * time.Millisecond)
		inside.Add(-1)
		ctx.SetBody(ctx.PostBody())
	})
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 1024, Timeout: 20 * time.Second})
	runCalls(t, c, 1, "w") // one worker, now idle
	most.Store(0)
	const n = 50
	start := time.Now()
	runCalls(t, c, n, "b")
	took := time.Since(start)
	t.Logf("%d calls of 100ms: at most %d at once, %v in all", n, most.Load(), took)
	if got := most.Load(); got < n/2 {
		t.Errorf("at most %d of %d calls at the backend at once: the burst waited behind one worker", got, n)
	}
}

// runCalls submits n calls at once (from the caller's goroutine, as event loops
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

package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// A quiet bridge keeps few backend workers; when many clients then send at
// once to a slow backend (a PHP-FPM-like 200 ms per POST), their POSTs run
// in parallel, each on a socket of its own, instead of in line behind the
// one idle worker: every reply comes after about one backend call, not
// forty.
func TestBurstAfterQuietRunsInParallel(t *testing.T) {
	var inside, most atomic.Int64
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method != fasthttp.MethodPost {
			return false
		}
		now := inside.Add(1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		time.Sleep(200 * time.Millisecond)
		inside.Add(-1)
		return false
	}})
	p := startBridge(t, b.URL)
	// Upgrades one after the other: one backend worker serves every GET.
	const n = 40
	conns := make([]*raw, n)
	for i := range conns {
		conns[i] = rawUpgrade(t, p.ws, fmt.Sprintf("burst-%d", i))
	}
	start := time.Now()
	var wg sync.WaitGroup
	var slowest atomic.Int64
	for i, r := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.frame(ws.OpText, true, []byte(fmt.Sprintf("m%d", i)))
			h, body, err := r.readFrame()
			if err != nil || h.OpCode != ws.OpText || string(body) != fmt.Sprintf("m%d", i) {
				t.Errorf("client %d: %v %v %q", i, err, h.OpCode, body)
				return
			}
			d := int64(time.Since(start))
			for s := slowest.Load(); d > s && !slowest.CompareAndSwap(s, d); s = slowest.Load() {
			}
		}()
	}
	wg.Wait()
	t.Logf("%d messages to a 200ms backend: at most %d POSTs at once, last reply after %v",
		n, most.Load(), time.Duration(slowest.Load()))
	// In line behind one worker the last would wait 40 × 200 ms = 8 s.
	if got := most.Load(); got < n/2 {
		t.Errorf("at most %d of %d POSTs reached the backend at once: the burst waited in line", got, n)
	}
}

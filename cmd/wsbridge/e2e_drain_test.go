package main

import (
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestDrain10k: SIGTERM with 10,000 connections, each with a message in
// flight at a slow backend. Every client gets 1012, the backend gets every
// POST and 10,000 DELETEs, and the process exits 0 within the window.
func TestDrain10k(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	if raceEnabled {
		// The race detector makes the test process itself too slow to
		// play 10,000+ clients; make test runs the load tests again
		// without -race.
		t.Skip("load test: run without -race")
	}
	const clients = 10000
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "POST" {
			time.Sleep(50 * time.Millisecond) // keep POSTs in flight when SIGTERM comes
		}
		return false
	}})
	p := startFastBridge(t, b.URL, "-drain-timeout", "10s", "-ping-interval", "0", "-log-level", "info")

	conns := rawUpgradeMany(t, p.ws, "drain", clients, 64)
	var wg sync.WaitGroup
	for _, r := range conns {
		r.frame(ws.OpText, true, []byte("last words"))
	}
	start := time.Now()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)

	var got1012, other atomic.Int64
	var firstClose, lastClose atomic.Int64
	for _, r := range conns {
		wg.Add(1)
		go func() { // one reader each, so the times are the arrival times
			defer wg.Done()
			_ = r.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			for {
				h, err := ws.ReadHeader(r.r)
				if err != nil {
					other.Add(1)
					return
				}
				p := make([]byte, h.Length)
				if _, err := io.ReadFull(r.r, p); err != nil {
					other.Add(1)
					return
				}
				if h.OpCode == ws.OpClose {
					if len(p) >= 2 && int(p[0])<<8|int(p[1]) == 1012 {
						got1012.Add(1)
						at := int64(time.Since(start))
						firstClose.CompareAndSwap(0, at)
						for l := lastClose.Load(); at > l && !lastClose.CompareAndSwap(l, at); l = lastClose.Load() {
						}
					} else {
						other.Add(1)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("bridge did not exit after the drain")
	}
	took := time.Since(start)
	if p.Err() != nil {
		t.Fatalf("exit: %v", p.Err())
	}
	requireEqual(t, "clients closed with 1012", got1012.Load(), int64(clients))
	requireEqual(t, "POSTs", b.Posts.Load(), int64(clients))
	requireEqual(t, "DELETEs", b.Deletes.Load(), int64(clients))
	// The closes are spread over most of the window, not sent at once.
	spread := time.Duration(lastClose.Load() - firstClose.Load())
	if spread < 3*time.Second {
		t.Fatalf("1012s spread over %v, want most of the 10s window (less the 3s close wait)", spread)
	}
	t.Logf("drain: %d connections closed with 1012 over %v, %d DELETEs, exit after %v",
		clients, spread.Round(time.Millisecond), b.Deletes.Load(), took.Round(time.Millisecond))
}

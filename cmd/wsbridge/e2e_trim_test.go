package main

import (
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench"
	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestTrimAfterBurst: 10,000 clients connect at once and then sit idle. Once
// the bridge is quiet it hands what the burst left back to the OS: its RSS
// falls while every client stays connected and still gets its replies.
func TestTrimAfterBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	if raceEnabled {
		t.Skip("load test: run without -race")
	}
	const clients = 10000
	b := newBackend(t, backend.Options{})
	// -backend-pipeline 1: the burst's GETs on up to 1,024 backend sockets,
	// each with its worker and buffers, are what grows the heap here; with
	// pipelining the few sockets a fast backend gets leave less to trim.
	p := startFastBridge(t, b.URL, "-ping-interval", "0", "-log-level", "info", "-backend-pipeline", "1")

	conns := rawUpgradeMany(t, p.ws, "trim", clients, 256)
	pid := p.Cmd.Process.Pid
	rss := func() int64 {
		n, err := bench.RSS(pid)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	peak := rss()

	// Poll /proc, not /metrics: a scrape allocates, and the bridge trims
	// only once it has been quiet for two 5-second looks.
	deadline := time.Now().Add(60 * time.Second)
	var now int64
	for {
		if now = rss(); now < peak-peak/10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("RSS %d MiB right after %d connects, still %d MiB a minute later: no trim", peak>>20, clients, now>>20)
		}
		time.Sleep(200 * time.Millisecond)
	}
	requireEqual(t, "wsbridge_memory_trims_total", p.metric(t, "wsbridge_memory_trims_total"), 1)
	requireEqual(t, "wsbridge_connections", p.metric(t, "wsbridge_connections"), clients)
	for _, r := range conns[:100] {
		r.frame(ws.OpText, true, []byte("still here"))
		if _, msg, err := r.readFrame(); err != nil || string(msg) != "still here" {
			t.Fatalf("after the trim: reply %q, %v", msg, err)
		}
	}
	t.Logf("RSS %d MiB right after %d connects, %d MiB after the trim", peak>>20, clients, now>>20)
}

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// rssBytes reads a process's resident set from /proc.
func rssBytes(t testing.TB, pid int) int64 {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

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
	p := startFastBridge(t, b.URL, "-ping-interval", "0", "-log-level", "info")

	conns := make([]*raw, clients)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i] = rawUpgrade(t, p.ws, fmt.Sprintf("trim-%d", i))
		}()
	}
	wg.Wait()
	pid := p.Cmd.Process.Pid
	peak := rssBytes(t, pid)

	// Poll /proc, not /metrics: a scrape allocates, and the bridge trims
	// only once it has been quiet for two 5-second looks.
	deadline := time.Now().Add(60 * time.Second)
	var now int64
	for {
		if now = rssBytes(t, pid); now < peak-peak/10 {
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

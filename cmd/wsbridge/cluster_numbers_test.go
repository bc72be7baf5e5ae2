package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestClusterNumbers measures what the bus costs (BENCHMARKS.md,
// "Cluster"): 15,000 reconnects on one node with and without -cluster
// (upgrades per second, the bridge's CPU), and a push through a node that
// does not hold the client against a local push (p50/p99). Not a pass/fail
// test: it only runs with WSBRIDGE_CLUSTER_NUMBERS=1, without -race:
//
//	WSBRIDGE_CLUSTER_NUMBERS=1 go test -count=1 -run TestClusterNumbers -v ./cmd/wsbridge/
func TestClusterNumbers(t *testing.T) {
	if os.Getenv("WSBRIDGE_CLUSTER_NUMBERS") != "1" || raceEnabled {
		t.Skip("measurement: WSBRIDGE_CLUSTER_NUMBERS=1, without -race")
	}
	n, _ := strconv.Atoi(os.Getenv("WSBRIDGE_CLUSTER_CLIENTS"))
	if n <= 0 {
		n = 15000
	}
	t.Run("storm", func(t *testing.T) {
		for _, cluster := range []bool{false, true} {
			b := newBackend(t, backend.Options{})
			args := []string{"-ping-interval", "0", "-log-level", "info", "-trim-memory=false"}
			var nats *natsServer
			if cluster {
				nats = startNATS(t)
				args = append(args, "-cluster", nats.url(), "-node-id", "n1")
			}
			p := startFastBridge(t, b.URL, args...)
			if cluster {
				waitClusterUp(t, p, 1)
			}
			conns := storm(t, p.ws, n, "first")
			// Heap with n open connections, after a GC (pprof's gc=1).
			_, _, _ = p.adminDo(t, "GET", "/debug/pprof/heap?gc=1", "")
			t.Logf("cluster=%v: %d open: heap in use %.1f MiB (%.0f bytes per connection, with the process's fixed part)",
				cluster, n, p.metric(t, "go_memstats_heap_inuse_bytes")/(1<<20), p.metric(t, "go_memstats_heap_inuse_bytes")/float64(n))
			for _, c := range conns {
				c.Close()
			}
			waitFor(t, 60*time.Second, func() error {
				if d := b.Deletes.Load(); d != int64(n) {
					return errorf("DELETEs %d of %d", d, n)
				}
				return nil
			})
			cpu0 := procCPU(t, p.Cmd.Process.Pid)
			var natsCPU0 time.Duration
			if nats != nil {
				natsCPU0 = procCPU(t, nats.cmd.Process.Pid)
			}
			profDone := make(chan []byte, 1)
			if os.Getenv("WSBRIDGE_CLUSTER_PROFILE") != "" {
				go func() {
					_, prof, _ := p.adminDo(t, "GET", "/debug/pprof/profile?seconds=4", "")
					profDone <- []byte(prof)
				}()
			}
			start := time.Now()
			conns = storm(t, p.ws, n, "reconnect")
			wall := time.Since(start)
			cpu := procCPU(t, p.Cmd.Process.Pid) - cpu0
			if nats != nil {
				t.Logf("nats-server CPU during the reconnects: %.2fs", (procCPU(t, nats.cmd.Process.Pid) - natsCPU0).Seconds())
			}
			if f := os.Getenv("WSBRIDGE_CLUSTER_PROFILE"); f != "" {
				_ = os.WriteFile(f+"."+strconv.FormatBool(cluster), <-profDone, 0o644)
			}
			t.Logf("cluster=%v: %d reconnects in %v: %.0f upgrades/s, bridge CPU %.2fs (%.1f µs per upgrade)",
				cluster, n, wall.Round(time.Millisecond), float64(n)/wall.Seconds(), cpu.Seconds(), float64(cpu.Microseconds())/float64(n))
			if cluster {
				t.Logf("bus: %s", strings.Join(clusterSeries(t, p), " "))
			}
			for _, c := range conns {
				c.Close()
			}
			_ = p.Stop(t, 9, 10*time.Second)
		}
	})
	t.Run("push", func(t *testing.T) {
		nats := startNATS(t)
		b := newBackend(t, backend.Options{})
		n1 := startNode(t, nats, b.URL, "n1", "-log-level", "info")
		n2 := startNode(t, nats, b.URL, "n2", "-log-level", "info")
		c, _, err := websocket.DefaultDialer.Dial(n1.url("lat"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		const pushes = 3000
		for _, via := range []*proc{n1, n2, n1, n2} {
			lat := make([]time.Duration, 0, pushes)
			for i := range pushes {
				start := time.Now()
				resp, err := hc.Post("http://"+via.admin+"/lat", "text/plain", strings.NewReader("m"+strconv.Itoa(i)))
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("push: %v %v", resp, err)
				}
				resp.Body.Close()
				if _, _, err := c.ReadMessage(); err != nil {
					t.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			where := "local (n1 holds it)"
			if via == n2 {
				where = "cross-node (via n2)"
			}
			t.Logf("push %s: p50 %v p99 %v (%d pushes, POST to the message read)", where,
				lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), pushes)
		}
	})
}

type errorString string

func (e errorString) Error() string { return string(e) }

func errorf(format string, args ...any) error {
	return errorString(fmt.Sprintf(format, args...))
}

// storm opens n connections storm-0 … storm-(n-1), 200 at a time.
func storm(t *testing.T, addr string, n int, what string) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 200)
	var mu sync.Mutex
	var firstErr error
	deadline := time.Now().Add(5 * time.Minute)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := stormClient(addr, i, deadline)
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("%s: %v", what, firstErr)
	}
	return conns
}

// procCPU is the user+system CPU time of process pid.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}

func clusterSeries(t *testing.T, p *proc) []string {
	_, body, _ := p.adminDo(t, "GET", "/metrics", "")
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "wsbridge_cluster_messages_total") || strings.HasPrefix(l, "wsbridge_cluster_request_seconds_count") || strings.HasPrefix(l, "wsbridge_cluster_request_seconds_sum") {
			out = append(out, l)
		}
	}
	return out
}

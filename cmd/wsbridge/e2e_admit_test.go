package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/engine"
)

// holdGETs returns a backend hook that keeps the GETs of ClientIds
// starting with prefix until release is closed (then says ok), and counts
// them as they arrive.
func holdGETs(prefix string, release <-chan struct{}, held *atomic.Int64) func(*fasthttp.RequestCtx, *backend.Call) bool {
	return func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method != "GET" || !strings.HasPrefix(c.ClientID, prefix) {
			return false
		}
		held.Add(1)
		select {
		case <-release:
		case <-time.After(60 * time.Second):
		}
		ctx.SetBodyString("ok")
		return true
	}
}

// rawDialFrom dials addr from the loopback address src (127.0.0.0/8 is
// all local on Linux), so that the bridge sees another client address.
func rawDialFrom(t testing.TB, src, addr string) *raw {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, conn: c, r: bufio.NewReader(c)}
}

// statusTally collects the statuses of upgrades answered so far.
type statusTally struct {
	mu sync.Mutex
	n  map[int]int
}

func (s *statusTally) add(status int) {
	s.mu.Lock()
	if s.n == nil {
		s.n = map[int]int{}
	}
	s.n[status]++
	s.mu.Unlock()
}

func (s *statusTally) get() (total int, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []int
	for k, v := range s.n {
		total += v
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", s.n[k], k))
	}
	return total, strings.Join(parts, " ")
}

// TestOneClientIDCannotBlockUpgrades (issue 19, item 7): many upgrades for
// one ClientId whose owner's GET is slow must not use up -max-pending-
// upgrades: at most engine.MaxWaitersPerClientID wait behind the owner,
// the rest are refused at once with 429 and Retry-After, the backend sees
// one GET, and an upgrade for any other ClientId is served.
func TestOneClientIDCannotBlockUpgrades(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Int64
	b := newBackend(t, backend.Options{Hook: holdGETs("hog", release, &held)})
	t.Cleanup(func() { close(release) })
	const pendingLimit, upgrades = 40, 120
	p := startBridge(t, b.URL, "-max-pending-upgrades", fmt.Sprint(pendingLimit), "-backend-timeout", "30s")

	owner := rawDial(t, p.ws)
	owner.send(upgradeRequest("hog"))
	waitFor(t, 10*time.Second, func() error {
		if held.Load() != 1 {
			return fmt.Errorf("owner's GET not at the backend yet")
		}
		return nil
	})

	var tally statusTally
	var retryAfter atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range conns {
			c.Close() // ends the waiters' reads
		}
		mu.Unlock()
		wg.Wait()
	})
	sem := make(chan struct{}, 20)
	for range upgrades - 1 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", p.ws, 5*time.Second)
			<-sem
			if err != nil {
				tally.add(-1)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write([]byte(upgradeRequest("hog"))); err != nil {
				tally.add(-2)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return // a waiter: no answer until the owner's GET ends
			}
			resp.Body.Close()
			if resp.Header.Get("Retry-After") != "" {
				retryAfter.Add(1)
			}
			tally.add(resp.StatusCode)
		}()
	}
	// The waiters hold their goroutine until the test ends; the refused
	// ones answer at once.
	wantRefused := upgrades - 1 - engine.MaxWaitersPerClientID
	waitFor(t, 20*time.Second, func() error {
		if n, desc := tally.get(); n < wantRefused {
			return fmt.Errorf("upgrades for the busy ClientId answered: got %d (%s), want %d refused at once", n, desc, wantRefused)
		}
		return nil
	})

	// Another ClientId is served while the owner's GET still hangs.
	other := rawDial(t, p.ws)
	other.send(upgradeRequest("someone-else"))
	resp, body := other.response()
	requireEqual(t, "status of another ClientId's upgrade ("+body+")", resp.StatusCode, 101)

	n, desc := tally.get()
	if n != wantRefused || tally.n[429] != wantRefused {
		t.Fatalf("refusals: got %d (%s), want %d×429", n, desc, wantRefused)
	}
	requireEqual(t, "429s with Retry-After", int(retryAfter.Load()), wantRefused)
	requireEqual(t, "GETs for the busy ClientId at the backend", int(held.Load()), 1)
	if got := p.metric(t, `wsbridge_upgrades_refused_total{reason="client_id_busy"}`); got != float64(wantRefused) {
		t.Fatalf(`refused{client_id_busy}: got %v, want %d`, got, wantRefused)
	}
}

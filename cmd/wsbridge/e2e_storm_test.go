package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// stormClient connects until it gets its 101, honouring Retry-After with
// full jitter, and returns the open socket.
func stormClient(addr string, i int, deadline time.Time) (net.Conn, int, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/200), byte(1+i%200))}
	d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	for attempt := 1; ; attempt++ {
		if time.Now().After(deadline) {
			return nil, attempt, errors.New("out of time")
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			time.Sleep(time.Duration(rand.Int64N(int64(500 * time.Millisecond))))
			continue
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, upgradeRequest("storm-"+strconv.Itoa(i))); err != nil {
			c.Close()
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			continue
		}
		if resp.StatusCode == 101 {
			_ = c.SetDeadline(time.Time{})
			return c, attempt, nil
		}
		c.Close()
		if resp.StatusCode == 408 { // the bridge was too busy to read us in time: retry
			time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
			continue
		}
		if resp.StatusCode != 503 {
			return nil, attempt, fmt.Errorf("status %d", resp.StatusCode)
		}
		ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || ra < 1 {
			return nil, attempt, fmt.Errorf("503 without a usable Retry-After: %q", resp.Header.Get("Retry-After"))
		}
		// Full jitter up to the hint.
		time.Sleep(time.Duration(rand.Int64N(int64(ra) * int64(time.Second))))
	}
}

// TestReconnectStorm: 15,000 clients connect in the same instant. The
// backend never sees more GETs per second than -accept-rate allows, every
// client that retries with backoff gets in, and an already connected
// client keeps getting pings and pushes throughout.
func TestReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("15,000 connections")
	}
	if raceEnabled {
		// The race detector makes the test process itself too slow to
		// play 10,000+ clients; make test runs the load tests again
		// without -race.
		t.Skip("load test: run without -race")
	}
	const clients, rate, burst = 15000, 2500, 500
	var perSecond sync.Map // unix second → *atomic.Int64
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "GET" {
			v, _ := perSecond.LoadOrStore(time.Now().Unix(), new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		return false
	}})
	p := startFastBridge(t, b.URL, "-accept-rate", strconv.Itoa(rate), "-accept-burst", strconv.Itoa(burst),
		// Storm clients never answer pings: the long pong timeout keeps them
		// (a loaded CI machine may take minutes for the whole storm).
		"-ping-interval", "1s", "-pong-timeout", "10m", "-log-level", "info")

	// The bystander answers pings (gorilla does while reading) and gets a
	// push every 100ms during the storm.
	by, _, err := websocket.DefaultDialer.Dial(p.url("bystander"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer by.Close()
	var pings atomic.Int64
	by.SetPingHandler(func(data string) error {
		pings.Add(1)
		return by.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	var pushesSeen atomic.Int64
	byClosed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := by.ReadMessage(); err != nil {
				byClosed <- err
				return
			}
			pushesSeen.Add(1)
		}
	}()
	stopPush := make(chan struct{})
	var pushFailures atomic.Int64
	var pushesSent atomic.Int64
	go func() {
		for {
			select {
			case <-stopPush:
				return
			case <-time.After(100 * time.Millisecond):
			}
			resp, err := http.Post("http://"+p.admin+"/bystander", "text/plain", nil)
			if err != nil || resp.StatusCode != 200 {
				pushFailures.Add(1)
			} else {
				pushesSent.Add(1)
			}
			if resp != nil {
				resp.Body.Close()
			}
		}
	}()

	start := time.Now()
	deadline := start.Add(90 * time.Second)
	conns := make([]net.Conn, clients)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var attempts atomic.Int64
	var errMu sync.Mutex
	errKinds := map[string]int{}
	gate := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			c, n, err := stormClient(p.ws, i, deadline)
			attempts.Add(int64(n))
			if err != nil {
				failed.Add(1)
				errMu.Lock()
				errKinds[err.Error()]++
				errMu.Unlock()
				return
			}
			conns[i] = c
		}()
	}
	close(gate)
	wg.Wait()
	took := time.Since(start)
	close(stopPush)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d clients never got in: %v", f, clients, errKinds)
	}
	waitFor(t, 10*time.Second, func() error {
		if n := p.metric(t, "wsbridge_connections"); n != clients+1 {
			return fmt.Errorf("open connections: got %v, want %d", n, clients+1)
		}
		return nil
	})
	peak := int64(0)
	perSecond.Range(func(_, v any) bool {
		peak = max(peak, v.(*atomic.Int64).Load())
		return true
	})
	// A calendar second can hold the burst plus a second's worth of rate;
	// GETs admitted at the end of one second may reach the backend in the
	// next, so allow a tenth of a second's worth on top.
	if limit := int64(rate + burst + rate/10); peak > limit {
		t.Fatalf("backend GETs in one second: got %d, want at most %d", peak, limit)
	}
	select {
	case err := <-byClosed:
		t.Fatalf("bystander lost its connection during the storm: %v", err)
	default:
	}
	if pushFailures.Load() > 0 {
		t.Fatalf("%d pushes to the bystander failed during the storm", pushFailures.Load())
	}
	waitFor(t, 5*time.Second, func() error {
		if seen, sent := pushesSeen.Load(), pushesSent.Load(); seen < sent {
			return fmt.Errorf("bystander saw %d of %d pushes", seen, sent)
		}
		return nil
	})
	if secs := int64(took / time.Second); pings.Load() < secs/4 {
		t.Fatalf("bystander got %d pings in %v, want about one a second", pings.Load(), took)
	}
	t.Logf("storm: %d clients in %v (%d attempts), peak %d backend GETs/s; meanwhile the bystander got %d pushes and %d pings",
		clients, took.Round(time.Millisecond), attempts.Load(), peak, pushesSeen.Load(), pings.Load())
}

// TestFDLimit: at the process's open-files limit the bridge answers 503,
// keeps serving its connections, and takes new ones once some close.
func TestFDLimit(t *testing.T) {
	b := newBackend(t, backend.Options{})
	orig := binPath
	// prlimit(1) starts the bridge with 256 open files, soft and hard.
	wrapper := t.TempDir() + "/wsbridge-256"
	script := "#!/bin/sh\nexec prlimit --nofile=256:256 " + orig + " \"$@\"\n"
	if err := writeExec(wrapper, script); err != nil {
		t.Fatal(err)
	}
	binPath = wrapper
	p := startBridge(t, b.URL, "-backend-max-conns", "16")
	binPath = orig

	var open []*raw
	refused := 0
	for i := range 300 {
		r := rawDial(t, p.ws)
		r.send(upgradeRequest(fmt.Sprintf("fd-%d", i)))
		resp, _ := r.response()
		switch resp.StatusCode {
		case 101:
			open = append(open, r)
		case 503:
			refused++
			r.conn.Close()
		default:
			t.Fatalf("upgrade %d: got %d", i, resp.StatusCode)
		}
	}
	if refused == 0 || len(open) < 50 {
		t.Fatalf("at 256 open files: %d connected, %d refused; want some of each", len(open), refused)
	}
	if got := p.metric(t, `wsbridge_upgrades_refused_total{reason="fd_limit"}`); got < 1 {
		t.Fatalf("refused{fd_limit}: got %v", got)
	}
	// The process is alive and its connections still work.
	status, _, _ := p.adminDo(t, "POST", "/fd-0", "still there")
	requireEqual(t, "push at the limit", status, 200)
	// Free some room: new clients get in again.
	for _, r := range open[:20] {
		r.conn.Close()
	}
	waitFor(t, 10*time.Second, func() error {
		r := rawDial(t, p.ws)
		defer r.conn.Close()
		r.send(upgradeRequest("fd-late"))
		resp, _ := r.response()
		if resp.StatusCode != 101 {
			return fmt.Errorf("upgrade after closing 20: got %d", resp.StatusCode)
		}
		return nil
	})
	t.Logf("at 256 open files: %d connected, %d refused with 503", len(open), refused)
}

package main

import (
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// slowPOSTs is a backend whose POSTs take d each (echoing the message);
// started counts the POSTs that reached it. The POSTs still waiting end at
// the test's cleanup, so the backend stops at once.
func slowPOSTs(t *testing.T, d time.Duration) (b *backend.Backend, started *atomic.Int64) {
	t.Helper()
	started = new(atomic.Int64)
	release := make(chan struct{})
	b = newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "POST" {
			started.Add(1)
			select {
			case <-time.After(d):
			case <-release:
			}
		}
		return false
	}})
	t.Cleanup(func() { close(release) }) // runs before the backend's Close
	return b, started
}

func waitStarted(t *testing.T, started *atomic.Int64, want int64) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		if got := started.Load(); got != want {
			return fmt.Errorf("POSTs at the backend: got %d, want %d", got, want)
		}
		return nil
	})
}

// exitCode waits for p to exit and returns its exit status.
func exitCode(t *testing.T, p *proc, within time.Duration) int {
	t.Helper()
	select {
	case <-p.Exited():
	case <-time.After(within):
		t.Fatalf("wsbridge did not exit within %v", within)
	}
	return p.Cmd.ProcessState.ExitCode()
}

// TestDrainTimeoutKeepsBackendPromises (issue 19 item 3): a drain that runs
// out of its window closes the remaining clients at once, then still sends
// every queued POST and every DELETE before it exits 0. Five connections
// each have a POST in flight and one queued behind it; the POSTs take
// longer than the window.
func TestDrainTimeoutKeepsBackendPromises(t *testing.T) {
	const clients, postTime = 5, 4 * time.Second
	b, started := slowPOSTs(t, postTime)
	p := startBridge(t, b.URL, "-drain-timeout", "1s", "-ping-interval", "0")
	conns := make([]*raw, clients)
	for i := range conns {
		conns[i] = rawUpgrade(t, p.ws, fmt.Sprintf("late-%d", i))
		conns[i].frame(ws.OpText, true, []byte("first"))
		conns[i].frame(ws.OpText, true, []byte("second"))
	}
	waitStarted(t, started, clients) // every second message waits behind its first
	start := time.Now()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)

	// The window bounds the clients' wait: each gets 1012 and its socket
	// closed while the backend still holds the first POSTs.
	for _, r := range conns {
		r.expectClose(1012)
		r.expectEOF()
	}
	if closed := time.Since(start); closed > postTime-time.Second {
		t.Fatalf("clients closed %v after SIGTERM, want within the 1s window (and well before the POSTs' %v)", closed, postTime)
	}

	if code := exitCode(t, p, 30*time.Second); code != 0 {
		t.Fatalf("exit status: got %d, want 0 (every POST and DELETE was sent)\n%s", code, p.Logs())
	}
	requireEqual(t, "POSTs answered", b.Posts.Load(), int64(2*clients))
	requireEqual(t, "DELETEs", b.Deletes.Load(), int64(clients))
	for i := range clients {
		id := fmt.Sprintf("late-%d", i)
		dels := waitCalls(t, b, id, "DELETE", 1)
		requireEqual(t, id+" DELETE close code", dels[0].CloseCode, "1012")
		requireEqual(t, id+" POSTs", count(b, id, "POST"), 2)
	}
	// The backend checks the order itself: no POST after a DELETE.
}

// TestSecondSignalStopsAtOnce: while a timed-out drain waits for the
// backend, a second SIGTERM stops the process at once; it says how many
// DELETEs are lost and exits 1.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	const clients = 3
	b, started := slowPOSTs(t, 30*time.Second)
	p := startBridge(t, b.URL, "-drain-timeout", "1s", "-ping-interval", "0")
	conns := make([]*raw, clients)
	for i := range conns {
		conns[i] = rawUpgrade(t, p.ws, fmt.Sprintf("stuck-%d", i))
		conns[i].frame(ws.OpText, true, []byte("never answered in time"))
	}
	waitStarted(t, started, clients)
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	for _, r := range conns {
		r.expectClose(1012)
		r.expectEOF()
	}
	// The drain window is over; the backend still holds every POST.
	waitFor(t, 10*time.Second, func() error {
		if !strings.Contains(p.Logs(), "drain window over") {
			return fmt.Errorf("no \"drain window over\" in the log yet")
		}
		return nil
	})
	select {
	case <-p.Exited():
		t.Fatalf("exited before the POSTs were answered:\n%s", p.Logs())
	default:
	}
	second := time.Now()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	code := exitCode(t, p, 10*time.Second)
	if took := time.Since(second); took > 8*time.Second {
		t.Fatalf("stopped %v after the second signal, want at once", took)
	}
	if code != 1 {
		t.Fatalf("exit status: got %d, want 1 (DELETEs lost)\n%s", code, p.Logs())
	}
	if want := fmt.Sprintf(`"deletes_lost":%d`, clients); !strings.Contains(p.Logs(), want) {
		t.Fatalf("log does not say %s:\n%s", want, p.Logs())
	}
	requireEqual(t, "DELETEs", b.Deletes.Load(), int64(0))
}

// TestCloseHoldsForReplyInFlight (issue 19 item 6): a close the bridge
// decides while a POST is in flight (a drain, a kick, a replacement) waits
// for the POST's reply, which the client gets before the close frame.
func TestCloseHoldsForReplyInFlight(t *testing.T) {
	cases := []struct {
		name  string
		code  ws.StatusCode
		close func(t *testing.T, p *proc)
	}{
		{"kick", 4001, func(t *testing.T, p *proc) {
			status, _, _ := p.adminDo(t, "DELETE", "/busy", "")
			requireEqual(t, "kick status", status, 200)
		}},
		{"replace", 4000, func(t *testing.T, p *proc) {
			rawUpgrade(t, p.ws, "busy") // its 101 follows the old one's DELETE
		}},
		{"drain", 1012, func(t *testing.T, p *proc) {
			_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, started := slowPOSTs(t, time.Second)
			p := startBridge(t, b.URL, "-drain-timeout", "10s", "-ping-interval", "0")
			r := rawUpgrade(t, p.ws, "busy")
			r.frame(ws.OpText, true, []byte("answer me"))
			waitStarted(t, started, 1)
			tc.close(t, p)
			h, payload, err := r.readFrame()
			if err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			if h.OpCode != ws.OpText || string(payload) != "answer me" {
				t.Fatalf("first frame after the %s: got %v %q, want the reply (text %q)", tc.name, h.OpCode, payload, "answer me")
			}
			r.expectClose(tc.code)
			dels := waitCalls(t, b, "busy", "DELETE", 1)
			requireEqual(t, "DELETE close code", dels[0].CloseCode, fmt.Sprint(int(tc.code)))
			if tc.name == "drain" {
				if code := exitCode(t, p, 20*time.Second); code != 0 {
					t.Fatalf("exit status: got %d, want 0", code)
				}
			}
		})
	}
}

// TestCloseHoldIsBounded: the wait for replies lasts at most
// -backend-timeout; a reply that comes later is not sent, the close is.
func TestCloseHoldIsBounded(t *testing.T) {
	b, started := slowPOSTs(t, 2500*time.Millisecond)
	p := startBridge(t, b.URL, "-backend-timeout", "3s", "-ping-interval", "0")
	r := rawUpgrade(t, p.ws, "chatty")
	r.frame(ws.OpText, true, []byte("one"))
	r.frame(ws.OpText, true, []byte("two")) // queued behind "one": answered 5 s from now
	waitStarted(t, started, 1)
	kicked := time.Now()
	status, _, _ := p.adminDo(t, "DELETE", "/chatty", "")
	requireEqual(t, "kick status", status, 200)
	h, payload, err := r.readFrame()
	if err != nil || h.OpCode != ws.OpText || string(payload) != "one" {
		t.Fatalf("first frame: got %v %q %v, want the reply %q", h.OpCode, payload, err, "one")
	}
	r.expectClose(4001)
	if took := time.Since(kicked); took > 4500*time.Millisecond {
		t.Fatalf("close came %v after the kick, want within -backend-timeout (3s), before the second reply", took)
	}
	// The second message is still POSTed, then the DELETE.
	waitCalls(t, b, "chatty", "DELETE", 1)
	requireEqual(t, "POSTs", count(b, "chatty", "POST"), 2)
}

// TestDeleteNotRepeatedAfterTimeout: a DELETE the backend received but did
// not answer within -backend-timeout is not sent again (the backend may
// be acting on it); the connection's lifecycle ends there, and a reconnect
// with the same ClientId goes on.
func TestDeleteNotRepeatedAfterTimeout(t *testing.T) {
	var attempts atomic.Int64
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "DELETE" && attempts.Add(1) == 1 {
			time.Sleep(1500 * time.Millisecond) // past -backend-timeout; a retry would come meanwhile
		}
		return false
	}})
	p := startBridge(t, b.URL, "-backend-timeout", "1s", "-ping-interval", "0")
	r := rawUpgrade(t, p.ws, "once")
	r.conn.Close()
	// Reconnect once the backend has an answered DELETE, so that its
	// lifecycle model sees the DELETE before the new GET; the bridge sends
	// that GET only after its last attempt at the old DELETE.
	waitFor(t, 10*time.Second, func() error {
		if n := b.Deletes.Load(); n < 1 {
			return fmt.Errorf("DELETEs answered: got %d, want 1", n)
		}
		return nil
	})
	rawUpgrade(t, p.ws, "once")
	requireEqual(t, "GETs", count(b, "once", "GET"), 2)
	requireEqual(t, "DELETE attempts that reached the backend", attempts.Load(), int64(1))
}

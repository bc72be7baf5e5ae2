package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/protocol"
)

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// oneExchange connects, upgrades, sends one message and reads the reply. A
// drain's 1012 in place of the reply is not a failure: the client was
// served and told to come back.
func oneExchange(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	id := fmt.Sprintf("hop-%d", n)
	if _, err := io.WriteString(c, upgradeRequest(id)); err != nil {
		return fmt.Errorf("send upgrade: %w", err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return fmt.Errorf("read upgrade response: %w", err)
	}
	if resp.StatusCode != 101 {
		return fmt.Errorf("upgrade refused: %d", resp.StatusCode)
	}
	msg := []byte(id)
	if _, err := c.Write(protocol.AppendClientFrame(nil, ws.OpText, true, testMask, msg)); err != nil {
		return fmt.Errorf("send message: %w", err)
	}
	h, err := ws.ReadHeader(r)
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	switch {
	case h.OpCode == ws.OpClose && len(p) >= 2 && int(p[0])<<8|int(p[1]) == 1012:
		return nil
	case h.OpCode != ws.OpText || string(p) != id:
		return fmt.Errorf("reply: got %v %q", h.OpCode, p)
	}
	_, _ = c.Write(protocol.AppendClientFrame(nil, ws.OpClose, true, testMask, ws.NewCloseFrameBody(1000, "")))
	return nil
}

// TestZeroDowntimeRestart: a new process starts on the same port with
// -reuseport, the old one gets SIGTERM; clients connecting all the while
// are never refused.
func TestZeroDowntimeRestart(t *testing.T) {
	b := newBackend(t, backend.Options{})
	listen := "127.0.0.1:" + freePort(t)
	old := startBridge(t, b.URL, "-listen", listen, "-reuseport", "-drain-timeout", "2s")

	var served, seq atomic.Int64
	var mu sync.Mutex
	var failures []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := oneExchange(listen, int(seq.Add(1))); err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					continue
				}
				served.Add(1)
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	atLeast := func(n int64) func() error {
		return func() error {
			if s := served.Load(); s < n {
				return fmt.Errorf("served %d, want %d", s, n)
			}
			return nil
		}
	}
	waitFor(t, 10*time.Second, atLeast(100))
	nw := startBridge(t, b.URL, "-listen", listen, "-reuseport", "-drain-timeout", "2s")
	waitFor(t, 10*time.Second, func() error {
		if n := nw.metric(t, "wsbridge_connections_opened_total"); n < 20 {
			return fmt.Errorf("new process served %v, want 20", n)
		}
		return nil
	})
	if err := old.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
		t.Fatalf("old process exit: %v", err)
	}
	waitFor(t, 10*time.Second, atLeast(served.Load()+200))
	mu.Lock()
	defer mu.Unlock()
	for i, err := range failures {
		if i < 10 {
			t.Errorf("client failure: %v", err)
		}
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d clients failed through the handover", len(failures), int(served.Load())+len(failures))
	}
	t.Logf("%d clients served through the handover, none refused", served.Load())
}

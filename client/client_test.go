package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
	"github.com/wsbridge/wsbridge/client"
)

var bridgeBin string

func TestMain(m *testing.M) {
	os.Exit(bridgetest.RunWithBridge(m, &bridgeBin))
}

// recorder keeps a client's messages and events.
type recorder struct {
	mu     sync.Mutex
	msgs   []string
	events []client.Event
}

func (r *recorder) onMessage(p []byte, _ bool) {
	r.mu.Lock()
	r.msgs = append(r.msgs, string(p))
	r.mu.Unlock()
}

func (r *recorder) onState(ev client.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) has(f func(client.Event) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if f(ev) {
			return true
		}
	}
	return false
}

func (r *recorder) lastMsg() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) == 0 {
		return ""
	}
	return r.msgs[len(r.msgs)-1]
}

func TestClientAgainstBridge(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge")
	}
	be, err := backend.Start(backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if v := be.Violations.Load(); v != 0 {
			t.Errorf("backend saw %d violations, last: %s", v, be.LastViolation())
		}
		be.Close()
	}()
	old := bridgetest.Start(t, bridgeBin, be.URL, "-reuseport", "-drain-timeout", "1s")

	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		URL:          "ws://" + old.Listen + "/user-1",
		Backoff:      &client.Backoff{Base: 100 * time.Millisecond, Max: time.Second, Rand: rand.New(rand.NewPCG(1, 1))},
		PingInterval: 200 * time.Millisecond, PongTimeout: time.Second,
		OnMessage: rec.onMessage, OnState: rec.onState,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Echo through the backend.
	if err := c.Send([]byte("hello"), false); err != nil {
		t.Fatal(err)
	}
	bridgetest.WaitFor(t, 5*time.Second, func() error {
		if got := rec.lastMsg(); got != "hello" {
			return fmt.Errorf("last message: got %q, want hello", got)
		}
		return nil
	})

	// Drain: the client gets 1012 with retry=N and comes back to a new
	// bridge on the same port.
	fresh := bridgetest.Start(t, bridgeBin, be.URL, "-reuseport", "-listen", old.Listen)
	_ = old.Stop(t, syscall.SIGTERM, 15*time.Second)
	bridgetest.WaitFor(t, 5*time.Second, func() error {
		if !rec.has(func(ev client.Event) bool { return ev.State == client.StateWaiting && ev.Code == 1012 }) {
			return errors.New("no 1012 seen")
		}
		return nil
	})
	if !rec.has(func(ev client.Event) bool {
		return ev.Code == 1012 && strings.HasPrefix(ev.Reason, "retry=") && ev.Delay >= time.Second
	}) {
		t.Fatal("1012: want a retry=N reason and a delay of at least N seconds")
	}
	bridgetest.WaitFor(t, 15*time.Second, func() error {
		if s := c.State(); s != client.StateOpen {
			return fmt.Errorf("state: got %v, want open", s)
		}
		return c.Send([]byte("again"), false)
	})
	bridgetest.WaitFor(t, 5*time.Second, func() error {
		if got := rec.lastMsg(); got != "again" {
			return fmt.Errorf("last message: got %q, want again", got)
		}
		return nil
	})

	// Pushes arrive.
	resp, err := http.Post("http://"+fresh.Admin+"/user-1", "text/plain", strings.NewReader("pushed"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	bridgetest.WaitFor(t, 5*time.Second, func() error {
		if got := rec.lastMsg(); got != "pushed" {
			return fmt.Errorf("last message: got %q, want pushed", got)
		}
		return nil
	})

	// Kicked by the backend (4001): the client stops.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+fresh.Admin+"/user-1", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("client still running after 4001, state %v", c.State())
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || ce.Code != 4001 {
		t.Fatalf("Err: got %v, want CloseError 4001", c.Err())
	}
	if c.State() != client.StateStopped {
		t.Fatalf("state: got %v, want stopped", c.State())
	}
}

// TestDeadServer: a server that upgrades and then says nothing, not even
// pongs, is noticed by the ping monitor and the client reconnects.
func TestDeadServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted sync.WaitGroup
	conns := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns <- c
			go func() {
				defer accepted.Done()
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				key := ""
				for _, line := range strings.Split(string(buf[:n]), "\r\n") {
					if v, ok := strings.CutPrefix(line, "Sec-WebSocket-Key: "); ok {
						key = v
					}
				}
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acceptKey(key))
				// Then silence: read and discard pings, never answer.
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		URL: "ws://" + ln.Addr().String() + "/x", PingInterval: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond,
		Backoff: &client.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		OnState: rec.onState,
	})
	if err != nil {
		t.Fatal(err)
	}
	bridgetest.WaitFor(t, 5*time.Second, func() error {
		if !rec.has(func(ev client.Event) bool { return errors.Is(ev.Err, client.ErrPongTimeout) }) {
			return errors.New("no pong timeout yet")
		}
		if len(conns) < 2 {
			return fmt.Errorf("connections: got %d, want a reconnect", len(conns))
		}
		return nil
	})
	c.Close()
	ln.Close()
	for len(conns) > 0 {
		(<-conns).Close()
	}
	accepted.Wait()
}

func TestRefusedStops(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "who are you", http.StatusForbidden)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	_, err = client.Dial(context.Background(), client.Options{URL: "ws://" + ln.Addr().String() + "/x"})
	var re *client.RefusedError
	if !errors.As(err, &re) || re.Status != 403 || re.Retryable() {
		t.Fatalf("Dial: got %v, want a permanent 403 refusal", err)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	var mu sync.Mutex
	var hits []time.Time
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, time.Now())
		mu.Unlock()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err = client.Dial(ctx, client.Options{URL: "ws://" + ln.Addr().String() + "/x", OnState: rec.onState,
		Backoff: &client.Backoff{Base: time.Millisecond, Max: time.Millisecond}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial: got %v, want the context's deadline", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hits) != 2 || hits[1].Sub(hits[0]) < time.Second {
		t.Fatalf("got %d attempts %v, want 2, at least 1 s apart (Retry-After: 1)", len(hits), hits)
	}
	if !rec.has(func(ev client.Event) bool { return ev.Status == 503 && ev.Delay >= time.Second }) {
		t.Fatal("no waiting event with status 503 and delay ≥ 1 s")
	}
}

package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestBackendOutage: the backend dies under open connections and comes
// back. Open connections stay open (pings and pushes go on), new upgrades
// are refused fast (502, then 503 with Retry-After once the circuit opens,
// without asking the dead backend), and once the backend is back a probe
// closes the circuit and upgrades succeed again.
func TestBackendOutage(t *testing.T) {
	b, err := backend.Start(backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	p := startBridge(t, b.URL, "-ping-interval", "300ms", "-pong-timeout", "1s")
	c, _, err := websocket.DefaultDialer.Dial(p.url("survivor"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 16)
	go func() {
		for {
			_, m, err := c.ReadMessage() // gorilla answers pings while reading
			if err != nil {
				close(got)
				return
			}
			got <- string(m)
		}
	}()

	_ = b.Close() // the backend is gone
	// A message now cannot be delivered; the connection stays.
	if err := c.WriteMessage(websocket.TextMessage, []byte("lost in the outage")); err != nil {
		t.Fatal(err)
	}
	// Upgrades are refused, and soon without asking the backend.
	waitFor(t, 20*time.Second, func() error {
		r := rawDial(t, p.ws)
		r.send(upgradeRequest("newcomer"))
		resp, _ := r.response()
		r.conn.Close()
		switch resp.StatusCode {
		case 502:
			return fmt.Errorf("502: circuit not open yet")
		case 503:
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			return nil
		}
		t.Fatalf("upgrade during the outage: got %d, want 502 or 503", resp.StatusCode)
		return nil
	})
	if n := p.metric(t, `wsbridge_backend_requests_total{method="POST",outcome="unreachable"}`); n < 1 {
		t.Fatalf("failed POSTs counted: got %v, want >= 1", n)
	}
	// Several ping intervals later the survivor is still connected and
	// takes pushes (which do not need the backend).
	status, _, _ := p.adminDo(t, "POST", "/survivor", "still here")
	requireEqual(t, "push during the outage", status, 200)
	select {
	case m, ok := <-got:
		if !ok || m != "still here" {
			t.Fatalf("survivor: got %q (open %v), want the push", m, ok)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("push not delivered")
	}

	// The backend comes back on the same address.
	b2, err := backend.Start(backend.Options{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	waitFor(t, 40*time.Second, func() error {
		r := rawDial(t, p.ws)
		r.send(upgradeRequest("after"))
		resp, _ := r.response()
		r.conn.Close()
		if resp.StatusCode != 101 {
			return fmt.Errorf("upgrade after recovery: got %d", resp.StatusCode)
		}
		return nil
	})
	// The survivor's messages flow again.
	if err := c.WriteMessage(websocket.TextMessage, []byte("back")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		requireEqual(t, "reply after recovery", m, "back")
	case <-time.After(5 * time.Second):
		t.Fatal("no reply after recovery")
	}
}

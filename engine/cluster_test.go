package engine_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
	"github.com/wsbridge/wsbridge/engine"
)

// fakeBus is an engine.Bus whose claims the test answers.
type fakeBus struct {
	mu     sync.Mutex
	holds  map[string]int
	claims chan func(bool) // each Claim's done, for the test to call
}

func newFakeBus() *fakeBus {
	return &fakeBus{holds: map[string]int{}, claims: make(chan func(bool), 16)}
}

func (f *fakeBus) Hold(id string, _ int64) { f.mu.Lock(); f.holds[id]++; f.mu.Unlock() }
func (f *fakeBus) Drop(id string)          { f.mu.Lock(); f.holds[id]--; f.mu.Unlock() }
func (f *fakeBus) Who(_ string, done func(string)) {
	done("")
}
func (f *fakeBus) Claim(_ string, _ int64, done func(bool)) { f.claims <- done }

func (f *fakeBus) held(id string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.holds[id] }

// upgradeStatus sends an upgrade for id and returns the response status
// and the reader after the head.
func upgradeStatus(t *testing.T, addr, id string) (int, net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", id)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("upgrade %s: %v", id, err)
	}
	return resp.StatusCode, conn, r
}

func deletes(b *backend.Backend, id string) []backend.Call {
	var out []backend.Call
	for _, c := range b.Calls(id) {
		if c.Method == "DELETE" {
			out = append(out, c)
		}
	}
	return out
}

// TestBusClaimLost: an accepted GET whose cluster claim loses never opens:
// the client gets 409, the backend its DELETE with 4000, the bus its Drop.
func TestBusClaimLost(t *testing.T) {
	bus := newFakeBus()
	h := start(t, engine.Config{Bus: bus}, backend.Options{Record: true})
	res := make(chan int, 1)
	go func() { st, _, _ := upgradeStatus(t, h.srv.Addr(), "lost"); res <- st }()
	done := <-bus.claims
	if n := bus.held("lost"); n != 1 {
		t.Fatalf("held before the claim ends: %d, want 1", n)
	}
	done(false)
	if st := <-res; st != 409 {
		t.Fatalf("upgrade: %d, want 409", st)
	}
	bridgetest.WaitFor(t, 10*time.Second, func() error {
		if d := deletes(h.b, "lost"); len(d) != 1 || d[0].CloseCode != "4000" {
			return fmt.Errorf("DELETEs %+v, want one with 4000", d)
		}
		if n := bus.held("lost"); n != 0 {
			return fmt.Errorf("held: %d, want 0 after the DELETE", n)
		}
		return nil
	})
}

// TestBusRelease: another node's release closes the open connection with
// 4000 and is answered only after its DELETE; an id held nowhere here is
// released at once; a claim still pending here yields to a newer one and
// keeps the id against an older one.
func TestBusRelease(t *testing.T) {
	bus := newFakeBus()
	h := start(t, engine.Config{Bus: bus}, backend.Options{Record: true})

	released := make(chan bool, 1)
	h.srv.Release("nobody", true, func(y bool) { released <- y })
	if !<-released {
		t.Fatal("release of an id held nowhere: kept")
	}

	go func() { (<-bus.claims)(true) }()
	st, conn, r := upgradeStatus(t, h.srv.Addr(), "open")
	if st != 101 {
		t.Fatalf("upgrade: %d", st)
	}
	h.srv.Release("open", true, func(y bool) {
		if n := len(deletes(h.b, "open")); n != 1 {
			t.Errorf("release answered with %d DELETEs recorded, want 1 (after the DELETE)", n)
		}
		released <- y
	})
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		hd, err := ws.ReadHeader(r)
		if err != nil {
			t.Fatalf("waiting for 4000: %v", err)
		}
		p := make([]byte, hd.Length)
		if _, err := r.Read(p); err != nil && hd.Length > 0 {
			t.Fatal(err)
		}
		if hd.OpCode == ws.OpClose {
			if code := int(p[0])<<8 | int(p[1]); code != 4000 {
				t.Fatalf("close code %d, want 4000", code)
			}
			break
		}
	}
	if !<-released {
		t.Fatal("release of an open connection: kept")
	}

	// A claim pending here: an older claim elsewhere is refused at once,
	// a newer one wins (the newcomer here gets 409).
	res := make(chan int, 1)
	go func() { st, _, _ := upgradeStatus(t, h.srv.Addr(), "pending"); res <- st }()
	done := <-bus.claims
	h.srv.Release("pending", false, func(y bool) { released <- y })
	if <-released {
		t.Fatal("an older claim elsewhere: released")
	}
	h.srv.Release("pending", true, func(y bool) { released <- y })
	if st := <-res; st != 409 {
		t.Fatalf("pending newcomer after a newer claim elsewhere: %d, want 409", st)
	}
	if !<-released {
		t.Fatal("a newer claim elsewhere: kept")
	}
	done(true) // the claim's own answer, too late: nothing happens
	bridgetest.WaitFor(t, 10*time.Second, func() error {
		if d := deletes(h.b, "pending"); len(d) != 1 || d[0].CloseCode != "4000" {
			return fmt.Errorf("DELETEs %+v, want one with 4000", d)
		}
		return nil
	})
}

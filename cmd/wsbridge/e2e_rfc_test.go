package main

import (
	"bytes"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/protocol"
)

// rfcCases are frames a client must not send and the close code each earns
// (RFC 6455 §5, §7.4).
var rfcCases = []struct {
	name string
	send func(r *raw)
	code ws.StatusCode
}{
	{"unmasked frame", func(r *raw) { r.send(string(ws.MustCompileFrame(ws.NewTextFrame([]byte("hi"))))) }, 1002},
	{"RSV1 without extension", func(r *raw) {
		f := protocol.AppendClientFrame(nil, ws.OpText, true, testMask, []byte("hi"))
		f[0] |= 0x40
		r.send(string(f))
	}, 1002},
	{"reserved opcode", func(r *raw) { r.frame(ws.OpCode(0x3), true, []byte("x")) }, 1002},
	{"reserved control opcode", func(r *raw) { r.frame(ws.OpCode(0xB), true, nil) }, 1002},
	{"continuation without start", func(r *raw) { r.frame(ws.OpContinuation, true, []byte("x")) }, 1002},
	{"new message inside a fragmented one", func(r *raw) {
		r.frame(ws.OpText, false, []byte("part"))
		r.frame(ws.OpText, true, []byte("again"))
	}, 1002},
	{"control frame over 125 bytes", func(r *raw) { r.frame(ws.OpPing, true, bytes.Repeat([]byte("p"), 126)) }, 1002},
	{"fragmented control frame", func(r *raw) { r.frame(ws.OpPing, false, []byte("p")) }, 1002},
	{"close code 1005 on the wire", func(r *raw) { r.frame(ws.OpClose, true, []byte{0x03, 0xed}) }, 1002},
	{"close code 999", func(r *raw) { r.frame(ws.OpClose, true, []byte{0x03, 0xe7}) }, 1002},
	{"close code 5000", func(r *raw) { r.frame(ws.OpClose, true, []byte{0x13, 0x88}) }, 1002},
	{"1-byte close payload", func(r *raw) { r.frame(ws.OpClose, true, []byte{0x03}) }, 1002},
	{"invalid UTF-8 text", func(r *raw) { r.frame(ws.OpText, true, []byte{'a', 0xc3, 0x28}) }, 1007},
	{"invalid UTF-8 across fragments", func(r *raw) {
		r.frame(ws.OpText, false, []byte{0xf4})
		r.frame(ws.OpContinuation, true, []byte{0x90, 0x80, 0x80})
	}, 1007},
	{"invalid UTF-8 close reason", func(r *raw) { r.frame(ws.OpClose, true, []byte{0x03, 0xe8, 0xff}) }, 1007},
	{"message over -max-message", func(r *raw) { r.frame(ws.OpBinary, true, make([]byte, 5000)) }, 1009},
	{"fragments over -max-message", func(r *raw) {
		r.frame(ws.OpBinary, false, make([]byte, 3000))
		r.frame(ws.OpContinuation, true, make([]byte, 3000))
	}, 1009},
}

// TestRFCViolations: each bad frame gets its close code, the DELETE says
// so, and nothing of it reaches the backend as a message.
func TestRFCViolations(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-max-message", "4KiB")
	for i, tc := range rfcCases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("rfc-%d", i)
			r := rawUpgrade(t, p.ws, id)
			tc.send(r)
			r.expectClose(tc.code)
			r.expectEOF()
			del := waitCalls(t, b, id, "DELETE", 1)[0]
			requireEqual(t, "Wsbridge-Close-Code", del.CloseCode, fmt.Sprint(int(tc.code)))
			requireEqual(t, "POSTs", count(b, id, "POST"), 0)
		})
	}
	// Other connections were not disturbed.
	c, _, err := websocket.DefaultDialer.Dial(p.url("bystander"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("fine"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "fine" {
		t.Fatalf("bystander: got %q, %v", msg, err)
	}
}

// TestFragmentsWithPing: a fragmented message with a ping in the middle
// is answered with a pong and delivered whole.
func TestFragmentsWithPing(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	r := rawUpgrade(t, p.ws, "frag")
	r.frame(ws.OpText, false, []byte("Hel"))
	r.frame(ws.OpPing, true, []byte("are you there"))
	r.frame(ws.OpContinuation, false, []byte("lo, "))
	r.frame(ws.OpContinuation, true, []byte("wörld"))
	h, payload, err := r.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "first frame", h.OpCode, ws.OpPong)
	requireEqual(t, "pong payload", string(payload), "are you there")
	h, payload, err = r.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "reply opcode", h.OpCode, ws.OpText)
	requireEqual(t, "reply", string(payload), "Hello, wörld")
	requireEqual(t, "POST body", string(waitCalls(t, b, "frag", "POST", 1)[0].Body), "Hello, wörld")
}

// TestHandshakeRefusals: bad upgrade requests get their status and never
// reach the backend.
func TestHandshakeRefusals(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	key := "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	cases := []struct {
		name, req string
		status    int
	}{
		{"missing key", "GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
		{"invalid key", "GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
		{"percent in ClientId", upgradeRequest("a%41"), 400},
		{"reserved ClientId", upgradeRequest("metrics"), 400},
		{"dot dot", upgradeRequest(".."), 400},
		{"too long ClientId", upgradeRequest(strings.Repeat("a", 129)), 400},
		{"empty ClientId", upgradeRequest(""), 400},
		{"wrong version", "GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + key + "Sec-WebSocket-Version: 8\r\n\r\n", 426},
		{"plain GET", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 426},
		{"POST", "POST /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + key + "Sec-WebSocket-Version: 13\r\n\r\n", 405},
		{"header over 8 KiB", upgradeRequest("a", "Cookie: "+strings.Repeat("c", 9000)), 431},
		{"endless header", "GET /a HTTP/1.1\r\nCookie: " + strings.Repeat("c", 9000), 431},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rawDial(t, p.ws)
			r.send(tc.req)
			resp, _ := r.response()
			requireEqual(t, "status", resp.StatusCode, tc.status)
			if tc.status == 426 && tc.name == "wrong version" {
				requireEqual(t, "Sec-WebSocket-Version", resp.Header.Get("Sec-WebSocket-Version"), "13")
			}
			r.expectEOF()
		})
	}
	requireEqual(t, "backend GETs", count(b, "", "GET"), 0)
}

// TestHandshakeTimeout closes a client that never finishes its request.
func TestHandshakeTimeout(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-handshake-timeout", "300ms")
	r := rawDial(t, p.ws)
	r.send("GET /slowpoke HTTP/1.1\r\nHost: x\r\n")
	start := time.Now()
	resp, _ := r.response()
	requireEqual(t, "status", resp.StatusCode, 408)
	r.expectEOF()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, want about 300ms", d)
	}
	requireEqual(t, "backend GETs", count(b, "", "GET"), 0)
}

// TestHeartbeat: a client that stops answering pings is closed with 4002
// within interval + timeout; one that answers stays.
func TestHeartbeat(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-ping-interval", "300ms", "-pong-timeout", "300ms")

	// gorilla answers pings by itself as long as someone reads.
	alive, _, err := websocket.DefaultDialer.Dial(p.url("alive"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alive.Close()
	go func() {
		for {
			if _, _, err := alive.ReadMessage(); err != nil {
				return
			}
		}
	}()

	dead := rawUpgrade(t, p.ws, "dead") // reads nothing, answers nothing
	start := time.Now()
	del := waitCalls(t, b, "dead", "DELETE", 1)[0]
	requireEqual(t, "close code", del.CloseCode, "4002")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("dead client closed after %v, want within ~600ms", d)
	}
	_ = dead
	// Many intervals later the live one is still there.
	deadline := time.Now().Add(2 * time.Second)
	waitFor(t, 3*time.Second, func() error {
		if count(b, "alive", "DELETE") != 0 {
			t.Fatal("live client was closed")
		}
		if time.Now().Before(deadline) {
			return fmt.Errorf("still watching")
		}
		return nil
	})
	status, _, _ := p.adminDo(t, "POST", "/alive", "still here")
	requireEqual(t, "push to live client", status, 200)
}

// TestIdleConnectionsNoGoroutines: 1,000 idle connections add no
// goroutines to the bridge.
func TestIdleConnectionsNoGoroutines(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	// Warm up: one connection's worth of backend workers and pools.
	warm := rawUpgrade(t, p.ws, "warm")
	_ = warm
	before := p.metric(t, "go_goroutines")
	conns := make([]*raw, 0, 1000)
	for i := range 1000 {
		conns = append(conns, rawUpgrade(t, p.ws, fmt.Sprintf("idle-%d", i)))
	}
	waitFor(t, 10*time.Second, func() error {
		if n := p.metric(t, "wsbridge_connections"); n != 1001 {
			return fmt.Errorf("connections: got %v, want 1001", n)
		}
		return nil
	})
	after := p.metric(t, "go_goroutines")
	// Backend workers are per call in flight, not per connection: a
	// handful may have started during the burst of GETs.
	if after-before > 50 {
		t.Fatalf("goroutines: %v before, %v with 1,000 more idle connections", before, after)
	}
	t.Logf("goroutines: %v before, %v with 1,000 more idle connections", before, after)
	for _, c := range conns {
		c.conn.Close()
	}
}

// TestSIGTERMDrains: every client gets 1012 with a retry hint, the backend
// gets every DELETE, the process exits 0.
func TestSIGTERMDrains(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-drain-timeout", "2s")
	var clients []*raw
	for i := range 20 {
		clients = append(clients, rawUpgrade(t, p.ws, fmt.Sprintf("d%d", i)))
	}
	if err := p.Stop(t, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	for _, c := range clients {
		if reason := c.expectClose(1012); !strings.HasPrefix(reason, "retry=") {
			t.Fatalf("1012 reason: got %q, want retry=<seconds>", reason)
		}
	}
	requireEqual(t, "DELETEs", int(b.Deletes.Load()), 20)
}

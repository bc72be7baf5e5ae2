package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/sign"
	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/engine/adminapi"
	"github.com/wsbridge/wsbridge/protocol"
)

// harness is an in-process bridge: engine, bridge client and admin API,
// in front of a mock backend, all on loopback.
type harness struct {
	srv     *engine.Server
	b       *backend.Backend
	adminLn net.Listener
}

func start(tb testing.TB, cfg engine.Config, bopts backend.Options) *harness {
	tb.Helper()
	b, err := backend.Start(bopts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	// Registered before the engine's cleanup, so it runs after the
	// shutdown's DELETEs.
	tb.Cleanup(func() {
		if v := b.Violations.Load(); v != 0 {
			tb.Errorf("backend saw %d violations, last: %s", v, b.LastViolation())
		}
	})
	h := startEngine(tb, cfg, b.URL)
	h.b = b
	return h
}

// startEngine runs an in-process bridge (engine, bridge client, admin API)
// in front of the backend at backendURL; h.b is nil.
func startEngine(tb testing.TB, cfg engine.Config, backendURL string) *harness {
	tb.Helper()
	return startEngineSigned(tb, cfg, backendURL, nil)
}

// startEngineSigned is startEngine with the backend calls signed by signer
// (nil: unsigned).
func startEngineSigned(tb testing.TB, cfg engine.Config, backendURL string, signer *sign.Signer) *harness {
	tb.Helper()
	m := engine.NewMetrics()
	bc, err := bridge.New(bridge.Config{Backend: backendURL, MaxConns: 64, Timeout: 10 * time.Second, Observe: m.ObserveBackend, Signer: signer})
	if err != nil {
		tb.Fatal(err)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Loops == 0 {
		cfg.Loops = 2
	}
	srv, err := engine.New(cfg, bc, m, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	admin := adminapi.New(srv, adminapi.Config{})
	go func() { _ = admin.Serve(ln) }()
	tb.Cleanup(func() {
		_ = admin.Shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		bc.Close()
	})
	return &harness{srv: srv, adminLn: ln}
}

func (h *harness) push(tb testing.TB, id string, body []byte) int {
	tb.Helper()
	resp, err := http.Post("http://"+h.adminLn.Addr().String()+"/"+id, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// client is a minimal allocation-free WebSocket client for benchmarks.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	hdr  [14]byte
	buf  []byte
}

func dial(tb testing.TB, addr, id string) *client {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", id)
	r := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 101 {
		tb.Fatalf("upgrade %s: %v %v", id, resp, err)
	}
	return &client{conn: conn, r: r, buf: make([]byte, 0, 64<<10)}
}

// read reads one server frame into c.buf.
func (c *client) read() (ws.OpCode, []byte, error) {
	if _, err := io.ReadFull(c.r, c.hdr[:2]); err != nil {
		return 0, nil, err
	}
	op := ws.OpCode(c.hdr[0] & 0x0f)
	n := int(c.hdr[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(c.r, c.hdr[2:4]); err != nil {
			return 0, nil, err
		}
		n = int(c.hdr[2])<<8 | int(c.hdr[3])
	case 127:
		if _, err := io.ReadFull(c.r, c.hdr[2:10]); err != nil {
			return 0, nil, err
		}
		n = 0
		for _, b := range c.hdr[2:10] {
			n = n<<8 | int(b)
		}
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	_, err := io.ReadFull(c.r, c.buf)
	return op, c.buf, err
}

// waitFor polls cond until it returns nil or timeout passes.
var waitFor = bridgetest.WaitFor

// roundTripCases are shared by the round-trip test and benchmark.
var roundTripCases = []struct {
	name string
	op   ws.OpCode
	size int
}{
	{"text_16B", ws.OpText, 16},
	{"binary_1KiB", ws.OpBinary, 1 << 10},
	{"binary_64KiB", ws.OpBinary, 64 << 10},
}

func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	h := start(t, engine.Config{}, backend.Options{Sequenced: true})
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, h.srv.Addr(), "rt-"+tc.name)
			p := payload(tc.size)
			frame := protocol.AppendClientFrame(nil, tc.op, true, [4]byte{9, 8, 7, 6}, p)
			for range 20 {
				if _, err := c.conn.Write(frame); err != nil {
					t.Fatal(err)
				}
				op, got, err := c.read()
				if err != nil {
					t.Fatal(err)
				}
				if op != tc.op || !bytes.Equal(got, p) {
					t.Fatalf("reply: got op %v %d bytes, want op %v %d bytes", op, len(got), tc.op, len(p))
				}
			}
		})
	}
}

// BenchmarkRoundTrip is one message through the whole bridge and back:
// client frame → engine → POST to the mock backend → reply → client. The
// allocations include the in-process client and backend.
func BenchmarkRoundTrip(b *testing.B) {
	h := start(b, engine.Config{}, backend.Options{})
	for _, tc := range roundTripCases {
		b.Run(tc.name, func(b *testing.B) {
			c := dial(b, h.srv.Addr(), "bench-"+tc.name)
			frame := protocol.AppendClientFrame(nil, tc.op, true, [4]byte{9, 8, 7, 6}, payload(tc.size))
			b.SetBytes(int64(tc.size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.conn.Write(frame); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.read(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRoundTripParallel keeps 64 connections busy at once, the
// throughput shape.
func BenchmarkRoundTripParallel(b *testing.B) {
	h := start(b, engine.Config{}, backend.Options{})
	var mu sync.Mutex
	n := 0
	frame := protocol.AppendClientFrame(nil, ws.OpText, true, [4]byte{9, 8, 7, 6}, payload(64))
	b.SetParallelism(32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		n++
		id := fmt.Sprintf("par-%d", n)
		mu.Unlock()
		c := dial(b, h.srv.Addr(), id)
		for pb.Next() {
			if _, err := c.conn.Write(frame); err != nil {
				b.Error(err)
				return
			}
			if _, _, err := c.read(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestStalledBackend: a POST that never returns stalls nothing else:
// other connections' messages, pings and pushes go on.
func TestStalledBackend(t *testing.T) {
	release := make(chan struct{})
	h := start(t, engine.Config{PingInterval: 200 * time.Millisecond, PongTimeout: 200 * time.Millisecond},
		backend.Options{Record: true, Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
			if c.Method == "POST" && bytes.Equal(c.Body, []byte("stall")) {
				<-release
			}
			return false
		}})
	t.Cleanup(func() { close(release) }) // runs before the harness's own cleanups
	stuck := dial(t, h.srv.Addr(), "stuck")
	stuck.conn.Write(protocol.AppendClientFrame(nil, ws.OpText, true, [4]byte{1, 2, 3, 4}, []byte("stall")))
	other := dial(t, h.srv.Addr(), "other")
	for i := range 10 {
		msg := []byte(fmt.Sprintf("m%d", i))
		other.conn.Write(protocol.AppendClientFrame(nil, ws.OpText, true, [4]byte{1, 2, 3, 4}, msg))
		for {
			op, got, err := other.read()
			if err != nil {
				t.Fatal(err)
			}
			if op == ws.OpPing {
				other.conn.Write(protocol.AppendClientFrame(nil, ws.OpPong, true, [4]byte{1, 2, 3, 4}, nil))
				continue
			}
			if string(got) != string(msg) {
				t.Fatalf("other: got %q, want %q", got, msg)
			}
			break
		}
	}
	// The stuck connection still gets pings and pushes.
	if s := h.push(t, "stuck", []byte("pushed")); s != 200 {
		t.Fatalf("push to stuck: got %d, want 200", s)
	}
	sawPing, sawPush := false, false
	stuck.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !sawPing || !sawPush {
		op, got, err := stuck.read()
		if err != nil {
			t.Fatalf("stuck connection: %v (ping %v, push %v)", err, sawPing, sawPush)
		}
		switch {
		case op == ws.OpPing:
			sawPing = true
			stuck.conn.Write(protocol.AppendClientFrame(nil, ws.OpPong, true, [4]byte{1, 2, 3, 4}, nil))
		case string(got) == "pushed":
			sawPush = true
		}
	}
}

// TestSlowConsumer: a client that stops reading hits the outbound limit:
// pushes get 503 and the client is closed with 1013.
func TestSlowConsumer(t *testing.T) {
	h := start(t, engine.Config{MaxOutbound: 256 << 10, MaxMessage: 64 << 10}, backend.Options{Record: true})
	c := dial(t, h.srv.Addr(), "sloth")
	big := bytes.Repeat([]byte("x"), 60<<10)
	got503 := false
	for i := 0; i < 2000 && !got503; i++ {
		switch s := h.push(t, "sloth", big); s {
		case 200:
		case 503:
			got503 = true
		default:
			t.Fatalf("push %d: got %d", i, s)
		}
	}
	if !got503 {
		t.Fatal("2000 pushes of 60 KiB to a client that never reads: no 503")
	}
	// Read everything: the last frame is the close 1013.
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		op, p, err := c.read()
		if err != nil {
			t.Fatalf("reading to the close frame: %v", err)
		}
		if op == ws.OpClose {
			if code := int(p[0])<<8 | int(p[1]); code != 1013 {
				t.Fatalf("close code: got %d, want 1013", code)
			}
			break
		}
	}
	waitFor(t, 5*time.Second, func() error {
		for _, call := range h.b.Calls("sloth") {
			if call.Method == "DELETE" {
				if call.CloseCode != "1013" {
					t.Fatalf("DELETE code: got %s, want 1013", call.CloseCode)
				}
				return nil
			}
		}
		return fmt.Errorf("no DELETE yet")
	})
	_ = strings.TrimSpace
}

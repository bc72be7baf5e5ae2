package engine_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"

	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/protocol"
)

const deflateOfferHeader = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

// deflated compresses p as a permessage-deflate message.
func deflated(tb testing.TB, p []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, 6)
	w.Write(p)
	w.Flush()
	out := b.Bytes()
	if !bytes.HasSuffix(out, []byte{0, 0, 0xff, 0xff}) {
		tb.Fatal("no sync marker")
	}
	return out[:len(out)-4]
}

// jsonPayload is n bytes of JSON-like text that compresses as chat traffic
// does.
func jsonPayload(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"user":"user-%d","text":"hello, world","tags":["a","b"]},`, i, i%7)
	}
	return b.Bytes()[:n]
}

// dialDeflate upgrades offering permessage-deflate and checks it was taken.
func dialDeflate(tb testing.TB, addr, id string) *client {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+deflateOfferHeader+"\r\n", id)
	r := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 101 {
		tb.Fatalf("upgrade %s: %v %v", id, resp, err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != protocol.DeflateResponse {
		tb.Fatalf("upgrade %s: extension %q, want %q", id, got, protocol.DeflateResponse)
	}
	return &client{conn: conn, r: r, buf: make([]byte, 0, 64<<10)}
}

// TestRoundTripAllocsDeflate: with permessage-deflate negotiated, a
// compressed message inflated, POSTed, and its reply compressed back costs
// the bridge no allocation once warm (the loop's inflater, compressor and
// buffers are reused), as TestRoundTripAllocs counts them.
func TestRoundTripAllocsDeflate(t *testing.T) {
	h := startEngine(t, engine.Config{Deflate: true, DeflateMin: 256}, startEchoBackend(t))
	const (
		warmup   = 300
		n        = 2000
		maxOwn   = 0.02
		maxWakes = 1.5
	)
	for _, tc := range []struct {
		name string
		op   ws.OpCode
		size int
		rsv1 bool // the reply is compressed
	}{
		{"text_100B", ws.OpText, 100, false}, // under -deflate-min: the reply goes plain
		{"text_1KiB", ws.OpText, 1 << 10, true},
		{"binary_64KiB", ws.OpBinary, 64 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialDeflate(t, h.srv.Addr(), "zallocs-"+tc.name)
			_ = c.conn.SetDeadline(time.Now().Add(2 * time.Minute))
			p := jsonPayload(tc.size)
			frame := protocol.AppendClientFrame(nil, tc.op, true, [4]byte{9, 8, 7, 6}, deflated(t, p))
			frame[0] |= 0x40
			wantLen := -1
			roundTrips := func(k int) {
				t.Helper()
				for range k {
					if _, err := c.conn.Write(frame); err != nil {
						t.Fatal(err)
					}
					op, got, err := c.read()
					if err != nil {
						t.Fatal(err)
					}
					if rsv1 := c.hdr[0]&0x40 != 0; op != tc.op || rsv1 != tc.rsv1 {
						t.Fatalf("reply: got op %v RSV1 %v, want op %v RSV1 %v", op, rsv1, tc.op, tc.rsv1)
					}
					if wantLen < 0 {
						wantLen = len(got)
						t.Logf("%d bytes on the wire in (of %d), %d out", len(frame), len(p), len(got))
					}
					if len(got) != wantLen || !tc.rsv1 && !bytes.Equal(got, p) {
						t.Fatalf("reply: %d bytes, want %d", len(got), wantLen)
					}
				}
			}
			roundTrips(warmup)
			if engine.RaceEnabled {
				t.Skip("allocation counts are meaningless under the race detector")
			}
			gcPercent := debug.SetGCPercent(-1)
			defer debug.SetGCPercent(gcPercent)
			runtime.GC()
			roundTrips(warmup)
			var own, perMsg float64
			for range 3 {
				var m0, m1 runtime.MemStats
				w0 := h.srv.Wakes()
				runtime.ReadMemStats(&m0)
				roundTrips(n)
				runtime.ReadMemStats(&m1)
				wakes := h.srv.Wakes() - w0
				total := m1.Mallocs - m0.Mallocs
				own = (float64(total) - float64(allocsPerWake*wakes)) / n
				perMsg = float64(wakes) / n
				t.Logf("%d round trips: %d allocations, %d loop wake-ups; %.4f allocations per message besides wake-ups", n, total, wakes, own)
				if own < maxOwn && perMsg <= maxWakes {
					return
				}
			}
			debug.SetGCPercent(gcPercent)
			t.Errorf("bridge allocations per message besides wake-ups: got %.4f, want < %v; wake-ups per message %.3f\n%s",
				own, maxOwn, perMsg, profileRoundTrips(func() { roundTrips(n / 4) }, 12))
		})
	}
}

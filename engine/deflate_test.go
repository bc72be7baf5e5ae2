package engine_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"
	"golang.org/x/sys/unix"

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

// TestIdleConnMemoryDeflate: an idle connection that negotiated
// permessage-deflate (and exchanged compressed messages) costs within 5 %
// of one that did not: no per-connection compressor state (DESIGN §8.6).
func TestIdleConnMemoryDeflate(t *testing.T) {
	if engine.RaceEnabled {
		t.Skip("memory sizes differ under the race detector")
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	n := min(2000, (int(rl.Cur)-300)/2)
	if n < 200 {
		t.Skipf("RLIMIT_NOFILE %d leaves room for %d connections, want 200", rl.Cur, n)
	}
	// Each engine in a subtest of its own: it is stopped, and its
	// connections gone, before the next one is measured.
	var off, on int64
	t.Run("off", func(t *testing.T) { off = idleHeapPerConn(t, false, n) })
	t.Run("on", func(t *testing.T) { on = idleHeapPerConn(t, true, n) })
	if off <= 0 || on <= 0 {
		t.Fatalf("heap per idle connection: %d B without -deflate, %d B with it: want both positive", off, on)
	}
	t.Logf("heap per idle connection: %d B without -deflate, %d B with it negotiated (%+.1f %%)", off, on, 100*float64(on-off)/float64(off))
	if float64(on) > 1.05*float64(off) {
		t.Errorf("heap per idle connection with deflate: got %d B, want within 5 %% of %d B", on, off)
	}
}

// idleHeapPerConn opens n idle connections to a fresh engine (with
// -deflate and an offer when deflate is set; every warm-up connection first
// exchanges a message, compressed when deflate is set) and returns the
// growth of the live heap per connection.
func idleHeapPerConn(t *testing.T, deflate bool, n int) int64 {
	// What an engine stopped before this one (an earlier subtest, or an
	// earlier -count) still frees must not land in this measurement: wait
	// until the live heap holds still.
	var prev uint64
	waitFor(t, 20*time.Second, func() error {
		var m runtime.MemStats
		liveMemStats(&m)
		d := int64(m.HeapAlloc) - int64(prev)
		prev = m.HeapAlloc
		if d < -32<<10 || d > 32<<10 {
			return fmt.Errorf("live heap still moving by %d B", d)
		}
		return nil
	})
	h := startEngine(t, engine.Config{Deflate: deflate, DeflateMin: 1}, startEchoBackend(t))
	ap, err := netip.ParseAddrPort(h.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	var fds []int
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		// Gone before the next measurement starts.
		waitFor(t, 30*time.Second, func() error {
			if c := h.srv.Connections(); c != 0 {
				return fmt.Errorf("%d connections still open", c)
			}
			return nil
		})
	}()
	msg := jsonPayload(1 << 10)
	frame := protocol.AppendClientFrame(nil, ws.OpText, true, [4]byte{1, 2, 3, 4}, msg)
	if deflate {
		frame = protocol.AppendClientFrame(nil, ws.OpText, true, [4]byte{1, 2, 3, 4}, deflated(t, msg))
		frame[0] |= 0x40
	}
	var req []byte
	resp := make([]byte, 4096)
	upgrade := func(i int, exchange bool) {
		t.Helper()
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, sa); err != nil {
			t.Fatal(err)
		}
		req = append(req[:0], "GET /idle-"...)
		req = strconv.AppendInt(req, int64(i), 10)
		req = append(req, " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"...)
		if deflate {
			req = append(req, deflateOfferHeader...)
		}
		req = append(req, "\r\n"...)
		if _, err := unix.Write(fd, req); err != nil {
			t.Fatal(err)
		}
		got := 0
		for !bytes.Contains(resp[:got], []byte("\r\n\r\n")) {
			k, err := unix.Read(fd, resp[got:])
			if err != nil || k == 0 {
				t.Fatalf("upgrade %d: read: %d bytes, %v", i, k, err)
			}
			got += k
		}
		if !bytes.HasPrefix(resp[:got], []byte("HTTP/1.1 101 ")) ||
			deflate != bytes.Contains(resp[:got], []byte("permessage-deflate")) {
			t.Fatalf("upgrade %d: got %q", i, resp[:got])
		}
		if !exchange {
			return
		}
		if _, err := unix.Write(fd, frame); err != nil {
			t.Fatal(err)
		}
		// The reply: at least its 2-byte header.
		if k, err := unix.Read(fd, resp); err != nil || k < 2 || (resp[0]&0x40 != 0) != deflate {
			t.Fatalf("reply %d: %d bytes %v, %x", i, k, err, resp[:max(k, 0)])
		}
	}
	const warm = 100
	for i := range warm {
		upgrade(i, true)
	}
	var m0, m1 runtime.MemStats
	liveMemStats(&m0)
	for i := range n {
		upgrade(warm+i, false)
	}
	liveMemStats(&m1)
	if got := h.srv.Connections(); got != int64(warm+n) {
		t.Fatalf("open connections: got %d, want %d", got, warm+n)
	}
	return (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) / int64(n)
}

package engine_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/journal"
	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/protocol"
)

// startJournaled runs an in-process engine recording in a journal in dir
// (nil dir: no journal), as cmd/wsbridge wires it.
func startJournaled(tb testing.TB, backendURL, dir string) *engine.Server {
	tb.Helper()
	srv, _ := startJournaledJ(tb, backendURL, dir)
	return srv
}

// startJournaledJ is startJournaled, returning the journal too (nil
// without dir).
func startJournaledJ(tb testing.TB, backendURL, dir string) (*engine.Server, *journal.Journal) {
	tb.Helper()
	m := engine.NewMetrics()
	bc, err := bridge.New(bridge.Config{Backend: backendURL, MaxConns: 64, Timeout: 10 * time.Second, Observe: m.ObserveBackend})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := engine.New(engine.Config{Listen: "127.0.0.1:0", Loops: 2}, bc, m, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var j *journal.Journal
	if dir != "" {
		var rec journal.Recovered
		j, rec, err = journal.Open(dir, journal.Options{OnWritten: srv.JournalWritten})
		if err != nil {
			tb.Fatal(err)
		}
		srv.UseJournal(j, rec.Orphans)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		bc.Close()
		if j != nil {
			_ = j.Close()
		}
	})
	return srv, j
}

// TestJournaledUpgradeAllocs: recording a connection in the journal adds
// no allocation per upgrade but gnet's for the one loop wake-up per
// written batch (allocsPerWake; a lone upgrade is a batch of its own): no
// goroutine, closure or buffer per connection. Measured as the difference
// between upgrade-and-close cycles with and without -journal, everything
// else (client, backend, the rest of the upgrade) being the same.
func TestJournaledUpgradeAllocs(t *testing.T) {
	if engine.RaceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	backendURL := startEchoBackend(t)
	perCycle := func(dir string) float64 {
		srv := startJournaled(t, backendURL, dir)
		req := []byte("GET /alloc-j HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		closeFrame := protocol.AppendClientFrame(nil, ws.OpClose, true, [4]byte{1, 2, 3, 4}, ws.NewCloseFrameBody(1000, ""))
		buf := make([]byte, 4096)
		cycle := func(k int) {
			for range k {
				c, err := net.Dial("tcp", srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(req); err != nil {
					t.Fatal(err)
				}
				n, err := c.Read(buf)
				if err != nil || n < 12 || string(buf[9:12]) != "101" {
					t.Fatalf("upgrade: %q %v", buf[:n], err)
				}
				_, _ = c.Write(closeFrame)
				_, _ = io.Copy(io.Discard, c) // the close reply, then EOF
				c.Close()
			}
			// Every DELETE answered before the count ends.
			waitFor(t, 10*time.Second, func() error {
				if n := srv.Connections(); n != 0 {
					return fmt.Errorf("%d connections", n)
				}
				return nil
			})
		}
		cycle(300)
		gcPercent := debug.SetGCPercent(-1)
		defer debug.SetGCPercent(gcPercent)
		runtime.GC()
		cycle(100)
		best := -1.0
		for range 3 {
			const n = 500
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			cycle(n)
			runtime.ReadMemStats(&m1)
			if a := float64(m1.Mallocs-m0.Mallocs) / n; best < 0 || a < best {
				best = a
			}
		}
		return best
	}
	plain := perCycle("")
	journaled := perCycle(t.TempDir())
	t.Logf("allocations per upgrade-and-close cycle (client and backend included): %.1f without the journal, %.1f with it", plain, journaled)
	if extra := journaled - plain; extra > allocsPerWake+1 {
		t.Fatalf("the journal adds %.1f allocations per upgrade, want at most %d (one loop wake-up per batch) + 1", extra, allocsPerWake)
	}
}

// TestJournalRefusal: when the journal cannot record a connection the
// backend accepted, the client gets 503 with Retry-After and the backend
// its DELETE (1006): the lifecycle it saw begin ends. Once a write has
// failed (JournalWritten reports an error), upgrades get 503 before the
// backend is asked.
func TestJournalRefusal(t *testing.T) {
	b, err := backend.Start(backend.Options{Record: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	dir := t.TempDir()
	srv, j := startJournaledJ(t, b.URL, dir)
	upgrade := func(id string) (int, string) {
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", id)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if st, _ := upgrade("before"); st != 101 {
		t.Fatalf("with the journal open: %d, want 101", st)
	}
	_ = j.Close() // Opened now fails (ErrClosed), as when the journal is full
	if st, ra := upgrade("refused"); st != 503 || ra == "" {
		t.Fatalf("journal closed: %d (Retry-After %q), want 503 with Retry-After", st, ra)
	}
	waitFor(t, 10*time.Second, func() error {
		var methods []string
		for _, c := range b.Calls("refused") {
			methods = append(methods, c.Method+" "+c.CloseCode)
		}
		if fmt.Sprint(methods) != "[GET  DELETE 1006]" {
			return fmt.Errorf("backend calls for the refused client: %v, want GET then DELETE 1006", methods)
		}
		return nil
	})
	srv.JournalWritten(0, errors.New("test: write failed"))
	gets := b.Gets.Load()
	if st, _ := upgrade("broken"); st != 503 {
		t.Fatalf("journal broken: %d, want 503", st)
	}
	if g := b.Gets.Load(); g != gets {
		t.Fatalf("an upgrade refused by a broken journal sent %d GETs, want none", g-gets)
	}
	if v := b.Violations.Load(); v != 0 {
		t.Fatalf("backend violations: %s", b.LastViolation())
	}
}

package engine_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/protocol"
)

// maxIdleConnBytes bounds the bridge's live heap per idle open connection.
// The goal allows 1 KiB of heap and stack per idle connection; gnet's share is about 390 B (its
// connection, the peer's address twice, its connection map) and ours about
// 300 B (conn, the ClientId registry's slot and map entry, ClientId and
// X-Forwarded-For), so this bound catches growth well before the invariant
// breaks.
const maxIdleConnBytes = 768

// TestIdleConnMemory: an idle open connection costs the bridge at most
// maxIdleConnBytes of live heap, and no goroutine.
//
// The clients are raw sockets driven by system calls, so the test's side
// holds nothing on the Go heap per connection, and the backend keeps
// nothing per request: after a full GC, the growth of the live heap over n
// upgrades is the bridge's. The upgrades are sequential, so the backend
// workers they start are a few, not a burst's worth; their stacks are not
// per connection and are only logged (a slow machine may start a few more).
func TestIdleConnMemory(t *testing.T) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	// Two descriptors per connection in this process, and some to spare.
	n := min(2000, (int(rl.Cur)-300)/2)
	if n < 200 {
		t.Skipf("RLIMIT_NOFILE %d leaves room for %d connections, want 200", rl.Cur, n)
	}
	h := startEngine(t, engine.Config{}, startEchoBackend(t))
	clients := newRawClients(t, h.srv.Addr())
	upgrade := func(i int) { clients.upgrade("idle-"+strconv.Itoa(i), "") }

	// First connections pay for what is made once: each loop's state,
	// the backend connection, the metric series, the registry's maps.
	const warm = 100
	for i := range warm {
		upgrade(i)
	}
	if engine.RaceEnabled {
		t.Skip("memory sizes differ under the race detector")
	}
	var m0, m1 runtime.MemStats
	g0 := runtime.NumGoroutine()
	liveMemStats(&m0)
	for i := range n {
		upgrade(warm + i)
	}
	liveMemStats(&m1)
	g1 := runtime.NumGoroutine()
	if got := h.srv.Connections(); got != int64(warm+n) {
		t.Fatalf("open connections: got %d, want %d", got, warm+n)
	}
	heap := (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) / int64(n)
	stack := (int64(m1.StackInuse) - int64(m0.StackInuse)) / int64(n)
	t.Logf("%d idle connections: %d B of heap and %d B of stack each; goroutines %d → %d", n, heap, stack, g0, g1)
	if heap > maxIdleConnBytes {
		t.Errorf("bridge heap per idle connection: got %d B, want <= %d", heap, maxIdleConnBytes)
	}
	if g1-g0 > n/100 {
		t.Errorf("goroutines: got %d → %d over %d idle connections, want none per connection", g0, g1, n)
	}
}

// liveMemStats reads m after two full GCs: the heap holds only live objects
// and sync.Pools have dropped what they cached.
func liveMemStats(m *runtime.MemStats) {
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(m)
}

// TestIdleConnMemoryDeflate: an idle connection that negotiated
// permessage-deflate (and exchanged compressed messages) costs within 5 %
// of one that did not: no per-connection compressor state (DESIGN §8.6).
//
// Each side is measured in a process of its own (this test binary, run
// again for idleHeapChild): an engine stopped earlier in the same process
// (another test's, or the other side's) goes on freeing memory for a while,
// which would land in whichever measurement runs next.
func TestIdleConnMemoryDeflate(t *testing.T) {
	if mode := os.Getenv(idleHeapEnv); mode != "" {
		return // the child runs idleHeapChild instead
	}
	if engine.RaceEnabled {
		t.Skip("memory sizes differ under the race detector")
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if n := min(2000, (int(rl.Cur)-300)/2); n < 200 {
		t.Skipf("RLIMIT_NOFILE %d leaves room for %d connections, want 200", rl.Cur, n)
	}
	measure := func(mode string) int64 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestIdleHeapChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), idleHeapEnv+"="+mode)
		out, err := cmd.CombinedOutput()
		m := regexp.MustCompile(`IDLEHEAP (-?\d+)`).FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("child (%s): %v\n%s", mode, err, out)
		}
		v, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return v
	}
	off, on := measure("off"), measure("on")
	t.Logf("heap per idle connection: %d B without -deflate, %d B with it negotiated (%+.1f %%)", off, on, 100*float64(on-off)/float64(off))
	if off <= 0 || on <= 0 {
		t.Fatalf("heap per idle connection: %d B without -deflate, %d B with it: want both positive", off, on)
	}
	// The bound TestIdleConnMemory checks, measured here without another
	// engine's memory being freed in the same process meanwhile (which can
	// make that test read half the true figure).
	if off > maxIdleConnBytes {
		t.Errorf("bridge heap per idle connection (fresh process): got %d B, want <= %d", off, maxIdleConnBytes)
	}
	if float64(on) > 1.05*float64(off) {
		t.Errorf("heap per idle connection with deflate: got %d B, want within 5 %% of %d B", on, off)
	}
}

const idleHeapEnv = "WSBRIDGE_TEST_IDLE_HEAP"

// TestIdleHeapChild is TestIdleConnMemoryDeflate's measurement, run in a
// child process; on its own it does nothing.
func TestIdleHeapChild(t *testing.T) {
	mode := os.Getenv(idleHeapEnv)
	if mode == "" {
		t.Skip("run by TestIdleConnMemoryDeflate")
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("IDLEHEAP %d\n", idleHeapPerConn(t, mode == "on", min(2000, (int(rl.Cur)-300)/2)))
}

// idleHeapPerConn opens n idle connections to a fresh engine (with
// -deflate and an offer when deflate is set; every warm-up connection first
// exchanges a message, compressed when deflate is set) and returns the
// growth of the live heap per connection.
func idleHeapPerConn(t *testing.T, deflate bool, n int) int64 {
	h := startEngine(t, engine.Config{Deflate: deflate, DeflateMin: 1}, startEchoBackend(t))
	clients := newRawClients(t, h.srv.Addr())
	defer func() {
		clients.closeAll()
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
	extra := ""
	if deflate {
		extra = deflateOfferHeader
	}
	resp := make([]byte, 4096)
	upgrade := func(i int, exchange bool) {
		t.Helper()
		fd, head := clients.upgrade("idle-"+strconv.Itoa(i), extra)
		if deflate != bytes.Contains(head, []byte("permessage-deflate")) {
			t.Fatalf("upgrade %d: got %q", i, head)
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

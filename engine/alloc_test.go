package engine_test

import (
	"fmt"
	"net"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bridge/sign"
	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/protocol"
)

// allocsPerWake is what gnet (v2.10) allocates each time another goroutine
// wakes an event loop with EventLoop.Execute: the closure around our
// Runnable and the node of its lock-free task queue. The engine wakes a
// loop once per batch of tasks (loop.post), so under load this is
// amortised over many messages (about 0.07 allocations per message in
// BENCHMARKS.md); a client that waits for each reply before sending the
// next, as here, costs one wake-up per message: its POST's completion.
const allocsPerWake = 2

// TestRoundTripAllocs: a message's round trip through the bridge (client
// frame → decode → POST → reply → frame to the client) allocates nothing
// in the bridge but gnet's objects per loop wake-up.
//
// The bridge shares the process with the test's client and backend, so the
// test keeps those allocation-free (a bare fasthttp echo server and the
// preallocated client), counts every allocation in the process over many
// round trips (runtime.MemStats.Mallocs, tiny allocations included), and
// subtracts only allocsPerWake for each loop wake-up the engine counted.
// Whatever else is left is charged to the bridge: a stray allocation in the
// test's own client or backend makes the test fail, not pass. The garbage
// collector is off while counting, because each GC empties caches (sync
// pools, the runtime's sudog cache) that then refill with allocations that
// are not per message. On failure the test runs again with every
// allocation profiled and lists where they came from.
func TestRoundTripAllocs(t *testing.T) { testRoundTripAllocs(t, nil) }

// TestRoundTripAllocsSigned: the same with every backend call signed
// (-sign-key): signing on the worker allocates nothing either.
func TestRoundTripAllocsSigned(t *testing.T) {
	signer, err := sign.ParseSigner("k1=alloc-test-secret")
	if err != nil {
		t.Fatal(err)
	}
	testRoundTripAllocs(t, signer)
}

func testRoundTripAllocs(t *testing.T, signer *sign.Signer) {
	backendURL := startEchoBackend(t)
	h := startEngineSigned(t, engine.Config{}, backendURL, signer)
	const (
		warmup = 300
		n      = 2000
		// maxOwn bounds the bridge's own allocations per message besides
		// wake-ups. Nothing on the message path allocates: what is left is
		// background, charged to the bridge all the same, such as the
		// backend's fasthttp refreshing its Date header once a second, and
		// caches refilled once (sync.Pool, the runtime's sudog cache for
		// the bridge's waiting workers) after goroutines moved between Ps.
		// One allocation per message anywhere on the path counts as 1.0.
		maxOwn = 0.02
		// maxWakes bounds loop wake-ups per message: one for the POST's
		// completion, plus room for the ticks (10 a second per loop) of a
		// slow run; a second wake-up per message would make it 2.
		maxWakes = 1.5
	)
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, h.srv.Addr(), "allocs-"+tc.name)
			// A deadline instead of a hang if the bridge stops answering.
			_ = c.conn.SetDeadline(time.Now().Add(2 * time.Minute))
			p := payload(tc.size)
			frame := protocol.AppendClientFrame(nil, tc.op, true, [4]byte{9, 8, 7, 6}, p)
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
					if op != tc.op || len(got) != len(p) {
						t.Fatalf("reply: got op %v %d bytes, want op %v %d bytes", op, len(got), tc.op, len(p))
					}
				}
			}
			// The backend connection, pooled calls, buffers grown to this
			// payload size.
			roundTrips(warmup)
			if engine.RaceEnabled {
				t.Skip("allocation counts are meaningless under the race detector")
			}

			// From a fresh GC, with no other one until the count is done:
			// the warm-up refills what the GC emptied.
			gcPercent := debug.SetGCPercent(-1)
			defer debug.SetGCPercent(gcPercent)
			runtime.GC()
			roundTrips(warmup)
			// The best of a few windows: an allocation per message shows in
			// every one, while a cost paid once (a sync.Pool miss after the
			// loop's goroutine moved to another P gives a fresh Call, whose
			// buffers then grow) shows in one at most.
			var own, perMsg float64
			for attempt := 1; attempt <= 3; attempt++ {
				var m0, m1 runtime.MemStats
				w0 := h.srv.Wakes()
				runtime.ReadMemStats(&m0)
				roundTrips(n)
				runtime.ReadMemStats(&m1)
				wakes := h.srv.Wakes() - w0
				total := m1.Mallocs - m0.Mallocs
				own = (float64(total) - float64(allocsPerWake*wakes)) / n
				perMsg = float64(wakes) / n
				t.Logf("%d round trips: %d allocations, %d loop wake-ups (%.3f per message); %.4f allocations per message besides wake-ups",
					n, total, wakes, perMsg, own)
				if own < maxOwn && perMsg <= maxWakes {
					return
				}
			}
			debug.SetGCPercent(gcPercent)
			t.Errorf("bridge allocations per message besides wake-ups: got %.4f, want < %v; wake-ups per message: got %.3f, want <= %v\n"+
				"%d round trips with every allocation profiled:\n%s",
				own, maxOwn, perMsg, maxWakes, n/4, profileRoundTrips(func() { roundTrips(n / 4) }, 12))
		})
	}
}

// startEchoBackend runs a backend that allocates nothing per request once
// warm: GET → "ok", POST → its body back with its Content-Type, DELETE → 200.
func startEchoBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Method()) {
		case fasthttp.MethodGet:
			ctx.SetBodyString("ok")
		case fasthttp.MethodPost:
			ctx.Response.Header.SetContentTypeBytes(ctx.Request.Header.ContentType())
			ctx.SetBody(ctx.PostBody())
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	// Registered first, so it runs after the engine's shutdown.
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/"
}

// stack is a memory profile record's call stack, leaf first.
type stack [32]uintptr

// profileRoundTrips runs f with every allocation profiled and formats the
// k call stacks that allocated most, gnet's wake-ups included.
func profileRoundTrips(f func(), k int) string {
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	runtime.GC() // publishes the profile up to here
	before := allocSites()
	f()
	runtime.GC()
	type site struct {
		stk stack
		n   int64
	}
	var all []site
	for stk, n := range allocSites() {
		if n -= before[stk]; n > 0 {
			all = append(all, site{stk, n})
		}
	}
	slices.SortFunc(all, func(a, b site) int { return int(b.n - a.n) })
	var b strings.Builder
	for _, s := range all[:min(k, len(all))] {
		fmt.Fprintf(&b, "%d objects:\n", s.n)
		pcs := s.stk[:]
		if i := slices.Index(pcs, 0); i >= 0 {
			pcs = pcs[:i]
		}
		frames := runtime.CallersFrames(pcs)
		for range 10 {
			f, more := frames.Next()
			fmt.Fprintf(&b, "\t%s\n\t\t%s:%d\n", f.Function, f.File, f.Line)
			if !more {
				break
			}
		}
	}
	return b.String()
}

// allocSites returns the objects allocated so far per call stack, as of the
// last completed GC.
func allocSites() map[stack]int64 {
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			break
		}
	}
	sites := make(map[stack]int64, n)
	for _, r := range recs[:n] {
		sites[r.Stack0] += r.AllocObjects
	}
	return sites
}

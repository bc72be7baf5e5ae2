package engine_test

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/engine"
)

// TestChannelDeliveryAllocs: a channel message costs a fixed number of
// allocations per publish (its frame, its task, a wake-up per loop) and
// none per subscriber: the frame is built once and every subscriber's
// write shares it.
func TestChannelDeliveryAllocs(t *testing.T) {
	const (
		subs   = 200
		warmup = 50
		n      = 200
		// perPublish: the frame and the publication, besides wake-ups.
		perPublish = 2
		// maxPerDelivery is what is left per subscriber and message: an
		// allocation per delivery would count 1.0.
		maxPerDelivery = 0.005
	)
	backendURL := startEchoBackend(t)
	h := startEngine(t, engine.Config{}, backendURL)
	clients := make([]*client, subs)
	for i := range clients {
		id := fmt.Sprintf("sub-%d", i)
		clients[i] = dial(t, h.srv.Addr(), id)
		_ = clients[i].conn.SetDeadline(time.Now().Add(2 * time.Minute))
		waitFor(t, 10*time.Second, func() error {
			if st := h.srv.Subscribe([]byte(id), "alloc"); st != http.StatusOK {
				return fmt.Errorf("subscribe %s: %d", id, st)
			}
			return nil
		})
	}
	msg := payload(64)
	publish := func(k int) {
		t.Helper()
		for range k {
			if got := h.srv.Publish("alloc", msg, false, nil); got != subs {
				t.Fatalf("publish: got %d subscribers, want %d", got, subs)
			}
			for _, c := range clients {
				if _, p, err := c.read(); err != nil || len(p) != len(msg) {
					t.Fatalf("read: %d bytes, %v", len(p), err)
				}
			}
		}
	}
	publish(warmup)
	if engine.RaceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	gcPercent := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(gcPercent)
	runtime.GC()
	publish(warmup)
	var perDelivery float64
	for attempt := 1; attempt <= 3; attempt++ {
		var m0, m1 runtime.MemStats
		w0 := h.srv.Wakes()
		runtime.ReadMemStats(&m0)
		publish(n)
		runtime.ReadMemStats(&m1)
		wakes := h.srv.Wakes() - w0
		total := m1.Mallocs - m0.Mallocs
		perDelivery = (float64(total) - float64(allocsPerWake*wakes) - perPublish*n) / (n * subs)
		t.Logf("%d publishes to %d subscribers: %d allocations, %d loop wake-ups; %.5f allocations per delivery besides those",
			n, subs, total, wakes, perDelivery)
		if perDelivery < maxPerDelivery {
			return
		}
	}
	debug.SetGCPercent(gcPercent)
	t.Errorf("allocations per delivery: got %.5f, want < %v\n%d publishes with every allocation profiled:\n%s",
		perDelivery, maxPerDelivery, n/4, profileRoundTrips(func() { publish(n / 4) }, 12))
}

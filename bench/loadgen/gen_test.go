package loadgen

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
)

var bridgeBin string

func TestMain(m *testing.M) {
	os.Exit(bridgetest.RunWithBridge(m, &bridgeBin))
}

func TestBuckets(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<22; v += 1 + v/50 {
		b := bucketOf(v)
		if b < prev {
			t.Fatalf("bucketOf(%d) = %d after %d: not monotonic", v, b, prev)
		}
		prev = b
		if hi := BucketHigh(b); hi < v || float64(hi-v) > float64(v)/32+1 {
			t.Fatalf("BucketHigh(bucketOf(%d)) = %d: off by more than 1/32", v, hi)
		}
	}
	var h Histogram
	for i := int64(1); i <= 1000; i++ {
		h.Record(i)
	}
	var s Snapshot
	h.Drain(&s)
	if s.N != 1000 || s.Max != 1000 {
		t.Fatalf("got N %d max %d, want 1000 1000", s.N, s.Max)
	}
	if p50 := s.Quantile(0.5); p50 < 500 || p50 > 516 {
		t.Fatalf("p50 = %d, want 500..516", p50)
	}
	if p99 := s.Quantile(0.99); p99 < 990 || p99 > 1000 {
		t.Fatalf("p99 = %d, want 990..1000", p99)
	}
	var s2 Snapshot
	s2.AddSparse(s.Sparse(), s.Max)
	if s2 != s {
		t.Fatal("sparse round trip differs")
	}
}

func TestRecordAllocs(t *testing.T) {
	var h Histogram
	if a := testing.AllocsPerRun(1000, func() { h.Record(12345) }); a != 0 {
		t.Fatalf("Record allocs = %v, want 0", a)
	}
	buf := make([]byte, 0, 256)
	if a := testing.AllocsPerRun(1000, func() { buf = AppendMessage(buf[:0], 7, time.Now().UnixNano(), 128) }); a != 0 {
		t.Fatalf("AppendMessage allocs = %v, want 0", a)
	}
}

func TestStamp(t *testing.T) {
	now := time.Now().UnixNano()
	p := AppendMessage(nil, 42, now, 100)
	if len(p) != 100 {
		t.Fatalf("len = %d, want 100", len(p))
	}
	if got, ok := stamp(p); !ok || got != now {
		t.Fatalf("stamp = %d %v, want %d", got, ok, now)
	}
	if _, ok := stamp([]byte("hello world")); ok {
		t.Fatal("stamp of a plain message should fail")
	}
}

func TestGenModes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge")
	}
	be, err := backend.Start(backend.Options{Sequenced: true})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	p := bridgetest.Start(t, bridgeBin, be.URL)
	addr := netip.MustParseAddrPort(p.Listen)
	srcs := []netip.Addr{netip.MustParseAddr("127.0.1.1"), netip.MustParseAddr("127.0.1.2")}
	for _, tc := range []struct {
		name string
		mode Mode
	}{{"hold", Hold}, {"periodic", Periodic}, {"closed", ClosedLoop}, {"handshake", Handshake}} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Start(Config{Addr: addr, IDPrefix: tc.name, Count: 50, Mode: tc.mode,
				Interval: 200 * time.Millisecond, Size: 64, Sources: srcs, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			bridgetest.WaitFor(t, 10*time.Second, func() error {
				tot := g.Totals()
				switch {
				case tot.Errors() != 0:
					return fmt.Errorf("errors: %+v", tot)
				case tc.mode == Handshake && tot.Cycles < 100:
					return fmt.Errorf("cycles %d, want 100", tot.Cycles)
				case tc.mode != Handshake && tot.Held != 50:
					return fmt.Errorf("held %d, want 50", tot.Held)
				case (tc.mode == Periodic || tc.mode == ClosedLoop) && tot.Recv < 100:
					return fmt.Errorf("received %d, want 100", tot.Recv)
				}
				return nil
			})
			// Stop ends as soon as the last socket has closed (the bridge
			// answers every close frame), long before its deadline.
			begin := time.Now()
			if err := g.Stop(time.Minute); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(begin); took > 20*time.Second {
				t.Fatalf("Stop took %v: it waited for its deadline although every connection closed", took)
			}
			tot := g.Totals()
			if tot.Errors() != 0 || tot.Held != 0 {
				t.Fatalf("after stop: %+v", tot)
			}
			var lat, hs Snapshot
			g.DrainLatency(&lat, &hs)
			if tc.mode != Hold && tc.mode != Handshake && lat.N == 0 {
				t.Fatal("no latencies recorded")
			}
			if hs.N == 0 {
				t.Fatal("no upgrade latencies recorded")
			}
			t.Logf("%+v rtt p50 %dµs p99 %dµs; upgrade p50 %dµs", tot, lat.Quantile(.5), lat.Quantile(.99), hs.Quantile(.5))
		})
	}
	bridgetest.WaitFor(t, 10*time.Second, func() error {
		if n := be.Open(); n != 0 {
			return fmt.Errorf("backend still has %d open connections", n)
		}
		return nil
	})
	if v := be.Violations.Load(); v != 0 {
		t.Fatalf("backend violations: %d, last %s", v, be.LastViolation())
	}
}

func TestAppendJSONMessage(t *testing.T) {
	now := time.Now().UnixNano()
	p := AppendJSONMessage(nil, 42, now, 1024)
	if len(p) != 1024 {
		t.Fatalf("len %d, want 1024", len(p))
	}
	if ts, ok := stamp(p); !ok || ts != now {
		t.Fatalf("stamp: %d %v, want %d", ts, ok, now)
	}
	if short := AppendJSONMessage(nil, 1, now, 4); len(short) < 20 {
		t.Fatalf("a small size keeps the timestamp: %q", short)
	}
	z := (&loop{}).zc()
	c := z.deflate(p)
	t.Logf("1 KiB JSON message deflates to %d bytes", len(c))
	back, err := z.inflate(c)
	if err != nil || !bytes.Equal(back, p) {
		t.Fatalf("round trip: %v", err)
	}
}

package main

import (
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestTrimmerDue(t *testing.T) {
	const MiB = 1 << 20
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name string
		base uint64    // retained heap after the previous trim
		last time.Time // previous trim
		// per look: bytes allocated since the previous look, retained heap
		looks [][2]uint64
		want  []bool
	}{
		{"grown, then quiet twice", 10 * MiB, time.Time{},
			[][2]uint64{{50 * MiB, 40 * MiB}, {0, 40 * MiB}, {0, 40 * MiB}}, []bool{false, false, true}},
		{"quiet, but still busy in between", 10 * MiB, time.Time{},
			[][2]uint64{{0, 40 * MiB}, {5 * MiB, 40 * MiB}, {0, 40 * MiB}, {0, 40 * MiB}}, []bool{false, false, false, true}},
		{"quiet, grown by less than the slack", 10 * MiB, time.Time{},
			[][2]uint64{{0, 17 * MiB}, {0, 17 * MiB}, {0, 17 * MiB}}, []bool{false, false, false}},
		{"quiet, grown by the slack but under the ratio", 90 * MiB, time.Time{},
			[][2]uint64{{0, 100 * MiB}, {0, 100 * MiB}}, []bool{false, false}},
		{"quiet and grown, but trimmed a moment ago", 10 * MiB, t0.Add(-10 * time.Second),
			[][2]uint64{{0, 40 * MiB}, {0, 40 * MiB}, {0, 40 * MiB}}, []bool{false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trimmer{every: 5 * time.Second, quiet: MiB, calm: 2, growth: 1.25, slack: 8 * MiB, gap: 30 * time.Second,
				base: tc.base, last: tc.last}
			var allocs uint64
			for i, l := range tc.looks {
				allocs += l[0]
				if got := tr.due(t0.Add(time.Duration(i)*time.Second), allocs, l[1]); got != tc.want[i] {
					t.Fatalf("look %d (%+v): due = %v, want %v", i, l, got, tc.want[i])
				}
			}
		})
	}
}

// TestTrimmerReturnsMemory: after the heap has grown and the process gone
// quiet, the trimmer hands the memory back to the OS.
func TestTrimmerReturnsMemory(t *testing.T) {
	released := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	// Start from a trimmed heap, as a bridge does after its previous trim:
	// the tests that ran before this one in the same process may have left
	// a heap retained larger than the burst, and the trimmer measures the
	// growth from what it finds at its start.
	debug.FreeOSMemory()
	tr := newTrimmer()
	tr.every, tr.gap = 20*time.Millisecond, 0
	// A burst: 64 MiB in small objects, alive for a moment, then garbage.
	func() {
		burst := make([][]byte, 0, 64<<10)
		for range 64 << 10 {
			burst = append(burst, make([]byte, 1<<10))
		}
	}()
	_, before := tr.read()
	rel0 := released()

	stop := make(chan struct{})
	defer close(stop)
	trims := make(chan struct{}, 8)
	go tr.run(stop, zap.NewNop(), func() { trims <- struct{}{} })
	select {
	case <-trims:
	case <-time.After(20 * time.Second):
		t.Fatalf("no trim within 20 s of a 64 MiB burst (retained %d B)", before)
	}
	_, after := tr.read()
	if before-after < 32<<20 {
		t.Fatalf("retained heap %d B → %d B after the trim, want at least 32 MiB less", before, after)
	}
	if got := released() - rel0; got < 32<<20 {
		t.Fatalf("released to the OS: %d B more, want at least 32 MiB", got)
	}
	t.Logf("retained heap %d MiB → %d MiB", before>>20, after>>20)
}

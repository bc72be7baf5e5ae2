//go:build !race

package journal

import (
	"strconv"
	"testing"
)

// TestRecordAllocs: recording from an event loop allocates nothing once the
// batch buffers have grown to the load — Opened and Gone copy into the
// shared batch, and the writer goroutine swaps and writes it without
// allocating either (testing.AllocsPerRun counts every goroutine's
// allocations, the writer's included).
func TestRecordAllocs(t *testing.T) {
	j, _ := openT(t, t.TempDir(), Options{SegmentSize: 1 << 30, OnWritten: func(uint64, error) {}})
	id := append(make([]byte, 0, 32), "0123456789ab-"...)
	e := Entry{ConnID: id, ClientID: []byte("user-12345"), XFF: []byte("203.0.113.7")}
	n := 0
	step := func() {
		e.ConnID = strconv.AppendUint(id[:13], uint64(n), 16)
		n++
		if _, err := j.Opened(e); err != nil {
			t.Fatal(err)
		}
		j.Gone(e.ConnID)
	}
	for range 10000 { // grow the buffers
		step()
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := testing.AllocsPerRun(10000, step); got != 0 {
		t.Fatalf("Opened+Gone allocs = %v, want 0", got)
	}
}

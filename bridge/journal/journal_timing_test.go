package journal

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// benchEntry fills e with connection n's id in buf (no allocation).
func benchEntry(buf []byte, n uint64) Entry {
	return Entry{ConnID: strconv.AppendUint(buf[:13], n, 16), ClientID: []byte("user-12345"), XFF: []byte("203.0.113.7")}
}

// BenchmarkOpenedGone: the event loops' cost per connection (one Opened
// and one Gone), from GOMAXPROCS goroutines at once, with the writer
// writing behind them. Under SyncNever.
func BenchmarkOpenedGone(b *testing.B) {
	j, _ := openT(b, b.TempDir(), Options{})
	var ids atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := []byte("0123456789ab-0000000000000000")
		for pb.Next() {
			e := benchEntry(buf, ids.Add(1))
			for {
				if _, err := j.Opened(e); err == nil {
					break
				}
				// ErrFull: the writer is behind (an engine would answer
				// 503); wait for it, so ns/op is the sustained rate.
				if err := j.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			j.Gone(e.ConnID)
		}
	})
	if err := j.Flush(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	st := j.Stats()
	b.ReportMetric(float64(st.Records)/float64(max(st.Batches, 1)), "records/batch")
	b.ReportMetric(float64(st.Full)/float64(b.N), "full/op")
}

// BenchmarkWritten: the upgrade's wait, per policy: Opened, then wait until
// it is reported written (what the 101 waits for), one connection at a
// time (the worst case for batching). ns/op is the added latency of an
// upgrade on an idle bridge; syncs/op shows each batch's fsync.
func BenchmarkWritten(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"never", Options{Sync: SyncNever}},
		{"interval=1s", Options{Sync: SyncInterval, SyncEvery: time.Second}},
		{"always", Options{Sync: SyncAlways}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			done := make(chan struct{}, 1)
			var want atomic.Uint64
			tc.opts.OnWritten = func(upTo uint64, err error) {
				if upTo >= want.Load() {
					select {
					case done <- struct{}{}:
					default:
					}
				}
			}
			j, _ := openT(b, b.TempDir(), tc.opts)
			buf := []byte("0123456789ab-0000000000000000")
			b.ReportAllocs()
			var n uint64
			cpu0 := cpuTime(b)
			for b.Loop() {
				n++
				e := benchEntry(buf, n)
				want.Store(^uint64(0))
				seq, err := j.Opened(e)
				if err != nil {
					b.Fatal(err)
				}
				want.Store(seq)
				for j.Written() < seq {
					<-done
				}
				j.Gone(e.ConnID)
			}
			b.ReportMetric(float64(j.Stats().Syncs)/float64(b.N), "syncs/op")
			// Every goroutine's CPU, the writer's and the waiter's included:
			// the journal's CPU per connection without any batching.
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkBatches: write throughput with 64 producers (event loops) that
// each wait for their record to be written before the next (as an upgrade
// waits for its 101), per policy: group commit at work. ns/op is per
// record; records/batch shows how much each write(2) and fsync carried.
func BenchmarkBatches(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"never", Options{Sync: SyncNever}},
		{"always", Options{Sync: SyncAlways}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			j, _ := openT(b, b.TempDir(), tc.opts)
			var ids atomic.Uint64
			b.SetParallelism(32) // 32×GOMAXPROCS waiting upgrades
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				buf := []byte("0123456789ab-0000000000000000")
				for pb.Next() {
					e := benchEntry(buf, ids.Add(1))
					seq, err := j.Opened(e)
					if err != nil {
						continue
					}
					for j.Written() < seq {
						time.Sleep(20 * time.Microsecond) // the engine would be told by OnWritten
					}
					j.Gone(e.ConnID)
				}
			})
			st := j.Stats()
			b.ReportMetric(float64(st.Records)/float64(max(st.Batches, 1)), "records/batch")
		})
	}
}

// TestSizeAfterMillion measures the journal's size after 1,000,000
// connects and closes around 10,000 connections that stay open (default
// segment size), and checks it stays within two snapshots and three
// segments. Skipped with -short and under -race (a load test, like the
// Makefile's second test line); run with -v to see the numbers.
func TestSizeAfterMillion(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("1,000,000 connects and closes: without -short and -race")
	}
	dir := t.TempDir()
	j, _ := openT(t, dir, Options{})
	const live, churn = 10000, 1000000
	start := time.Now()
	churnT(t, j, "0123456789ab", live, churn, 200)
	elapsed := time.Since(start)
	recLen := int64(len(appendOpened(nil, testEntry("0123456789ab", churn))))
	max := 2*live*recLen + 3*(4<<20+200*2*recLen)
	var size int64
	var files []string
	waitFor(t, 60*time.Second, "journal within its bound", func() bool {
		size, files = dirSize(t, dir)
		return size <= max
	})
	st := j.Stats()
	t.Logf("%d connects+closes around %d live in %v (%.0f records/s, %.1f records/batch): %d bytes written, journal now %d bytes in %d files %v, %d compactions",
		churn, live, elapsed.Round(time.Millisecond), float64(st.Records)/elapsed.Seconds(), float64(st.Records)/float64(st.Batches),
		st.Bytes, size, len(files), files, st.Compactions)
	closeT(t, j)
	_, rec := openT(t, dir, Options{})
	if len(rec.Orphans) != live {
		t.Fatalf("got %d orphans, want %d", len(rec.Orphans), live)
	}
}

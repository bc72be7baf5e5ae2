package loadgen

import (
	"math/bits"
	"sync/atomic"
)

// Latency histograms are log-linear, in the style of HdrHistogram: values
// (microseconds) below 64 have a bucket each, and every power of two above
// is split into 32 buckets, so a reported value is within 1/32 (3.1 %) of
// the true one. Buckets cover up to 2^36 µs (19 hours).
const (
	subBits    = 5
	subCount   = 1 << subBits
	maxShift   = 30
	NumBuckets = (maxShift+2)<<subBits + subCount
)

// bucketOf returns the bucket of v microseconds.
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < 2*subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - (subBits + 1)
	if shift > maxShift {
		return NumBuckets - 1
	}
	return (shift+1)<<subBits + int(v>>uint(shift)) - subCount
}

// BucketHigh is the highest value that falls into bucket i.
func BucketHigh(i int) int64 {
	if i < 2*subCount {
		return int64(i)
	}
	shift := i>>subBits - 1
	mant := int64(i&(subCount-1)) + subCount
	return (mant+1)<<uint(shift) - 1
}

// Histogram counts latencies. Record is allocation-free and safe for
// concurrent use; in wsbench one event loop records and the reporter drains
// it once a second with Drain.
type Histogram struct {
	counts [NumBuckets]atomic.Uint64
	max    atomic.Int64
}

// Record adds one value in microseconds.
func (h *Histogram) Record(us int64) {
	h.counts[bucketOf(us)].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// Drain moves the counts recorded so far into s (adding to what s holds)
// and resets h.
func (h *Histogram) Drain(s *Snapshot) {
	for i := range h.counts {
		if n := h.counts[i].Swap(0); n != 0 {
			s.Counts[i] += n
			s.N += n
		}
	}
	if m := h.max.Swap(0); m > s.Max {
		s.Max = m
	}
}

// Snapshot is a plain copy of a histogram, for merging and reporting; it is
// owned by one goroutine.
type Snapshot struct {
	Counts [NumBuckets]uint64
	N      uint64
	Max    int64
}

// Add merges o into s.
func (s *Snapshot) Add(o *Snapshot) {
	if o.N == 0 {
		return
	}
	for i, n := range o.Counts {
		s.Counts[i] += n
	}
	s.N += o.N
	s.Max = max(s.Max, o.Max)
}

// Reset empties s.
func (s *Snapshot) Reset() { *s = Snapshot{} }

// Quantile returns the value (µs) at quantile q in [0, 1]: the high end of
// the bucket holding it, capped at the exact maximum. It is 0 when empty.
func (s *Snapshot) Quantile(q float64) int64 {
	if s.N == 0 {
		return 0
	}
	rank := uint64(q*float64(s.N) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, n := range s.Counts {
		seen += n
		if seen >= rank {
			return min(BucketHigh(i), s.Max)
		}
	}
	return s.Max
}

// Sparse lists the non-empty buckets as (bucket, count) pairs, the form
// worker processes send.
func (s *Snapshot) Sparse() [][2]uint64 {
	var out [][2]uint64
	for i, n := range s.Counts {
		if n != 0 {
			out = append(out, [2]uint64{uint64(i), n})
		}
	}
	return out
}

// AddSparse merges pairs from Sparse and a maximum into s.
func (s *Snapshot) AddSparse(pairs [][2]uint64, maxv int64) {
	for _, p := range pairs {
		if p[0] < NumBuckets {
			s.Counts[p[0]] += p[1]
			s.N += p[1]
		}
	}
	s.Max = max(s.Max, maxv)
}

package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"go.uber.org/zap"
)

// The Go runtime keeps the heap it has grown to, up to its GC goal: after a
// reconnect storm an idle bridge holds on to the storm's garbage, the
// stacks of the backend workers that have since exited and their sockets'
// buffers, none of which its idle connections need (an idle bridge
// allocates nothing, so no GC comes to collect them either). The trimmer
// watches the heap and, once the process has been quiet for a while after
// such growth, collects and returns the rest to the OS in one go.
type trimmer struct {
	every  time.Duration // how often to look
	quiet  uint64        // bytes allocated since the last look below which the process is quiet
	calm   int           // quiet looks in a row before a trim (the burst's backend workers retire meanwhile)
	growth float64       // retained heap over the last trim's, at least this ratio…
	slack  uint64        // …and at least this many bytes more
	gap    time.Duration // at least this long between trims

	base    uint64 // retained heap bytes after the last trim (or at start)
	allocs  uint64 // cumulative allocated bytes at the last look
	quietN  int    // quiet looks in a row so far
	last    time.Time
	samples []metrics.Sample
}

const (
	mAllocs = "/gc/heap/allocs:bytes"
	mObject = "/memory/classes/heap/objects:bytes" // live and not yet swept
	mFree   = "/memory/classes/heap/free:bytes"    // free, not returned to the OS
	mUnused = "/memory/classes/heap/unused:bytes"  // reserved for objects, not used
	mStacks = "/memory/classes/heap/stacks:bytes"
)

func newTrimmer() *trimmer {
	t := &trimmer{
		every: 5 * time.Second, quiet: 1 << 20, calm: 2, growth: 1.25, slack: 8 << 20, gap: 30 * time.Second,
		samples: []metrics.Sample{{Name: mAllocs}, {Name: mObject}, {Name: mFree}, {Name: mUnused}, {Name: mStacks}},
	}
	t.allocs, t.base = t.read()
	return t
}

// read returns the cumulative allocated bytes and the heap the process
// keeps resident for objects and stacks.
func (t *trimmer) read() (allocs, retained uint64) {
	metrics.Read(t.samples)
	v := func(i int) uint64 {
		if t.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return t.samples[i].Value.Uint64()
	}
	return v(0), v(1) + v(2) + v(3) + v(4)
}

// due reports whether to trim now, given this look's figures; it records
// the allocation count for the next look.
func (t *trimmer) due(now time.Time, allocs, retained uint64) bool {
	if allocs-t.allocs < t.quiet {
		t.quietN++
	} else {
		t.quietN = 0
	}
	t.allocs = allocs
	return t.quietN >= t.calm && now.Sub(t.last) >= t.gap &&
		retained >= t.base+t.slack && float64(retained) >= float64(t.base)*t.growth
}

// run looks every t.every until stop is closed.
func (t *trimmer) run(stop <-chan struct{}, log *zap.Logger, trimmed func()) {
	tk := time.NewTicker(t.every)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tk.C:
			allocs, retained := t.read()
			if !t.due(now, allocs, retained) {
				continue
			}
			// Two collections: the first moves sync.Pool contents (the
			// backend sockets' 8 KiB buffers, pooled calls) to the pools'
			// victim caches, the second frees them; then all free pages go
			// back to the OS.
			runtime.GC()
			debug.FreeOSMemory()
			t.allocs, t.base = t.read()
			t.last = time.Now()
			log.Info("memory trimmed after growth", zap.Uint64("heap_before", retained), zap.Uint64("heap_after", t.base))
			trimmed()
		}
	}
}

package bridge

import "math"

// Adapting to the backend (Config.Adapt).
//
// A socket per call in flight is right for a slow backend (PHP-FPM: a call
// holds a worker for milliseconds, and parallelism is what it needs) and
// wasteful for a fast one: a thousand sockets each carrying one call cost
// a thousand writes, reads and goroutine wake-ups per round, where a few
// sockets carrying pipelined batches cost a few. With Adapt the client
// finds how many sockets the backend can use, the way TCP Vegas finds a
// congestion window: from how much its round trips grow beyond the
// fastest it has seen.
//
// A call's time is its batch's time, from the write to the last answer,
// divided by the batch's size (so pipelining does not read as slowness).
// base is the least call time of the last one to two seconds; recent the
// least of the last recentSamples batches. With busy sockets in use,
//
//	queue = busy × (1 - base/recent)
//
// estimates how many calls are waiting inside the backend rather than
// being served. Below alpha the backend serves everything it is given and
// the limit on sockets rises (if calls are waiting for one); above beta it
// only queues them (a saturated PHP-FPM pool, or cores the backend shares
// with everything else) and the limit falls. alpha and beta grow with the
// logarithm of the limit, as in Netflix's concurrency-limits' Vegas. A
// slow backend therefore gets about as many sockets as it has workers;
// a fast one, or one on a saturated machine, a few — and since the limit
// binds, calls queue, and a worker that comes free takes up to depth of
// them at once on its socket (pipelined.go).
//
// depth is how many calls one socket may carry: adaptBudget / base, at
// most Pipeline. The last call of a batch waits behind the others for
// about adaptBudget; against a backend whose calls take a millisecond or
// more, depth is 1: no pipelining, whatever Pipeline allows.
//
// A call that is stuck (StuckAfter) does not count against the limit, as
// it does not count against MaxConns. No sample is taken from a failed
// call: a backend that refuses connections answers nothing, fast.

// Adapt's constants.
const (
	// adaptMinLimit sockets are always allowed.
	adaptMinLimit = 4
	// adaptStartLimit is the limit before anything is measured.
	adaptStartLimit = 64
	// adaptBudget is what the last call of a pipelined batch may wait
	// behind the others.
	adaptBudget = 2_000_000 // ns
	// adaptWindow is a bucket of base's windowed minimum: base follows a
	// backend that became slower within one to two of them.
	adaptWindow = 1_000_000_000 // ns
	// recentSamples batches make recent.
	recentSamples = 16
	// adaptEvery is the least time between two changes of the limit (at
	// least recent itself: the last change must have had time to show).
	adaptEvery = 10_000_000 // ns
)

// adapter is the state of Adapt; it is guarded by Client.mu.
type adapter struct {
	limit            int
	cur, prev        int64 // windowed minimum of a call's time, ns (0 = none yet)
	bucket           int64 // Now() when cur started
	recent           [recentSamples]int64
	ri, rn           int
	changed          int64 // Now() of the last change of limit
	raises, lowers   int64 // counters, for tests and metrics
	lastQueue, lastR float64
}

// isFast: the backend answers fast enough to pipeline to, and the calls
// of the moment do too (a backend whose fast calls set base while most of
// its calls are slow is not fast).
func (a *adapter) isFast() bool {
	base, recent := a.base(), a.recentMin()
	return base > 0 && base <= adaptBudget/4 && recent <= adaptBudget/2
}

// base is the least call time of the window, 0 until measured.
func (a *adapter) base() int64 {
	switch {
	case a.cur == 0:
		return a.prev
	case a.prev == 0:
		return a.cur
	}
	return min(a.cur, a.prev)
}

func (a *adapter) recentMin() int64 {
	m := int64(0)
	for _, v := range a.recent[:a.rn] {
		if m == 0 || v < m {
			m = v
		}
	}
	return m
}

// capLocked is the most workers whose call is not stuck. c.mu is held.
func (c *Client) capLocked() int {
	if !c.cfg.Adapt {
		return c.cfg.MaxConns
	}
	return c.ad.limit
}

// depthLocked is how many calls a batch may carry. c.mu is held.
func (c *Client) depthLocked() int {
	if !c.cfg.Adapt {
		return c.cfg.Pipeline
	}
	b := max(c.ad.base(), c.ad.recentMin())
	if b <= 0 || !c.ad.isFast() {
		return 1
	}
	return int(max(1, min(int64(c.cfg.Pipeline), adaptBudget/b)))
}

// timedLocked folds in a batch of n calls answered d ns after the write,
// busy workers (this one included) being in use. c.mu is held.
func (c *Client) timedLocked(d int64, n, busy int) {
	if !c.cfg.Adapt || n <= 0 || d <= 0 {
		return
	}
	a := &c.ad
	now := Now()
	per := max(d/int64(n), 1)
	if now-a.bucket >= adaptWindow {
		a.prev, a.cur, a.bucket = a.cur, 0, now
	}
	if a.cur == 0 || per < a.cur {
		a.cur = per
	}
	a.recent[a.ri] = per
	a.ri = (a.ri + 1) % recentSamples
	a.rn = min(a.rn+1, recentSamples)
	recent := a.recentMin()
	if a.rn < recentSamples/2 || now-a.changed < max(adaptEvery, 2*recent) {
		return
	}
	base := a.base()
	fast := a.isFast()
	q := float64(busy) * (1 - float64(base)/float64(recent))
	lg := math.Log10(float64(a.limit))
	alpha, beta := max(1, 3*lg), max(2, 6*lg)
	if !fast {
		// Without pipelining fewer sockets save little: only a backend
		// that queues half of what it is given has too many.
		alpha, beta = max(alpha, float64(a.limit)/4), max(beta, float64(a.limit)/2)
	}
	a.lastQueue, a.lastR = q, float64(recent)/float64(base)
	switch {
	case q < alpha && c.queued > 0 && a.limit < c.cfg.MaxConns:
		// Calls wait for a socket and the backend serves what it gets:
		// twice the sockets when it queues nothing at all.
		step := max(1, a.limit/8)
		if q < 1 {
			step = a.limit
		}
		a.limit = min(c.cfg.MaxConns, a.limit+step)
		a.changed = now
		a.raises++
	case q > beta && a.limit > adaptMinLimit:
		a.limit = max(adaptMinLimit, a.limit-max(1, a.limit/16))
		a.changed = now
		a.lowers++
	}
}

// AdaptState is what Adapt decided: the limit on sockets, the depth of a
// batch, and the call times it decided from.
type AdaptState struct {
	Limit, Depth int
	Base, Recent int64 // ns
	Raises       int64
	Lowers       int64
}

// Adapted returns Adapt's state (the zero value without Adapt).
func (c *Client) Adapted() AdaptState {
	if !c.cfg.Adapt {
		return AdaptState{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return AdaptState{Limit: c.ad.limit, Depth: c.depthLocked(), Base: c.ad.base(), Recent: c.ad.recentMin(),
		Raises: c.ad.raises, Lowers: c.ad.lowers}
}

// SocketLimit is how many sockets may carry calls that are not stuck.
func (c *Client) SocketLimit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.capLocked()
}

// Depth is how many calls one socket may carry at once.
func (c *Client) Depth() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.depthLocked()
}

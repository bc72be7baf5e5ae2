package bridge

import (
	"math"
	"time"
)

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
// more, depth is 1: no pipelining, whatever Pipeline allows. It follows
// base, not the last batch: on a saturated machine a single call often
// takes milliseconds only because it waited for a core, and a depth that
// shrank with it made batches smaller, calls slower and the depth smaller
// still, until a few sockets carried one call each and the queue grew
// without bound. Only a batch far slower than the typical one (four times,
// over 10 ms, over adaptBudget a call: the backend has just turned slow)
// makes the next one a single call.
//
// Trust (Session) is relative too: a connection's next call may share a
// batch if its last POST was answered within adaptTrusted or four times
// the typical batch's time, whichever is longer (TrustWithin). On a
// machine where every call takes 30 ms, a call is suspect only when it is
// slower than the others; with a fixed 10 ms every connection lost its
// trust, and the calls that could not share a batch waited for the few
// sockets the limit allowed.
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
	// adaptEvery is the least time between two changes of the limit (and
	// at least two recent call times: the last change must have had time
	// to show).
	adaptEvery = 10_000_000 // ns
	// adaptStuckPipelined: a pipelined batch out this long is stuck (not
	// StuckAfter): no batch is formed while one is, so that a backend
	// that stalls traps the calls already behind a stalled one, not those
	// that come after.
	adaptStuckPipelined = 10 * time.Millisecond
	// adaptTrusted: a connection whose last POST was answered within
	// this may have its next call share a pipelined batch; any other call
	// (a first message, a GET, one after a slow answer) goes alone, so
	// that no call waits on one no fast answer vouches for.
	adaptTrusted = adaptStuckPipelined
	// adaptProbe calls make a probe, one every adaptProbeEvery.
	adaptProbe      = 4
	adaptProbeEvery = 200_000_000 // ns
)

// adapter is the state of Adapt; it is guarded by Client.mu.
type adapter struct {
	limit          int
	cur, prev      int64 // windowed minimum of a call's time, ns (0 = none yet)
	bucket         int64 // Now() when cur started
	recent         [recentSamples]int64
	ri, rn         int
	changed        int64 // Now() of the last change of limit
	raises, lowers int64 // changes of limit, for tests (Adapted)
	probed         int64 // Now() of the last probe
	typical        int64 // a batch's time, write to last answer, smoothed (ns)
	turnedSlow     bool  // the last batch took far longer than the typical one (timedAt)
}

// isFast: the backend answers fast enough to pipeline to, and the calls
// of the moment do too (a backend whose fast calls set base while most of
// its calls are slow is not fast).
func (a *adapter) isFast() bool {
	base := a.base()
	return base > 0 && base <= adaptBudget/4 && a.recentMin() <= adaptBudget/2
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

// capLocked is the most workers whose call is not stuck. With Adapt the
// limit binds only while the backend is fast: it exists to make calls
// wait so that they share batches, and while nothing is pipelined a call
// waiting for a socket is only a call waiting (on a saturated machine,
// where single calls look slow, the limit would otherwise fall and
// become the queue). While fast, the limit is raised by one for each
// first call of a connection queued or in hand (Call.first): such a call
// always goes alone, so holding it back gains no batch (a reconnect
// storm's GETs, the first messages of thousands of new clients). A call
// that lost its trust to a slow answer stays within the limit. c.mu is
// held.
func (c *Client) capLocked() int {
	if !c.cfg.Adapt || !c.ad.isFast() {
		return c.cfg.MaxConns
	}
	return min(c.cfg.MaxConns, c.ad.limit+c.lone)
}

// depthLocked is how many calls a batch may carry. c.mu is held.
func (c *Client) depthLocked() int {
	if !c.cfg.Adapt {
		return c.cfg.Pipeline
	}
	if !c.ad.isFast() {
		return 1
	}
	if c.ad.turnedSlow {
		return 1
	}
	return int(max(1, min(int64(c.cfg.Pipeline), adaptBudget/c.ad.base())))
}

// timedLocked folds in a batch of n calls answered d ns after the write,
// busy workers (this one included) being in use. c.mu is held.
func (c *Client) timedLocked(d int64, n, busy int) { c.timedAt(Now(), d, n, busy) }

// TrustWithin is how soon a POST must be answered for its connection's
// next call to be trusted (Session): adaptTrusted, or four times the
// typical batch's time if that is longer (a saturated machine makes every
// call slow, and a call is suspect only when slower than the others).
func (c *Client) TrustWithin() int64 { return c.trustWithin.Load() }

// timedAt is timedLocked at the time now.
func (c *Client) timedAt(now, d int64, n, busy int) {
	if c.cfg.Pipeline <= 1 || n <= 0 || d <= 0 {
		return
	}
	a := &c.ad
	// A batch far slower than the typical one, and slow per call: the
	// backend has just turned slow (depthLocked).
	a.turnedSlow = a.typical > 0 && d > 4*a.typical && d > int64(adaptTrusted) && d/int64(n) > adaptBudget
	// One call that hung for seconds moves it little.
	a.typical += (min(d, 2*a.typical+int64(adaptTrusted)) - a.typical) / 16
	c.trustWithin.Store(max(int64(adaptTrusted), 4*a.typical))
	if !c.cfg.Adapt {
		return
	}
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
	recent, fast := a.recentMin(), a.isFast()
	if a.rn < recentSamples/2 || now-a.changed < max(adaptEvery, 2*recent) {
		return
	}
	base := a.base()
	q := float64(busy) * (1 - float64(base)/float64(recent))
	lg := math.Log10(float64(a.limit))
	alpha, beta := max(1, 3*lg), max(2, 6*lg)
	if !fast {
		// Without pipelining fewer sockets save little: only a backend
		// that queues half of what it is given has too many.
		alpha, beta = max(alpha, float64(busy)/4), max(beta, float64(busy)/2)
	}
	switch {
	case q < alpha && c.queued > 0 && a.limit < c.cfg.MaxConns:
		// Calls wait for a socket and the backend serves what it gets:
		// one more (a pipelining socket carries many calls), or without
		// pipelining an eighth more, twice as many when the backend
		// queues nothing at all.
		step := 1
		switch {
		case !fast && q < 1:
			step = a.limit
		case !fast:
			step = max(1, a.limit/8)
		}
		a.limit = min(c.cfg.MaxConns, a.limit+step)
		a.changed = now
		a.raises++
	case q > beta && a.limit > adaptMinLimit:
		// From what is in use: a limit far above it would take many
		// steps to mean anything.
		lim := min(a.limit, max(busy, adaptMinLimit))
		a.limit = max(adaptMinLimit, lim-max(1, lim/16))
		a.changed = now
		a.lowers++
	}
}

// probeLocked is the depth of a batch that measures whether pipelining
// would pay, or 0. While not fast, a backend whose calls take a few
// milliseconds at most gets one batch of adaptProbe calls every
// adaptProbeEvery: on a machine whose cores the backend shares, a fast
// backend's calls one at a time can look slow only because every socket
// costs a wake-up, and a batch shows what a call costs when they are
// joined. A slow backend is never probed; one of a few milliseconds makes
// adaptProbe-1 calls wait that long once per adaptProbeEvery. c.mu is
// held.
func (c *Client) probeLocked() int { return c.probeAt(Now()) }

// probeAt is probeLocked at the time now.
func (c *Client) probeAt(now int64) int {
	a := &c.ad
	if !c.cfg.Adapt || a.isFast() {
		return 0
	}
	if b := a.base(); b <= 0 || b > 2*adaptBudget || now-a.probed < adaptProbeEvery {
		return 0
	}
	a.probed = now
	return min(adaptProbe, c.cfg.Pipeline)
}

// AdaptState is what Adapt decided: the limit on sockets in force (as
// SocketLimit: every socket while the backend is not fast), the depth of
// a batch, and the call times it decided from.
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
	return AdaptState{Limit: c.capLocked(), Depth: c.depthLocked(), Base: c.ad.base(), Recent: c.ad.recentMin(),
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

// Pipelined is how many calls went out in a batch of two or more.
func (c *Client) Pipelined() int64 { return c.pipelined.Load() }

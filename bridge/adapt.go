package bridge

import "time"

// Adapting to the backend's speed (Config.Budget > 0, the default of the
// command).
//
// A socket per call in flight is right for a slow backend (PHP-FPM: each
// call holds a worker for milliseconds, and parallelism is what it needs)
// and wasteful for a fast one: a thousand sockets each carrying one call at
// a time cost a thousand writes, reads and goroutine wake-ups per round,
// where sixteen sockets carrying pipelined batches cost sixteen. The
// client measures what a call costs the backend: a batch's time from write
// to last answer divided by its size, and keeps the least of the last 32
// to 64 batches (perCall). The least, not an average: under load a call's
// time includes its wait at a busy backend, which grows with every socket
// added, and an average would keep opening sockets that add only waiting.
// Two rules follow:
//
//   - Open another socket only when the calls already waiting would wait
//     longer than Budget for the sockets in use (queued × perCall /
//     sockets > Budget), or while fewer than minSockets are open. A fast
//     backend is then served by a few sockets with deep batches; a slow
//     one gets a socket per waiting call, up to MaxConns, as without
//     Budget.
//   - Pipeline at most Budget / perCall calls on one socket (and never
//     more than Pipeline): the last call of a batch waits behind the others
//     for about Budget. Against a backend taking a millisecond or more per
//     call that is 1: no pipelining.
//
// So against a backend whose calls take about the same time, a call waits
// at most about Budget longer than with a socket of its own. A backend
// that slows down for good is followed within 64 batches; a call much
// slower than the others delays those pipelined behind it, until it counts
// as stuck (StuckAfter) and batching stops while it lasts.

// minSockets are always allowed, before perCall is known and while the
// backend is fast: a few sockets keep a fast backend's cores busy.
const minSockets = 4

// perCallWindow is how many batches a bucket of the windowed minimum
// spans.
const perCallWindow = 32

// costs is the windowed minimum of a call's cost: the least of the current
// bucket and of the one before it.
type costs struct {
	n         int
	cur, prev int64
}

func (m *costs) add(d int64) {
	if m.cur == 0 || d < m.cur {
		m.cur = max(d, 1)
	}
	if m.n++; m.n == perCallWindow {
		m.prev, m.cur, m.n = m.cur, 0, 0
	}
}

func (m *costs) least() int64 {
	switch {
	case m.cur == 0:
		return m.prev
	case m.prev == 0:
		return m.cur
	}
	return min(m.cur, m.prev)
}

// wantWorkerLocked reports whether a call that found no free worker should
// start one (room permitting). c.mu is held.
func (c *Client) wantWorkerLocked() bool {
	perCall := c.costs.least()
	if c.cfg.Budget <= 0 || c.cfg.Pipeline <= 1 || perCall == 0 {
		return true
	}
	busy := c.workers - c.stuck
	if busy < minSockets {
		return true
	}
	if int64(c.queued)*perCall <= int64(c.cfg.Budget)*int64(busy) {
		return false
	}
	// A fast backend (one that batches take more than one call of): at
	// most one new socket per Budget. A burst measured against a cost
	// taken when the box was busy cannot open hundreds of sockets in the
	// moment before deep batches show what a call really costs.
	if perCall < int64(c.cfg.Budget)/2 {
		now := Now()
		if now-c.lastStart < int64(c.cfg.Budget) {
			return false
		}
		c.lastStart = now
	}
	return true
}

// depthLocked is how many calls one batch may carry. c.mu is held.
func (c *Client) depthLocked() int {
	perCall := c.costs.least()
	if c.cfg.Budget <= 0 || perCall == 0 {
		return c.cfg.Pipeline
	}
	return int(max(1, min(int64(c.cfg.Pipeline), int64(c.cfg.Budget)/perCall)))
}

// timedLocked records a batch of n calls that took d (ns, write to last
// answer). c.mu is held.
func (c *Client) timedLocked(d int64, n int) {
	if c.cfg.Budget > 0 && n > 0 {
		c.costs.add(d / int64(n))
	}
}

// PerCall returns what a call costs the backend, as the budget's rules see
// it (0 until measured, or without Budget).
func (c *Client) PerCall() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Duration(c.costs.least())
}

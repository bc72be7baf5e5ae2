package bridge

// Pipeline is one connection's queue of backend calls: at most one in
// flight, the others waiting in arrival order. It keeps the per-connection
// ordering promise (one POST at a time, DELETE after the last POST).
//
// A Pipeline is not safe for concurrent use: the engine keeps it in the
// connection's state and touches it only on that connection's event loop.
// The zero value is an empty pipeline.
type Pipeline struct {
	head, tail *Call
	n          int32 // queued calls, not counting the one in flight
	bytes      int32 // request body bytes of queued calls (bounded by the engine far below 2 GiB)
	busy       bool
}

// Push adds c. It reports true when nothing was in flight: the caller must
// then submit c at once (it is now the call in flight and is not queued).
func (p *Pipeline) Push(c *Call) (submitNow bool) {
	if !p.busy {
		p.busy = true
		return true
	}
	c.next = nil
	if p.tail == nil {
		p.head = c
	} else {
		p.tail.next = c
	}
	p.tail = c
	p.n++
	p.bytes += int32(len(c.Req.Body()))
	return false
}

// Done records that the call in flight has finished and returns the next
// call to submit, or nil when the pipeline is now idle.
func (p *Pipeline) Done() (next *Call) {
	c := p.head
	if c == nil {
		p.busy = false
		return nil
	}
	p.head = c.next
	if p.head == nil {
		p.tail = nil
	}
	c.next = nil
	p.n--
	p.bytes -= int32(len(c.Req.Body()))
	return c
}

// Idle reports whether no call is in flight or queued.
func (p *Pipeline) Idle() bool { return !p.busy }

// Queued returns the number of waiting calls and their body bytes.
func (p *Pipeline) Queued() (calls, bytes int) { return int(p.n), int(p.bytes) }

//go:build linux

package loadgen

// The timer heap orders a loop's connections by their next deadline (conn.when):
// a connect or reply timeout, the next message of a Periodic connection, a
// backoff's end.

func (l *loop) heapPush(c *conn) {
	if c.hidx >= 0 {
		l.heapRemove(c)
	}
	c.hidx = int32(len(l.heap))
	l.heap = append(l.heap, c)
	l.up(int(c.hidx))
}

func (l *loop) heapRemove(c *conn) {
	i := int(c.hidx)
	if i < 0 {
		return
	}
	last := len(l.heap) - 1
	if i != last {
		l.swap(i, last)
	}
	l.heap[last] = nil
	l.heap = l.heap[:last]
	c.hidx = -1
	if i != last {
		l.down(i)
		l.up(i)
	}
}

func (l *loop) swap(i, j int) {
	l.heap[i], l.heap[j] = l.heap[j], l.heap[i]
	l.heap[i].hidx = int32(i)
	l.heap[j].hidx = int32(j)
}

func (l *loop) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if l.heap[p].when <= l.heap[i].when {
			return
		}
		l.swap(i, p)
		i = p
	}
}

func (l *loop) down(i int) {
	n := len(l.heap)
	for {
		m, a, b := i, 2*i+1, 2*i+2
		if a < n && l.heap[a].when < l.heap[m].when {
			m = a
		}
		if b < n && l.heap[b].when < l.heap[m].when {
			m = b
		}
		if m == i {
			return
		}
		l.swap(i, m)
		i = m
	}
}

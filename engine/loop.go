package engine

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/protocol"
)

// taskKind says what a task asks a loop to do.
type taskKind uint8

const (
	taskCall    taskKind = iota // a backend call finished
	taskGrant                   // the registry granted the ClientId: send the GET
	taskReplace                 // a newer connection replaces this one: close 4000
	taskOpen                    // the replaced connection's DELETE is answered: send 101
	taskAdmin                   // push, kick or info from the admin API
	taskTick                    // advance the timing wheel
	taskJournal                 // opened records are written: release the upgrades waiting for them (journal.go)
	taskPublish                 // deliver a channel message to the loop's subscribers
	taskMembers                 // list the loop's subscribers of a channel
	taskClaimed                 // the cluster claim ended (replaces: 1 won): open or give up
	taskYield                   // a newer connection on another node wins: close 4000
	taskHolder                  // the other nodes said which connection the GET replaces (holder)
)

// task is one unit of work for a loop, posted from any goroutine.
type task struct {
	kind     taskKind
	c        *conn
	call     *bridge.Call
	admin    *adminReq
	replaces uint64
	pub      *publication // taskPublish
	presence *presenceReq // taskMembers
	holder   string       // taskHolder: the other node's connection id, or ""
}

// loop is wsbridge's state for one gnet event loop. The mailbox fields
// (mu, tasks, woken, wakes) may be touched from any goroutine; everything
// else belongs to the loop's goroutine.
type loop struct {
	srv *Server
	el  gnet.EventLoop
	bl  *bridge.Loop // the loop's handle on the bridge: every Session call takes it

	mu    sync.Mutex
	tasks []task
	woken bool   // a Run is scheduled and has not yet taken the tasks
	wakes uint64 // EventLoop.Execute calls, each of which allocates in gnet (see TestRoundTripAllocs)

	spare   []task
	now     int64 // ticks since the server started, updated on each tick
	drained int64 // the tick drainStep last ran at
	wheel   wheel
	open    connList // open connections, for drain
	req     protocol.Request
	wbuf    []byte // frames and responses being written; valid until the next write
	idbuf   []byte // X-Forwarded-For being formatted
	iov     [2][]byte

	// The journal (journal.go): upgrades waiting for their opened record,
	// sorted by seq; joldest (jq[0]'s seq, 0 when none) and jposted (a
	// taskJournal is queued) are read by the journal's writer.
	jq      []jwait
	jready  []jwait
	jbuf    []byte
	joldest atomic.Uint64
	jposted atomic.Bool
	// Channels (channel.go): nil until the loop's first subscription.
	chans      map[string]*loopChan  // channel name → its subscribers on this loop
	member     map[*conn]*loopChan   // subscribed connection → the first channel it joined
	memberMore map[*conn][]*loopChan // connection in several channels → the others
	pubBuf     []byte                // consecutive publications' frames, joined (deliverRun)
	z          *zstate               // permessage-deflate's compressor and inflater, made on first use
}

func newLoop(s *Server, el gnet.EventLoop) *loop {
	return &loop{srv: s, el: el, bl: bridge.NewLoop(s.backend, s.idPrefix, &s.queued), now: s.tick(),
		wbuf: make([]byte, 0, 512), idbuf: make([]byte, 0, 40)}
}

// post queues t for the loop and wakes it if it is not already going to
// run. Safe from any goroutine; never blocks on I/O.
func (l *loop) post(t task) {
	l.mu.Lock()
	l.tasks = append(l.tasks, t)
	wake := !l.woken
	l.woken = true
	if wake {
		l.wakes++
	}
	l.mu.Unlock()
	if wake {
		if err := l.el.Execute(context.Background(), l); err != nil {
			// The engine is shutting down: nothing will run the tasks.
			l.srv.logLimited("loop mailbox closed", err)
		}
	}
}

// Run drains the mailbox on the loop's goroutine (gnet.Runnable).
func (l *loop) Run(context.Context) error {
	l.mu.Lock()
	ts := l.tasks
	l.tasks = l.spare[:0]
	l.woken = false
	l.mu.Unlock()
	for i := 0; i < len(ts); i++ {
		if ts[i].kind == taskPublish {
			if k := l.deliverRun(ts[i:]); k > 1 {
				clear(ts[i : i+k])
				i += k - 1
				continue
			}
		}
		l.run(&ts[i])
		ts[i] = task{}
	}
	l.spare = ts[:0]
	return nil
}

func (l *loop) run(t *task) {
	c := t.c
	switch t.kind {
	case taskCall:
		c.sess.Finish(l.bl, t.call, c)
	case taskGrant:
		c.onGrant(t.replaces)
	case taskReplace:
		if c.phase == phOpen {
			c.closeWith(crReplaced, 0, "replaced by a newer connection")
		}
	case taskOpen:
		if c.phase == phTakeover {
			c.open()
		}
	case taskAdmin:
		c.onAdmin(t.admin)
	case taskJournal:
		l.journalRelease()
	case taskPublish:
		l.deliver(t.pub)
	case taskMembers:
		l.listSubscribers(t.presence)
	case taskClaimed:
		c.onClaimed(t.replaces == 1)
	case taskYield:
		c.onYield()
	case taskHolder:
		c.onHolder(t.holder)
	case taskTick:
		l.now = l.srv.tick()
		l.wheel.advance(l.now, (*conn).onTimer)
		l.drainStep()
	}
}

// closeConn closes c's socket from a task (outside OnTraffic, where
// returning gnet.Close does it). OnClose runs before it returns.
func (l *loop) closeConn(c *conn) {
	if c.gc != nil {
		_ = l.el.Close(c.gc)
	}
}

// wheelSlots × tick is one turn of the wheel (102 s at 100 ms); longer
// timers wait for their turn in their slot.
const wheelSlots = 1024

// wheel is a hashed timing wheel of connections, one timer per connection.
// Firing costs the connections due plus the few in the same slot that wait
// for a later turn.
type wheel struct {
	slots [wheelSlots]*conn
	cur   int64
}

func (w *wheel) schedule(c *conn, at int64) {
	w.remove(c)
	if at <= w.cur {
		at = w.cur + 1
	}
	c.twhen = tick32(at)
	s := &w.slots[at&(wheelSlots-1)]
	c.tprev, c.tnext = nil, *s
	if *s != nil {
		(*s).tprev = c
	}
	*s = c
	c.flags |= fTimer
}

func (w *wheel) remove(c *conn) {
	if c.flags&fTimer == 0 {
		return
	}
	if c.tprev != nil {
		c.tprev.tnext = c.tnext
	} else {
		w.slots[c.twhen&(wheelSlots-1)] = c.tnext
	}
	if c.tnext != nil {
		c.tnext.tprev = c.tprev
	}
	c.tnext, c.tprev = nil, nil
	c.flags &^= fTimer
}

// advance fires every timer due up to now. fire may reschedule its own
// connection but must not touch other connections' timers.
func (w *wheel) advance(now int64, fire func(*conn)) {
	for w.cur < now {
		w.cur++
		for c := w.slots[w.cur&(wheelSlots-1)]; c != nil; {
			next := c.tnext
			if int32(c.twhen-tick32(w.cur)) <= 0 { // due: twhen <= cur, modulo 2^32
				w.remove(c)
				fire(c)
			}
			c = next
		}
	}
}

// A connection keeps its ticks (conn.twhen, conn.lastRead) in 32 bits to
// stay small. Compared modulo 2^32 they are right as long as they lie within
// 2^31 ticks of now (6.8 years at the default 100 ms tick): timers are capped
// well below that (Server.ticks), and lastRead is refreshed by the heartbeat;
// only with heartbeats off would an admin info's last_seen wrap, after 2^32
// ticks (13.6 years) of silence.

// tick32 is tick t in the 32 bits a connection keeps.
func tick32(t int64) uint32 { return uint32(t) }

// since returns the ticks from t, kept by tick32, to now.
func (l *loop) since(t uint32) int64 { return int64(tick32(l.now) - t) }

// connList is an intrusive doubly linked list of a loop's open connections.
type connList struct {
	head *conn
	n    int
}

func (l *connList) push(c *conn) {
	c.oprev, c.onext = nil, l.head
	if l.head != nil {
		l.head.oprev = c
	}
	l.head = c
	c.flags |= fListed
	l.n++
}

func (l *connList) remove(c *conn) {
	if c.flags&fListed == 0 {
		return
	}
	if c.oprev != nil {
		c.oprev.onext = c.onext
	} else {
		l.head = c.onext
	}
	if c.onext != nil {
		c.onext.oprev = c.oprev
	}
	c.onext, c.oprev = nil, nil
	c.flags &^= fListed
	l.n--
}

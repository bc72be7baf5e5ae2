package engine

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/journal"
	"github.com/wsbridge/wsbridge/protocol"
)

// The crash-safe DELETE journal (-journal; package bridge/journal, whose
// doc gives the order this wiring follows):
//
//   - the backend's GET says ok → on the loop, j.Opened; the connection
//     waits in its loop's FIFO (loop.jq, sorted by seq) until the record
//     is written, then goes on as without a journal (the registry, the
//     101). OnWritten (JournalWritten, on the journal's writer) posts one
//     taskJournal per loop whose oldest waiter is written, per batch.
//   - its DELETE answered (bridge.DeleteAnswered) → j.Gone.
//   - at start, the orphans (what a dead predecessor left open) hold their
//     ClientIds in the registry and their DELETEs go out while the bridge
//     serves (replay); each answered one is recorded Gone and its ClientId
//     released.
//   - the journal broken (a write failed) or full → 503 (refJournal).

// jwait is an accepted upgrade waiting for its opened record.
type jwait struct {
	seq uint64
	c   *conn
}

// UseJournal makes s record its connections in j (which the caller opened
// with Options.OnWritten = s.JournalWritten) and replay orphans, the
// connections a previous process left open. Call it before Start: the
// orphans' ClientIds are registered as awaiting their DELETE before any
// client can arrive, and their DELETEs go once the listener is up. The
// caller closes j after Shutdown.
func (s *Server) UseJournal(j *journal.Journal, orphans []journal.Entry) {
	s.j = j
	rp := &s.replay
	rp.s = s
	// A quarter of -backend-max-conns (at most 64): the live clients keep
	// the rest of the backend pool while the replay runs.
	rp.max = max(1, min(64, (s.backend.MaxConns()-s.backend.MaxStuck())/4))
	byID := make(map[string]*conn)
	for i := range orphans {
		e := &orphans[i]
		if len(e.ClientID) == 0 || len(e.ClientID) > protocol.MaxClientIDLen {
			// Not a ClientId this bridge could have accepted: its DELETE
			// cannot be addressed. Recorded gone, counted lost.
			j.Gone(e.ConnID)
			rp.lost.Add(1)
			continue
		}
		owner := byID[string(e.ClientID)]
		if owner == nil {
			owner = &conn{}
			owner.sess.Begin(0, e.ClientID, nil, nil)
			byID[string(e.ClientID)] = owner
			s.reg.orphan(owner)
		}
		rp.todo = append(rp.todo, &orphan{rp: rp, e: *e, owner: owner})
	}
	rp.owners = make(map[*conn]int, len(byID))
	rp.byID = make(map[string][]*orphan, len(byID))
	for _, o := range rp.todo {
		rp.owners[o.owner]++
		rp.byID[string(o.e.ClientID)] = append(rp.byID[string(o.e.ClientID)], o)
	}
	rp.left.Store(int64(len(rp.todo)))
	s.metrics.watchJournal(s)
}

// JournalWritten is the journal's Options.OnWritten: on its writer
// goroutine, after each batch, it posts one taskJournal to each loop whose
// oldest waiting upgrade is now written (or to every loop with waiters when
// the journal broke). It never blocks.
func (s *Server) JournalWritten(upTo uint64, err error) {
	if err != nil && s.jbroken.CompareAndSwap(false, true) {
		s.log.Error("journal broken: new upgrades get 503 until restart", zap.Error(err))
	}
	s.loopsMu.Lock()
	loops := s.loops
	s.loopsMu.Unlock()
	for _, l := range loops {
		if o := l.joldest.Load(); o != 0 && (o <= upTo || err != nil) && l.jposted.CompareAndSwap(false, true) {
			l.post(task{kind: taskJournal})
		}
	}
}

// record writes c's opened record (its GET just said ok) and parks c until
// it is written; journalReleased continues. It reports false when c goes
// on at once: the journal refused the record (503 to the client, the
// lifecycle ends at the backend as for a client gone before its 101).
func (c *conn) record() (parked bool) {
	l, s := c.l, c.l.srv
	if s.jbroken.Load() {
		c.journalRefuse()
		return false
	}
	xff := c.xff()
	if len(xff) > journal.MaxXFF {
		xff = xff[:journal.MaxXFF] // only the orphan's DELETE would carry the rest
	}
	l.jbuf = s.appendConnID(l.jbuf[:0], c.sess.ID())
	seq, err := s.j.Opened(journal.Entry{ConnID: l.jbuf, ClientID: s2b(c.clientID()), XFF: s2b(xff)})
	if err != nil {
		s.logLimited("journal refused a connection's record: 503", err)
		c.journalRefuse()
		return false
	}
	c.more |= fMoreJournaled
	l.jq = append(l.jq, jwait{seq, c})
	l.joldest.CompareAndSwap(0, seq)
	if s.j.Written() >= seq && l.jposted.CompareAndSwap(false, true) {
		l.post(task{kind: taskJournal}) // written before it was parked: no batch will tell
	}
	return true
}

// journalRefuse answers an accepted upgrade whose record cannot be written
// with 503 and closes its socket. The caller then goes on as after any ok
// (accept): the connection finds its socket gone and its DELETE (1006)
// follows, as the backend said ok to its GET.
func (c *conn) journalRefuse() {
	s := c.l.srv
	s.metrics.refused[refJournal.why].Inc()
	if c.gc != nil {
		c.write(protocol.AppendResponse(c.l.wbuf[:0], refJournal.status, nil, s.retryAfter(), s2b(refJournal.body)))
		c.l.closeConn(c)
	}
}

// journalRelease runs on the loop (taskJournal): every upgrade whose record
// is written goes on; with the journal broken, those whose record never
// will be get 503.
func (l *loop) journalRelease() {
	l.jposted.Store(false)
	j := l.srv.j
	w := j.Written()
	n := 0
	for n < len(l.jq) && l.jq[n].seq <= w {
		n++
	}
	ready := l.jq[:n]
	broken := l.srv.jbroken.Load()
	if broken {
		ready = l.jq
	}
	// Take them off first: accept may run tasks' code that parks others.
	l.jready = append(l.jready[:0], ready...)
	k := copy(l.jq, l.jq[len(ready):])
	clear(l.jq[k:])
	l.jq = l.jq[:k]
	if len(l.jq) > 0 {
		l.joldest.Store(l.jq[0].seq)
	} else {
		l.joldest.Store(0)
	}
	for i := range l.jready {
		c := l.jready[i].c
		if l.jready[i].seq > w {
			c.more &^= fMoreJournaled
			c.journalRefuse()
		}
		c.accept()
		l.jready[i] = jwait{}
	}
}

// journalGone records c's DELETE answered.
func (c *conn) journalGone(r *bridge.Reply) {
	if c.more&fMoreJournaled == 0 {
		return
	}
	c.more &^= fMoreJournaled
	s := c.l.srv
	if !bridge.DeleteAnswered(r.Outcome, r.Status) {
		// Given up: the next start sends it again.
		s.replay.unanswered.Add(1)
		return
	}
	c.l.jbuf = s.appendConnID(c.l.jbuf[:0], c.sess.ID())
	s.j.Gone(c.l.jbuf)
}

// replay sends the orphans' DELETEs, at most max at once, while the
// bridge serves. Its state is shared by the bridge workers that complete
// the DELETEs: mu guards todo, next, inflight and owners.
type replay struct {
	s   *Server
	max int

	mu       sync.Mutex
	todo     []*orphan
	next     int
	inflight int
	owners   map[*conn]int        // orphans per ClientId's stand-in owner not yet finished
	byID     map[string][]*orphan // orphans not yet sent, by ClientId (see hurry)

	left       atomic.Int64  // orphans whose DELETE has not finished
	replayed   atomic.Uint64 // orphan DELETEs answered (recorded gone)
	lost       atomic.Uint64 // orphan DELETEs given up (left recorded for the next start)
	unanswered atomic.Uint64 // live DELETEs given up (left recorded for the next start)
}

// orphan is one connection a previous process left open. owner stands for
// its ClientId in the registry (one per ClientId, however many orphans it
// has), so that a reconnecting client waits for the DELETEs.
type orphan struct {
	rp    *replay
	e     journal.Entry
	owner *conn
	sent  bool // rp.mu
}

// start sends the first DELETEs (after the listener is up).
func (rp *replay) start() {
	if len(rp.todo) == 0 {
		return
	}
	rp.s.log.Info("journal: sending the DELETEs of connections a previous process left open",
		zap.Int("orphans", len(rp.todo)), zap.Int("in_parallel", rp.max))
	rp.mu.Lock()
	batch := rp.takeLocked(rp.max)
	rp.mu.Unlock()
	for _, o := range batch {
		rp.submit(o)
	}
}

// takeLocked takes up to n orphans to send, in the journal's order,
// skipping those hurry sent; rp.mu is held.
func (rp *replay) takeLocked(n int) []*orphan {
	var out []*orphan
	for ; len(out) < n && rp.next < len(rp.todo); rp.next++ {
		if o := rp.todo[rp.next]; !o.sent {
			o.sent = true
			out = append(out, o)
		}
	}
	rp.inflight += len(out)
	return out
}

// hurry sends at once the DELETEs of id's orphans not sent yet: a client
// that reconnects while its lost connection's DELETE waits in a long
// replay is held until that DELETE is answered, and should not also wait
// for every orphan before it. It exceeds the replay's bound by those few
// DELETEs. Called from an event loop for a held upgrade; cheap when id
// has no orphan.
func (rp *replay) hurry(id string) {
	if rp.left.Load() == 0 {
		return
	}
	rp.mu.Lock()
	var out []*orphan
	for _, o := range rp.byID[id] {
		if !o.sent {
			o.sent = true
			out = append(out, o)
		}
	}
	delete(rp.byID, id)
	rp.inflight += len(out)
	rp.mu.Unlock()
	for _, o := range out {
		rp.submit(o)
	}
}

func (rp *replay) submit(o *orphan) {
	rp.s.backend.SubmitOrphanDelete(o, bridge.Ids{ClientID: o.e.ClientID, ConnID: o.e.ConnID, XFF: o.e.XFF})
}

// Complete takes the orphan's finished DELETE (bridge.Completer, on a
// bridge worker): recorded gone when answered, the ClientId released once
// its last orphan is done, and the next orphan's DELETE sent.
func (o *orphan) Complete(call *bridge.Call) {
	rp, s := o.rp, o.rp.s
	answered := bridge.DeleteAnswered(call.Outcome, call.Resp.StatusCode())
	outcome, status := call.Outcome, call.Resp.StatusCode()
	bridge.ReleaseCall(call)
	if answered {
		s.j.Gone(o.e.ConnID)
		rp.replayed.Add(1)
	} else {
		rp.lost.Add(1)
		if ce := s.limited.Check(zap.WarnLevel, "journal: an orphan's DELETE was not answered; the next start sends it again"); ce != nil {
			ce.Write(zap.ByteString("connection_id", o.e.ConnID), zap.String("outcome", string(outcome)), zap.Int("status", status))
		}
	}
	rp.mu.Lock()
	rp.inflight--
	rp.owners[o.owner]--
	release := rp.owners[o.owner] == 0
	if release {
		delete(rp.owners, o.owner)
	}
	next := rp.takeLocked(1)
	rp.mu.Unlock()
	if release {
		s.reg.deleted(o.owner)
	}
	if rp.left.Add(-1) == 0 {
		s.log.Info("journal: every orphan's DELETE is done", zap.Uint64("answered", rp.replayed.Load()), zap.Uint64("not_answered", rp.lost.Load()))
	}
	for _, n := range next {
		rp.submit(n)
	}
}

// watchJournal registers the journal's series (wsbridge_journal_*).
func (m *Metrics) watchJournal(s *Server) {
	j, rp := s.j, &s.replay
	stat := func(f func(journal.Stats) uint64) func() float64 {
		return func() float64 { return float64(f(j.Stats())) }
	}
	broken := func() float64 {
		if s.jbroken.Load() {
			return 1
		}
		return 0
	}
	m.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_journal_records_total", Help: "Records added to the -journal (a connection opened, a DELETE answered).",
		}, stat(func(st journal.Stats) uint64 { return st.Records })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_journal_bytes_total", Help: "Bytes written to the -journal's segments.",
		}, stat(func(st journal.Stats) uint64 { return st.Bytes })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_journal_batches_total", Help: "write(2) calls of the -journal (records per batch = records / batches).",
		}, stat(func(st journal.Stats) uint64 { return st.Batches })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_journal_syncs_total", Help: "fsyncs of the -journal's segments (-journal-sync).",
		}, stat(func(st journal.Stats) uint64 { return st.Syncs })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsbridge_journal_pending_records", Help: "Records waiting to be written to the -journal (the upgrades among them wait for it before their 101).",
		}, func() float64 { st := j.Stats(); return float64(st.Records - min(st.Records, st.Written)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_journal_full_total", Help: "Upgrades refused with 503 because the -journal's write queue was full (the disk did not keep up).",
		}, stat(func(st journal.Stats) uint64 { return st.Full })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsbridge_journal_write_error", Help: "1 once a -journal write failed: upgrades get 503 until restart.",
		}, broken),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_journal_orphans_replayed_total", Help: "DELETEs sent and answered for connections a previous process left open (found in the -journal at start).",
		}, func() float64 { return float64(rp.replayed.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsbridge_journal_orphans_left", Help: "Connections a previous process left open whose DELETE is not finished yet.",
		}, func() float64 { return float64(rp.left.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_journal_deletes_unanswered_total", Help: "DELETEs given up after their retries (5xx, timeout, unreachable), orphans' and live: left in the -journal, the next start sends them again.",
		}, func() float64 { return float64(rp.lost.Load() + rp.unanswered.Load()) }),
	)
}

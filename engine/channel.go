package engine

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"

	"github.com/wsbridge/wsbridge/protocol"
)

// Channels on one node (docs/protocol.md, "Channels").
//
// Each loop indexes its own subscribers: loop.chans maps a channel name to
// the loop's subscribers of it, loop.member a subscribed connection to the
// first channel it joined and loop.memberMore one in several channels to
// the others (most connections are in one channel: it costs them one
// pointer-sized map entry). Both belong to the loop's goroutine and are nil until its first
// subscription; a connection in no channel costs nothing (one bit,
// fMoreSubscribed, says whether it is in loop.member).
//
// Node-wide, Server.chans maps a channel name to the loops that hold its
// subscribers and the node's subscriber count (nodeChan). A loop joins a
// nodeChan when it gets its first subscriber of the channel and leaves when
// it loses its last; only then is the node-wide lock taken.
//
// Publish frames the message once and posts one task per loop in the
// channel's nodeChan, under the node-wide lock: every loop's mailbox is
// FIFO (loop.post appends under the mailbox's mutex and Run takes the tasks
// in order), so messages published one after the other (one admin
// connection's publishes are: each is answered before the next is read)
// reach each subscriber in publish order. The frame is one []byte shared,
// read-only, by every subscriber's write on every loop: gnet's Write copies
// what the socket does not take at once into the connection's own buffer.

// chanReject is why a subscription was refused: the label of
// wsbridge_channel_rejected_total.
type chanReject uint8

const (
	rejBadName chanReject = iota // not 1–128 of A–Z a–z 0–9 . _ ~ - :
	rejTooMany                   // the connection is in -max-channels channels already
	numChanRejects
)

// String is the metric label.
func (r chanReject) String() string {
	switch r {
	case rejBadName:
		return "bad_name"
	case rejTooMany:
		return "too_many"
	}
	return "unknown"
}

// loopChan is one channel's subscribers on one loop.
type loopChan struct {
	name string
	node *nodeChan
	subs map[*conn]struct{}
}

// nodeChan is one channel on the node: the loops holding its subscribers
// (under channels.mu) and how many subscribers they hold in all.
type nodeChan struct {
	count atomic.Int64
	loops []*loop
}

// channels is the node-wide channel table.
type channels struct {
	mu sync.Mutex
	m  map[string]*nodeChan

	// OnChannel calls, in order, and whether a goroutine is making them.
	on        func(ch string, active bool)
	events    []chanEvent
	notifying bool
}

type chanEvent struct {
	ch     string
	active bool
}

// join records that l holds subscribers of ch and returns the channel's
// nodeChan. On l's goroutine, when l gets its first subscriber of ch.
func (cs *channels) join(ch string, l *loop) *nodeChan {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	nc := cs.m[ch]
	if nc == nil {
		if cs.m == nil {
			cs.m = make(map[string]*nodeChan)
		}
		nc = &nodeChan{}
		cs.m[ch] = nc
		cs.notify(ch, true)
	}
	nc.loops = append(nc.loops, l)
	return nc
}

// leave records that l holds no more subscribers of ch.
func (cs *channels) leave(ch string, nc *nodeChan, l *loop) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if i := slices.Index(nc.loops, l); i >= 0 {
		nc.loops = slices.Delete(nc.loops, i, i+1)
	}
	if len(nc.loops) == 0 && cs.m[ch] == nc {
		delete(cs.m, ch)
		cs.notify(ch, false)
	}
}

// notify queues an OnChannel call; cs.mu is held, so the calls are queued
// in the order the changes happened. One goroutine at a time makes them.
func (cs *channels) notify(ch string, active bool) {
	if cs.on == nil {
		return
	}
	cs.events = append(cs.events, chanEvent{ch, active})
	if !cs.notifying {
		cs.notifying = true
		go cs.run()
	}
}

func (cs *channels) run() {
	for {
		cs.mu.Lock()
		evs := cs.events
		cs.events = nil
		if len(evs) == 0 {
			cs.notifying = false
			cs.mu.Unlock()
			return
		}
		cs.mu.Unlock()
		for _, e := range evs {
			cs.on(e.ch, e.active)
		}
	}
}

// publication is one channel message on its way to the loops. Every field
// is read-only once posted: the loops share it.
type publication struct {
	ch      string
	frame   []byte // the whole frame, header and payload, built once
	n       int    // payload bytes
	exclude string // a ClientId that does not get it ("" for none)
}

// Publish sends payload to every subscriber of ch on this node except the
// connection whose ClientId is exclude (nil for none). The frame is built
// once and shared; the delivery happens on each subscriber's loop after
// Publish returns. A subscriber over -max-outbound is closed with 1013 and
// the others get the message. It returns the node's subscriber count of
// ch (exclude included). Safe from any goroutine; payload is not retained.
func (s *Server) Publish(ch string, payload []byte, binary bool, exclude []byte) (subscribers int) {
	s.metrics.chanPublishes.Inc()
	s.chans.mu.Lock()
	defer s.chans.mu.Unlock()
	nc := s.chans.m[ch]
	if nc == nil {
		return 0
	}
	op := ws.OpText
	if binary {
		op = ws.OpBinary
	}
	p := &publication{
		ch:      ch,
		frame:   protocol.AppendFrame(make([]byte, 0, len(payload)+ws.MaxHeaderSize), op, payload),
		n:       len(payload),
		exclude: string(exclude),
	}
	// Posted under the lock: a publish after this one cannot overtake it
	// on any loop.
	for _, l := range nc.loops {
		l.post(task{kind: taskPublish, pub: p})
	}
	return int(nc.count.Load())
}

// Subscribe joins the open connection holding id to ch: 200 (also when it
// is in ch already), 404 (no such open connection), 400 (a bad name) or
// 409 (it is in -max-channels channels already).
func (s *Server) Subscribe(id []byte, ch string) int {
	if !protocol.ValidChannel(s2b(ch)) {
		s.metrics.chanRejected[rejBadName].Inc()
		return http.StatusBadRequest
	}
	return s.chanCall(id, adminSubscribe, ch)
}

// Unsubscribe takes the open connection holding id out of ch: 200 (also
// when it was not in ch) or 404 (no such open connection).
func (s *Server) Unsubscribe(id []byte, ch string) int {
	return s.chanCall(id, adminUnsubscribe, ch) // a bad name is in no connection's channels: 200
}

func (s *Server) chanCall(id []byte, kind adminKind, ch string) int {
	req := adminPool.Get().(*adminReq)
	req.kind, req.reason = kind, ch
	lost := s.call(id, req)
	status := req.status
	if !lost {
		req.reason = ""
		adminPool.Put(req)
	}
	return status
}

// presenceReq asks loops for their subscribers of a channel; each loop
// sends its list on out (buffered for every loop asked: a late loop never
// blocks).
type presenceReq struct {
	ch    string
	limit int
	out   chan []string
}

// Channel returns the node's subscriber count of ch and up to limit of
// their ClientIds, sorted.
func (s *Server) Channel(ch string, limit int) (count int, ids []string) {
	s.chans.mu.Lock()
	nc := s.chans.m[ch]
	if nc == nil {
		s.chans.mu.Unlock()
		return 0, []string{}
	}
	loops := slices.Clone(nc.loops)
	count = int(nc.count.Load())
	if limit > 0 {
		// Asked under the lock, so the lists come after every publish
		// before, like a message would.
		req := &presenceReq{ch: ch, limit: limit, out: make(chan []string, len(loops))}
		for _, l := range loops {
			l.post(task{kind: taskMembers, presence: req})
		}
		s.chans.mu.Unlock()
		t := time.NewTimer(adminWait) // loops never block: reached only while the engine stops
		defer t.Stop()
	wait:
		for range loops {
			select {
			case part := <-req.out:
				ids = append(ids, part...)
			case <-t.C:
				break wait
			}
		}
	} else {
		s.chans.mu.Unlock()
	}
	slices.Sort(ids)
	if len(ids) > limit {
		ids = ids[:max(limit, 0)]
	}
	if ids == nil {
		ids = []string{}
	}
	return count, ids
}

// listSubscribers answers a presenceReq on the loop.
func (l *loop) listSubscribers(req *presenceReq) {
	var ids []string
	if lc := l.chans[req.ch]; lc != nil {
		ids = make([]string, 0, min(len(lc.subs), req.limit))
		for c := range lc.subs {
			if len(ids) == req.limit {
				break
			}
			ids = append(ids, c.clientID())
		}
	}
	req.out <- ids
}

// maxJoined bounds the bytes of publications joined into one write per
// subscriber (deliverRun); it stays well under -max-outbound, so that a
// joined write is never what makes a subscriber slow.
const maxJoined = 64 << 10

// deliverRun delivers, when ts starts with several publications to the
// same channel with the same exclude (a loop that fell behind on a busy
// channel finds them queued together), their frames joined into one
// buffer: one write per subscriber for all of them instead of one each,
// in the same order. It returns how many tasks it delivered; 0 or 1 means
// none (the caller runs the first task alone).
func (l *loop) deliverRun(ts []task) int {
	p := ts[0].pub
	size, k := len(p.frame), 1
	maxBytes := min(maxJoined, l.srv.cfg.MaxOutbound/4)
	for ; k < len(ts) && ts[k].kind == taskPublish; k++ {
		q := ts[k].pub
		if q.ch != p.ch || q.exclude != p.exclude || size+len(q.frame) > maxBytes {
			break
		}
		size += len(q.frame)
	}
	if k < 2 {
		return k
	}
	buf, n := l.pubBuf[:0], 0
	for i := range k {
		buf = append(buf, ts[i].pub.frame...)
		n += ts[i].pub.n
	}
	l.pubBuf = buf
	l.deliverFrames(p.ch, p.exclude, buf, n, k)
	return k
}

// deliver writes a channel message to the loop's subscribers.
func (l *loop) deliver(p *publication) { l.deliverFrames(p.ch, p.exclude, p.frame, p.n, 1) }

// deliverFrames writes frames, msgs whole messages of n payload bytes in
// all, to the loop's subscribers of ch but exclude.
func (l *loop) deliverFrames(ch, exclude string, frames []byte, n, msgs int) {
	lc := l.chans[ch]
	if lc == nil {
		return // the last subscriber here left after the publish
	}
	var sent, dropped int
	// A subscriber closed as a slow consumer leaves lc.subs (and lc may
	// leave l.chans) during the range: deleting from a map being ranged
	// over is safe, and it is not visited again.
	for c := range lc.subs {
		if exclude != "" && c.clientID() == exclude {
			continue
		}
		switch c.sendShared(frames, n, msgs) {
		case sharedSent:
			sent++
		case sharedDropped:
			dropped++
		}
	}
	m := l.srv.metrics
	if sent > 0 {
		m.chanDeliveries.Add(float64(sent * msgs))
		m.messagesOut.Add(float64(sent * msgs))
	}
	if dropped > 0 {
		m.chanDrops.Add(float64(dropped * msgs))
	}
}

type sharedOutcome uint8

const (
	sharedSent    sharedOutcome = iota
	sharedDropped               // over -max-outbound: closed with 1013
	sharedSkipped               // the connection is not open (its socket is gone)
)

// sendShared writes frames built once for many connections (msgs channel
// messages of n payload bytes in all). It is send's check for a push —
// frames that would pass -max-outbound are not written and the client is
// closed as a slow consumer (1013) — with send's per-connection counters;
// the caller counts messages_total for the whole batch. frame is only
// read; gnet copies what the socket does not take at once.
func (c *conn) sendShared(frame []byte, n, msgs int) sharedOutcome {
	if c.gc == nil || c.phase != phOpen {
		return sharedSkipped
	}
	if c.gc.OutboundBuffered()+len(frame) > c.l.srv.cfg.MaxOutbound {
		c.closeWith(crSlowConsumer, 0, "slow consumer")
		return sharedDropped
	}
	c.msgsOut += uint32(msgs)
	c.bytesOut += uint64(n)
	c.write(frame)
	return sharedSent
}

// join subscribes c to the channel name (c is open, on its loop): 200 (or
// already in it), 400 for a bad name, 409 past -max-channels; the refusals
// are counted.
func (c *conn) join(name []byte) int {
	l, s := c.l, c.l.srv
	if !protocol.ValidChannel(name) {
		s.metrics.chanRejected[rejBadName].Inc()
		return http.StatusBadRequest
	}
	first, more := c.channels()
	if first != nil {
		if first.name == string(name) || slices.ContainsFunc(more, func(lc *loopChan) bool { return lc.name == string(name) }) {
			return http.StatusOK
		}
		if 1+len(more) >= s.cfg.MaxChannels {
			s.metrics.chanRejected[rejTooMany].Inc()
			return http.StatusConflict
		}
	}
	lc := l.chans[string(name)]
	if lc == nil {
		if l.chans == nil {
			l.chans = make(map[string]*loopChan)
			l.member = make(map[*conn]*loopChan)
		}
		ch := string(name)
		lc = &loopChan{name: ch, subs: make(map[*conn]struct{}), node: s.chans.join(ch, l)}
		l.chans[ch] = lc
	}
	lc.subs[c] = struct{}{}
	lc.node.count.Add(1)
	if first == nil {
		l.member[c] = lc
		c.more |= fMoreSubscribed
	} else {
		if l.memberMore == nil {
			l.memberMore = make(map[*conn][]*loopChan)
		}
		l.memberMore[c] = append(more, lc)
	}
	s.metrics.chanSubs.Inc()
	return http.StatusOK
}

// channels returns c's channels: the first it joined (nil for none) and
// the others.
func (c *conn) channels() (first *loopChan, more []*loopChan) {
	if c.more&fMoreSubscribed == 0 {
		return nil, nil
	}
	return c.l.member[c], c.l.memberMore[c]
}

// leave takes c out of the channel name, if it is in it.
func (c *conn) leave(name []byte) {
	first, more := c.channels()
	if first == nil {
		return
	}
	l := c.l
	lc := first
	switch i := slices.IndexFunc(more, func(lc *loopChan) bool { return lc.name == string(name) }); {
	case first.name == string(name) && len(more) == 0:
		delete(l.member, c)
		c.more &^= fMoreSubscribed
		l.unsubscribe(lc, c)
		return
	case first.name == string(name):
		l.member[c] = more[len(more)-1] // another becomes the first
	case i >= 0:
		lc = more[i]
		more[i] = more[len(more)-1]
	default:
		return // not in it
	}
	more[len(more)-1] = nil
	if more = more[:len(more)-1]; len(more) == 0 {
		delete(l.memberMore, c)
	} else {
		l.memberMore[c] = more
	}
	l.unsubscribe(lc, c)
}

// leaveChannels ends every subscription of c: its connection is ending
// (end). A newer connection with the same ClientId does not inherit them.
func (c *conn) leaveChannels() {
	first, more := c.channels()
	if first == nil {
		return
	}
	l := c.l
	delete(l.member, c)
	delete(l.memberMore, c)
	c.more &^= fMoreSubscribed
	l.unsubscribe(first, c)
	for _, lc := range more {
		l.unsubscribe(lc, c)
	}
}

func (l *loop) unsubscribe(lc *loopChan, c *conn) {
	delete(lc.subs, c)
	lc.node.count.Add(-1)
	l.srv.metrics.chanSubs.Dec()
	if len(lc.subs) == 0 {
		delete(l.chans, lc.name)
		l.srv.chans.leave(lc.name, lc.node, l)
	}
}

// applyChannels applies a backend reply's Wsbridge-Subscribe (join) or
// Wsbridge-Unsubscribe list to c. Empty list elements are skipped (RFC
// 9110 §5.6.1); a bad name, or a join past -max-channels, is ignored,
// counted and logged (sampled), and the connection stays.
func (c *conn) applyChannels(list []byte, join bool) {
	for rest := list; rest != nil && c.phase == phOpen; {
		var name []byte
		name, rest = protocol.NextChannel(rest)
		if len(name) == 0 {
			continue
		}
		if !join {
			if protocol.ValidChannel(name) {
				c.leave(name)
				continue
			}
			c.l.srv.metrics.chanRejected[rejBadName].Inc()
		} else if c.join(name) == http.StatusOK {
			continue
		}
		if ce := c.l.srv.limited.Check(zap.WarnLevel, "ignored a channel in a backend's reply (bad name, or past -max-channels)"); ce != nil {
			ce.Write(zap.String("client_id", c.clientID()), zap.ByteString("channel", name), zap.Bool("subscribe", join))
		}
	}
}

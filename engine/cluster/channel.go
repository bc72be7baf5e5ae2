package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Channels over the bus (docs/protocol.md, "Channels" and "Cluster").
//
// A node with local subscribers of channel ch subscribes wsb.ch.<Token(ch)>
// (publishes) and wsb.chp.<Token(ch)> (presence): engine.Config.OnChannel
// tells it, in order, when its count goes 0→1 and 1→0. A publish on any
// node is delivered locally and sent once on wsb.ch.<token>; NATS gives it
// to the nodes that subscribe and only those (NoEcho: never back to the
// sender). A node hands what it receives to engine.Server.Publish and never
// sends it on. Every channel subscription feeds one Go channel read by one
// goroutine (and presence another), so a node with many channels (user:<id>)
// costs no goroutine per channel, and the messages from one node are
// published locally in the order that node sent them.

const (
	chanPrefix     = "wsb.ch."
	presencePrefix = "wsb.chp."

	hChannel = "Wsb-Channel" // sub, unsub: the channel
	hExclude = "Wsb-Exclude" // channel message: the ClientId that does not get it

	opSub   = "sub"   // PUT /channel/<ch>/<id> on the node holding id
	opUnsub = "unsub" // DELETE /channel/<ch>/<id> on the node holding id
)

// ChannelSubject is the subject of ch's messages. A channel name is made of
// A–Z a–z 0–9 . _ ~ - : ; Token escapes '.' (the token separator) and '~';
// ':' is an ordinary subject character.
func ChannelSubject(ch string) string { return chanPrefix + Token(ch) }

// PresenceSubject is the subject the nodes holding subscribers of ch answer
// presence requests on.
func PresenceSubject(ch string) string { return presencePrefix + Token(ch) }

// chanBus is the Bus's channel state.
type chanBus struct {
	mu   sync.Mutex
	subs map[string][2]*nats.Subscription // channel → its message and presence subscriptions

	msgs chan *nats.Msg // every channel's messages, in arrival order
	pres chan *nats.Msg // presence requests

	in, out prometheus.Counter
}

// chanQueue bounds the messages received and not yet handed to the engine
// (Publish only queues them to the loops: this fills only if the process
// is starved). Past it nats.go drops the message and reports a slow
// consumer (logged by the ErrorHandler).
const chanQueue = 1 << 16

func (b *Bus) chans() *chanBus {
	b.chOnce.Do(func() {
		c := &chanBus{
			subs: make(map[string][2]*nats.Subscription),
			msgs: make(chan *nats.Msg, chanQueue),
			pres: make(chan *nats.Msg, 1024),
		}
		msgs := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsbridge_cluster_channel_messages_total",
			Help: "Channel messages over the bus, by direction (out: publishes sent to other nodes; in: other nodes' publishes delivered here).",
		}, []string{"dir"})
		b.cfg.Registry.MustRegister(msgs)
		c.in, c.out = msgs.WithLabelValues("in"), msgs.WithLabelValues("out")
		b.ch = c
		b.wg.Add(2)
		go b.chanLoop(c.msgs, b.onChannelMsg)
		go b.chanLoop(c.pres, b.onPresence)
	})
	return b.ch
}

// chanLoop hands each message of in to f, in order, until the bus closes.
func (b *Bus) chanLoop(in chan *nats.Msg, f func(*nats.Msg)) {
	defer b.wg.Done()
	for {
		select {
		case m := <-in:
			f(m)
		case <-b.done:
			return
		}
	}
}

// OnChannel is engine.Config.OnChannel: it subscribes ch's subjects when
// the node gets its first subscriber of ch and unsubscribes them when it
// loses its last. The engine calls it in order, one call at a time, off the
// event loops. While NATS is down nats.go keeps the subscriptions and sends
// them again on reconnect.
func (b *Bus) OnChannel(ch string, active bool) {
	c := b.chans()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !active {
		if s, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			for _, sub := range s {
				if sub != nil {
					_ = sub.Unsubscribe()
				}
			}
		}
		return
	}
	if _, ok := c.subs[ch]; ok {
		return
	}
	msg, err := b.nc.ChanSubscribe(ChannelSubject(ch), c.msgs)
	if err != nil {
		b.log.Warn("subscribe channel", zap.String("channel", ch), zap.Error(err))
		return
	}
	pres, err := b.nc.ChanSubscribe(PresenceSubject(ch), c.pres)
	if err != nil {
		b.log.Warn("subscribe channel presence", zap.String("channel", ch), zap.Error(err))
	}
	c.subs[ch] = [2]*nats.Subscription{msg, pres}
}

func (b *Bus) onChannelMsg(m *nats.Msg) {
	ch, ok := ID(m.Subject[len(chanPrefix):])
	if b.srv == nil || !ok {
		return
	}
	b.chans().in.Inc()
	b.srv.Publish(ch, m.Data, m.Header.Get(hBinary) == "1", []byte(m.Header.Get(hExclude)))
}

// PublishChannel sends a channel message, already delivered on this node,
// to the other nodes with subscribers of ch. It reports false when the bus
// is down (the other nodes are not reached; nothing is queued). One
// goroutine's calls go out in call order, over the node's one connection.
func (b *Bus) PublishChannel(ch string, payload []byte, binary bool, exclude []byte) bool {
	if !b.nc.IsConnected() {
		return false
	}
	m := &nats.Msg{Subject: ChannelSubject(ch), Data: payload}
	if binary || len(exclude) > 0 {
		m.Header = nats.Header{}
		if binary {
			m.Header.Set(hBinary, "1")
		}
		if len(exclude) > 0 {
			m.Header.Set(hExclude, string(exclude))
		}
	}
	if err := b.nc.PublishMsg(m); err != nil {
		b.log.Warn("publish channel", zap.String("channel", ch), zap.Error(err))
		return false
	}
	b.chans().out.Inc()
	return true
}

// Member subscribes (join) or unsubscribes the ClientId id, held by
// another node, to ch: 200, 400, 404 (connected nowhere), 409 (in
// -max-channels channels already) or 503 (bus down, no answer in time).
func (b *Bus) Member(id []byte, ch string, join bool) int {
	op := opUnsub
	if join {
		op = opSub
	}
	h := nats.Header{}
	h.Set(hOp, op)
	h.Set(hChannel, ch)
	st, _, err := b.call(op, string(id), h, nil)
	if err != nil {
		return http.StatusServiceUnavailable
	}
	return st
}

// serveMember answers another node's sub or unsub for id, held here.
func (b *Bus) serveMember(m *nats.Msg, id string, reply func(int, []byte)) {
	ch := m.Header.Get(hChannel)
	if m.Header.Get(hOp) == opSub {
		reply(b.srv.Subscribe([]byte(id), ch), nil)
		return
	}
	reply(b.srv.Unsubscribe([]byte(id), ch), nil)
}

// presenceAnswer is a node's answer to a presence request.
type presenceAnswer struct {
	Count int      `json:"n"`
	IDs   []string `json:"ids"`
}

func (b *Bus) onPresence(m *nats.Msg) {
	ch, ok := ID(m.Subject[len(presencePrefix):])
	if b.srv == nil || m.Reply == "" || !ok {
		return
	}
	limit, _ := strconv.Atoi(string(m.Data))
	n, ids := b.srv.Channel(ch, limit)
	body, _ := json.Marshal(presenceAnswer{n, ids})
	if err := b.nc.Publish(m.Reply, body); err == nil {
		b.msgsOut.Inc()
	}
}

// Presence asks the other nodes for their subscribers of ch: the count
// summed and up to limit ClientIds, sorted. Only nodes with subscribers
// answer; after the first answer it gathers the others until none came
// for Grace (or Timeout in all). No responders: no other node has any. err
// when the bus is down or an answer was expected and none came in time.
func (b *Bus) Presence(ch string, limit int) (count int, ids []string, err error) {
	if !b.nc.IsConnected() {
		return 0, nil, errDown
	}
	start := time.Now()
	defer func() { b.reqDur.WithLabelValues("presence").Observe(time.Since(start).Seconds()) }()
	in, forget, err := b.ask(PresenceSubject(ch), nil, strconv.AppendInt(nil, int64(limit), 10), 256)
	if err != nil {
		return 0, nil, fmt.Errorf("cluster: presence %s: %w", ch, err)
	}
	defer forget()
	timeout := time.NewTimer(b.cfg.Timeout)
	defer timeout.Stop()
	var stall *time.Timer
	var stallC <-chan time.Time
	got := false
	for {
		select {
		case r := <-in:
			if r.Header.Get("Status") == "503" { // no responders
				if !got {
					return 0, []string{}, nil
				}
				continue
			}
			var a presenceAnswer
			if json.Unmarshal(r.Data, &a) != nil {
				continue
			}
			got = true
			count += a.Count
			ids = append(ids, a.IDs...)
			if stall == nil {
				stall = time.NewTimer(b.cfg.Grace)
				defer stall.Stop()
				stallC = stall.C
			} else {
				stall.Reset(b.cfg.Grace)
			}
		case <-stallC:
			return count, mergeIDs(ids, limit), nil
		case <-timeout.C:
			if got {
				return count, mergeIDs(ids, limit), nil
			}
			return 0, nil, errTimeout
		}
	}
}

func mergeIDs(ids []string, limit int) []string {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > limit {
		ids = ids[:max(limit, 0)]
	}
	if ids == nil {
		ids = []string{}
	}
	return ids
}

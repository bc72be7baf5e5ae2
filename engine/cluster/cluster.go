// Package cluster joins wsbridge nodes over core NATS (-cluster): any
// node's admin API reaches every ClientId, and one ClientId has at most one
// connection in the cluster (docs/protocol.md, "Cluster").
//
// Each node subscribes wsb.c.<Token(id)> for every ClientId it holds (from
// the backend's acceptance of its GET until its DELETE is answered), so
// finding a ClientId is one NATS request: the holder answers, and the
// server's "no responders" status says, at once and for sure, that no node
// holds it. A newcomer that opens a ClientId asks the other nodes to
// release it (op release) before its 101; the holder closes its connection
// with 4000 and answers once its DELETE is answered.
package cluster

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wsbridge/wsbridge/engine"
)

// Header names of the bus messages.
const (
	hOp     = "Wsb-Op"     // push, kick, info or release
	hNode   = "Wsb-Node"   // sender's -node-id
	hStamp  = "Wsb-Stamp"  // release: the claim's stamp
	hBinary = "Wsb-Binary" // push: "1" for a binary message
	hCode   = "Wsb-Code"   // kick: close code
	hReason = "Wsb-Reason" // kick: close reason
	hStatus = "Wsb-Status" // reply: the admin status (200, 404, 503) or release: 1 yielded, 0 kept
)

// Bus operations.
const (
	opPush    = "push"
	opKick    = "kick"
	opInfo    = "info"
	opRelease = "release"
	opHolder  = "holder" // the connection id of id's open connection, for Wsbridge-Replaces
)

// Config configures a Bus.
type Config struct {
	URLs    string        // -cluster: nats://host:port[,…], tried in turn
	NodeID  string        // -node-id
	Timeout time.Duration // a cross-node call's bound; 0 = 2 s
	// ReleaseTimeout bounds a release: the holder answers once its
	// connection's DELETE is answered, which takes up to the backend's
	// timeout (-backend-timeout). Past it the newcomer opens anyway.
	// 0 = 65 s.
	ReleaseTimeout time.Duration
	// Grace is how long a call that got a 404 (or a release that got a
	// yes) waits for another node's better answer: two nodes may answer
	// for one ClientId while it passes from one to the other. 0 = 20 ms.
	Grace    time.Duration
	Workers  int // goroutines answering other nodes' calls; 0 = 8
	Log      *zap.Logger
	Registry *prometheus.Registry // where the wsbridge_cluster_* series go
}

// Bus is a node's NATS connection. It implements engine.Bus and the admin
// API's Remote.
type Bus struct {
	cfg   Config
	nc    *nats.Conn
	srv   *engine.Server
	inbox string
	log   *zap.Logger

	reqs chan *nats.Msg // other nodes' calls, for the workers

	mu      sync.Mutex
	ids     map[string]*held // ClientIds held here
	pending map[string]chan *nats.Msg
	seq     uint64

	// ops are the subscription changes and replies, in the order the
	// event loops asked for them: a loop never waits for NATS.
	opsMu sync.Mutex
	ops   []func()
	kick  chan struct{}
	done  chan struct{}
	wg    sync.WaitGroup

	up      prometheus.Gauge
	msgsIn  prometheus.Counter
	msgsOut prometheus.Counter
	reqDur  *prometheus.HistogramVec

	chOnce sync.Once
	ch     *chanBus // channels over the bus (channel.go)
}

type held struct {
	sub   *nats.Subscription
	refs  int32
	stamp int64 // newest Hold's
}

// New connects to NATS (in the background: a node starts, and works alone,
// while NATS is down) and starts answering other nodes' calls once
// SetServer gives it the engine.
func New(cfg Config) (*Bus, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = 65 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 20 * time.Millisecond
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	b := &Bus{
		cfg:     cfg,
		log:     cfg.Log.Named("cluster"),
		reqs:    make(chan *nats.Msg, 8192),
		ids:     make(map[string]*held),
		pending: make(map[string]chan *nats.Msg),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	f := func(c prometheus.Collector) prometheus.Collector { cfg.Registry.MustRegister(c); return c }
	b.up = f(prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsbridge_cluster_up", Help: "1 while the node is connected to the NATS bus (-cluster).",
	})).(prometheus.Gauge)
	msgs := f(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsbridge_cluster_messages_total", Help: "Bus messages, by direction (in: other nodes' calls and their replies; out: calls and replies sent).",
	}, []string{"dir"})).(*prometheus.CounterVec)
	b.msgsIn, b.msgsOut = msgs.WithLabelValues("in"), msgs.WithLabelValues("out")
	b.reqDur = f(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wsbridge_cluster_request_seconds",
		Help:    "Cross-node calls from this node, by operation, until answered (or timed out).",
		Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"op"})).(*prometheus.HistogramVec)
	b.chans()

	opts := []nats.Option{
		nats.Name("wsbridge " + cfg.NodeID),
		nats.NoEcho(), // a node never calls itself: its own subscriptions are not responders
		nats.RetryOnFailedConnect(true),
		nats.DontRandomize(), // -cluster's URLs are tried in the order given
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := 100 * time.Millisecond << min(attempts, 6)
			return min(d, 5*time.Second)
		}),
		nats.ReconnectBufSize(-1), // while down nothing is queued: calls answer 503, subscriptions are resent
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.Timeout(2 * time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) { b.setUp(nc, true, nil) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { b.setUp(nc, true, nil) }),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) { b.setUp(nc, false, err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.log.Warn("nats error", zap.Error(err))
		}),
	}
	nc, err := nats.Connect(cfg.URLs, opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect %s: %w", cfg.URLs, err)
	}
	b.nc = nc
	if nc.IsConnected() {
		b.setUp(nc, true, nil)
	}
	b.inbox = nc.NewInbox()
	if _, err := nc.Subscribe(b.inbox+".*", b.onReply); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: subscribe %s: %w", b.inbox, err)
	}
	return b, nil
}

func (b *Bus) setUp(nc *nats.Conn, up bool, err error) {
	if up {
		b.up.Set(1)
		b.log.Info("bus connected", zap.String("url", nc.ConnectedUrlRedacted()))
		return
	}
	b.up.Set(0)
	b.log.Warn("bus disconnected: cross-node calls answer 503 until it is back", zap.Error(err))
}

// SetServer gives the bus the engine it answers for and starts its
// goroutines. Call it once, before the engine starts.
func (b *Bus) SetServer(s *engine.Server) {
	b.srv = s
	b.wg.Add(1 + b.cfg.Workers)
	go b.runOps()
	for range b.cfg.Workers {
		go b.work()
	}
}

// Close drains nothing: the engine's drain has ended every connection (and
// its Drop) before. It stops the goroutines and closes the NATS connection.
func (b *Bus) Close() {
	close(b.done)
	b.wg.Wait()
	b.nc.Close()
	b.up.Set(0)
}

// NodeID is this node's -node-id.
func (b *Bus) NodeID() string { return b.cfg.NodeID }

// Up reports whether the bus is connected.
func (b *Bus) Up() bool { return b.nc.IsConnected() }

// do queues f for the ops goroutine; it never blocks.
func (b *Bus) do(f func()) {
	b.opsMu.Lock()
	b.ops = append(b.ops, f)
	b.opsMu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *Bus) runOps() {
	defer b.wg.Done()
	var batch []func()
	for {
		select {
		case <-b.kick:
		case <-b.done:
			return
		}
		b.opsMu.Lock()
		batch, b.ops = b.ops, batch[:0]
		b.opsMu.Unlock()
		for i, f := range batch {
			f()
			batch[i] = nil
		}
	}
}

// Hold implements engine.Bus.
func (b *Bus) Hold(id string, stamp int64) {
	b.mu.Lock()
	h := b.ids[id]
	if h == nil {
		h = &held{}
		b.ids[id] = h
	}
	h.refs++
	h.stamp = max(h.stamp, stamp)
	first := h.refs == 1
	b.mu.Unlock()
	if first {
		b.do(func() { b.subscribe(id) })
	}
}

func (b *Bus) subscribe(id string) {
	sub, err := b.nc.ChanSubscribe(Subject(id), b.reqs)
	if err != nil {
		b.log.Warn("subscribe", zap.String("client_id", id), zap.Error(err))
		return
	}
	b.mu.Lock()
	h := b.ids[id]
	if h == nil || h.sub != nil {
		// Dropped before this ran (or subscribed twice): undo.
		b.mu.Unlock()
		_ = sub.Unsubscribe()
		return
	}
	h.sub = sub
	b.mu.Unlock()
}

// Drop implements engine.Bus.
func (b *Bus) Drop(id string) {
	b.do(func() {
		b.mu.Lock()
		h := b.ids[id]
		if h == nil {
			b.mu.Unlock()
			return
		}
		h.refs--
		if h.refs > 0 {
			b.mu.Unlock()
			return
		}
		delete(b.ids, id)
		sub := h.sub
		b.mu.Unlock()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	})
}

// Claim implements engine.Bus.
func (b *Bus) Claim(id string, stamp int64, done func(won bool)) {
	b.do(func() {
		h := nats.Header{}
		h.Set(hOp, opRelease)
		h.Set(hNode, b.cfg.NodeID)
		h.Set(hStamp, strconv.FormatInt(stamp, 10))
		go func() {
			st, _, err := b.call(opRelease, id, h, nil)
			switch {
			case err != nil:
				// The bus is down or a node does not answer: go on alone
				// (docs/protocol.md, "Cluster").
				b.log.Warn("claim without the bus", zap.String("client_id", id), zap.Error(err))
				done(true)
			default:
				done(st != 0)
			}
		}()
	})
}

// Who implements engine.Bus.
func (b *Bus) Who(id string, done func(connID string)) {
	go func() {
		h := nats.Header{}
		h.Set(hOp, opHolder)
		st, body, err := b.call(opHolder, id, h, nil)
		if err != nil || st != 200 {
			done("")
			return
		}
		done(string(body))
	}()
}

// errDown is a call made while the bus is not connected.
var errDown = errors.New("cluster: bus not connected")

// errTimeout is a call no node answered in time.
var errTimeout = errors.New("cluster: no answer in time")

// ask publishes a request on subject with a reply subject of its own and
// returns the channel its answers arrive on (buffered to buf; onReply
// fills it) and forget, which the caller defers to stop taking them.
func (b *Bus) ask(subject string, h nats.Header, data []byte, buf int) (<-chan *nats.Msg, func(), error) {
	in := make(chan *nats.Msg, buf)
	b.mu.Lock()
	b.seq++
	tok := strconv.FormatUint(b.seq, 36)
	b.pending[tok] = in
	b.mu.Unlock()
	forget := func() {
		b.mu.Lock()
		delete(b.pending, tok)
		b.mu.Unlock()
	}
	if err := b.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: b.inbox + "." + tok, Header: h, Data: data}); err != nil {
		forget()
		return nil, nil, err
	}
	b.msgsOut.Inc()
	return in, forget, nil
}

// call sends one request for id and returns the best answer's status and
// body. err is errDown or errTimeout: the caller answers 503 (never 404).
// No responders is status 404 (push, kick, info) or 1 (release): nobody
// holds id.
func (b *Bus) call(op, id string, h nats.Header, data []byte) (status int, body []byte, err error) {
	if !b.nc.IsConnected() {
		return 0, nil, errDown
	}
	start := time.Now()
	defer func() { b.reqDur.WithLabelValues(op).Observe(time.Since(start).Seconds()) }()
	ch, forget, err := b.ask(Subject(id), h, data, 4)
	if err != nil {
		return 0, nil, fmt.Errorf("cluster: %s %s: %w", op, id, err)
	}
	defer forget()
	// A decisive answer ends the call at once; the other kind waits Grace
	// for a decisive one from another node. Push, kick, info and holder:
	// anything but 404 (the node holding it answered). Release: 0 (a node
	// keeps the id beats one that gave it up).
	decisive := func(st int) bool { return st != 404 }
	if op == opRelease {
		decisive = func(st int) bool { return st == 0 }
	}
	limit := b.cfg.Timeout
	if op == opRelease {
		limit = b.cfg.ReleaseTimeout
	}
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	var grace <-chan time.Time
	got := false
	for {
		select {
		case r := <-ch:
			if r.Header.Get("Status") == "503" { // no responders
				if got {
					continue
				}
				if op == opRelease {
					return 1, nil, nil
				}
				return 404, nil, nil
			}
			st, _ := strconv.Atoi(r.Header.Get(hStatus))
			if decisive(st) {
				return st, r.Data, nil
			}
			status, body, got = st, r.Data, true
			if grace == nil {
				grace = time.After(b.cfg.Grace)
			}
		case <-grace:
			return status, body, nil
		case <-timeout.C:
			if got {
				return status, body, nil
			}
			return 0, nil, errTimeout
		}
	}
}

func (b *Bus) onReply(m *nats.Msg) {
	b.msgsIn.Inc()
	tok := m.Subject[len(b.inbox)+1:]
	b.mu.Lock()
	ch := b.pending[tok]
	b.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default:
		}
	}
}

// work answers other nodes' calls.
func (b *Bus) work() {
	defer b.wg.Done()
	for {
		select {
		case m := <-b.reqs:
			b.msgsIn.Inc()
			b.serve(m)
		case <-b.done:
			return
		}
	}
}

func (b *Bus) serve(m *nats.Msg) {
	id, ok := ID(m.Subject[len(subjectPrefix):])
	if !ok || m.Reply == "" {
		return
	}
	reply := func(status int, body []byte) {
		r := &nats.Msg{Subject: m.Reply, Header: nats.Header{}, Data: body}
		r.Header.Set(hStatus, strconv.Itoa(status))
		if err := b.nc.PublishMsg(r); err == nil {
			b.msgsOut.Inc()
		}
	}
	switch m.Header.Get(hOp) {
	case opPush:
		reply(b.srv.Push([]byte(id), m.Data, m.Header.Get(hBinary) == "1"), nil)
	case opKick:
		code, _ := strconv.Atoi(m.Header.Get(hCode))
		reply(b.srv.Kick([]byte(id), ws.StatusCode(code), m.Header.Get(hReason)), nil)
	case opInfo:
		info, ok := b.srv.Lookup([]byte(id))
		if !ok {
			reply(404, nil)
			return
		}
		info.Node = b.cfg.NodeID
		body, _ := jsonInfo(info)
		reply(200, body)
	case opHolder:
		info, ok := b.srv.Lookup([]byte(id))
		if !ok {
			reply(404, nil)
			return
		}
		reply(200, []byte(info.ConnectionID))
	case opSub, opUnsub:
		b.serveMember(m, id, reply)
	case opRelease:
		stamp, _ := strconv.ParseInt(m.Header.Get(hStamp), 10, 64)
		b.mu.Lock()
		var mine int64
		if h := b.ids[id]; h != nil {
			mine = h.stamp
		}
		b.mu.Unlock()
		wins := theirsWins(stamp, m.Header.Get(hNode), mine, b.cfg.NodeID)
		b.srv.Release(id, wins, func(yielded bool) {
			st := 0
			if yielded {
				st = 1
			}
			b.do(func() { reply(st, nil) }) // after the Drop the DELETE queued
		})
	}
}

// theirsWins orders two claims of one ClientId: the later acceptance wins,
// equal stamps go to the greater node id. Both nodes reach the same
// answer.
func theirsWins(theirs int64, theirNode string, mine int64, myNode string) bool {
	if theirs != mine {
		return theirs > mine
	}
	return theirNode > myNode
}

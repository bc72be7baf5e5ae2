package loadgen

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what every connection does once it is open.
type Mode uint8

const (
	// Hold keeps connections open and idle (push, storm, density); it
	// records the latency of messages that carry a timestamp (pushes).
	Hold Mode = iota
	// Periodic sends one message every Interval per connection, with a
	// random phase so connections are not in lock-step (ramp).
	Periodic
	// ClosedLoop sends the next message as soon as the reply to the last
	// one arrives (throughput).
	ClosedLoop
	// Handshake connects, upgrades, closes and starts over (handshake).
	Handshake
)

// Config describes one generator: connections First..First+Count-1 of a
// run of Total, spread over Loops event loops.
type Config struct {
	Addr     netip.AddrPort // the bridge's WebSocket listener
	Host     string         // Host header; empty means Addr
	IDPrefix string         // ClientId = IDPrefix + index (+ "-" + incarnation in Handshake mode)
	Query    string         // appended to the upgrade path, without "?"; may be empty

	First, Count, Total int
	Loops               int // event loops; 0 means GOMAXPROCS

	Mode     Mode
	OpenOver time.Duration // spread connection starts evenly over this (0 = as fast as MaxInflight allows)
	Interval time.Duration // Periodic: per-connection message period
	Size     int           // message payload bytes (at least the timestamp)
	JSON     bool          // pad messages with JSON-like records (see AppendJSONMessage) instead of 'x'
	Deflate  bool          // offer permessage-deflate; send messages compressed and inflate compressed replies

	// MaxInflight bounds connects and upgrades in progress per loop, so a
	// burst cannot overflow the listener's accept queue; 0 means 256.
	MaxInflight int
	// Timeout bounds connect+upgrade and each reply; 0 means 10 s.
	Timeout time.Duration
	// Sources are the local addresses to bind, cycled by connection index;
	// empty means the kernel's choice.
	Sources []netip.Addr
	// Reconnect lost connections after Backoff (honouring 503 Retry-After
	// and close-code hints); otherwise a lost connection stays down.
	Reconnect   bool
	BackoffBase time.Duration // client.Backoff Base; each loop has its own seeded Rand
	BackoffMax  time.Duration // client.Backoff Max
	Seed        uint64
	// Track, if > 0, keeps for each message sequence number modulo Track
	// how many connections received it and when the last one did
	// (SeqStats): the fan-out benchmark's publish-to-last-delivery.
	Track int
}

// Counters are one loop's running totals; the loop writes them and any
// goroutine may read them.
type Counters struct {
	Held       atomic.Int64 // connections open now
	Attempts   atomic.Int64 // connects started
	Opened     atomic.Int64 // upgrades that got 101
	ConnectErr atomic.Int64 // socket, bind or connect failures
	Refused    atomic.Int64 // upgrade answered with a status other than 101
	Closed     atomic.Int64 // open connections lost without us asking (close frame or EOF)
	Timeouts   atomic.Int64 // connect, upgrade or reply not in time
	Sent       atomic.Int64 // messages sent
	Recv       atomic.Int64 // messages received
	Cycles     atomic.Int64 // Handshake mode: connect-upgrade-close cycles completed
	Dropped    atomic.Int64 // connections dropped on purpose (Drop)
	LastReopen atomic.Int64 // unix ns of the last upgrade of a connection that had been lost
	Code1012   atomic.Int64 // closes received with 1012
	Code1013   atomic.Int64 // with 1013
	CodeOther  atomic.Int64 // with any other code, or none
	Status503  atomic.Int64 // refusals with 503
	WireSent   atomic.Int64 // payload bytes of the data frames sent, as on the wire (compressed with Deflate)
	WireRecv   atomic.Int64 // payload bytes of the data frames received, as on the wire
}

// Totals is a plain copy of Counters.
type Totals struct {
	Held, Attempts, Opened, ConnectErr, Refused, Closed, Timeouts int64
	Sent, Recv, Cycles, Dropped, LastReopen, Code1012, Code1013   int64
	CodeOther, Status503                                          int64
	WireSent, WireRecv                                            int64
}

// Add sums o into t (LastReopen takes the later).
func (t *Totals) Add(o Totals) {
	t.Held += o.Held
	t.Attempts += o.Attempts
	t.Opened += o.Opened
	t.ConnectErr += o.ConnectErr
	t.Refused += o.Refused
	t.Closed += o.Closed
	t.Timeouts += o.Timeouts
	t.Sent += o.Sent
	t.Recv += o.Recv
	t.Cycles += o.Cycles
	t.Dropped += o.Dropped
	t.LastReopen = max(t.LastReopen, o.LastReopen)
	t.Code1012 += o.Code1012
	t.Code1013 += o.Code1013
	t.CodeOther += o.CodeOther
	t.Status503 += o.Status503
	t.WireSent += o.WireSent
	t.WireRecv += o.WireRecv
}

// Errors is the sum of everything that went wrong.
func (t *Totals) Errors() int64 { return t.ConnectErr + t.Refused + t.Closed + t.Timeouts }

func (c *Counters) load() Totals {
	return Totals{
		Held: c.Held.Load(), Attempts: c.Attempts.Load(), Opened: c.Opened.Load(),
		ConnectErr: c.ConnectErr.Load(), Refused: c.Refused.Load(), Closed: c.Closed.Load(),
		Timeouts: c.Timeouts.Load(), Sent: c.Sent.Load(), Recv: c.Recv.Load(), Cycles: c.Cycles.Load(),
		Dropped: c.Dropped.Load(), LastReopen: c.LastReopen.Load(), Code1012: c.Code1012.Load(),
		Code1013: c.Code1013.Load(), CodeOther: c.CodeOther.Load(), Status503: c.Status503.Load(),
		WireSent: c.WireSent.Load(), WireRecv: c.WireRecv.Load(),
	}
}

// Gen is a running load generator: Loops goroutines, each with its own epoll
// instance and its share of the connections. No goroutine per connection.
type Gen struct {
	cfg   Config
	loops []*loop
	wg    sync.WaitGroup
	start time.Time

	stopping atomic.Bool  // stop sending, close everything
	drops    atomic.Int64 // Drop requests
	pauseSnd atomic.Bool  // stop starting new work (end of a run)

	// Lat is the latency of replies and pushes; HS of upgrades (connect
	// start to 101). One per loop, merged by Snapshot.
	errMu sync.Mutex
	err   error
}

// ErrConfig is returned for an unusable Config.
var ErrConfig = errors.New("loadgen: bad config")

// Start opens the epoll instances and starts the loops; connections start
// right away (or spread over OpenOver).
func Start(cfg Config) (*Gen, error) {
	if !cfg.Addr.IsValid() || cfg.Count < 0 {
		return nil, fmt.Errorf("%w: address %v, count %d", ErrConfig, cfg.Addr, cfg.Count)
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.Loops > cfg.Count && cfg.Count > 0 {
		cfg.Loops = cfg.Count
	}
	cfg.Loops = max(cfg.Loops, 1)
	if cfg.Total < cfg.First+cfg.Count {
		cfg.Total = cfg.First + cfg.Count
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 256
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Host == "" {
		cfg.Host = cfg.Addr.String()
	}
	if cfg.Mode == Periodic && cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	g := &Gen{cfg: cfg, start: time.Now()}
	for i := range cfg.Loops {
		l, err := newLoop(g, i)
		if err != nil {
			for _, l := range g.loops {
				l.closeAll()
			}
			return nil, err
		}
		g.loops = append(g.loops, l)
	}
	for _, l := range g.loops {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			l.run()
		}()
	}
	return g, nil
}

// Totals sums the loops' counters.
func (g *Gen) Totals() Totals {
	var t Totals
	for _, l := range g.loops {
		t.Add(l.ctr.load())
	}
	return t
}

// DrainLatency moves the latencies recorded since the last call into lat
// (replies, pushes) and hs (upgrades).
func (g *Gen) DrainLatency(lat, hs *Snapshot) {
	for _, l := range g.loops {
		l.lat.Drain(lat)
		l.hs.Drain(hs)
	}
}

// Drop closes every open connection at once, without a close frame, and
// reconnects them all immediately (a reconnect storm).
func (g *Gen) Drop() { g.drops.Add(1) }

// Quiesce stops sending messages and starting connections; open
// connections stay open.
func (g *Gen) Quiesce() { g.pauseSnd.Store(true) }

// Stop closes every connection (close 1000, then the socket after the
// server's close or within wait) and waits for the loops to end.
func (g *Gen) Stop(wait time.Duration) error {
	for _, l := range g.loops {
		l.stopBy.Store(time.Now().Add(wait).UnixNano())
	}
	g.pauseSnd.Store(true)
	g.stopping.Store(true)
	g.wg.Wait()
	g.errMu.Lock()
	defer g.errMu.Unlock()
	return g.err
}

func (g *Gen) fail(err error) {
	g.errMu.Lock()
	if g.err == nil {
		g.err = err
	}
	g.errMu.Unlock()
}

// clientID appends the ClientId of connection idx (incarnation gen) to dst.
func (g *Gen) clientID(dst []byte, idx int, gen uint32) []byte {
	dst = append(dst, g.cfg.IDPrefix...)
	dst = strconv.AppendInt(dst, int64(idx), 10)
	if g.cfg.Mode == Handshake {
		dst = append(dst, '-')
		dst = strconv.AppendUint(dst, uint64(gen), 10)
	}
	return dst
}

// startAt is when connection idx should first connect, relative to start.
func (g *Gen) startAt(idx int) time.Duration {
	if g.cfg.OpenOver <= 0 || g.cfg.Total <= 1 {
		return 0
	}
	return time.Duration(int64(g.cfg.OpenOver) * int64(idx) / int64(g.cfg.Total))
}

func newRand(seed uint64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(i)+0x9e3779b97f4a7c15))
}

package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/journal"
	"github.com/wsbridge/wsbridge/protocol"
)

// Config is the engine's part of the command line (the README's flag table).
type Config struct {
	Listen           string        // WebSocket listener, host:port
	ReusePort        bool          // SO_REUSEPORT: one listener per loop, shared with other processes
	Loops            int           // event loops; 0 = one per CPU
	MaxConns         int           // WebSocket connections (authorising or open); 0 = no limit
	MaxMessage       int64         // bytes per message, larger → close 1009
	MaxOutbound      int           // bytes buffered towards one client, more → close 1013
	PingInterval     time.Duration // 0 disables heartbeats
	PongTimeout      time.Duration
	HandshakeTimeout time.Duration // until the upgrade request is complete
	HoldTimeout      time.Duration // how long a reconnect waits for the previous DELETE (= -backend-timeout)
	CloseTimeout     time.Duration // how long to wait for the client's close reply
	AcceptRate       float64       // upgrades per second admitted; 0 = no limit
	AcceptBurst      int
	MaxPending       int // upgrades held or waiting for the backend's GET; more get 503; 0 = no limit
	MaxQueued        int // messages waiting behind a POST in flight over all connections; at the bound a sender is paused (not read) until its POST finishes; 0 = no limit
	DrainTimeout     time.Duration
	DrainDelay       time.Duration  // lame duck: /readyz 503 and no new sockets, before the first 1012
	AllowOrigins     []string       // empty = any
	TrustedProxies   []netip.Prefix // peers whose X-Forwarded-For and PROXY protocol header are believed
	MaxConnsPerIP    int            // WebSocket connections (as MaxConns counts them) per client address; more get 429; 0 = no limit
	MaxPendingPerIP  int            // upgrades held or waiting for the backend's GET per client address; more get 429; 0 = no limit
	FDBudget         int            // TCP connections accepted before refusing with 503; 0 = derived from RLIMIT_NOFILE
	Tick             time.Duration  // timer resolution; 0 = 100ms
	MaxChannels      int            // channels one connection may join; 0 = 64

	// OnChannel, if set, is told when this node's subscriber count of a
	// channel goes from 0 to 1 (active) and from 1 to 0 (not active), in
	// that order for each channel. It runs on a goroutine of its own, one
	// call at a time, never on an event loop; a slow OnChannel delays only
	// the calls after it.
	OnChannel    func(ch string, active bool)
	Deflate      bool // accept permessage-deflate offers (no context takeover on either side)
	DeflateMin   int  // messages to the client of fewer bytes go plain; 0 = compress every one
	DeflateLevel int  // compression level, 1 (fastest) to 9; 0 = 1
	Bus          Bus  // the cluster (-cluster); nil = this node alone
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = ":7001"
	}
	if c.MaxMessage <= 0 {
		c.MaxMessage = 1 << 20
	}
	if c.DeflateLevel < 1 || c.DeflateLevel > 9 {
		c.DeflateLevel = 1
	}
	if c.MaxOutbound <= 0 {
		// Room for a full-size push on top of replies in flight.
		c.MaxOutbound = int(2*c.MaxMessage) + 64<<10
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.HoldTimeout <= 0 {
		c.HoldTimeout = 60 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 3 * time.Second
	}
	if c.PingInterval > 0 && c.PongTimeout <= 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Tick <= 0 {
		c.Tick = 100 * time.Millisecond
	}
	if c.MaxChannels <= 0 {
		c.MaxChannels = 64
	}
	if c.AcceptRate > 0 && c.AcceptBurst <= 0 {
		c.AcceptBurst = max(1, int(c.AcceptRate))
	}
}

// Server is the WebSocket side of wsbridge.
type Server struct {
	cfg     Config
	log     *zap.Logger
	limited *zap.Logger // sampled, for per-connection noise
	backend *bridge.Client
	metrics *Metrics
	reg     *registry
	ipl     *ipLimits     // nil without per-address limits
	cl      *clusterState // nil without Config.Bus

	start                                           time.Time
	handshakeTicks, holdTicks, pingTicks, pongTicks int64
	closeTicks                                      int64
	idPrefix                                        string
	idSeq                                           atomic.Uint64
	tcpConns                                        atomic.Int64 // sockets held, for FDBudget
	wsConns                                         atomic.Int64 // authorising or open, for MaxConns
	pending                                         atomic.Int64 // held, authorising or takeover, for MaxPending
	queued                                          atomic.Int64 // messages queued behind a POST in flight, for MaxQueued
	draining                                        atomic.Bool
	refuseUpgrades                                  atomic.Bool // draining and the socket-level stop failed
	drainOnce                                       sync.Once
	port                                            int
	sockets                                         sockets      // listeners and epoll instances, for the drain
	drainFrom, drainTill                            atomic.Int64 // ticks
	drainHold                                       atomic.Int64 // tick a drain's close stops waiting for replies (holdUntil)
	drainEnd                                        time.Time    // when the drain window is over; set by drainOnce
	forced                                          atomic.Bool  // the drain window is over: close every client now
	owed                                            atomic.Int64 // accepted connections whose DELETE is not answered yet
	origins                                         [][]byte
	j                                               *journal.Journal // -journal; nil when off (journal.go)
	jbroken                                         atomic.Bool      // a journal write failed: upgrades get 503
	replay                                          replay           // the orphans' DELETEs
	retryValues                                     [][]byte

	loopsMu sync.Mutex
	loops   []*loop
	loopOf  sync.Map // gnet.EventLoop → *loop

	bucketMu sync.Mutex
	tokens   float64
	last     time.Time

	chans channels // channel name → the loops holding its subscribers (channel.go)

	eng     gnet.Engine
	booted  chan struct{}
	runErr  chan error
	stopped chan struct{}
	addr    string
}

// New returns a Server; Start runs it.
func New(cfg Config, backend *bridge.Client, m *Metrics, log *zap.Logger) (*Server, error) {
	cfg.setDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	var prefix [6]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		return nil, fmt.Errorf("engine: connection id prefix: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		limited: log.WithOptions(zap.WrapCore(sampled)),
		backend: backend,
		metrics: m,
		reg:     newRegistry(),
		ipl:     newIPLimits(cfg.MaxConnsPerIP, cfg.MaxPendingPerIP),
		start:   time.Now(),
		// A fresh random prefix per process keeps ids unique across
		// restarts; the sequence keeps them unique within one.
		idPrefix: hex.EncodeToString(prefix[:]),
		booted:   make(chan struct{}),
		cl:       newClusterState(cfg.Bus),
		runErr:   make(chan error, 1),
		stopped:  make(chan struct{}),
		tokens:   float64(cfg.AcceptBurst),
		chans:    channels{on: cfg.OnChannel},
		last:     time.Now(),
	}
	s.handshakeTicks = s.ticks(cfg.HandshakeTimeout)
	s.holdTicks = s.ticks(cfg.HoldTimeout)
	s.pingTicks = s.ticks(cfg.PingInterval)
	s.pongTicks = s.ticks(cfg.PongTimeout)
	s.closeTicks = s.ticks(cfg.CloseTimeout)
	for _, o := range cfg.AllowOrigins {
		s.origins = append(s.origins, []byte(o))
	}
	for i := 1; i <= 5; i++ {
		s.retryValues = append(s.retryValues, []byte(strconv.Itoa(i)))
	}
	if cfg.FDBudget == 0 {
		s.cfg.FDBudget = fdBudget(backend)
	}
	m.maxConns.Set(float64(cfg.MaxConns))
	return s, nil
}

// ticks converts d to timer ticks, rounding up; 0 stays 0. Timers are
// capped at maxTimerTicks, far in the future, so that a connection's 32-bit
// ticks (tick32) stay unambiguous.
func (s *Server) ticks(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return min(int64((d+s.cfg.Tick-1)/s.cfg.Tick), maxTimerTicks)
}

// maxTimerTicks is 3.4 years at the default 100 ms tick.
const maxTimerTicks = 1 << 30

// tick is the current time in ticks since the server started.
func (s *Server) tick() int64 { return int64(time.Since(s.start) / s.cfg.Tick) }

// fdBudget leaves room under RLIMIT_NOFILE for the backend's sockets, the
// admin listener and the process's own files, so that accept(2) never
// meets EMFILE: gnet stops its engine on any accept error.
func fdBudget(b *bridge.Client) int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur > math.MaxInt32 {
		return 0
	}
	reserve := 128 + b.MaxConns()
	return max(int(rl.Cur)-reserve, 16)
}

// Start listens and runs the event loops in the background. It returns
// once the listener is bound.
func (s *Server) Start() error {
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithReusePort(s.cfg.ReusePort),
		// SO_REUSEADDR, as net.Listen sets it: a restarted bridge binds its
		// port at once despite the old connections in TIME_WAIT.
		gnet.WithReuseAddr(true),
		gnet.WithLogger(s.log.Named("gnet").Sugar()),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
	}
	if s.cfg.Loops > 0 {
		opts = append(opts, gnet.WithNumEventLoop(s.cfg.Loops))
	}
	go func() {
		err := gnet.Run(&handler{s: s}, "tcp://"+s.cfg.Listen, opts...)
		s.runErr <- err
		close(s.stopped)
	}()
	select {
	case <-s.booted:
	case err := <-s.runErr:
		return fmt.Errorf("engine: listen %s: %w", s.cfg.Listen, err)
	}
	s.addr = s.cfg.Listen
	if fd, err := s.eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				s.addr = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
			case *unix.SockaddrInet6:
				s.addr = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
			}
		}
		_ = unix.Close(fd)
	}
	if _, portStr, err := net.SplitHostPort(s.addr); err == nil {
		s.port, _ = strconv.Atoi(portStr)
		loops := s.cfg.Loops
		if loops <= 0 {
			loops = runtime.NumCPU()
		}
		listeners := 1 // the main reactor accepts for every loop
		if s.cfg.ReusePort {
			listeners = loops
		}
		if s.sockets, err = findSockets(s.port, listeners); err != nil {
			s.log.Warn("cannot find the listening sockets; a drain will answer upgrades with 503 instead of stopping the listener", zap.Error(err))
		}
	}
	go s.ticker()
	s.replay.start()
	return nil
}

// Addr is the bound listener address (useful with port 0).
func (s *Server) Addr() string { return s.addr }

// Done is closed when the engine has stopped.
func (s *Server) Done() <-chan struct{} { return s.stopped }

// Err returns why the engine stopped, once Done is closed.
func (s *Server) Err() error {
	select {
	case err := <-s.runErr:
		s.runErr <- err
		return err
	default:
		return nil
	}
}

func (s *Server) ticker() {
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-s.stopped:
			return
		case <-t.C:
		}
		s.loopsMu.Lock()
		loops := s.loops
		s.loopsMu.Unlock()
		for _, l := range loops {
			l.post(task{kind: taskTick})
		}
	}
}

func (s *Server) loopFor(gc gnet.Conn) *loop {
	el := gc.EventLoop()
	if l, ok := s.loopOf.Load(el); ok {
		return l.(*loop)
	}
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if l, ok := s.loopOf.Load(el); ok {
		return l.(*loop)
	}
	l := newLoop(s, el)
	s.loopOf.Store(el, l)
	s.loops = append(append([]*loop(nil), s.loops...), l)
	return l
}

func (s *Server) nextID() uint64 { return s.idSeq.Add(1) }

// appendConnID appends the Wsbridge-Connection-Id of sequence number id.
func (s *Server) appendConnID(dst []byte, id uint64) []byte {
	return bridge.AppendConnID(dst, s.idPrefix, id)
}

func (s *Server) originAllowed(origin []byte) bool {
	if len(s.origins) == 0 || origin == nil {
		return true
	}
	for _, o := range s.origins {
		if bytes.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// admit takes a token from the -accept-rate bucket.
func (s *Server) admit() bool {
	if s.cfg.AcceptRate <= 0 {
		return true
	}
	s.bucketMu.Lock()
	defer s.bucketMu.Unlock()
	now := time.Now()
	s.tokens = min(float64(s.cfg.AcceptBurst), s.tokens+now.Sub(s.last).Seconds()*s.cfg.AcceptRate)
	s.last = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

// retryAfter returns a Retry-After header with 1–5 s of jitter, so refused
// clients do not come back in step.
func (s *Server) retryAfter() []protocol.Header {
	return []protocol.Header{{Name: hdrRetryAfter, Value: s.retryValues[mrand.IntN(len(s.retryValues))]}}
}

// forwardedFor appends the X-Forwarded-For value for a client whose peer
// is ip (the socket's, or a trusted proxy's PROXY protocol source) and who
// sent xff: the peer's IP alone, or appended to xff when the peer is a
// trusted proxy.
func (s *Server) forwardedFor(dst []byte, ip netip.Addr, xff []byte) []byte {
	if xff = bytes.TrimSpace(xff); len(xff) > 0 && s.trusted(ip) {
		dst = append(dst, xff...)
		dst = append(dst, ", "...)
	}
	return ip.AppendTo(dst)
}

func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (s *Server) trusted(ip netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientIP is the address wsbridge believes the client has: the rightmost
// address in xff that is not a trusted proxy.
func (s *Server) clientIP(xff []byte) string {
	for len(xff) > 0 {
		i := bytes.LastIndexByte(xff, ',')
		part := bytes.TrimSpace(xff[i+1:])
		if ip, err := netip.ParseAddr(string(part)); err != nil || !s.trusted(ip) || i < 0 {
			return string(part)
		}
		xff = xff[:i]
	}
	return ""
}

// Ready reports whether the server takes new connections (/readyz).
func (s *Server) Ready() bool {
	if s.draining.Load() {
		return false
	}
	return s.cfg.MaxConns <= 0 || s.wsConns.Load() < int64(s.cfg.MaxConns)
}

// Connections returns the WebSocket connections authorising or open.
func (s *Server) Connections() int64 { return s.wsConns.Load() }

// Errors returned by Shutdown.
var (
	// ErrDrainTimeout: the drain window ran out, so the last clients were
	// closed without waiting; every POST and DELETE was still sent.
	ErrDrainTimeout = errors.New("engine: drain window over before every client left")
	// ErrDrainAborted: the caller stopped the drain; DELETEs may be lost
	// (see DeletesOwed).
	ErrDrainAborted = errors.New("engine: stopped before every DELETE was answered")
)

// DeletesOwed returns the accepted connections whose DELETE has not been
// answered yet. After an aborted Shutdown they are the DELETEs lost.
func (s *Server) DeletesOwed() int64 { return s.owed.Load() }

// Shutdown drains and stops the engine. At once readiness turns 503 and
// new connections are refused; open connections are closed with 1012,
// spread over the -drain-timeout window (each after the replies to its
// messages in flight), and their queued POSTs and DELETEs are sent.
//
// The window bounds the wait for the clients, not the promise to the
// backend: when it is over, the remaining clients are closed at once (1012,
// then the socket, without waiting for their reply), and Shutdown goes on
// until every queued POST and every DELETE has been answered (each bounded
// by the backend timeout and the DELETE retries); then the engine stops.
// It returns nil, or ErrDrainTimeout when the window ran out.
//
// When ctx ends first, the engine stops at once and Shutdown returns an
// error wrapping ErrDrainAborted: the DELETEs not yet answered
// (DeletesOwed) are lost. So they are, with the same error, when the
// engine stops by itself during the drain. Shutdown may be called again, e.g. with a
// shorter ctx; the window does not restart.
func (s *Server) Shutdown(ctx context.Context) error {
	s.drainOnce.Do(func() {
		// After the lame-duck delay, spread the closes over the window
		// less the delay, the wait for the clients' close replies (at most
		// a fifth of the window: most clients answer at once) and a tenth
		// for the last POSTs and DELETEs. A close held for replies in
		// flight goes in time for the client's reply too.
		window, delay := s.ticks(s.cfg.DrainTimeout), s.ticks(s.cfg.DrainDelay)
		now := s.tick()
		from := now + delay
		reply := min(s.closeTicks, window/5)
		s.drainFrom.Store(from)
		s.drainTill.Store(from + max(1, window-delay-reply-window/10))
		s.drainHold.Store(now + window - reply)
		s.drainEnd = time.Now().Add(s.cfg.DrainTimeout)
		s.draining.Store(true)
		s.log.Info("draining", zap.Int64("connections", s.wsConns.Load()), zap.Duration("window", s.cfg.DrainTimeout))
		s.stopListening()
	})
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	var windowOver <-chan time.Time
	if !s.forced.Load() {
		w := time.NewTimer(time.Until(s.drainEnd))
		defer w.Stop()
		windowOver = w.C
	}
	for s.wsConns.Load() > 0 || s.backend.Pending() > 0 || s.replay.left.Load() > 0 {
		select {
		case <-ctx.Done():
			owed, calls := s.owed.Load(), s.backend.Pending()
			s.stop()
			return fmt.Errorf("%w: %d DELETEs not answered, %d backend calls unfinished", ErrDrainAborted, owed, calls)
		case <-s.stopped:
			// gnet stopped by itself (it does on an accept error): no loop
			// runs any more, so nothing owed can be delivered.
			return fmt.Errorf("%w: the engine stopped during the drain (%v): %d DELETEs not answered, %d backend calls unfinished",
				ErrDrainAborted, s.Err(), s.owed.Load(), s.backend.Pending())
		case <-windowOver:
			windowOver = nil
			s.force()
		case <-t.C:
		}
	}
	s.stop()
	if s.forced.Load() {
		return ErrDrainTimeout
	}
	return nil
}

// force ends the drain window: the loops close their remaining clients at
// their next tick (see forceClose), upgrades still in progress get 503,
// and the backend calls go on.
func (s *Server) force() {
	s.refuseUpgrades.Store(true)
	s.forced.Store(true)
	s.log.Warn("drain window over: closing the remaining clients now; their queued POSTs and DELETEs are still sent",
		zap.Int64("connections", s.wsConns.Load()), zap.Int64("deletes_owed", s.owed.Load()),
		zap.Int64("backend_pending", s.backend.Pending()))
}

// stopListening stops taking new connections at the socket level (see
// stopAccepting), so that with -reuseport a new process gets them all.
// Connections accepted before are still served, and drained. Where that
// fails, upgrades during the drain get 503 instead.
func (s *Server) stopListening() {
	n, err := stopAccepting(s.sockets, s.port, s.cfg.ReusePort)
	if err != nil {
		s.refuseUpgrades.Store(true)
		s.log.Warn("draining: could not stop the listener; refusing upgrades with 503 instead", zap.Error(err))
		return
	}
	s.log.Info("draining: listener stopped", zap.Int("sockets", n), zap.Bool("reuseport", s.cfg.ReusePort))
}

// Stop stops the engine at once, without draining.
func (s *Server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.eng.Stop(ctx)
	<-s.stopped
}

// drainStep closes this loop's share of open connections for this tick.
func (l *loop) drainStep() {
	s := l.srv
	if !s.draining.Load() || l.now == l.drained {
		return
	}
	if s.forced.Load() {
		l.drained = l.now
		l.forceClose()
		return
	}
	if l.open.n == 0 || l.now < s.drainFrom.Load() {
		return
	}
	l.drained = l.now // once per tick, however many tick tasks a busy loop finds queued
	left := s.drainTill.Load() - l.now
	k := l.open.n
	if left > 1 {
		k = (l.open.n + int(left) - 1) / int(left)
	}
	for ; k > 0 && l.open.head != nil; k-- {
		c := l.open.head
		// Suggest a short, jittered reconnect delay: by now a new process
		// (or another node) takes the connections.
		c.closeWith(crDrain, 0, drainReasons[mrand.IntN(len(drainReasons))])
	}
}

// forceClose runs on every tick once the drain window is over: every open
// connection gets its 1012, and every socket still open (open, closing
// while its close frame is held or its client's reply awaited, or an
// upgrade request not yet read whole) is closed now. What closing
// connections still owe the backend goes on: their queued POSTs, then
// their DELETEs.
func (l *loop) forceClose() {
	for c := l.open.head; c != nil; c = l.open.head {
		c.closeWith(crDrain, 0, drainReasons[mrand.IntN(len(drainReasons))])
		l.closeConn(c)
		if l.open.head == c { // closeWith takes it off the list; never loop on it
			l.open.remove(c)
		}
	}
	var left []*conn
	for _, c := range l.wheel.slots {
		for ; c != nil; c = c.tnext {
			if c.gc != nil && (c.phase == phClosing || c.phase == phHandshake) {
				left = append(left, c)
			}
		}
	}
	for _, c := range left { // closing one takes it off the wheel
		c.releaseClose()
		l.closeConn(c)
	}
}

var drainReasons = []string{"retry=1", "retry=2", "retry=3", "retry=4", "retry=5"}

// sampled keeps the first 5 entries with the same message each second,
// then every 100th: per-connection noise cannot flood the log.
func sampled(core zapcore.Core) zapcore.Core {
	return zapcore.NewSamplerWithOptions(core, time.Second, 5, 100)
}

func (s *Server) logLimited(msg string, err error) {
	if ce := s.limited.Check(zap.WarnLevel, msg); ce != nil {
		ce.Write(zap.Error(err))
	}
}

//go:build linux

package loadgen

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsbridge/wsbridge/client"
	"github.com/wsbridge/wsbridge/protocol"
)

// Connection states.
const (
	stIdle       uint8 = iota // not started yet
	stConnecting              // TCP connect in progress
	stUpgrading               // upgrade request sent, waiting for 101
	stOpen                    // WebSocket open
	stClosing                 // we sent a close frame, waiting for the server's
	stWaiting                 // backing off before reconnecting
	stDone                    // will not connect again
)

// maxFrame bounds a server frame we are willing to buffer.
const maxFrame = 16 << 20

// conn is one client connection; only its loop touches it.
type conn struct {
	idx     int32
	fd      int32
	state   uint8
	wantOut bool   // EPOLLOUT registered
	lost    bool   // was open once and lost; the next 101 is a reopen
	gen     uint32 // incarnation (Handshake mode ClientIds)
	attempt int32  // consecutive failures
	hidx    int32  // position in the timer heap, -1 when not there
	when    int64  // timer deadline (unix ns)
	started int64  // connect start (unix ns)
	sentAt  int64  // last message sent (unix ns)
	waiting int32  // messages sent and not yet answered
	seq     uint32
	in      []byte // partial inbound bytes, nil when none
	out     []byte // outbound bytes the socket did not take yet
}

// loop is one event loop: an epoll instance, its connections and timers.
type loop struct {
	g     *Gen
	id    int
	epfd  int
	conns []*conn // this loop's connections in start order
	byFD  []*conn // index fd → connection
	next  int     // conns[next] is the next to start for the first time
	heap  []*conn // timers, a binary min-heap on when
	infl  int     // connects and upgrades in progress
	open  int     // sockets open (fd >= 0)
	rnd   *rand.Rand
	bo    *client.Backoff
	ctr   Counters
	lat   Histogram
	hs    Histogram

	stopBy   atomic.Int64
	drops    int64 // Drop requests handled
	stopping bool
	events   []unix.EpollEvent
	rbuf     []byte   // read buffer shared by the loop's connections
	wbuf     []byte   // frame scratch
	req      []byte   // upgrade request scratch
	payload  []byte   // message scratch
	z        *zclient // permessage-deflate (Config.Deflate)
	sa       unix.SockaddrInet4
	sources  []unix.SockaddrInet4

	// Config.Track: per sequence number (mod Track), deliveries and the
	// unix ns of the last one; written by the loop, read by SeqStats.
	seqN, seqLast []atomic.Int64
}

func newLoop(g *Gen, id int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loadgen: epoll: %w", err)
	}
	l := &loop{
		g: g, id: id, epfd: epfd,
		rnd:    newRand(g.cfg.Seed, id),
		events: make([]unix.EpollEvent, 512),
		rbuf:   make([]byte, 64<<10),
	}
	if g.cfg.Track > 0 {
		l.seqN, l.seqLast = make([]atomic.Int64, g.cfg.Track), make([]atomic.Int64, g.cfg.Track)
	}
	l.bo = &client.Backoff{Base: g.cfg.BackoffBase, Max: g.cfg.BackoffMax, Rand: newRand(g.cfg.Seed+1, id)}
	if !g.cfg.Addr.Addr().Is4() {
		return nil, fmt.Errorf("%w: only IPv4 targets are supported", ErrConfig)
	}
	l.sa = unix.SockaddrInet4{Port: int(g.cfg.Addr.Port()), Addr: g.cfg.Addr.Addr().As4()}
	for _, s := range g.cfg.Sources {
		if s.Is4() {
			l.sources = append(l.sources, unix.SockaddrInet4{Addr: s.As4()})
		}
	}
	for i := g.cfg.First + id; i < g.cfg.First+g.cfg.Count; i += g.cfg.Loops {
		l.conns = append(l.conns, &conn{idx: int32(i), fd: -1, hidx: -1})
	}
	size := g.cfg.Size
	l.payload = make([]byte, 0, max(size, 64))
	l.wbuf = make([]byte, 0, max(size, 64)+14)
	return l, nil
}

func nowNs() int64 { return time.Now().UnixNano() }

func (l *loop) run() {
	start := l.g.start.UnixNano()
	for {
		if !l.stopping && l.g.stopping.Load() {
			l.beginStop()
		}
		now := nowNs()
		if l.stopping && (l.live() == 0 || now >= l.stopBy.Load()) {
			l.closeAll()
			return
		}
		if d := l.g.drops.Load(); d != l.drops {
			l.drops = d
			l.drop(now)
		}
		if !l.stopping && !l.g.pauseSnd.Load() {
			l.startMore(now, start)
		}
		wait := 10 * time.Millisecond
		if len(l.heap) > 0 {
			wait = min(wait, time.Duration(l.heap[0].when-now))
		}
		ms := int(wait / time.Millisecond)
		if wait > 0 && ms == 0 {
			ms = 1
		}
		n, err := unix.EpollWait(l.epfd, l.events, max(ms, 0))
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.g.fail(fmt.Errorf("loadgen: epoll_wait: %w", err))
			l.closeAll()
			return
		}
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd >= len(l.byFD) || l.byFD[fd] == nil {
				continue
			}
			l.event(l.byFD[fd], ev.Events)
		}
		now = nowNs()
		for len(l.heap) > 0 && l.heap[0].when <= now {
			c := l.heap[0]
			l.heapRemove(c)
			l.timer(c, now)
		}
	}
}

// live is the number of open sockets. It is a counter, not a scan: a
// stopping loop asks on every iteration, and scanning ~18,000 connections
// each time is the likeliest reason a worker on a saturated box once missed
// its stop deadline.
func (l *loop) live() int { return l.open }

// startMore starts first connects that are due, within MaxInflight.
func (l *loop) startMore(now, start int64) {
	for l.next < len(l.conns) && l.infl < l.g.cfg.MaxInflight {
		c := l.conns[l.next]
		if start+int64(l.g.startAt(int(c.idx))) > now {
			if c.hidx < 0 {
				c.when = start + int64(l.g.startAt(int(c.idx)))
				l.heapPush(c)
			}
			return
		}
		if c.hidx >= 0 {
			l.heapRemove(c)
		}
		l.next++
		l.connect(c, now)
	}
}

// timer handles a connection's deadline.
func (l *loop) timer(c *conn, now int64) {
	cfg := &l.g.cfg
	switch c.state {
	case stIdle:
		// A first start that was due: startMore takes it (within MaxInflight).
	case stWaiting:
		if l.stopping || l.g.pauseSnd.Load() {
			c.state = stDone
			return
		}
		if l.infl >= cfg.MaxInflight {
			c.when = now + int64(time.Millisecond)*int64(1+l.rnd.IntN(10))
			l.heapPush(c)
			return
		}
		l.connect(c, now)
	case stConnecting, stUpgrading:
		l.ctr.Timeouts.Add(1)
		l.fail(c, now, 0)
	case stClosing:
		l.finishClose(c, now)
	case stOpen:
		switch cfg.Mode {
		case Periodic:
			if c.waiting > 0 && now-c.sentAt > int64(cfg.Timeout) {
				l.ctr.Timeouts.Add(1)
				c.waiting = 0
			}
			if !l.g.pauseSnd.Load() {
				l.sendMsg(c, now)
			}
			c.when += int64(cfg.Interval)
			if c.when <= now {
				c.when = now + int64(cfg.Interval)
			}
			l.heapPush(c)
		case ClosedLoop:
			l.ctr.Timeouts.Add(1)
			c.waiting = 0
			if !l.g.pauseSnd.Load() {
				l.sendMsg(c, now)
				c.when = now + int64(cfg.Timeout)
				l.heapPush(c)
			}
		}
	}
}

// connect opens a socket and starts a non-blocking connect.
func (l *loop) connect(c *conn, now int64) {
	l.ctr.Attempts.Add(1)
	c.started = now
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.ctr.ConnectErr.Add(1)
		l.retry(c, now, 0)
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if len(l.sources) > 0 {
		// Choose the port at connect time, per (source, destination), so
		// each source address has the whole ephemeral range.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		src := &l.sources[int(c.idx)%len(l.sources)]
		if err := unix.Bind(fd, src); err != nil {
			unix.Close(fd)
			l.ctr.ConnectErr.Add(1)
			l.retry(c, now, 0)
			return
		}
	}
	err = unix.Connect(fd, &l.sa)
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		l.ctr.ConnectErr.Add(1)
		l.retry(c, now, 0)
		return
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
		unix.Close(fd)
		l.ctr.ConnectErr.Add(1)
		l.retry(c, now, 0)
		return
	}
	for fd >= len(l.byFD) {
		l.byFD = append(l.byFD, make([]*conn, max(1024, len(l.byFD)))...)
	}
	l.byFD[fd] = c
	c.fd = int32(fd)
	l.open++
	c.wantOut = true
	c.state = stConnecting
	c.in, c.out = c.in[:0], c.out[:0]
	c.waiting = 0
	l.infl++
	c.when = now + int64(l.g.cfg.Timeout)
	l.heapPush(c)
}

// event handles epoll readiness for c.
func (l *loop) event(c *conn, ev uint32) {
	now := nowNs()
	switch c.state {
	case stConnecting:
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		if e, err := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
			l.ctr.ConnectErr.Add(1)
			l.fail(c, now, 0)
			return
		}
		c.state = stUpgrading
		l.req = append(l.req[:0], "GET /"...)
		l.req = l.g.clientID(l.req, int(c.idx), c.gen)
		if l.g.cfg.Query != "" {
			l.req = append(append(l.req, '?'), l.g.cfg.Query...)
		}
		l.req = append(l.req, " HTTP/1.1\r\nHost: "...)
		l.req = append(l.req, l.g.cfg.Host...)
		l.req = append(l.req, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
			"User-Agent: wsbench\r\n"...)
		if l.g.cfg.Deflate {
			l.req = append(l.req, "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n"...)
		}
		l.req = append(l.req, "\r\n"...)
		l.setOut(c, false)
		if !l.write(c, l.req, now) {
			return
		}
	case stOpen, stUpgrading, stClosing:
		if ev&unix.EPOLLOUT != 0 && len(c.out) > 0 {
			if !l.flush(c, now) {
				return
			}
		}
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			l.read(c, now)
		}
	}
}

// sendMsg sends the next benchmark message; false means c is gone.
func (l *loop) sendMsg(c *conn, now int64) bool {
	c.seq++
	if l.g.cfg.JSON {
		l.payload = AppendJSONMessage(l.payload[:0], c.seq, now, l.g.cfg.Size)
	} else {
		l.payload = AppendMessage(l.payload[:0], c.seq, now, l.g.cfg.Size)
	}
	c.sentAt = now
	c.waiting++
	l.ctr.Sent.Add(1)
	if l.g.cfg.Deflate {
		z := l.zc()
		p := z.deflate(l.payload)
		l.ctr.WireSent.Add(int64(len(p)))
		mask := [4]byte{byte(l.rnd.Uint32()), 0x5a, byte(c.idx), byte(c.seq)}
		l.wbuf = protocol.AppendClientFrame(l.wbuf[:0], ws.OpText, true, mask, p)
		l.wbuf[0] |= 0x40 // RSV1: compressed
		return l.write(c, l.wbuf, now)
	}
	l.ctr.WireSent.Add(int64(len(l.payload)))
	return l.send(c, ws.OpText, l.payload, now)
}

// send writes one masked frame; false means c is gone.
func (l *loop) send(c *conn, op ws.OpCode, p []byte, now int64) bool {
	mask := [4]byte{byte(l.rnd.Uint32()), 0x5a, byte(c.idx), byte(c.seq)}
	l.wbuf = protocol.AppendClientFrame(l.wbuf[:0], op, true, mask, p)
	return l.write(c, l.wbuf, now)
}

// write sends b or queues what the socket does not take; false means c is
// gone.
func (l *loop) write(c *conn, b []byte, now int64) bool {
	if len(c.out) > 0 {
		if len(c.out)+len(b) > 4<<20 {
			l.ctr.Timeouts.Add(1) // the server stopped reading
			l.fail(c, now, 0)
			return false
		}
		c.out = append(c.out, b...)
		return true
	}
	n, err := unix.Write(int(c.fd), b)
	if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
		l.eof(c, now)
		return false
	}
	n = max(n, 0)
	if n < len(b) {
		c.out = append(c.out[:0], b[n:]...)
		l.setOut(c, true)
	}
	return true
}

// flush writes queued bytes; false means c is gone.
func (l *loop) flush(c *conn, now int64) bool {
	n, err := unix.Write(int(c.fd), c.out)
	if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
		l.eof(c, now)
		return false
	}
	n = max(n, 0)
	c.out = c.out[:copy(c.out, c.out[n:])]
	if len(c.out) == 0 {
		if cap(c.out) > 4096 {
			c.out = nil
		}
		l.setOut(c, false)
	}
	return true
}

func (l *loop) setOut(c *conn, on bool) {
	if c.wantOut == on || c.fd < 0 {
		return
	}
	c.wantOut = on
	ev := uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	if on {
		ev |= unix.EPOLLOUT
	}
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &unix.EpollEvent{Events: ev, Fd: c.fd})
}

// eof handles a socket that ended or failed.
func (l *loop) eof(c *conn, now int64) {
	switch c.state {
	case stClosing:
		l.finishClose(c, now)
	case stOpen:
		if !l.stopping {
			l.ctr.Closed.Add(1)
			l.ctr.CodeOther.Add(1)
		}
		l.lose(c, now, 0)
	default:
		if c.state == stUpgrading {
			l.ctr.Refused.Add(1) // closed before answering the upgrade
		} else {
			l.ctr.ConnectErr.Add(1)
		}
		l.fail(c, now, 0)
	}
}

// startClose sends a 1000 close and waits for the server's; false means c
// is gone.
func (l *loop) startClose(c *conn, now int64) bool {
	c.state = stClosing
	l.heapRemove(c)
	c.when = now + int64(l.g.cfg.Timeout)
	l.heapPush(c)
	return l.send(c, ws.OpClose, []byte{0x03, 0xe8}, now)
}

// finishClose ends a close we started.
func (l *loop) finishClose(c *conn, now int64) {
	if l.g.cfg.Mode == Handshake && !l.stopping {
		l.ctr.Cycles.Add(1)
		l.closeFD(c)
		c.gen++
		if l.g.pauseSnd.Load() {
			c.state = stDone
			return
		}
		l.connect(c, now)
		return
	}
	l.drop1(c, stDone)
}

// closeFD closes c's socket and forgets its timer.
func (l *loop) closeFD(c *conn) {
	l.heapRemove(c)
	if c.fd >= 0 {
		l.byFD[c.fd] = nil
		_ = unix.Close(int(c.fd))
		c.fd = -1
		l.open--
	}
	if c.state == stConnecting || c.state == stUpgrading {
		l.infl--
	}
	if c.state == stOpen || c.state == stClosing && l.g.cfg.Mode != Handshake {
		l.ctr.Held.Add(-1)
	}
	c.in, c.out = nil, nil
}

// drop1 closes c and leaves it in state st.
func (l *loop) drop1(c *conn, st uint8) {
	l.closeFD(c)
	c.state = st
}

// fail ends a connect or upgrade that went wrong and maybe retries.
func (l *loop) fail(c *conn, now int64, hint time.Duration) {
	l.closeFD(c)
	l.retry(c, now, hint)
}

// lose ends an open connection the server (or the network) ended.
func (l *loop) lose(c *conn, now int64, hint time.Duration) {
	l.closeFD(c)
	c.lost = true
	l.retry(c, now, hint)
}

// retry schedules a reconnect after backoff, or gives up.
func (l *loop) retry(c *conn, now int64, hint time.Duration) {
	if !l.g.cfg.Reconnect || l.stopping || l.g.pauseSnd.Load() {
		c.state = stDone
		return
	}
	c.state = stWaiting
	d := l.bo.Next(int(c.attempt), hint)
	c.attempt++
	c.when = now + int64(d)
	l.heapPush(c)
}

// drop closes every open connection without a close frame and reconnects
// them all at once.
func (l *loop) drop(now int64) {
	for _, c := range l.conns {
		if c.state != stOpen {
			continue
		}
		l.closeFD(c)
		l.ctr.Dropped.Add(1)
		c.lost = true
		c.attempt = 0
		c.state = stWaiting
		c.when = now
		l.heapPush(c)
	}
}

// beginStop sends a close to every open connection.
func (l *loop) beginStop() {
	l.stopping = true
	now := nowNs()
	for _, c := range l.conns {
		switch c.state {
		case stOpen:
			l.startClose(c, now)
		case stClosing:
		default:
			if c.fd >= 0 {
				l.closeFD(c)
			}
			l.heapRemove(c)
			c.state = stDone
		}
	}
}

// closeAll closes every socket and the epoll instance.
func (l *loop) closeAll() {
	for _, c := range l.conns {
		if c.fd >= 0 {
			l.closeFD(c)
		}
		c.state = stDone
	}
	l.heap = l.heap[:0]
	if l.epfd >= 0 {
		_ = unix.Close(l.epfd)
		l.epfd = -1
	}
}

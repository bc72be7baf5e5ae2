//go:build linux

package loadgen

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsbridge/wsbridge/client"
)

// read takes what the socket has and feeds it to the state machine.
func (l *loop) read(c *conn, now int64) {
	n, err := unix.Read(int(c.fd), l.rbuf)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		n = 0
	}
	if n <= 0 {
		l.eof(c, now)
		return
	}
	data := l.rbuf[:n]
	fromIn := len(c.in) > 0
	if fromIn {
		c.in = append(c.in, data...)
		data = c.in
	}
	used := 0
	if c.state == stUpgrading {
		end := bytes.Index(data, crlfcrlf)
		if end < 0 {
			if len(data) > 16<<10 {
				l.ctr.Refused.Add(1)
				l.fail(c, now, 0)
				return
			}
			l.keep(c, data, fromIn)
			return
		}
		used = end + 4
		if !l.upgraded(c, data[:used], now) {
			return
		}
	}
	k, ok := l.frames(c, data[used:], now)
	if !ok {
		return
	}
	l.keep(c, data[used+k:], fromIn)
}

var crlfcrlf = []byte("\r\n\r\n")

// keep saves unconsumed bytes in c.in; rest aliases c.in when fromIn.
func (l *loop) keep(c *conn, rest []byte, fromIn bool) {
	if c.fd < 0 {
		return
	}
	if len(rest) == 0 {
		if cap(c.in) > 4096 {
			c.in = nil // do not pin a big buffer on an idle connection
		} else {
			c.in = c.in[:0]
		}
		return
	}
	if fromIn {
		c.in = c.in[:copy(c.in, rest)] // copy is a memmove
		return
	}
	c.in = append(c.in[:0], rest...)
}

// upgraded checks the response head; false means c is gone.
func (l *loop) upgraded(c *conn, head []byte, now int64) bool {
	l.infl--
	l.heapRemove(c)
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		l.infl++ // fail decrements it
		l.ctr.Refused.Add(1)
		var hint time.Duration
		if bytes.HasPrefix(head, []byte("HTTP/1.1 503")) {
			l.ctr.Status503.Add(1)
			hint = retryAfter(head)
		}
		l.fail(c, now, hint)
		return false
	}
	l.hs.Record((now - c.started) / 1000)
	c.state = stOpen
	c.attempt = 0
	l.ctr.Opened.Add(1)
	l.ctr.Held.Add(1)
	if c.lost {
		c.lost = false
		l.ctr.LastReopen.Store(now)
	}
	cfg := &l.g.cfg
	switch cfg.Mode {
	case Periodic:
		c.when = now + l.rnd.Int64N(int64(cfg.Interval))
		l.heapPush(c)
	case ClosedLoop:
		if !l.g.pauseSnd.Load() {
			if !l.sendMsg(c, now) {
				return false
			}
			c.when = now + int64(cfg.Timeout)
			l.heapPush(c)
		}
	case Handshake:
		l.ctr.Held.Add(-1)
		return l.startClose(c, now)
	}
	return true
}

// retryAfter reads a Retry-After seconds value from a response head.
func retryAfter(head []byte) time.Duration {
	i := bytes.Index(head, []byte("\r\nRetry-After:"))
	if i < 0 {
		return 0
	}
	v := head[i+len("\r\nRetry-After:"):]
	if j := bytes.IndexByte(v, '\r'); j >= 0 {
		v = v[:j]
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(min(n, 600)) * time.Second
}

// frames handles whole server frames in p and returns how many bytes it
// used; false means c is gone.
func (l *loop) frames(c *conn, p []byte, now int64) (int, bool) {
	used := 0
	for {
		q := p[used:]
		if len(q) < 2 {
			return used, true
		}
		op := ws.OpCode(q[0] & 0x0f)
		fin := q[0]&0x80 != 0
		hl, n := 2, int64(q[1]&0x7f)
		switch n {
		case 126:
			if len(q) < 4 {
				return used, true
			}
			n, hl = int64(binary.BigEndian.Uint16(q[2:])), 4
		case 127:
			if len(q) < 10 {
				return used, true
			}
			n, hl = int64(binary.BigEndian.Uint64(q[2:])), 10
		}
		masked := q[1]&0x80 != 0
		if masked {
			hl += 4
		}
		if n < 0 || n > maxFrame {
			l.ctr.Closed.Add(1)
			l.fail(c, now, 0)
			return 0, false
		}
		if int64(len(q)) < int64(hl)+n {
			return used, true
		}
		payload := q[hl : int64(hl)+n]
		if masked {
			var mask [4]byte
			copy(mask[:], q[hl-4:hl])
			ws.Cipher(payload, mask, 0)
		}
		used += hl + int(n)
		if !op.IsControl() {
			l.ctr.WireRecv.Add(n)
		}
		if q[0]&0x40 != 0 && l.g.cfg.Deflate && !op.IsControl() {
			// A compressed message (the bridge sends whole ones).
			var err error
			if payload, err = l.zc().inflate(payload); err != nil {
				l.ctr.Closed.Add(1)
				l.fail(c, now, 0)
				return 0, false
			}
		}
		if !l.frame(c, op, fin, payload, now) {
			return 0, false
		}
	}
}

// frame handles one server frame; false means c is gone.
func (l *loop) frame(c *conn, op ws.OpCode, fin bool, p []byte, now int64) bool {
	switch op {
	case ws.OpPing:
		return l.send(c, ws.OpPong, p, now)
	case ws.OpPong:
		return true
	case ws.OpClose:
		code, reason := ws.StatusNoStatusRcvd, ""
		if len(p) >= 2 {
			code = ws.StatusCode(binary.BigEndian.Uint16(p))
			reason = string(p[2:])
		}
		if c.state == stClosing {
			l.finishClose(c, now)
			return false
		}
		switch code {
		case client.CodeRestart:
			l.ctr.Code1012.Add(1)
		case client.CodeTryAgain:
			l.ctr.Code1013.Add(1)
		default:
			l.ctr.CodeOther.Add(1)
		}
		if !l.stopping {
			l.ctr.Closed.Add(1)
		}
		// Echo the close and hang up; the server has said its last word.
		cp := []byte{byte(code >> 8), byte(code)}
		if code == ws.StatusNoStatusRcvd {
			cp = nil
		}
		l.send(c, ws.OpClose, cp, now)
		act, hint := client.OnClose(code, reason)
		if act == client.Stop || l.stopping {
			l.drop1(c, stDone)
			return false
		}
		l.lose(c, now, hint)
		return false
	}
	if !fin {
		return true // the bridge sends whole messages; count the last fragment
	}
	l.ctr.Recv.Add(1)
	if c.waiting > 0 {
		c.waiting--
	}
	if ts, ok := stamp(p); ok {
		l.lat.Record((now - ts) / 1000)
		if l.seqN != nil {
			l.track(p, now)
		}
	}
	if l.g.cfg.Mode == ClosedLoop && c.state == stOpen && !l.g.pauseSnd.Load() {
		if !l.sendMsg(c, now) {
			return false
		}
		l.heapRemove(c)
		c.when = now + int64(l.g.cfg.Timeout)
		l.heapPush(c)
	}
	return true
}

// stamp reads the send time from a message "<seq> <unix ns> ...".
func stamp(p []byte) (int64, bool) {
	i := bytes.IndexByte(p, ' ')
	if i < 0 {
		return 0, false
	}
	var v int64
	n := 0
	for _, b := range p[i+1:] {
		if b < '0' || b > '9' {
			break
		}
		v = v*10 + int64(b-'0')
		n++
	}
	return v, n >= 18 && n <= 19
}

// AppendMessage appends a benchmark message of at least size bytes: the
// sequence number (the mock backend checks order), the send time in unix
// nanoseconds, and padding.
func AppendMessage(dst []byte, seq uint32, now int64, size int) []byte {
	start := len(dst)
	dst = strconv.AppendUint(dst, uint64(seq), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, now, 10)
	dst = append(dst, ' ')
	for len(dst)-start < size {
		dst = append(dst, 'x')
	}
	return dst
}

// track counts a delivery of the message whose sequence number starts p
// (Config.Track).
func (l *loop) track(p []byte, now int64) {
	var seq uint64
	for _, b := range p {
		if b < '0' || b > '9' {
			break
		}
		seq = seq*10 + uint64(b-'0')
	}
	i := seq % uint64(len(l.seqN))
	l.seqN[i].Add(1)
	if now > l.seqLast[i].Load() {
		l.seqLast[i].Store(now) // only this loop writes it
	}
}

// SeqStats returns how many connections received message seq (modulo
// Config.Track) and the unix ns of the last delivery (Config.Track > 0).
func (g *Gen) SeqStats(seq uint32) (n, last int64) {
	for _, l := range g.loops {
		if l.seqN == nil {
			continue
		}
		i := uint64(seq) % uint64(len(l.seqN))
		n += l.seqN[i].Load()
		last = max(last, l.seqLast[i].Load())
	}
	return n, last
}

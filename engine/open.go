package engine

import (
	"errors"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/protocol"
)

var emptyPayload = []byte{}

// readFrames decodes the inbound bytes into POSTs, pongs and the close: the
// socket's buffer or, once the socket is gone, what onClose kept of it.
func (c *conn) readFrames() gnet.Action {
	c.flags |= fDecoding
	a := c.decodeInbound()
	c.flags &^= fDecoding
	return a
}

func (c *conn) decodeInbound() gnet.Action {
	if c.flags&fBroken != 0 {
		c.dropInbound()
		return gnet.None
	}
	s, l := c.l.srv, c.l
	sock := c.gc != nil
	buf := c.inbound()
	off := 0
	for off < len(buf) {
		if !c.sess.Assembling() && c.backlogged() {
			// Backpressure: leave the rest in the socket's buffer until a
			// POST finishes (onPOST reads on), unless it grows too big.
			c.consume(off)
			if int64(c.inboundLen()) > s.cfg.MaxMessage+maxBacklogSlack {
				if c.phase == phOpen {
					c.closeWith(crOverload, 0, "too many messages waiting for the backend")
				}
				c.flags |= fBroken // discard from now on
				c.endIntake()
			}
			return gnet.None
		}
		ev, n, err := c.dec.Next(buf[off:])
		off += n
		if err != nil {
			c.failInbound(err)
			return gnet.None
		}
		switch ev.Kind {
		case protocol.EventNone:
			if n == 0 {
				c.consume(off)
				return gnet.None
			}
		case protocol.EventData:
			// After a close of ours the client may still send what it
			// sent before it saw the close: those messages are POSTed too.
			if c.flags&fIntakeOver != 0 || c.phase != phOpen && c.phase != phClosing {
				continue
			}
			if ev.Compressed {
				msg, err := c.compressedChunk(&ev)
				if err != nil {
					c.failInbound(err)
					return gnet.None
				}
				if msg == nil {
					continue // more of it to come
				}
				ev.Payload, ev.First, ev.Fin = msg, true, true
			}
			c.bytesIn += uint64(len(ev.Payload))
			if c.sess.Message(l.bl, c, ev.Payload, ev.First, ev.Fin, ev.OpCode == ws.OpBinary) {
				c.msgsIn++
				s.metrics.messagesIn.Inc()
			}
		case protocol.EventPing:
			if c.flags&fCloseSent == 0 {
				c.send(outPong, ws.OpPong, ev.Payload)
			}
		case protocol.EventClose:
			if c.flags&fCloseSent == 0 {
				// Echo the client's code (RFC 6455 §5.5.1), then close.
				c.flags |= fCloseSent
				echo := ev.Code
				if echo == ws.StatusNoStatusRcvd {
					echo = 0
				}
				c.end(crClientClose, ev.Code, string(ev.Reason))
				c.write(protocol.AppendClose(l.wbuf[:0], echo, ""))
			}
			c.endIntake()
			c.dropInbound()
			return gnet.Close
		}
		if sock && c.gc == nil {
			// A write failed and the socket closed under us: buf is gone.
			return gnet.None
		}
	}
	c.consume(off)
	return gnet.None
}

// failInbound closes the connection for an inbound protocol violation: err
// is a *protocol.CloseError (its code is sent) or else 1002. Inbound bytes
// are discarded from now on.
func (c *conn) failInbound(err error) {
	c.dropInbound()
	c.flags |= fBroken
	code := ws.StatusProtocolError
	var ce *protocol.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	c.closeWith(closeReasonFor(code), code, err.Error())
	c.endIntake()
}

// inbound returns the bytes read and not yet decoded: the socket's buffer,
// valid until the next Discard, or once the socket is gone what onClose
// kept of it (side.rest).
func (c *conn) inbound() []byte {
	if c.gc != nil {
		buf, _ := c.gc.Peek(-1)
		return buf
	}
	if c.side != nil {
		return c.side.rest
	}
	return nil
}

func (c *conn) inboundLen() int {
	if c.gc != nil {
		return c.gc.InboundBuffered()
	}
	if c.side != nil {
		return len(c.side.rest)
	}
	return 0
}

// consume drops the first n inbound bytes. gnet's Discard takes n <= 0 to
// mean everything, which would throw away a partial frame.
func (c *conn) consume(n int) {
	if n <= 0 {
		return
	}
	if c.gc != nil {
		_, _ = c.gc.Discard(n)
	} else if c.side != nil && n <= len(c.side.rest) {
		c.side.rest = c.side.rest[n:]
	}
}

// dropInbound drops every inbound byte.
func (c *conn) dropInbound() {
	if c.gc != nil {
		_, _ = c.gc.Discard(-1) // everything
	} else if c.side != nil {
		c.side.rest = nil
	}
}

// Inbound bounds. A parsed message waiting for its POST costs about 2 KiB
// of pooled request state besides its body, so a connection queues at most
// maxQueuedMessages of them (and Config.MaxQueued bounds the sum over all
// connections); past that the engine stops decoding and leaves the raw
// bytes in the socket's buffer until a POST finishes. Only when those pass
// -max-message plus maxBacklogSlack (room for one whole message) is the
// client closed with 1013: a fast sender cannot grow the bridge's memory
// behind a slow backend.
const (
	maxQueuedMessages = 16
	maxQueuedFactor   = 2 // × -max-message bytes of queued message bodies
	maxBacklogSlack   = 64 << 10
)

// backlogged reports whether the connection must stop taking messages until
// its POST in flight finishes. A connection with nothing in flight may
// always send one, so every paused connection has a POST to wake it:
// onPOST reads on when it finishes, whether the pause was the connection's
// own queue or the bridge-wide bound.
func (c *conn) backlogged() bool {
	if c.sess.Idle() {
		return false
	}
	s := c.l.srv
	n, b := c.sess.Queued()
	return n >= maxQueuedMessages || int64(b) >= maxQueuedFactor*s.cfg.MaxMessage ||
		s.cfg.MaxQueued > 0 && s.queued.Load() >= int64(s.cfg.MaxQueued)
}

// onPOST takes the answer to a message: its reply goes to the client, and
// the connection reads on (Session.Finish has sent the next POST).
func (c *conn) onPOST(r *bridge.Reply) {
	s := c.l.srv
	if c.phase == phOpen && (r.Subscribe != nil || r.Unsubscribe != nil) {
		// Before the reply: a publish that follows the reply reaches the
		// new subscriber.
		c.applyChannels(r.Subscribe, true)
		c.applyChannels(r.Unsubscribe, false)
	}
	if c.replying() && r.Outcome == bridge.OutcomeOK && len(r.Body) > 0 {
		op := ws.OpText
		if r.Binary {
			op = ws.OpBinary
		}
		c.send(outReply, op, r.Body)
		if d, ok := r.Added(); ok {
			s.metrics.added.Observe(d.Seconds())
		}
	}
	if c.flags&fCloseHeld != 0 && c.side != nil {
		if c.side.held--; c.side.held <= 0 {
			c.releaseClose() // every reply owed is sent
		}
	}
	// Room in the queue again: read on what backpressure left behind. This
	// POST is also what wakes a connection paused by the bridge-wide bound
	// (Config.MaxQueued) with nothing queued of its own, and what decodes
	// the bytes a closed socket left (onClose).
	if c.flags&fIntakeOver == 0 {
		if c.gc != nil {
			if c.gc.InboundBuffered() > 0 && c.readFrames() == gnet.Close {
				c.l.closeConn(c)
			}
		} else if c.side != nil && c.side.rest != nil {
			c.readRest()
		}
	}
	c.maybeDelete() // once the last POST is answered
}

// replying reports whether a POST's reply still goes to the client: the
// connection is open, or closing with its close frame held for the replies.
func (c *conn) replying() bool {
	return c.gc != nil && (c.phase == phOpen || c.flags&(fCloseHeld|fCloseSent) == fCloseHeld)
}

// outKind is what a frame to the client is. Every frame but the close goes
// through send; the kinds differ only in when -max-outbound is checked and
// in what is counted.
type outKind uint8

const (
	// outReply is a POST's reply. It is always written, and the limit
	// checked after: a reply is never dropped, a client over the limit is
	// closed as a slow consumer (1013).
	outReply outKind = iota
	// outPush is an admin push. One that would pass the limit is not
	// written: the client is closed as a slow consumer and the push
	// answered 503.
	outPush
	// outPong answers a ping; checked like a push (a client that sends and
	// does not read cannot grow gnet's outbound buffer with pings), and
	// not counted as a message.
	outPong
)

// send is the one path of a frame to the client: replies, pushes and
// pongs, with one slow-consumer check and one set of counters
// (messages_total{direction="out"}, the admin info's messages_out and
// bytes_out). A data frame goes out as its header and the caller's payload
// (Writev); a pong, at most 127 bytes, in one write. It reports whether the
// frame was written (a reply always is while the socket is open).
func (c *conn) send(kind outKind, op ws.OpCode, payload []byte) bool {
	l := c.l
	plain := len(payload)
	var rsv1 byte
	if c.more&fMoreDeflate != 0 && kind != outPong && plain >= l.srv.cfg.DeflateMin && c.gc != nil {
		// permessage-deflate: a message of -deflate-min bytes or more goes
		// compressed when that makes it smaller (RSV1 on its frame).
		if z := l.zs().deflate(payload, l.srv.cfg.DeflateLevel); z != nil {
			payload, rsv1 = z, 0x40
		}
	}
	hdr := protocol.AppendFrameHeader(l.wbuf[:0], op, true, len(payload))
	hdr[0] |= rsv1
	if kind != outReply {
		if c.gc == nil {
			return false
		}
		if c.gc.OutboundBuffered()+len(hdr)+len(payload) > l.srv.cfg.MaxOutbound {
			c.closeWith(crSlowConsumer, 0, "slow consumer")
			return false
		}
	}
	if kind == outPong {
		c.write(append(hdr, payload...))
		return true
	}
	c.msgsOut++
	c.bytesOut += uint64(plain)
	l.srv.metrics.messagesOut.Inc()
	l.iov[0] = hdr
	l.iov[1] = payload
	if c.gc != nil {
		_, _ = c.gc.Writev(l.iov[:])
	}
	l.iov[1] = nil
	if kind == outReply && c.gc != nil && c.phase == phOpen && c.gc.OutboundBuffered() > l.srv.cfg.MaxOutbound {
		c.closeWith(crSlowConsumer, 0, "slow consumer")
	}
	return true
}

// heartbeat pings an idle connection and closes one that did not answer.
func (c *conn) heartbeat() {
	l, s := c.l, c.l.srv
	if c.flags&fPingSent != 0 {
		c.closeWith(crHeartbeat, 0, "heartbeat timeout")
		return
	}
	if idle := l.since(c.lastRead); idle < s.pingTicks {
		l.wheel.schedule(c, l.now-idle+s.pingTicks)
		return
	}
	c.flags |= fPingSent
	c.write(protocol.AppendFrame(l.wbuf[:0], ws.OpPing, emptyPayload))
	if c.gc != nil {
		l.wheel.schedule(c, l.now+s.pongTicks)
	}
}

package engine

import (
	"bytes"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsbridge/wsbridge/protocol"
)

// closeWith starts a bridge-initiated close: the close frame, then the
// socket after the client's close reply or the close timeout (at once for a
// heartbeat timeout: see dropDead). Messages the client sent before it saw
// the close are still POSTed; the DELETE follows them. code 0 means
// closeCode(why).
//
// A close that is not the client's doing (a drain, a kick, a replacement)
// first waits for the replies to the messages already taken: the frame is
// held until the POSTs in the pipeline now are answered, for at most
// holdUntil. The connection is closing meanwhile (no pushes, no new
// owner), and its DELETE still follows its last POST.
func (c *conn) closeWith(why closeReason, code ws.StatusCode, reason string) {
	if c.phase != phOpen {
		return
	}
	if code == 0 {
		code = closeCode(why)
	}
	c.end(why, code, reason)
	switch why {
	case crHeartbeat, crReplaced:
		// A dead client will not answer, and a newcomer waits for this
		// DELETE: the lifecycle ends now.
		c.endIntake()
	}
	c.flags &^= fPingSent // the close's own timer rules from now on: a late frame must not move it
	if until := c.holdUntil(why); until > c.l.now && c.gc != nil && c.side != nil && !c.sess.Idle() {
		n, _ := c.sess.Queued()
		c.side.held = int32(n) + 1 // the one in flight and those queued behind it
		c.side.closeCode, c.side.closeReason = code, reason
		c.flags |= fCloseHeld
		c.l.wheel.schedule(c, until)
		return
	}
	if why == crHeartbeat {
		// Never held: a dead peer gets the frame and loses the socket.
		c.flags |= fCloseSent
		c.write(protocol.AppendClose(c.l.wbuf[:0], code, reason))
		if c.gc != nil {
			c.dropDead()
		}
		return
	}
	c.sendClose(code, reason)
}

// holdUntil returns the tick until which a close for why may wait for the
// replies in flight, or 0 when it does not wait. Closes caused by the
// client (protocol errors, slow consumer, heartbeat) do not wait. A kick
// or a replacement waits at most -backend-timeout, a POST's own bound (a
// newcomer waits for the DELETE, which follows those POSTs anyway). A
// drain's wait ends in time for the client's close reply within the
// window, and once the window is over nothing waits.
func (c *conn) holdUntil(why closeReason) int64 {
	s := c.l.srv
	if s.forced.Load() {
		return 0
	}
	switch why {
	case crKicked, crReplaced:
		return c.l.now + s.holdTicks
	case crDrain:
		return min(c.l.now+s.holdTicks, s.drainHold.Load())
	}
	return 0
}

// releaseClose sends a held close frame, unless the client's own close
// came first (it was answered then).
func (c *conn) releaseClose() {
	if c.flags&fCloseHeld == 0 {
		return
	}
	c.flags &^= fCloseHeld
	if c.flags&fCloseSent != 0 || c.side == nil {
		return
	}
	code, reason := c.side.closeCode, c.side.closeReason
	c.side.closeReason = ""
	c.sendClose(code, reason)
}

// sendClose writes the bridge's close frame and waits for the client's
// reply until the close timeout.
func (c *conn) sendClose(code ws.StatusCode, reason string) {
	c.flags |= fCloseSent
	c.write(protocol.AppendClose(c.l.wbuf[:0], code, reason))
	if c.gc == nil {
		return
	}
	if c.gc.OutboundBuffered() == 0 {
		// Nothing more will be sent: a FIN right after the close frame
		// lets the client finish the handshake at once.
		_ = unix.Shutdown(c.gc.Fd(), unix.SHUT_WR)
	}
	c.l.wheel.schedule(c, c.l.now+c.l.srv.closeTicks)
}

// dropDead closes the socket of a client that did not answer a ping, right
// after the close frame: a dead peer will not reply to it, so waiting the
// close timeout would only keep the socket. When the frame, or data before
// it, has not left for the peer (its receive window is full: it does not
// read), the connection is reset instead, so that the kernel neither keeps
// an orphaned socket with that data for minutes nor leaves the client
// without a sign of the close. Runs from a task, not OnTraffic.
func (c *conn) dropDead() {
	if c.gc.OutboundBuffered() > 0 || !allSent(c.gc.Fd()) {
		_ = unix.SetsockoptLinger(c.gc.Fd(), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	c.l.closeConn(c)
}

// end starts the end of the connection's lifecycle at the backend: the
// code and reason of the close are fixed, pushes and newcomers see it
// closing; once the intake has ended and the queue is sent, the DELETE.
func (c *conn) end(why closeReason, code ws.StatusCode, reason string) {
	if c.flags&fEnded != 0 {
		return
	}
	s, l := c.l.srv, c.l
	c.flags |= fEnded
	c.leaveChannels() // before its DELETE: a closing connection gets no channel message
	if c.phase == phOpen && c.openedAt != 0 {
		l.open.remove(c)
		s.metrics.connections.Dec()
		s.metrics.closed[why].Inc()
	}
	c.setPhase(phClosing)
	if c.flags&fAccepted == 0 {
		c.uncount()
		return
	}
	del := c.sess.Close(l.bl, c, int(code), reason)
	if c.side == nil {
		c.side = &side{}
	}
	c.side.del = del // beside the bytes onClose may have kept
	s.reg.ending(c)
	c.maybeDelete()
}

// endIntake records that no more messages will come (the client's close
// arrived, the socket is gone, or the decoder failed): a partial message is
// dropped and the DELETE may go once the queue is sent.
func (c *conn) endIntake() {
	if c.flags&fIntakeOver != 0 {
		return
	}
	c.flags |= fIntakeOver
	c.sess.DropPartial()
	c.dropCompressed()
	if c.side != nil {
		c.side.rest = nil
	}
	c.maybeDelete()
}

func (c *conn) maybeDelete() {
	const ready = fAccepted | fEnded | fIntakeOver
	if c.flags&(ready|fDeleteSent) != ready || !c.sess.Idle() {
		return
	}
	c.flags |= fDeleteSent
	c.sess.Delete(c.l.bl, &c.side.del)
	c.side = nil
}

// onDELETE: the lifecycle is over at the backend (answered or given up).
func (c *conn) onDELETE() {
	c.l.srv.owed.Add(-1)
	c.uncount()
	s := c.l.srv
	if s.cl != nil {
		s.cl.bus.Drop(c.clientID()) // before the Release callers hear of it
	}
	s.reg.deleted(c)
	if s.cl != nil {
		s.released(c.clientID())
	}
}

// onClose runs when the socket is gone (gnet.EventHandler.OnClose).
func (c *conn) onClose() {
	c.flags |= fTCPGone
	kept := c.readAtClose()
	c.gc = nil
	c.l.wheel.remove(c)
	if kept {
		// The intake ends once the kept bytes are decoded (readRest). The
		// drain has nothing to close.
		c.l.open.remove(c)
		return
	}
	switch c.phase {
	case phHeld:
		if c.l.srv.reg.leave(c) {
			c.side.get.Drop()
			c.side = nil
			c.uncount()
		}
		// Otherwise a grant is on its way; onGrant gives the slot back.
	case phOpen:
		c.end(crClientGone, closeCode(crClientGone), "")
	}
	// Nothing more can come in. phAuthorising and phTakeover still wait
	// for their GET or taskOpen, which see fTCPGone.
	c.endIntake()
}

// readAtClose decodes what an accepted connection's client sent before its
// socket closed (gnet's inbound buffer is still valid in OnClose), so that
// its messages are POSTed and its close frame's code reaches the DELETE.
// What the queue cannot take yet (the connection was paused) is kept in
// side.rest and decoded as POSTs finish: the pause's bounds hold as they
// did while the socket was open, and the copy is no larger than the
// socket's buffer was. It reports whether bytes were kept.
func (c *conn) readAtClose() bool {
	if c.flags&(fAccepted|fIntakeOver|fBroken|fDecoding) != fAccepted ||
		c.phase != phOpen && c.phase != phClosing || c.gc.InboundBuffered() == 0 {
		return false
	}
	c.readFrames() // the socket closes whatever it answers
	if c.flags&(fIntakeOver|fBroken) != 0 || c.gc.InboundBuffered() == 0 || c.sess.Assembling() || !c.backlogged() {
		return false // all decoded but, at most, a frame that will never be whole
	}
	buf, _ := c.gc.Peek(-1)
	if c.side == nil {
		c.side = &side{}
	}
	c.side.rest = bytes.Clone(buf)
	return true
}

// readRest decodes more of what onClose kept; once it is all decoded
// without a close frame, the connection ends as the socket did (1006).
func (c *conn) readRest() {
	c.readFrames()
	if c.flags&fIntakeOver != 0 {
		return
	}
	if c.side != nil && len(c.side.rest) > 0 && !c.sess.Assembling() && c.backlogged() {
		return // paused again: the next POST to finish reads on
	}
	if c.phase == phOpen {
		c.end(crClientGone, closeCode(crClientGone), "")
	}
	c.endIntake()
}

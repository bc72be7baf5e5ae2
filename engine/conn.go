package engine

import (
	"net/netip"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/protocol"
)

// phase is where a connection is in its life (see the package doc).
type phase uint8

const (
	phHandshake   phase = iota // reading the upgrade request
	phHeld                     // waiting for the ClientId's previous lifecycle to end
	phAuthorising              // GET in flight
	phTakeover                 // GET said ok; waiting for the replaced connection's DELETE
	phOpen                     // 101 sent; messages flow
	phClosing                  // no more messages taken; queued POSTs, then DELETE
)

// Connection flags.
const (
	fAccepted   uint16 = 1 << iota // the backend said ok: a DELETE is owed
	fCounted                       // counted in Server.wsConns (-max-conns)
	fTCPGone                       // OnClose ran; gc is nil
	fCloseSent                     // our close frame is written: nothing may follow
	fPingSent                      // a ping waits for any inbound frame
	fBroken                        // the decoder failed: inbound bytes are discarded
	fEnded                         // end ran: the lifecycle is over at the backend
	fDeleteSent                    // DELETE submitted
	fTimer                         // in the loop's timing wheel
	fListed                        // in the loop's open list
	fPending                       // counted in Server.pending (held, authorising or takeover)
	fIntakeOver                    // no more messages: the client's close came, or the socket is gone
	fDecoding                      // readFrames is running: an OnClose from a failed write in it must not decode again
	fProxyDone                     // the connection's first bytes were checked for a PROXY protocol header (and it was taken off)
	fProxySrc                      // the session's note is the PROXY protocol source address (ip:port)
	fCloseHeld                     // closing: our close frame waits for the replies in flight (side.held)
)

// More connection flags, in conn.more (flags is full; the byte fits in the
// padding after phase, so conn keeps its size class).
const (
	fMoreDeflate    uint8 = 1 << iota // permessage-deflate was negotiated
	fMoreJournaled                    // recorded in the journal: its Gone is owed once the DELETE is answered
	fMoreSubscribed                   // member of at least one channel: leave them all at the end
	fMoreAsked                        // cluster: the other nodes were asked which connection the GET replaces (askHolder)
)

// setPhase moves c to phase p. It is the one place a connection's phase
// changes:
//
//	handshake ─▶ held ─▶ authorising ─▶ open ─▶ closing
//	                          ╰─▶ takeover ─╯
//
// and any phase ─▶ closing (a refusal, a close, the socket gone). The
// flags record what has happened within a phase (fAccepted, fEnded, …).
func (c *conn) setPhase(p phase) { c.phase = p }

// side is what a connection needs only at the start of its life (until it
// is open) or at the end (while closing); an open connection has none.
type side struct {
	key     [24]byte    // Sec-WebSocket-Key (base64 of 16 bytes)
	offered string      // Sec-WebSocket-Protocol offered by the client
	chosen  string      // protocol the backend picked, if offered
	get     bridge.Held // the GET, until submitted
	del     bridge.Held // the DELETE, prepared when the close starts
	rest    []byte      // inbound bytes kept when the socket closed, decoded as the queue makes room

	// subscribe is the accepting GET's Wsbridge-Subscribe list, applied
	// once the connection is open.
	subscribe string

	// proxied is the client's address from a trusted proxy's PROXY
	// protocol header, until the request is parsed.
	proxied netip.AddrPort

	// A close frame held for the replies in flight (fCloseHeld): its code
	// and reason, and how many POSTs still to answer before it goes.
	closeReason string
	closeCode   ws.StatusCode
	held        int32
}

// conn is one client connection. All fields belong to the connection's
// loop (l); only sess's ids, which never change after the handshake, and
// l are read by the registry from other loops.
//
// An idle open connection is mostly this struct, so its size matters
// (TestIdleConnMemory): fields are ordered to leave no padding and fit the
// 208-byte size class, and what only the handshake or the close needs is in
// side.
type conn struct {
	gc   gnet.Conn // nil once the socket is closed
	l    *loop
	side *side
	sess bridge.Session // everything about the connection's backend calls

	dec protocol.Decoder

	tnext, tprev *conn // timing wheel
	onext, oprev *conn // loop's open list

	bytesIn, bytesOut uint64
	msgsIn, msgsOut   uint32
	twhen             uint32 // tick the timer is due, in 32 bits (see tick32)
	lastRead          uint32 // tick of the last inbound bytes, in 32 bits
	openedAt          uint32 // unix seconds (until 2106); 0 until open

	phase phase
	more  uint8 // more flags (fMore…): flags is full
	flags uint16
}

// clientID is the connection's ClientId; it never changes after the
// handshake.
func (c *conn) clientID() string { return c.sess.ClientID() }

// xff is the X-Forwarded-For value sent to the backend.
func (c *conn) xff() string { return c.sess.XFF() }

// remoteAddr is the client's ip:port as the socket or a trusted proxy's
// PROXY protocol header gave it ("" once the socket is gone).
func (c *conn) remoteAddr() string {
	if c.flags&fProxySrc != 0 {
		return c.sess.Note()
	}
	if c.gc == nil {
		return ""
	}
	return c.gc.RemoteAddr().String()
}

// s2b returns the bytes of s without copying; the result must not be
// modified.
func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// Complete hands a finished backend call to the connection's loop
// (bridge.Owner; runs on a bridge worker). The loop gives it to
// Session.Finish, which calls Finished.
func (c *conn) Complete(call *bridge.Call) {
	c.l.post(task{kind: taskCall, c: c, call: call})
}

// Finished is the one callback through which the bridge's answers reach
// the connection (bridge.Owner; on the loop, from Session.Finish). r's
// slices are valid until it returns.
func (c *conn) Finished(r bridge.Reply) {
	switch r.Method {
	case bridge.GET:
		c.onGET(&r)
	case bridge.POST:
		c.onPOST(&r)
	case bridge.DELETE:
		c.journalGone(&r)
		c.onDELETE()
	}
}

// write writes b to the socket. gnet may close the connection on a write
// error, running onClose before write returns: callers check c.gc after.
func (c *conn) write(b []byte) {
	if c.gc != nil {
		_, _ = c.gc.Write(b)
	}
}

// onTraffic handles readable bytes (gnet.EventHandler.OnTraffic).
func (c *conn) onTraffic() gnet.Action {
	c.lastRead = tick32(c.l.now)
	if c.flags&fPingSent != 0 {
		c.flags &^= fPingSent
		if c.phase == phOpen {
			// Alive: the next ping is due a whole interval from now, not
			// when the pong timeout would have expired. Once closing, the
			// timer is the close wait's and stays.
			c.l.wheel.schedule(c, c.l.now+c.l.srv.pingTicks)
		}
	}
	switch c.phase {
	case phHandshake:
		return c.readHandshake()
	case phOpen, phClosing:
		return c.readFrames()
	}
	// A client may not send frames before the 101; tolerate a little
	// (it will be read once open) but not a flood.
	if c.gc.InboundBuffered() > earlyBytesLimit {
		return gnet.Close
	}
	return gnet.None
}

// onTimer runs when the connection's timer fires.
func (c *conn) onTimer() {
	l, s := c.l, c.l.srv
	switch c.phase {
	case phHandshake:
		c.refuse(refHandshakeTimeout)
		l.closeConn(c)
	case phHeld:
		if s.reg.leave(c) {
			c.side.get.Drop()
			c.side = nil
			c.uncount()
			c.refuse(refHoldTimeout)
			l.closeConn(c)
		}
	case phOpen:
		c.heartbeat()
	case phClosing:
		if c.flags&fCloseHeld != 0 {
			c.releaseClose() // the replies took too long
			return
		}
		l.closeConn(c)
	}
}

package engine

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

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
	fProxySrc                      // names ends with NUL and the PROXY protocol source address (ip:port)
	fCloseHeld                     // closing: our close frame waits for the replies in flight (side.held)
)

// side is what a connection needs only at the start of its life (until it
// is open) or at the end (while closing); an open connection has none.
type side struct {
	key     [24]byte     // Sec-WebSocket-Key (base64 of 16 bytes)
	offered string       // Sec-WebSocket-Protocol offered by the client
	chosen  string       // protocol the backend picked, if offered
	get     *bridge.Call // the GET, until submitted
	del     *bridge.Call // the DELETE, prepared when the close starts
	rest    []byte       // inbound bytes kept when the socket closed, decoded as the queue makes room

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
// loop (l); only id, names and idLen, which never change after the
// handshake, and l are read by the registry from other loops.
//
// An idle open connection is mostly this struct, so its size matters
// (TestIdleConnMemory): fields are ordered to leave no padding and fit the
// 208-byte size class, and what only the handshake or the close needs is in
// side.
type conn struct {
	gc    gnet.Conn // nil once the socket is closed
	l     *loop
	side  *side
	call  *bridge.Call // the message being assembled
	names string       // the ClientId, then the X-Forwarded-For value sent to the backend, then (fProxySrc) NUL and the PROXY source ip:port: one allocation
	id    uint64       // Wsbridge-Connection-Id sequence number

	dec  protocol.Decoder
	pipe bridge.Pipeline

	tnext, tprev *conn // timing wheel
	onext, oprev *conn // loop's open list

	bytesIn, bytesOut uint64
	msgsIn, msgsOut   uint32
	twhen             uint32 // tick the timer is due, in 32 bits (see tick32)
	lastRead          uint32 // tick of the last inbound bytes, in 32 bits
	openedAt          uint32 // unix seconds (until 2106); 0 until open

	idLen uint8 // len(ClientId) in names
	phase phase
	flags uint16
}

// A ClientId's length fits conn.idLen.
const _ = uint8(protocol.MaxClientIDLen)

// clientID is the connection's ClientId; it never changes after the
// handshake.
func (c *conn) clientID() string { return c.names[:c.idLen] }

// xff is the X-Forwarded-For value sent to the backend.
func (c *conn) xff() string {
	x := c.names[c.idLen:]
	if c.flags&fProxySrc != 0 {
		x = x[:strings.IndexByte(x, 0)]
	}
	return x
}

// remoteAddr is the client's ip:port as the socket or a trusted proxy's
// PROXY protocol header gave it ("" once the socket is gone).
func (c *conn) remoteAddr() string {
	if c.flags&fProxySrc != 0 {
		x := c.names[c.idLen:]
		return x[strings.IndexByte(x, 0)+1:]
	}
	if c.gc == nil {
		return ""
	}
	return c.gc.RemoteAddr().String()
}

// s2b returns the bytes of s without copying; the result must not be
// modified.
func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func (c *conn) ids() bridge.Ids {
	return bridge.Ids{ClientID: s2b(c.clientID()), ConnID: c.l.connID(c.id), XFF: s2b(c.xff())}
}

// connID formats id into the loop's scratch buffer; valid until the next
// call on this loop.
func (l *loop) connID(id uint64) []byte {
	l.idbuf = l.srv.appendConnID(l.idbuf[:0], id)
	return l.idbuf
}

// Complete hands a finished backend call to the connection's loop
// (bridge.Completer; runs on a bridge worker).
func (c *conn) Complete(call *bridge.Call) {
	c.l.post(task{kind: taskCall, c: c, call: call})
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

// earlyBytesLimit bounds what a client may send before its 101.
const earlyBytesLimit = 64 << 10

func (c *conn) readHandshake() gnet.Action {
	s, l := c.l.srv, c.l
	buf, _ := c.gc.Peek(-1)
	if c.flags&fProxyDone == 0 {
		var act gnet.Action
		if buf, act = c.readProxy(buf); buf == nil {
			return act
		}
	}
	n, err := protocol.ParseRequest(buf, &l.req)
	if err == protocol.ErrIncomplete {
		return gnet.None
	}
	if err != nil {
		var he *protocol.HTTPError
		if !errors.As(err, &he) {
			he = protocol.ErrMalformed
		}
		s.metrics.refused[refuseReasonForStatus(he.Status)].Inc()
		c.phase = phClosing
		c.write(protocol.AppendRefusal(l.wbuf[:0], he))
		return gnet.Close
	}
	// r aliases buf until the head is discarded, and buf may be a pooled
	// copy (a head that arrived in more than one read) that Discard hands
	// to a pool shared by every loop: whatever outlives this function is
	// copied from r before the Discard below, never after.
	r := &l.req
	if !s.originAllowed(r.Origin) {
		return c.refuse(rrOrigin, 403, "origin not allowed\n")
	}
	if s.refuseUpgrades.Load() {
		return c.refuse(rrDraining, 503, "shutting down, retry shortly\n")
	}
	if s.cfg.MaxConns > 0 && s.wsConns.Load() >= int64(s.cfg.MaxConns) {
		return c.refuse(rrMaxConns, 503, "too many connections\n")
	}
	if !s.admit() {
		return c.refuse(rrAdmission, 503, "too many new connections, retry shortly\n")
	}
	if s.cfg.MaxPending > 0 && s.pending.Load() >= int64(s.cfg.MaxPending) {
		return c.refuse(rrAdmission, 503, "too many upgrades waiting for the backend, retry shortly\n")
	}
	if s.backend.Shedding() {
		return c.refuse(rrCircuitOpen, 503, "backend unavailable, retry shortly\n")
	}

	c.id = s.nextID()
	names := append(l.idbuf[:0], r.ClientID...)
	peer := addrIP(c.gc.RemoteAddr())
	proxied := c.side != nil && c.side.proxied.IsValid()
	if proxied {
		peer = c.side.proxied.Addr()
	}
	names = s.forwardedFor(names, peer, r.XForwardedFor)
	if proxied {
		names = append(names, 0)
		names = c.side.proxied.AppendTo(names)
		c.flags |= fProxySrc
	}
	c.names, c.idLen = string(names), uint8(len(r.ClientID))
	l.idbuf = names[:0] // keep what it grew to
	switch c.ipAcquire() {
	case ipTooManyConns:
		return c.refuse(rrPerIP, 429, "too many connections from this address, retry later\n")
	case ipTooManyPending:
		return c.refuse(rrPerIP, 429, "too many upgrades from this address waiting for the backend, retry shortly\n")
	}
	hs := c.side // may hold the PROXY source
	if hs == nil {
		hs = &side{}
	}
	copy(hs.key[:], r.Key)
	if len(r.Protocols) > 0 {
		hs.offered = string(r.Protocols)
	}
	call := bridge.AcquireCall()
	call.Owner = c
	s.backend.PrepareGET(call, c.ids(), r.Query, nil)
	for i := range r.NForward {
		call.Req.Header.AddBytesKV(r.Forward[i].Name, r.Forward[i].Value)
	}
	// Everything is copied (names, key, protocols, the GET's target and
	// headers): only now may the head's bytes go.
	_, _ = c.gc.Discard(n)
	hs.get = call
	c.side = hs
	c.flags |= fCounted | fPending
	s.wsConns.Add(1)
	s.pending.Add(1)
	c.phase = phHeld
	l.wheel.remove(c)
	if granted, replaces, full := s.reg.arrive(c); full {
		bridge.ReleaseCall(hs.get)
		c.side = nil
		c.uncount()
		return c.refuse(rrClientIDBusy, 429, "too many upgrades waiting for this client id, retry shortly\n")
	} else if granted {
		c.startGET(replaces)
	} else {
		l.wheel.schedule(c, l.now+s.holdTicks)
	}
	return gnet.None
}

// readProxy takes a PROXY protocol header (v1 or v2) off the start of a
// connection from a trusted proxy; its source address becomes the client's
// (the X-Forwarded-For sent to the backend, the admin info's remote_addr,
// the per-address limits). A LOCAL or UNKNOWN header keeps the socket's
// peer. A header from a peer outside -trusted-proxies, or a malformed one,
// is answered with 400 and the socket closed: it is never believed. rest
// is what follows a header (buf itself when there is none), to parse as
// the request; when it is nil, readHandshake returns act.
func (c *conn) readProxy(buf []byte) (rest []byte, act gnet.Action) {
	s := c.l.srv
	trusted := len(s.cfg.TrustedProxies) > 0 && s.trusted(addrIP(c.gc.RemoteAddr()))
	var h protocol.ProxyHeader
	n, err := protocol.ParseProxy(buf, &h)
	switch {
	case err == protocol.ErrNoProxy:
		c.flags |= fProxyDone
		return buf, gnet.None
	case !trusted && protocol.HasProxySignature(buf) || err != nil && err != protocol.ErrProxyIncomplete:
		s.metrics.refused[rrProxyHeader].Inc()
		c.phase = phClosing
		c.write(protocol.AppendRefusal(c.l.wbuf[:0], protocol.ErrProxyHeader))
		return nil, gnet.Close
	case err == protocol.ErrProxyIncomplete:
		return nil, gnet.None
	}
	c.flags |= fProxyDone
	_, _ = c.gc.Discard(n) // h holds no reference to buf
	if h.Source.IsValid() {
		c.side = &side{proxied: h.Source}
	}
	if len(buf) == n {
		return nil, gnet.None // the request comes later
	}
	rest, _ = c.gc.Peek(-1) // buf is no longer valid after Discard
	return rest, gnet.None
}

// refuseReasonForStatus maps a parse refusal's status to its reason.
func refuseReasonForStatus(status int) refuseReason {
	switch status {
	case 426:
		return rrNotWebSocket
	case 431:
		return rrTooLarge
	}
	return rrBadRequest
}

// refuse answers a parsed request that gets no GET (403, 429 or 503) and
// closes. Only for phHandshake.
func (c *conn) refuse(why refuseReason, status int, body string) gnet.Action {
	s := c.l.srv
	s.metrics.refused[why].Inc()
	c.phase = phClosing
	var extra []protocol.Header
	if status == 503 || status == 429 {
		extra = s.retryAfter()
	}
	c.write(protocol.AppendResponse(c.l.wbuf[:0], status, nil, extra, s2b(body)))
	return gnet.Close
}

// startGET submits the held GET; replaces is the open connection it would
// replace, or 0.
func (c *conn) startGET(replaces uint64) {
	c.phase = phAuthorising
	c.l.wheel.remove(c)
	call := c.side.get
	c.side.get = nil
	if replaces != 0 {
		call.Req.Header.SetCanonical(hdrReplaces, c.l.connID(replaces))
	}
	c.l.srv.backend.Submit(call)
}

var hdrReplaces = []byte("Wsbridge-Replaces")

// onGrant runs when the registry hands the ClientId to a held connection.
func (c *conn) onGrant(replaces uint64) {
	if c.phase == phHeld && c.flags&fTCPGone == 0 {
		c.startGET(replaces)
		return
	}
	// The client left while held (or its hold timed out as the grant
	// came): give the slot back without asking the backend.
	if c.side != nil && c.side.get != nil {
		bridge.ReleaseCall(c.side.get)
		c.side.get = nil
	}
	c.uncount()
	c.l.srv.reg.refused(c)
	if c.phase == phHeld && c.gc != nil {
		c.phase = phClosing
		c.respondRefusal(rrHoldTimeout, 503, nil, "previous connection still closing, retry shortly\n", nil)
	}
}

func (c *conn) uncount() {
	c.unpend()
	if c.flags&fCounted != 0 {
		c.flags &^= fCounted
		c.l.srv.wsConns.Add(-1)
		c.ipRelease(true, false)
	}
}

// unpend ends the connection's time as a pending upgrade.
func (c *conn) unpend() {
	if c.flags&fPending != 0 {
		c.flags &^= fPending
		c.l.srv.pending.Add(-1)
		c.ipRelease(false, true)
	}
}

func (c *conn) onCall(call *bridge.Call) {
	switch call.Method {
	case bridge.GET:
		c.onGET(call)
	case bridge.POST:
		c.onPOST(call)
	case bridge.DELETE:
		c.onDELETE(call)
	}
}

var (
	hdrWWWAuthenticate = []byte("WWW-Authenticate")
	hdrProtocol        = []byte("Sec-WebSocket-Protocol")
	hdrRetryAfter      = []byte("Retry-After")
)

// maxRelayedBody is how much of a backend refusal's body reaches the client.
const maxRelayedBody = 1 << 10

func (c *conn) onGET(call *bridge.Call) {
	defer bridge.ReleaseCall(call)
	s := c.l.srv
	if call.Outcome == bridge.OutcomeOK {
		c.flags |= fAccepted
		s.owed.Add(1)
		if p := call.Resp.Header.PeekBytes(hdrProtocol); len(p) > 0 && protocol.ProtocolOffered(s2b(c.side.offered), p) {
			c.side.chosen = string(p)
		}
		if s.reg.accepted(c) == roleOwner {
			c.open()
		} else {
			c.phase = phTakeover
		}
		return
	}
	c.uncount()
	s.reg.refused(c)
	if c.gc == nil {
		c.phase = phClosing
		return
	}
	c.phase = phClosing
	switch call.Outcome {
	case bridge.OutcomeRefused:
		status := call.Resp.StatusCode()
		body := call.Resp.Body()
		if status >= 200 && status < 300 {
			status = 403
		}
		if len(body) > maxRelayedBody {
			body = body[:maxRelayedBody]
		}
		var extra []protocol.Header
		if status == 401 {
			if v := call.Resp.Header.PeekBytes(hdrWWWAuthenticate); len(v) > 0 {
				extra = []protocol.Header{{Name: hdrWWWAuthenticate, Value: v}}
			}
		}
		c.respondRefusal(rrBackendRefused, status, call.Resp.Header.ContentType(), "", body, extra...)
	case bridge.OutcomeTimeout:
		c.respondRefusal(rrBackendTimeout, 504, nil, "backend timeout\n", nil)
	case bridge.OutcomeShed:
		c.respondRefusal(rrCircuitOpen, 503, nil, "backend unavailable, retry shortly\n", nil)
	default:
		c.respondRefusal(rrBackendError, 502, nil, "backend error\n", nil)
	}
}

// respondRefusal writes an HTTP refusal for a request that reached the
// registry, then closes the socket.
func (c *conn) respondRefusal(why refuseReason, status int, ctype []byte, text string, body []byte, extra ...protocol.Header) {
	s := c.l.srv
	s.metrics.refused[why].Inc()
	if body == nil {
		body = s2b(text)
	}
	if status == 503 {
		extra = append(extra, s.retryAfter()...)
	}
	if len(ctype) == 0 {
		ctype = nil
	}
	c.write(protocol.AppendResponse(c.l.wbuf[:0], status, ctype, extra, body))
	c.l.closeConn(c)
}

// open sends the 101 and starts the message flow.
func (c *conn) open() {
	l, s := c.l, c.l.srv
	hs := c.side
	c.side = nil
	c.phase = phOpen
	c.unpend()
	if c.gc == nil {
		c.end(crClientGone, closeCode(crClientGone), "")
		c.endIntake()
		return
	}
	c.openedAt = uint32(time.Now().Unix())
	c.lastRead = tick32(l.now)
	l.open.push(c)
	s.metrics.opened.Inc()
	s.metrics.connections.Inc()
	if s.pingTicks > 0 {
		l.wheel.schedule(c, l.now+s.pingTicks)
	}
	c.write(protocol.AppendSwitching(l.wbuf[:0], hs.key[:], s2b(hs.chosen)))
	if c.gc != nil && c.gc.InboundBuffered() > 0 {
		if c.readFrames() == gnet.Close {
			l.closeConn(c)
		}
	}
}

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
		if c.call == nil && c.backlogged() {
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
			c.dropInbound()
			c.flags |= fBroken
			code := ws.StatusProtocolError
			var ce *protocol.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			c.closeWith(closeReasonFor(code), code, err.Error())
			c.endIntake()
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
			c.bytesIn += uint64(len(ev.Payload))
			if ev.First {
				c.call = bridge.AcquireCall()
				c.call.Owner = c
				s.backend.PreparePOST(c.call, c.ids(), ev.OpCode == ws.OpBinary)
			}
			c.call.Req.AppendBody(ev.Payload)
			if ev.Fin {
				m := c.call
				c.call = nil
				c.msgsIn++
				s.metrics.messagesIn.Inc()
				c.enqueue(m)
			}
		case protocol.EventPing:
			if c.flags&fCloseSent == 0 {
				c.sendPong(ev.Payload)
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
	if c.pipe.Idle() {
		return false
	}
	s := c.l.srv
	n, b := c.pipe.Queued()
	return n >= maxQueuedMessages || int64(b) >= maxQueuedFactor*s.cfg.MaxMessage ||
		s.cfg.MaxQueued > 0 && s.queued.Load() >= int64(s.cfg.MaxQueued)
}

func (c *conn) enqueue(m *bridge.Call) {
	s := c.l.srv
	if c.pipe.Push(m) {
		m.Received = bridge.Now()
		s.backend.Submit(m)
		return
	}
	s.queued.Add(1)
}

func (c *conn) onPOST(call *bridge.Call) {
	s := c.l.srv
	if c.replying() && call.Outcome == bridge.OutcomeOK {
		if body := call.Resp.Body(); len(body) > 0 {
			op := ws.OpText
			if bridge.IsBinary(&call.Resp) {
				op = ws.OpBinary
			}
			c.sendFrame(op, body)
			s.metrics.messagesOut.Inc()
			if call.Answered != 0 && call.Received != 0 {
				added := bridge.Now() - call.Received - (call.Answered - call.Sent)
				s.metrics.added.Observe(float64(added) / 1e9)
			}
		}
	}
	bridge.ReleaseCall(call)
	if c.flags&fCloseHeld != 0 && c.side != nil {
		if c.side.held--; c.side.held <= 0 {
			c.releaseClose() // every reply owed is sent
		}
	}
	next := c.pipe.Done()
	if next != nil {
		s.queued.Add(-1)
		next.Received = bridge.Now()
		s.backend.Submit(next)
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
	if next == nil {
		c.maybeDelete()
	}
}

// replying reports whether a POST's reply still goes to the client: the
// connection is open, or closing with its close frame held for the replies.
func (c *conn) replying() bool {
	return c.gc != nil && (c.phase == phOpen || c.flags&(fCloseHeld|fCloseSent) == fCloseHeld)
}

// sendFrame writes one data frame and enforces the outbound limit.
func (c *conn) sendFrame(op ws.OpCode, payload []byte) {
	l := c.l
	l.iov[0] = protocol.AppendFrameHeader(l.wbuf[:0], op, true, len(payload))
	l.iov[1] = payload
	c.msgsOut++
	c.bytesOut += uint64(len(payload))
	if c.gc != nil {
		_, _ = c.gc.Writev(l.iov[:])
	}
	l.iov[1] = nil
	c.checkOutbound()
}

// sendPong answers a ping. A pong counts against -max-outbound like every
// frame towards the client: one that would not fit means the client sends
// and does not read, and it is closed as a slow consumer (1013) instead of
// gnet's outbound buffer growing with every ping.
func (c *conn) sendPong(payload []byte) {
	if c.gc == nil {
		return
	}
	if c.gc.OutboundBuffered()+2+len(payload) > c.l.srv.cfg.MaxOutbound {
		c.closeWith(crSlowConsumer, 0, "slow consumer")
		return
	}
	c.write(protocol.AppendFrame(c.l.wbuf[:0], ws.OpPong, payload))
}

func (c *conn) checkOutbound() {
	if c.gc != nil && c.phase == phOpen && c.gc.OutboundBuffered() > c.l.srv.cfg.MaxOutbound {
		c.closeWith(crSlowConsumer, 0, "slow consumer")
	}
}

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
	if until := c.holdUntil(why); until > c.l.now && c.gc != nil && c.side != nil && !c.pipe.Idle() {
		n, _ := c.pipe.Queued()
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
	if c.phase == phOpen && c.openedAt != 0 {
		l.open.remove(c)
		s.metrics.connections.Dec()
		s.metrics.closed[why].Inc()
	}
	c.phase = phClosing
	if c.flags&fAccepted == 0 {
		c.uncount()
		return
	}
	del := bridge.AcquireCall()
	del.Owner = c
	s.backend.PrepareDELETE(del, c.ids(), int(code), reason)
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
	if c.call != nil {
		bridge.ReleaseCall(c.call)
		c.call = nil
	}
	if c.side != nil {
		c.side.rest = nil
	}
	c.maybeDelete()
}

func (c *conn) maybeDelete() {
	const ready = fAccepted | fEnded | fIntakeOver
	if c.flags&(ready|fDeleteSent) != ready || !c.pipe.Idle() {
		return
	}
	c.flags |= fDeleteSent
	call := c.side.del
	c.side = nil
	c.l.srv.backend.Submit(call)
}

func (c *conn) onDELETE(call *bridge.Call) {
	bridge.ReleaseCall(call)
	c.l.srv.owed.Add(-1)
	c.uncount()
	c.l.srv.reg.deleted(c)
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
			bridge.ReleaseCall(c.side.get)
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
	if c.flags&(fIntakeOver|fBroken) != 0 || c.gc.InboundBuffered() == 0 || c.call != nil || !c.backlogged() {
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
	if c.side != nil && len(c.side.rest) > 0 && c.call == nil && c.backlogged() {
		return // paused again: the next POST to finish reads on
	}
	if c.phase == phOpen {
		c.end(crClientGone, closeCode(crClientGone), "")
	}
	c.endIntake()
}

// onTimer runs when the connection's timer fires.
func (c *conn) onTimer() {
	l, s := c.l, c.l.srv
	switch c.phase {
	case phHandshake:
		s.metrics.refused[rrHandshakeTimeout].Inc()
		c.phase = phClosing
		c.write(protocol.AppendResponse(l.wbuf[:0], 408, nil, nil, s2b("request not received in time\n")))
		l.closeConn(c)
	case phHeld:
		if s.reg.leave(c) {
			bridge.ReleaseCall(c.side.get)
			c.side = nil
			c.uncount()
			c.phase = phClosing
			c.respondRefusal(rrHoldTimeout, 503, nil, "previous connection still closing, retry shortly\n", nil)
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

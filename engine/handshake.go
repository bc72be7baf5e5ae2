package engine

import (
	"errors"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/protocol"
)

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
		c.refuseMalformed(he)
		return gnet.Close
	}
	// r aliases buf until the head is discarded, and buf may be a pooled
	// copy (a head that arrived in more than one read) that Discard hands
	// to a pool shared by every loop: whatever outlives this function is
	// copied from r before the Discard below, never after.
	r := &l.req
	var ref *refusal
	switch {
	case !s.originAllowed(r.Origin):
		ref = &refOrigin
	case s.refuseUpgrades.Load():
		ref = &refDraining
	case s.cfg.MaxConns > 0 && s.wsConns.Load() >= int64(s.cfg.MaxConns):
		ref = &refMaxConns
	case !s.admit():
		ref = &refAcceptRate
	case s.cfg.MaxPending > 0 && s.pending.Load() >= int64(s.cfg.MaxPending):
		ref = &refMaxPending
	case s.backend.Shedding():
		ref = &refCircuitOpen
	case s.jbroken.Load():
		ref = &refJournal
	}
	if ref != nil {
		c.refuse(*ref)
		return gnet.Close
	}

	peer := addrIP(c.gc.RemoteAddr())
	proxied := c.side != nil && c.side.proxied.IsValid()
	if proxied {
		peer = c.side.proxied.Addr()
	}
	xff := s.forwardedFor(l.idbuf[:0], peer, r.XForwardedFor)
	var note []byte
	if proxied {
		note = c.side.proxied.AppendTo(xff[len(xff):])
		c.flags |= fProxySrc
	}
	c.sess.Begin(s.nextID(), r.ClientID, xff, note)
	l.idbuf = xff[:0] // keep what it grew to
	switch c.ipAcquire() {
	case ipTooManyConns:
		c.refuse(refPerIPConns)
		return gnet.Close
	case ipTooManyPending:
		c.refuse(refPerIPPending)
		return gnet.Close
	}
	hs := c.side // may hold the PROXY source
	if hs == nil {
		hs = &side{}
	}
	copy(hs.key[:], r.Key)
	if len(r.Protocols) > 0 {
		hs.offered = string(r.Protocols)
	}
	if s.cfg.Deflate && r.Deflate {
		c.more |= fMoreDeflate
		c.dec.Deflate = true
	}
	hs.get = c.sess.Upgrade(l.bl, c, r.Query, r.Forward[:r.NForward])
	// Everything is copied (ids, key, protocols, the GET's target and
	// headers): only now may the head's bytes go.
	_, _ = c.gc.Discard(n)
	c.side = hs
	c.flags |= fCounted | fPending
	s.wsConns.Add(1)
	s.pending.Add(1)
	c.setPhase(phHeld)
	l.wheel.remove(c)
	if granted, replaces, full := s.reg.arrive(c); full {
		hs.get.Drop()
		c.side = nil
		c.uncount()
		c.refuse(refClientIDBusy)
		return gnet.Close
	} else if granted {
		c.startGET(replaces)
	} else {
		l.wheel.schedule(c, l.now+s.holdTicks)
		s.replay.hurry(c.clientID())
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
		c.refuseMalformed(protocol.ErrProxyHeader)
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

// refuse answers an upgrade with r (see the table in reason.go) and marks
// the connection closing; the caller closes the socket (gnet.Close from
// OnTraffic, closeConn from a task).
func (c *conn) refuse(r refusal) { c.refuseWith(r, r.status, nil, s2b(r.body), nil) }

// refuseWith writes refusal r with status (r.status but for a relayed
// backend refusal), Content-Type (nil for the default), body and extra
// headers: the one place an HTTP refusal is written, but protocol's answer
// to a malformed request (refuseMalformed). Retry-After goes with r's 503
// and 429.
func (c *conn) refuseWith(r refusal, status int, ctype, body []byte, extra []protocol.Header) {
	s := c.l.srv
	s.metrics.refused[r.why].Inc()
	c.setPhase(phClosing)
	if r.status == 503 || r.status == 429 {
		extra = append(extra, s.retryAfter()...)
	}
	if len(ctype) == 0 {
		ctype = nil
	}
	c.write(protocol.AppendResponse(c.l.wbuf[:0], status, ctype, extra, body))
}

// refuseMalformed answers a request or PROXY header protocol could not
// take with protocol's own answer, and marks the connection closing.
func (c *conn) refuseMalformed(he *protocol.HTTPError) {
	why := refuseReasonForStatus(he.Status)
	if he == protocol.ErrProxyHeader {
		why = rrProxyHeader
	}
	c.l.srv.metrics.refused[why].Inc()
	c.setPhase(phClosing)
	c.write(protocol.AppendRefusal(c.l.wbuf[:0], he))
}

// startGET submits the held GET; replaces is the open connection it would
// replace, or 0.
func (c *conn) startGET(replaces uint64) {
	if replaces == 0 && c.l.srv.cl != nil && c.more&fMoreAsked == 0 {
		c.askHolder()
		return
	}
	c.setPhase(phAuthorising)
	c.l.wheel.remove(c)
	c.sess.Authorize(c.l.bl, &c.side.get, replaces)
}

// onGrant runs when the registry hands the ClientId to a held connection.
func (c *conn) onGrant(replaces uint64) {
	if c.phase == phHeld && c.flags&fTCPGone == 0 {
		c.startGET(replaces)
		return
	}
	// The client left while held (or its hold timed out as the grant
	// came): give the slot back without asking the backend.
	if c.side != nil {
		c.side.get.Drop()
	}
	c.uncount()
	c.l.srv.reg.refused(c)
	if c.phase == phHeld && c.gc != nil {
		c.refuse(refHoldTimeout)
		c.l.closeConn(c)
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

var (
	hdrWWWAuthenticate = []byte("WWW-Authenticate")
	hdrRetryAfter      = []byte("Retry-After")
)

// maxRelayedBody is how much of a backend refusal's body reaches the client.
const maxRelayedBody = 1 << 10

// onGET takes the backend's answer to the upgrade: the 101 (now, or once
// the connection it replaces is gone) or a refusal.
func (c *conn) onGET(r *bridge.Reply) {
	s := c.l.srv
	if r.Outcome == bridge.OutcomeOK {
		c.flags |= fAccepted
		s.owed.Add(1)
		if p := r.Protocol; len(p) > 0 && protocol.ProtocolOffered(s2b(c.side.offered), p) {
			c.side.chosen = string(p)
		}
		if len(r.Subscribe) > 0 {
			c.side.subscribe = string(r.Subscribe)
		}
		if s.j != nil && c.record() {
			return // journalRelease goes on once the record is written
		}
		c.accept()
		return
	}
	c.uncount()
	s.reg.refused(c)
	if c.gc == nil {
		c.setPhase(phClosing)
		return
	}
	switch r.Outcome {
	case bridge.OutcomeRefused:
		status, body := r.Status, r.Body
		if status >= 200 && status < 300 {
			status = refusalBackend.status
		}
		if len(body) > maxRelayedBody {
			body = body[:maxRelayedBody]
		}
		var extra []protocol.Header
		if status == 401 && len(r.Challenge) > 0 {
			extra = []protocol.Header{{Name: hdrWWWAuthenticate, Value: r.Challenge}}
		}
		c.refuseWith(refusalBackend, status, r.ContentType, body, extra)
	case bridge.OutcomeTimeout:
		c.refuse(refBackendTimeout)
	case bridge.OutcomeShed:
		c.refuse(refCircuitOpen)
	default:
		c.refuse(refBackendError)
	}
	c.l.closeConn(c)
}

// accept goes on with an accepted GET: the 101 now, or once the
// connection it replaces is gone.
func (c *conn) accept() {
	s := c.l.srv
	var ro role
	if s.cl != nil {
		ro = c.claimGET() // one connection per ClientId in the cluster (cluster.go)
	} else {
		ro = s.reg.accepted(c)
	}
	if ro == roleOwner {
		c.open()
	} else {
		c.setPhase(phTakeover)
	}
}

// open sends the 101 and starts the message flow.
func (c *conn) open() {
	l, s := c.l, c.l.srv
	hs := c.side
	c.side = nil
	c.setPhase(phOpen)
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
	c.write(protocol.AppendSwitchingDeflate(l.wbuf[:0], hs.key[:], s2b(hs.chosen), c.more&fMoreDeflate != 0))
	if hs.subscribe != "" && c.gc != nil {
		c.applyChannels(s2b(hs.subscribe), true)
	}
	if c.gc != nil && c.gc.InboundBuffered() > 0 {
		if c.readFrames() == gnet.Close {
			l.closeConn(c)
		}
	}
}

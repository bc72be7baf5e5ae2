package engine

import (
	"github.com/panjf2000/gnet/v2"

	"github.com/wsbridge/wsbridge/protocol"
)

// handler is the gnet.EventHandler. Every method runs on an event loop.
type handler struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.s.eng = eng
	close(h.s.booted)
	return gnet.None
}

// fdLimitResponse is refFDLimit, written before the request is read: with
// a fixed Retry-After, built once.
var fdLimitResponse = protocol.AppendResponse(nil, refFDLimit.status, nil,
	[]protocol.Header{{Name: hdrRetryAfter, Value: []byte("5")}}, []byte(refFDLimit.body))

func (h *handler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	s := h.s
	n := s.tcpConns.Add(1)
	l := s.loopFor(gc)
	c := &conn{gc: gc, l: l, lastRead: tick32(l.now)}
	c.dec.MaxMessage = s.cfg.MaxMessage
	gc.SetContext(c)
	if s.cfg.FDBudget > 0 && n > int64(s.cfg.FDBudget) {
		s.metrics.refused[refFDLimit.why].Inc()
		c.setPhase(phClosing)
		return fdLimitResponse, gnet.Close
	}
	l.wheel.schedule(c, l.now+s.handshakeTicks)
	return nil, gnet.None
}

func (h *handler) OnTraffic(gc gnet.Conn) gnet.Action {
	return gc.Context().(*conn).onTraffic()
}

func (h *handler) OnClose(gc gnet.Conn, _ error) gnet.Action {
	h.s.tcpConns.Add(-1)
	if c, ok := gc.Context().(*conn); ok {
		c.onClose()
	}
	return gnet.None
}

package engine

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

type adminKind uint8

const (
	adminPush adminKind = iota
	adminKick
	adminInfo
	adminSubscribe   // reason holds the channel name
	adminUnsubscribe // reason holds the channel name
)

// adminReq carries one admin call to a connection's loop and its answer
// back. Whoever claims it first owns it: the loop, which runs it, fills in
// the answer and sends on done once; or the admin goroutine when it stops
// waiting (adminWait), which answers 503 and never hands the request back
// to the pool, since the loop's mailbox still holds it.
type adminReq struct {
	claim   atomic.Uint32 // reqWaiting, then reqRun or reqGivenUp
	kind    adminKind
	payload []byte // push: the message, copied
	binary  bool   // push: a binary message, not text
	code    ws.StatusCode
	reason  string
	info    Info
	status  int
	done    chan struct{}
	timer   *time.Timer
}

// adminReq.claim values.
const (
	reqWaiting uint32 = iota
	reqRun            // the loop runs it
	reqGivenUp        // the admin goroutine stopped waiting: the loop skips it
)

var adminPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &adminReq{done: make(chan struct{}, 1), timer: t}
}}

// Info is what GET /<id> on the admin API returns.
type Info struct {
	ID           string `json:"id"`
	ConnectionID string `json:"connection_id"`
	RemoteAddr   string `json:"remote_addr"`
	ConnectedAt  string `json:"connected_at"`
	MessagesIn   uint64 `json:"messages_in"`
	MessagesOut  uint64 `json:"messages_out"`
	BytesIn      uint64 `json:"bytes_in"`
	BytesOut     uint64 `json:"bytes_out"`
	LastSeen     string `json:"last_seen"`
	// Node is the -node-id of the node holding the connection; only with
	// -cluster.
	Node string `json:"node,omitempty"`
	// Meta is the connection's metadata (Wsbridge-Set-Meta-*), by
	// canonical name; absent when it has none.
	Meta map[string]string `json:"meta,omitempty"`
}

// adminWait bounds how long an admin call waits for a loop: a loop never
// blocks, so this is only reached while the engine stops. A variable for
// tests.
var adminWait = 5 * time.Second

// call runs req on the loop of the open connection holding id. It returns
// 404 when there is none. The req is returned to the pool by the caller
// unless call reports it lost: the loop did not take it within adminWait,
// so it is answered 503 and will not be run.
func (s *Server) call(id []byte, req *adminReq) (lost bool) {
	c := s.reg.lookup(id)
	if c == nil {
		req.status = http.StatusNotFound
		return false
	}
	req.claim.Store(reqWaiting)
	c.l.post(task{kind: taskAdmin, c: c, admin: req})
	req.timer.Reset(adminWait)
	select {
	case <-req.done:
		req.timer.Stop()
		return false
	case <-req.timer.C:
		if !req.claim.CompareAndSwap(reqWaiting, reqGivenUp) {
			<-req.done // the loop is running it now and does not block
			return false
		}
		req.status = http.StatusServiceUnavailable
		return true
	}
}

// onAdmin answers an admin call on the connection's loop.
func (c *conn) onAdmin(req *adminReq) {
	if !req.claim.CompareAndSwap(reqWaiting, reqRun) {
		return // the caller gave up and answered 503: nothing is done
	}
	defer func() { req.done <- struct{}{} }()
	if c.phase != phOpen || c.gc == nil {
		req.status = http.StatusNotFound
		return
	}
	s := c.l.srv
	switch req.kind {
	case adminPush:
		op := ws.OpText
		if req.binary {
			op = ws.OpBinary
		}
		req.status = http.StatusOK
		if !c.send(outPush, op, req.payload) {
			req.status = http.StatusServiceUnavailable // slow consumer: closed with 1013
		}
	case adminKick:
		c.closeWith(crKicked, req.code, req.reason)
		req.status = http.StatusOK
	case adminInfo:
		remote := c.remoteAddr()
		if len(s.cfg.TrustedProxies) > 0 {
			if ip := s.clientIP(s2b(c.xff())); ip != peerIP(remote) {
				// Believed from a trusted proxy's X-Forwarded-For: no port.
				remote = ip + ":0"
				if strings.Contains(ip, ":") {
					remote = "[" + ip + "]:0"
				}
			}
		}
		req.info = Info{
			ID:           c.clientID(),
			ConnectionID: string(s.appendConnID(nil, c.sess.ID())),
			RemoteAddr:   remote,
			ConnectedAt:  time.Unix(int64(c.openedAt), 0).UTC().Format(time.RFC3339),
			MessagesIn:   uint64(c.msgsIn),
			MessagesOut:  uint64(c.msgsOut),
			BytesIn:      c.bytesIn,
			BytesOut:     c.bytesOut,
			LastSeen:     s.start.Add(time.Duration(c.l.now-c.l.since(c.lastRead)) * s.cfg.Tick).UTC().Format(time.RFC3339),
			Meta:         c.sess.Meta(c.l.bl),
		}
		req.status = http.StatusOK
	case adminSubscribe:
		req.status = c.join(s2b(req.reason))
	case adminUnsubscribe:
		c.leave(s2b(req.reason))
		req.status = http.StatusOK
	}
}

// Push sends payload to the open connection holding id and returns the
// admin API status: 200, 404 (no such open connection) or 503 (slow
// consumer, closed with 1013).
func (s *Server) Push(id, payload []byte, binary bool) int {
	req := adminPool.Get().(*adminReq)
	req.kind = adminPush
	req.payload = append(req.payload[:0], payload...)
	req.binary = binary
	lost := s.call(id, req)
	status := req.status
	switch status {
	case http.StatusOK:
		s.metrics.pushes[pushOK].Inc()
	case http.StatusNotFound:
		s.metrics.pushes[pushUnknown].Inc()
	default:
		s.metrics.pushes[pushSlowConsumer].Inc()
	}
	if !lost {
		if cap(req.payload) > 64<<10 {
			req.payload = nil
		}
		adminPool.Put(req)
	}
	return status
}

// Kick closes the open connection holding id with code and reason; 200 or
// 404.
func (s *Server) Kick(id []byte, code ws.StatusCode, reason string) int {
	req := adminPool.Get().(*adminReq)
	req.kind, req.code, req.reason = adminKick, code, reason
	lost := s.call(id, req)
	status := req.status
	if !lost {
		req.reason = ""
		adminPool.Put(req)
	}
	return status
}

// Lookup returns the info of the open connection holding id; ok is false
// when there is none.
func (s *Server) Lookup(id []byte) (info Info, ok bool) {
	req := adminPool.Get().(*adminReq)
	req.kind = adminInfo
	lost := s.call(id, req)
	info, ok = req.info, req.status == http.StatusOK
	if !lost {
		req.info = Info{}
		adminPool.Put(req)
	}
	return info, ok
}

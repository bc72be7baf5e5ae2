package bridge

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/wsbridge/wsbridge/protocol"
)

// Owner is the connection a Session's calls belong to (the engine's conn).
// Complete (Completer) runs on a bridge worker and only hands the Call to
// the connection's event loop, which passes it to Session.Finish; Finished
// runs on that loop, from Finish, and is the one place the connection
// learns what a backend call came to.
type Owner interface {
	Completer
	Finished(Reply)
}

// Reply is a finished backend call in plain terms. Its slices alias the
// pooled response: they are valid until Finished returns, when Finish
// gives the call back to the pool.
type Reply struct {
	Method  Method
	Outcome Outcome
	// Status is the backend's HTTP status; it means nothing when the
	// backend did not answer (Outcome unreachable, timeout or shed).
	Status int
	// Body is the answer's body: a POST's reply, a refused GET's message.
	Body []byte
	// Binary is set for a POST reply that goes to the client as a binary
	// message (protocol.IsBinaryContentType); otherwise it is text.
	Binary bool
	// ContentType, Protocol and Challenge are a GET's Content-Type,
	// Sec-WebSocket-Protocol and WWW-Authenticate (nil for other calls).
	ContentType, Protocol, Challenge []byte
	// Subscribe and Unsubscribe are a 2xx GET's or POST's
	// Wsbridge-Subscribe and Wsbridge-Unsubscribe values (nil when
	// absent): comma-separated channel names, for the engine to apply.
	Subscribe, Unsubscribe []byte

	received, backend int64
}

// Added returns the latency the bridge itself adds to a POST's reply
// written now: from the message read whole (or its predecessor's answer,
// if it waited for it) to now, minus the backend call. ok is false when it
// is not known (the call got no answer).
func (r *Reply) Added() (d time.Duration, ok bool) {
	if r.backend == 0 || r.received == 0 {
		return 0, false
	}
	return time.Duration(Now() - r.received - r.backend), true
}

// Loop is an event loop's handle on the bridge: the Client, the prefix of
// the connection ids, the bridge-wide count of queued messages, and
// scratch space. The engine keeps one per event loop and uses it only on
// that loop.
type Loop struct {
	cl     *Client
	prefix string
	queued *atomic.Int64
	idbuf  []byte

	meta       map[uint64]*meta // connection metadata by sequence number (meta.go); nil until a first Set-Meta
	metaLogged time.Time        // last rejected-metadata warning
}

// NewLoop returns a Loop for cl. prefix starts every connection id
// (AppendConnID); queued counts, across every loop, the messages waiting
// behind the POST in flight on their connection.
func NewLoop(cl *Client, prefix string, queued *atomic.Int64) *Loop {
	return &Loop{cl: cl, prefix: prefix, queued: queued, idbuf: make([]byte, 0, 40)}
}

// AppendConnID appends the Wsbridge-Connection-Id of sequence number id.
func AppendConnID(dst []byte, prefix string, id uint64) []byte {
	dst = append(dst, prefix...)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, id, 16)
}

// connID formats id into the loop's scratch; valid until the next call.
func (l *Loop) connID(id uint64) []byte {
	l.idbuf = AppendConnID(l.idbuf[:0], l.prefix, id)
	return l.idbuf
}

// Held is a prepared call the connection keeps until it may go: the
// upgrade's GET, held while the ClientId's previous lifecycle ends, or the
// DELETE, held until the last POST is answered. The zero value holds
// nothing.
type Held struct{ call *Call }

// Holding reports whether h holds a call.
func (h Held) Holding() bool { return h.call != nil }

// Drop gives the held call back unsent; h then holds nothing.
func (h *Held) Drop() {
	if h.call != nil {
		ReleaseCall(h.call)
		h.call = nil
	}
}

// String is the held request's head, for tests and debugging.
func (h Held) String() string {
	if h.call == nil {
		return ""
	}
	return h.call.Req.Header.String()
}

// Session is one connection's side of the backend protocol: its ids, the
// message being assembled, the calls waiting in order behind the one in
// flight (one POST at a time, the DELETE after the last POST), request
// building, forwarded headers, Wsbridge-Replaces, and the pooled calls,
// acquired and released here only.
//
// A Session is not safe for concurrent use: the engine embeds it in the
// connection's state and calls it only on that connection's event loop,
// except for ID, ClientID and XFF, which never change after Begin. It is
// small on purpose (an idle connection is mostly its conn) and its zero
// value is ready for Begin.
type Session struct {
	names string // the ClientId, then the X-Forwarded-For value, then (if any) NUL and the note: one allocation
	id    uint64
	msg   *Call // the message being assembled

	// The pipeline: the calls waiting behind the one in flight.
	head, tail *Call
	n          int32  // waiting calls
	bytes      int32  // their request body bytes (bounded by the engine far below 2 GiB)
	busy       bool   // a call is in flight
	idLen      uint8  // len(ClientId) in names
	hasMeta    bool   // the Loop holds metadata for this connection (meta.go)
	trusted    bool   // the last POST was answered within adaptTrusted: the next may share a batch
	seq        uint32 // Wsbridge-Seq of the last call issued (sign.go)
}

// A ClientId's length fits Session.idLen.
const _ = uint8(protocol.MaxClientIDLen)

// Begin sets the connection's ids: id is its sequence number (the
// Wsbridge-Connection-Id), xff the X-Forwarded-For value sent with every
// call, and note anything the engine keeps beside them (nil for none).
// Nothing is retained of the slices.
func (s *Session) Begin(id uint64, clientID, xff, note []byte) {
	var b [256]byte
	names := append(append(b[:0], clientID...), xff...)
	if note != nil {
		names = append(append(names, 0), note...)
	}
	s.names, s.idLen, s.id, s.seq = string(names), uint8(len(clientID)), id, 0
	s.hasMeta = false // a newcomer does not inherit
	s.trusted = false
}

// nextSeq numbers the connection's next call: 1 for the GET, then each
// POST in arrival order, then the DELETE.
func (s *Session) nextSeq() uint32 {
	s.seq++
	return s.seq
}

// ID is the connection's sequence number.
func (s *Session) ID() uint64 { return s.id }

// ClientID is the connection's ClientId.
func (s *Session) ClientID() string { return s.names[:s.idLen] }

// XFF is the X-Forwarded-For value sent to the backend.
func (s *Session) XFF() string {
	x := s.names[s.idLen:]
	if i := strings.IndexByte(x, 0); i >= 0 { // a header value holds no NUL
		x = x[:i]
	}
	return x
}

// Note is what Begin kept beside the ids ("" for none).
func (s *Session) Note() string {
	x := s.names[s.idLen:]
	if i := strings.IndexByte(x, 0); i >= 0 {
		return x[i+1:]
	}
	return ""
}

// s2b returns the bytes of s without copying; they must not be modified.
func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func (s *Session) ids(l *Loop) Ids {
	return Ids{ClientID: s2b(s.ClientID()), ConnID: l.connID(s.id), XFF: s2b(s.XFF())}
}

// Upgrade prepares the upgrade's GET with the request's query (nil for
// none) and the client headers to forward; it goes with Authorize. Nothing
// is retained of the slices.
func (s *Session) Upgrade(l *Loop, o Owner, query []byte, fwd []protocol.Header) Held {
	call := AcquireCall()
	call.Owner = o
	call.seq = s.nextSeq()
	l.cl.PrepareGET(call, s.ids(l), query)
	for i := range fwd {
		call.Req.Header.AddBytesKV(fwd[i].Name, fwd[i].Value)
	}
	return Held{call}
}

// Authorize sends the held GET; replaces is the sequence number of the
// open connection this one would replace (Wsbridge-Replaces), or 0.
func (s *Session) Authorize(l *Loop, get *Held, replaces uint64) {
	call := get.call
	get.call = nil
	if replaces != 0 {
		call.Req.Header.SetCanonical(hdrReplaces, l.connID(replaces))
	}
	l.cl.Submit(call)
}

// Message takes one chunk of a client message: first starts a message
// (binary says which kind), fin ends it. A whole message's POST goes at
// once when nothing is in flight, otherwise it waits its turn. It reports
// whether the message is whole.
func (s *Session) Message(l *Loop, o Owner, payload []byte, first, fin, binary bool) (whole bool) {
	if first {
		s.msg = AcquireCall()
		s.msg.Owner = o
		l.cl.PreparePOST(s.msg, s.ids(l), binary)
	}
	s.msg.Req.AppendBody(payload)
	if !fin {
		return false
	}
	m := s.msg
	s.msg = nil
	m.seq = s.nextSeq() // numbered whole, so a dropped partial leaves no gap
	if s.push(m) {
		m.Received = Now()
		m.trusted = s.trusted
		s.addMeta(l, m)
		l.cl.Submit(m)
	} else {
		l.queued.Add(1)
	}
	return true
}

// Assembling reports whether a message has begun and not ended.
func (s *Session) Assembling() bool { return s.msg != nil }

// DropPartial drops the message being assembled, if any.
func (s *Session) DropPartial() {
	if s.msg != nil {
		ReleaseCall(s.msg)
		s.msg = nil
	}
}

// Idle reports whether no call is in flight or waiting.
func (s *Session) Idle() bool { return !s.busy }

// Queued returns the number of calls waiting behind the one in flight and
// their body bytes.
func (s *Session) Queued() (calls, bytes int) { return int(s.n), int(s.bytes) }

// Close prepares the DELETE with the code and reason of the close that
// ended the connection; it goes with Delete once the last POST is
// answered.
func (s *Session) Close(l *Loop, o Owner, code int, reason string) Held {
	call := AcquireCall()
	call.Owner = o
	call.seq = s.nextSeq()
	l.cl.PrepareDELETE(call, s.ids(l), code, reason)
	return Held{call}
}

// Delete sends the held DELETE. The engine calls it when Idle.
func (s *Session) Delete(l *Loop, del *Held) {
	call := del.call
	del.call = nil
	call.trusted = s.trusted
	s.addMeta(l, call)
	l.cl.Submit(call)
}

// Finish takes a call the Owner's Complete handed to the loop: a 2xx
// GET's or POST's Wsbridge-Set-Meta-* headers are stored; the next
// POST waiting, if any, goes out; then o.Finished gets the reply in plain
// terms, and the call goes back to the pool.
func (s *Session) Finish(l *Loop, c *Call, o Owner) {
	switch c.Method {
	case GET, POST:
		if c.Outcome == OutcomeOK {
			s.applyMeta(l, &c.Resp) // before the next call goes
		}
	case DELETE:
		s.endMeta(l)
	}
	switch c.Method {
	case POST:
		// A fast answer earns the connection's next call the right to
		// share a pipelined batch; a slow one (or none) loses it until a
		// call comes back fast again (adapt.go).
		s.trusted = c.Answered != 0 && c.Answered-c.Sent <= l.cl.TrustWithin()
		if next := s.done(); next != nil {
			l.queued.Add(-1)
			next.Received = Now()
			next.trusted = s.trusted
			s.addMeta(l, next)
			l.cl.Submit(next)
		}
	}
	r := Reply{Method: c.Method, Outcome: c.Outcome, Status: c.Resp.StatusCode(), Body: c.Resp.Body()}
	if c.Outcome == OutcomeOK && c.Method != DELETE {
		r.Subscribe = c.Resp.Header.PeekBytes(hdrSubscribe)
		if c.Method == POST {
			r.Unsubscribe = c.Resp.Header.PeekBytes(hdrUnsubscribe)
		}
	}
	switch c.Method {
	case GET:
		r.ContentType = c.Resp.Header.ContentType()
		r.Protocol = c.Resp.Header.PeekBytes(hdrProtocol)
		r.Challenge = c.Resp.Header.PeekBytes(hdrWWWAuthenticate)
	case POST:
		r.Binary = len(r.Body) > 0 && IsBinary(&c.Resp)
		if c.Answered != 0 {
			r.received, r.backend = c.Received, c.Answered-c.Sent
		}
	}
	o.Finished(r)
	ReleaseCall(c)
}

var (
	hdrProtocol        = []byte("Sec-WebSocket-Protocol")
	hdrWWWAuthenticate = []byte("WWW-Authenticate")
	hdrSubscribe       = []byte(protocol.HeaderSubscribe)
	hdrUnsubscribe     = []byte(protocol.HeaderUnsubscribe)
)

// push adds c. It reports true when nothing was in flight: the caller must
// then submit c at once (it is now the call in flight and is not queued).
func (s *Session) push(c *Call) (submitNow bool) {
	if !s.busy {
		s.busy = true
		return true
	}
	c.next = nil
	if s.tail == nil {
		s.head = c
	} else {
		s.tail.next = c
	}
	s.tail = c
	s.n++
	s.bytes += int32(len(c.Req.Body()))
	return false
}

// done records that the call in flight has finished and returns the next
// call to submit, or nil when the pipeline is now idle.
func (s *Session) done() (next *Call) {
	c := s.head
	if c == nil {
		s.busy = false
		return nil
	}
	s.head = c.next
	if s.head == nil {
		s.tail = nil
	}
	c.next = nil
	s.n--
	s.bytes -= int32(len(c.Req.Body()))
	return c
}

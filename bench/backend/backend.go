// Package backend is a fast mock of a wsbridge API backend, for tests and
// the wsbench load generator: GET answers "ok", POST echoes the message
// with its content type, DELETE answers "ok".
//
// While it serves it checks the protocol's promises and counts every
// breach in Violations: per ClientId, lifecycles do not overlap (a GET
// comes only after the previous connection's DELETE, unless it carries
// Wsbridge-Replaces naming the open one); no POST arrives for a connection
// that is not open at the backend; every connection gets exactly one
// DELETE; and, when messages are numbered (see Sequenced), they arrive in
// order.
//
// With Record set it also keeps every call for tests to inspect.
//
// A POST with Content-Type application/x-wsbridge-batch (wsbridge's
// -backend-batch-url) is a batch: each message in it is checked and
// recorded as its own POST (Header "Wsbridge-Seq" and "Wsbridge-Meta" hold
// the record's seq and meta fields) and echoed in the answer; the batch
// itself counts in Batches and is recorded with Method "BATCH".
package backend

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsbridge/wsbridge/protocol"
)

// Call is one recorded backend call.
type Call struct {
	Method    string
	ClientID  string
	ConnID    string
	Query     string
	Header    map[string]string // canonical names, last value wins
	Body      []byte
	CloseCode string // Wsbridge-Close-Code of a DELETE
	Replaces  string // Wsbridge-Replaces of a GET
	At        time.Time
}

// Options configure a Backend.
type Options struct {
	// Addr to listen on; empty means 127.0.0.1:0.
	Addr string
	// Record keeps every call (tests); leave off for load runs.
	Record bool
	// Sequenced checks that each connection's messages, read as decimal
	// numbers at the start of the body, strictly increase.
	Sequenced bool
	// Hook, if set, runs first; returning true means it wrote the reply.
	// It runs concurrently for different requests.
	Hook func(ctx *fasthttp.RequestCtx, c *Call) bool
}

// Backend is a running mock backend.
type Backend struct {
	opts   Options
	ln     net.Listener
	srv    *fasthttp.Server
	URL    string // base URL to give wsbridge's -backend
	closed chan struct{}

	Gets, Posts, Deletes atomic.Int64
	// Batches counts batch requests (also counted in Posts, as HTTP
	// requests), BatchMessages the messages they carried.
	Batches, BatchMessages atomic.Int64
	Violations             atomic.Int64

	mu        sync.Mutex
	calls     []Call
	clients   map[string]*clientState
	conns     map[string]*connState
	lastError string
}

type clientState struct {
	open string // connection id that holds the ClientId (GET ok, no DELETE yet)
}

type connState struct {
	deleted bool
	lastSeq int64
}

// Start listens and serves until Close.
func Start(opts Options) (*Backend, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend: listen %s: %w", addr, err)
	}
	b := &Backend{
		opts:    opts,
		ln:      ln,
		URL:     "http://" + ln.Addr().String() + "/",
		closed:  make(chan struct{}),
		clients: map[string]*clientState{},
		conns:   map[string]*connState{},
	}
	b.srv = &fasthttp.Server{
		Handler:            b.handle,
		Name:               "wsbridge-mock-backend",
		MaxRequestBodySize: 64 << 20,
		Concurrency:        1 << 20,
	}
	go func() {
		_ = b.srv.Serve(ln)
		close(b.closed)
	}()
	return b, nil
}

// Addr is the listening address.
func (b *Backend) Addr() string { return b.ln.Addr().String() }

// Close stops the backend.
func (b *Backend) Close() error {
	err := b.srv.Shutdown()
	<-b.closed
	return err
}

var (
	hdrConnID    = []byte(protocol.HeaderConnectionID)
	hdrCloseCode = []byte(protocol.HeaderCloseCode)
	hdrReplaces  = []byte(protocol.HeaderReplaces)
	hdrSubscribe = []byte(protocol.HeaderSubscribe)
)

func (b *Backend) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	var c Call
	c.ClientID = string(path[bytes.LastIndexByte(path, '/')+1:])
	c.Method = string(ctx.Method())
	c.ConnID = string(ctx.Request.Header.PeekBytes(hdrConnID))
	if b.opts.Record {
		c.Query = string(ctx.QueryArgs().QueryString())
		c.Header = map[string]string{}
		for k, v := range ctx.Request.Header.All() {
			c.Header[string(k)] = string(v)
		}
		c.Body = append([]byte(nil), ctx.PostBody()...)
		c.CloseCode = string(ctx.Request.Header.PeekBytes(hdrCloseCode))
		c.Replaces = string(ctx.Request.Header.PeekBytes(hdrReplaces))
		c.At = time.Now()
	}
	replaces := ctx.Request.Header.PeekBytes(hdrReplaces)
	isBatch := c.Method == fasthttp.MethodPost && bytes.Equal(ctx.Request.Header.ContentType(), ctBatch)
	if isBatch {
		b.Posts.Add(1)
		b.Batches.Add(1) // before the hook, which may hold it
	}
	handled := false
	if b.opts.Hook != nil {
		if !b.opts.Record {
			c.Body = ctx.PostBody()
		}
		handled = b.opts.Hook(ctx, &c)
	}
	if isBatch {
		b.batch(ctx, &c, handled)
		return
	}
	if !handled {
		switch c.Method {
		case fasthttp.MethodGet:
			// ?subscribe=<channels> joins them (the fan-out benchmark).
			if v := ctx.QueryArgs().Peek("subscribe"); len(v) > 0 {
				ctx.Response.Header.SetCanonical(hdrSubscribe, v)
			}
			ctx.SetBodyString("ok")
		case fasthttp.MethodPost:
			ctx.SetContentTypeBytes(ctx.Request.Header.ContentType())
			ctx.SetBody(ctx.PostBody())
		case fasthttp.MethodDelete:
			ctx.SetBodyString("ok")
		}
	}
	accepted := c.Method == fasthttp.MethodGet && ctx.Response.StatusCode() == 200 &&
		string(bytes.TrimSpace(ctx.Response.Body())) == "ok"
	b.check(&c, accepted, string(replaces), ctx.PostBody())
}

var ctBatch = []byte("application/x-wsbridge-batch")

// BatchMessage is one message of a batch request.
type BatchMessage struct {
	Binary   bool
	ClientID string
	ConnID   string
	Seq      string
	Meta     string // "-" for none
	Body     []byte // aliases the request body
}

// ParseBatch reads a batch request's body.
func ParseBatch(body []byte) ([]BatchMessage, error) {
	var out []BatchMessage
	for len(body) > 0 {
		nl := bytes.IndexByte(body, '\n')
		if nl < 0 {
			return out, errors.New("backend: batch record without a header line")
		}
		f := bytes.Split(body[:nl], []byte{' '})
		if len(f) != 6 {
			return out, fmt.Errorf("backend: batch header %q: %d fields, want 6", body[:nl], len(f))
		}
		n, err := strconv.Atoi(string(f[4]))
		body = body[nl+1:]
		if err != nil || n < 0 || n+1 > len(body) || body[n] != '\n' {
			return out, fmt.Errorf("backend: batch record %d: bad length %q", len(out), f[4])
		}
		out = append(out, BatchMessage{Binary: string(f[0]) == "binary", ClientID: string(f[1]), ConnID: string(f[2]),
			Seq: string(f[3]), Meta: string(f[5]), Body: body[:n]})
		body = body[n+1:]
	}
	return out, nil
}

// AppendBatchReply appends one reply of a batch answer; meta is the
// optional set-meta field ("" for none).
func AppendBatchReply(dst []byte, binary bool, body []byte, meta string) []byte {
	if binary {
		dst = append(dst, "binary "...)
	} else {
		dst = append(dst, "text "...)
	}
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	if meta != "" {
		dst = append(append(dst, ' '), meta...)
	}
	dst = append(dst, '\n')
	dst = append(dst, body...)
	return append(dst, '\n')
}

// batch serves a batch request: every message is checked as a POST and
// echoed; when a Hook answered it, the messages are only counted.
func (b *Backend) batch(ctx *fasthttp.RequestCtx, bc *Call, hooked bool) {
	msgs, err := ParseBatch(ctx.PostBody())
	b.BatchMessages.Add(int64(len(msgs)))
	if b.opts.Record {
		bc.Method = "BATCH"
		b.mu.Lock()
		b.calls = append(b.calls, *bc)
		b.mu.Unlock()
	}
	if hooked {
		return
	}
	if err != nil {
		b.mu.Lock()
		b.violate("%v", err)
		b.mu.Unlock()
		ctx.Error(err.Error(), fasthttp.StatusBadRequest)
		return
	}
	out := make([]byte, 0, len(ctx.PostBody())+8*len(msgs))
	for _, m := range msgs {
		c := Call{Method: fasthttp.MethodPost, ClientID: m.ClientID, ConnID: m.ConnID}
		if b.opts.Record {
			c.Header = map[string]string{"Wsbridge-Seq": m.Seq, "Wsbridge-Meta": m.Meta}
			c.Body = append([]byte(nil), m.Body...)
			c.At = bc.At
		}
		b.checkMessage(&c, m.Body)
		out = AppendBatchReply(out, m.Binary, m.Body, "")
	}
	ctx.SetContentTypeBytes(ctBatch)
	ctx.SetBody(out)
}

// check updates the lifecycle model and counts violations.
func (b *Backend) check(c *Call, accepted bool, replaces string, body []byte) {
	b.model(c, accepted, replaces, body, true)
}

// checkMessage is check for a message of a batch (not an HTTP request).
func (b *Backend) checkMessage(c *Call, body []byte) {
	b.model(c, false, "", body, false)
}

func (b *Backend) model(c *Call, accepted bool, replaces string, body []byte, request bool) {
	switch {
	case !request:
	case c.Method == fasthttp.MethodGet:
		b.Gets.Add(1)
	case c.Method == fasthttp.MethodPost:
		b.Posts.Add(1)
	case c.Method == fasthttp.MethodDelete:
		b.Deletes.Add(1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.opts.Record {
		b.calls = append(b.calls, *c)
	}
	cl := b.clients[c.ClientID]
	if cl == nil {
		cl = &clientState{}
		b.clients[c.ClientID] = cl
	}
	switch c.Method {
	case fasthttp.MethodGet:
		if cl.open != "" && cl.open != replaces {
			b.violate("GET %s for %s while %s is still open (replaces %q)", c.ConnID, c.ClientID, cl.open, replaces)
		}
		if accepted {
			if _, seen := b.conns[c.ConnID]; seen {
				b.violate("second GET for connection %s", c.ConnID)
			}
			b.conns[c.ConnID] = &connState{lastSeq: -1}
			cl.open = c.ConnID
		}
	case fasthttp.MethodPost:
		cs := b.conns[c.ConnID]
		switch {
		case cs == nil:
			b.violate("POST for connection %s never accepted", c.ConnID)
		case cs.deleted:
			b.violate("POST after DELETE for connection %s", c.ConnID)
		case b.opts.Sequenced:
			if seq, ok := leadingNumber(body); ok {
				if seq <= cs.lastSeq {
					b.violate("connection %s: message %d after %d", c.ConnID, seq, cs.lastSeq)
				}
				cs.lastSeq = seq
			}
		}
	case fasthttp.MethodDelete:
		cs := b.conns[c.ConnID]
		switch {
		case cs == nil:
			b.violate("DELETE for connection %s never accepted", c.ConnID)
		case cs.deleted:
			b.violate("second DELETE for connection %s", c.ConnID)
		default:
			cs.deleted = true
		}
		if cl.open == c.ConnID {
			cl.open = ""
		}
	}
}

func (b *Backend) violate(format string, args ...any) {
	b.Violations.Add(1)
	b.lastError = fmt.Sprintf(format, args...)
}

// LastViolation describes the most recent violation, or "".
func (b *Backend) LastViolation() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastError
}

func leadingNumber(b []byte) (int64, bool) {
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b[:i]), 10, 64)
	return n, err == nil
}

// Calls returns the recorded calls, all or for one ClientId.
func (b *Backend) Calls(clientID string) []Call {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Call
	for _, c := range b.calls {
		if clientID == "" || c.ClientID == clientID {
			out = append(out, c)
		}
	}
	return out
}

// Open returns the connections accepted and not yet deleted.
func (b *Backend) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, cs := range b.conns {
		if !cs.deleted {
			n++
		}
	}
	return n
}

// ErrNotDone is returned by Wait when the condition did not hold in time.
var ErrNotDone = errors.New("backend: condition not met in time")

// Wait polls cond every few milliseconds until it holds or timeout passes.
func Wait(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return ErrNotDone
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

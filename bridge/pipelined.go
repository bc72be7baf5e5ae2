package bridge

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// Pipelining (Config.Pipeline > 1).
//
// Each worker owns one backend connection. When every worker is busy and
// calls queue up, the next worker to come free takes up to Pipeline of
// them at once: it writes all the requests with one write, reads the
// answers in order (usually with one read, since a keep-alive server that
// finds several requests in its buffer answers them together), and only
// then hands the results to the event loops, which wakes each loop once
// for the whole batch. Against a fast backend this divides the backend
// syscalls, netpoll wake-ups and loop wake-ups of a message by the batch
// size, which is where most of a bridge's CPU goes.
//
// Requests and responses are still written and parsed by fasthttp
// (Request.Write, Response.Read); only the connection handling is ours,
// because fasthttp's HostClient sends one request per connection at a
// time and its PipelineClient hands every request between three
// goroutines.
//
// The rules that keep it safe (RFC 9112 §9.3.2):
//   - A batch is only formed from calls that are already waiting while all
//     -backend-max-conns connections are busy, so pipelining never takes
//     parallelism away from a slow backend; it only sends work the backend
//     would otherwise see later.
//   - A response with "Connection: close" (or an HTTP/1.0 one without
//     keep-alive, or one whose body ends with the connection) means the server did not and will not process what
//     follows on that connection: those requests are queued again, at the
//     front, and sent on a fresh connection. A backend that closes after
//     its first answer is not pipelined to again.
//   - A connection that fails (reset, EOF, timeout) fails every request on
//     it that has no answer yet, exactly as a failed call on HostClient
//     does: a POST is never sent twice, DELETEs are retried as always.

// pconn is one worker's backend connection.
type pconn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	used   time.Time // last answer read
	served int       // answers read on nc
	gen    uint64    // Client.connGen when nc was dialed

	// For alive (peek_unix.go), set up once per connection.
	raw       syscall.RawConn
	peekFn    func(fd uintptr) bool
	peekAlive bool
	peekBuf   [1]byte
}

func (p *pconn) close() {
	if p.nc != nil {
		_ = p.nc.Close()
		p.nc = nil
	}
}

var userAgent = []byte("wsbridge")

// Sizes and limits of the backend connections.
const (
	readBufferSize  = 8 << 10
	writeBufferSize = 8 << 10
	// maxIdleConnDuration: a connection idle longer is closed before use
	// rather than trusted with a call: the backend may be about to drop it.
	maxIdleConnDuration = 30 * time.Second
)

// dial opens p's connection, with the same timeout as a call.
func (c *Client) dial(p *pconn, deadline time.Time) error {
	p.gen = c.connGen.Load()
	d := net.Dialer{Deadline: deadline, KeepAlive: 30 * time.Second}
	var nc net.Conn
	var err error
	if c.isTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.cfg.TLSConfig != nil {
			cfg = c.cfg.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = hostOnly(c.addr)
		}
		td := tls.Dialer{NetDialer: &d, Config: cfg}
		nc, err = td.Dial("tcp", c.addr)
	} else {
		nc, err = d.Dial("tcp", c.addr)
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fasthttp.ErrDialTimeout
		}
		return fmt.Errorf("bridge: dial %s: %w", c.addr, err)
	}
	p.nc = nc
	if tc, ok := nc.(*tls.Conn); ok {
		p.watch(tc.NetConn())
	} else {
		p.watch(nc)
	}
	if p.br == nil {
		p.br = bufio.NewReaderSize(nc, readBufferSize)
		p.bw = bufio.NewWriterSize(nc, writeBufferSize)
	} else {
		p.br.Reset(nc)
		p.bw.Reset(nc)
	}
	p.served = 0
	p.used = time.Now()
	return nil
}

func hostOnly(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// timeoutErr maps any timeout to fasthttp.ErrTimeout, as HostClient does,
// so classify needs to know one error.
func timeoutErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fasthttp.ErrTimeout
	}
	return err
}

// doBatch sends batch on p's connection and completes every call in it,
// except those the server declined by closing, or that met a stale socket
// (stale.go): they are queued again. It returns the time from the write to
// the last answer (ns) when every call was answered, else 0.
func (c *Client) doBatch(p *pconn, batch []*Call, errs []error) (took int64) {
	start := time.Now()
	sent := Now()
	for _, call := range batch {
		if call.start.IsZero() {
			call.start = start
		}
		call.Sent, call.Answered = sent, 0
	}
	deadline := start.Add(c.cfg.Timeout)
	if p.nc != nil {
		switch {
		case p.gen != c.connGen.Load():
			p.close() // dialed before the backend was seen dropping sockets
		case start.Sub(p.used) > maxIdleConnDuration:
			p.close() // the server may be about to drop it: do not bet a POST on it
		case !p.alive():
			p.close()
			c.staleConn()
		}
	}
	reused := p.nc != nil
	if p.nc == nil {
		if err := c.dial(p, deadline); err != nil {
			for _, call := range batch {
				c.finish(call, start, err)
			}
			return 0
		}
	}

	if len(batch) > 1 {
		c.pipelined.Add(int64(len(batch)))
	}
	// Write every request, then flush once.
	err := p.nc.SetWriteDeadline(deadline)
	for _, call := range batch {
		if err != nil {
			break
		}
		call.Req.URI().DisablePathNormalizing = true
		if len(call.Req.Header.UserAgent()) == 0 {
			call.Req.Header.SetUserAgentBytes(userAgent)
		}
		if c.cfg.Signer != nil {
			c.sign(call)
		}
		err = call.Req.Write(p.bw)
	}
	if err == nil {
		err = p.bw.Flush()
	}
	if err != nil {
		err = timeoutErr(err)
		p.close()
		if reused && closedBeforeAnswer(err) {
			// The backend had reset the socket: what we wrote was discarded.
			c.staleConn()
			c.retryStale(batch, start, err, true)
			return 0
		}
		for _, call := range batch {
			c.finish(call, start, err)
		}
		return 0
	}

	// Read the answers in order.
	answered := len(batch)
	closed := false
	if err = p.nc.SetReadDeadline(deadline); err != nil {
		answered = 0
	}
	done := 0 // calls completed before the batch's end
	for i := 0; err == nil && i < len(batch); i++ {
		if i > done && p.br.Buffered() == 0 {
			// The next answer is not here yet and may be long in coming
			// (its call may be stuck): what was answered goes now.
			for j := done; j < i; j++ {
				c.finish(batch[j], start, nil)
			}
			done = i
		}
		call := batch[i]
		call.Resp.Reset()
		if err = call.Resp.Read(p.br); err != nil {
			err = timeoutErr(err)
			answered = i
			break
		}
		p.served++
		call.Answered = Now()
		errs[i] = nil
		// fasthttp also marks an answer whose body runs to the end of the
		// connection (no length, not chunked) as closing; a 204 is not.
		if call.Resp.ConnectionClose() {
			closed = true
			answered = i + 1
			break
		}
	}
	p.used = time.Now()
	if err != nil || closed {
		if closed && answered < len(batch) && p.served <= 1 {
			c.noPipeline.Store(true)
		}
		p.close()
	}
	if err != nil && reused && answered == 0 && closedBeforeAnswer(err) {
		// Closed under our write before a byte of answer: most likely a
		// socket the backend had dropped while it sat idle.
		c.staleConn()
		c.retryStale(batch, start, err, false)
		return 0
	}
	if err == nil && !closed {
		took = max(1, Now()-sent)
	}
	var again []*Call
	if closed {
		again = batch[answered:]
	} else {
		for i := answered; i < len(batch); i++ {
			errs[i] = err
		}
		answered = len(batch)
	}
	// Complete in a burst: each event loop is woken once for the lot.
	for i := done; i < answered; i++ {
		c.finish(batch[i], start, errs[i])
	}
	if len(again) > 0 {
		c.requeue(again)
	}
	return took
}

// staleConn records a socket found closed by the backend and drops every
// other socket dialed before it.
func (c *Client) staleConn() {
	c.dropConns()
	c.staleConns.Add(1)
	if ce := c.log.Check(zap.DebugLevel, "backend closed an idle connection; dropping the idle ones"); ce != nil {
		ce.Write()
	}
}

// retryStale handles a batch none of which the backend answered because
// the reused socket it went out on was dead. Calls go again, at the front
// of the queue and once only, when sending them twice is harmless: all of
// them if the write itself failed (the backend discarded it), else GETs and
// DELETEs. The others fail with a staleError, which the breaker ignores.
func (c *Client) retryStale(batch []*Call, start time.Time, err error, unwritten bool) {
	var again []*Call
	for _, call := range batch {
		if !call.staleRetry && (unwritten || call.Method != POST) {
			call.staleRetry = true
			again = append(again, call)
			continue
		}
		c.finish(call, start, &staleError{err})
	}
	if len(again) > 0 {
		c.requeue(again)
	}
}

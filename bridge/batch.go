package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Batched calls (-backend-batch-url, DESIGN §8.4; the format is in
// docs/protocol.md "Batched calls").
//
// With a batch URL, a connection's POST does not go out on its own: Submit
// hands it to the batcher, which gathers the messages of every connection
// and sends them as one POST to the batch URL when BatchMax of them (or
// batchMaxBytes of body) are waiting, or BatchDelay after the first one
// came, whichever is first. The batch is an ordinary call on the worker
// queue: -backend-max-conns, pipelining, the timeout, the breaker and
// signing apply to it as to any POST, and it counts as one POST in
// wsbridge_backend_requests_total.
//
// Per-connection order needs nothing new: a Session keeps one POST in
// flight, so a batch holds at most one message per connection, and the
// next one is submitted when the previous one's reply (split out of its
// batch's answer) has been handed back. Backpressure is unchanged too:
// messages wait behind the one in flight as before, against the same
// bounds, so a slow batch endpoint pauses reading like a slow POST
// endpoint.
//
// The answer holds one reply per message, in request order. When the batch
// fails (not sent, timeout, non-2xx, an answer that does not parse) every
// message in it fails as a failed POST does: nothing goes to its client,
// its connection stays. A message the answer has no reply for (the answer
// ends early) fails the same way; replies past the last message are
// ignored (logged, rate-limited).
//
// The timer costs nothing while idle: it is armed when a message enters an
// empty batch and not re-armed until the next one does.

// Batch defaults and bounds.
const (
	// DefaultBatchMax is the most messages in one batch by default.
	DefaultBatchMax = 100
	// DefaultBatchDelay is how long the first message of a batch waits
	// for others by default.
	DefaultBatchDelay = time.Millisecond
	// batchMaxBytes: a batch leaves once its messages' bytes reach it (a
	// single larger message goes in a batch of its own).
	batchMaxBytes = 1 << 20
	// batchConnID is the Wsbridge-Connection-Id of a batch request (it
	// belongs to no one connection; each message's is in the body).
	batchConnID = "batch"
)

// ContentTypeBatch is the Content-Type of a batch request and of its
// answer.
const ContentTypeBatch = "application/x-wsbridge-batch"

var (
	ctBatch        = []byte(ContentTypeBatch)
	hdrBatchCount  = []byte("Wsbridge-Batch")
	metaPrefixB    = []byte(metaPrefix)
	metaSetPrefixB = []byte(metaSetPrefix)
	kindText       = []byte("text")
	kindBinary     = []byte("binary")
)

// batcher gathers messages into batches.
type batcher struct {
	c     *Client
	url   []byte
	max   int
	delay time.Duration

	mu    sync.Mutex
	cur   *batch
	since int64 // Now() when cur's first message came
	armed bool
	timer *time.Timer
	seq   atomic.Uint32 // Wsbridge-Seq of batch requests (signed only)
	// Now() of the last warning about an answer that did not parse, had
	// fewer replies than messages, had more.
	loggedBad, loggedFewer, loggedMore atomic.Int64

	sent, msgs, failed atomic.Int64
}

// batch is one batch request and the messages it carries.
type batch struct {
	b       *batcher
	msgs    []*Call
	bytes   int
	buf     []byte // the request body
	replies []batchReply
	extra   bool // the answer had more replies than messages
}

// batchReply is one message's reply; its slices alias the answer's body.
type batchReply struct {
	binary bool
	body   []byte
	meta   []byte // the set-meta field, "" for none
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

// newBatcher validates the batch URL: it must be on the backend's scheme,
// host and port, since calls go out on the workers' backend sockets.
func newBatcher(c *Client, raw string, max int, delay time.Duration) (*batcher, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: batch URL %q: %v", ErrBadBackend, raw, err)
	}
	bu, _ := url.Parse(c.cfg.Backend)
	if u.Scheme != bu.Scheme || u.Host != bu.Host {
		return nil, fmt.Errorf("%w: batch URL %q must have the backend's scheme, host and port (%s://%s)", ErrBadBackend, raw, bu.Scheme, bu.Host)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: batch URL %q: no fragment", ErrBadBackend, raw)
	}
	if max <= 0 {
		max = DefaultBatchMax
	}
	if delay <= 0 {
		delay = DefaultBatchDelay
	}
	b := &batcher{c: c, url: []byte(u.String()), max: max, delay: delay}
	b.timer = time.AfterFunc(time.Hour, b.fire)
	b.timer.Stop()
	return b, nil
}

// add takes a message's POST (pending already counted by Submit).
func (b *batcher) add(call *Call) {
	n := len(call.Req.Body())
	b.mu.Lock()
	cur := b.cur
	if cur != nil && cur.bytes > 0 && cur.bytes+n > batchMaxBytes {
		// It would pass the byte bound: what is gathered goes first.
		b.cur = nil
		b.mu.Unlock()
		b.send(cur)
		b.mu.Lock()
		cur = b.cur
	}
	if cur == nil {
		cur = batchPool.Get().(*batch)
		cur.b = b
		b.cur, b.since = cur, Now()
		if !b.armed {
			b.armed = true
			b.timer.Reset(b.delay)
		}
	}
	cur.msgs = append(cur.msgs, call)
	cur.bytes += n
	if len(cur.msgs) < b.max && cur.bytes < batchMaxBytes {
		b.mu.Unlock()
		return
	}
	b.cur = nil
	b.mu.Unlock()
	b.send(cur)
}

// fire sends the batch that has waited BatchDelay, or waits for the rest
// of the delay of a newer one (the one it was armed for left full).
func (b *batcher) fire() {
	b.mu.Lock()
	b.armed = false
	cur := b.cur
	if cur == nil {
		b.mu.Unlock()
		return
	}
	if wait := time.Duration(b.since + int64(b.delay) - Now()); wait > 0 {
		b.armed = true
		b.timer.Reset(wait)
		b.mu.Unlock()
		return
	}
	b.cur = nil
	b.mu.Unlock()
	b.send(cur)
}

// flush sends what is gathered at once (Client.Close).
func (b *batcher) flush() {
	b.mu.Lock()
	cur := b.cur
	b.cur = nil
	b.mu.Unlock()
	if cur != nil {
		b.send(cur)
	}
}

// send encodes bt and queues its request for a worker.
func (b *batcher) send(bt *batch) {
	buf := bt.buf[:0]
	for _, m := range bt.msgs {
		buf = b.appendRecord(buf, m)
	}
	bt.buf = buf
	call := AcquireCall()
	call.Method = POST
	call.batch = bt
	call.Owner = bt
	// Batches may share a socket, as before connections earned trust: each
	// carries many connections' messages, and the batch endpoint's speed
	// is what -backend-adapt measures.
	call.trusted = true
	call.Req.SetRequestURIBytes(b.url)
	call.Req.Header.SetMethodBytes(methodPOST)
	call.Req.Header.SetContentTypeBytes(ctBatch)
	call.Req.Header.SetCanonical(hdrConnID, []byte(batchConnID))
	call.scratch = strconv.AppendInt(call.scratch[:0], int64(len(bt.msgs)), 10)
	call.Req.Header.SetCanonical(hdrBatchCount, call.scratch)
	call.Req.SetBodyRaw(buf)
	if b.c.cfg.Signer != nil {
		call.seq = b.seq.Add(1)
	}
	b.sent.Add(1)
	b.msgs.Add(int64(len(bt.msgs)))
	b.c.pending.Add(1)
	b.c.enqueue(call)
}

// appendRecord appends one message's record:
//
//	<text|binary> <ClientId> <connection id> <seq> <length> <meta>\n<bytes>\n
//
// meta is "-" or name=value pairs joined by '&', percent-encoded.
func (b *batcher) appendRecord(dst []byte, m *Call) []byte {
	if bytes.Equal(m.Req.Header.ContentType(), hdrCTBinary) {
		dst = append(dst, kindBinary...)
	} else {
		dst = append(dst, kindText...)
	}
	dst = append(dst, ' ')
	if len(m.scratch) >= len(b.c.base) {
		dst = append(dst, m.scratch[len(b.c.base):]...) // prepare left the URI there: base + ClientId
	}
	dst = append(dst, ' ')
	dst = append(dst, m.Req.Header.PeekBytes(hdrConnID)...)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(m.seq), 10)
	dst = append(dst, ' ')
	body := m.Req.Body()
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, ' ')
	n := len(dst)
	for k, v := range m.Req.Header.All() {
		if !hasPrefixFold(k, metaPrefix) {
			continue
		}
		if len(dst) > n {
			dst = append(dst, '&')
		}
		dst = appendPercent(dst, k[len(metaPrefixB):])
		dst = append(dst, '=')
		dst = appendPercent(dst, v)
	}
	if len(dst) == n {
		dst = append(dst, '-')
	}
	dst = append(dst, '\n')
	dst = append(dst, body...)
	return append(dst, '\n')
}

const hexDigits = "0123456789ABCDEF"

// appendPercent appends s with every byte outside A-Z a-z 0-9 - . _ ~
// as %XX (PHP's rawurlencode).
func appendPercent(dst, s []byte) []byte {
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			dst = append(dst, c)
		default:
			dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
		}
	}
	return dst
}

// Errors of a batch answer that does not parse.
var (
	ErrBatchReply = errors.New("bridge: malformed batch answer")
)

// maxReplyLine bounds a reply's header line (the set-meta field of 16
// names and 1 KiB, percent-encoded, fits).
const maxReplyLine = 8 << 10

// parseBatchReply parses up to n replies of an answer's body into out:
//
//	<text|binary> <length>[ <set-meta>]\n<bytes>\n
//
// A reply header line may end in "\r\n"; the last reply's final newline
// may be missing. Fewer than n replies is not an error (the caller fails
// the missing messages); extra reports bytes left after the n-th.
func parseBatchReply(body []byte, n int, out []batchReply) (_ []batchReply, extra bool, err error) {
	out = out[:0]
	for len(out) < n {
		if len(bytes.TrimSpace(body)) == 0 {
			break // the end, maybe after a blank line
		}
		nl := bytes.IndexByte(body, '\n')
		if nl < 0 || nl > maxReplyLine {
			return out, false, fmt.Errorf("%w: reply %d: no header line", ErrBatchReply, len(out))
		}
		line := body[:nl]
		body = body[nl+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		var r batchReply
		kind, rest, _ := bytes.Cut(line, []byte{' '})
		switch {
		case bytes.Equal(kind, kindText):
		case bytes.Equal(kind, kindBinary):
			r.binary = true
		default:
			return out, false, fmt.Errorf("%w: reply %d: kind %q, want text or binary", ErrBatchReply, len(out), trunc(kind))
		}
		num, meta, _ := bytes.Cut(rest, []byte{' '})
		length, ok := parseLength(num)
		if !ok || length > len(body) {
			return out, false, fmt.Errorf("%w: reply %d: bad length %q", ErrBatchReply, len(out), trunc(num))
		}
		r.body = body[:length:length]
		r.meta = meta
		body = body[length:]
		switch {
		case len(body) > 0 && body[0] == '\n':
			body = body[1:]
		case len(body) == 0:
		default:
			return out, false, fmt.Errorf("%w: reply %d: no newline after its %d bytes", ErrBatchReply, len(out), length)
		}
		out = append(out, r)
	}
	return out, len(bytes.TrimSpace(body)) > 0, nil
}

func trunc(b []byte) []byte { return b[:min(len(b), 32)] }

// parseLength parses a decimal length of at most 10 digits.
func parseLength(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// parse is classify's step for a 2xx batch answer.
func (bt *batch) parse(call *Call) Outcome {
	var err error
	bt.replies, bt.extra, err = parseBatchReply(call.Resp.Body(), len(bt.msgs), bt.replies)
	if err != nil {
		bt.b.warn(&bt.b.loggedBad, "batch answer does not parse: every message in it fails", err)
		return OutcomeBadReply
	}
	if bt.extra {
		bt.b.warn(&bt.b.loggedMore, "batch answer has more replies than messages: the extra ones are ignored", nil)
	}
	return OutcomeOK
}

// warn logs about an answer, at most once per batchLogEvery for each kind
// of trouble.
func (b *batcher) warn(logged *atomic.Int64, msg string, err error) {
	now := Now()
	last := logged.Load()
	if last != 0 && now-last < int64(batchLogEvery) || !logged.CompareAndSwap(last, now) {
		return
	}
	b.c.log.Warn(msg+" (further ones not logged for a while)", zap.Error(err))
}

const batchLogEvery = 10 * time.Second

// Complete runs on the worker once the batch request is finished: each
// message gets its reply, or the batch's failure, and goes back to its
// connection as if it had been its own POST.
func (bt *batch) Complete(call *Call) {
	b := bt.b
	c := b.c
	ok := call.Outcome == OutcomeOK
	failed := 0
	for i, m := range bt.msgs {
		m.Sent, m.Answered, m.start = call.Sent, call.Answered, call.start
		m.Resp.SetStatusCode(call.Resp.StatusCode())
		switch {
		case ok && i < len(bt.replies):
			r := &bt.replies[i]
			m.Resp.SetBody(r.body)
			if r.binary {
				m.Resp.Header.SetContentTypeBytes(ctOctetStream)
			} else {
				m.Resp.Header.SetContentTypeBytes(hdrCTText)
			}
			if len(r.meta) > 0 && !(len(r.meta) == 1 && r.meta[0] == '-') {
				setMetaHeaders(&m.Resp.Header, r.meta)
			}
			m.Outcome = OutcomeOK
			if len(r.body) > 0 && !r.binary && !utf8.Valid(r.body) {
				m.Outcome = OutcomeBadReply
			}
		case ok:
			m.Outcome, m.Err = OutcomeError, errMissingReply
		default:
			m.Outcome, m.Err = call.Outcome, call.Err
		}
		if m.Outcome != OutcomeOK {
			failed++
		}
		c.complete(m)
	}
	if ok && len(bt.replies) < len(bt.msgs) {
		b.warn(&b.loggedFewer, "batch answer has fewer replies than messages: the missing ones fail", fmt.Errorf("%d replies for %d messages", len(bt.replies), len(bt.msgs)))
	}
	b.failed.Add(int64(failed))
	clear(bt.msgs)
	clear(bt.replies)
	bt.msgs, bt.replies, bt.bytes, bt.extra, bt.b = bt.msgs[:0], bt.replies[:0], 0, false, nil
	if cap(bt.buf) > batchMaxBytes*2 {
		bt.buf = nil
	}
	ReleaseCall(call) // the body aliased bt.buf: released before bt is reused
	batchPool.Put(bt)
}

var errMissingReply = errors.New("bridge: the batch answer has no reply for this message")

// setMetaHeaders turns a reply's set-meta field (name=value&…,
// percent-encoded, '+' a space) into Wsbridge-Set-Meta-* headers, which
// Session.Finish applies as for a POST's own reply. A pair that does not
// decode is dropped and counted as rejected metadata.
func setMetaHeaders(h interface{ SetCanonical(k, v []byte) }, field []byte) {
	var name []byte
	for len(field) > 0 {
		var pair []byte
		pair, field, _ = bytes.Cut(field, []byte{'&'})
		k, v, _ := bytes.Cut(pair, []byte{'='})
		kd, ok1 := percentDecode(k)
		vd, ok2 := percentDecode(v)
		if !ok1 || !ok2 || len(kd) == 0 {
			metaRejected.Add(1)
			continue
		}
		name = append(append(name[:0], metaSetPrefixB...), kd...)
		h.SetCanonical(name, vd)
	}
}

// percentDecode decodes %XX and '+' (a space), as PHP's urldecode does.
func percentDecode(s []byte) ([]byte, bool) {
	if bytes.IndexByte(s, '%') < 0 && bytes.IndexByte(s, '+') < 0 {
		return s, true
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			out = append(out, ' ')
		case '%':
			if i+2 >= len(s) {
				return nil, false
			}
			hi, lo := unhex(s[i+1]), unhex(s[i+2])
			if hi < 0 || lo < 0 {
				return nil, false
			}
			out = append(out, byte(hi<<4|lo))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return out, true
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// BatchStats are the batch counters since start: batch requests sent, the
// messages they carried, and those of them that failed (the batch failed,
// no reply for it, or a text reply that is not UTF-8).
type BatchStats struct{ Batches, Messages, Failed int64 }

// Batching reports whether calls are batched, and the counters.
func (c *Client) Batching() (on bool, s BatchStats) {
	if c.bat == nil {
		return false, s
	}
	return true, BatchStats{c.bat.sent.Load(), c.bat.msgs.Load(), c.bat.failed.Load()}
}

package bridge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wsbridge/wsbridge/bridge/sign"
	"github.com/wsbridge/wsbridge/protocol"
)

// Outcome classifies a finished backend call; the values are the
// `outcome` label of wsbridge_backend_requests_total.
type Outcome string

// Outcomes of a backend call.
const (
	OutcomeOK          Outcome = "ok"          // 2xx (GET: body "ok")
	OutcomeRefused     Outcome = "refused"     // GET answered with 4xx or a 2xx body other than "ok"
	OutcomeError       Outcome = "error"       // 1xx, 3xx or 5xx status
	OutcomeUnreachable Outcome = "unreachable" // connection refused, reset, DNS, TLS
	OutcomeTimeout     Outcome = "timeout"     // no answer within -backend-timeout
	OutcomeBadReply    Outcome = "bad_reply"   // POST text reply that is not valid UTF-8
	OutcomeShed        Outcome = "shed"        // not sent: the circuit breaker is open
)

// Outcomes lists every Outcome, for metric registration.
var Outcomes = []Outcome{OutcomeOK, OutcomeRefused, OutcomeError, OutcomeUnreachable,
	OutcomeTimeout, OutcomeBadReply, OutcomeShed}

// Config configures a Client.
type Config struct {
	// Backend is the base URL; the ClientId is appended to it.
	Backend string
	// MaxConns bounds the calls in flight that are not stuck, each on its
	// own socket to the backend; further calls wait in the queue.
	MaxConns int
	// StuckAfter is how long a call may be in flight before it counts as
	// stuck: it then stops counting against MaxConns, so that one slow
	// endpoint or locked row cannot hold every socket while the calls of
	// everyone else wait behind it. 0 means 250ms.
	StuckAfter time.Duration
	// MaxStuck bounds the stuck calls held above MaxConns, each on a socket
	// of its own: at most MaxConns+MaxStuck sockets in all. 0 means none:
	// stuck calls keep counting against MaxConns.
	MaxStuck int
	// Timeout bounds each call.
	Timeout time.Duration
	// Pipeline is how many requests one backend connection may carry at
	// once when all MaxConns connections are busy (HTTP/1.1 pipelining, see
	// pipelined.go). 0 or 1 sends one request per connection at a time.
	Pipeline int
	// DeleteAttempts is how many times a failing DELETE is tried (default 3).
	DeleteAttempts int
	// TLSConfig, if set, is used for an https backend (e.g. a private CA in
	// RootCAs); nil verifies against the system roots.
	TLSConfig *tls.Config
	// Breaker configures the circuit breaker; the zero value uses defaults.
	Breaker BreakerConfig
	// Observe, if set, is called on a worker goroutine for every finished
	// attempt. It must be cheap: it is on the hot path.
	Observe func(m Method, o Outcome, d time.Duration)
	// Logger gets rate-limited warnings; nil means none.
	Logger *zap.Logger
	// Signer, if set, signs every GET, POST and DELETE (RFC 9421, see
	// sign.go); nil sends them unsigned and without Wsbridge-Seq.
	Signer *sign.Signer
	// BatchURL, if set, sends the messages of many connections together in
	// one POST to it (batch.go): at most BatchMax messages (0 means
	// DefaultBatchMax), after at most BatchDelay (0 means
	// DefaultBatchDelay). It must be on Backend's scheme, host and port.
	BatchURL   string
	BatchMax   int
	BatchDelay time.Duration
	// Adapt lets the client find how many of MaxConns sockets the backend
	// can use, and pipeline up to Pipeline calls on each while it answers
	// fast (adapt.go).
	Adapt bool
}

// Client calls the backend. It is safe for concurrent use.
//
// Each worker goroutine owns one backend socket (pipelined.go) and runs one
// call, or one pipelined batch, at a time. Workers are started on demand:
// at most MaxConns whose call is not stuck, plus at most MaxStuck whose
// call is (watchStuck marks them).
type Client struct {
	cfg     Config
	addr    string // host:port
	isTLS   bool
	base    []byte // scheme://host[:port]/path/ ready for the ClientId
	breaker breaker
	log     *zap.Logger
	bat     *batcher // nil unless BatchURL is set

	mu       sync.Mutex
	cond     *sync.Cond
	head     *Call
	tail     *Call
	queued   int
	idle     int // workers waiting on cond
	starting int // workers started and not yet running
	workers  int
	stuck    int       // workers whose call in hand is stuck
	lone     int       // first calls queued plus workers carrying one that is not stuck (adapt.go)
	all      []*worker // every worker, for watchStuck
	minIdle  int       // fewest idle workers seen by a call since the last retirement
	retire   int       // idle workers asked to exit
	woken    int       // idle workers signalled and not yet running
	stop     chan struct{}
	closed   bool
	ad       adapter // Adapt's state

	pending     atomic.Int64  // calls submitted and not yet completed (retries included)
	stuckNow    atomic.Int64  // c.stuck, for Stuck
	connGen     atomic.Uint64 // bumped to drop every socket dialed before (dropConns)
	staleConns  atomic.Int64  // sockets found closed by the backend
	pipelined   atomic.Int64  // calls sent in a batch of two or more
	noPipeline  atomic.Bool   // the backend closed a connection with requests behind its first answer
	trustWithin atomic.Int64  // TrustWithin
}

// worker is one worker goroutine's state.
type worker struct {
	p     pconn
	since atomic.Int64 // Now() when the call or batch in hand went out; 0 while idle
	stuck bool         // counted in Client.stuck; Client.mu
	lone  bool         // carries a first call, counted in Client.lone; Client.mu
	batch int          // calls in hand; Client.mu
	index int          // in Client.all; Client.mu
}

// ErrBadBackend is returned by New for a backend URL it cannot use.
var ErrBadBackend = errors.New("bridge: bad backend URL")

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.Backend)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadBackend, cfg.Backend, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w %q: want http:// or https:// with a host", ErrBadBackend, cfg.Backend)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w %q: no query or fragment, the ClientId is appended", ErrBadBackend, cfg.Backend)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1024
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.Pipeline <= 0 {
		cfg.Pipeline = 1
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = 250 * time.Millisecond
	}
	cfg.MaxStuck = max(cfg.MaxStuck, 0)
	if cfg.DeleteAttempts <= 0 {
		cfg.DeleteAttempts = 3
	}
	addr := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	path := u.EscapedPath()
	if !strings.HasSuffix(path, "/") {
		path += "/"
	}
	c := &Client{
		cfg:     cfg,
		addr:    addr,
		isTLS:   u.Scheme == "https",
		base:    []byte(u.Scheme + "://" + u.Host + path),
		breaker: newBreaker(cfg.Breaker),
		log:     cfg.Logger,
		stop:    make(chan struct{}),
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	if cfg.BatchURL != "" {
		if c.bat, err = newBatcher(c, cfg.BatchURL, cfg.BatchMax, cfg.BatchDelay); err != nil {
			return nil, err
		}
	}
	c.cfg.Adapt = cfg.Adapt && cfg.Pipeline > 1
	c.ad.limit = min(cfg.MaxConns, adaptStartLimit)
	c.cond = sync.NewCond(&c.mu)
	c.trustWithin.Store(int64(adaptTrusted))
	go c.retireIdle(retireEvery)
	every := min(max(cfg.StuckAfter/5, 5*time.Millisecond), 100*time.Millisecond)
	if c.cfg.Adapt {
		every = min(every, adaptStuckPipelined/2)
	}
	go c.watchStuck(every)
	return c, nil
}

// Base returns the base URL calls are made to.
func (c *Client) Base() string { return string(c.base) }

// Pending returns the number of calls submitted and not yet completed.
func (c *Client) Pending() int64 { return c.pending.Load() }

// Shedding reports whether the circuit breaker currently sheds GETs.
func (c *Client) Shedding() bool { return c.breaker.shedding() }

// Stuck returns the number of calls in flight for longer than StuckAfter.
func (c *Client) Stuck() int64 { return c.stuckNow.Load() }

// MaxStuck returns the bound on stuck calls held above MaxConns.
func (c *Client) MaxStuck() int { return c.cfg.MaxStuck }

// StaleConns returns how many idle sockets were found closed by the
// backend (and not used for a call).
func (c *Client) StaleConns() int64 { return c.staleConns.Load() }

// Submit queues call for a worker. It never blocks on the backend and may
// be called from an event loop. call.Owner gets it back when it is done.
func (c *Client) Submit(call *Call) {
	c.pending.Add(1)
	if call.Method == GET && !c.breaker.allow() {
		call.Outcome = OutcomeShed
		call.Err = ErrShed
		c.observe(call, 0)
		c.complete(call)
		return
	}
	if call.Method == POST && c.bat != nil && call.batch == nil {
		c.bat.add(call) // a message: it goes in a batch
		return
	}
	c.enqueue(call)
}

// ErrShed is the Err of a GET the circuit breaker did not send.
var ErrShed = errors.New("bridge: backend circuit open")

func (c *Client) enqueue(call *Call) {
	c.mu.Lock()
	c.pushLocked(call)
	c.minIdle = min(c.minIdle, c.idle)
	c.wakeAndUnlock(1)
}

// pushLocked appends call to the queue; c.mu is held.
func (c *Client) pushLocked(call *Call) {
	if c.tail == nil {
		c.head = call
	} else {
		c.tail.next = call
	}
	c.tail = call
	c.queued++
	if call.first() {
		c.lone++
	}
}

// wakeAndUnlock gets workers to the queue, which has n new calls: it
// wakes idle workers not already woken or, when there are none, starts one
// (see roomLocked); a worker that takes a call while more wait and none is
// free starts the next (worker). c.mu is held on entry and released.
func (c *Client) wakeAndUnlock(n int) {
	var w *worker
	free := c.idle - c.woken
	switch {
	case free <= 0:
		if c.roomLocked() > 0 {
			w = c.addWorkerLocked()
		}
	case n < free:
		c.woken += n
		for range n {
			c.cond.Signal()
		}
	default:
		c.woken = c.idle
		c.cond.Broadcast()
	}
	c.mu.Unlock()
	if w != nil {
		go c.worker(w)
	}
}

// roomLocked is how many more workers may start: those not stuck stay
// within MaxConns, all of them within MaxConns+MaxStuck. c.mu is held.
func (c *Client) roomLocked() int {
	return max(0, min(c.capLocked()-(c.workers-c.stuck), c.cfg.MaxConns+c.cfg.MaxStuck-c.workers))
}

// addWorkerLocked counts a new worker, to be run with go c.worker(w).
// c.mu is held.
func (c *Client) addWorkerLocked() *worker {
	w := &worker{index: len(c.all)}
	c.all = append(c.all, w)
	c.workers++
	c.starting++
	return w
}

// removeWorkerLocked forgets w, which is exiting. c.mu is held.
func (c *Client) removeWorkerLocked(w *worker) {
	last := c.all[len(c.all)-1]
	c.all[w.index], last.index = last, w.index
	c.all[len(c.all)-1] = nil
	c.all = c.all[:len(c.all)-1]
	c.workers--
}

// watchStuck marks calls in flight for longer than StuckAfter as stuck,
// every period, and starts workers for the queue in the room that frees.
// It holds c.mu for one pass over the workers (a few microseconds for
// thousands).
func (c *Client) watchStuck(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	limit := int64(c.cfg.StuckAfter)
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		now := Now()
		c.mu.Lock()
		marked := 0
		// With Adapt, a batch out adaptStuckPipelined is stuck, and so is
		// any call while the backend answers in a fraction of that: the
		// few sockets a fast backend gets must not wait StuckAfter for
		// each call that hangs.
		fast := c.cfg.Adapt && c.ad.isFast()
		for _, w := range c.all {
			if s := w.since.Load(); s != 0 && !w.stuck && (now-s >= limit || c.cfg.Adapt && (w.batch > 1 || fast) && now-s >= int64(adaptStuckPipelined)) {
				w.stuck = true
				marked++
				if w.lone {
					w.lone = false
					c.lone--
				}
			}
		}
		if marked == 0 {
			c.mu.Unlock()
			continue
		}
		c.stuck += marked
		c.stuckNow.Store(int64(c.stuck))
		if c.queued > 0 && c.idle > 0 {
			// Idle workers above the limit (Adapt) may take a call now.
			c.cond.Broadcast()
		}
		var start []*worker
		for n := min(c.queued-c.idle-c.starting, c.roomLocked()); n > 0; n-- {
			start = append(start, c.addWorkerLocked())
		}
		c.mu.Unlock()
		for _, w := range start {
			go c.worker(w)
		}
	}
}

// retireEvery is how often workers no call needed are let go.
var retireEvery = 5 * time.Second

// retireIdle lets workers go that stayed idle through a whole period:
// after a burst (a reconnect storm's GETs) an idle bridge holds no more
// goroutines, stacks and backend sockets than its steady load needs.
func (c *Client) retireIdle(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		if n := min(c.minIdle, c.idle) - c.retire; n > 0 {
			c.retire += n
			c.woken = min(c.idle, c.woken+n)
			for range n {
				c.cond.Signal()
			}
		}
		c.minIdle = c.idle
		c.mu.Unlock()
	}
}

// requeue puts calls back at the front of the queue, in order: a server
// closed the connection they were pipelined on without processing them.
func (c *Client) requeue(calls []*Call) {
	c.mu.Lock()
	for i := len(calls) - 1; i >= 0; i-- {
		call := calls[i]
		call.next = c.head
		c.head = call
		if c.tail == nil {
			c.tail = call
		}
		c.queued++
		if call.first() {
			c.lone++
		}
	}
	c.wakeAndUnlock(len(calls))
}

// worker runs calls on its own connection until Close, until it is
// retired idle, or until its stuck call ends while enough workers that are
// not stuck serve the queue. Workers are started on demand, so an idle
// bridge holds few goroutines. With pipelining a worker takes up to
// Pipeline waiting calls at a time, otherwise one.
func (c *Client) worker(w *worker) {
	batch := make([]*Call, 0, c.cfg.Pipeline)
	errs := make([]error, c.cfg.Pipeline)
	c.mu.Lock()
	c.starting--
	for {
		// With Adapt a worker above the limit waits idle rather than
		// exit: the limit moves often, and a socket closed at every move
		// is a connect and a TIME_WAIT each (thousands a second against
		// a saturated backend). retireIdle lets go of what stays idle.
		for (c.head == nil || c.overCapLocked()) && !c.closed && c.retire == 0 {
			c.idle++
			c.cond.Wait()
			c.idle--
			c.woken = max(0, c.woken-1)
		}
		if (c.head == nil || c.overCapLocked()) && (c.closed || c.retire > 0) {
			if !c.closed {
				c.retire--
			}
			break
		}
		// Leave a call for every idle worker that may take one (woken
		// ones included: they count as idle until they hold the lock),
		// every worker still starting and every one that may still start:
		// a batch is only what no connection could take now. Without
		// Adapt, no batches while a call is stuck: what is pipelined
		// behind a stuck call is stuck with it. With Adapt batches hold
		// only trusted calls (below), so they go on forming.
		n := 1
		if c.cfg.Pipeline > 1 && (c.stuck == 0 || c.cfg.Adapt) && !c.noPipeline.Load() {
			// Idle workers above the limit cannot take a call.
			free := max(0, min(c.idle, c.capLocked()-(c.workers-c.idle-c.starting-c.stuck)))
			waiting, depth := c.queued-free-c.starting-c.roomLocked(), c.depthLocked()
			if depth == 1 && c.queued > 1 {
				// A probe takes calls a socket could take: while the
				// backend is not found fast every socket is allowed, so
				// no call waits for one (adapt.go).
				if depth = max(1, c.probeLocked()); depth > 1 {
					waiting = c.queued
				}
			}
			n = max(1, min(waiting, depth))
		}
		// Only trusted calls (Session) share a batch: a call no fast
		// answer vouches for goes alone. A server may hold the answers
		// ahead of a call that hangs until it ends (fasthttp's flushes when
		// it has read every request), so it cannot go last either.
		batch = append(batch[:0], c.pop())
		for len(batch) < n && batch[0].trusted && c.head != nil && c.head.trusted {
			batch = append(batch, c.pop())
		}
		n = len(batch)
		// Calls still waiting with no worker free to take them: start the
		// next worker, so that a burst which found one idle worker fans out
		// instead of waiting in line behind it.
		var next *worker
		if c.queued > c.idle-c.woken+c.starting && c.roomLocked() > 0 {
			next = c.addWorkerLocked()
		}
		w.since.Store(Now())
		w.batch = n
		w.lone = batch[0].first() // counted in c.lone since it was queued
		c.mu.Unlock()
		if next != nil {
			go c.worker(next)
		}
		took := c.doBatch(&w.p, batch, errs)
		clear(batch) // do not keep finished calls reachable
		w.since.Store(0)
		c.mu.Lock()
		if took > 0 {
			c.timedLocked(took, n, c.workers-c.idle-c.starting-c.stuck)
		}
		if w.lone {
			w.lone = false
			c.lone--
		}
		if w.stuck {
			w.stuck = false
			c.stuck--
			c.stuckNow.Store(int64(c.stuck))
		}
		if !c.cfg.Adapt && c.workers-c.stuck > c.capLocked() {
			break // started in the room of a stuck call that has now ended
		}
	}
	c.removeWorkerLocked(w)
	c.mu.Unlock()
	w.p.close()
}

// overCapLocked reports whether a worker that is not idle would take the
// busy workers past the limit by taking a call (Adapt only). c.mu is held.
func (c *Client) overCapLocked() bool {
	return c.cfg.Adapt && c.workers-c.idle-c.starting-c.stuck > c.capLocked()
}

// pop takes the call at the head of the non-empty queue; c.mu is held.
func (c *Client) pop() *Call {
	call := c.head
	c.head = call.next
	if c.head == nil {
		c.tail = nil
	}
	call.next = nil
	c.queued--
	return call
}

// finish classifies an attempt that started at start and ended with err
// (nil when the backend answered), then completes the call or schedules
// a DELETE's retry.
func (c *Client) finish(call *Call, start time.Time, err error) {
	call.Err = err
	call.Outcome = c.classify(call)
	c.observe(call, time.Since(start))
	switch {
	case isStale(call):
		// A socket the backend dropped says nothing about the backend.
	case backendDown(call):
		if c.breaker.failure(time.Now()) {
			c.opened(call)
		}
	default:
		if closed, openFor := c.breaker.success(time.Now()); closed {
			c.closedCircuit(openFor, call.Method.String()+" "+string(call.Outcome))
		}
	}
	// A DELETE is tried again only when the backend cannot be acting on it
	// (not sent, refused, or answered with an error), never after it went
	// unanswered within the timeout: sent twice, it would reach the backend twice.
	if call.Method == DELETE && call.Outcome != OutcomeOK && !errors.Is(err, fasthttp.ErrTimeout) && int(call.attempt)+1 < c.cfg.DeleteAttempts {
		call.attempt++
		delay := time.Duration(call.attempt) * time.Duration(call.attempt) * 250 * time.Millisecond
		if ce := c.log.Check(zap.DebugLevel, "retrying DELETE"); ce != nil {
			ce.Write(zap.Int("attempt", int(call.attempt)), zap.Duration("in", delay), zap.Error(err))
		}
		time.AfterFunc(delay, func() { c.enqueue(call) })
		return
	}
	c.complete(call)
}

func (c *Client) complete(call *Call) {
	call.Owner.Complete(call)
	c.pending.Add(-1)
}

func (c *Client) observe(call *Call, d time.Duration) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(call.Method, call.Outcome, d)
	}
}

var (
	ctOctetStream = []byte("application/octet-stream")
	bodyOK        = []byte("ok")
)

func (c *Client) classify(call *Call) Outcome {
	if call.Err != nil {
		if errors.Is(call.Err, fasthttp.ErrTimeout) || errors.Is(call.Err, fasthttp.ErrDialTimeout) ||
			errors.Is(call.Err, fasthttp.ErrNoFreeConns) {
			return OutcomeTimeout
		}
		return OutcomeUnreachable
	}
	status := call.Resp.StatusCode()
	switch {
	case status >= 200 && status < 300:
	case status >= 400 && status < 500 && call.Method == GET:
		return OutcomeRefused
	default:
		return OutcomeError
	}
	body := call.Resp.Body()
	switch call.Method {
	case GET:
		if !bytes.Equal(protocol.TrimASCIISpace(body), bodyOK) {
			return OutcomeRefused
		}
	case POST:
		if call.batch != nil {
			return call.batch.parse(call)
		}
		if len(body) > 0 && !IsBinary(&call.Resp) && !utf8.Valid(body) {
			return OutcomeBadReply
		}
	}
	return OutcomeOK
}

// backendDown reports whether call failed in a way that says the backend
// itself is down or overloaded, as opposed to an application error: only
// these count towards opening the circuit.
func backendDown(call *Call) bool {
	switch call.Outcome {
	case OutcomeUnreachable, OutcomeTimeout:
		return true
	case OutcomeError:
		s := call.Resp.StatusCode()
		return s == fasthttp.StatusBadGateway || s == fasthttp.StatusServiceUnavailable ||
			s == fasthttp.StatusGatewayTimeout
	}
	return false
}

// IsBinary reports whether a POST reply is to be sent as a binary message
// (protocol.IsBinaryContentType, the rule pushes follow too).
func IsBinary(resp *fasthttp.Response) bool {
	return protocol.IsBinaryContentType(resp.Header.ContentType())
}

// Close stops the workers once the queue is empty. Calls submitted after
// Close are not run.
func (c *Client) Close() {
	if c.bat != nil {
		c.bat.flush()
	}
	c.mu.Lock()
	if !c.closed {
		close(c.stop)
	}
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// MaxConns returns the bound on backend sockets: MaxConns plus MaxStuck.
// The engine reserves that many file descriptors for them.
func (c *Client) MaxConns() int { return c.cfg.MaxConns + c.cfg.MaxStuck }

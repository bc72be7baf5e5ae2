package bridge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// done collects finished calls.
type done chan *Call

func (d done) Complete(c *Call) { d <- c }

func (d done) wait(t *testing.T, n int) []*Call {
	t.Helper()
	out := make([]*Call, 0, n)
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case c := <-d:
			out = append(out, c)
		case <-deadline:
			t.Fatalf("%d of %d calls finished", len(out), n)
		}
	}
	return out
}

func newClient(t *testing.T, addr string, cfg Config) *Client {
	t.Helper()
	cfg.Backend = "http://" + addr + "/api/"
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func post(c *Client, owner Completer, id, body string) *Call {
	call := AcquireCall()
	call.Owner = owner
	c.PreparePOST(call, Ids{ClientID: []byte(id), ConnID: []byte("1")}, false)
	call.Req.SetBodyString(body)
	call.trusted = true // as a Session sets it after a fast answer
	return call
}

// submitAll queues calls before any worker can take one, so a worker
// with free pipeline depth sees all of them at once.
func submitAll(c *Client, calls []*Call) {
	c.mu.Lock()
	for _, call := range calls {
		c.pending.Add(1)
		c.pushLocked(call)
	}
	c.wakeAndUnlock(len(calls))
}

// countingListener counts the reads the server side makes: pipelined
// requests arrive many to a read.
type countingListener struct {
	net.Listener
	reads, conns atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.conns.Add(1)
		c = &countingConn{Conn: c, l: l}
	}
	return c, err
}

type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.l.reads.Add(1)
	}
	return n, err
}

func echoServer(t testing.TB, h fasthttp.RequestHandler) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	if h == nil {
		h = func(ctx *fasthttp.RequestCtx) { ctx.SetBody(ctx.PostBody()) }
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(cl) //nolint:errcheck
	t.Cleanup(func() { _ = srv.Shutdown() })
	return cl
}

func TestPipelineBatches(t *testing.T) {
	ln := echoServer(t, nil)
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 2, Pipeline: 16, Timeout: 5 * time.Second})
	d := make(done, 400)
	const n = 400
	for i := range n {
		c.Submit(post(c, d, "id"+strconv.Itoa(i), "message "+strconv.Itoa(i)))
	}
	for _, call := range d.wait(t, n) {
		if call.Outcome != OutcomeOK {
			t.Fatalf("outcome %s: %v", call.Outcome, call.Err)
		}
		id := string(call.Req.URI().LastPathSegment())
		if want := "message " + id[2:]; string(call.Resp.Body()) != want {
			t.Fatalf("%s got %q, want %q", id, call.Resp.Body(), want)
		}
		ReleaseCall(call)
	}
	if got := ln.conns.Load(); got > 2 {
		t.Fatalf("%d backend connections, want at most 2", got)
	}
	// One request per read would be 400 reads.
	if got := ln.reads.Load(); got > n/3 {
		t.Fatalf("the backend read %d times for %d requests: they were not pipelined", got, n)
	}
	t.Logf("%d requests in %d reads on %d connections", n, ln.reads.Load(), ln.conns.Load())
}

// A call no fast answer vouches for (a connection's first message, or
// one after a slow answer) goes alone: the calls queued around it are
// pipelined together and answered while it hangs.
func TestPipelineUntrustedGoesAlone(t *testing.T) {
	release := make(chan struct{})
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/api/slow" {
			<-release
		}
		ctx.SetBody(ctx.PostBody())
	})
	defer close(release)
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 2, Pipeline: 8, Timeout: 10 * time.Second})
	d := make(done, 8)
	slow := post(c, d, "slow", "s")
	slow.trusted = false
	calls := []*Call{post(c, d, "a", "a"), post(c, d, "b", "b"), slow, post(c, d, "c", "c"), post(c, d, "e", "e")}
	submitAll(c, calls)
	for _, call := range d.wait(t, 4) {
		if id := string(call.Req.URI().LastPathSegment()); call.Outcome != OutcomeOK || id == "slow" {
			t.Fatalf("%s: outcome %s (%v)", id, call.Outcome, call.Err)
		}
		ReleaseCall(call)
	}
	if got := c.Pipelined(); got < 2 {
		t.Fatalf("%d calls pipelined, want the trusted ones around the slow call (at least 2)", got)
	}
}

// A batch never takes a call a free connection could carry: a slow
// backend keeps its parallelism.
func TestPipelineKeepsParallelism(t *testing.T) {
	var inside, most atomic.Int64
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		now := inside.Add(1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		// Hold every request until four are inside at once (or give up).
		for end := time.Now().Add(3 * time.Second); most.Load() < 4 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		inside.Add(-1)
		ctx.SetBody(ctx.PostBody())
	})
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 4, Pipeline: 8, Timeout: 5 * time.Second})
	d := make(done, 4)
	for i := range 4 {
		c.Submit(post(c, d, "p"+strconv.Itoa(i), "x"))
	}
	for _, call := range d.wait(t, 4) {
		if call.Outcome != OutcomeOK {
			t.Fatalf("outcome %s: %v", call.Outcome, call.Err)
		}
		ReleaseCall(call)
	}
	if got := most.Load(); got != 4 {
		t.Fatalf("at most %d requests were at the backend at once, want 4: a batch took calls free connections could carry", got)
	}
}

// rawServer runs serve for every connection and counts the requests it
// reads, by ClientId.
type rawServer struct {
	ln   net.Listener
	mu   sync.Mutex
	seen map[string]int
}

func newRawServer(t *testing.T, serve func(s *rawServer, c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, seen: map[string]int{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(s, c, bufio.NewReader(c))
			}()
		}
	}()
	return s
}

// read reads one request and returns its ClientId and body.
func (s *rawServer) read(br *bufio.Reader) (id, body string, err error) {
	var req fasthttp.Request
	if err := req.Read(br); err != nil {
		return "", "", err
	}
	id = string(req.URI().LastPathSegment())
	s.mu.Lock()
	s.seen[id]++
	s.mu.Unlock()
	return id, string(req.Body()), nil
}

func (s *rawServer) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}

func answer(c net.Conn, body string, close bool) {
	hdr := ""
	if close {
		hdr = "Connection: close\r\n"
	}
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s", hdr, len(body), body)
}

// A server that answers one request per connection with "Connection:
// close" has processed nothing pipelined behind it: those requests are
// sent again on new connections, each exactly once in the end.
func TestPipelineConnectionClose(t *testing.T) {
	s := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader) {
		_, body, err := s.read(br)
		if err != nil {
			return
		}
		answer(c, body, true)
		// A well-behaved server half-closes and drains what follows
		// (nginx's lingering close) so the answer is not lost to a reset.
		c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, br)
	})
	c := newClient(t, s.ln.Addr().String(), Config{MaxConns: 1, Pipeline: 8, Timeout: 5 * time.Second})
	d := make(done, 5)
	calls := make([]*Call, 5)
	for i := range calls {
		calls[i] = post(c, d, "c"+strconv.Itoa(i), "m"+strconv.Itoa(i))
	}
	submitAll(c, calls)
	for _, call := range d.wait(t, 5) {
		id := string(call.Req.URI().LastPathSegment())
		if call.Outcome != OutcomeOK || string(call.Resp.Body()) != "m"+id[1:] {
			t.Fatalf("%s: outcome %s body %q err %v", id, call.Outcome, call.Resp.Body(), call.Err)
		}
		if n := s.count(id); n != 1 {
			t.Fatalf("%s reached the backend %d times, want 1", id, n)
		}
		ReleaseCall(call)
	}
	if !c.noPipeline.Load() {
		t.Fatal("a backend that closes after every answer is still pipelined to")
	}
}

// A connection that breaks fails every request on it without an answer,
// and none is sent twice: the backend may have processed them.
func TestPipelineBrokenConnection(t *testing.T) {
	s := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader) {
		var first string
		for i := range 4 {
			_, body, err := s.read(br)
			if err != nil {
				return
			}
			if i == 0 {
				first = body
			}
		}
		answer(c, first, false)
		c.(*net.TCPConn).SetLinger(0) // reset: no goodbye
	})
	c := newClient(t, s.ln.Addr().String(), Config{MaxConns: 1, Pipeline: 8, Timeout: 5 * time.Second})
	d := make(done, 4)
	calls := make([]*Call, 4)
	for i := range calls {
		calls[i] = post(c, d, "b"+strconv.Itoa(i), "m"+strconv.Itoa(i))
	}
	submitAll(c, calls)
	got := map[string]Outcome{}
	for _, call := range d.wait(t, 4) {
		got[string(call.Req.URI().LastPathSegment())] = call.Outcome
		ReleaseCall(call)
	}
	want := map[string]Outcome{"b0": OutcomeOK, "b1": OutcomeUnreachable, "b2": OutcomeUnreachable, "b3": OutcomeUnreachable}
	for id, o := range want {
		if got[id] != o {
			t.Fatalf("%s: outcome %q, want %q (all: %v)", id, got[id], o, got)
		}
		if n := s.count(id); n != 1 {
			t.Fatalf("%s reached the backend %d times, want 1", id, n)
		}
	}
}

// A backend that reads and never answers times the whole batch out.
func TestPipelineTimeout(t *testing.T) {
	s := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := s.read(br); err != nil {
				return
			}
		}
	})
	c := newClient(t, s.ln.Addr().String(), Config{MaxConns: 1, Pipeline: 8, Timeout: 300 * time.Millisecond})
	d := make(done, 3)
	calls := make([]*Call, 3)
	for i := range calls {
		calls[i] = post(c, d, "t"+strconv.Itoa(i), "m")
	}
	submitAll(c, calls)
	for _, call := range d.wait(t, 3) {
		if call.Outcome != OutcomeTimeout {
			t.Fatalf("outcome %q (%v), want timeout", call.Outcome, call.Err)
		}
		ReleaseCall(call)
	}
}

// Nothing listening: every call fails as unreachable, none hangs.
func TestPipelineUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, addr, Config{MaxConns: 2, Pipeline: 8, Timeout: 2 * time.Second})
	d := make(done, 5)
	for i := range 5 {
		c.Submit(post(c, d, "u"+strconv.Itoa(i), "m"))
	}
	for _, call := range d.wait(t, 5) {
		if call.Outcome != OutcomeUnreachable {
			t.Fatalf("outcome %q (%v), want unreachable", call.Outcome, call.Err)
		}
		ReleaseCall(call)
	}
}

// After a burst the workers it needed go away again, with their sockets,
// and the client still works.
func TestIdleWorkersRetire(t *testing.T) {
	for _, pipeline := range []int{1, 8} {
		t.Run("pipeline="+strconv.Itoa(pipeline), func(t *testing.T) {
			defer func(d time.Duration) { retireEvery = d }(retireEvery)
			retireEvery = 50 * time.Millisecond
			var inside atomic.Int64
			ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
				// Hold each request until 20 are inside at once, so the
				// burst needs 20 workers.
				inside.Add(1)
				for end := time.Now().Add(3 * time.Second); inside.Load() < 20 && time.Now().Before(end); {
					time.Sleep(time.Millisecond)
				}
				ctx.SetBody(ctx.PostBody())
			})
			c := newClient(t, ln.Addr().String(), Config{MaxConns: 64, Pipeline: pipeline, Timeout: 5 * time.Second})
			d := make(done, 20)
			for i := range 20 {
				c.Submit(post(c, d, "r"+strconv.Itoa(i), "x"))
			}
			for _, call := range d.wait(t, 20) {
				ReleaseCall(call)
			}
			workers := func() int {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.workers
			}
			if w := workers(); w < 20 {
				t.Fatalf("%d workers for a burst of 20 held calls", w)
			}
			for end := time.Now().Add(5 * time.Second); workers() > 0; {
				if time.Now().After(end) {
					t.Fatalf("%d idle workers still there", workers())
				}
				time.Sleep(10 * time.Millisecond)
			}
			c.Submit(post(c, d, "again", "y"))
			if call := d.wait(t, 1)[0]; call.Outcome != OutcomeOK || string(call.Resp.Body()) != "y" {
				t.Fatalf("after retirement: outcome %s body %q", call.Outcome, call.Resp.Body())
			}
		})
	}
}

// Answers without a body (204) keep the connection and the pipeline; an
// answer whose body runs to the end of the connection ends it, and what
// was pipelined behind it is sent again.
func TestPipelineNoContentAndUnframedAnswers(t *testing.T) {
	s := newRawServer(t, func(s *rawServer, c net.Conn, br *bufio.Reader) {
		for {
			id, body, err := s.read(br)
			if err != nil {
				return
			}
			if id == "unframed" {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n\r\n%s", body)
				c.(*net.TCPConn).CloseWrite()
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(io.Discard, br)
				return
			}
			if body == "" {
				fmt.Fprint(c, "HTTP/1.1 204 No Content\r\n\r\n")
			} else {
				answer(c, body, false)
			}
		}
	})
	c := newClient(t, s.ln.Addr().String(), Config{MaxConns: 1, Pipeline: 8, Timeout: 5 * time.Second})
	d := make(done, 6)
	calls := []*Call{
		post(c, d, "quiet1", ""), post(c, d, "loud1", "a"), post(c, d, "quiet2", ""),
		post(c, d, "unframed", "b"), post(c, d, "after1", "c"), post(c, d, "after2", "d"),
	}
	submitAll(c, calls)
	want := map[string]string{"quiet1": "", "loud1": "a", "quiet2": "", "unframed": "b", "after1": "c", "after2": "d"}
	for _, call := range d.wait(t, 6) {
		id := string(call.Req.URI().LastPathSegment())
		if call.Outcome != OutcomeOK || string(call.Resp.Body()) != want[id] {
			t.Fatalf("%s: outcome %s (%v) body %q, want %q", id, call.Outcome, call.Err, call.Resp.Body(), want[id])
		}
		if n := s.count(id); n != 1 {
			t.Fatalf("%s reached the backend %d times, want 1", id, n)
		}
		ReleaseCall(call)
	}
	if c.noPipeline.Load() {
		t.Fatal("pipelining was turned off, but the backend kept its connections")
	}
}

// A connection's first calls (the upgrade's GET, its first message) are
// never held to the few sockets -backend-adapt gives a fast backend: they
// go alone, so holding them back gains no batch, and when thousands of
// them hang at once (TestTroubleStuckFullSize) the calls behind them would
// wait for rounds of stuck-marking.
func TestAdaptFirstCallsFanOut(t *testing.T) {
	const n = 64
	var inside atomic.Int64
	release := make(chan struct{})
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		inside.Add(1)
		<-release
		ctx.SetBody(ctx.PostBody())
	})
	defer close(release)
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 256, Pipeline: 16, Adapt: true, Timeout: 10 * time.Second})
	c.mu.Lock()
	c.ad.limit = adaptMinLimit // as a fast backend leaves it
	c.mu.Unlock()
	d := make(done, n)
	calls := make([]*Call, n)
	for i := range calls {
		calls[i] = post(c, d, "first"+strconv.Itoa(i), "x")
		calls[i].trusted, calls[i].seq = false, 2
	}
	submitAll(c, calls)
	deadline := time.Now().Add(2 * time.Second)
	for inside.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d first calls reached the backend within 2s; the rest wait behind a limit of %d sockets",
				inside.Load(), n, adaptMinLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

// With -backend-adapt, workers above a lowered limit wait idle. When the
// calls within the limit hang and are found stuck, those idle workers take
// the queue: nothing waits for the hang to end.
func TestAdaptIdleWorkersServeAroundStuck(t *testing.T) {
	release := make(chan struct{})
	var hanging atomic.Int64
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.PostBody()) == "hang" {
			hanging.Add(1)
			<-release
		}
		ctx.SetBody(ctx.PostBody())
	})
	defer close(release)
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 64, Pipeline: 16, Adapt: true, Timeout: 20 * time.Second})
	fast := func(limit int) { // a fast backend, as far as the adapter knows
		c.mu.Lock()
		now := Now()
		c.ad.cur, c.ad.prev, c.ad.bucket = 50_000, 50_000, now
		for i := range c.ad.recent {
			c.ad.recent[i] = 50_000
		}
		c.ad.rn, c.ad.limit, c.ad.changed = recentSamples, limit, now+int64(time.Hour) // no changes of its own
		c.mu.Unlock()
	}
	// 32 workers, then a limit of 4: 28 of them wait idle above it.
	fast(32)
	d := make(done, 64)
	var calls []*Call
	for i := range 32 {
		calls = append(calls, post(c, d, "w"+strconv.Itoa(i), "x"))
	}
	submitAll(c, calls)
	for _, call := range d.wait(t, 32) {
		ReleaseCall(call)
	}
	fast(4)
	for i := range 4 { // one at a time: on four sockets, the limit
		c.Submit(post(c, d, "h"+strconv.Itoa(i), "hang"))
		waitCond(t, func() bool { return hanging.Load() == int64(i+1) })
	}
	var quick []*Call
	for i := range 8 {
		quick = append(quick, post(c, d, "q"+strconv.Itoa(i), "quick"))
	}
	submitAll(c, quick)
	deadline := time.After(5 * time.Second)
	for got := 0; got < 8; {
		select {
		case call := <-d:
			if string(call.Resp.Body()) != "quick" {
				t.Fatalf("a hanging call finished: %q", call.Resp.Body())
			}
			ReleaseCall(call)
			got++
		case <-deadline:
			c.mu.Lock()
			st := fmt.Sprintf("queued %d idle %d woken %d workers %d starting %d stuck %d cap %d fast %v lone %d", c.queued, c.idle, c.woken, c.workers, c.starting, c.stuck, c.capLocked(), c.ad.isFast(), c.lone)
			c.mu.Unlock()
			t.Fatalf("%d of 8 quick calls answered in 5 s while 4 calls within the limit hang; %s", got, st)
		}
	}
}

func waitCond(t *testing.T, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !ok(); {
		if time.Now().After(end) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

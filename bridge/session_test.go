package bridge

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// owner hands finished calls to the test, which plays the event loop.
type owner struct{ done }

func (owner) Finished(Reply) {}

// A connection's call may share a pipelined batch only after the
// connection's last POST came back fast: not its first message, and not
// the one after a slow answer.
func TestSessionTrust(t *testing.T) {
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.PostBody()) == "slow" {
			time.Sleep(3 * adaptTrusted)
		}
		ctx.SetBody(ctx.PostBody())
	})
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 2, Pipeline: 8, Adapt: true, Timeout: 5 * time.Second})
	sendTrusted(t, NewLoop(c, "t", new(atomic.Int64)), []trustStep{
		{"first", false}, // nothing vouches for it yet
		{"fast", true},
		{"slow", true},   // the answer before it was fast
		{"after", false}, // the answer before it was slow
		{"again", true},
	})
}

// trustStep is a message and whether its call should be trusted.
type trustStep struct {
	body    string
	trusted bool
}

// sendTrusted sends the steps' messages one after the other on one
// connection through l and checks each call's trust.
func sendTrusted(t *testing.T, l *Loop, steps []trustStep) {
	t.Helper()
	o := owner{make(done, 1)}
	var s Session
	s.Begin(1, []byte("client"), []byte("127.0.0.1"), nil)
	for i, step := range steps {
		s.Message(l, o, []byte(step.body), true, true, false)
		call := o.wait(t, 1)[0]
		if call.trusted != step.trusted || call.Outcome != OutcomeOK {
			t.Fatalf("message %d (%s): trusted %v, outcome %s; want trusted %v, ok", i, step.body, call.trusted, call.Outcome, step.trusted)
		}
		s.Finish(l, call, o)
	}
}

// Trust is relative to how long calls take: on a machine so busy that
// every call takes 15 ms, a POST answered in 30 ms still vouches for its
// connection's next call, and one answered in 150 ms does not. One call
// that hung for seconds moves the bar little.
func TestSessionTrustRelative(t *testing.T) {
	ln := echoServer(t, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.PostBody()) {
		case "busy":
			time.Sleep(3 * adaptTrusted)
		case "slow":
			time.Sleep(15 * adaptTrusted)
		}
		ctx.SetBody(ctx.PostBody())
	})
	c := newClient(t, ln.Addr().String(), Config{MaxConns: 2, Pipeline: 8, Adapt: true, Timeout: 5 * time.Second})
	c.mu.Lock()
	now := Now()
	for range 200 {
		c.timedAt(now, int64(15*time.Millisecond), 1, 1)
	}
	c.timedAt(now, int64(5*time.Second), 1, 1) // a call that hung
	c.mu.Unlock()
	if got := time.Duration(c.TrustWithin()); got < 40*time.Millisecond || got > 100*time.Millisecond {
		t.Fatalf("calls of 15 ms (and one of 5 s): trusted within %v, want about 4 × 15 ms", got)
	}
	sendTrusted(t, NewLoop(c, "t", new(atomic.Int64)), []trustStep{
		{"first", false},
		{"busy", true},   // the answer before it was fast
		{"slow", true},   // the answer before it took 30 ms: slow, but not for this machine
		{"after", false}, // the answer before it took 150 ms: slow even here
		{"again", true},
	})
}

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
	l := NewLoop(c, "t", new(atomic.Int64))
	o := owner{make(done, 1)}
	var s Session
	s.Begin(1, []byte("client"), []byte("127.0.0.1"), nil)
	for i, step := range []struct {
		body    string
		trusted bool
	}{
		{"first", false}, // nothing vouches for it yet
		{"fast", true},
		{"slow", true},   // the answer before it was fast
		{"after", false}, // the answer before it was slow
		{"again", true},
	} {
		s.Message(l, o, []byte(step.body), true, true, false)
		call := o.wait(t, 1)[0]
		if call.trusted != step.trusted || call.Outcome != OutcomeOK {
			t.Fatalf("message %d (%s): trusted %v, outcome %s; want trusted %v, ok", i, step.body, call.trusted, call.Outcome, step.trusted)
		}
		s.Finish(l, call, o)
	}
}

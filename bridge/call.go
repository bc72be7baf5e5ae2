package bridge

import (
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Method is the kind of backend call.
type Method uint8

// The three backend calls of the protocol.
const (
	GET Method = iota
	POST
	DELETE
	numMethods
)

// String returns the HTTP method name, which is also the metric label.
func (m Method) String() string {
	switch m {
	case GET:
		return "GET"
	case POST:
		return "POST"
	case DELETE:
		return "DELETE"
	}
	return "UNKNOWN"
}

// Methods lists every Method, for metric registration.
var Methods = [numMethods]Method{GET, POST, DELETE}

// Completer receives a finished Call. Complete runs on a bridge worker
// goroutine: it must not block and must not touch a gnet connection; the
// engine's implementation only queues the call for the connection's event
// loop.
type Completer interface {
	Complete(*Call)
}

// Call is one backend request and its response. Calls are pooled: get one
// with AcquireCall and give it back with ReleaseCall once the response has
// been used; it is forbidden to touch a Call, its Req or its Resp after
// ReleaseCall.
type Call struct {
	Req  fasthttp.Request
	Resp fasthttp.Response

	// Method is set by the Prepare* functions.
	Method Method
	// Owner gets the call back when it is finished.
	Owner Completer
	// Err is the transport error of the last attempt (nil when the backend
	// answered, whatever the status).
	Err error
	// Outcome classifies the finished call; it is also the metric label.
	Outcome Outcome
	// Received is for the engine: when the message this POST carries was
	// read whole (Now). Sent and Answered are set by the worker for the
	// last attempt: when its request started out and when its answer had
	// been read (0 if it got none). Received to the reply's write, minus
	// Answered − Sent, is the latency the bridge itself adds.
	Received, Sent, Answered int64

	next       *Call // queue link: worker queue or a Pipeline
	attempt    uint8
	staleRetry bool   // sent again once after a stale socket (stale.go)
	trusted    bool   // its connection's last POST was answered fast: it may share a pipelined batch (Session)
	seq        uint32 // Wsbridge-Seq, set by the Session on the loop (sign.go)
	start      time.Time
	scratch    []byte // URI and header value building, reused
	sig        []byte // the signed headers' values, built by the worker (sign.go)
	batch      *batch // set on a batch request (batch.go)
}

// first reports whether c is one of its connection's first calls (the
// upgrade's GET, the first message's POST, or the DELETE of a connection
// that sent nothing): nothing has vouched for it yet, nor told against it
// (adapt.go).
func (c *Call) first() bool { return !c.trusted && c.seq <= 2 && c.seq != 0 }

var epoch = time.Now()

// Now is a monotonic clock in nanoseconds for the Call timestamps.
func Now() int64 { return int64(time.Since(epoch)) }

var callPool = sync.Pool{New: func() any { return new(Call) }}

// AcquireCall returns an empty Call from the pool.
func AcquireCall() *Call { return callPool.Get().(*Call) }

// ReleaseCall resets c and returns it to the pool. The caller must not use
// c, c.Req or c.Resp afterwards.
func ReleaseCall(c *Call) {
	c.Req.Reset()
	c.Resp.Reset()
	c.Method = GET
	c.Owner = nil
	c.Err = nil
	c.Outcome = ""
	c.Received, c.Sent, c.Answered = 0, 0, 0
	c.next = nil
	c.attempt = 0
	c.staleRetry = false
	c.trusted = false
	c.seq = 0
	c.batch = nil
	c.start = time.Time{}
	if cap(c.scratch) > 4096 {
		c.scratch = nil
	} else {
		c.scratch = c.scratch[:0]
	}
	if cap(c.sig) > 4096 {
		c.sig = nil
	} else {
		c.sig = c.sig[:0]
	}
	callPool.Put(c)
}

package engine

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// recConn is a gnet.Conn that counts what is written to it; the admin
// path calls nothing else.
type recConn struct {
	gnet.Conn
	writes atomic.Int32
}

func (r *recConn) Write(b []byte) (int, error) { r.writes.Add(1); return len(b), nil }
func (r *recConn) OutboundBuffered() int       { return 0 }
func (r *recConn) RemoteAddr() net.Addr        { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// TestAdminCallGivenUpIsNotRun: an admin call that stops waiting for a
// stalled loop answers 503, and the loop, when it catches up, leaves the
// request alone: the push is not delivered after all, and the admin
// goroutine and the loop never both write the request (a data race under
// -race).
func TestAdminCallGivenUpIsNotRun(t *testing.T) {
	const stall = 500 * time.Millisecond // far past adminWait, even on a loaded machine
	defer func(d time.Duration) { adminWait = d }(adminWait)
	adminWait = 10 * time.Millisecond
	s := &Server{reg: newRegistry(), metrics: NewMetrics(), cfg: Config{MaxOutbound: 1 << 20}}
	l := fakeLoop() // its mailbox is run by the goroutine below
	l.srv = s
	gc := &recConn{}
	c := newTestConn(l, 1, "x")
	c.gc, c.phase = gc, phOpen
	s.reg.arrive(c)
	s.reg.accepted(c)

	// A loop that takes each admin task only long after its caller gave
	// up, with nothing else ordering the two goroutines.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < 2; {
			ts := takeTasks(l)
			if len(ts) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			time.Sleep(stall)
			for i := range ts {
				l.run(&ts[i])
				n++
			}
		}
	}()
	if got := s.Push([]byte("x"), []byte("late"), false); got != 503 {
		t.Fatalf("push to a stalled loop: got %d, want 503", got)
	}
	if _, ok := s.Lookup([]byte("x")); ok {
		t.Fatal("lookup on a stalled loop: got ok, want not found")
	}
	<-done
	if n := gc.writes.Load(); n != 0 {
		t.Fatalf("push answered 503 reached the client anyway: got %d writes, want 0", n)
	}
	if c.msgsOut != 0 {
		t.Fatalf("messages_out: got %d, want 0", c.msgsOut)
	}
}

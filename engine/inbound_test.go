package engine

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/protocol"
)

// scribbleConn is a gnet.Conn holding one inbound buffer. Like gnet's
// own, what Peek returns is a buffer that Discard hands back: here Discard
// overwrites it at once, as another event loop may do with gnet's pooled
// copy of a request that arrived in more than one read. Only the methods
// the engine calls on the handshake path are implemented.
type scribbleConn struct {
	gnet.Conn // nil: any other method panics
	in        []byte
	peeked    []byte // the last buffer Peek returned, invalid after Discard
	out       bytes.Buffer
	peer      net.Addr
}

func (f *scribbleConn) Peek(n int) ([]byte, error) {
	if n <= 0 || n > len(f.in) {
		n = len(f.in)
	}
	f.peeked = append([]byte(nil), f.in[:n]...)
	return f.peeked, nil
}

func (f *scribbleConn) Discard(n int) (int, error) {
	for i := range f.peeked {
		f.peeked[i] = 'Z'
	}
	f.peeked = nil
	if n <= 0 || n > len(f.in) {
		n = len(f.in)
	}
	f.in = f.in[n:]
	return n, nil
}

func (f *scribbleConn) InboundBuffered() int        { return len(f.in) }
func (f *scribbleConn) OutboundBuffered() int       { return 0 }
func (f *scribbleConn) Write(p []byte) (int, error) { return f.out.Write(p) }
func (f *scribbleConn) RemoteAddr() net.Addr        { return f.peer }

// newTestServer is a Server and one loop that are never started: enough to
// drive a conn's handlers directly. Its backend is never called unless the
// test submits to it.
func newTestServer(t *testing.T, cfg Config) (*Server, *loop) {
	t.Helper()
	bc, err := bridge.New(bridge.Config{Backend: "http://127.0.0.1:9/", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bc.Close)
	s, err := New(cfg, bc, NewMetrics(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, newLoop(s, nil)
}

// TestHandshakeCopiesBeforeDiscard: everything the GET and the 101 need
// from the upgrade request is copied before its bytes are discarded. gnet's
// Peek of a head that arrived in two reads returns a pooled buffer that
// Discard gives back to a pool shared by all loops; reading the request
// after Discard sent another connection's ClientId, key or Cookie.
func TestHandshakeCopiesBeforeDiscard(t *testing.T) {
	s, l := newTestServer(t, Config{})
	const id = "alice-1"
	// Another connection holds the ClientId, so this one's GET is prepared
	// and held, not sent: the test reads it from c.side.get.
	if ok, _, _ := s.reg.arrive(newTestConn(l, 1<<40, id)); !ok {
		t.Fatal("dummy owner not granted")
	}
	req := "GET /" + id + "?token=abc HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: chat\r\nOrigin: https://alice.example\r\n" +
		"Cookie: session=alice\r\nAuthorization: Bearer alice\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n"
	fc := &scribbleConn{in: []byte(req), peer: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 4000}}
	c := &conn{gc: fc, l: l}
	if a := c.readHandshake(); a != gnet.None {
		t.Fatalf("readHandshake: got action %v, want None (wrote %q)", a, fc.out.String())
	}
	if got := c.clientID(); got != id {
		t.Errorf("ClientId: got %q, want %q", got, id)
	}
	if c.phase != phHeld || c.side == nil || !c.side.get.Holding() {
		// Not held behind the dummy: its ClientId was not this request's.
		t.Fatalf("after the handshake: got phase %d, want %d (held) with a prepared GET", c.phase, phHeld)
	}
	if got := c.xff(); got != "10.1.2.3" {
		t.Errorf("X-Forwarded-For: got %q, want %q", got, "10.1.2.3")
	}
	if got := string(c.side.key[:]); got != "dGhlIHNhbXBsZSBub25jZQ==" {
		t.Errorf("Sec-WebSocket-Key: got %q, want the client's", got)
	}
	if c.side.offered != "chat" {
		t.Errorf("offered protocol: got %q, want %q", c.side.offered, "chat")
	}
	head := c.side.get.String()
	if got, want := head[:strings.Index(head, "\r\n")], "GET http://127.0.0.1:9/"+id+"?token=abc HTTP/1.1"; got != want {
		t.Errorf("GET request line: got %q, want %q", got, want)
	}
	for _, want := range []string{
		"Cookie: session=alice\r\n", "Authorization: Bearer alice\r\n",
		"Origin: https://alice.example\r\n", "Sec-Websocket-Protocol: chat\r\n",
	} {
		if !strings.Contains(head, want) {
			t.Errorf("GET head lacks %q:\n%s", want, head)
		}
	}
	if strings.Contains(head, "ZZ") {
		t.Errorf("GET head carries bytes written after Discard:\n%s", head)
	}
	c.side.get.Drop()
}

// quietLoop is a gnet.EventLoop that drops what is posted to it.
type quietLoop struct{ gnet.EventLoop }

func (quietLoop) Execute(context.Context, gnet.Runnable) error { return nil }

// failingConn fails its first write of a pong and, as gnet does on a write
// error, closes the connection (OnClose) before Write returns.
type failingConn struct {
	scribbleConn
	c      *conn
	closed bool
}

func (f *failingConn) Write(p []byte) (int, error) {
	if f.closed {
		return 0, unix.EPIPE
	}
	if len(p) > 0 && ws.OpCode(p[0]&0x0f) == ws.OpPong {
		f.closed = true
		f.c.onClose()
		return 0, unix.EPIPE
	}
	return f.scribbleConn.Write(p)
}

// TestCloseDuringDecode: when a write inside readFrames fails and gnet
// closes the socket under it, onClose does not decode the same bytes a
// second time (readFrames has not consumed them yet): the messages before
// the failure are taken once, the rest are lost with the socket, and the
// connection ends as the socket did.
func TestCloseDuringDecode(t *testing.T) {
	s, l := newTestServer(t, Config{})
	l.el = quietLoop{}
	c := &conn{l: l, phase: phOpen, flags: fAccepted}
	c.sess.Begin(1, []byte("dup"), []byte("127.0.0.1"), nil)
	c.dec.MaxMessage = s.cfg.MaxMessage
	s.reg.arrive(c)
	s.reg.accepted(c)
	mask := [4]byte{1, 2, 3, 4}
	var in []byte
	in = protocol.AppendClientFrame(in, ws.OpText, true, mask, []byte("a"))
	in = protocol.AppendClientFrame(in, ws.OpPing, true, mask, []byte("p"))
	in = protocol.AppendClientFrame(in, ws.OpText, true, mask, []byte("b"))
	in = protocol.AppendClientFrame(in, ws.OpText, true, mask, []byte("c"))
	fc := &failingConn{scribbleConn: scribbleConn{in: in}, c: c}
	c.gc = fc
	c.readFrames()
	if c.msgsIn != 1 {
		t.Errorf("messages taken: got %d, want 1 (the one before the failed pong, once)", c.msgsIn)
	}
	if c.gc != nil || c.flags&(fEnded|fIntakeOver) != fEnded|fIntakeOver {
		t.Errorf("after the failed write: got gc %v, flags %#x, want the socket gone and the connection ended", c.gc, c.flags)
	}
}

package engine_test

import (
	"bytes"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// rawClients opens WebSocket connections to an engine with bare system
// calls, so that the test's side holds nothing on the Go heap per
// connection: the memory tests read the bridge's heap alone. Every socket
// is closed when the test ends (or by closeAll).
type rawClients struct {
	t    testing.TB
	sa   *unix.SockaddrInet4
	fds  []int
	req  []byte
	resp []byte
}

func newRawClients(t testing.TB, addr string) *rawClients {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &rawClients{t: t, sa: &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, resp: make([]byte, 4096)}
	t.Cleanup(r.closeAll)
	return r
}

func (r *rawClients) closeAll() {
	for _, fd := range r.fds {
		_ = unix.Close(fd)
	}
	r.fds = nil
}

// upgrade connects, asks for /<id> with the extra header lines (each
// ending in CRLF) and reads the response head, which must be a 101. It
// returns the socket and the head (valid until the next call).
func (r *rawClients) upgrade(id, extra string) (int, []byte) {
	t := r.t
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.fds = append(r.fds, fd)
	// A bridge that does not answer fails the read instead of hanging.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, r.sa); err != nil {
		t.Fatal(err)
	}
	r.req = append(r.req[:0], "GET /"...)
	r.req = append(r.req, id...)
	r.req = append(r.req, " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"...)
	r.req = append(r.req, extra...)
	r.req = append(r.req, "\r\n"...)
	if _, err := unix.Write(fd, r.req); err != nil {
		t.Fatal(err)
	}
	got := 0
	for !bytes.Contains(r.resp[:got], []byte("\r\n\r\n")) {
		k, err := unix.Read(fd, r.resp[got:])
		if err != nil || k == 0 {
			t.Fatalf("upgrade %s: read: %d bytes, %v; got %q so far", id, k, err, r.resp[:got])
		}
		got += k
	}
	if !bytes.HasPrefix(r.resp[:got], []byte("HTTP/1.1 101 ")) {
		t.Fatalf("upgrade %s: got %q, want a 101", id, r.resp[:got])
	}
	return fd, r.resp[:got]
}

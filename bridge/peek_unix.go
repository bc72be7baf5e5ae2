//go:build unix

package bridge

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// watch prepares nc, the plain TCP socket under p's connection, for alive.
// It allocates once per connection, never per call.
func (p *pconn) watch(nc net.Conn) {
	p.raw = nil
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	p.raw = raw
	if p.peekFn == nil {
		p.peekFn = func(fd uintptr) bool {
			n, err := peek(fd, p.peekBuf[:])
			// Nothing to read (EAGAIN) is the only healthy answer: n == 0
			// without an error is the backend's FIN, n > 0 bytes nobody asked
			// for, anything else a reset or worse.
			p.peekAlive = n <= 0 && err == unix.EAGAIN
			return true
		}
	}
}

// alive reports whether p's idle connection can carry a request: the
// backend has neither closed nor reset it, nor sent anything unasked. One
// non-blocking recv(MSG_PEEK); it never waits.
func (p *pconn) alive() bool {
	if p.raw == nil {
		return true
	}
	p.peekAlive = false
	if err := p.raw.Read(p.peekFn); err != nil {
		return false
	}
	return p.peekAlive
}

//go:build linux

package engine

import "golang.org/x/sys/unix"

// allSent reports whether everything written to the socket fd has left for
// the peer: nothing waits in the kernel's send queue unsent (SIOCOUTQNSD),
// as it does when the peer's receive window is full.
func allSent(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	return err == nil && n == 0
}

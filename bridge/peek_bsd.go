//go:build unix && !linux

package bridge

import "golang.org/x/sys/unix"

// peek is recv(fd, b, MSG_PEEK|MSG_DONTWAIT).
func peek(fd uintptr, b []byte) (int, error) {
	n, _, err := unix.Recvfrom(int(fd), b, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return n, err
}

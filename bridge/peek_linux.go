//go:build linux

package bridge

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// peek is recv(fd, b, MSG_PEEK|MSG_DONTWAIT) without unix.Recvfrom's
// source-address buffer, which escapes to the heap on every call.
func peek(fd uintptr, b []byte) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}

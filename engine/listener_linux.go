//go:build linux

package engine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// gnet has no way to stop accepting while its connections live on, and it
// stops the whole engine on any accept(2) error, so closing or shutting
// down its listener under it would kill every connection. stopAccepting
// therefore works on the sockets themselves:
//
//  1. With -reuseport, it first attaches a one-instruction classic BPF
//     program to the port's SO_REUSEPORT group that hands every new
//     connection to the first socket after this process's own (the next
//     process started with -reuseport), waits for this process's accept
//     queues to empty, and detaches the program.
//  2. It removes each listener from every epoll instance of the process
//     (found through /proc/self/fdinfo), so gnet never sees it again.
//  3. It shuts the listeners down (shutdown(SHUT_RD) on a listening socket
//     stops listening and leaves the SO_REUSEPORT group), so the kernel
//     sends new connections to the other processes on the port, or refuses
//     them when there are none.
//
// gnet keeps the file descriptors and closes them when it stops.
func stopAccepting(port int, reusePort bool) (int, error) {
	fds, err := listenerFDs(port)
	if err != nil {
		return 0, err
	}
	if len(fds) == 0 {
		return 0, fmt.Errorf("engine: no listening socket on port %d", port)
	}
	steered := false
	if reusePort {
		// Our sockets joined the group first, at indices 0..len(fds)-1; a
		// program returning an index past the end falls back to hashing.
		if err := steer(fds[0], uint32(len(fds))); err == nil {
			steered = true
			deadline := time.Now().Add(500 * time.Millisecond)
			for time.Now().Before(deadline) && backlog(fds) > 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
	// Unwatch while still steered (it reads /proc and takes a while), then
	// detach and shut down back to back: the window in which a new
	// connection can still be hashed to a socket about to go is a few
	// system calls long.
	var errs []error
	for _, fd := range fds {
		if err := unwatch(fd); err != nil {
			errs = append(errs, err)
		}
	}
	if steered {
		_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	}
	for _, fd := range fds {
		if err := unix.Shutdown(fd, unix.SHUT_RD); err != nil {
			errs = append(errs, fmt.Errorf("engine: shutdown listener fd %d: %w", fd, err))
		}
	}
	return len(fds), errors.Join(errs...)
}

// listenerFDs returns this process's listening TCP sockets on port.
func listenerFDs(port int) ([]int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("engine: list fds: %w", err)
	}
	var fds []int
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || v != unix.IPPROTO_TCP {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			if a.Port == port {
				fds = append(fds, fd)
			}
		case *unix.SockaddrInet6:
			if a.Port == port {
				fds = append(fds, fd)
			}
		}
	}
	return fds, nil
}

// unwatch removes fd from every epoll instance of this process that
// watches it.
func unwatch(fd int) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("engine: list fds: %w", err)
	}
	want := []byte("tfd:")
	for _, e := range ents {
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		epfd, _ := strconv.Atoi(e.Name())
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(info))
		for sc.Scan() {
			f := bytes.Fields(sc.Bytes())
			if len(f) >= 2 && bytes.Equal(f[0], want) {
				if n, _ := strconv.Atoi(string(f[1])); n == fd {
					if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil && err != unix.ENOENT {
						return fmt.Errorf("engine: remove listener fd %d from epoll %d: %w", fd, epfd, err)
					}
				}
			}
		}
	}
	return nil
}

// steer attaches to fd's SO_REUSEPORT group a classic BPF program that
// sends every new connection to the socket at index.
func steer(fd int, index uint32) error {
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: index}}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		return fmt.Errorf("engine: steer reuseport group: %w", err)
	}
	return nil
}

// backlog returns the connections waiting in the accept queues of fds (for
// a listening socket TCP_INFO's unacked is the accept queue length).
func backlog(fds []int) int {
	n := 0
	for _, fd := range fds {
		if ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n += int(ti.Unacked)
		}
	}
	return n
}

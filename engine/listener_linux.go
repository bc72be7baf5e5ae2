//go:build linux

package engine

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// gnet has no way to stop accepting while its connections live on, and it
// stops the whole engine on any accept(2) error, so closing or shutting
// down its listener under it would kill every connection. The engine
// therefore works on the sockets themselves: at start it notes the
// listening sockets on its port and the epoll instances of the process
// (findSockets), and when the drain begins stopAccepting
//
//  1. with -reuseport, attaches a one-instruction classic BPF program to
//     the port's SO_REUSEPORT group that hands every new connection to the
//     first socket after this process's own (the next process started with
//     -reuseport);
//  2. attaches a socket filter that drops every packet to this process's
//     listeners, so no new connection joins their accept queues (a client
//     whose SYN is dropped sends it again a second later, and meets the
//     next process or a refusal), and waits for gnet to accept what is
//     already queued: gnet's acceptor accepts until accept(2) says EAGAIN,
//     so under a flood of connects it would otherwise never stop;
//  3. removes each listener from every epoll instance, so gnet never sees
//     it again, and waits a moment for an acceptor that was already woken
//     to meet EAGAIN;
//  4. detaches the program and shuts the listeners down (shutdown(SHUT_RD)
//     on a listening socket stops listening and leaves the SO_REUSEPORT
//     group), so the kernel sends new connections to the other processes on
//     the port, or refuses them when there are none. An accept(2) on a
//     listener shut down fails with EINVAL, which would stop the engine:
//     steps 2 and 3 are what keep gnet from making one.
//
// gnet keeps the file descriptors and closes them when it stops.

// sockets are the listening sockets and epoll instances found at start.
type sockets struct {
	listeners []int
	epolls    []int       // the epoll instances that watch a listener
	watchers  map[int]int // listener → how many epoll instances watch it
}

// findSockets waits until each of the engine's listeners on port is
// watched by an epoll instance (gnet creates its loops after OnBoot), and
// notes the listeners and those instances.
func findSockets(port, wantListeners int) (sockets, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		s, err := scanSockets(port)
		if err != nil {
			return s, err
		}
		if len(s.listeners) >= wantListeners && s.watched() || time.Now().After(deadline) {
			if len(s.listeners) == 0 {
				return s, fmt.Errorf("engine: no listening socket on port %d", port)
			}
			return s, nil
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// watched reports whether every listener is in one of the epoll instances.
func (s *sockets) watched() bool {
	for _, fd := range s.listeners {
		if s.watchers[fd] == 0 {
			return false
		}
	}
	return true
}

func scanSockets(port int) (sockets, error) {
	s := sockets{watchers: map[int]int{}}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return s, fmt.Errorf("engine: list fds: %w", err)
	}
	var epolls []int
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case err != nil:
		case link == "anon_inode:[eventpoll]":
			epolls = append(epolls, fd)
		case strings.HasPrefix(link, "socket:") && isListener(fd, port):
			s.listeners = append(s.listeners, fd)
		}
	}
	// Keep the epoll instances that watch a listener ("tfd: N" lines).
	for _, ep := range epolls {
		info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(ep))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "tfd:" {
				continue
			}
			tfd, _ := strconv.Atoi(f[1])
			if slices.Contains(s.listeners, tfd) {
				s.watchers[tfd]++
				if !slices.Contains(s.epolls, ep) {
					s.epolls = append(s.epolls, ep)
				}
			}
		}
	}
	return s, nil
}

// isListener reports whether fd is a listening TCP socket on port.
func isListener(fd, port int) bool {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return false
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || v != unix.IPPROTO_TCP {
		return false
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port == port
	case *unix.SockaddrInet6:
		return a.Port == port
	}
	return false
}

func stopAccepting(s sockets, port int, reusePort bool) (int, error) {
	var fds []int
	for _, fd := range s.listeners {
		if isListener(fd, port) { // still ours
			fds = append(fds, fd)
		}
	}
	if len(fds) == 0 {
		return 0, fmt.Errorf("engine: no listening socket on port %d", port)
	}
	steered := false
	if reusePort {
		// Our sockets joined the group first, at indices 0..len(fds)-1; a
		// program returning an index past the end falls back to hashing.
		steered = steer(fds[0], uint32(len(fds))) == nil
	}
	var errs []error
	for _, fd := range fds {
		if err := dropAll(fd); err != nil {
			errs = append(errs, err)
		}
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) && backlog(fds) > 0 {
		time.Sleep(2 * time.Millisecond)
	}
	for _, fd := range fds {
		for _, ep := range s.epolls {
			if err := unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil); err != nil && err != unix.ENOENT && err != unix.EBADF {
				errs = append(errs, fmt.Errorf("engine: remove listener %d from epoll %d: %w", fd, ep, err))
			}
		}
	}
	// An acceptor woken before the removal runs on until accept(2) says
	// EAGAIN, which it now does at once: give it the moment.
	time.Sleep(acceptorGrace)
	// Detach and shut down back to back: the window in which a new
	// connection can still be hashed to a socket about to go is a few
	// system calls long.
	if steered {
		_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	}
	for _, fd := range fds {
		if err := unix.Shutdown(fd, unix.SHUT_RD); err != nil {
			errs = append(errs, fmt.Errorf("engine: shutdown listener %d: %w", fd, err))
		}
	}
	return len(fds), errors.Join(errs...)
}

// acceptorGrace is how long stopAccepting waits between taking the
// listeners out of epoll and shutting them down.
var acceptorGrace = 50 * time.Millisecond

// dropAll attaches to the listening socket fd a filter that drops every
// packet: no connection joins its queues any more.
func dropAll(fd int) error {
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("engine: filter listener %d: %w", fd, err)
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

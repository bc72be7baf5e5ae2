//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestHeartbeatDeadPeers: with -ping-interval 3s -pong-timeout 3s, 50
// clients that never read and never answer a ping are each done within
// interval + timeout + 1 s of their 101: the backend has their DELETE
// (4002), the client's socket is closed by the bridge, and the bridge holds
// no socket for it any more. Half of them are idle; the other half have a
// full receive window (a 4 KiB receive buffer, a 1 KiB MSS, and pushes
// until data waits in the bridge's own buffer), so that the bridge's ping
// and close frames wait behind data the client will never take.
//
// Budget: the bridge pings after the interval and gives up after the
// timeout; each timer can fire up to two 100 ms ticks late (its duration is
// rounded up to whole ticks, and the ticker's phase), so the second covers
// four ticks and a loaded 2-core machine. Times are measured from when the
// client read its 101, after the bridge started the connection's clock, so
// they can only come out short.
func TestHeartbeatDeadPeers(t *testing.T) {
	const (
		interval, timeout = 3 * time.Second, 3 * time.Second
		limit             = interval + timeout + time.Second
		n                 = 50
		pushSize          = 128 << 10 // more than a full client's kernels hold
		maxPushed         = 1 << 20   // under the default -max-outbound
	)
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-ping-interval", interval.String(), "-pong-timeout", timeout.String())

	type dead struct {
		id     string
		r      *raw
		full   bool      // its receive window is full
		opened time.Time // when it read its 101
		filled time.Time // when data waited in the bridge's buffer (full ones)
		inode  uint64    // the bridge's socket for it
		closed time.Time // when its socket saw the bridge's FIN or reset
		gone   time.Time // when the bridge no longer held its socket
	}
	chunk := strings.Repeat("x", pushSize)
	clients := make([]*dead, n)
	var wg sync.WaitGroup
	for i := range clients {
		d := &dead{id: fmt.Sprintf("dead-%d", i), full: i%2 == 1}
		clients[i] = d
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d.full {
				d.r = rawDialWindow(t, p.ws, 4<<10, 1<<10)
			} else {
				d.r = rawDial(t, p.ws)
			}
			d.r.send(upgradeRequest(d.id))
			if resp, body := d.r.response(); resp.StatusCode != 101 {
				t.Errorf("upgrade %s: got %d %q, want 101", d.id, resp.StatusCode, body)
				return
			}
			d.opened = time.Now()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	table := tcpTable(t)
	for _, d := range clients {
		s, ok := lookup(table, d.r.conn.RemoteAddr(), d.r.conn.LocalAddr())
		if !ok {
			t.Fatalf("%s: the bridge's socket is not in /proc/net/tcp", d.id)
		}
		d.inode = s.inode
		if d.full {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if fillWindow(t, p, d.id, d.r.conn, chunk, maxPushed) {
					d.filled = time.Now()
				}
			}()
		}
	}
	// The fills go on while the clients are watched: on a loaded machine
	// filling can take longer than the heartbeat, and the watch must not
	// start late (its times would come out late with it). The heartbeat
	// ends every fill (a push to a closed client gets 404).
	defer wg.Wait()
	pid := p.Cmd.Process.Pid
	var last time.Time
	for _, d := range clients {
		if d.opened.After(last) {
			last = d.opened
		}
	}
	watchUntil := last.Add(limit + 2*time.Second) // then report who is late
	waitFor(t, time.Until(watchUntil)+5*time.Second, func() error {
		held := bridgeSocketInodes(t, pid)
		now := time.Now()
		left := 0
		for _, d := range clients {
			if d.closed.IsZero() && peerClosed(t, d.r.conn) {
				d.closed = now
			}
			if d.gone.IsZero() && !held[d.inode] {
				d.gone = now
			}
			if d.closed.IsZero() || d.gone.IsZero() || count(b, d.id, "DELETE") == 0 {
				left++
			}
		}
		if left > 0 && now.Before(watchUntil) {
			return fmt.Errorf("%d of %d dead clients still connected or without DELETE", left, n)
		}
		return nil
	})

	wg.Wait()
	// Not a failure if some were filled late or not at all (a loaded
	// machine): then only the close frame waits behind the data, or
	// nothing does; the promise is the same.
	var slowFill time.Duration
	beforePing, full := 0, 0
	for _, d := range clients {
		if d.full {
			full++
			if !d.filled.IsZero() {
				slowFill = max(slowFill, d.filled.Sub(d.opened))
				if d.filled.Sub(d.opened) < interval {
					beforePing++
				}
			}
		}
	}
	t.Logf("%d of %d full clients' windows were full before the ping was due (%v); the slowest after %v",
		beforePing, full, interval, slowFill.Round(time.Millisecond))

	// What each dead client got, and how late the slowest was.
	what := [3]string{"DELETE sent", "client's socket closed", "bridge's socket closed"}
	var slowest [3]time.Duration
	var late [3][]string
	for _, d := range clients {
		var del time.Time
		for _, c := range b.Calls(d.id) {
			if c.Method == "DELETE" {
				requireEqual(t, d.id+" close code", c.CloseCode, "4002")
				del = c.At
			}
		}
		for i, at := range [3]time.Time{del, d.closed, d.gone} {
			never := ""
			if at.IsZero() {
				at, never = watchUntil, "not within "
			}
			took := at.Sub(d.opened)
			slowest[i] = max(slowest[i], took)
			if took > limit {
				late[i] = append(late[i], fmt.Sprintf("%s (full window %v) %s%v", d.id, d.full, never, took.Round(time.Millisecond)))
			}
		}
		if !d.full && !d.closed.IsZero() {
			// Idle: the ping, then the close frame, then the FIN.
			d.r.expectClose(4002)
			d.r.expectEOF()
		}
	}
	for i := range what {
		if len(late[i]) > 0 {
			t.Errorf("%s after more than %v for %d of %d clients: %s", what[i], limit, len(late[i]), n,
				strings.Join(late[i][:min(4, len(late[i]))], ", "))
		}
	}
	t.Logf("slowest of %d: %s %v, %s %v, %s %v (limit %v)", n,
		what[0], slowest[0].Round(time.Millisecond), what[1], slowest[1].Round(time.Millisecond),
		what[2], slowest[2].Round(time.Millisecond), limit)
}

// fillWindow pushes to id, whose client never reads, until 16 KiB more
// than the two kernels hold (the bridge's send queue and the client's
// receive queue) waits in the bridge's own buffer, so that whatever the
// bridge sends next waits too. It reports false if the bridge closed the
// connection first (a machine too loaded to fill it before the heartbeat).
func fillWindow(t testing.TB, p *proc, id string, c net.Conn, chunk string, maxPushed int) bool {
	pushed := 0
	for {
		if pushed >= maxPushed {
			t.Errorf("%s: %d KiB pushed and the bridge's buffer still empty", id, pushed>>10)
			return false
		}
		status, body, _ := p.adminDo(t, "POST", "/"+id, chunk)
		if status == 404 {
			return false
		}
		if status != 200 {
			t.Errorf("push to %s: got %d %q, want 200", id, status, body)
			return false
		}
		pushed += len(chunk) + 10 // and the frame header
		table := tcpTable(t)
		bridgeSide, _ := lookup(table, c.RemoteAddr(), c.LocalAddr())
		clientSide, _ := lookup(table, c.LocalAddr(), c.RemoteAddr())
		if pushed-bridgeSide.txQueue-clientSide.rxQueue >= 16<<10 {
			return true
		}
	}
}

// TestCloseWaitIgnoresLatePong: a client that answers a ping only after
// the bridge's close frame does not stretch the close wait to the ping
// interval: the socket goes, and the DELETE with it, after the close
// timeout (3 s).
func TestCloseWaitIgnoresLatePong(t *testing.T) {
	const (
		interval  = 6 * time.Second // longer than the close wait, or a reset to it would not show
		closeWait = 3 * time.Second
		limit     = closeWait + 2*time.Second // the ticks and a loaded machine; still short of interval
	)
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-ping-interval", interval.String(), "-pong-timeout", "30s")
	r := rawUpgrade(t, p.ws, "late")
	_ = r.conn.SetReadDeadline(time.Now().Add(interval + 10*time.Second))
	h, err := ws.ReadHeader(r.r)
	if err != nil || h.OpCode != ws.OpPing {
		t.Fatalf("waiting for the ping: got %v, %v", h.OpCode, err)
	}
	kicked := time.Now()
	status, _, _ := p.adminDo(t, "DELETE", "/late", "")
	requireEqual(t, "kick", status, 200)
	r.expectClose(4001)
	r.frame(ws.OpPong, true, nil) // the answer to the ping, late; no close reply
	del := waitCalls(t, b, "late", "DELETE", 1)[0]
	requireEqual(t, "close code", del.CloseCode, "4001")
	if took := del.At.Sub(kicked); took > limit {
		t.Fatalf("socket closed and DELETE sent %v after the close frame, want within %v", took.Round(time.Millisecond), limit)
	} else {
		t.Logf("socket closed and DELETE sent %v after the close frame", took.Round(time.Millisecond))
	}
}

// rawDialWindow is rawDial with the client's receive buffer (rcvbuf) and
// its MSS (mss) set before it connects: its TCP window stays that small,
// and the small segments keep the bridge's send buffer, which the kernel
// sizes from the MSS, small too.
func rawDialWindow(t testing.TB, addr string, rcvbuf, mss int) *raw {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss))
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, conn: c, r: bufio.NewReader(c)}
}

// peerClosed reports, without reading, whether the peer of c has closed
// (FIN) or reset the connection.
func peerClosed(t testing.TB, c net.Conn) bool {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	if err := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, _ := unix.Poll(fds, 0); n > 0 {
			closed = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	}); err != nil {
		t.Fatal(err)
	}
	return closed
}

// tcpSocket is one IPv4 socket's line in /proc/net/tcp.
type tcpSocket struct {
	txQueue, rxQueue int
	inode            uint64 // 0 once no process holds it
}

// tcpTable is the text of /proc/net/tcp.
func tcpTable(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lookup finds the socket with local and remote address in table. Only
// that line is parsed: the table may hold thousands of sockets of other
// tests on the machine.
func lookup(table string, local, remote net.Addr) (tcpSocket, bool) {
	hex := func(a net.Addr) string {
		ta := a.(*net.TCPAddr)
		ip := ta.IP.To4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ta.Port)
	}
	// sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
	i := strings.Index(table, " "+hex(local)+" "+hex(remote)+" ")
	if i < 0 {
		return tcpSocket{}, false
	}
	line, _, _ := strings.Cut(table[i:], "\n")
	f := strings.Fields(line)
	if len(f) < 9 {
		return tcpSocket{}, false
	}
	tx, rx, _ := strings.Cut(f[3], ":")
	txq, _ := strconv.ParseInt(tx, 16, 64)
	rxq, _ := strconv.ParseInt(rx, 16, 64)
	ino, _ := strconv.ParseUint(f[8], 10, 64)
	return tcpSocket{txQueue: int(txq), rxQueue: int(rxq), inode: ino}, true
}

// bridgeSocketInodes returns the inodes of the sockets process pid holds.
func bridgeSocketInodes(t testing.TB, pid int) map[uint64]bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	held := make(map[uint64]bool, len(ents))
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				held[ino] = true
			}
		}
	}
	return held
}

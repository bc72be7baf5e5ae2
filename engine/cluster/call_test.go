package cluster

import (
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// startNATS runs Debian's nats-server on a free loopback port.
func startNATS(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", port)
	if err := cmd.Start(); err != nil {
		t.Skipf("nats-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			return "nats://127.0.0.1:" + port
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// responder answers every request on subject with status after delay.
func responder(t *testing.T, url, subject string, status int, delay time.Duration) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		time.Sleep(delay)
		r := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
		r.Header.Set(hStatus, strconv.Itoa(status))
		_ = nc.PublishMsg(r)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestCallBestAnswer: while a ClientId passes from one node to another,
// two nodes may answer; a 404 from one must not hide the other's 200, and
// a release one node grants must not hide another's refusal.
func TestCallBestAnswer(t *testing.T) {
	url := startNATS(t)
	b, err := New(Config{URLs: url, NodeID: "me", Grace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.nc.Close() })

	st, _, err := b.call(opPush, "nobody", nats.Header{hOp: []string{opPush}}, nil)
	if err != nil || st != 404 {
		t.Fatalf("no responders: %d, %v; want 404", st, err)
	}
	st, _, err = b.call(opRelease, "nobody", nats.Header{hOp: []string{opRelease}}, nil)
	if err != nil || st != 1 {
		t.Fatalf("release, no responders: %d, %v; want 1 (nobody holds it)", st, err)
	}

	responder(t, url, Subject("two"), 404, 0)
	responder(t, url, Subject("two"), 200, 20*time.Millisecond)
	st, _, err = b.call(opPush, "two", nats.Header{hOp: []string{opPush}}, nil)
	if err != nil || st != 200 {
		t.Fatalf("a 404 and a later 200: %d, %v; want 200", st, err)
	}

	responder(t, url, Subject("rel"), 1, 0)
	responder(t, url, Subject("rel"), 0, 20*time.Millisecond)
	st, _, err = b.call(opRelease, "rel", nats.Header{hOp: []string{opRelease}}, nil)
	if err != nil || st != 0 {
		t.Fatalf("release granted by one node, refused by another: %d, %v; want 0", st, err)
	}

	responder(t, url, Subject("one404"), 404, 0)
	start := time.Now()
	st, _, err = b.call(opPush, "one404", nats.Header{hOp: []string{opPush}}, nil)
	if err != nil || st != 404 {
		t.Fatalf("a single 404: %d, %v", st, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a single 404 took %v: the grace, not the timeout, should end it", d)
	}
}

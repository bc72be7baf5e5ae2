// Package bridgetest builds and runs a real wsbridge binary for tests (the
// end-to-end tests of cmd/wsbridge, bench and its client): Build compiles
// it once per test binary, Start runs it on ephemeral ports (or the ones
// given) and learns its addresses from the "wsbridge listening" log line.
package bridgetest

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles cmd/wsbridge into dir and returns the binary's path.
func Build(dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "wsbridge")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/wsbridge/wsbridge/cmd/wsbridge")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("bridgetest: building wsbridge: %w", err)
	}
	return bin, nil
}

// RunWithBridge is a TestMain body: unless -short, it builds the wsbridge
// binary into a temporary directory and stores its path in *bin, then runs
// the tests and removes the directory. It returns the exit code.
func RunWithBridge(m *testing.M, bin *string) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "wsbridge-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = Build(dir, false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// Proc is a running wsbridge.
type Proc struct {
	Cmd    *exec.Cmd
	Listen string // host:port of the WebSocket listener
	Admin  string // host:port of the admin API

	mu     sync.Mutex
	logs   []string
	exited chan struct{}
	err    error
}

// Logs returns what the process logged so far.
func (p *Proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Err is how the process exited; valid once Exited is closed.
func (p *Proc) Err() error { return p.err }

// Start runs bin against backendURL. Unless args set them, -listen and
// -admin are ephemeral ports on 127.0.0.1. The process is killed at the
// end of the test if still running.
func Start(t testing.TB, bin, backendURL string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(bin, startArgs(backendURL, args)...), exited: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	stderr, err := p.Cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "wsbridge listening" {
				addrs <- [2]string{fmt.Sprint(m["listen"]), fmt.Sprint(m["admin"])}
			}
		}
		p.err = p.Cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.Cmd.Process.Kill()
			<-p.exited
		}
		if l := p.Logs(); strings.Contains(l, "WARNING: DATA RACE") || strings.Contains(l, "panic:") {
			t.Errorf("wsbridge logged a race or panic:\n%s", l)
		} else if t.Failed() {
			t.Logf("wsbridge log:\n%s", l)
		}
	})
	select {
	case a := <-addrs:
		p.Listen, p.Admin = a[0], a[1]
	case <-p.exited:
		t.Fatalf("wsbridge exited at start: %v\n%s", p.err, p.Logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("wsbridge did not start:\n%s", p.Logs())
	}
	return p
}

// startArgs is the command line Start runs: ephemeral -listen and -admin
// on 127.0.0.1 unless args give them (never the defaults, :7001 and
// 127.0.0.1:7002, which a bridge started by hand may hold), then args.
func startArgs(backendURL string, args []string) []string {
	full := []string{"-backend", backendURL, "-log-level", "info"}
	if !hasFlag(args, "listen") {
		full = append(full, "-listen", "127.0.0.1:0")
	}
	if !hasFlag(args, "admin") {
		full = append(full, "-admin", "127.0.0.1:0")
	}
	return append(full, args...)
}

// hasFlag reports whether args set the flag name (-name, --name, -name=v
// or --name=v; not a flag that merely starts with name, like -admin-token).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// Stop sends sig and waits up to timeout for the process to exit.
func (p *Proc) Stop(t testing.TB, sig syscall.Signal, timeout time.Duration) error {
	t.Helper()
	_ = p.Cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("wsbridge did not exit within %v after %v", timeout, sig)
		return nil
	}
}

// WaitFor polls cond every 10 ms until it returns nil, and fails the test
// with its last error after timeout.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
)

// bridgeBin is built once by TestMain (unless -short); wscat is built into
// wscatDir by the first test that needs it.
var bridgeBin, wscatDir string

func TestMain(m *testing.M) {
	code := bridgetest.RunWithBridge(m, &bridgeBin)
	if wscatDir != "" {
		os.RemoveAll(wscatDir)
	}
	os.Exit(code)
}

// buildWscat builds this command once, the first time a test needs it.
var buildWscat = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "wscat-test")
	if err != nil {
		return "", err
	}
	wscatDir = dir
	bin := filepath.Join(dir, "wscat")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building wscat: %w\n%s", err, out)
	}
	return bin, nil
})

// session is wscat running against a bridge.
type session struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, line by line
	stderr syncBuffer
	done   chan error
}

// syncBuffer is a bytes.Buffer that the process's stderr copier and the
// test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startSession(t *testing.T, url string) *session {
	t.Helper()
	if bridgeBin == "" {
		t.Skip("needs the wsbridge binary (not with -short)")
	}
	bin, err := buildWscat()
	if err != nil {
		t.Fatal(err)
	}
	s := &session{cmd: exec.Command(bin, url), lines: make(chan string, 16), done: make(chan error, 1)}
	s.cmd.Stderr = &s.stderr
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
		}
	})
	return s
}

// expectLine waits for the next line on stdout.
func (s *session) expectLine(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-s.lines:
		if got != want {
			t.Fatalf("stdout: got %q, want %q (stderr %q)", got, want, s.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("stdout: no %q after 10s (stderr %q)", want, s.stderr.String())
	}
}

// wait waits for wscat to exit and returns its exit code and stderr.
func (s *session) wait(t *testing.T) (int, string) {
	t.Helper()
	for range s.lines {
	}
	select {
	case err := <-s.done:
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, s.stderr.String()
	case <-time.After(10 * time.Second):
		t.Fatalf("wscat still running 10s on (stderr %q)", s.stderr.String())
		return 0, ""
	}
}

// TestCleanClose: Ctrl-D (stdin closed) ends the session with a close
// handshake that reads like one, exit status 0, and the backend sees the
// close code and reason.
func TestCleanClose(t *testing.T) {
	b, p := setup(t)
	s := startSession(t, "ws://"+p.Listen+"/cat")
	if _, err := io.WriteString(s.stdin, "hello\n"); err != nil {
		t.Fatal(err)
	}
	s.expectLine(t, "< hello") // the mock backend echoes
	s.stdin.Close()            // Ctrl-D
	code, stderr := s.wait(t)
	if code != 0 || !strings.Contains(stderr, "wscat: closed (1000)\n") || strings.Contains(stderr, "use of closed") {
		t.Fatalf("after Ctrl-D: exit %d, stderr %q; want exit 0 and \"wscat: closed (1000)\" (the bridge echoes the code alone)", code, stderr)
	}
	bridgetest.WaitFor(t, 10*time.Second, func() error {
		for _, c := range b.Calls("cat") {
			if c.Method == "DELETE" {
				if c.CloseCode != "1000" || string(c.Body) != "bye" {
					t.Fatalf("DELETE: got code %s reason %q, want 1000 \"bye\"", c.CloseCode, c.Body)
				}
				return nil
			}
		}
		return fmt.Errorf("no DELETE yet")
	})
}

// TestClosedByServer: a close the bridge starts (here an admin kick) is
// reported with its code and reason, exit status 0.
func TestClosedByServer(t *testing.T) {
	_, p := setup(t)
	s := startSession(t, "ws://"+p.Listen+"/kicked")
	if _, err := io.WriteString(s.stdin, "hi\n"); err != nil {
		t.Fatal(err)
	}
	s.expectLine(t, "< hi")
	req, _ := http.NewRequest("DELETE", "http://"+p.Admin+"/kicked?reason=go+away", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("kick: got %d, want 200", resp.StatusCode)
	}
	code, stderr := s.wait(t)
	if code != 0 || !strings.Contains(stderr, "wscat: closed by the server (4001 go away)") {
		t.Fatalf("after a kick: exit %d, stderr %q; want exit 0 and \"wscat: closed by the server (4001 go away)\"", code, stderr)
	}
}

func setup(t *testing.T) (*backend.Backend, *bridgetest.Proc) {
	t.Helper()
	if bridgeBin == "" {
		t.Skip("needs the wsbridge binary (not with -short)")
	}
	b, err := backend.Start(backend.Options{Record: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, bridgetest.Start(t, bridgeBin, b.URL)
}

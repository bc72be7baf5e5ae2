package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// sniffer is a TCP proxy between a client and the bridge that reads the
// WebSocket frames going each way after the handshake and counts data
// frames with and without RSV1: what a real client's library hides.
type sniffer struct {
	ln   net.Listener
	addr string // host:port to give the client instead of the bridge's

	mu              sync.Mutex
	in, out         [2]int // client→bridge and bridge→client data frames: [plain, RSV1]
	inMsg, outMsg   []int  // wire payload sizes of data frames
	handshakeExtOut string
	wg              sync.WaitGroup
}

func newSniffer(t *testing.T, target string) *sniffer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sniffer{ln: ln, addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			s.wg.Add(2)
			go s.pipe(c, b, true)
			go s.pipe(b, c, false)
		}
	}()
	return s
}

// pipe forwards src to dst, reading the frames on the way.
func (s *sniffer) pipe(src, dst net.Conn, fromClient bool) {
	defer s.wg.Done()
	defer dst.Close()
	defer src.Close()
	r := bufio.NewReader(io.TeeReader(src, dst))
	for { // the HTTP head
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if !fromClient && strings.HasPrefix(strings.ToLower(line), "sec-websocket-extensions:") {
			s.mu.Lock()
			s.handshakeExtOut = strings.TrimSpace(line[len("sec-websocket-extensions:"):])
			s.mu.Unlock()
		}
		if line == "\r\n" {
			break
		}
	}
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, r, h.Length); err != nil {
			return
		}
		if h.OpCode.IsControl() || h.OpCode == ws.OpContinuation {
			continue
		}
		k := 0
		if h.Rsv&0x4 != 0 {
			k = 1
		}
		s.mu.Lock()
		if fromClient {
			s.in[k]++
			s.inMsg = append(s.inMsg, int(h.Length))
		} else {
			s.out[k]++
			s.outMsg = append(s.outMsg, int(h.Length))
		}
		s.mu.Unlock()
	}
}

// TestDeflateRealClients: Python's websockets, node's ws and Chromium
// negotiate permessage-deflate with the built binary and round-trip big and
// small, text and binary messages; on the wire (a proxy reads the frames)
// the clients' messages and the bridge's big replies are compressed, its
// small ones plain, and the backend sees every message plain.
func TestDeflateRealClients(t *testing.T) {
	if testing.Short() {
		t.Skip("real clients: skipped with -short")
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "deflate"))
	if err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, backend.Options{Record: true})
	p := startBridge(t, b.URL, "-deflate", "-deflate-min", "256")

	npm := func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws", "package.json")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err == nil {
				return
			}
		}
		if _, err := exec.LookPath("npm"); err != nil {
			t.Skip("npm not found (Node.js 20+ with npm)")
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	clients := []struct {
		name  string
		tool  string
		args  []string
		setup func(t *testing.T)
	}{
		// Debian's python3 (python3-websockets), not whatever is first on PATH.
		{"python-websockets", "/usr/bin/python3", []string{"client.py"}, func(t *testing.T) {
			if err := exec.Command("/usr/bin/python3", "-c", "import websockets").Run(); err != nil {
				t.Skip("python3-websockets not installed (apt-get install -y python3-websockets)")
			}
		}},
		{"node-ws", "node", []string{"client.mjs"}, npm},
		{"chromium", "node", []string{"browser.mjs"}, func(t *testing.T) {
			if _, err := exec.LookPath("/usr/bin/chromium"); err != nil && os.Getenv("CHROMIUM") == "" {
				t.Skip("chromium not found (apt-get install -y chromium)")
			}
			npm(t)
		}},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.tool); err != nil {
				t.Skipf("%s not found", c.tool)
			}
			c.setup(t)
			s := newSniffer(t, p.ws)
			id := "real-" + c.name
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, c.tool, append(c.args, "ws://"+s.addr+"/"+id)...)
			cmd.Dir = dir
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // chromium goes with node
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			cmd.WaitDelay = 10 * time.Second
			out, err := cmd.CombinedOutput()
			t.Logf("%s: %s", c.name, strings.TrimSpace(string(out)))
			var ee *exec.ExitError
			if err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), "ok") {
				if errors.As(err, &ee) || err == nil {
					t.Fatalf("%s failed: %v", c.name, err)
				}
				t.Fatal(err)
			}
			posts := waitCalls(t, b, id, "POST", 5)
			sizes := []int{2, 9690, 3000, 102400, 96900} // the messages of client.py and messages.mjs
			for i, post := range posts {
				if len(post.Body) != sizes[i] {
					t.Errorf("POST %d: %d bytes, want %d plain", i, len(post.Body), sizes[i])
				}
				if i == 1 && !strings.HasPrefix(string(post.Body), `{"id":0,`) {
					t.Errorf("POST 1 is not plain JSON: %.40q", post.Body)
				}
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Logf("wire: client→bridge %d plain + %d RSV1 frames %v; bridge→client %d plain + %d RSV1 %v; 101 extension %q",
				s.in[0], s.in[1], s.inMsg, s.out[0], s.out[1], s.outMsg, s.handshakeExtOut)
			if s.handshakeExtOut != "permessage-deflate; server_no_context_takeover; client_no_context_takeover" {
				t.Errorf("101 extension %q", s.handshakeExtOut)
			}
			// Replies: "hi" is under -deflate-min and goes plain, the four big ones compressed.
			if s.out != [2]int{1, 4} {
				t.Errorf("bridge→client data frames plain/RSV1: got %v, want [1 4]", s.out)
			}
			if s.in[1] < 4 {
				t.Errorf("client→bridge compressed frames: got %d, want at least the 4 big messages", s.in[1])
			}
		})
	}
}

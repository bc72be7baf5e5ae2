package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
	"github.com/wsbridge/wsbridge/protocol"
)

// binPath is the wsbridge binary under test, built once by TestMain (with
// -race when the tests run with -race, so the binary is checked too).
// fastBinPath is built without -race, for the load tests (tens of
// thousands of connections) that a race build is too slow for.
var binPath, fastBinPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsbridge-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath, err = bridgetest.Build(dir, raceEnabled)
	fastBinPath = binPath
	if err == nil && raceEnabled {
		fast := filepath.Join(dir, "fast")
		if err = os.Mkdir(fast, 0o755); err == nil {
			fastBinPath, err = bridgetest.Build(fast, false)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitFor polls cond until it returns nil or timeout passes.
var waitFor = bridgetest.WaitFor

func requireEqual[T comparable](t testing.TB, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// proc is a running wsbridge.
type proc struct {
	*bridgetest.Proc
	ws    string // host:port of the WebSocket listener
	admin string // host:port of the admin API
}

// startBridge runs the binary against backendURL on ephemeral ports.
func startBridge(t testing.TB, backendURL string, args ...string) *proc {
	t.Helper()
	return startBinary(t, binPath, backendURL, args...)
}

// startFastBridge is startBridge without the race detector, for load tests.
func startFastBridge(t testing.TB, backendURL string, args ...string) *proc {
	t.Helper()
	return startBinary(t, fastBinPath, backendURL, args...)
}

func startBinary(t testing.TB, bin, backendURL string, args ...string) *proc {
	t.Helper()
	p := bridgetest.Start(t, bin, backendURL, append([]string{"-log-level", "debug", "-pprof"}, args...)...)
	return &proc{Proc: p, ws: p.Listen, admin: p.Admin}
}

func (p *proc) url(id string) string { return "ws://" + p.ws + "/" + id }

// adminDo calls the admin API.
func (p *proc) adminDo(t testing.TB, method, path, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+p.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// metric returns the value of one series from /metrics, or -1.
func (p *proc) metric(t testing.TB, series string) float64 {
	t.Helper()
	_, body, _ := p.adminDo(t, "GET", "/metrics", "")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

func newBackend(t testing.TB, opts backend.Options) *backend.Backend {
	t.Helper()
	opts.Record = true
	b, err := backend.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		if v := b.Violations.Load(); v != 0 {
			t.Errorf("backend saw %d protocol violations, last: %s", v, b.LastViolation())
		}
	})
	return b
}

// count returns how many recorded calls of method exist for id.
func count(b *backend.Backend, id, method string) int {
	n := 0
	for _, c := range b.Calls(id) {
		if c.Method == method {
			n++
		}
	}
	return n
}

func waitCalls(t testing.TB, b *backend.Backend, id, method string, want int) []backend.Call {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		if got := count(b, id, method); got != want {
			return fmt.Errorf("%s calls for %q: got %d, want %d", method, id, got, want)
		}
		return nil
	})
	var out []backend.Call
	for _, c := range b.Calls(id) {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// raw is a hand-driven client socket.
type raw struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func rawDial(t testing.TB, addr string) *raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, conn: c, r: bufio.NewReader(c)}
}

func upgradeRequest(id string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET /%s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", id)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// rawUpgradeMany opens n connections, prefix-0 … prefix-(n-1), parallel
// at a time.
func rawUpgradeMany(t testing.TB, addr, prefix string, n, parallel int) []*raw {
	t.Helper()
	conns := make([]*raw, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i] = rawUpgrade(t, addr, fmt.Sprintf("%s-%d", prefix, i))
		}()
	}
	wg.Wait()
	return conns
}

func (r *raw) send(s string) {
	r.t.Helper()
	if _, err := r.conn.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

// response reads an HTTP response head and body.
func (r *raw) response() (*http.Response, string) {
	r.t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r.r, nil)
	if err != nil {
		r.t.Fatalf("reading response: %v", err)
	}
	var body []byte
	if resp.StatusCode != 101 {
		body, _ = io.ReadAll(resp.Body)
	}
	return resp, string(body)
}

// upgrade performs a handshake and fails unless it gets 101.
func rawUpgrade(t testing.TB, addr, id string, extra ...string) *raw {
	t.Helper()
	r := rawDial(t, addr)
	r.send(upgradeRequest(id, extra...))
	resp, body := r.response()
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade %s: got %d %q, want 101", id, resp.StatusCode, body)
	}
	return r
}

var testMask = [4]byte{1, 2, 3, 4}

// frame writes one client frame.
func (r *raw) frame(op ws.OpCode, fin bool, payload []byte) {
	r.t.Helper()
	if _, err := r.conn.Write(protocol.AppendClientFrame(nil, op, fin, testMask, payload)); err != nil {
		r.t.Fatal(err)
	}
}

// readFrame reads one server frame.
func (r *raw) readFrame() (ws.Header, []byte, error) {
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(r.r)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.Length)
	_, err = io.ReadFull(r.r, p)
	return h, p, err
}

// expectClose reads until a close frame and checks its code.
func (r *raw) expectClose(want ws.StatusCode) string {
	r.t.Helper()
	for {
		h, p, err := r.readFrame()
		if err != nil {
			r.t.Fatalf("waiting for close %d: %v", want, err)
		}
		if h.OpCode != ws.OpClose {
			continue
		}
		code, reason := ws.StatusCode(0), ""
		if len(p) >= 2 {
			code, reason = ws.StatusCode(uint16(p[0])<<8|uint16(p[1])), string(p[2:])
		}
		if code != want {
			r.t.Fatalf("close code: got %d (%q), want %d", code, reason, want)
		}
		return reason
	}
}

// expectEOF checks that the server closes the socket.
func (r *raw) expectEOF() {
	r.t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := r.r.ReadByte()
		if err == io.EOF {
			return
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				r.t.Fatal("socket still open")
			}
			return // reset also ends it
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var _ = bytes.Equal

func writeExec(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o755)
}

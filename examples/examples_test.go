package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bench/bridgetest"
)

// These tests run real programs: php -S with examples/php/router.php, the
// wsbridge binary, and (for the browser test) node with playwright-core
// driving Debian's Chromium. Without them a test skips, unless CI=true,
// where a missing tool is a failure. -short skips them all.

const token = "letmein" // the demo secret in examples/php/chat.php

// needTools skips (or, with CI=true, fails) t unless every tool is on PATH.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end example test: skipped with -short")
	}
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("%s not found (apt-get install -y php-cli chromium; Node.js 20+ with npm)", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// waitFor polls cond until it returns nil or timeout passes.
var waitFor = bridgetest.WaitFor

// freePorts returns n distinct loopback ports that were free a moment ago.
// Fixed ports are needed because a restarted wsbridge must come back on the
// same address, and PHP must know the admin address before wsbridge starts.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var ports []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ports = append(ports, port)
	}
	return ports
}

// logBuffer collects a process's output lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// killGroup ends the process group that cmd leads (php -S forks workers).
func killGroup(cmd *exec.Cmd, done <-chan struct{}) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// startPHP serves examples/php/router.php on 127.0.0.1:port with env added
// to the environment, and waits until it answers.
func startPHP(t *testing.T, port string, env ...string) string {
	t.Helper()
	return servePHP(t, filepath.Join("php", "router.php"), port, http.StatusOK, env...)
}

// servePHP runs `php -S 127.0.0.1:port router` with env added to the
// environment, stops it (and the workers it forks) when the test ends, and
// waits until GET / answers want. It returns the base URL.
func servePHP(t *testing.T, router, port string, want int, env ...string) string {
	t.Helper()
	router, err := filepath.Abs(router)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("php", "-S", "127.0.0.1:"+port, router)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs := &logBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		killGroup(cmd, done)
		if t.Failed() {
			t.Logf("php -S log:\n%s", logs)
		}
	})
	base := "http://127.0.0.1:" + port
	waitFor(t, 15*time.Second, func() error {
		select {
		case <-done:
			t.Fatalf("php -S exited at start:\n%s", logs)
		default:
		}
		resp, err := http.Get(base + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("GET /: got %d, want %d", resp.StatusCode, want)
		}
		return nil
	})
	return base
}

// pushRecorder stands in for wsbridge's admin API and records its calls
// (channel publishes: to is "channel/<ch>", query holds the exclude).
type pushRecorder struct {
	mu     sync.Mutex
	pushes []push
}

type push struct {
	to, query, auth, contentType string
	event                        map[string]any
}

func (p *pushRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ev map[string]any
	if r.Method != http.MethodPost || json.Unmarshal(body, &ev) != nil {
		http.Error(w, "want POST /<id> with a JSON event", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.pushes = append(p.pushes, push{
		to: strings.TrimPrefix(r.URL.Path, "/"), query: r.URL.RawQuery, auth: r.Header.Get("Authorization"),
		contentType: r.Header.Get("Content-Type"), event: ev,
	})
	p.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

// take returns the pushes recorded since the last call, sorted by target.
func (p *pushRecorder) take() []push {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.pushes
	p.pushes = nil
	slices.SortFunc(out, func(a, b push) int { return strings.Compare(a.to, b.to) })
	return out
}

// call sends one request as wsbridge would and returns status, body and headers.
func call(t *testing.T, method, url, connID, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if connID != "" {
		req.Header.Set("Wsbridge-Connection-Id", connID)
	}
	req.Header.Set("X-Forwarded-For", "127.0.0.1")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func requireEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// presenceFile is STATE_DIR/presence.json as examples/php/chat.php keeps it.
type presenceFile struct {
	Rev     int `json:"rev"`
	Clients map[string]struct {
		ConnectionID string `json:"connection_id"`
	} `json:"clients"`
}

func readPresence(stateDir string) (presenceFile, error) {
	var p presenceFile
	b, err := os.ReadFile(filepath.Join(stateDir, "presence.json"))
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	if err != nil {
		return p, fmt.Errorf("presence.json %q: %w", b, err)
	}
	return p, nil
}

// users turns an event's "users" into a comma-joined string for comparing.
func users(ev map[string]any) string {
	var out []string
	list, _ := ev["users"].([]any)
	for _, u := range list {
		out = append(out, fmt.Sprint(u))
	}
	return strings.Join(out, ",")
}

// TestPHPAPI drives examples/php over real HTTP the way wsbridge does, with
// a recorder in place of the admin API.
func TestPHPAPI(t *testing.T) {
	needTools(t, "php")
	admin := &pushRecorder{}
	adminSrv := httptest.NewServer(admin)
	t.Cleanup(adminSrv.Close)
	state := t.TempDir()
	php := startPHP(t, freePorts(t, 1)[0],
		"WSBRIDGE_ADMIN="+adminSrv.URL, "WSBRIDGE_ADMIN_TOKEN=s3cret", "STATE_DIR="+state, "PHP_CLI_SERVER_WORKERS=2")

	presence := func() presenceFile {
		t.Helper()
		p, err := readPresence(state)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Upgrades are refused without the demo token; the 401 and its body are
	// what wsbridge relays to the client.
	for _, q := range []string{"", "?token=", "?token=nope", "?token[]=letmein"} {
		st, body, h := call(t, "GET", php+"/alice"+q, "a1", "")
		requireEqual(t, "GET /alice"+q+" status", st, 401)
		requireEqual(t, "GET /alice"+q+" body", body, "bad or missing token\n")
		if h.Get("WWW-Authenticate") == "" {
			t.Fatalf("GET /alice%s: no WWW-Authenticate header", q)
		}
	}
	st, _, _ := call(t, "GET", php+"/alice?token="+token, "", "")
	requireEqual(t, "GET without Wsbridge-Connection-Id", st, 400)
	requireEqual(t, "pushes after refusals", len(admin.take()), 0)

	// Admitted: "ok", and the others hear about it (the newcomer is not open yet).
	st, body, h := call(t, "GET", php+"/alice?token="+token, "a1", "")
	requireEqual(t, "GET /alice status", st, 200)
	requireEqual(t, "GET /alice body", body, "ok")
	// The user's name is kept as connection metadata (DESIGN.md §8.5).
	requireEqual(t, "GET /alice Wsbridge-Set-Meta-Name", h.Get("Wsbridge-Set-Meta-Name"), "alice")
	// and joins the room's channel (DESIGN.md §8.1).
	requireEqual(t, "GET /alice Wsbridge-Subscribe", h.Get("Wsbridge-Subscribe"), "room:lobby")
	requireEqual(t, "pushes after the first join", len(admin.take()), 0)
	st, body, _ = call(t, "GET", php+"/bob?token="+token, "b1", "")
	requireEqual(t, "GET /bob", st == 200 && body == "ok", true)
	p := admin.take()
	requireEqual(t, "publishes after bob joins", len(p), 1)
	requireEqual(t, "publish target", p[0].to+"?"+p[0].query, "channel/room:lobby?exclude=bob")
	requireEqual(t, "push Authorization", p[0].auth, "Bearer s3cret")
	requireEqual(t, "push event", fmt.Sprint(p[0].event["type"], " ", p[0].event["joined"], " ", users(p[0].event)),
		"presence bob alice,bob")

	// A chat message is published to the room once (the bridge writes it
	// to everyone, the sender included), and nothing is replied directly.
	st, body, _ = call(t, "POST", php+"/alice", "a1", `{"text":"  hi there  "}`, "Content-Type", "text/plain; charset=utf-8",
		"Wsbridge-Meta-Name", "alice")
	requireEqual(t, "POST /alice status", st, 204)
	requireEqual(t, "POST /alice body", body, "")
	p = admin.take()
	requireEqual(t, "publishes for one message", len(p), 1)
	requireEqual(t, "publish target", p[0].to+"?"+p[0].query, "channel/room:lobby?")
	requireEqual(t, "publish content type", p[0].contentType, "text/plain; charset=utf-8")
	requireEqual(t, "published message", fmt.Sprint(p[0].event["type"], "|", p[0].event["from"], "|", p[0].event["text"]),
		"message|alice|hi there")
	// The sender's name is the one in Wsbridge-Meta-Name, not looked up.
	st, _, _ = call(t, "POST", php+"/alice", "a1", `{"text":"hi"}`, "Wsbridge-Meta-Name", "Alice-2")
	requireEqual(t, "POST with a name status", st, 204)
	p = admin.take()
	requireEqual(t, "publishes for a named message", len(p), 1)
	requireEqual(t, "from of a named message", p[0].event["from"], any("Alice-2"))
	// An empty message goes nowhere.
	st, _, _ = call(t, "POST", php+"/alice", "a1", `{"text":"   "}`)
	requireEqual(t, "POST empty text status", st, 204)
	requireEqual(t, "pushes for an empty message", len(admin.take()), 0)

	// hello is answered with the presence list, to the sender only.
	st, body, _ = call(t, "POST", php+"/bob", "b1", `{"type":"hello"}`)
	requireEqual(t, "hello status", st, 200)
	var ev map[string]any
	if err := json.Unmarshal([]byte(body), &ev); err != nil {
		t.Fatalf("hello reply %q: %v", body, err)
	}
	requireEqual(t, "hello reply users", users(ev), "alice,bob")
	requireEqual(t, "hello reply rev", ev["rev"], any(float64(presence().Rev)))
	requireEqual(t, "pushes for hello", len(admin.take()), 0)

	// alice reconnects (a newer connection a2 replaces a1); the stale DELETE
	// of a1 that follows must not remove her.
	st, _, _ = call(t, "GET", php+"/alice?token="+token, "a2", "", "Wsbridge-Replaces", "a1")
	requireEqual(t, "GET /alice again", st, 200)
	admin.take()
	rev := presence().Rev
	st, body, _ = call(t, "DELETE", php+"/alice", "a1", "replaced", "Wsbridge-Close-Code", "4000")
	requireEqual(t, "stale DELETE status", st, 200)
	requireEqual(t, "stale DELETE body", body, "stale")
	requireEqual(t, "alice's connection after the stale DELETE", presence().Clients["alice"].ConnectionID, "a2")
	requireEqual(t, "presence rev after the stale DELETE", presence().Rev, rev)
	requireEqual(t, "pushes after a stale DELETE", len(admin.take()), 0)

	// The current connection's DELETE removes her, and bob hears it.
	st, body, _ = call(t, "DELETE", php+"/alice", "a2", "", "Wsbridge-Close-Code", "1001")
	requireEqual(t, "DELETE status", st, 200)
	requireEqual(t, "DELETE body", body, "ok")
	if _, ok := presence().Clients["alice"]; ok {
		t.Fatal("alice still present after her DELETE")
	}
	requireEqual(t, "presence rev after the DELETE", presence().Rev, rev+1)
	p = admin.take()
	requireEqual(t, "pushes after alice leaves", len(p), 1)
	requireEqual(t, "leave publish", fmt.Sprint(p[0].to, " ", p[0].event["left"], " ", users(p[0].event)), "channel/room:lobby alice bob")
	requireEqual(t, "leave push rev", p[0].event["rev"], any(float64(rev+1)))

	// Routing: the page and its assets, and what is neither.
	for _, c := range []struct {
		method, path string
		status       int
		contentType  string
		contains     string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", `id="status"`},
		{"GET", "/static/chat.js", 200, "text/javascript; charset=utf-8", "retryDelay"},
		{"GET", "/static/chat.css", 200, "text/css; charset=utf-8", "#status"},
		{"GET", "/static/router.php", 404, "", ""},
		{"GET", "/static/", 404, "", ""},
		{"GET", "/a/b", 404, "", ""},
		{"GET", "/%2e%2e", 404, "", ""},
		{"GET", "/chat.js", 401, "", ""}, // a valid ClientId: the API, not the asset
		{"PUT", "/bob", 405, "", ""},
		{"POST", "/", 405, "", ""},
	} {
		st, body, h := call(t, c.method, php+c.path, "", "")
		requireEqual(t, c.method+" "+c.path+" status", st, c.status)
		if c.contentType != "" {
			requireEqual(t, c.method+" "+c.path+" Content-Type", h.Get("Content-Type"), c.contentType)
		}
		if !strings.Contains(body, c.contains) {
			t.Fatalf("%s %s: body does not contain %q", c.method, c.path, c.contains)
		}
	}
}

// bridge is one running wsbridge process.
type bridge struct {
	cmd    *exec.Cmd
	logs   *logBuffer
	exited chan struct{}
	err    error
}

// startBridge runs bin with args and waits for its "wsbridge listening" line.
func startBridge(bin string, args ...string) (*bridge, error) {
	b := &bridge{cmd: exec.Command(bin, args...), logs: &logBuffer{}, exited: make(chan struct{})}
	b.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(b.logs, line)
			var m struct{ Msg string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "wsbridge listening" {
				ready <- struct{}{}
			}
		}
		b.err = b.cmd.Wait()
		close(b.exited)
	}()
	select {
	case <-ready:
		return b, nil
	case <-b.exited:
		return nil, fmt.Errorf("wsbridge exited at start: %v\n%s", b.err, b.logs)
	case <-time.After(20 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
		return nil, fmt.Errorf("wsbridge did not start:\n%s", b.logs)
	}
}

// drain sends SIGTERM and waits for a clean exit.
func (b *bridge) drain(timeout time.Duration) error {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
		if b.err != nil {
			return fmt.Errorf("wsbridge exit after SIGTERM: %w", b.err)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("wsbridge still running %v after SIGTERM", timeout)
	}
}

func (b *bridge) kill() {
	select {
	case <-b.exited:
	default:
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
}

// buildBridge builds cmd/wsbridge (with -race when the tests run with it,
// so a race in the bridge under a real browser fails the test too).
func buildBridge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wsbridge")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "github.com/wsbridge/wsbridge/cmd/wsbridge")...).CombinedOutput()
	if err != nil {
		t.Fatalf("building wsbridge: %v\n%s", err, out)
	}
	return bin
}

// chromiumPath is the browser the spec drives; never a downloaded one.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// TestChatBrowser runs examples/chat/e2e/chat.spec.mjs: two Chromium pages
// chat through wsbridge and the PHP backend, then wsbridge is restarted
// under them and both must reconnect by themselves.
//
// The restart happens while the browser is open, so the spec asks for it:
// it POSTs to RESTART_URL, served here on loopback; the handler drains the
// running wsbridge (SIGTERM, every client gets 1012 retry=N, exit 0) and
// starts a new one on the same -listen and -admin ports, answering 200 once
// it listens. The spec then waits for the pages to come back.
func TestChatBrowser(t *testing.T) {
	needTools(t, "php", "node", "go")
	if _, err := os.Stat(chromiumPath()); err != nil {
		msg := fmt.Sprintf("Chromium not found at %s (apt-get install -y chromium)", chromiumPath())
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	e2eDir, err := filepath.Abs(filepath.Join("chat", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e2eDir, "node_modules", "playwright-core", "package.json")); err != nil {
		needTools(t, "npm")
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = e2eDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", e2eDir, err, out)
		}
	}
	shots := os.Getenv("ARTIFACTS_DIR")
	if shots == "" {
		shots = "out"
	}
	if shots, err = filepath.Abs(shots); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	bin := buildBridge(t)
	t.Logf("built wsbridge in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()

	ports := freePorts(t, 3)
	wsAddr, adminAddr := "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1]
	state := t.TempDir()
	php := startPHP(t, ports[2], "WSBRIDGE_ADMIN=http://"+adminAddr, "STATE_DIR="+state,
		"PHP_CLI_SERVER_WORKERS=4")
	args := []string{
		"-listen", wsAddr, "-admin", adminAddr, "-backend", php + "/",
		// Browsers send Origin: only the page's own is let in.
		"-allow-origin", php,
		// Short heartbeats, so the pages answer pings during the test.
		"-ping-interval", "2s", "-pong-timeout", "5s",
		// Closes are spread over 80% of this window; keep the restart quick.
		"-drain-timeout", "3s",
		// Work-around: without SO_REUSEPORT the new process cannot bind the
		// port while the old one's closed connections sit in TIME_WAIT
		// (gnet's listener does not set SO_REUSEADDR).
		"-reuseport",
		"-log-level", "debug",
	}

	var (
		mu       sync.Mutex
		bridges  []*bridge // every process started, for the final checks
		restarts int
	)
	b, err := startBridge(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	bridges = append(bridges, b)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for i, b := range bridges {
			b.kill()
			if l := b.logs.String(); strings.Contains(l, "WARNING: DATA RACE") || strings.Contains(l, "panic:") {
				t.Errorf("wsbridge #%d logged a race or panic:\n%s", i+1, l)
			} else if t.Failed() {
				t.Logf("wsbridge #%d log:\n%s", i+1, l)
			}
		}
	})

	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/restart" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		old := bridges[len(bridges)-1]
		if err := old.drain(20 * time.Second); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		nb, err := startBridge(bin, args...)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		bridges = append(bridges, nb)
		restarts++
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(control.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := exec.CommandContext(ctx, "node", "--test", "--test-reporter=tap", "chat.spec.mjs")
	node.Dir = e2eDir
	node.Env = append(os.Environ(),
		"CHAT_URL="+php+"/",
		"BRIDGE_URL=ws://"+wsAddr,
		"RESTART_URL="+control.URL+"/restart",
		"SCREENSHOT_DIR="+shots,
		"CHROMIUM="+chromiumPath(),
		"CHAT_TOKEN="+token,
	)
	// Chromium runs in node's process group; a timeout ends them together.
	node.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	node.Cancel = func() error { return syscall.Kill(-node.Process.Pid, syscall.SIGKILL) }
	node.WaitDelay = 10 * time.Second
	out, err := node.CombinedOutput()
	t.Logf("node --test chat.spec.mjs (%v):\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("browser test failed: %v", err)
	}
	for _, want := range []string{"# fail 0", "# skipped 0", "# cancelled 0"} {
		if !bytes.Contains(out, []byte("\n"+want+"\n")) {
			t.Fatalf("node test summary has no %q line", want)
		}
	}
	if m := regexp.MustCompile(`\n# pass (\d+)\n`).FindSubmatch(out); m == nil || string(m[1]) == "0" {
		t.Fatal("node test summary: no test passed")
	}

	mu.Lock()
	requireEqual(t, "restarts asked by the spec", restarts, 1)
	cur := bridges[len(bridges)-1]
	mu.Unlock()

	// The second process really served the reconnected pages.
	opened := metric(t, adminAddr, "wsbridge_connections_opened_total")
	if opened < 2 {
		t.Fatalf("wsbridge_connections_opened_total on the new process: got %v, want ≥ 2", opened)
	}
	// The browser has closed: each page's DELETE reached PHP with its own
	// connection id, so nobody is left present.
	waitFor(t, 10*time.Second, func() error {
		p, err := readPresence(state)
		if err != nil {
			return err
		}
		if len(p.Clients) != 0 {
			return fmt.Errorf("present after the browser closed: got %v, want nobody", p.Clients)
		}
		return nil
	})
	if err := cur.drain(20 * time.Second); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"chat.png", "chat-after-restart.png"} {
		path := filepath.Join(shots, name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("%s is not a PNG", path)
		}
		t.Logf("screenshot: %s", path)
	}
}

// metric reads one unlabelled series from the admin /metrics.
func metric(t *testing.T, admin, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	t.Fatalf("/metrics has no %s", series)
	return 0
}

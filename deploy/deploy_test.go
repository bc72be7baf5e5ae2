package deploy_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
)

// The test's numbers. 300 clients over three nodes keeps the machine
// quiet while leaving every node with enough ClientIds to see the hash.
const (
	numClients   = 300
	drainTimeout = 8 * time.Second
	clientAddr   = "127.0.0.77" // the test clients' source address, to see it in X-Forwarded-For
	goodOrigin   = "https://app.example.com"
)

// nodeIPs are the three nodes' loopback addresses: each node gets its own
// address and all use the same two ports, as on real hosts, so the
// committed configs keep their one-port-per-role shape.
var nodeIPs = []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// wsbridgeBinary builds cmd/wsbridge once (without -race: three nodes with
// the race detector would load the shared machine for no gain here; the
// e2e tests in cmd/wsbridge run it with -race).
func wsbridgeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "wsbridge-deploy")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "wsbridge")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/wsbridge").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// requireTools skips the test in -short mode or when a tool is missing,
// except with CI=true, where a missing tool is a failure.
func requireTools(t *testing.T, names ...string) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real proxies and wsbridge nodes; skipped in -short mode")
	}
	paths := map[string]string{}
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
				p, err = "/usr/sbin/"+name, nil
			}
		}
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true, so this fails instead of skipping): %v", name, err)
			}
			t.Skipf("%s not installed: %v", name, err)
		}
		paths[name] = p
	}
	return paths
}

// waitFor polls cond until it returns nil or timeout passes.
var waitFor = bridgetest.WaitFor

// syncBuffer collects a process's output lines.
type syncBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *syncBuffer) add(s string) { b.mu.Lock(); b.lines = append(b.lines, s); b.mu.Unlock() }

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// process is a child process whose output is kept for failure reports.
type process struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error
	onLine func(string)
}

// startProcess runs a child and stops it (SIGKILL) in t.Cleanup.
func startProcess(t *testing.T, name string, onLine func(string), argv ...string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(argv[0], argv[1:]...), out: &syncBuffer{}, exited: make(chan struct{}), onLine: onLine}
	// An *os.File, not an io.Writer: Wait then returns when the process
	// exits, even if a child of it (an nginx worker) still holds the pipe.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	// Its own process group, so that cleanup can stop its children too;
	// killed with the test binary if that dies (go test -timeout).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	pw.Close()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.out.add(sc.Text())
			if p.onLine != nil {
				p.onLine(sc.Text())
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		pgid := p.cmd.Process.Pid
		select {
		case <-p.exited:
		default:
			// SIGTERM: nginx and HAProxy stop their workers; wsbridge
			// would drain, so it gets SIGKILL after a moment.
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(3 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // leftover children of this process only
		pr.Close()
		if strings.Contains(p.out.String(), "panic:") {
			t.Errorf("%s panicked:\n%s", name, p.out)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out)
		}
	})
	return p
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// node is one wsbridge process.
type node struct {
	name  string // node1, node2, node3: the server names in the configs
	ws    string // ip:port of the WebSocket listener
	admin string // ip:port of the admin API
	proc  *process
}

// cluster is three wsbridge nodes sharing one mock backend.
type cluster struct {
	t       *testing.T
	backend *backend.Backend
	nodes   []*node
	wsPort  int
	admPort int
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	bin := wsbridgeBinary(t)
	be, err := backend.Start(backend.Options{Record: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	ports := freePorts(t, nodeIPs, 2)
	c := &cluster{t: t, backend: be, wsPort: ports[0], admPort: ports[1]}
	for i, ip := range nodeIPs {
		n := &node{
			name:  fmt.Sprintf("node%d", i+1),
			ws:    net.JoinHostPort(ip, strconv.Itoa(c.wsPort)),
			admin: net.JoinHostPort(ip, strconv.Itoa(c.admPort)),
		}
		ready := make(chan struct{})
		var once sync.Once
		n.proc = startProcess(t, n.name, func(line string) {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "wsbridge listening" {
				once.Do(func() { close(ready) })
			}
		}, bin, "-listen", n.ws, "-admin", n.admin, "-backend", be.URL,
			"-trusted-proxies", "127.0.0.1/32", "-drain-timeout", drainTimeout.String(),
			// Lame duck: the balancer's checks (fall 2 × fastinter, ~2 s)
			// take the node out before its first 1012.
			"-drain-delay", "2500ms",
			"-loops", "1", "-log-level", "info")
		select {
		case <-ready:
		case <-n.proc.exited:
			t.Fatalf("%s exited at start: %v\n%s", n.name, n.proc.err, n.proc.out)
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not start:\n%s", n.name, n.proc.out)
		}
		c.nodes = append(c.nodes, n)
	}
	return c
}

// freePorts finds count ports free on every one of ips.
func freePorts(t *testing.T, ips []string, count int) []int {
	t.Helper()
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	var ports []int
	for attempt := 0; len(ports) < count && attempt < 100; attempt++ {
		l, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		group := []net.Listener{l}
		ok := true
		for _, ip := range ips[1:] {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			group = append(group, l2)
		}
		held = append(held, group...)
		if ok {
			ports = append(ports, port)
		}
	}
	if len(ports) < count {
		t.Fatalf("could not find %d ports free on %v", count, ips)
	}
	return ports
}

// adminGet calls GET on a node's admin API.
func adminGet(addr, path string) (int, string, error) {
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// locate returns the index of the live node holding id, or -1.
func (c *cluster) locate(id string) int {
	found := -1
	for i, n := range c.nodes {
		if !n.proc.running() {
			continue
		}
		if code, _, err := adminGet(n.admin, "/"+id); err == nil && code == 200 {
			found = i
		}
	}
	return found
}

// locateAll maps every client to the node holding it.
func (c *cluster) locateAll(clients []*wsClient) map[string]int {
	out := make(map[string]int, len(clients))
	for _, cl := range clients {
		out[cl.id] = c.locate(cl.id)
	}
	return out
}

// metric reads one series from a node's /metrics, or -1.
func (n *node) metric(series string) float64 {
	_, body, err := adminGet(n.admin, "/metrics")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return -1
}

// render reads a committed config, applies the replacements (each must
// occur, so the test breaks loudly when the file changes shape) and writes
// the result into dir.
func render(t *testing.T, src, dir string, pairs ...string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s: %q not found; the test renders the committed file, update it together", src, pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	for _, line := range strings.Split(s, "\n") {
		if code, _, _ := strings.Cut(line, "#"); strings.Contains(code, "10.0.0.") {
			t.Fatalf("%s: an address 10.0.0.x was left unreplaced: %s", src, line)
		}
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// writeCert creates a self-signed certificate for 127.0.0.1 and localhost
// and writes certificate and key into one PEM file (HAProxy's format;
// nginx reads both from it too). It returns the file and a pool trusting it.
func writeCert(t *testing.T, dir string) (string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "wsbridge deploy test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})...)
	path := filepath.Join(dir, "wsbridge.pem")
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return path, pool
}

// testDir is a temp dir that the proxies' unprivileged workers can enter.
func testDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(freePorts(t, []string{"127.0.0.1"}, 1)[0])
}

// ---------------------------------------------------------------------------
// Test clients: one goroutine each, reconnecting like a well-behaved
// browser client would.

type wsClient struct {
	id     string
	url    string
	dialer *websocket.Dialer
	header http.Header

	connected atomic.Bool
	connects  atomic.Int32 // successful upgrades
	drops     atomic.Int32 // connections that ended
	refused   atomic.Int32 // upgrades that failed

	mu     sync.Mutex
	conn   *websocket.Conn
	closes []closeInfo
	got    chan string
}

type closeInfo struct {
	code   int
	reason string
}

func newDialer(pool *x509.CertPool) *websocket.Dialer {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientAddr)}, Timeout: 5 * time.Second}
	return &websocket.Dialer{
		NetDialContext:   d.DialContext,
		TLSClientConfig:  &tls.Config{RootCAs: pool, ServerName: "localhost"},
		HandshakeTimeout: 10 * time.Second,
	}
}

func clientHeader() http.Header {
	h := http.Header{}
	h.Set("Origin", goodOrigin)
	// A forged address: the proxy must replace it, not pass it on.
	h.Set("X-Forwarded-For", "203.0.113.9")
	return h
}

// startClients connects n clients to base (wss://host:port) and keeps them
// connected until the test ends.
func startClients(t *testing.T, base string, pool *x509.CertPool, n int) []*wsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	dialer := newDialer(pool)
	clients := make([]*wsClient, n)
	for i := range clients {
		id := fmt.Sprintf("c%03d", i)
		clients[i] = &wsClient{id: id, url: base + "/" + id, dialer: dialer, header: clientHeader(), got: make(chan string, 64)}
		wg.Add(1)
		go func(c *wsClient) {
			defer wg.Done()
			c.run(ctx)
		}(clients[i])
	}
	t.Cleanup(func() {
		cancel()
		for _, c := range clients {
			c.mu.Lock()
			if c.conn != nil {
				c.conn.Close()
			}
			c.mu.Unlock()
		}
		wg.Wait()
	})
	return clients
}

func (c *wsClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		conn, resp, err := c.dialer.DialContext(ctx, c.url, c.header)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			c.refused.Add(1)
			sleepCtx(ctx, jitter(100*time.Millisecond, 300*time.Millisecond))
			continue
		}
		c.mu.Lock()
		c.conn = conn
		c.mu.Unlock()
		c.connects.Add(1)
		c.connected.Store(true)
		var info closeInfo
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				info = closeInfo{code: 1006, reason: err.Error()}
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					info = closeInfo{code: ce.Code, reason: ce.Text}
				}
				break
			}
			select {
			case c.got <- string(data):
			default:
			}
		}
		c.connected.Store(false)
		conn.Close()
		if ctx.Err() != nil {
			return
		}
		c.drops.Add(1)
		c.mu.Lock()
		c.closes = append(c.closes, info)
		c.mu.Unlock()
		// 1012 carries the delay the bridge suggests (retry=<seconds>,
		// jittered 1–5 s): honour it, as clients should. Anything else
		// (a node that died) gets a short jittered pause.
		delay := jitter(100*time.Millisecond, 300*time.Millisecond)
		if s, ok := strings.CutPrefix(info.reason, "retry="); ok && info.code == 1012 {
			if n, err := strconv.Atoi(s); err == nil {
				delay = time.Duration(n) * time.Second
			}
		}
		sleepCtx(ctx, delay)
	}
}

func (c *wsClient) closeList() []closeInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]closeInfo(nil), c.closes...)
}

func jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(mrand.Int64N(int64(hi-lo)))
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitConnected waits until every client is connected with the given
// number of successful upgrades (or more, when atLeast).
func waitConnected(t *testing.T, clients []*wsClient, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, func() error {
		n := 0
		for _, c := range clients {
			if c.connected.Load() {
				n++
			}
		}
		if n != len(clients) {
			return fmt.Errorf("connected clients: got %d, want %d", n, len(clients))
		}
		return nil
	})
}

// pushAll pushes one message per client through pushBase
// (http://host:port) and checks that every push is answered 200 and
// arrives.
func pushAll(t *testing.T, pushBase, tag string, clients []*wsClient) {
	t.Helper()
	errs := make(chan error, len(clients))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func(c *wsClient) {
			defer wg.Done()
			defer func() { <-sem }()
			msg := tag + "-" + c.id
			resp, err := httpClient.Post(pushBase+"/"+c.id, "text/plain; charset=utf-8", strings.NewReader(msg))
			if err != nil {
				errs <- fmt.Errorf("push %s: %v", c.id, err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("push %s: got %d %q, want 200", c.id, resp.StatusCode, body)
				return
			}
			deadline := time.After(10 * time.Second)
			for {
				select {
				case got := <-c.got:
					if got == msg {
						return
					}
				case <-deadline:
					errs <- fmt.Errorf("push %s: %q not received", c.id, msg)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	var all []string
	for err := range errs {
		all = append(all, err.Error())
	}
	if len(all) > 0 {
		t.Fatalf("%d of %d pushes failed (%s), first: %s", len(all), len(clients), tag, strings.Join(all[:min(5, len(all))], "; "))
	}
}

// checkSpread checks that every node holds a fair share of the clients.
func checkSpread(t *testing.T, where map[string]int, nodes int) []int {
	t.Helper()
	per := make([]int, nodes)
	for id, i := range where {
		if i < 0 {
			t.Fatalf("client %s is on no node", id)
		}
		per[i]++
	}
	for i, n := range per {
		// Consistent hashing with few points per node is uneven; a
		// tenth is far from an even third yet proves all three are used.
		if n < len(where)/10 {
			t.Fatalf("node%d holds %d of %d clients; spread %v", i+1, n, len(where), per)
		}
	}
	return per
}

// probeStability dials fresh ClientIds twice, with and without a query,
// and checks they land on the same node every time. It returns where each
// probe landed.
func probeStability(t *testing.T, c *cluster, base string, pool *x509.CertPool, n int) map[string]int {
	t.Helper()
	dialer := newDialer(pool)
	where := map[string]int{}
	for i := range n {
		id := fmt.Sprintf("probe%02d", i)
		first := -1
		for _, suffix := range []string{"", "?token=1", "?token=2&x=y", ""} {
			conn, _, err := dialer.Dial(base+"/"+id+suffix, clientHeader())
			if err != nil {
				t.Fatalf("probe %s%s: %v", id, suffix, err)
			}
			var at int
			waitFor(t, 5*time.Second, func() error {
				if at = c.locate(id); at < 0 {
					return fmt.Errorf("probe %s not found on any node", id)
				}
				return nil
			})
			conn.Close()
			// Wait until the node has let go, so the next dial is not a
			// replacement racing the close.
			waitFor(t, 5*time.Second, func() error {
				if c.locate(id) >= 0 {
					return fmt.Errorf("probe %s still held", id)
				}
				return nil
			})
			if first < 0 {
				first = at
			} else if at != first {
				t.Fatalf("probe %s%s landed on node%d, earlier on node%d", id, suffix, at+1, first+1)
			}
		}
		where[id] = first
	}
	return where
}

// checkXFF checks that the backend saw the test client's real address
// followed by the proxy's, and not the forged one.
func checkXFF(t *testing.T, be *backend.Backend, id string) {
	t.Helper()
	for _, call := range be.Calls(id) {
		if call.Method != "GET" {
			continue
		}
		if got, want := call.Header["X-Forwarded-For"], clientAddr+", 127.0.0.1"; got != want {
			t.Fatalf("X-Forwarded-For of %s's GET: got %q, want %q", id, got, want)
		}
		return
	}
	t.Fatalf("no GET recorded for %s", id)
}

// checkOriginRefused dials with a foreign Origin and expects the proxy's 403
// and no backend call.
func checkOriginRefused(t *testing.T, base string, pool *x509.CertPool, be *backend.Backend) {
	t.Helper()
	h := clientHeader()
	h.Set("Origin", "https://evil.example.net")
	_, resp, err := newDialer(pool).Dial(base+"/evil", h)
	if err == nil {
		t.Fatal("upgrade with a foreign Origin succeeded")
	}
	if resp == nil || resp.StatusCode != 403 {
		t.Fatalf("upgrade with a foreign Origin: got %v (%v), want 403", resp, err)
	}
	if n := len(be.Calls("evil")); n != 0 {
		t.Fatalf("backend calls for a foreign Origin: got %d, want 0", n)
	}
}

// killAndCheck kills one node (SIGKILL) and checks that only its clients
// were disconnected, that they came back on other nodes and that pushes
// work again.
func killAndCheck(t *testing.T, c *cluster, clients []*wsClient, before map[string]int, victim int, pushBase string) {
	t.Helper()
	dropsBefore := map[string]int32{}
	for _, cl := range clients {
		dropsBefore[cl.id] = cl.drops.Load()
	}
	start := time.Now()
	if err := c.nodes[victim].proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.nodes[victim].proc.exited
	victims := 0
	for _, cl := range clients {
		if before[cl.id] == victim {
			victims++
		}
	}
	waitFor(t, 20*time.Second, func() error {
		back := 0
		for _, cl := range clients {
			if before[cl.id] == victim && cl.drops.Load() > dropsBefore[cl.id] && cl.connected.Load() {
				back++
			}
		}
		if back != victims {
			return fmt.Errorf("clients of the killed node%d back: got %d, want %d", victim+1, back, victims)
		}
		return nil
	})
	t.Logf("node%d killed: its %d clients reconnected elsewhere in %v", victim+1, victims, time.Since(start).Round(time.Millisecond))
	after := c.locateAll(clients)
	for _, cl := range clients {
		if before[cl.id] == victim {
			if after[cl.id] < 0 || after[cl.id] == victim {
				t.Fatalf("client %s of the killed node is on node %d", cl.id, after[cl.id]+1)
			}
			continue
		}
		if d := cl.drops.Load() - dropsBefore[cl.id]; d != 0 {
			t.Fatalf("client %s on node%d (not killed) was disconnected %d times: %v", cl.id, before[cl.id]+1, d, cl.closeList())
		}
		if after[cl.id] != before[cl.id] {
			t.Fatalf("client %s moved from node%d to node%d", cl.id, before[cl.id]+1, after[cl.id]+1)
		}
	}
	pushAll(t, pushBase, "after-kill", clients)
}

// ---------------------------------------------------------------------------
// HAProxy

// haproxyStatus reads the stats CSV: "backend/server" → status (UP, DOWN,
// NOLB, MAINT, "UP 1/2"…).
func haproxyStatus(statsAddr string) (map[string]string, error) {
	resp, err := httpClient.Get("http://" + statsAddr + "/stats;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil, fmt.Errorf("stats csv: %v", err)
	}
	col := -1
	for i, h := range recs[0] {
		if h == "status" {
			col = i
		}
	}
	if col < 0 {
		return nil, errors.New("stats csv: no status column")
	}
	out := map[string]string{}
	for _, rec := range recs[1:] {
		if len(rec) > col && strings.HasPrefix(rec[1], "node") {
			out[strings.TrimPrefix(rec[0], "# ")+"/"+rec[1]] = rec[col]
		}
	}
	return out, nil
}

func waitHAStatus(t *testing.T, statsAddr string, timeout time.Duration, want map[string]string) {
	t.Helper()
	waitFor(t, timeout, func() error {
		st, err := haproxyStatus(statsAddr)
		if err != nil {
			return err
		}
		for k, v := range want {
			if st[k] != v {
				return fmt.Errorf("haproxy %s: got %q, want %q (all: %v)", k, st[k], v, st)
			}
		}
		return nil
	})
}

func TestHAProxy(t *testing.T) {
	tools := requireTools(t, "haproxy")
	t.Parallel()
	start := time.Now()
	dir := testDir(t)
	c := startCluster(t)
	pem, pool := writeCert(t, dir)
	wss, push, stats := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	pairs := []string{
		"*:443", wss,
		"/etc/haproxy/certs/wsbridge.pem", pem,
		"/run/haproxy/wsbridge.sock", filepath.Join(dir, "haproxy.sock"),
		"10.0.0.10:7002", push,
		"10.0.0.10:8404", stats,
		"port 7002", "port " + strconv.Itoa(c.admPort),
		// The test machine's open-files limit is far below 2 × 200000.
		"maxconn 200000", "maxconn 4000",
		"maxconn 100000", "maxconn 2000",
	}
	for i, n := range c.nodes {
		pairs = append(pairs,
			fmt.Sprintf("10.0.0.1%d:7001", i+1), n.ws,
			fmt.Sprintf("10.0.0.1%d:7002", i+1), n.admin)
	}
	if os.Geteuid() != 0 {
		// chroot and dropping privileges need root.
		pairs = append(pairs, "    user haproxy\n", "", "    group haproxy\n", "", "    chroot /var/lib/haproxy\n", "")
	}
	cfg := render(t, "haproxy.cfg", dir, pairs...)
	if out, err := exec.Command(tools["haproxy"], "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	startProcess(t, "haproxy", nil, tools["haproxy"], "-f", cfg, "-db")
	allUp := map[string]string{}
	for _, b := range []string{"wsbridge_ws", "wsbridge_push"} {
		for i := range c.nodes {
			allUp[fmt.Sprintf("%s/node%d", b, i+1)] = "UP"
		}
	}
	waitHAStatus(t, stats, 15*time.Second, allUp)
	base, pushBase := "wss://"+wss, "http://"+push

	checkOriginRefused(t, base, pool, c.backend)
	probes := probeStability(t, c, base, pool, 12)

	clients := startClients(t, base, pool, numClients)
	waitConnected(t, clients, 30*time.Second)
	t.Logf("haproxy: %d clients connected %v after start", numClients, time.Since(start).Round(time.Millisecond))
	checkXFF(t, c.backend, clients[0].id)
	where := c.locateAll(clients)
	t.Logf("haproxy: clients per node %v", checkSpread(t, where, len(c.nodes)))
	if v := c.backend.Violations.Load(); v != 0 {
		t.Fatalf("backend lifecycle violations: got %d (%s), want 0", v, c.backend.LastViolation())
	}
	pushAll(t, pushBase, "hello", clients)

	// A node dies: only its clients move, pushes follow them.
	killAndCheck(t, c, clients, where, 0, pushBase)
	// A killed node never sends its DELETEs, so the backend sees the
	// reconnect's GET while the old connection still looks open to it:
	// one "violation" per moved client at most (docs/scaling.md).
	t.Logf("haproxy: backend lifecycle violations after the kill: %d", c.backend.Violations.Load())
	waitHAStatus(t, stats, 10*time.Second, map[string]string{"wsbridge_ws/node1": "DOWN", "wsbridge_push/node1": "DOWN"})

	// A node drains: /readyz turns 503, HAProxy takes it out of the
	// WebSocket pool while it still holds clients, new upgrades go to the
	// other node, then its clients get 1012 and come back elsewhere.
	drainCheck(t, c, clients, pushBase, base, pool, stats, probes)
	t.Logf("haproxy: whole test %v", time.Since(start).Round(time.Millisecond))
}

// drainCheck drains node2 (SIGTERM) while node1 is dead and node3 alive.
func drainCheck(t *testing.T, c *cluster, clients []*wsClient, pushBase, base string, pool *x509.CertPool, stats string, probes map[string]int) {
	t.Helper()
	const victim, other = 1, 2
	before := c.locateAll(clients)
	var mine []*wsClient
	for _, cl := range clients {
		if before[cl.id] == victim {
			mine = append(mine, cl)
		}
	}
	if len(mine) == 0 {
		t.Fatal("node2 holds no clients to drain")
	}
	dropsBefore := map[string]int32{}
	for _, cl := range clients {
		dropsBefore[cl.id] = cl.drops.Load()
	}
	violations := c.backend.Violations.Load()
	n := c.nodes[victim]
	start := time.Now()
	if err := n.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() error {
		if code, _, err := adminGet(n.admin, "/readyz"); err != nil || code != 503 {
			return fmt.Errorf("node2 /readyz while draining: got %d (%v), want 503", code, err)
		}
		return nil
	})
	waitHAStatus(t, stats, drainTimeout, map[string]string{"wsbridge_ws/node2": "DOWN"})
	outAfter := time.Since(start)
	held := n.metric("wsbridge_connections")
	st, _ := haproxyStatus(stats)
	closed := 0
	for _, cl := range mine {
		if cl.drops.Load() > dropsBefore[cl.id] {
			closed++
		}
	}
	t.Logf("drain: node2 out of the WebSocket pool %v after SIGTERM, holding %v of its %d clients (%d already sent 1012); push pool says %q",
		outAfter.Round(time.Millisecond), held, len(mine), closed, st["wsbridge_push/node2"])
	if held <= 0 {
		t.Fatalf("node2 held %v connections when HAProxy took it out; want it to leave the pool before its clients", held)
	}
	// New upgrades during the drain land on the remaining node, including
	// ClientIds that hashed to node2.
	dialer := newDialer(pool)
	moved := 0
	for id, at := range probes {
		if at != victim && at != 0 {
			continue
		}
		conn, resp, err := dialer.Dial(base+"/"+id, clientHeader())
		if err != nil {
			t.Fatalf("new upgrade %s during the drain: %v (%v)", id, err, resp)
		}
		if got := c.locate(id); got != other {
			t.Fatalf("new upgrade %s during the drain landed on node%d, want node3", id, got+1)
		}
		conn.Close()
		moved++
	}
	t.Logf("drain: %d new upgrades for ClientIds of node1/node2 went to node3", moved)

	select {
	case <-n.proc.exited:
	case <-time.After(drainTimeout + 5*time.Second):
		t.Fatalf("node2 did not exit within %v of SIGTERM", drainTimeout+5*time.Second)
	}
	if n.proc.err != nil {
		t.Fatalf("node2 exit after the drain: %v", n.proc.err)
	}
	t.Logf("drain: node2 exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	waitFor(t, 15*time.Second, func() error {
		for _, cl := range mine {
			if !cl.connected.Load() || cl.drops.Load() == dropsBefore[cl.id] {
				return fmt.Errorf("client %s of the drained node not back yet", cl.id)
			}
		}
		return nil
	})
	t.Logf("drain: all %d clients of node2 back %v after SIGTERM", len(mine), time.Since(start).Round(time.Millisecond))
	for _, cl := range mine {
		cs := cl.closeList()
		last := cs[len(cs)-1]
		if last.code != 1012 || !strings.HasPrefix(last.reason, "retry=") {
			t.Fatalf("client %s of the drained node: closed with %d %q, want 1012 retry=<s>", cl.id, last.code, last.reason)
		}
		if cl.refused.Load() != 0 {
			t.Logf("client %s saw %d failed upgrades", cl.id, cl.refused.Load())
		}
	}
	for _, cl := range clients {
		if before[cl.id] != victim && cl.drops.Load() != dropsBefore[cl.id] {
			t.Fatalf("client %s on node%d was disconnected during node2's drain: %v", cl.id, before[cl.id]+1, cl.closeList())
		}
	}
	after := c.locateAll(clients)
	for _, cl := range clients {
		if after[cl.id] != other {
			t.Fatalf("client %s is on node%d after the drain, want node3", cl.id, after[cl.id]+1)
		}
	}
	// Drained clients waited the suggested delay, so the drained node's
	// DELETEs reached the backend before their next GET.
	if v := c.backend.Violations.Load(); v != violations {
		t.Fatalf("backend lifecycle violations during the drain: got %d more (%s), want 0", v-violations, c.backend.LastViolation())
	}
	waitHAStatus(t, stats, 10*time.Second, map[string]string{"wsbridge_push/node2": "DOWN"})
	pushAll(t, pushBase, "after-drain", clients)
}

// ---------------------------------------------------------------------------
// nginx

func TestNginx(t *testing.T) {
	tools := requireTools(t, "nginx")
	t.Parallel()
	start := time.Now()
	dir := testDir(t)
	c := startCluster(t)
	pem, pool := writeCert(t, dir)
	wss, push := freeLoopbackPort(t), freeLoopbackPort(t)
	accessLog := filepath.Join(dir, "access.log")
	pairs := []string{
		"listen 443 ssl", "listen " + wss + " ssl",
		"/etc/nginx/certs/wsbridge.pem", pem,
		"/run/nginx-wsbridge.pid", filepath.Join(dir, "nginx.pid"),
		"/var/log/nginx/wsbridge-access.log", accessLog,
		"10.0.0.10:7002", push,
		// The test machine has two cores, and no need for 400k files.
		"worker_processes auto;", "worker_processes 2;",
		"worker_rlimit_nofile 400000;", "worker_rlimit_nofile 8192;",
		"worker_connections 100000;", "worker_connections 4096;",
	}
	for i, n := range c.nodes {
		pairs = append(pairs,
			fmt.Sprintf("10.0.0.1%d:7001", i+1), n.ws,
			fmt.Sprintf("10.0.0.1%d:7002", i+1), n.admin)
	}
	if os.Geteuid() != 0 {
		pairs = append(pairs, "user www-data;\n", "")
	}
	cfg := render(t, "nginx.conf", dir, pairs...)
	args := []string{"-c", cfg, "-p", dir, "-e", "stderr"}
	if out, err := exec.Command(tools["nginx"], append([]string{"-t"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	startProcess(t, "nginx", nil, append([]string{tools["nginx"], "-g", "daemon off;"}, args...)...)
	waitFor(t, 10*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", wss, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	base, pushBase := "wss://"+wss, "http://"+push

	checkOriginRefused(t, base, pool, c.backend)
	probeStability(t, c, base, pool, 12)

	clients := startClients(t, base, pool, numClients)
	waitConnected(t, clients, 30*time.Second)
	t.Logf("nginx: %d clients connected %v after start", numClients, time.Since(start).Round(time.Millisecond))
	checkXFF(t, c.backend, clients[0].id)
	where := c.locateAll(clients)
	t.Logf("nginx: clients per node %v", checkSpread(t, where, len(c.nodes)))
	if v := c.backend.Violations.Load(); v != 0 {
		t.Fatalf("backend lifecycle violations: got %d (%s), want 0", v, c.backend.LastViolation())
	}
	pushAll(t, pushBase, "hello", clients)
	first, walked := pushWalks(t, accessLog)
	t.Logf("nginx: pushes answered by the first node tried: %d, after walking on: %d", first, walked)
	if walked != 0 {
		t.Fatalf("pushes that needed more than one node with all nodes up: got %d, want 0 (the two upstreams disagree)", walked)
	}

	killAndCheck(t, c, clients, where, 0, pushBase)
	t.Logf("nginx: whole test %v", time.Since(start).Round(time.Millisecond))
}

// pushWalks counts, in nginx's access log, the POSTs answered by the first
// node tried and those that needed the next ones ("upstream=a, b").
func pushWalks(t *testing.T, accessLog string) (first, walked int) {
	t.Helper()
	var b []byte
	// nginx writes its access log unbuffered; wait for the last lines.
	waitFor(t, 5*time.Second, func() error {
		var err error
		b, err = os.ReadFile(accessLog)
		if err != nil {
			return err
		}
		if n := strings.Count(string(b), `"POST /`); n < numClients {
			return fmt.Errorf("access log: got %d POST lines, want %d", n, numClients)
		}
		return nil
	})
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, `"POST /`) {
			continue
		}
		// upstream_status=404, 200 rt=… when a second node answered.
		_, rest, _ := strings.Cut(line, "upstream_status=")
		status, _, _ := strings.Cut(rest, " rt=")
		if strings.Contains(status, ",") {
			walked++
		} else {
			first++
		}
	}
	return first, walked
}

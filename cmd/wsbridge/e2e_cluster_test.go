package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/protocol"
)

// natsServerBin is Debian's nats-server (.ci/run installs it).
const natsServerBin = "/usr/sbin/nats-server"

// natsServer is a real nats-server on a port of its own, that a test can
// kill and start again on the same port.
type natsServer struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	if _, err := exec.LookPath(natsServerBin); err != nil {
		t.Skipf("%s not installed (apt-get install nats-server): %v", natsServerBin, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &natsServer{t: t, port: ln.Addr().(*net.TCPAddr).Port}
	ln.Close()
	n.start()
	t.Cleanup(n.kill)
	return n
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// start runs nats-server on n.port and waits until it accepts.
func (n *natsServer) start() {
	n.t.Helper()
	n.cmd = exec.Command(natsServerBin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port))
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(n.cmd, n.done)
	waitFor(n.t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.port), time.Second)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

// kill stops nats-server at once (SIGKILL) and waits for it to exit.
func (n *natsServer) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

// startNode runs a bridge of the cluster on nats with -node-id id and
// waits until it is on the bus.
func startNode(t testing.TB, nats *natsServer, backendURL, id string, args ...string) *proc {
	t.Helper()
	p := startBridge(t, backendURL, append([]string{"-cluster", nats.url(), "-node-id", id}, args...)...)
	waitClusterUp(t, p, 1)
	return p
}

func waitClusterUp(t testing.TB, p *proc, want float64) {
	t.Helper()
	waitFor(t, 20*time.Second, func() error {
		if v := p.metric(t, "wsbridge_cluster_up"); v != want {
			return fmt.Errorf("wsbridge_cluster_up on %s: %v, want %v", p.admin, v, want)
		}
		return nil
	})
}

// expectText reads frames until a text message and checks it.
func (r *raw) expectText(want string) {
	r.t.Helper()
	for {
		h, p, err := r.readFrame()
		if err != nil {
			r.t.Fatalf("waiting for %q: %v", want, err)
		}
		if h.OpCode == ws.OpPing || h.OpCode == ws.OpPong {
			continue
		}
		if h.OpCode != ws.OpText || string(p) != want {
			r.t.Fatalf("got %v %q, want text %q", h.OpCode, p, want)
		}
		return
	}
}

// TestClusterCrossNode: any node's admin API reaches a ClientId held by
// another node (push, info with "node", kick); an id connected nowhere is
// 404 on every node, at once.
func TestClusterCrossNode(t *testing.T) {
	nats := startNATS(t)
	b := newBackend(t, backend.Options{})
	n1 := startNode(t, nats, b.URL, "n1")
	n2 := startNode(t, nats, b.URL, "n2")
	n3 := startNode(t, nats, b.URL, "n3")

	c := rawUpgrade(t, n1.ws, "x.y~z") // '.' and '~' travel escaped in the subject
	for i, p := range []*proc{n2, n3, n1} {
		msg := "hello " + strconv.Itoa(i)
		status, body, _ := p.adminDo(t, "POST", "/x.y~z", msg)
		requireEqual(t, "push through "+p.admin+" ("+body+")", status, 200)
		c.expectText(msg)
	}

	status, body, _ := n3.adminDo(t, "GET", "/x.y~z", "")
	requireEqual(t, "info through n3", status, 200)
	var info struct{ ID, Node, ConnectionID string }
	info.ConnectionID = "" // json: connection_id
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("info %q: %v", body, err)
	}
	info.ID, _ = m["id"].(string)
	info.Node, _ = m["node"].(string)
	requireEqual(t, "info id", info.ID, "x.y~z")
	requireEqual(t, "info node", info.Node, "n1")
	_, body, _ = n1.adminDo(t, "GET", "/x.y~z", "")
	if err := json.Unmarshal([]byte(body), &m); err != nil || m["node"] != "n1" {
		t.Fatalf("local info %q: want node n1", body)
	}

	for _, p := range []*proc{n1, n2, n3} {
		start := time.Now()
		status, _, _ := p.adminDo(t, "POST", "/nobody", "m")
		requireEqual(t, "push to an id connected nowhere, through "+p.admin, status, 404)
		if d := time.Since(start); d > time.Second {
			t.Errorf("404 took %v: no responders should answer at once", d)
		}
		status, _, _ = p.adminDo(t, "GET", "/nobody", "")
		requireEqual(t, "info of an id connected nowhere", status, 404)
	}

	status, _, _ = n2.adminDo(t, "DELETE", "/x.y~z?code=4321&reason=bye", "")
	requireEqual(t, "kick through n2", status, 200)
	if reason := c.expectClose(4321); reason != "bye" {
		t.Fatalf("kick reason %q", reason)
	}
	dels := waitCalls(t, b, "x.y~z", "DELETE", 1)
	requireEqual(t, "DELETE close code", dels[0].CloseCode, "4321")
	waitFor(t, 10*time.Second, func() error {
		if status, _, _ := n3.adminDo(t, "POST", "/x.y~z", "m"); status != 404 {
			return fmt.Errorf("push after the kick: %d, want 404", status)
		}
		return nil
	})
}

// TestClusterReplacement: a newcomer on another node replaces the open
// connection (4000), its GET names it in Wsbridge-Replaces, and its 101
// comes only after the old connection's DELETE is answered: the backend
// never sees two lifecycles of one ClientId overlap (the mock backend
// counts a violation otherwise).
func TestClusterReplacement(t *testing.T) {
	nats := startNATS(t)
	b := newBackend(t, backend.Options{})
	n1 := startNode(t, nats, b.URL, "n1")
	n2 := startNode(t, nats, b.URL, "n2")
	n3 := startNode(t, nats, b.URL, "n3")

	old := rawUpgrade(t, n1.ws, "rep")
	oldConn := waitCalls(t, b, "rep", "GET", 1)[0].ConnID

	for round, p := range []*proc{n2, n3, n1} {
		nc := rawUpgrade(t, p.ws, "rep")
		// The 101 is here: the old connection's DELETE was answered before.
		dels := count(b, "rep", "DELETE")
		requireEqual(t, fmt.Sprintf("round %d: DELETEs answered before the newcomer's 101", round), dels, round+1)
		old.expectClose(protocol.CloseReplaced)
		gets := waitCalls(t, b, "rep", "GET", round+2)
		requireEqual(t, fmt.Sprintf("round %d: Wsbridge-Replaces", round), gets[round+1].Replaces, oldConn)
		oldConn = gets[round+1].ConnID
		// Pushes through any node now reach the newcomer.
		for _, q := range []*proc{n1, n2, n3} {
			msg := fmt.Sprintf("r%d via %s", round, q.admin)
			waitFor(t, 10*time.Second, func() error {
				if status, _, _ := q.adminDo(t, "POST", "/rep", msg); status != 200 {
					return fmt.Errorf("push %q: %d", msg, status)
				}
				return nil
			})
			nc.expectText(msg)
		}
		old = nc
	}
	requireEqual(t, "backend violations", b.Violations.Load(), int64(0))
}

// TestClusterSimultaneousNewcomers: two newcomers of one ClientId on two
// nodes at once, neither seeing the other open. Both GETs reach the
// backend (neither can name the other in Wsbridge-Replaces); the later
// accepted one wins, the other is refused with 409 (or, if it had opened,
// closed with 4000) and its DELETE is answered before the winner's 101.
// Exactly one connection stays: a push through either node reaches it.
func TestClusterSimultaneousNewcomers(t *testing.T) {
	nats := startNATS(t)
	b := newBackend(t, backend.Options{})
	n1 := startNode(t, nats, b.URL, "n1")
	n2 := startNode(t, nats, b.URL, "n2")
	const rounds = 5
	for i := range rounds {
		id := "race-" + strconv.Itoa(i)
		type result struct {
			r      *raw
			status int
			node   string
		}
		res := make(chan result, 2)
		for node, p := range map[string]*proc{"n1": n1, "n2": n2} {
			go func() {
				r := rawDial(t, p.ws)
				r.send(upgradeRequest(id))
				_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				status, err := readResponseHead(r)
				if err != nil {
					status = 0
				}
				res <- result{r, status, node}
			}()
		}
		got := []result{<-res, <-res}
		opened := 0
		for _, g := range got {
			switch g.status {
			case 101:
				opened++
			case 409:
			default:
				t.Fatalf("%s: upgrade answered %d, want 101 or 409", id, g.status)
			}
		}
		if opened == 0 {
			t.Fatalf("%s: both newcomers refused", id)
		}
		// The node holding id now is the winner's; a loser that had its
		// 101 before the winner's claim reached it is closed with 4000.
		var holder string
		waitFor(t, 10*time.Second, func() error {
			status, body, _ := n1.adminDo(t, "GET", "/"+id, "")
			var m map[string]any
			if status != 200 || json.Unmarshal([]byte(body), &m) != nil {
				return fmt.Errorf("info %s: %d %q", id, status, body)
			}
			holder, _ = m["node"].(string)
			return nil
		})
		var winner *raw
		for _, g := range got {
			switch {
			case g.node == holder && g.status == 101:
				winner = g.r
			case g.status == 101:
				g.r.expectClose(protocol.CloseReplaced)
			}
		}
		if winner == nil {
			t.Fatalf("%s: held on %s, whose newcomer was refused", id, holder)
		}
		for _, p := range []*proc{n1, n2} {
			msg := id + " via " + p.admin
			waitFor(t, 10*time.Second, func() error {
				if status, _, _ := p.adminDo(t, "POST", "/"+id, msg); status != 200 {
					return fmt.Errorf("push %s: %d", id, status)
				}
				return nil
			})
			winner.expectText(msg)
		}
	}
	// What the backend sees of the race: at most one GET per round while
	// the other newcomer's accepted lifecycle (never opened) is still on.
	if v := b.Violations.Load(); v > rounds {
		t.Errorf("backend violations: %d, want at most %d: %s", v, rounds, b.LastViolation())
	}
	b.Violations.Store(0)
}

// readResponseHead reads the status of an upgrade response.
func readResponseHead(r *raw) (int, error) {
	line, err := r.r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	var proto string
	var status int
	if _, err := fmt.Sscan(line, &proto, &status); err != nil {
		return 0, err
	}
	for {
		l, err := r.r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		if l == "\r\n" {
			return status, nil
		}
	}
}

// TestClusterNATSDown: with NATS gone, local pushes still work, a push for
// a ClientId on another node is 503 (never 404), /readyz stays 200 and
// wsbridge_cluster_up is 0; NATS back on the same port, the nodes
// reconnect by themselves and cross-node pushes work again.
func TestClusterNATSDown(t *testing.T) {
	nats := startNATS(t)
	b := newBackend(t, backend.Options{})
	n1 := startNode(t, nats, b.URL, "n1")
	n2 := startNode(t, nats, b.URL, "n2")
	a := rawUpgrade(t, n1.ws, "a")
	c := rawUpgrade(t, n2.ws, "c")
	status, _, _ := n1.adminDo(t, "POST", "/c", "before")
	requireEqual(t, "cross-node push, bus up", status, 200)
	c.expectText("before")

	nats.kill()
	waitClusterUp(t, n1, 0)
	waitClusterUp(t, n2, 0)
	status, _, _ = n1.adminDo(t, "POST", "/a", "local")
	requireEqual(t, "local push, bus down", status, 200)
	a.expectText("local")
	for _, path := range []string{"/c", "/nobody"} {
		status, body, _ := n1.adminDo(t, "POST", path, "m")
		requireEqual(t, "push "+path+" on another node or nowhere, bus down ("+body+")", status, 503)
		status, _, _ = n1.adminDo(t, "GET", path, "")
		requireEqual(t, "info "+path+", bus down", status, 503)
	}
	status, _, _ = n1.adminDo(t, "GET", "/readyz", "")
	requireEqual(t, "/readyz, bus down", status, 200)
	// A newcomer while the bus is down goes on locally.
	d := rawUpgrade(t, n1.ws, "d")

	nats.start()
	waitClusterUp(t, n1, 1)
	waitClusterUp(t, n2, 1)
	for _, tc := range []struct {
		via  *proc
		id   string
		conn *raw
	}{{n1, "c", c}, {n2, "a", a}, {n2, "d", d}} {
		waitFor(t, 20*time.Second, func() error {
			if status, _, _ := tc.via.adminDo(t, "POST", "/"+tc.id, "after"); status != 200 {
				return fmt.Errorf("push /%s after NATS is back: %d", tc.id, status)
			}
			return nil
		})
		tc.conn.expectText("after")
	}
}

// TestClusterNodeKilled: a node killed (SIGKILL), its clients reconnect
// to another node and pushes through a third find them there.
func TestClusterNodeKilled(t *testing.T) {
	nats := startNATS(t)
	b := newBackend(t, backend.Options{})
	n1 := startNode(t, nats, b.URL, "n1")
	n2 := startNode(t, nats, b.URL, "n2")
	n3 := startNode(t, nats, b.URL, "n3")
	const clients = 20
	conns := rawUpgradeMany(t, n1.ws, "k", clients, 8)
	status, _, _ := n3.adminDo(t, "POST", "/k-0", "m")
	requireEqual(t, "push before", status, 200)

	_ = n1.Cmd.Process.Signal(syscall.SIGKILL)
	<-n1.Exited()
	for _, c := range conns {
		c.expectEOF()
	}
	// The clients reconnect to n2. n1 never sent their DELETEs (killed:
	// -journal is what recovers them), so the mock backend sees each GET
	// while the dead connection is still open; that is the kill, not the
	// cluster.
	again := rawUpgradeMany(t, n2.ws, "k", clients, 8)
	for i, c := range again {
		id := "k-" + strconv.Itoa(i)
		msg := "found " + id
		waitFor(t, 10*time.Second, func() error {
			if status, _, _ := n3.adminDo(t, "POST", "/"+id, msg); status != 200 {
				return fmt.Errorf("push %s through n3: %d", id, status)
			}
			return nil
		})
		c.expectText(msg)
	}
	if v := b.Violations.Load(); v != clients {
		t.Errorf("backend violations: %d, want %d (a GET per killed connection): %s", v, clients, b.LastViolation())
	}
	b.Violations.Store(0)
}

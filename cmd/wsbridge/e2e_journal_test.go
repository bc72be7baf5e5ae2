package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// The crash-safe DELETE journal (-journal, docs/protocol.md "Crash-safe
// DELETE"), through the built binary: kill -9 with connections open, the
// next process sends their DELETEs (1006, the lost connection's id), once.
// The mock backend checks the lifecycles across the processes: a second
// DELETE, a DELETE for a connection it never accepted, or a GET for a
// ClientId whose previous connection was not DELETEd yet is a violation.

// kill9 kills p as a crash would and waits for it to be gone.
func kill9(t testing.TB, p *proc) {
	t.Helper()
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("wsbridge did not die after SIGKILL")
	}
}

// gate holds the backend's answer to some DELETEs until opened.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

// newGate returns a closed gate; openAtEnd must follow the backend's
// start, so that the gate opens before the backend's Close waits for the
// calls it holds (cleanups run last first).
func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) openAtEnd(t testing.TB) { t.Cleanup(g.open) }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// acceptedConns returns the connection ids the backend accepted (GET ok)
// for ClientIds starting with prefix, by ClientId.
func acceptedConns(b *backend.Backend, prefix string) map[string]string {
	out := map[string]string{}
	for _, c := range b.Calls("") {
		if c.Method == "GET" && strings.HasPrefix(c.ClientID, prefix) {
			out[c.ClientID] = c.ConnID
		}
	}
	return out
}

// deletesByConn counts the DELETEs the backend got, by connection id, and
// their close codes.
func deletesByConn(b *backend.Backend) (n map[string]int, code map[string]string) {
	n, code = map[string]int{}, map[string]string{}
	for _, c := range b.Calls("") {
		if c.Method == "DELETE" {
			n[c.ConnID]++
			code[c.ConnID] = c.CloseCode
		}
	}
	return n, code
}

func waitDeletes(t testing.TB, b *backend.Backend, want int64, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, func() error {
		if got := b.Deletes.Load(); got != want {
			return fmt.Errorf("backend got %d DELETEs, want %d", got, want)
		}
		return nil
	})
}

// TestJournalKillRestart: 300 connections open and 100 closed (their
// DELETEs answered) when the bridge is killed; the next process on the same
// directory sends exactly the 300 DELETEs, with 1006 and the lost
// connection's Wsbridge-Connection-Id and X-Forwarded-For, none twice,
// none for a closed or unknown connection, and serves new clients while
// they are held at the backend.
func TestJournalKillRestart(t *testing.T) {
	testJournalKillRestart(t, 300, 100, startBridge)
}

// TestJournalKillRestart10k is the figure: 10,000 connections
// open at the kill (and 1,000 closed before it). About 8 s on the 2-core
// VM; make test runs it with the load tests, without -race (27 s with it).
func TestJournalKillRestart10k(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	if raceEnabled {
		t.Skip("load test: run without -race")
	}
	testJournalKillRestart(t, 10000, 1000, startFastBridge)
}

func testJournalKillRestart(t *testing.T, open, closed int, start func(testing.TB, string, ...string) *proc) {
	g := newGate()
	var held atomic.Int64
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "DELETE" && c.CloseCode == "1006" {
			held.Add(1)
			<-g.ch // the orphans' DELETEs wait until the new clients are served
		}
		return false
	}})
	g.openAtEnd(t)
	dir := t.TempDir()
	began := time.Now()
	p1 := start(t, b.URL, "-journal", dir)
	gone := rawUpgradeMany(t, p1.ws, "jc", closed, 64)
	for _, r := range gone {
		r.frame(ws.OpClose, true, ws.NewCloseFrameBody(1000, ""))
	}
	waitDeletes(t, b, int64(closed), 30*time.Second)
	conns := rawUpgradeMany(t, p1.ws, "jk", open, 64)
	t.Logf("%d connections open, %d closed in %v", open, closed, time.Since(began))
	kill9(t, p1)
	requireEqual(t, "DELETEs before the restart", b.Deletes.Load(), int64(closed))
	for _, r := range conns {
		r.conn.Close()
	}
	lost := acceptedConns(b, "jk-")
	requireEqual(t, "connections the backend accepted", len(lost), open)

	began = time.Now()
	p2 := start(t, b.URL, "-journal", dir)
	// Served while the orphans' DELETEs are held at the backend.
	waitFor(t, 30*time.Second, func() error {
		if n := held.Load(); n == 0 {
			return errors.New("no orphan DELETE reached the backend yet")
		}
		return nil
	})
	fresh := rawUpgrade(t, p2.ws, "fresh-1")
	fresh.frame(ws.OpText, true, []byte("hello"))
	if h, p, err := fresh.readFrame(); err != nil || h.OpCode != ws.OpText || string(p) != "hello" {
		t.Fatalf("new client during the replay: %v %q %v", h.OpCode, p, err)
	}
	requireEqual(t, "orphan DELETEs answered while the new client was served", b.Deletes.Load(), int64(closed))
	g.open()
	waitDeletes(t, b, int64(closed+open), 120*time.Second)
	t.Logf("replay of %d DELETEs: %v", open, time.Since(began))

	n, code := deletesByConn(b)
	xff := map[string]string{}
	for _, c := range b.Calls("") {
		if c.Method == "DELETE" {
			xff[c.ConnID] = c.Header["X-Forwarded-For"]
		}
	}
	for id, conn := range lost {
		if n[conn] != 1 || code[conn] != "1006" || xff[conn] != "127.0.0.1" {
			t.Fatalf("%s (%s): %d DELETEs, close code %q, X-Forwarded-For %q; want 1, 1006, 127.0.0.1", id, conn, n[conn], code[conn], xff[conn])
		}
	}
	requireEqual(t, "DELETEs in all", len(n), closed+open)
	waitFor(t, 10*time.Second, func() error {
		if v := p2.metric(t, "wsbridge_journal_orphans_replayed_total"); v != float64(open) {
			return fmt.Errorf("wsbridge_journal_orphans_replayed_total %v, want %d", v, open)
		}
		if v := p2.metric(t, "wsbridge_journal_orphans_left"); v != 0 {
			return fmt.Errorf("wsbridge_journal_orphans_left %v, want 0", v)
		}
		return nil
	})
	// The backend's own checks (in newBackend's cleanup) fail the test on
	// a second DELETE or a DELETE for a connection it never accepted.
}

// TestJournalReconnectWaitsForOrphan: a client whose lost connection's
// DELETE is still unanswered reconnects during the replay; its GET goes
// only once that DELETE is answered, as on the live path.
func TestJournalReconnectWaitsForOrphan(t *testing.T) {
	const n = 20
	hold := newGate()  // jr-7's orphan DELETE
	other := newGate() // every other orphan DELETE
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "DELETE" && c.CloseCode == "1006" {
			if c.ClientID == "jr-7" {
				<-hold.ch
			} else {
				<-other.ch
			}
		}
		return false
	}})
	hold.openAtEnd(t)
	other.openAtEnd(t)
	dir := t.TempDir()
	p1 := startBridge(t, b.URL, "-journal", dir)
	conns := rawUpgradeMany(t, p1.ws, "jr", n, 8)
	kill9(t, p1)
	for _, r := range conns {
		r.conn.Close()
	}
	p2 := startBridge(t, b.URL, "-journal", dir)
	again := rawDial(t, p2.ws)
	again.send(upgradeRequest("jr-7"))
	// Another client's upgrade, sent after it and served at once, shows
	// the bridge has read both.
	rawUpgrade(t, p2.ws, "jr-other")
	other.open()
	waitDeletes(t, b, n-1, 30*time.Second)
	requireEqual(t, "GETs for jr-7 while its orphan DELETE is unanswered", count(b, "jr-7", "GET"), 1)
	hold.open()
	resp, body := again.response()
	if resp.StatusCode != 101 {
		t.Fatalf("reconnect: got %d %q, want 101", resp.StatusCode, body)
	}
	calls := orphanThenGET(t, b, "jr-7")
	requireEqual(t, "orphan DELETE's connection", calls[1].ConnID, calls[0].ConnID)
}

// TestJournalCrashDuringReplay: the second process is killed halfway
// through the replay (orphan DELETEs answered slowly, one at a time) with
// connections of its own open; the third sends every DELETE still owed.
// Over the three processes every connection gets its DELETE, and the only
// one that may come twice is the one the second process had in flight (or
// answered but not yet recorded) at the kill: the design's "answered in the
// instant of the crash".
func TestJournalCrashDuringReplay(t *testing.T) {
	const open, own = 200, 20
	var slow atomic.Bool
	slow.Store(true)
	var lastMu sync.Mutex
	var last string // the last orphan DELETE the backend answered
	var busy atomic.Int64
	opts := backend.Options{Record: true, Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "DELETE" && c.CloseCode == "1006" {
			busy.Add(1)
			defer busy.Add(-1)
			if slow.Load() {
				time.Sleep(5 * time.Millisecond)
			}
			lastMu.Lock()
			last = c.ConnID
			lastMu.Unlock()
		}
		return false
	}}
	// Not newBackend: its check counts a second DELETE as a violation, and
	// one is allowed here; this test counts them itself.
	b, err := backend.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	dir := t.TempDir()
	p1 := startBridge(t, b.URL, "-journal", dir)
	conns := rawUpgradeMany(t, p1.ws, "jd", open, 32)
	kill9(t, p1)
	for _, r := range conns {
		r.conn.Close()
	}
	// One orphan DELETE at a time: -backend-max-conns 4 leaves the replay
	// a quarter of the pool.
	p2 := startBridge(t, b.URL, "-journal", dir, "-backend-max-conns", "4", "-backend-stuck-conns", "0", "-max-pending-upgrades", "0")
	ownConns := rawUpgradeMany(t, p2.ws, "jo", own, 4)
	waitFor(t, 60*time.Second, func() error {
		if d := b.Deletes.Load(); d < open/3 {
			return fmt.Errorf("%d orphan DELETEs answered, want %d before the kill", d, open/3)
		}
		return nil
	})
	kill9(t, p2)
	// The DELETE in flight at the kill may still be in the backend's
	// hands: it counts once the backend is done with it.
	waitFor(t, 10*time.Second, func() error {
		if n := busy.Load(); n != 0 {
			return fmt.Errorf("%d orphan DELETEs still in the backend", n)
		}
		return nil
	})
	lastMu.Lock()
	inFlight := last
	lastMu.Unlock()
	before := b.Deletes.Load()
	if before >= open {
		t.Fatalf("the replay finished (%d DELETEs) before the kill: nothing tested", before)
	}
	for _, r := range ownConns {
		r.conn.Close()
	}
	slow.Store(false)
	p3 := startBridge(t, b.URL, "-journal", dir)
	lost := acceptedConns(b, "")
	requireEqual(t, "connections accepted", len(lost), open+own)
	waitFor(t, 60*time.Second, func() error {
		n, _ := deletesByConn(b)
		for id, conn := range lost {
			if n[conn] == 0 {
				return fmt.Errorf("%s (%s) has no DELETE yet", id, conn)
			}
		}
		return nil
	})
	waitFor(t, 10*time.Second, func() error {
		if v := p3.metric(t, "wsbridge_journal_orphans_left"); v != 0 {
			return fmt.Errorf("wsbridge_journal_orphans_left %v", v)
		}
		return nil
	})
	n, code := deletesByConn(b)
	known := map[string]bool{}
	for _, conn := range lost {
		known[conn] = true
	}
	var twice []string
	for conn, k := range n {
		switch {
		case !known[conn]:
			t.Errorf("DELETE for %s, a connection the backend never accepted", conn)
		case code[conn] != "1006":
			t.Errorf("DELETE for %s with close code %q, want 1006", conn, code[conn])
		case k > 2:
			t.Errorf("%s got %d DELETEs", conn, k)
		case k == 2:
			twice = append(twice, conn)
		}
	}
	sort.Strings(twice)
	// The replay had one DELETE in flight: at most that one, the last the
	// backend answered before the kill, is sent again.
	if len(twice) > 1 || len(twice) == 1 && twice[0] != inFlight {
		t.Fatalf("DELETEs sent twice: %v; only the one in flight at the kill (%s) may be", twice, inFlight)
	}
	t.Logf("%d orphan DELETEs answered before the second kill, %d in all, sent twice: %v", before, b.Deletes.Load(), twice)
}

// TestJournalLocked: a second process given the directory a live one
// holds exits with status 2, naming the directory and the holder's pid.
func TestJournalLocked(t *testing.T) {
	b := newBackend(t, backend.Options{})
	dir := t.TempDir()
	p1 := startBridge(t, b.URL, "-journal", dir)
	cmd := exec.Command(binPath, "-backend", b.URL, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-journal", dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("second process: %v, want exit status 2\n%s", err, out)
	}
	pid := strconv.Itoa(p1.Cmd.Process.Pid)
	if !strings.Contains(string(out), dir) || !strings.Contains(string(out), pid) {
		t.Fatalf("second process's message does not name %s and pid %s:\n%s", dir, pid, out)
	}
	// The first one is unharmed.
	rawUpgrade(t, p1.ws, "still-served")
}

// TestJournalCleanDrain: a drained process leaves no orphans; the next
// start sends nothing.
func TestJournalCleanDrain(t *testing.T) {
	b := newBackend(t, backend.Options{})
	dir := t.TempDir()
	p1 := startBridge(t, b.URL, "-journal", dir, "-drain-timeout", "1s")
	conns := rawUpgradeMany(t, p1.ws, "jn", 20, 8)
	if err := p1.Stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("drain: %v", err)
	}
	for _, r := range conns {
		r.conn.Close()
	}
	requireEqual(t, "DELETEs after the drain", b.Deletes.Load(), int64(20))
	p2 := startBridge(t, b.URL, "-journal", dir)
	if !strings.Contains(p2.Logs(), `"orphans":0`) {
		t.Fatalf("restart after a drain found orphans:\n%s", p2.Logs())
	}
	rawUpgrade(t, p2.ws, "jn-0") // the ClientId is free
	requireEqual(t, "DELETEs after the restart", b.Deletes.Load(), int64(20))
}

// TestJournalCorruptTail: a journal whose last segment ends in garbage (a
// torn write) is read up to the damage with a warning; the bridge starts
// and sends the DELETEs recorded before it.
func TestJournalCorruptTail(t *testing.T) {
	b := newBackend(t, backend.Options{})
	dir := t.TempDir()
	p1 := startBridge(t, b.URL, "-journal", dir)
	conns := rawUpgradeMany(t, p1.ws, "jt", 10, 4)
	kill9(t, p1)
	for _, r := range conns {
		r.conn.Close()
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.wal"))
	if len(segs) == 0 {
		t.Fatalf("no segment in %s", dir)
	}
	sort.Strings(segs)
	f, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write([]byte{40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3}) // a record cut short, bad CRC
	_ = f.Close()
	p2 := startBridge(t, b.URL, "-journal", dir)
	if l := p2.Logs(); !strings.Contains(l, "journal damaged") || !strings.Contains(l, `"level":"warn"`) {
		t.Fatalf("no damage warning:\n%s", l)
	}
	waitDeletes(t, b, 10, 30*time.Second)
	rawUpgrade(t, p2.ws, "jt-new")
}

// TestJournalReconnectJumpsTheReplay: a client reconnecting while its lost
// connection's DELETE still waits in a long replay does not wait for the
// whole replay: its orphan's DELETE goes next, and its 101 follows that
// DELETE's answer, while the other orphans' DELETEs are still held.
func TestJournalReconnectJumpsTheReplay(t *testing.T) {
	const n = 300
	other := newGate() // every orphan DELETE but jj-250's
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "DELETE" && c.CloseCode == "1006" && c.ClientID != "jj-250" {
			<-other.ch
		}
		return false
	}})
	other.openAtEnd(t)
	dir := t.TempDir()
	p1 := startBridge(t, b.URL, "-journal", dir)
	conns := rawUpgradeMany(t, p1.ws, "jj", n, 8)
	kill9(t, p1)
	for _, r := range conns {
		r.conn.Close()
	}
	// 8 backend sockets: the replay sends 2 DELETEs at a time.
	p2 := startBridge(t, b.URL, "-journal", dir, "-backend-max-conns", "8")
	again := rawDial(t, p2.ws)
	again.send(upgradeRequest("jj-250"))
	resp, body := again.response()
	if resp.StatusCode != 101 {
		t.Fatalf("reconnect behind a held replay: got %d %q, want 101", resp.StatusCode, body)
	}
	if calls := orphanThenGET(t, b, "jj-250"); calls[1].CloseCode != "1006" {
		t.Fatalf("jj-250's orphan DELETE: close code %q, want 1006", calls[1].CloseCode)
	}
	if got := b.Deletes.Load(); got > 10 {
		t.Errorf("%d DELETEs answered before the reconnect's 101; the others should still be held", got)
	}
}

// orphanThenGET returns id's calls at the backend and fails the test
// unless they are the lost connection's GET, its orphan DELETE and the
// reconnect's GET.
func orphanThenGET(t testing.TB, b *backend.Backend, id string) []backend.Call {
	t.Helper()
	calls := b.Calls(id)
	if len(calls) != 3 || calls[0].Method != "GET" || calls[1].Method != "DELETE" || calls[2].Method != "GET" {
		var got []string
		for _, c := range calls {
			got = append(got, c.Method+" "+c.ConnID)
		}
		t.Fatalf("%s's calls: %v, want GET, DELETE (orphan), GET", id, got)
	}
	return calls
}

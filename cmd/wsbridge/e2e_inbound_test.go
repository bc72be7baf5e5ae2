package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/protocol"
)

// splitUpgrade is one client of TestSplitUpgradeStress: an upgrade request
// whose every identifying part (path, key, Cookie, Authorization) is its
// own, cut in the middle of its Cookie.
type splitUpgrade struct {
	id, key, cookie string
	head, tail      string
	conn            net.Conn
}

func newSplitUpgrade(id string) *splitUpgrade {
	var k [16]byte
	_, _ = rand.Read(k[:])
	u := &splitUpgrade{id: id, key: base64.StdEncoding.EncodeToString(k[:])}
	// A large Cookie, as browsers send, naming its owner throughout.
	u.cookie = "session=" + id + "; pad=" + strings.Repeat(id+".", 2000/(len(id)+1))
	req := "GET /" + id + " HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + u.key + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Authorization: Bearer " + id + "\r\nCookie: " + u.cookie + "\r\n\r\n"
	cut := strings.Index(req, "pad=") + 500
	u.head, u.tail = req[:cut], req[cut:]
	return u
}

// accept is the Sec-WebSocket-Accept for u's key.
func (u *splitUpgrade) accept() string {
	h := sha1.Sum([]byte(u.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// TestSplitUpgradeStress: thousands of upgrade requests, each arriving in two
// reads (the second half of a large Cookie comes later) on every event loop
// at once. gnet copies such a head into a buffer from a pool shared by all
// loops; the bridge must take what it needs before handing it back, so each
// GET carries its own client's ClientId, Cookie and Authorization, and each
// client gets the Sec-WebSocket-Accept of its own key.
func TestSplitUpgradeStress(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-loops", "4")
	const (
		workers = 16
		batch   = 16 // connections a worker has between a head and its tail
		rounds  = 16
		total   = workers * batch * rounds
	)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	all := make([]*splitUpgrade, 0, total)
	for w := range workers {
		us := make([]*splitUpgrade, batch*rounds)
		for i := range us {
			us[i] = newSplitUpgrade(fmt.Sprintf("split-%d-%d", w, i))
		}
		all = append(all, us...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				group := us[r*batch : (r+1)*batch]
				// Every head first, then every tail: the bridge has read a
				// head alone before its tail arrives.
				for _, u := range group {
					c, err := net.DialTimeout("tcp", p.ws, 5*time.Second)
					if err != nil {
						fail("%s: dial: %v", u.id, err)
						continue
					}
					u.conn = c
					if _, err := c.Write([]byte(u.head)); err != nil {
						fail("%s: write head: %v", u.id, err)
					}
				}
				for _, u := range group {
					if u.conn != nil {
						if _, err := u.conn.Write([]byte(u.tail)); err != nil {
							fail("%s: write tail: %v", u.id, err)
						}
					}
				}
				for _, u := range group {
					if u.conn == nil {
						continue
					}
					_ = u.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
					resp, err := http.ReadResponse(bufio.NewReader(u.conn), nil)
					switch {
					case err != nil:
						fail("%s: response: %v", u.id, err)
					case resp.StatusCode != 101:
						fail("%s: status %d, want 101", u.id, resp.StatusCode)
					case resp.Header.Get("Sec-WebSocket-Accept") != u.accept():
						fail("%s: Sec-WebSocket-Accept %q, want %q (another client's key)",
							u.id, resp.Header.Get("Sec-WebSocket-Accept"), u.accept())
					}
					u.conn.Close()
				}
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if t.Failed() {
		return
	}
	waitFor(t, 60*time.Second, func() error {
		if n := b.Gets.Load(); n < total {
			return fmt.Errorf("GETs: got %d, want %d", n, total)
		}
		return nil
	})
	want := make(map[string]*splitUpgrade, total)
	for _, u := range all {
		want[u.id] = u
	}
	gets := 0
	for _, c := range b.Calls("") {
		if c.Method != "GET" {
			continue
		}
		gets++
		u := want[c.ClientID]
		if u == nil {
			t.Errorf("GET for %q, which no client asked for", c.ClientID)
			continue
		}
		delete(want, c.ClientID)
		if got := c.Header["Cookie"]; got != u.cookie {
			t.Errorf("%s: GET Cookie %.60q…, want %.60q…", u.id, got, u.cookie)
		}
		if got := c.Header["Authorization"]; got != "Bearer "+u.id {
			t.Errorf("%s: GET Authorization %q, want %q", u.id, got, "Bearer "+u.id)
		}
	}
	requireEqual(t, "GETs", gets, total)
	if len(want) > 0 {
		t.Errorf("%d clients got no GET of their own", len(want))
	}
}

// messagesIn is the messages_in of the admin API's info on id, or -1.
func (p *proc) messagesIn(t testing.TB, id string) int {
	t.Helper()
	status, body, _ := p.adminDo(t, "GET", "/"+id, "")
	if status != 200 {
		return -1
	}
	var info struct {
		MessagesIn int `json:"messages_in"`
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("info of %s: %v in %q", id, err, body)
	}
	return info.MessagesIn
}

// TestGlobalQueuePauseResumes: a connection paused only because the
// bridge-wide bound on queued messages was reached (32 × -backend-max-conns)
// reads on when its own POST finishes. It has nothing queued of its own, so
// nothing else would wake it: with heartbeats off its next message waited
// for the client's next bytes, for ever.
func TestGlobalQueuePauseResumes(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unstall := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unstall) // before the backend's Close, which waits for its handlers
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "POST" && string(c.Body) == "stall" {
			<-release
		}
		return false
	}})
	// Two backend sockets: 64 queued messages fill the bridge-wide bound.
	p := startBridge(t, b.URL, "-backend-max-conns", "2", "-max-pending-upgrades", "0", "-ping-interval", "0")
	const fillers, perConn = 4, 16 // maxQueuedMessages behind each one's POST in flight
	quiet := rawUpgrade(t, p.ws, "quiet")
	var fill []*raw
	for i := range fillers {
		fill = append(fill, rawUpgrade(t, p.ws, fmt.Sprintf("filler-%d", i)))
	}
	// Each filler's first POST stalls (or waits for a backend socket), and
	// 16 more messages queue behind it: 4 × 16 = 64 queued.
	for _, r := range fill {
		var burst []byte
		burst = protocol.AppendClientFrame(burst, ws.OpText, true, testMask, []byte("stall"))
		for j := range perConn {
			burst = protocol.AppendClientFrame(burst, ws.OpText, true, testMask, []byte(strconv.Itoa(j)))
		}
		if _, err := r.conn.Write(burst); err != nil {
			t.Fatal(err)
		}
	}
	for i := range fillers {
		id := fmt.Sprintf("filler-%d", i)
		waitFor(t, 10*time.Second, func() error {
			if n := p.messagesIn(t, id); n != perConn+1 {
				return fmt.Errorf("%s: messages read: got %d, want %d", id, n, perConn+1)
			}
			return nil
		})
	}
	// quiet's first message is sent at once (it waits for a backend socket
	// behind the stalled ones); its second finds the bound reached and stays
	// unread, with nothing queued on quiet to wake it.
	var two []byte
	two = protocol.AppendClientFrame(two, ws.OpText, true, testMask, []byte("first"))
	two = protocol.AppendClientFrame(two, ws.OpText, true, testMask, []byte("second"))
	if _, err := quiet.conn.Write(two); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		if n := p.messagesIn(t, "quiet"); n != 1 {
			return fmt.Errorf("quiet: messages read: got %d, want 1 (the second paused)", n)
		}
		return nil
	})
	unstall()
	// Once the backend answers, everything flows again; quiet sends nothing
	// more, so only the bridge can fetch its second message.
	waitCalls(t, b, "quiet", "POST", 2)
	for i := range fillers {
		waitCalls(t, b, fmt.Sprintf("filler-%d", i), "POST", perConn+1)
	}
	for _, want := range []string{"first", "second"} {
		h, got, err := quiet.readFrame()
		if err != nil {
			t.Fatalf("quiet: reply %q: %v", want, err)
		}
		if h.OpCode != ws.OpText || string(got) != want {
			t.Fatalf("quiet: reply: got %v %q, want %q", h.OpCode, got, want)
		}
	}
}

// TestBufferedAtSocketClose: messages and a close frame the bridge has read
// but not yet decoded when the socket closes (it stopped decoding while the
// connection's POST queue was full) are still POSTed, in order, and the
// DELETE carries the client's close code, not 1006 (1006 only when there
// was no close frame). The client writes it all at once and closes its
// side; the first POST is held until the bridge has closed the socket, so
// the rest is still in the bridge's buffer then.
func TestBufferedAtSocketClose(t *testing.T) {
	for _, tc := range []struct {
		n         int
		closeCode string // "" for no close frame
	}{{20, "1000"}, {3000, "1000"}, {20, ""}} {
		n, name := tc.n, fmt.Sprintf("%d_messages_close_%s", tc.n, tc.closeCode)
		if tc.closeCode == "" {
			name = fmt.Sprintf("%d_messages_no_close", n)
		}
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			var once sync.Once
			unstall := func() { once.Do(func() { close(release) }) }
			t.Cleanup(unstall)
			b := newBackend(t, backend.Options{Sequenced: true, Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
				if c.Method == "POST" && string(c.Body) == "0" {
					<-release
				}
				return false
			}})
			p := startBridge(t, b.URL, "-ping-interval", "0")
			id := fmt.Sprintf("buffered-%d", n)
			r := rawUpgrade(t, p.ws, id)
			var all []byte
			for i := range n {
				all = protocol.AppendClientFrame(all, ws.OpText, true, testMask, []byte(strconv.Itoa(i)))
			}
			if tc.closeCode != "" {
				all = protocol.AppendClientFrame(all, ws.OpClose, true, testMask, ws.NewCloseFrameBody(1000, "bye"))
			}
			if _, err := r.conn.Write(all); err != nil {
				t.Fatal(err)
			}
			// A FIN: the bridge sees the end of the stream and closes the
			// socket, which the client sees as its own end of stream.
			if err := r.conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			r.expectEOF()
			unstall()
			waitFor(t, 30*time.Second, func() error {
				if got := count(b, id, "DELETE"); got != 1 {
					return fmt.Errorf("DELETEs: got %d, want 1 (POSTs so far %d)", got, count(b, id, "POST"))
				}
				return nil
			})
			posts := 0
			for _, c := range b.Calls(id) {
				if c.Method == "POST" {
					if string(c.Body) != strconv.Itoa(posts) {
						t.Fatalf("POST %d: got %q, want %q", posts, c.Body, strconv.Itoa(posts))
					}
					posts++
				}
			}
			if posts != n {
				t.Errorf("POSTs: got %d, want %d", posts, n)
			}
			del := waitCalls(t, b, id, "DELETE", 1)[0]
			if tc.closeCode == "" {
				requireEqual(t, "DELETE close code", del.CloseCode, "1006")
				return
			}
			requireEqual(t, "DELETE close code", del.CloseCode, tc.closeCode)
			requireEqual(t, "DELETE body", string(del.Body), "bye")
		})
	}
}

// heapInuse is the bridge's go_memstats_heap_inuse_bytes right after a
// garbage collection (pprof's heap profile with gc=1 runs one).
func (p *proc) heapInuse(t testing.TB) float64 {
	t.Helper()
	if status, _, _ := p.adminDo(t, "GET", "/debug/pprof/heap?gc=1", ""); status != 200 {
		t.Fatalf("heap profile: got %d, want 200", status)
	}
	return p.metric(t, "go_memstats_heap_inuse_bytes")
}

// TestPingFloodBounded: a client that sends pings and never reads cannot
// grow the bridge's memory. Every pong counts against -max-outbound like
// any frame towards the client: once it would not fit, the client is a slow
// consumer and is closed with 1013. Before, a pong was written for every
// ping without that check and gnet's outbound buffer grew with them.
func TestPingFloodBounded(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-max-outbound", "256KiB", "-ping-interval", "0")
	r := rawUpgrade(t, p.ws, "pinger")
	before := p.heapInuse(t)
	// 125-byte pings (the largest) in 64 KiB writes: 64 MiB in all, or
	// until the bridge closes the socket.
	const total = 64 << 20
	var chunk []byte
	payload := bytes.Repeat([]byte("p"), 125)
	for len(chunk) < 64<<10 {
		chunk = protocol.AppendClientFrame(chunk, ws.OpPing, true, testMask, payload)
	}
	sent := 0
	_ = r.conn.SetWriteDeadline(time.Now().Add(2 * time.Minute))
	for sent < total {
		n, err := r.conn.Write(chunk)
		sent += n
		if err != nil {
			break // the bridge closed the socket
		}
	}
	grown := p.heapInuse(t) - before
	t.Logf("sent %d MiB of pings, read nothing: the bridge's heap grew by %.1f MiB", sent>>20, grown/(1<<20))
	// 256 KiB of outbound, gnet's buffers and the race detector's shadow
	// allocations, with room to spare; an unbounded outbound is ~60 MiB.
	if grown > 16<<20 {
		t.Errorf("heap growth: got %.1f MiB, want < 16 MiB", grown/(1<<20))
	}
	del := waitCalls(t, b, "pinger", "DELETE", 1)[0]
	requireEqual(t, "DELETE close code", del.CloseCode, "1013")
	requireEqual(t, "closed as slow consumer", p.metric(t, `wsbridge_connections_closed_total{reason="slow_consumer"}`), 1.0)
}

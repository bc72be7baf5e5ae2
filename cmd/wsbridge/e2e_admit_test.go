package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/engine"
)

// holdGETs returns a backend hook that keeps the GETs of ClientIds
// starting with prefix until release is closed (then says ok), and counts
// them as they arrive.
func holdGETs(prefix string, release <-chan struct{}, held *atomic.Int64) func(*fasthttp.RequestCtx, *backend.Call) bool {
	return func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method != "GET" || !strings.HasPrefix(c.ClientID, prefix) {
			return false
		}
		held.Add(1)
		select {
		case <-release:
		case <-time.After(60 * time.Second):
		}
		ctx.SetBodyString("ok")
		return true
	}
}

// rawDialFrom dials addr from the loopback address src (127.0.0.0/8 is
// all local on Linux), so that the bridge sees another client address.
func rawDialFrom(t testing.TB, src, addr string) *raw {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, conn: c, r: bufio.NewReader(c)}
}

// statusTally collects the statuses of upgrades answered so far.
type statusTally struct {
	mu sync.Mutex
	n  map[int]int
}

func (s *statusTally) add(status int) {
	s.mu.Lock()
	if s.n == nil {
		s.n = map[int]int{}
	}
	s.n[status]++
	s.mu.Unlock()
}

func (s *statusTally) get() (total int, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []int
	for k, v := range s.n {
		total += v
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", s.n[k], k))
	}
	return total, strings.Join(parts, " ")
}

// TestOneClientIDCannotBlockUpgrades (issue 19, item 7): many upgrades for
// one ClientId whose owner's GET is slow must not use up -max-pending-
// upgrades: at most engine.MaxWaitersPerClientID wait behind the owner,
// the rest are refused at once with 429 and Retry-After, the backend sees
// one GET, and an upgrade for any other ClientId is served.
func TestOneClientIDCannotBlockUpgrades(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Int64
	b := newBackend(t, backend.Options{Hook: holdGETs("hog", release, &held)})
	t.Cleanup(func() { close(release) })
	const pendingLimit, upgrades = 40, 120
	p := startBridge(t, b.URL, "-max-pending-upgrades", fmt.Sprint(pendingLimit), "-backend-timeout", "30s")

	owner := rawDial(t, p.ws)
	owner.send(upgradeRequest("hog"))
	waitFor(t, 10*time.Second, func() error {
		if held.Load() != 1 {
			return fmt.Errorf("owner's GET not at the backend yet")
		}
		return nil
	})

	var tally statusTally
	var retryAfter atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range conns {
			c.Close() // ends the waiters' reads
		}
		mu.Unlock()
		wg.Wait()
	})
	sem := make(chan struct{}, 20)
	for range upgrades - 1 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", p.ws, 5*time.Second)
			<-sem
			if err != nil {
				tally.add(-1)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write([]byte(upgradeRequest("hog"))); err != nil {
				tally.add(-2)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return // a waiter: no answer until the owner's GET ends
			}
			resp.Body.Close()
			if resp.Header.Get("Retry-After") != "" {
				retryAfter.Add(1)
			}
			tally.add(resp.StatusCode)
		}()
	}
	// The waiters hold their goroutine until the test ends; the refused
	// ones answer at once.
	wantRefused := upgrades - 1 - engine.MaxWaitersPerClientID
	waitFor(t, 20*time.Second, func() error {
		if n, desc := tally.get(); n < wantRefused {
			return fmt.Errorf("upgrades for the busy ClientId answered: got %d (%s), want %d refused at once", n, desc, wantRefused)
		}
		return nil
	})

	// Another ClientId is served while the owner's GET still hangs.
	other := rawDial(t, p.ws)
	other.send(upgradeRequest("someone-else"))
	resp, body := other.response()
	requireEqual(t, "status of another ClientId's upgrade ("+body+")", resp.StatusCode, 101)

	n, desc := tally.get()
	if n != wantRefused || tally.n[429] != wantRefused {
		t.Fatalf("refusals: got %d (%s), want %d×429", n, desc, wantRefused)
	}
	requireEqual(t, "429s with Retry-After", int(retryAfter.Load()), wantRefused)
	requireEqual(t, "GETs for the busy ClientId at the backend", int(held.Load()), 1)
	if got := p.metric(t, `wsbridge_upgrades_refused_total{reason="client_id_busy"}`); got != float64(wantRefused) {
		t.Fatalf(`refused{client_id_busy}: got %v, want %d`, got, wantRefused)
	}
}

// refusedUpgrade sends an upgrade for id on r and expects status, with
// Retry-After for 429 and 503, and the socket closed.
func refusedUpgrade(t *testing.T, r *raw, id string, status int) string {
	t.Helper()
	r.send(upgradeRequest(id))
	resp, body := r.response()
	requireEqual(t, "status of "+id+" ("+body+")", resp.StatusCode, status)
	if (status == 429 || status == 503) && resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d for %s without Retry-After", status, id)
	}
	r.expectEOF()
	return body
}

// TestMaxConnsPerIP: -max-conns-per-ip counts each client address's
// connections; one more gets 429 without a backend call, other addresses
// are not affected, a closed connection makes room once its DELETE is
// answered, and an upgrade the backend refuses at once.
func TestMaxConnsPerIP(t *testing.T) {
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "GET" && strings.HasPrefix(c.ClientID, "deny") {
			ctx.Error("no", 403)
			return true
		}
		return false
	}})
	p := startBridge(t, b.URL, "-max-conns-per-ip", "3")
	var mine []*raw
	for i := range 3 {
		mine = append(mine, rawUpgrade(t, p.ws, fmt.Sprintf("ip1-%d", i)))
	}
	refusedUpgrade(t, rawDial(t, p.ws), "ip1-3", 429)
	requireEqual(t, "GETs for the refused upgrade", count(b, "ip1-3", "GET"), 0)

	o := rawDialFrom(t, "127.0.0.2", p.ws)
	o.send(upgradeRequest("ip2-0"))
	resp, body := o.response()
	requireEqual(t, "another address's upgrade ("+body+")", resp.StatusCode, 101)

	mine[0].conn.Close()
	waitCalls(t, b, "ip1-0", "DELETE", 1)
	waitFor(t, 10*time.Second, func() error {
		r := rawDial(t, p.ws)
		r.send(upgradeRequest("ip1-4"))
		if resp, body := r.response(); resp.StatusCode != 101 {
			return fmt.Errorf("upgrade after a close: got %d %q, want 101", resp.StatusCode, body)
		}
		return nil
	})
	// Upgrades the backend refuses give their place back at once.
	for i := range 3 {
		refusedUpgrade(t, rawDialFrom(t, "127.0.0.3", p.ws), fmt.Sprintf("deny-%d", i), 403)
	}
	o3 := rawDialFrom(t, "127.0.0.3", p.ws)
	o3.send(upgradeRequest("ip3-0"))
	resp, body = o3.response()
	requireEqual(t, "upgrade after refused ones ("+body+")", resp.StatusCode, 101)
	if got := p.metric(t, `wsbridge_upgrades_refused_total{reason="per_ip"}`); got < 1 {
		t.Fatalf("refused{per_ip}: got %v, want >= 1", got)
	}
}

// TestMaxPendingPerIP: -max-pending-per-ip bounds one address's upgrades
// waiting for the backend; more get 429 at once while other addresses are
// served, and the address is served again once its GETs are answered.
func TestMaxPendingPerIP(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	var held atomic.Int64
	b := newBackend(t, backend.Options{Hook: holdGETs("slow", release, &held)})
	p := startBridge(t, b.URL, "-max-pending-per-ip", "2", "-backend-timeout", "30s")
	s1, s2 := rawDial(t, p.ws), rawDial(t, p.ws)
	s1.send(upgradeRequest("slow-1"))
	s2.send(upgradeRequest("slow-2"))
	waitFor(t, 10*time.Second, func() error {
		if held.Load() != 2 {
			return fmt.Errorf("slow GETs at the backend: got %d, want 2", held.Load())
		}
		return nil
	})
	body := refusedUpgrade(t, rawDial(t, p.ws), "fast-1", 429)
	if !strings.Contains(body, "waiting for the backend") {
		t.Fatalf("429 body: got %q, want the pending limit named", body)
	}
	o := rawDialFrom(t, "127.0.0.2", p.ws)
	o.send(upgradeRequest("fast-2"))
	resp, body := o.response()
	requireEqual(t, "another address's upgrade ("+body+")", resp.StatusCode, 101)

	free()
	for _, r := range []*raw{s1, s2} {
		resp, body := r.response()
		requireEqual(t, "slow upgrade once answered ("+body+")", resp.StatusCode, 101)
	}
	rawUpgrade(t, p.ws, "fast-3") // the address's pending upgrades are done
}

// proxyV2Header is a PROXY protocol v2 header (command PROXY, TCP) from
// src to dst.
func proxyV2Header(src, dst netip.AddrPort) string {
	fam, n := byte(0x11), 12
	if src.Addr().Is6() {
		fam, n = 0x21, 36
	}
	b := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), 0x21, fam, 0, byte(n))
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return string(binary.BigEndian.AppendUint16(b, dst.Port()))
}

// TestProxyProtocol: a connection from a trusted proxy may start with a
// PROXY protocol header, v1 or v2, sent at once or in pieces; its source
// address is the client's in the GET's X-Forwarded-For (a client-sent one
// is dropped, as from any untrusted client) and in the admin info's
// remote_addr. LOCAL and UNKNOWN keep the socket's peer, which is trusted,
// so the client's X-Forwarded-For is believed as without a header.
func TestProxyProtocol(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-trusted-proxies", "127.0.0.1/32")
	v2 := proxyV2Header(netip.MustParseAddrPort("203.0.113.10:40002"), netip.MustParseAddrPort("127.0.0.1:443"))
	for _, tc := range []struct {
		name, header        string
		pieces              int // write the header in this many pieces (0: with the request)
		wantXFF, wantRemote string
	}{
		{"v1", "PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n", 0, "203.0.113.9", "203.0.113.9:40000"},
		{"v1-tcp6", "PROXY TCP6 2001:db8::7 ::1 40001 443\r\n", 0, "2001:db8::7", "[2001:db8::7]:40001"},
		{"v1-pieces", "PROXY TCP4 203.0.113.11 127.0.0.1 40003 443\r\n", 5, "203.0.113.11", "203.0.113.11:40003"},
		{"v2", v2, 0, "203.0.113.10", "203.0.113.10:40002"},
		{"v2-pieces", v2, 4, "203.0.113.10", "203.0.113.10:40002"},
		{"v2-local", "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", 0, "198.51.100.1, 127.0.0.1", "198.51.100.1:0"},
		{"v1-unknown", "PROXY UNKNOWN\r\n", 0, "198.51.100.1, 127.0.0.1", "198.51.100.1:0"},
		{"none", "", 0, "198.51.100.1, 127.0.0.1", "198.51.100.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "pp-" + tc.name
			r := rawDial(t, p.ws)
			req := upgradeRequest(id, "X-Forwarded-For: 198.51.100.1")
			if tc.pieces > 0 {
				step := (len(tc.header) + tc.pieces - 1) / tc.pieces
				for h := tc.header; len(h) > 0; h = h[min(step, len(h)):] {
					r.send(h[:min(step, len(h))])
				}
				r.send(req)
			} else {
				r.send(tc.header + req)
			}
			resp, body := r.response()
			requireEqual(t, "status ("+body+")", resp.StatusCode, 101)
			get := waitCalls(t, b, id, "GET", 1)[0]
			requireEqual(t, "X-Forwarded-For", get.Header["X-Forwarded-For"], tc.wantXFF)
			_, info, _ := p.adminDo(t, "GET", "/"+id, "")
			var got struct {
				RemoteAddr string `json:"remote_addr"`
			}
			if err := json.Unmarshal([]byte(info), &got); err != nil {
				t.Fatalf("info %q: %v", info, err)
			}
			requireEqual(t, "remote_addr", got.RemoteAddr, tc.wantRemote)
			// Frames flow after the header and the request.
			r.frame(ws.OpText, true, []byte("hi"))
			if _, reply, err := r.readFrame(); err != nil || string(reply) != "hi" {
				t.Fatalf("echo: got %q, %v, want hi", reply, err)
			}
		})
	}
}

// TestProxyProtocolRefused: a PROXY header is never believed from a peer
// outside -trusted-proxies, and a malformed one is refused: 400, the socket
// closed, nothing asked of the backend.
func TestProxyProtocolRefused(t *testing.T) {
	b := newBackend(t, backend.Options{})
	v1 := "PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n"
	v2 := proxyV2Header(netip.MustParseAddrPort("203.0.113.10:40002"), netip.MustParseAddrPort("127.0.0.1:443"))
	trusted := startBridge(t, b.URL, "-trusted-proxies", "127.0.0.1/32")
	untrusted := startBridge(t, b.URL)
	otherTrusted := startBridge(t, b.URL, "-trusted-proxies", "10.0.0.0/8")
	for _, tc := range []struct {
		name   string
		p      *proc
		header string
	}{
		{"untrusted-v1", untrusted, v1},
		{"untrusted-v2", untrusted, v2},
		{"not-in-trusted-v1", otherTrusted, v1},
		{"not-in-trusted-v2", otherTrusted, v2},
		{"malformed-v1", trusted, "PROXY TCP4 203.0.113.09 127.0.0.1 40000 443\r\n"},
		{"malformed-v1-family", trusted, "PROXY TCP6 203.0.113.9 127.0.0.1 40000 443\r\n"},
		{"malformed-v2-version", trusted, "\r\n\r\n\x00\r\nQUIT\n\x11" + v2[13:]},
		{"malformed-v2-short", trusted, "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04" + "abcd"},
		{"second-header", trusted, v1 + v1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "ppr-" + tc.name
			r := rawDial(t, tc.p.ws)
			r.send(tc.header + upgradeRequest(id))
			resp, body := r.response()
			requireEqual(t, "status ("+body+")", resp.StatusCode, 400)
			r.expectEOF()
			requireEqual(t, "GETs", count(b, id, "GET"), 0)
		})
	}
	for _, p := range []*proc{trusted, untrusted, otherTrusted} {
		if got := p.metric(t, `wsbridge_upgrades_refused_total{reason="proxy_header"}`); got < 2 {
			t.Fatalf("refused{proxy_header}: got %v, want >= 2", got)
		}
	}
}

// TestProxyProtocolPerIP: the per-address limits count the PROXY protocol
// source, not the proxy's address.
func TestProxyProtocolPerIP(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-trusted-proxies", "127.0.0.1/32", "-max-conns-per-ip", "1")
	upgradeVia := func(src, id string) (*raw, int) {
		r := rawDial(t, p.ws)
		r.send(fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40000 443\r\n", src) + upgradeRequest(id))
		resp, _ := r.response()
		return r, resp.StatusCode
	}
	_, st := upgradeVia("203.0.113.9", "ppip-a")
	requireEqual(t, "first from 203.0.113.9", st, 101)
	_, st = upgradeVia("203.0.113.9", "ppip-b")
	requireEqual(t, "second from 203.0.113.9", st, 429)
	_, st = upgradeVia("203.0.113.10", "ppip-c")
	requireEqual(t, "first from 203.0.113.10", st, 101)
	rawUpgrade(t, p.ws, "ppip-d") // the proxy's own address: its first
}

package main

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bench/backend"
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

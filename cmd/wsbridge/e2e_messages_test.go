package main

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// echoOrQuiet echoes messages except "quiet…" ones, which get an empty reply,
// and "bad-utf8", which gets invalid UTF-8 as text.
func echoOrQuiet(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
	if c.Method != "POST" {
		return false
	}
	switch {
	case bytes.HasPrefix(c.Body, []byte("quiet")):
		ctx.SetStatusCode(200)
		return true
	case bytes.Equal(c.Body, []byte("bad-utf8")):
		ctx.SetContentType("text/plain")
		ctx.SetBody([]byte{0xff, 0xfe})
		return true
	}
	return false
}

func TestMessages(t *testing.T) {
	b := newBackend(t, backend.Options{Hook: echoOrQuiet})
	p := startBridge(t, b.URL)
	c, _, err := websocket.DefaultDialer.Dial(p.url("msg"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))

	t.Run("text reply", func(t *testing.T) {
		c.WriteMessage(websocket.TextMessage, []byte("hello"))
		typ, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		requireEqual(t, "type", typ, websocket.TextMessage)
		requireEqual(t, "reply", string(msg), "hello")
		post := waitCalls(t, b, "msg", "POST", 1)[0]
		requireEqual(t, "Content-Type", post.Header["Content-Type"], "text/plain; charset=utf-8")
	})
	t.Run("empty reply sends nothing", func(t *testing.T) {
		c.WriteMessage(websocket.TextMessage, []byte("quiet please"))
		c.WriteMessage(websocket.TextMessage, []byte("bad-utf8"))
		c.WriteMessage(websocket.TextMessage, []byte("after"))
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		// Neither the empty reply nor the invalid one reached the client.
		requireEqual(t, "next reply", string(msg), "after")
		if got := p.metric(t, `wsbridge_backend_requests_total{method="POST",outcome="bad_reply"}`); got != 1 {
			t.Fatalf("bad_reply: got %v, want 1", got)
		}
	})
	t.Run("binary round trip", func(t *testing.T) {
		payload := make([]byte, 70000) // 64-bit length frame
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		c.WriteMessage(websocket.BinaryMessage, payload)
		typ, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		requireEqual(t, "type", typ, websocket.BinaryMessage)
		if !bytes.Equal(msg, payload) {
			t.Fatal("binary payload changed on the way")
		}
		posts := b.Calls("msg")
		last := posts[len(posts)-1]
		requireEqual(t, "Content-Type", last.Header["Content-Type"], "application/octet-stream")
	})
	t.Run("100 messages in order", func(t *testing.T) {
		go func() {
			for i := range 100 {
				c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i)))
			}
		}()
		for i := range 100 {
			_, msg, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			requireEqual(t, "reply", string(msg), strconv.Itoa(i))
		}
	})
}

// TestConcurrentConnections: 50 clients, each with its own ClientId and
// numbered messages, never see each other's replies.
func TestConcurrentConnections(t *testing.T) { testConcurrent(t) }

// TestConcurrentPipelined: the same through two backend connections
// carrying up to 8 pipelined requests each.
func TestConcurrentPipelined(t *testing.T) {
	// All 50 upgrade at once: no admission limit in the way.
	testConcurrent(t, "-backend-max-conns", "2", "-backend-pipeline", "8", "-max-pending-upgrades", "0")
}

func testConcurrent(t *testing.T, args ...string) {
	b := newBackend(t, backend.Options{Sequenced: true})
	p := startBridge(t, b.URL, args...)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("client-%d", i)
			c, _, err := websocket.DefaultDialer.Dial(p.url(id), nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for j := range 20 {
				want := fmt.Sprintf("%d from %s", j, id)
				if err := c.WriteMessage(websocket.TextMessage, []byte(want)); err != nil {
					errs <- err
					return
				}
				_, got, err := c.ReadMessage()
				if err != nil {
					errs <- err
					return
				}
				if string(got) != want {
					errs <- fmt.Errorf("%s: got %q, want %q", id, got, want)
					return
				}
			}
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, 10*time.Second, func() error {
		if d := b.Deletes.Load(); d != 50 {
			return fmt.Errorf("DELETEs: got %d, want 50", d)
		}
		return nil
	})
	if v := b.Violations.Load(); v != 0 {
		t.Fatalf("%d lifecycle or ordering violations at the backend", v)
	}
	// Every reply's time inside the bridge was measured.
	if n := p.metric(t, "wsbridge_message_added_latency_seconds_count"); n != 50*20 {
		t.Fatalf("added latency observed for %v replies, want %d", n, 50*20)
	}
}

func TestPush(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	c, _, err := websocket.DefaultDialer.Dial(p.url("pushme"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))

	status, body, _ := p.adminDo(t, "POST", "/pushme", "news")
	requireEqual(t, "push status", status, 200)
	requireEqual(t, "push body", strings.TrimSpace(body), "ok")
	typ, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "type", typ, websocket.TextMessage)
	requireEqual(t, "pushed", string(msg), "news")

	status, _, _ = p.adminDo(t, "POST", "/pushme", "\x00\x01", "Content-Type", "application/octet-stream")
	requireEqual(t, "binary push status", status, 200)
	typ, msg, _ = c.ReadMessage()
	requireEqual(t, "binary type", typ, websocket.BinaryMessage)
	requireEqual(t, "binary push", string(msg), "\x00\x01")

	status, _, _ = p.adminDo(t, "POST", "/nobody", "x")
	requireEqual(t, "push to unknown", status, 404)
	status, _, _ = p.adminDo(t, "POST", "/pushme", "\xff")
	requireEqual(t, "invalid UTF-8 text push", status, 400)
	status, _, _ = p.adminDo(t, "POST", "/pushme", strings.Repeat("x", 2<<20))
	requireEqual(t, "push over -max-message", status, 413)

	status, body, _ = p.adminDo(t, "GET", "/pushme", "")
	requireEqual(t, "info status", status, 200)
	for _, want := range []string{`"id":"pushme"`, `"messages_out":2`, `"remote_addr":"127.0.0.1:`, `"connection_id":"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("info %s lacks %s", body, want)
		}
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	waitCalls(t, b, "pushme", "DELETE", 1)
	status, _, _ = p.adminDo(t, "POST", "/pushme", "late")
	requireEqual(t, "push to closed", status, 404)
}

func TestKick(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	r := rawUpgrade(t, p.ws, "kickme")
	status, _, _ := p.adminDo(t, "DELETE", "/kickme?code=4400&reason=banned", "")
	requireEqual(t, "kick status", status, 200)
	requireEqual(t, "reason", r.expectClose(4400), "banned")
	del := waitCalls(t, b, "kickme", "DELETE", 1)[0]
	requireEqual(t, "DELETE close code", del.CloseCode, "4400")
	requireEqual(t, "DELETE body", string(del.Body), "banned")

	r = rawUpgrade(t, p.ws, "kick2")
	status, _, _ = p.adminDo(t, "DELETE", "/kick2", "")
	requireEqual(t, "default kick", status, 200)
	r.expectClose(4001)
	status, _, _ = p.adminDo(t, "DELETE", "/kick2?code=1001", "")
	requireEqual(t, "kick with a reserved code", status, 400)
	status, _, _ = p.adminDo(t, "DELETE", "/nobody", "")
	requireEqual(t, "kick unknown", status, 404)
}

func TestAdminToken(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-admin-token", "s3cret")
	status, _, hdr := p.adminDo(t, "POST", "/x", "hi")
	requireEqual(t, "no token", status, 401)
	requireEqual(t, "WWW-Authenticate", strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer"), true)
	status, _, _ = p.adminDo(t, "GET", "/metrics", "", "Authorization", "Bearer wrong")
	requireEqual(t, "wrong token", status, 401)
	status, _, _ = p.adminDo(t, "GET", "/metrics", "", "Authorization", "Bearer s3cret")
	requireEqual(t, "right token", status, 200)
	status, _, _ = p.adminDo(t, "GET", "/healthz", "")
	requireEqual(t, "healthz needs no token", status, 200)
	status, _, _ = p.adminDo(t, "GET", "/readyz", "")
	requireEqual(t, "readyz needs no token", status, 200)
}

// TestCloseAndReset: a clean close and a TCP reset each give one DELETE.
func TestCloseAndReset(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)

	r := rawUpgrade(t, p.ws, "closer")
	r.frame(ws.OpClose, true, ws.NewCloseFrameBody(1001, "going away"))
	r.expectClose(1001)
	r.expectEOF()
	del := waitCalls(t, b, "closer", "DELETE", 1)[0]
	requireEqual(t, "code", del.CloseCode, "1001")
	requireEqual(t, "reason", string(del.Body), "going away")

	r = rawUpgrade(t, p.ws, "nocode")
	r.frame(ws.OpClose, true, nil)
	r.expectClose(0)
	requireEqual(t, "code without payload", waitCalls(t, b, "nocode", "DELETE", 1)[0].CloseCode, "1005")

	r = rawUpgrade(t, p.ws, "resetter")
	r.frame(ws.OpText, true, []byte("last words"))
	waitCalls(t, b, "resetter", "POST", 1)
	r.conn.(*net.TCPConn).SetLinger(0)
	r.conn.Close()
	del = waitCalls(t, b, "resetter", "DELETE", 1)[0]
	requireEqual(t, "code", del.CloseCode, "1006")
	requireEqual(t, "reason", string(del.Body), "")
	// Exactly one, even a while later.
	waitFor(t, time.Second, func() error { return nil })
	requireEqual(t, "DELETEs", count(b, "resetter", "DELETE"), 1)
}

// TestReconnect: the same ClientId comes back; the backend sees the old
// DELETE before the new GET, and pushes reach the new connection.
func TestReconnect(t *testing.T) {
	deleting := make(chan struct{}, 1)
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method == "DELETE" {
			deleting <- struct{}{}
			time.Sleep(300 * time.Millisecond) // the new GET must wait for this
		}
		return false
	}})
	p := startBridge(t, b.URL)
	ctx := ctxT(t)
	old, _, err := coder.Dial(ctx, p.url("phone"), nil)
	if err != nil {
		t.Fatal(err)
	}
	old.CloseNow() // TCP goes away; its DELETE is slow
	select {
	case <-deleting:
	case <-time.After(10 * time.Second):
		t.Fatal("no DELETE for the closed connection")
	}
	c, _, err := coder.Dial(ctx, p.url("phone"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	calls := b.Calls("phone")
	var seq []string
	for _, call := range calls {
		seq = append(seq, call.Method)
	}
	requireEqual(t, "call order", strings.Join(seq, ","), "GET,DELETE,GET")
	if calls[2].Replaces != "" {
		t.Fatalf("the reconnect's GET names %q as replaced; the old one was already closing", calls[2].Replaces)
	}
	status, _, _ := p.adminDo(t, "POST", "/phone", "for the new one")
	requireEqual(t, "push status", status, 200)
	_, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "push", string(msg), "for the new one")
}

// TestReplaceOpen: a second connection with the same ClientId while the
// first is open: its GET names the old one, the old one gets 4000 and its
// DELETE before the new one's 101.
func TestReplaceOpen(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	old := rawUpgrade(t, p.ws, "tab")
	oldGet := waitCalls(t, b, "tab", "GET", 1)[0]
	nw := rawUpgrade(t, p.ws, "tab")
	requireEqual(t, "old close reason", old.expectClose(4000) != "", true)
	calls := b.Calls("tab")
	var seq []string
	for _, call := range calls {
		seq = append(seq, call.Method)
	}
	requireEqual(t, "call order", strings.Join(seq, ","), "GET,GET,DELETE")
	requireEqual(t, "Wsbridge-Replaces", calls[1].Replaces, oldGet.ConnID)
	requireEqual(t, "DELETE is the old one's", calls[2].ConnID, oldGet.ConnID)
	requireEqual(t, "DELETE code", calls[2].CloseCode, "4000")
	nw.frame(ws.OpText, true, []byte("still here"))
	_, msg, err := nw.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "new connection works", string(msg), "still here")
}

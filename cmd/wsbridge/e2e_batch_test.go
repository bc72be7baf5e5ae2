package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bridge/sign"
)

// Batched calls (-backend-batch-url) through the built binary.

// batchArgs points the bridge's batches at b's /batch.
func batchArgs(b *backend.Backend, extra ...string) []string {
	return append([]string{"-backend-batch-url", b.URL + "batch"}, extra...)
}

// isBatch reports whether a hooked call is a batch request.
func isBatch(ctx *fasthttp.RequestCtx) bool {
	return bytes.Equal(ctx.Request.Header.ContentType(), []byte("application/x-wsbridge-batch"))
}

// dialWS opens a gorilla client to id.
func dialWS(t testing.TB, p *proc, id string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(p.url(id), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", id, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readMsg(t testing.TB, c *websocket.Conn) (int, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	typ, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, string(b)
}

func writeMsg(t testing.TB, c *websocket.Conn, typ int, s string) {
	t.Helper()
	if err := c.WriteMessage(typ, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// TestBatchOrderUnderLoad: 200 clients × 200 messages each, sent all at
// once: every client gets its replies in order, the backend sees every
// message in order (Sequenced), and far fewer requests than messages.
func TestBatchOrderUnderLoad(t *testing.T) {
	testBatchOrder(t, 200, 200, "-max-pending-upgrades", "0")
}

// TestBatchOrderPipelined: the same, smaller, with the batches on two
// backend sockets carrying up to 4 pipelined requests each.
func TestBatchOrderPipelined(t *testing.T) {
	testBatchOrder(t, 50, 100, "-max-pending-upgrades", "0", "-backend-max-conns", "2", "-backend-pipeline", "4", "-backend-batch-max", "10")
}

func testBatchOrder(t *testing.T, clients, msgs int, args ...string) {
	b := newBackend(t, backend.Options{Sequenced: true})
	p := startFastBridge(t, b.URL, batchArgs(b, args...)...)
	conns := rawUpgradeMany(t, p.ws, "load", clients, 50)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, r := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out []byte
			for j := range msgs {
				out = appendClientText(out, fmt.Sprintf("%d from %d", j, i))
			}
			if _, err := r.conn.Write(out); err != nil {
				errs <- err
				return
			}
			for j := range msgs {
				_, p, err := r.readFrame()
				if err != nil {
					errs <- fmt.Errorf("client %d, reply %d: %v", i, j, err)
					return
				}
				if want := fmt.Sprintf("%d from %d", j, i); string(p) != want {
					errs <- fmt.Errorf("client %d: got %q, want %q", i, p, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := int64(clients * msgs)
	if got := b.BatchMessages.Load(); got != total {
		t.Fatalf("backend got %d batched messages, want %d", got, total)
	}
	posts := b.Posts.Load()
	t.Logf("%d messages in %d batch requests (%.4f requests per message)", total, posts, float64(posts)/float64(total))
	if posts > total/5 {
		t.Fatalf("%d POST requests for %d messages: want at most one per 5", posts, total)
	}
	if got := p.metric(t, "wsbridge_backend_batch_messages_total"); got != float64(total) {
		t.Fatalf("wsbridge_backend_batch_messages_total %v, want %d", got, total)
	}
	if got := p.metric(t, "wsbridge_backend_batches_total"); got != float64(posts) {
		t.Fatalf("wsbridge_backend_batches_total %v, backend saw %d", got, posts)
	}
}

func appendClientText(dst []byte, s string) []byte {
	return appendFrame(dst, 0x1, []byte(s))
}

// appendFrame appends a masked client frame.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n < 1<<16:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	dst = append(dst, testMask[:]...)
	for i, c := range payload {
		dst = append(dst, c^testMask[i%4])
	}
	return dst
}

// TestBatchFailure: a batch answered 500, or whose connection is reset,
// fails each of its messages as a failed POST does: nothing goes to the
// client, the connection stays, the next message is served.
func TestBatchFailure(t *testing.T) {
	var mode atomic.Value // "", "500", "reset", "garbage"
	mode.Store("")
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if !isBatch(ctx) {
			return false
		}
		switch mode.Load().(string) {
		case "500":
			ctx.Error("down", 500)
		case "reset":
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(nc net.Conn) {
				if tc, ok := nc.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
			})
		case "garbage":
			ctx.SetBodyString("<html>Fatal error</html>")
		default:
			return false
		}
		return true
	}})
	p := startBridge(t, b.URL, batchArgs(b)...)
	c := dialWS(t, p, "fail")
	writeMsg(t, c, websocket.TextMessage, "first")
	if _, got := readMsg(t, c); got != "first" {
		t.Fatalf("got %q", got)
	}
	for i, m := range []string{"500", "reset", "garbage"} {
		mode.Store(m)
		before := b.Batches.Load()
		writeMsg(t, c, websocket.TextMessage, "lost-"+m)
		waitFor(t, 10*time.Second, func() error {
			if b.Batches.Load() == before {
				return fmt.Errorf("batch not seen yet")
			}
			return nil
		})
		waitFor(t, 10*time.Second, func() error {
			if got := p.metric(t, "wsbridge_backend_batch_messages_failed_total"); got != float64(i+1) {
				return fmt.Errorf("failed messages %v, want %d", got, i+1)
			}
			return nil
		})
		mode.Store("")
		writeMsg(t, c, websocket.TextMessage, "after-"+m)
		// The failed message got nothing: the next frame is the next reply.
		if _, got := readMsg(t, c); got != "after-"+m {
			t.Fatalf("after a %s batch: got %q, want %q", m, got, "after-"+m)
		}
	}
	if got := p.metric(t, `wsbridge_backend_requests_total{method="POST",outcome="error"}`); got != 1 {
		t.Errorf("POST error outcomes %v, want 1 (the 500)", got)
	}
	if got := p.metric(t, `wsbridge_backend_requests_total{method="POST",outcome="bad_reply"}`); got != 1 {
		t.Errorf("POST bad_reply outcomes %v, want 1 (the garbage)", got)
	}
	if !strings.Contains(p.Logs(), "batch answer does not parse") {
		t.Error("no warning about the unparseable answer")
	}
}

// TestBatchFewerAndMoreReplies: an answer short of a reply fails the
// message it lacks (as a failed POST: nothing sent); extra replies are
// ignored.
func TestBatchFewerAndMoreReplies(t *testing.T) {
	var mode atomic.Value // "short", "long"
	mode.Store("")
	var sizes sync.Map // batch size by mode, for the check below
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if !isBatch(ctx) || mode.Load().(string) == "" {
			return false
		}
		msgs, err := backend.ParseBatch(ctx.PostBody())
		if err != nil {
			ctx.Error(err.Error(), 400)
			return true
		}
		m := mode.Load().(string)
		sizes.Store(m, len(msgs))
		n := len(msgs)
		if m == "short" {
			n-- // the last message gets no reply
		}
		var out []byte
		for i := range n {
			out = backend.AppendBatchReply(out, msgs[i].Binary, msgs[i].Body, "")
		}
		if m == "long" {
			out = backend.AppendBatchReply(out, false, []byte("extra"), "")
		}
		ctx.SetBody(out)
		return true
	}})
	// A long delay puts both clients' messages in one batch.
	p := startBridge(t, b.URL, batchArgs(b, "-backend-batch-delay", "300ms")...)
	a, z := dialWS(t, p, "a"), dialWS(t, p, "z")

	mode.Store("short")
	writeMsg(t, a, websocket.TextMessage, "a1")
	writeMsg(t, z, websocket.TextMessage, "z1")
	waitFor(t, 10*time.Second, func() error {
		if got := p.metric(t, "wsbridge_backend_batch_messages_failed_total"); got < 1 {
			return fmt.Errorf("failed messages %v", got)
		}
		return nil
	})
	if n, _ := sizes.Load("short"); n != 2 {
		t.Skipf("the two messages went in different batches (%v): the machine is too slow for a 300ms window", n)
	}
	mode.Store("")
	writeMsg(t, a, websocket.TextMessage, "a2")
	writeMsg(t, z, websocket.TextMessage, "z2")
	// Exactly one of the two got its first reply, the other only its second.
	_, ga := readMsg(t, a)
	_, gz := readMsg(t, z)
	if ga == "a1" {
		if _, g := readMsg(t, a); g != "a2" {
			t.Fatalf("a: got %q, want a2", g)
		}
	}
	if gz == "z1" {
		if _, g := readMsg(t, z); g != "z2" {
			t.Fatalf("z: got %q, want z2", g)
		}
	}
	if (ga == "a1") == (gz == "z1") {
		t.Fatalf("a got %q, z got %q: want exactly one of a1 and z1", ga, gz)
	}
	requireEqual(t, "failed messages", p.metric(t, "wsbridge_backend_batch_messages_failed_total"), 1)

	mode.Store("long")
	writeMsg(t, a, websocket.TextMessage, "a3")
	if _, g := readMsg(t, a); g != "a3" {
		t.Fatalf("with an extra reply: got %q, want a3", g)
	}
	requireEqual(t, "failed messages", p.metric(t, "wsbridge_backend_batch_messages_failed_total"), 1)
	waitFor(t, 5*time.Second, func() error {
		if !strings.Contains(p.Logs(), "more replies than messages") {
			return fmt.Errorf("no warning about the extra reply")
		}
		return nil
	})
}

// TestBatchSlowEndpoint: while the batch endpoint hangs, a client's 100
// messages do not pile up at the backend (one batch in flight holds its
// one message, the rest wait in the bridge's bounded queue), other
// clients' upgrades are still served, and once it answers every message
// is answered in order.
func TestBatchSlowEndpoint(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	b := newBackend(t, backend.Options{Sequenced: true, Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if isBatch(ctx) {
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		return false
	}})
	t.Cleanup(free) // before the backend's Close, which waits for its handlers
	p := startBridge(t, b.URL, batchArgs(b)...)
	r := rawUpgrade(t, p.ws, "busy")
	var out []byte
	for j := range 100 {
		out = appendClientText(out, fmt.Sprintf("%d", j))
	}
	r.send(string(out))
	waitFor(t, 10*time.Second, func() error {
		if n := b.Batches.Load(); n != 1 {
			return fmt.Errorf("batches at the backend: %d, want 1", n)
		}
		return nil
	})
	// Others still get in while the batch hangs.
	for i := range 5 {
		o := dialWS(t, p, fmt.Sprintf("other-%d", i))
		o.Close()
	}
	if n := b.Batches.Load(); n != 1 {
		t.Fatalf("batches at the backend while the first hangs: %d, want 1", n)
	}
	if got := p.metric(t, "wsbridge_backend_batch_messages_total"); got != 1 {
		t.Fatalf("batched messages sent while the first hangs: %v, want 1", got)
	}
	free()
	for j := range 100 {
		_, pl, err := r.readFrame()
		if err != nil {
			t.Fatalf("reply %d: %v", j, err)
		}
		if string(pl) != fmt.Sprint(j) {
			t.Fatalf("reply %d: got %q", j, pl)
		}
	}
}

// TestBatchBinarySafe: payloads with NUL, newlines, a fake record header
// and invalid UTF-8 (binary), text with newlines, an empty message and a
// 300 KiB one come back byte for byte with their kind.
func TestBatchBinarySafe(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, batchArgs(b)...)
	c := dialWS(t, p, "bin")
	big := bytes.Repeat([]byte("\x00\n\xff text 9 x y 1 -\n"), 300<<10/20)
	cases := []struct {
		typ  int
		data string
	}{
		{websocket.BinaryMessage, "a\x00b\nc\r\n\xff\xfe"},
		{websocket.BinaryMessage, "text 5 - \nhello\n"},
		{websocket.TextMessage, "line 1\nline 2\n\nbinary 3\n"},
		{websocket.TextMessage, "héllo ✓"},
		{websocket.BinaryMessage, string(big)},
		{websocket.BinaryMessage, "\n"},
	}
	for _, tc := range cases {
		writeMsg(t, c, tc.typ, tc.data)
		typ, got := readMsg(t, c)
		if typ != tc.typ || got != tc.data {
			t.Fatalf("sent %d %q…, got %d %q…", tc.typ, trunc40(tc.data), typ, trunc40(got))
		}
	}
	// An empty message gets an empty reply, which sends nothing.
	writeMsg(t, c, websocket.TextMessage, "")
	writeMsg(t, c, websocket.TextMessage, "after empty")
	if _, got := readMsg(t, c); got != "after empty" {
		t.Fatalf("got %q", got)
	}
}

func trunc40(s string) string { return s[:min(len(s), 40)] }

// TestBatchMeta: a GET's Set-Meta reaches the batched messages in their
// meta field, and a reply's set-meta field sets metadata for the next
// message and the DELETE.
func TestBatchMeta(t *testing.T) {
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		switch {
		case c.Method == "GET":
			ctx.Response.Header.Set("Wsbridge-Set-Meta-User", "42")
			ctx.SetBodyString("ok")
			return true
		case isBatch(ctx):
			msgs, _ := backend.ParseBatch(ctx.PostBody())
			var out []byte
			for _, m := range msgs {
				meta := ""
				if string(m.Body) == "join" {
					meta = "Room=a+b%26c&User="
				}
				out = backend.AppendBatchReply(out, false, []byte(m.Meta), meta)
			}
			ctx.SetBody(out)
			return true
		}
		return false
	}})
	p := startBridge(t, b.URL, batchArgs(b)...)
	c := dialWS(t, p, "meta")
	writeMsg(t, c, websocket.TextMessage, "hello")
	if _, got := readMsg(t, c); got != "User=42" {
		t.Fatalf("first message's meta field: %q, want User=42", got)
	}
	writeMsg(t, c, websocket.TextMessage, "join")
	readMsg(t, c)
	writeMsg(t, c, websocket.TextMessage, "again")
	if _, got := readMsg(t, c); got != "Room=a%20b%26c" {
		t.Fatalf("after the reply's set-meta: %q, want Room=a%%20b%%26c", got)
	}
	c.Close()
	dels := waitCalls(t, b, "meta", "DELETE", 1)
	if got := dels[0].Header["Wsbridge-Meta-Room"]; got != "a b&c" {
		t.Fatalf("DELETE's Wsbridge-Meta-Room %q", got)
	}
}

// TestBatchSigned: with -sign-key a batch request is signed as a whole
// (its Content-Digest covers every message, with each message's
// connection id and seq in its record) and verifies with sign.Verifier;
// each connection's seqs increase from 2 (the GET is 1).
func TestBatchSigned(t *testing.T) {
	const key = "k1=batch-secret-0123456789"
	v, err := sign.ParseVerifier(key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bad []string
	seqs := map[string][]string{}
	batchSeqs := map[uint64]bool{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		vd, err := v.Verify(r, body)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			bad = append(bad, r.Method+" "+r.URL.Path+": "+err.Error())
		}
		switch {
		case r.Method == "GET":
			io.WriteString(w, "ok")
		case r.URL.Path == "/api/batch":
			if vd.ConnectionID != "batch" || batchSeqs[vd.Seq] {
				bad = append(bad, fmt.Sprintf("batch: connection id %q, seq %d (seen before: %v)", vd.ConnectionID, vd.Seq, batchSeqs[vd.Seq]))
			}
			batchSeqs[vd.Seq] = true
			msgs, err := backend.ParseBatch(body)
			if err != nil {
				bad = append(bad, err.Error())
			}
			var out []byte
			for _, m := range msgs {
				seqs[m.ClientID] = append(seqs[m.ClientID], m.Seq)
				out = backend.AppendBatchReply(out, m.Binary, m.Body, "")
			}
			w.Header().Set("Content-Type", "application/x-wsbridge-batch")
			w.Write(out)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + ln.Addr().String() + "/api/"
	p := startBridge(t, url, "-sign-key", key, "-backend-batch-url", url+"batch")
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialWS(t, p, fmt.Sprintf("s%d", i))
			for j := range 5 {
				writeMsg(t, c, websocket.TextMessage, fmt.Sprint(j))
				if _, got := readMsg(t, c); got != fmt.Sprint(j) {
					t.Errorf("s%d: got %q", i, got)
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d calls failed verification, first: %s", len(bad), bad[0])
	}
	for i := range 3 {
		if got := strings.Join(seqs[fmt.Sprintf("s%d", i)], ","); got != "2,3,4,5,6" {
			t.Errorf("s%d: seqs %s, want 2,3,4,5,6", i, got)
		}
	}
}

// TestBatchDeleteAfterLastMessage: a client that sends and closes at once
// gets its DELETE only after its message's batch was answered, even when
// the message waits in its batch for a long delay.
func TestBatchDeleteAfterLastMessage(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, batchArgs(b, "-backend-batch-delay", "200ms")...)
	r := rawUpgrade(t, p.ws, "bye")
	r.send(string(appendFrame(appendClientText(nil, "last words"), 0x8, []byte{0x03, 0xe8})))
	dels := waitCalls(t, b, "bye", "DELETE", 1)
	posts := waitCalls(t, b, "bye", "POST", 1)
	if string(posts[0].Body) != "last words" {
		t.Fatalf("POST body %q", posts[0].Body)
	}
	if !posts[0].At.Before(dels[0].At) {
		t.Fatalf("the batched message reached the backend at %v, its DELETE at %v", posts[0].At, dels[0].At)
	}
	requireEqual(t, "close code", dels[0].CloseCode, "1000")
}

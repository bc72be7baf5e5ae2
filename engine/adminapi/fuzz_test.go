package adminapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/engine/adminapi"
	"github.com/wsbridge/wsbridge/protocol"
)

const (
	fuzzToken      = "s3cret"
	fuzzMaxMessage = 1024
	fuzzWait       = 10 * time.Second // a deadline for what must happen, never a pause
)

// peer is one WebSocket client of the bridge under test, and what the
// engine should report about it.
type peer struct {
	id     string
	conn   net.Conn
	r      *bufio.Reader
	connID string
	out    uint64 // messages_out: pushes answered 200 and channel messages, read
	chans  map[string]bool
}

// adminBridge is an in-process engine in front of a mock backend, with
// two clients and two admin APIs on it: one open, one behind fuzzToken.
type adminBridge struct {
	srv           *engine.Server
	open, secured fasthttp.RequestHandler
	peers         []*peer
}

func startAdminBridge(tb testing.TB) *adminBridge {
	tb.Helper()
	b, err := backend.Start(backend.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	m := engine.NewMetrics()
	bc, err := bridge.New(bridge.Config{Backend: b.URL, MaxConns: 16, Timeout: fuzzWait, Observe: m.ObserveBackend})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := engine.New(engine.Config{Listen: "127.0.0.1:0", Loops: 2, MaxMessage: fuzzMaxMessage}, bc, m, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	ab := &adminBridge{
		srv:     srv,
		open:    adminapi.New(srv, adminapi.Config{}).Handler,
		secured: adminapi.New(srv, adminapi.Config{Token: fuzzToken}).Handler,
	}
	tb.Cleanup(func() {
		for _, p := range ab.peers {
			p.conn.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), fuzzWait)
		defer cancel()
		_ = srv.Shutdown(ctx)
		bc.Close()
	})
	for _, id := range []string{"a", "b"} {
		p := &peer{id: id}
		ab.connect(tb, p)
		ab.peers = append(ab.peers, p)
	}
	return ab
}

// connect opens p's WebSocket and waits until the engine reports it open.
func (ab *adminBridge) connect(tb testing.TB, p *peer) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzWait)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, "ws://"+ab.srv.Addr()+"/"+p.id)
	if err != nil {
		tb.Fatalf("dial %s: %v", p.id, err)
	}
	if br == nil { // nothing read past the handshake
		br = bufio.NewReader(conn)
	}
	p.conn, p.r, p.out, p.chans = conn, br, 0, map[string]bool{}
	deadline := time.Now().Add(fuzzWait)
	for {
		if info, ok := ab.srv.Lookup([]byte(p.id)); ok {
			p.connID = info.ConnectionID
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not open %v after its 101", p.id, fuzzWait)
		}
		time.Sleep(time.Millisecond) // polling, with the deadline above
	}
}

func (ab *adminBridge) peer(id []byte) *peer {
	for _, p := range ab.peers {
		if p.id == string(id) {
			return p
		}
	}
	return nil
}

// readFrame reads the next frame the bridge sent p.
func (p *peer) readFrame(t *testing.T) ws.Frame {
	t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(fuzzWait))
	f, err := ws.ReadFrame(p.r)
	if err != nil {
		t.Fatalf("%s: reading a frame: %v", p.id, err)
	}
	return f
}

// FuzzAdmin sends arbitrary admin calls (method, path, query,
// Authorization, Content-Type, body; with and without a token) to the
// admin API of an engine with two open clients, "a" and "b". Invariants:
// no panic; the status is the one docs/protocol.md ("The admin API")
// gives for the path, method and input; a push answered 200 reached its
// client, whole and as a binary message exactly when
// protocol.IsBinaryContentType says so; a kick answered 200 closed its
// client with the code and reason asked; and no other call changes any
// client: each is still open on the same connection with no message more.
func FuzzAdmin(f *testing.F) {
	for _, s := range []struct {
		secured                          bool
		method, path, query, auth, ctype string
		body                             string
	}{
		{false, "POST", "/a", "", "", "", "hello"},
		{false, "POST", "/b", "", "", "Application/Octet-Stream; charset=x", "\x00\xff"},
		{false, "POST", "/b", "", "", "application/octet-streamy", "\xff"},
		{false, "POST", "/a", "", "", "text/plain", "\xff"},
		{false, "POST", "/nobody", "", "", "", "x"},
		{false, "POST", "/a", "", "", "", string(make([]byte, fuzzMaxMessage+1))},
		{false, "DELETE", "/a", "code=4400&reason=banned", "", "", ""},
		{false, "DELETE", "/b", "", "", "", ""},
		{false, "DELETE", "/a", "code=999", "", "", ""},
		{false, "DELETE", "/a", "reason=%ff", "", "", ""},
		{false, "GET", "/a", "", "", "", ""},
		{false, "GET", "/nobody", "", "", "", ""},
		{false, "PUT", "/a", "", "", "", "x"},
		{false, "GET", "/a%20b", "", "", "", ""},
		{false, "GET", "/../metrics", "", "", "", ""},
		{false, "GET", "/debug/pprof/", "", "", "", ""},
		{false, "GET", "/healthz", "", "", "", ""},
		{true, "GET", "/readyz", "", "", "", ""},
		{true, "GET", "/metrics", "", "", "", ""},
		{true, "POST", "/a", "", "Bearer " + fuzzToken, "", "secret push"},
		{true, "POST", "/a", "", "Bearer wrong", "", "x"},
		{true, "DELETE", "/b", "", "bearer " + fuzzToken, "", ""},
		{false, "PUT", "/channel/room/a", "", "", "", ""},
		{false, "PUT", "/channel/room:2/b", "", "", "", ""},
		{false, "PUT", "/channel/room/nobody", "", "", "", ""},
		{false, "PUT", "/channel/bad%20name/a", "", "", "", ""},
		{false, "DELETE", "/channel/room/a", "", "", "", ""},
		{false, "POST", "/channel/room", "", "", "", "to the room"},
		{false, "POST", "/channel/room", "exclude=a", "", "application/octet-stream", "\x00"},
		{false, "POST", "/channel/room", "exclude=a%2Fb", "", "", "x"},
		{false, "GET", "/channel/room", "limit=1", "", "", ""},
		{false, "GET", "/channel/room", "limit=-1", "", "", ""},
		{false, "PATCH", "/channel/room", "", "", "", ""},
		{false, "GET", "/channel/room/a/x", "", "", "", ""},
		{true, "POST", "/channel/room", "", "Bearer wrong", "", "x"},
	} {
		f.Add(s.secured, s.method, s.path, s.query, s.auth, s.ctype, []byte(s.body))
	}
	ab := startAdminBridge(f)
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	f.Fuzz(func(t *testing.T, secured bool, method, path, query, auth, ctype string, body []byte) {
		var req fasthttp.Request
		req.Header.SetMethod(method)
		uri := path
		if query != "" {
			uri += "?" + query
		}
		req.SetRequestURI(uri)
		if auth != "" {
			req.Header.Set(fasthttp.HeaderAuthorization, auth)
		}
		if ctype != "" {
			req.Header.SetContentType(ctype)
		}
		req.SetBody(body)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, remote, nil)
		h := ab.open
		if secured {
			h = ab.secured
		}
		h(&ctx)

		// What the handler saw, read back through fasthttp.
		got := ctx.Response.StatusCode()
		p := string(ctx.Path())
		authorized := !secured || string(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)) == "Bearer "+fuzzToken
		var target *peer // the client a 200 push or kick acted on
		want := func(statuses ...int) {
			t.Helper()
			for _, s := range statuses {
				if got == s {
					return
				}
			}
			t.Fatalf("%s %q (secured %v): got %d, want one of %v; body %q",
				ctx.Method(), ctx.RequestURI(), secured, got, statuses, ctx.Response.Body())
		}
		switch {
		case p == "/healthz":
			want(200)
		case p == "/readyz":
			want(200) // not draining, no -max-conns
		case !authorized:
			want(401)
			if v := ctx.Response.Header.Peek(fasthttp.HeaderWWWAuthenticate); len(v) < 6 || string(v[:6]) != "Bearer" {
				t.Fatalf("401 without WWW-Authenticate: Bearer: got %q", v)
			}
		case p == "/metrics":
			want(200)
		case len(p) >= 12 && p[:12] == "/debug/pprof":
			want(404) // no -pprof
		case strings.HasPrefix(p, "/channel/"):
			checkChannel(t, ab, &ctx, p[len("/channel/"):], want)
		case !protocol.ValidClientID([]byte(p[1:])):
			want(400)
		default:
			id := []byte(p[1:])
			c := ab.peer(id)
			switch string(ctx.Method()) {
			case "POST":
				body := ctx.PostBody()
				binary := protocol.IsBinaryContentType(ctx.Request.Header.ContentType())
				switch {
				case len(body) > fuzzMaxMessage:
					want(413)
				case !binary && !utf8.Valid(body):
					want(400)
				case c == nil:
					want(404)
				default:
					want(200) // not 503: each client reads every push
					fr := c.readFrame(t)
					op := ws.OpText
					if binary {
						op = ws.OpBinary
					}
					if !fr.Header.Fin || fr.Header.OpCode != op || string(fr.Payload) != string(body) {
						t.Fatalf("push to %s: got fin %v op %v %q, want op %v %q",
							c.id, fr.Header.Fin, fr.Header.OpCode, fr.Payload, op, body)
					}
					c.out++
				}
			case "DELETE":
				if c == nil {
					want(400, 404)
					break
				}
				want(200, 400)
				if got != 200 {
					break
				}
				target = c
				args := ctx.QueryArgs()
				wantCode, wantReason := protocol.CloseKicked, string(args.Peek("reason"))
				if v := args.Peek("code"); len(v) > 0 {
					n, err := strconv.Atoi(string(v))
					if err != nil {
						t.Fatalf("kick with code %q answered 200", v)
					}
					wantCode = ws.StatusCode(n)
				}
				fr := c.readFrame(t)
				if fr.Header.OpCode != ws.OpClose {
					t.Fatalf("kick %s: got op %v %q, want a close", c.id, fr.Header.OpCode, fr.Payload)
				}
				code, reason := ws.ParseCloseFrameData(fr.Payload)
				if code != wantCode || reason != wantReason || !(code == 1000 || code >= 3000 && code <= 4999) {
					t.Fatalf("kick %s: closed with %d %q, want %d %q", c.id, code, reason, wantCode, wantReason)
				}
			case "GET":
				if c == nil {
					want(404)
					break
				}
				want(200)
				var info engine.Info
				if err := json.Unmarshal(ctx.Response.Body(), &info); err != nil {
					t.Fatalf("info of %s: %v in %q", c.id, err, ctx.Response.Body())
				}
				if info.ID != c.id || info.ConnectionID != c.connID || info.MessagesOut != c.out {
					t.Fatalf("info of %s (connection %s, %d out): got %+v", c.id, c.connID, c.out, info)
				}
			default:
				want(405)
				if len(ctx.Response.Header.Peek(fasthttp.HeaderAllow)) == 0 {
					t.Fatal("405 without Allow")
				}
			}
		}

		// No client but a kicked one was disturbed; the kicked one comes
		// back for the next input.
		for _, c := range ab.peers {
			if c == target {
				c.conn.Close()
				ab.connect(t, c)
				continue
			}
			info, ok := ab.srv.Lookup([]byte(c.id))
			if !ok || info.ConnectionID != c.connID || info.MessagesOut != c.out {
				t.Fatalf("after %s %q: %s disturbed: open %v, connection %s (want %s), %d messages out (want %d)",
					ctx.Method(), ctx.RequestURI(), c.id, ok, info.ConnectionID, c.connID, info.MessagesOut, c.out)
			}
		}
	})
}

// checkChannel checks a /channel/ call's answer against the model: each
// peer's channels. A publish answered 202 reached every subscriber but the
// excluded one, whole and of the right kind; a presence answer counts and
// lists the model's subscribers.
func checkChannel(t *testing.T, ab *adminBridge, ctx *fasthttp.RequestCtx, rest string, want func(...int)) {
	t.Helper()
	ch, id, member := strings.Cut(rest, "/")
	if !protocol.ValidChannel([]byte(ch)) {
		want(400)
		return
	}
	method := string(ctx.Method())
	if member {
		c := ab.peer([]byte(id))
		switch {
		case !protocol.ValidClientID([]byte(id)):
			want(400)
		case method != "PUT" && method != "DELETE":
			want(405)
		case c == nil:
			want(404)
		case method == "DELETE":
			want(200)
			delete(c.chans, ch)
		case len(c.chans) >= 64 && !c.chans[ch]:
			want(409)
		default:
			want(200)
			c.chans[ch] = true
		}
		return
	}
	args := ctx.QueryArgs()
	var subs []*peer
	for _, c := range ab.peers {
		if c.chans[ch] {
			subs = append(subs, c)
		}
	}
	switch method {
	case "POST":
		body := ctx.PostBody()
		binary := protocol.IsBinaryContentType(ctx.Request.Header.ContentType())
		exclude := args.Peek("exclude")
		switch {
		case len(body) > fuzzMaxMessage:
			want(413)
			return
		case !binary && !utf8.Valid(body):
			want(400)
			return
		case len(exclude) > 0 && !protocol.ValidClientID(exclude):
			want(400)
			return
		}
		want(202)
		var v struct{ Subscribers int }
		if err := json.Unmarshal(ctx.Response.Body(), &v); err != nil || v.Subscribers != len(subs) {
			t.Fatalf("publish to %s: got %q (%v), want %d subscribers", ch, ctx.Response.Body(), err, len(subs))
		}
		op := ws.OpText
		if binary {
			op = ws.OpBinary
		}
		for _, c := range subs {
			if c.id == string(exclude) {
				continue
			}
			fr := c.readFrame(t)
			if !fr.Header.Fin || fr.Header.OpCode != op || string(fr.Payload) != string(body) {
				t.Fatalf("publish to %s, at %s: got fin %v op %v %q, want op %v %q",
					ch, c.id, fr.Header.Fin, fr.Header.OpCode, fr.Payload, op, body)
			}
			c.out++
		}
	case "GET":
		limit := 1000
		if v := args.Peek("limit"); len(v) > 0 {
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 {
				want(400)
				return
			}
			limit = n
		}
		want(200)
		var v struct {
			Subscribers int      `json:"subscribers"`
			IDs         []string `json:"ids"`
		}
		if err := json.Unmarshal(ctx.Response.Body(), &v); err != nil || v.IDs == nil ||
			v.Subscribers != len(subs) || len(v.IDs) != min(limit, len(subs)) {
			t.Fatalf("presence of %s: got %q (%v), want %d subscribers, %d ids", ch, ctx.Response.Body(), err, len(subs), min(limit, len(subs)))
		}
	default:
		want(405)
	}
}

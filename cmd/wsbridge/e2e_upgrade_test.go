package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestUpgradeAccepted checks what the backend's GET carries.
func TestUpgradeAccepted(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	hdr := http.Header{}
	hdr.Set("Cookie", "session=abc")
	hdr.Set("Authorization", "Bearer tok")
	hdr.Set("User-Agent", "e2e-agent")
	hdr.Set("X-Secret", "not-forwarded")
	c, resp, err := websocket.DefaultDialer.Dial(p.url("alice")+"?room=7&x=y", hdr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	requireEqual(t, "status", resp.StatusCode, 101)
	get := waitCalls(t, b, "alice", "GET", 1)[0]
	requireEqual(t, "query", get.Query, "room=7&x=y")
	requireEqual(t, "Cookie", get.Header["Cookie"], "session=abc")
	requireEqual(t, "Authorization", get.Header["Authorization"], "Bearer tok")
	requireEqual(t, "User-Agent", get.Header["User-Agent"], "e2e-agent")
	requireEqual(t, "X-Secret forwarded", get.Header["X-Secret"], "")
	requireEqual(t, "X-Forwarded-For", get.Header["X-Forwarded-For"], "127.0.0.1")
	if get.ConnID == "" || !strings.Contains(get.ConnID, "-") {
		t.Fatalf("Wsbridge-Connection-Id: got %q, want prefix-sequence", get.ConnID)
	}
}

// TestUpgradeRefused covers every way the backend or the bridge says no.
func TestUpgradeRefused(t *testing.T) {
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		if c.Method != "GET" {
			return false
		}
		switch c.ClientID {
		case "need-auth":
			ctx.Error("login first", 401) // Error resets headers: set them after
			ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="api"`)
		case "forbidden":
			ctx.Error("go away", 403)
		case "not-ok":
			ctx.SetBodyString("banned until tomorrow")
		case "big-refusal":
			ctx.SetStatusCode(429)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"e":"` + strings.Repeat("x", 5000) + `"}`)
		case "server-error":
			ctx.Error("boom", 500)
		case "slow":
			time.Sleep(2 * time.Second)
			ctx.SetBodyString("ok")
		default:
			return false
		}
		return true
	}})
	p := startBridge(t, b.URL, "-backend-timeout", "500ms")
	cases := []struct {
		id, wantBody, wantCT string
		wantStatus           int
	}{
		{"need-auth", "login first", "", 401},
		{"forbidden", "go away", "", 403},
		{"not-ok", "banned until tomorrow", "", 403},
		{"server-error", "", "", 502},
		{"slow", "", "", 504},
		{"big-refusal", "", "application/json", 429},
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			r := rawDial(t, p.ws)
			r.send(upgradeRequest(tc.id))
			resp, body := r.response()
			requireEqual(t, "status", resp.StatusCode, tc.wantStatus)
			if tc.wantBody != "" && strings.TrimSpace(body) != tc.wantBody {
				t.Fatalf("body: got %q, want %q", body, tc.wantBody)
			}
			if tc.wantCT != "" {
				requireEqual(t, "Content-Type", resp.Header.Get("Content-Type"), tc.wantCT)
			}
			if tc.id == "need-auth" {
				requireEqual(t, "WWW-Authenticate", resp.Header.Get("WWW-Authenticate"), `Bearer realm="api"`)
			}
			if tc.id == "big-refusal" && len(body) != 1024 {
				t.Fatalf("relayed body length: got %d, want 1024", len(body))
			}
			r.expectEOF()
		})
	}
	requireEqual(t, "DELETEs for refused connections", count(b, "", "DELETE"), 0)
	if got := p.metric(t, `wsbridge_upgrades_refused_total{reason="backend_refused"}`); got != 4 {
		t.Fatalf("refused{backend_refused}: got %v, want 4", got)
	}
}

// TestBackendDown: an unreachable backend gives 502, and once the circuit
// opens, 503 with Retry-After without asking the backend at all.
func TestBackendDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/"
	ln.Close() // nothing listens there now
	p := startBridge(t, dead)
	r := rawDial(t, p.ws)
	r.send(upgradeRequest("first"))
	resp, _ := r.response()
	requireEqual(t, "status of first upgrade", resp.StatusCode, 502)
	// Keep knocking: after enough failures the breaker answers 503 itself.
	waitFor(t, 20*time.Second, func() error {
		r := rawDial(t, p.ws)
		r.send(upgradeRequest("knock"))
		resp, _ := r.response()
		if resp.StatusCode != 503 {
			return errStatus(resp.StatusCode)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
		return nil
	})
	if got := p.metric(t, `wsbridge_upgrades_refused_total{reason="circuit_open"}`); got < 1 {
		t.Fatalf("refused{circuit_open}: got %v, want >= 1", got)
	}
}

type errStatus int

func (e errStatus) Error() string { return "status " + http.StatusText(int(e)) }

// TestOriginAllowList refuses foreign origins before the backend.
func TestOriginAllowList(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-allow-origin", "https://app.example.com, http://localhost:3000")
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"Origin: https://app.example.com", 101},
		{"Origin: HTTPS://APP.EXAMPLE.COM", 101},
		{"Origin: http://localhost:3000", 101},
		{"Origin: https://evil.example.com", 403},
		{"Origin: null", 403},
		{"", 101}, // not a browser
	} {
		r := rawDial(t, p.ws)
		id := "o" + strings.NewReplacer(":", "", "/", "", ".", "", " ", "").Replace(tc.origin)
		if tc.origin == "" {
			r.send(upgradeRequest(id))
		} else {
			r.send(upgradeRequest(id, tc.origin))
		}
		resp, _ := r.response()
		requireEqual(t, tc.origin+" status", resp.StatusCode, tc.want)
		if tc.want == 403 && count(b, id, "GET") != 0 {
			t.Fatalf("%s reached the backend", tc.origin)
		}
	}
}

// TestCoderClient uses a second, independent client library.
func TestCoderClient(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	ctx := ctxT(t)
	c, _, err := coder.Dial(ctx, p.url("coder"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, coder.MessageText, []byte("héllo")); err != nil {
		t.Fatal(err)
	}
	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "type", typ, coder.MessageText)
	requireEqual(t, "reply", string(msg), "héllo")
	if err := c.Close(coder.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	del := waitCalls(t, b, "coder", "DELETE", 1)[0]
	requireEqual(t, "close code", del.CloseCode, "1000")
	requireEqual(t, "close reason", string(del.Body), "done")
}

// TestForwardedFor: X-Forwarded-For from an untrusted peer is replaced by
// the peer's address; from a trusted proxy it is kept and the proxy's
// address appended, and the admin API reports the client's address.
func TestForwardedFor(t *testing.T) {
	b := newBackend(t, backend.Options{})
	for _, tc := range []struct {
		name, trusted, wantXFF, wantRemote string
	}{
		{"untrusted", "", "127.0.0.1", "127.0.0.1:"},
		{"trusted", "127.0.0.0/8", "203.0.113.7, 127.0.0.1", "203.0.113.7:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{}
			if tc.trusted != "" {
				args = append(args, "-trusted-proxies", tc.trusted)
			}
			p := startBridge(t, b.URL, args...)
			id := "xff-" + tc.name
			r := rawUpgrade(t, p.ws, id, "X-Forwarded-For: 203.0.113.7")
			defer r.conn.Close()
			get := waitCalls(t, b, id, "GET", 1)[0]
			requireEqual(t, "X-Forwarded-For", get.Header["X-Forwarded-For"], tc.wantXFF)
			_, body, _ := p.adminDo(t, "GET", "/"+id, "")
			if !strings.Contains(body, `"remote_addr":"`+tc.wantRemote) {
				t.Fatalf("info %s: want remote_addr starting %q", body, tc.wantRemote)
			}
		})
	}
}

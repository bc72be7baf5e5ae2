package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/protocol"
)

// metaOf returns the Wsbridge-Meta-* headers of a recorded call, by name
// without the prefix.
func metaOf(c backend.Call) map[string]string {
	m := map[string]string{}
	for k, v := range c.Header {
		if n, ok := strings.CutPrefix(k, "Wsbridge-Meta-"); ok {
			m[n] = v
		}
	}
	return m
}

func requireMeta(t *testing.T, what string, c backend.Call, want map[string]string) {
	t.Helper()
	got := metaOf(c)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: Wsbridge-Meta-* got %v, want %v", what, got, want)
	}
}

// roundTrip sends a text message and reads its echo.
func roundTrip(t *testing.T, r *raw, msg string) {
	t.Helper()
	r.frame(ws.OpText, true, []byte(msg))
	_, p, err := r.readFrame()
	if err != nil {
		t.Fatalf("reply to %q: %v", msg, err)
	}
	requireEqual(t, "echo", string(p), msg)
}

// TestConnectionMeta (issue 18, DESIGN §8.5): a Wsbridge-Set-Meta-<name>
// on the GET's reply is on the first POST; a POST's reply updates the next
// call (an empty value deletes); bounds (16 names, 1 KiB) ignore the
// excess, count it and keep the connection; the DELETE carries it; the
// admin info shows it; a newcomer that replaces a connection does not
// inherit it; a connection without it gets no Wsbridge-Meta-* header.
func TestConnectionMeta(t *testing.T) {
	b := newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		h := &ctx.Response.Header
		switch {
		case c.Method == "GET" && c.ClientID == "meta1":
			h.Set("Wsbridge-Set-Meta-User", "alice")
			h.Set("wsbridge-set-meta-ROOM", "lobby") // case-insensitive; stored canonical
		case c.Method == "GET" && c.ClientID == "meta2" && c.Query == "set=1":
			h.Set("Wsbridge-Set-Meta-User", "carol")
		case c.Method == "POST" && string(c.Body) == "rename":
			h.Set("Wsbridge-Set-Meta-User", "bob")
			h.Set("Wsbridge-Set-Meta-Room", "") // deletes
		case c.Method == "POST" && string(c.Body) == "flood":
			for i := 1; i <= 16; i++ { // with User, 17 names: the 17th is ignored
				h.Set(fmt.Sprintf("Wsbridge-Set-Meta-M%d", i), "v")
			}
		case c.Method == "POST" && string(c.Body) == "big":
			h.Set("Wsbridge-Set-Meta-User", strings.Repeat("x", 1100)) // past 1 KiB: ignored, old value stays
		}
		return false
	}})
	p := startBridge(t, b.URL)

	r := rawUpgrade(t, p.ws, "meta1")
	roundTrip(t, r, "one")
	requireMeta(t, "first POST after the GET's Set-Meta", waitCalls(t, b, "meta1", "POST", 1)[0],
		map[string]string{"User": "alice", "Room": "lobby"})
	roundTrip(t, r, "rename")
	roundTrip(t, r, "two")
	posts := waitCalls(t, b, "meta1", "POST", 3)
	requireMeta(t, "the POST whose reply updates", posts[1], map[string]string{"User": "alice", "Room": "lobby"})
	requireMeta(t, "the POST after the update", posts[2], map[string]string{"User": "bob"})

	status, body, _ := p.adminDo(t, "GET", "/meta1", "")
	requireEqual(t, "info status", status, 200)
	var info struct {
		Meta map[string]string `json:"meta"`
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("info %q: %v", body, err)
	}
	requireEqual(t, "info meta", fmt.Sprint(info.Meta), fmt.Sprint(map[string]string{"User": "bob"}))

	rejected0 := p.metric(t, "wsbridge_meta_rejected_total")
	roundTrip(t, r, "flood")
	roundTrip(t, r, "big")
	roundTrip(t, r, "three")
	want := map[string]string{"User": "bob"}
	for i := 1; i <= 15; i++ {
		want[fmt.Sprintf("M%d", i)] = "v"
	}
	requireMeta(t, "after 17 names and a value past 1 KiB", waitCalls(t, b, "meta1", "POST", 6)[5], want)
	requireEqual(t, "wsbridge_meta_rejected_total", p.metric(t, "wsbridge_meta_rejected_total")-rejected0, 2)

	r.frame(ws.OpClose, true, ws.NewCloseFrameBody(1000, ""))
	r.expectClose(1000)
	requireMeta(t, "DELETE", waitCalls(t, b, "meta1", "DELETE", 1)[0], want)

	// A newcomer with the same ClientId replaces the connection and starts
	// without its metadata.
	old := rawDial(t, p.ws)
	old.send(strings.Replace(upgradeRequest("meta2"), "/meta2", "/meta2?set=1", 1))
	if resp, body := old.response(); resp.StatusCode != 101 {
		t.Fatalf("upgrade meta2?set=1: %d %q", resp.StatusCode, body)
	}
	roundTrip(t, old, "before")
	requireMeta(t, "the replaced connection's POST", waitCalls(t, b, "meta2", "POST", 1)[0], map[string]string{"User": "carol"})
	r3 := rawUpgrade(t, p.ws, "meta2")
	old.expectClose(protocol.CloseReplaced)
	roundTrip(t, r3, "fresh")
	requireMeta(t, "a newcomer's POST", waitCalls(t, b, "meta2", "POST", 2)[1], map[string]string{})
	dels := waitCalls(t, b, "meta2", "DELETE", 1)
	requireMeta(t, "the replaced connection's DELETE", dels[0], map[string]string{"User": "carol"})

	// Without metadata: no header, no "meta" in the info.
	r4 := rawUpgrade(t, p.ws, "plain")
	roundTrip(t, r4, "x")
	requireMeta(t, "a connection without metadata", waitCalls(t, b, "plain", "POST", 1)[0], map[string]string{})
	_, body, _ = p.adminDo(t, "GET", "/plain", "")
	if strings.Contains(body, `"meta"`) {
		t.Fatalf("info of a connection without metadata: %s", body)
	}
}

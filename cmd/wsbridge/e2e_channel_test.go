package main

import (
	"encoding/json"
	"fmt"
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

// channelBackend answers a GET with Wsbridge-Subscribe: <the query's sub
// value> and a POST "join:<list>" or "leave:<list>" with
// Wsbridge-Subscribe or Wsbridge-Unsubscribe: <list> (and the body echoed).
func channelBackend(t *testing.T) *backend.Backend {
	return newBackend(t, backend.Options{Hook: func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
		switch c.Method {
		case "GET":
			if v := ctx.QueryArgs().Peek("sub"); len(v) > 0 {
				ctx.Response.Header.Set(protocol.HeaderSubscribe, string(v))
			}
		case "POST":
			if l, ok := strings.CutPrefix(string(c.Body), "join:"); ok {
				ctx.Response.Header.Set(protocol.HeaderSubscribe, l)
			} else if l, ok := strings.CutPrefix(string(c.Body), "leave:"); ok {
				ctx.Response.Header.Set(protocol.HeaderUnsubscribe, l)
			}
		}
		return false
	}})
}

// subscribed opens id with the GET's reply subscribing it to list.
func subscribed(t testing.TB, p *proc, id, list string) *raw {
	t.Helper()
	r := rawDial(t, p.ws)
	r.send(strings.Replace(upgradeRequest(id), "/"+id+" ", "/"+id+"?sub="+list+" ", 1))
	if resp, body := r.response(); resp.StatusCode != 101 {
		t.Fatalf("upgrade %s: got %d %q, want 101", id, resp.StatusCode, body)
	}
	return r
}

// publish posts body to ch and returns the node's subscriber count.
func publish(t testing.TB, p *proc, ch, body string, hdr ...string) int {
	t.Helper()
	status, resp, _ := p.adminDo(t, "POST", "/channel/"+ch, body, hdr...)
	if status != http.StatusAccepted {
		t.Fatalf("publish to %s: got %d %q, want 202", ch, status, resp)
	}
	var v struct{ Subscribers int }
	if err := json.Unmarshal([]byte(resp), &v); err != nil {
		t.Fatalf("publish answer %q: %v", resp, err)
	}
	return v.Subscribers
}

type presence struct {
	Subscribers int      `json:"subscribers"`
	IDs         []string `json:"ids"`
}

func presenceOf(t testing.TB, p *proc, ch, query string) presence {
	t.Helper()
	status, body, _ := p.adminDo(t, "GET", "/channel/"+ch+query, "")
	requireEqual(t, "presence status", status, 200)
	var v presence
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.IDs == nil {
		t.Fatalf("presence %q: %v (ids must be a list)", body, err)
	}
	return v
}

// expectMessage reads the next frame and checks it.
func (r *raw) expectMessage(op ws.OpCode, want string) {
	r.t.Helper()
	h, p, err := r.readFrame()
	if err != nil {
		r.t.Fatalf("waiting for %q: %v", want, err)
	}
	if h.OpCode != op || !h.Fin || string(p) != want {
		r.t.Fatalf("got op %v fin %v %q, want op %v %q", h.OpCode, h.Fin, p, op, want)
	}
}

// TestChannelSubscribe (issue 15, DESIGN §8.1): a connection joins
// channels by the GET's and a POST's Wsbridge-Subscribe and leaves by a
// POST's Wsbridge-Unsubscribe or the admin API; a publish reaches every
// subscriber (text and binary) but the excluded one; presence counts and
// lists with a limit; bad names are ignored and counted, the connection
// stays.
func TestChannelSubscribe(t *testing.T) {
	b := channelBackend(t)
	p := startBridge(t, b.URL)

	a := subscribed(t, p, "ch-a", "room,news")
	bb := subscribed(t, p, "ch-b", "room")
	c := rawUpgrade(t, p.ws, "ch-c")

	requireEqual(t, "subscribers of room", publish(t, p, "room", "hello"), 2)
	a.expectMessage(ws.OpText, "hello")
	bb.expectMessage(ws.OpText, "hello")
	requireEqual(t, "subscribers of news", publish(t, p, "news", "\x00\xff", "Content-Type", "application/octet-stream"), 1)
	a.expectMessage(ws.OpBinary, "\x00\xff")

	// A POST's reply joins c; the reply comes after the subscription.
	c.frame(ws.OpText, true, []byte("join:room, ,bad name!,room:2"))
	c.expectMessage(ws.OpText, "join:room, ,bad name!,room:2")
	requireEqual(t, "subscribers of room", publish(t, p, "room", "three"), 3)
	for _, r := range []*raw{a, bb, c} {
		r.expectMessage(ws.OpText, "three")
	}
	requireEqual(t, "bad names counted", p.metric(t, `wsbridge_channel_rejected_total{reason="bad_name"}`), 1)
	requireEqual(t, "subscriptions", p.metric(t, "wsbridge_channel_subscriptions"), 5)

	// Exclude.
	requireEqual(t, "subscribers of room", publish(t, p, "room?exclude=ch-b", "not b"), 3)
	a.expectMessage(ws.OpText, "not b")
	c.expectMessage(ws.OpText, "not b")

	// Presence, with and without a limit.
	v := presenceOf(t, p, "room", "")
	requireEqual(t, "room subscribers", v.Subscribers, 3)
	requireEqual(t, "room ids", strings.Join(v.IDs, ","), "ch-a,ch-b,ch-c")
	v = presenceOf(t, p, "room", "?limit=2")
	requireEqual(t, "room subscribers with limit", v.Subscribers, 3)
	requireEqual(t, "room ids with limit", len(v.IDs), 2)
	v = presenceOf(t, p, "nobody-here", "")
	requireEqual(t, "empty channel", fmt.Sprint(v.Subscribers, v.IDs), "0 []")

	// Leave by a POST reply, then by the admin API: the next frame each
	// gets is the message after the one they no longer get.
	c.frame(ws.OpText, true, []byte("leave:room"))
	c.expectMessage(ws.OpText, "leave:room")
	status, _, _ := p.adminDo(t, "DELETE", "/channel/room/ch-b", "")
	requireEqual(t, "admin unsubscribe", status, 200)
	requireEqual(t, "subscribers of room", publish(t, p, "room", "only a"), 1)
	a.expectMessage(ws.OpText, "only a")
	status, _, _ = p.adminDo(t, "PUT", "/channel/room:2/ch-b", "")
	requireEqual(t, "admin subscribe", status, 200)
	requireEqual(t, "subscribers of room:2", publish(t, p, "room:2", "b and c"), 2)
	bb.expectMessage(ws.OpText, "b and c")
	c.expectMessage(ws.OpText, "b and c")

	// Admin refusals.
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"PUT", "/channel/room/nobody", 404},
		{"DELETE", "/channel/room/nobody", 404},
		{"PUT", "/channel/bad%20name/ch-a", 400},
		{"PUT", "/channel/room/bad%20id", 400},
		{"POST", "/channel/room/ch-a", 405},
		{"PUT", "/channel/room", 405},
		{"POST", "/channel/room?exclude=bad%20id", 400},
		{"GET", "/channel/room?limit=x", 400},
	} {
		status, body, _ := p.adminDo(t, tc.method, tc.path, "x")
		if status != tc.want {
			t.Errorf("%s %s: got %d %q, want %d", tc.method, tc.path, status, body, tc.want)
		}
	}
	status, _, _ = p.adminDo(t, "POST", "/channel/room", "\xff")
	requireEqual(t, "text publish not UTF-8", status, 400)

	// Every connection is still open and got nothing more.
	for _, r := range []*raw{a, bb, c} {
		r.frame(ws.OpText, true, []byte("still here"))
		r.expectMessage(ws.OpText, "still here")
	}
	requireEqual(t, "publishes", p.metric(t, "wsbridge_channel_publishes_total"), 6)
	requireEqual(t, "deliveries", p.metric(t, "wsbridge_channel_deliveries_total"), 11)
}

// TestChannelEndsWithConnection: subscriptions end with the connection
// (presence and the gauge drop); a newer connection with the same
// ClientId does not inherit the replaced one's channels.
func TestChannelEndsWithConnection(t *testing.T) {
	b := channelBackend(t)
	p := startBridge(t, b.URL)
	x := subscribed(t, p, "end-x", "lobby")
	y := subscribed(t, p, "end-y", "lobby,other")
	requireEqual(t, "lobby", presenceOf(t, p, "lobby", "").Subscribers, 2)

	y.frame(ws.OpClose, true, ws.NewCloseFrameBody(1000, ""))
	y.expectClose(1000)
	waitFor(t, 10*time.Second, func() error {
		if v := presenceOf(t, p, "lobby", ""); v.Subscribers != 1 || strings.Join(v.IDs, ",") != "end-x" {
			return fmt.Errorf("lobby after end-y closed: %+v", v)
		}
		return nil
	})
	requireEqual(t, "other", presenceOf(t, p, "other", "").Subscribers, 0)

	// A newcomer replaces end-x without a subscription of its own.
	n := rawUpgrade(t, p.ws, "end-x")
	x.expectClose(protocol.CloseReplaced)
	requireEqual(t, "lobby after the replacement", presenceOf(t, p, "lobby", "").Subscribers, 0)
	requireEqual(t, "publish to lobby", publish(t, p, "lobby", "nobody"), 0)
	n.frame(ws.OpText, true, []byte("ping"))
	n.expectMessage(ws.OpText, "ping") // not "nobody"
	requireEqual(t, "subscriptions", p.metric(t, "wsbridge_channel_subscriptions"), 0)
}

// TestChannelMaxChannels: past -max-channels a reply's subscription is
// ignored and counted, and the admin API answers 409; the connection
// stays.
func TestChannelMaxChannels(t *testing.T) {
	b := channelBackend(t)
	p := startBridge(t, b.URL, "-max-channels", "2")
	r := subscribed(t, p, "max-1", "c1,c2,c3")
	requireEqual(t, "c3 ignored", presenceOf(t, p, "c3", "").Subscribers, 0)
	requireEqual(t, "c2 joined", presenceOf(t, p, "c2", "").Subscribers, 1)
	requireEqual(t, "too_many counted", p.metric(t, `wsbridge_channel_rejected_total{reason="too_many"}`), 1)
	status, _, _ := p.adminDo(t, "PUT", "/channel/c4/max-1", "")
	requireEqual(t, "admin subscribe past the limit", status, 409)
	status, _, _ = p.adminDo(t, "PUT", "/channel/c1/max-1", "")
	requireEqual(t, "admin subscribe to a channel it is in", status, 200)
	r.frame(ws.OpText, true, []byte("leave:c1"))
	r.expectMessage(ws.OpText, "leave:c1")
	status, _, _ = p.adminDo(t, "PUT", "/channel/c4/max-1", "")
	requireEqual(t, "admin subscribe after leaving one", status, 200)
	publish(t, p, "c4", "four")
	r.expectMessage(ws.OpText, "four")
}

// readSequence reads n text messages "0" … "n-1" in order.
func readSequence(r *raw, n int) error {
	for i := range n {
		h, p, err := r.readFrame()
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if h.OpCode != ws.OpText || string(p) != strconv.Itoa(i) {
			return fmt.Errorf("message %d: got op %v %q", i, h.OpCode, p)
		}
	}
	return nil
}

// TestChannelOrder: 500 publishes through one admin connection reach each
// of 200 subscribers (on every loop) exactly, in publish order.
func TestChannelOrder(t *testing.T) {
	const subs, msgs = 200, 500
	b := channelBackend(t)
	p := startFastBridge(t, b.URL, "-loops", "4")
	conns := make([]*raw, subs)
	for i := range conns {
		conns[i] = subscribed(t, p, fmt.Sprintf("ord-%d", i), "ordered")
	}
	requireEqual(t, "subscribers", presenceOf(t, p, "ordered", "?limit=0").Subscribers, subs)
	errs := make(chan error, subs)
	var wg sync.WaitGroup
	for _, r := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- readSequence(r, msgs) }()
	}
	admin := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}} // one admin connection
	defer admin.CloseIdleConnections()
	for i := range msgs {
		resp, err := admin.Post("http://"+p.admin+"/channel/ordered", "text/plain", strings.NewReader(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("publish %d: got %d, want 202", i, resp.StatusCode)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	requireEqual(t, "deliveries", p.metric(t, "wsbridge_channel_deliveries_total"), subs*msgs)
	requireEqual(t, "drops", p.metric(t, "wsbridge_channel_drops_total"), 0)
}

// TestChannelSlowSubscriber: a subscriber that does not read is closed
// with 1013 once its outbound passes -max-outbound, and the others get
// every message, in order.
func TestChannelSlowSubscriber(t *testing.T) {
	b := channelBackend(t)
	p := startBridge(t, b.URL, "-max-outbound", "65536")
	slow := subscribed(t, p, "slow", "feed")
	fast := []*raw{subscribed(t, p, "fast-1", "feed"), subscribed(t, p, "fast-2", "feed")}
	// The fast ones read as they go: each message is its number, padded
	// to 16 KiB.
	pad := strings.Repeat(" ", 16<<10)
	got := make([]chan int, len(fast))
	why := make([]error, len(fast))
	for i, r := range fast {
		got[i] = make(chan int, 4096)
		go func() {
			defer close(got[i])
			for n := 0; ; n++ {
				h, p, err := r.readFrame()
				if err == nil && (h.OpCode != ws.OpText || strings.TrimSpace(string(p)) != strconv.Itoa(n)) {
					err = fmt.Errorf("message %d: got op %v %.20q", n, h.OpCode, p)
				}
				if err != nil {
					why[i] = err
					return
				}
				got[i] <- n
			}
		}()
	}
	// Publish until the slow one is dropped (its socket buffers hold a few
	// MB at most), then a few more; bounded.
	sent := 0
	for sent < 4000 {
		publish(t, p, "feed", strconv.Itoa(sent)+pad)
		if sent++; sent%16 == 0 && p.metric(t, "wsbridge_channel_drops_total") > 0 {
			break
		}
	}
	for end := sent + 10; sent < end; sent++ {
		publish(t, p, "feed", strconv.Itoa(sent)+pad)
	}
	requireEqual(t, "drops", p.metric(t, "wsbridge_channel_drops_total"), 1)
	for i := range fast {
		last := -1
		deadline := time.After(20 * time.Second)
		for last < sent-1 {
			select {
			case n, ok := <-got[i]:
				if !ok {
					t.Fatalf("fast-%d: stopped after message %d of %d: %v", i+1, last, sent, why[i])
				}
				last = n
			case <-deadline:
				t.Fatalf("fast-%d: got %d of %d messages", i+1, last+1, sent)
			}
		}
	}
	slow.expectClose(protocol.CloseTryAgain)
	requireEqual(t, "feed after the drop", presenceOf(t, p, "feed", "").Subscribers, 2)
	requireEqual(t, "slow consumer closes", p.metric(t, `wsbridge_connections_closed_total{reason="slow_consumer"}`), 1)
}

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
)

// clusterChan is a channel name with the characters a NATS subject needs
// escaped ('.', '~') or may find odd (':').
const clusterChan = "room:1.a~b"

// waitPresence polls GET /channel/<ch> on p until it counts want.
func waitPresence(t testing.TB, p *proc, ch string, want int) presence {
	t.Helper()
	var v presence
	waitFor(t, 20*time.Second, func() error {
		status, body, _ := p.adminDo(t, "GET", "/channel/"+ch, "")
		if status != http.StatusOK {
			return fmt.Errorf("presence through %s: %d %q", p.admin, status, body)
		}
		v = presence{}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			return err
		}
		if v.Subscribers != want {
			return fmt.Errorf("presence through %s: %d subscribers, want %d", p.admin, v.Subscribers, want)
		}
		return nil
	})
	return v
}

// readTwoSequences reads 2n text messages: "a0"…"a<n-1>" and "b0"…"b<n-1>"
// interleaved in any way, each sequence in order, each message once.
func readTwoSequences(r *raw, n int) error {
	next := map[byte]int{'a': 0, 'b': 0}
	for i := 0; i < 2*n; {
		h, p, err := r.readFrame()
		if err != nil {
			return fmt.Errorf("after %d messages (next a%d b%d): %w", i, next['a'], next['b'], err)
		}
		if h.OpCode == ws.OpPing || h.OpCode == ws.OpPong {
			continue
		}
		if h.OpCode != ws.OpText || len(p) < 2 {
			return fmt.Errorf("message %d: op %v %q", i, h.OpCode, p)
		}
		k, want := p[0], next[p[0]]
		if got, err := strconv.Atoi(string(p[1:])); err != nil || got != want || (k != 'a' && k != 'b') {
			return fmt.Errorf("message %d: got %q, want %c%d", i, p, k, want)
		}
		next[k]++
		i++
	}
	return nil
}

// publishSeq publishes prefix0 … prefix<n-1> to ch through p's admin API
// over one admin connection.
func publishSeq(p *proc, ch, prefix string, n int) error {
	admin := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer admin.CloseIdleConnections()
	for i := range n {
		resp, err := admin.Post("http://"+p.admin+"/channel/"+ch, "text/plain", strings.NewReader(prefix+strconv.Itoa(i)))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("publish %s%d through %s: %d", prefix, i, p.admin, resp.StatusCode)
		}
	}
	return nil
}

// TestClusterChannel (issue 15, DESIGN §8.1–8.2): channel publishes on any
// node reach the subscribers on every node, in each publisher's order and
// exactly once; exclude, PUT/DELETE and presence work across nodes; a node
// without subscribers gets no channel traffic.
func TestClusterChannel(t *testing.T) {
	nats := startNATS(t)
	b := channelBackend(t)
	na := startNode(t, nats, b.URL, "na")
	nb := startNode(t, nats, b.URL, "nb")
	nc := startNode(t, nats, b.URL, "nc")

	onA := subscribed(t, na, "ch-a", clusterChan)
	byGet := subscribed(t, nc, "ch-get", clusterChan)
	byPut := rawUpgrade(t, nc.ws, "ch-put")
	status, body, _ := na.adminDo(t, "PUT", "/channel/"+clusterChan+"/ch-put", "")
	requireEqual(t, "PUT through na for a client on nc ("+body+")", status, 200)

	// Presence through nb (which has no subscribers) counts na's and nc's.
	v := waitPresence(t, nb, clusterChan, 3)
	requireEqual(t, "ids through nb", strings.Join(v.IDs, ","), "ch-a,ch-get,ch-put")
	v = presenceOf(t, nb, clusterChan, "?limit=2")
	requireEqual(t, "limit=2 through nb", fmt.Sprint(v.Subscribers, v.IDs), "3 [ch-a ch-get]")
	v = presenceOf(t, nc, clusterChan, "")
	requireEqual(t, "presence through nc", fmt.Sprint(v.Subscribers, v.IDs), "3 [ch-a ch-get ch-put]")
	requireEqual(t, "presence of an empty channel", fmt.Sprint(presenceOf(t, na, "nobody-here", "")), "{0 []}")

	// 500 through na and 500 through nb at the same time.
	const msgs = 500
	readers := []*raw{onA, byGet, byPut}
	errs := make(chan error, len(readers)+2)
	var wg sync.WaitGroup
	for _, r := range readers {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- readTwoSequences(r, msgs) }()
	}
	var pub sync.WaitGroup
	for _, x := range []struct {
		p      *proc
		prefix string
	}{{na, "a"}, {nb, "b"}} {
		pub.Add(1)
		go func() { defer pub.Done(); errs <- publishSeq(x.p, clusterChan, x.prefix, msgs) }()
	}
	pub.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Exactly once: the next message each reader gets is the next one
	// published, no duplicate of the 1000 before it.
	publish(t, na, clusterChan, "end")
	for _, r := range readers {
		r.expectText("end")
	}

	// nb has no subscribers: no channel message ever reached it.
	requireEqual(t, "channel messages into nb", nb.metric(t, `wsbridge_cluster_channel_messages_total{dir="in"}`), 0)
	requireEqual(t, "channel messages out of nb", nb.metric(t, `wsbridge_cluster_channel_messages_total{dir="out"}`), msgs)
	requireEqual(t, "channel messages out of na", na.metric(t, `wsbridge_cluster_channel_messages_total{dir="out"}`), msgs+1)
	requireEqual(t, "channel messages into nc", nc.metric(t, `wsbridge_cluster_channel_messages_total{dir="in"}`), 2*msgs+1)
	requireEqual(t, "channel messages into na", na.metric(t, `wsbridge_cluster_channel_messages_total{dir="in"}`), msgs)

	// exclude travels: through nb, excluding a subscriber on nc.
	publish(t, nb, clusterChan, "not for ch-get")
	publish(t, nb, clusterChan+"?exclude=ch-get", "skip get")
	publish(t, nb, clusterChan, "all")
	onA.expectText("not for ch-get")
	byGet.expectText("not for ch-get")
	byPut.expectText("not for ch-get")
	onA.expectText("skip get")
	byPut.expectText("skip get")
	onA.expectText("all")
	byPut.expectText("all")
	byGet.expectText("all") // "skip get" never came
	// Binary travels as binary.
	publish(t, na, clusterChan, "\x00bin", "Content-Type", "application/octet-stream")
	byGet.expectMessage(ws.OpBinary, "\x00bin")
	byPut.expectMessage(ws.OpBinary, "\x00bin")
	onA.expectMessage(ws.OpBinary, "\x00bin")

	// DELETE through nb for a client on nc; an id connected nowhere is 404.
	status, body, _ = nb.adminDo(t, "DELETE", "/channel/"+clusterChan+"/ch-put", "")
	requireEqual(t, "DELETE through nb for a client on nc ("+body+")", status, 200)
	for _, m := range []string{"PUT", "DELETE"} {
		status, _, _ = na.adminDo(t, m, "/channel/"+clusterChan+"/nobody", "")
		requireEqual(t, m+" of an id connected nowhere", status, 404)
	}
	requireEqual(t, "presence after the DELETE", presenceOf(t, na, clusterChan, "").Subscribers, 2)
	publish(t, na, clusterChan, "after delete")
	byGet.expectText("after delete")
	status, _, _ = nb.adminDo(t, "POST", "/ch-put", "push")
	requireEqual(t, "push to ch-put", status, 200)
	byPut.expectText("push") // not "after delete": it left the channel
}

// TestClusterChannelNATSDown (DESIGN §8.2): with NATS down a publish is
// still delivered on its node (202, "cluster":"down"), not on the others;
// presence answers 503 and a cross-node PUT 503. NATS back, the nodes
// subscribe their channels again and cross-node delivery resumes.
func TestClusterChannelNATSDown(t *testing.T) {
	nats := startNATS(t)
	b := channelBackend(t)
	na := startNode(t, nats, b.URL, "na")
	nc := startNode(t, nats, b.URL, "nc")
	onA := subscribed(t, na, "dn-a", "news")
	onC := subscribed(t, nc, "dn-c", "news")
	_ = rawUpgrade(t, nc.ws, "dn-other")
	waitPresence(t, na, "news", 2)
	publish(t, na, "news", "up")
	onA.expectText("up")
	onC.expectText("up")

	nats.kill()
	waitClusterUp(t, na, 0)
	waitClusterUp(t, nc, 0)
	status, body, _ := na.adminDo(t, "POST", "/channel/news", "while down")
	requireEqual(t, "publish while down", status, http.StatusAccepted)
	var ans struct {
		Subscribers int
		Cluster     string
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatalf("publish answer %q: %v", body, err)
	}
	requireEqual(t, "publish answer while down ("+body+")", fmt.Sprintf("%d %s", ans.Subscribers, ans.Cluster), "1 down")
	onA.expectText("while down")
	status, _, _ = na.adminDo(t, "GET", "/channel/news", "")
	requireEqual(t, "presence while down", status, http.StatusServiceUnavailable)
	status, _, _ = na.adminDo(t, "PUT", "/channel/news/dn-other", "")
	requireEqual(t, "cross-node PUT while down", status, http.StatusServiceUnavailable)
	status, _, _ = nc.adminDo(t, "PUT", "/channel/news/dn-other", "")
	requireEqual(t, "local PUT while down", status, http.StatusOK)
	publish(t, nc, "news", "local on nc")
	onC.expectText("local on nc") // not "while down": it never left na

	nats.start()
	waitClusterUp(t, na, 1)
	waitClusterUp(t, nc, 1)
	// The subscriptions are back on the server: presence through na sees
	// nc's subscribers again. nc's answer follows all its re-sent SUBs on
	// its connection, so the server has its message subscription too.
	waitPresence(t, na, "news", 3)
	publish(t, na, "news", "back")
	onA.expectText("back")
	onC.expectText("back")
	status, body, _ = na.adminDo(t, "POST", "/channel/news", "again")
	requireEqual(t, "publish after reconnect", status, http.StatusAccepted)
	if strings.Contains(body, "down") {
		t.Fatalf("publish answer after reconnect: %q", body)
	}
	onC.expectText("again")
}

// TestClusterChannelGoroutines: a node's channel subscriptions on the bus
// cost no goroutine each (a channel per user is a common pattern): 500
// channels joined, the node's goroutines grow by far less than 500.
func TestClusterChannelGoroutines(t *testing.T) {
	const chans = 500
	nats := startNATS(t)
	b := channelBackend(t)
	na := startNode(t, nats, b.URL, "na", "-max-channels", strconv.Itoa(chans))
	_ = rawUpgrade(t, na.ws, "many")
	before := na.metric(t, "go_goroutines")
	for i := range chans {
		status, body, _ := na.adminDo(t, "PUT", "/channel/u:"+strconv.Itoa(i)+"/many", "")
		requireEqual(t, "PUT ("+body+")", status, 200)
	}
	// Every channel's subscription is on the server: presence through
	// another node finds the last one.
	nb := startNode(t, nats, b.URL, "nb")
	waitPresence(t, nb, "u:"+strconv.Itoa(chans-1), 1)
	if after := na.metric(t, "go_goroutines"); after-before > chans/10 {
		t.Fatalf("goroutines %v → %v for %d channels: want no goroutine per channel", before, after, chans)
	}
}

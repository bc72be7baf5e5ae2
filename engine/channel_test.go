package engine

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// chanTestLoop is a loop with no event loop behind it, enough for the
// subscription index (nothing here posts a task).
func chanTestLoop(maxChannels int, on func(string, bool)) *loop {
	s := &Server{cfg: Config{MaxChannels: maxChannels}, metrics: NewMetrics(),
		log: zap.NewNop(), limited: zap.NewNop(), chans: channels{on: on}}
	return &loop{srv: s}
}

func chanTestConn(l *loop, id string) *conn {
	c := &conn{l: l, phase: phOpen}
	c.sess.Begin(1, []byte(id), nil, nil)
	return c
}

// TestChannelIndex: joins and leaves keep the loop's two maps, the node's
// table and count, the connection's bit and the gauge in step; a
// connection in no channel is in no map; the node is told of a channel's
// first and last subscriber, in order.
func TestChannelIndex(t *testing.T) {
	var mu sync.Mutex
	var events []string
	l := chanTestLoop(2, func(ch string, active bool) {
		mu.Lock()
		events = append(events, fmt.Sprint(ch, " ", active))
		mu.Unlock()
	})
	s := l.srv
	a, b := chanTestConn(l, "a"), chanTestConn(l, "b")
	check := func(what string, ch string, want int) {
		t.Helper()
		got := 0
		if nc := s.chans.m[ch]; nc != nil {
			got = int(nc.count.Load())
			if lc := l.chans[ch]; lc == nil || len(lc.subs) != got {
				t.Fatalf("%s: loop and node disagree on %s", what, ch)
			}
		} else if l.chans[ch] != nil {
			t.Fatalf("%s: %s is on the loop but not on the node", what, ch)
		}
		if got != want {
			t.Fatalf("%s: subscribers of %s: got %d, want %d", what, ch, got, want)
		}
	}

	for _, tc := range []struct {
		c    *conn
		name string
		want int
	}{
		{a, "room", http.StatusOK},
		{a, "room", http.StatusOK}, // again: nothing changes
		{a, "bad name", http.StatusBadRequest},
		{a, "", http.StatusBadRequest},
		{a, "news", http.StatusOK},
		{a, "third", http.StatusConflict}, // -max-channels 2
		{b, "room", http.StatusOK},
	} {
		if got := tc.c.join([]byte(tc.name)); got != tc.want {
			t.Fatalf("%s joins %q: got %d, want %d", tc.c.clientID(), tc.name, got, tc.want)
		}
	}
	check("after the joins", "room", 2)
	check("after the joins", "news", 1)
	check("after the joins", "third", 0)
	if _, more := a.channels(); len(more) != 1 || l.member[b] == nil || a.more&fMoreSubscribed == 0 {
		t.Fatalf("member index: a has %d more channels, b's first is %v", len(more), l.member[b])
	}

	d := chanTestConn(l, "d")
	d.join([]byte("x"))
	d.join([]byte("y"))
	d.leave([]byte("y")) // not its first
	if first, more := d.channels(); first == nil || first.name != "x" || len(more) != 0 || l.memberMore[d] != nil {
		t.Fatalf("d after leaving y: first %v, more %d", first, len(more))
	}
	d.leaveChannels()
	check("d ended", "x", 0)
	check("d ended", "y", 0)
	a.leave([]byte("room")) // its first: news becomes the first
	a.leave([]byte("room")) // not in it: nothing
	a.leave([]byte("elsewhere"))
	check("a left room", "room", 1)
	b.leaveChannels()
	check("b ended", "room", 0)
	if b.more&fMoreSubscribed != 0 || l.member[b] != nil {
		t.Fatal("b ended but is still indexed")
	}
	a.leaveChannels()
	check("a ended", "news", 0)
	if len(l.chans) != 0 || len(l.member) != 0 || len(l.memberMore) != 0 || len(s.chans.m) != 0 {
		t.Fatalf("left behind: loop %d channels, %d members; node %d channels", len(l.chans), len(l.member), len(s.chans.m))
	}
	// A connection that never joined leaves nothing.
	chanTestConn(l, "c").leaveChannels()

	want := "[room true news true x true y true y false x false room false news false]"
	waitFor := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := fmt.Sprint(events)
		mu.Unlock()
		if got == want {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatalf("OnChannel calls: got %s, want %s", got, want)
		}
		time.Sleep(time.Millisecond) // polling, with the deadline above
	}
}

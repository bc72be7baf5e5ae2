package engine

import (
	"net/netip"
	"testing"
)

// fakeLoop returns a loop whose mailbox is read directly by the test.
func fakeLoop() *loop { return &loop{woken: true} }

func newTestConn(l *loop, id uint64, clientID string) *conn {
	c := &conn{l: l}
	c.sess.Begin(id, []byte(clientID), nil, nil)
	return c
}

// takeTasks empties the loop's mailbox.
func takeTasks(l *loop) []task {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.tasks
	l.tasks = nil
	return ts
}

func requireTasks(t *testing.T, l *loop, want ...taskKind) []task {
	t.Helper()
	ts := takeTasks(l)
	if len(ts) != len(want) {
		t.Fatalf("tasks: got %d (%v), want %v", len(ts), ts, want)
	}
	for i := range ts {
		if ts[i].kind != want[i] {
			t.Fatalf("task %d: got kind %d, want %d", i, ts[i].kind, want[i])
		}
	}
	return ts
}

// The lifecycle sequences of docs/protocol.md, one per test, driven through the registry.

func TestRegistrySequentialReconnect(t *testing.T) {
	r, l := newRegistry(), fakeLoop()
	a, b := newTestConn(l, 1, "x"), newTestConn(l, 2, "x")
	if ok, rep, _ := r.arrive(a); !ok || rep != 0 {
		t.Fatalf("first arrival: got granted=%v replaces=%d, want true 0", ok, rep)
	}
	if r.accepted(a) != roleOwner {
		t.Fatal("first connection must own the id")
	}
	r.ending(a) // a closes
	if ok, _, _ := r.arrive(b); ok {
		t.Fatal("b's GET must wait for a's DELETE")
	}
	requireTasks(t, l)
	r.deleted(a)
	ts := requireTasks(t, l, taskGrant)
	if ts[0].c != b || ts[0].replaces != 0 {
		t.Fatalf("grant: got conn %d replaces %d, want conn 2 replaces 0", ts[0].c.sess.ID(), ts[0].replaces)
	}
	if r.accepted(b) != roleOwner {
		t.Fatal("b must own the id")
	}
	if got := r.lookup([]byte("x")); got != b {
		t.Fatal("push must find b")
	}
}

func TestRegistryReplaceOpen(t *testing.T) {
	r, l := newRegistry(), fakeLoop()
	a, b := newTestConn(l, 1, "x"), newTestConn(l, 2, "x")
	r.arrive(a)
	r.accepted(a)
	ok, rep, _ := r.arrive(b)
	if !ok || rep != 1 {
		t.Fatalf("challenger: got granted=%v replaces=%d, want true 1", ok, rep)
	}
	if r.accepted(b) != roleTakeover {
		t.Fatal("challenger must wait for the takeover")
	}
	ts := requireTasks(t, l, taskReplace)
	if ts[0].c != a {
		t.Fatal("replace must go to the old connection")
	}
	if got := r.lookup([]byte("x")); got != a {
		t.Fatal("until the takeover, pushes go to the open old connection")
	}
	r.ending(a)
	if got := r.lookup([]byte("x")); got != nil {
		t.Fatal("a closing connection takes no pushes")
	}
	r.deleted(a)
	ts = requireTasks(t, l, taskOpen)
	if ts[0].c != b {
		t.Fatal("open must go to the challenger")
	}
	if got := r.lookup([]byte("x")); got != b {
		t.Fatal("after the takeover, pushes go to b")
	}
}

func TestRegistryChallengerRefused(t *testing.T) {
	r, l := newRegistry(), fakeLoop()
	a, b, c := newTestConn(l, 1, "x"), newTestConn(l, 2, "x"), newTestConn(l, 3, "x")
	r.arrive(a)
	r.accepted(a)
	r.arrive(b) // challenger
	if ok, _, _ := r.arrive(c); ok {
		t.Fatal("only one challenger at a time")
	}
	r.refused(b)
	ts := requireTasks(t, l, taskGrant)
	if ts[0].c != c || ts[0].replaces != 1 {
		t.Fatal("the next waiter challenges the still-open owner")
	}
	if got := r.lookup([]byte("x")); got != a {
		t.Fatal("a refused challenger leaves the owner in place")
	}
}

func TestRegistryWaiterLeaves(t *testing.T) {
	r, l := newRegistry(), fakeLoop()
	a, b := newTestConn(l, 1, "x"), newTestConn(l, 2, "x")
	r.arrive(a) // authorising
	if ok, _, _ := r.arrive(b); ok {
		t.Fatal("b must wait while a is authorising")
	}
	if !r.leave(b) {
		t.Fatal("a held connection can leave")
	}
	r.refused(a)
	requireTasks(t, l) // nobody left to grant
	sh := r.shard("x")
	if len(sh.m) != 0 {
		t.Fatalf("slot not collected: %d left", len(sh.m))
	}
}

func TestRegistryGrantedCannotLeave(t *testing.T) {
	r, l := newRegistry(), fakeLoop()
	a, b := newTestConn(l, 1, "x"), newTestConn(l, 2, "x")
	r.arrive(a)
	r.arrive(b)
	r.refused(a) // b is granted; its task is in flight
	requireTasks(t, l, taskGrant)
	if r.leave(b) {
		t.Fatal("a granted connection must answer its grant, not leave")
	}
}

func TestRegistryOwnerDeletedWhileChallengerAuthorising(t *testing.T) {
	r, l := newRegistry(), fakeLoop()
	a, b := newTestConn(l, 1, "x"), newTestConn(l, 2, "x")
	r.arrive(a)
	r.accepted(a)
	r.arrive(b) // GET with Replaces in flight
	r.ending(a) // a leaves on its own
	r.deleted(a)
	requireTasks(t, l) // nothing to open yet: b's GET has not answered
	if r.accepted(b) != roleOwner {
		t.Fatal("b, promoted while authorising, opens at once")
	}
}

// maphash.Bytes and maphash.String agree, so lookup finds what arrive
// stored, and lookup allocates nothing.
func TestRegistryLookupBytes(t *testing.T) {
	r, l := newRegistry(), fakeLoop()
	for i := range 100 {
		c := newTestConn(l, uint64(i+1), string(rune('a'+i%26))+string(rune('A'+i/26)))
		r.arrive(c)
		r.accepted(c)
	}
	id := []byte("cB")
	if got := r.lookup(id); got == nil || got.clientID() != "cB" {
		t.Fatalf("lookup(cB): got %v, want the connection", got)
	}
	if n := testing.AllocsPerRun(100, func() { r.lookup(id) }); n != 0 && !raceEnabled {
		t.Fatalf("lookup allocs = %v, want 0", n)
	}
}

// TestRegistryWaitersBounded: past MaxWaitersPerClientID waiting behind a
// slow owner, arrivals are refused without being registered; a waiter that
// leaves makes room, and the bound is per ClientId.
func TestRegistryWaitersBounded(t *testing.T) {
	r, l := newRegistry(), fakeLoop()
	owner := newTestConn(l, 1, "x")
	r.arrive(owner) // its GET is slow
	var waiters []*conn
	for i := range MaxWaitersPerClientID {
		w := newTestConn(l, uint64(10+i), "x")
		if ok, _, full := r.arrive(w); ok || full {
			t.Fatalf("waiter %d: got granted=%v full=%v, want held", i, ok, full)
		}
		waiters = append(waiters, w)
	}
	extra := newTestConn(l, 99, "x")
	if ok, _, full := r.arrive(extra); ok || !full {
		t.Fatalf("one waiter too many: got granted=%v full=%v, want full", ok, full)
	}
	if r.leave(extra) {
		t.Fatal("a refused arrival must not be registered")
	}
	if ok, _, full := r.arrive(newTestConn(l, 100, "y")); !ok || full {
		t.Fatalf("another ClientId: got granted=%v full=%v, want granted", ok, full)
	}
	if !r.leave(waiters[0]) {
		t.Fatal("a waiter must be able to leave")
	}
	if ok, _, full := r.arrive(extra); ok || full {
		t.Fatalf("after a waiter left: got granted=%v full=%v, want held", ok, full)
	}
	requireTasks(t, l)
	// The owner's GET is refused: the waiters are granted in order.
	r.refused(owner)
	ts := requireTasks(t, l, taskGrant)
	if ts[0].c != waiters[1] {
		t.Fatalf("grant: got conn %d, want %d", ts[0].c.sess.ID(), waiters[1].sess.ID())
	}
}

// TestLimitAddr: the per-address limits count the address wsbridge
// believes: the rightmost X-Forwarded-For entry that is not a trusted
// proxy; an entry that does not parse counts as the proxy that sent it.
func TestLimitAddr(t *testing.T) {
	s := &Server{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	for xff, want := range map[string]string{
		"127.0.0.1":                           "127.0.0.1",
		"203.0.113.7, 10.0.0.1":               "203.0.113.7",
		"198.51.100.1, 203.0.113.7, 10.0.0.1": "203.0.113.7",
		"10.0.0.2, 10.0.0.1":                  "10.0.0.2",
		"junk, 10.0.0.1":                      "10.0.0.1",
		"2001:db8::7, 10.0.0.1":               "2001:db8::7",
		"::ffff:203.0.113.8, 10.0.0.1":        "203.0.113.8",
	} {
		if got := s.limitAddr(xff); got.String() != want {
			t.Errorf("limitAddr(%q): got %v, want %s", xff, got, want)
		}
	}
}

// TestIPLimits: acquire counts a connection and its pending upgrade; the
// pending limit frees with the GET's answer, the connection limit with the
// connection's end, and an address with nothing counted is forgotten.
func TestIPLimits(t *testing.T) {
	l := newIPLimits(2, 1)
	a, b := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")
	if got := l.acquire(a); got != ipOK {
		t.Fatalf("first: got %d, want ok", got)
	}
	if got := l.acquire(a); got != ipTooManyPending {
		t.Fatalf("second while the first is pending: got %d, want too many pending", got)
	}
	if got := l.acquire(b); got != ipOK {
		t.Fatalf("another address: got %d, want ok", got)
	}
	l.release(a, false, true) // the first is open
	if got := l.acquire(a); got != ipOK {
		t.Fatalf("second once the first is open: got %d, want ok", got)
	}
	l.release(a, false, true)
	if got := l.acquire(a); got != ipTooManyConns {
		t.Fatalf("third: got %d, want too many conns", got)
	}
	l.release(a, true, false)
	l.release(a, true, false)
	l.release(b, true, true)
	for i := range l.shards {
		if n := len(l.shards[i].m); n != 0 {
			t.Fatalf("shard %d keeps %d addresses, want none", i, n)
		}
	}
	if newIPLimits(0, 0) != nil {
		t.Fatal("no limits must mean no table")
	}
}

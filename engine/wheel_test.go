package engine

import "testing"

func TestWheelFiresDueOnly(t *testing.T) {
	var w wheel
	conns := make([]*conn, 5)
	for i := range conns {
		conns[i] = &conn{}
	}
	w.schedule(conns[0], 3)
	w.schedule(conns[1], 3)
	w.schedule(conns[2], 10)
	w.schedule(conns[3], 3+wheelSlots) // same slot, next turn
	w.schedule(conns[4], 5)
	w.remove(conns[4])

	var fired []*conn
	fire := func(c *conn) { fired = append(fired, c) }
	w.advance(2, fire)
	if len(fired) != 0 {
		t.Fatalf("fired at tick 2: got %d, want 0", len(fired))
	}
	w.advance(3, fire)
	if len(fired) != 2 {
		t.Fatalf("fired at tick 3: got %d, want 2", len(fired))
	}
	w.advance(9, fire)
	if len(fired) != 2 {
		t.Fatalf("fired by tick 9: got %d, want 2 (removed timer must not fire)", len(fired))
	}
	w.advance(10, fire)
	if len(fired) != 3 || fired[2] != conns[2] {
		t.Fatalf("fired by tick 10: got %d, want 3", len(fired))
	}
	w.advance(3+wheelSlots-1, fire)
	if len(fired) != 3 {
		t.Fatalf("next-turn timer fired a turn early")
	}
	w.advance(3+wheelSlots, fire)
	if len(fired) != 4 || fired[3] != conns[3] {
		t.Fatalf("next-turn timer: got %d fired, want 4", len(fired))
	}
}

func TestWheelRescheduleFromFire(t *testing.T) {
	var w wheel
	c := &conn{}
	w.schedule(c, 1)
	n := 0
	w.advance(50, func(c *conn) {
		n++
		w.schedule(c, w.cur+10) // heartbeat-style re-arm
	})
	if n != 5 {
		t.Fatalf("re-armed timer fired %d times in 50 ticks, want 5", n)
	}
	if c.flags&fTimer == 0 {
		t.Fatal("timer not armed after advance")
	}
}

// A timer in the past fires on the next tick rather than never.
func TestWheelPastTimer(t *testing.T) {
	var w wheel
	w.advance(100, func(*conn) {})
	c := &conn{}
	w.schedule(c, 7)
	fired := false
	w.advance(101, func(*conn) { fired = true })
	if !fired {
		t.Fatal("timer scheduled in the past did not fire on the next tick")
	}
}

// Connections keep ticks in 32 bits: timers and idle times stay right
// across the wrap at 2^32 ticks.
func TestWheelTickWrap(t *testing.T) {
	const wrap = 1 << 32
	w := wheel{cur: wrap - 3}
	soon, nextTurn := &conn{}, &conn{}
	w.schedule(soon, wrap+2)                // across the wrap
	w.schedule(nextTurn, wrap-1+wheelSlots) // a turn later, across the wrap
	var fired []*conn
	fire := func(c *conn) { fired = append(fired, c) }
	w.advance(wrap+1, fire)
	if len(fired) != 0 {
		t.Fatalf("fired by tick 2^32+1: got %d, want 0", len(fired))
	}
	w.advance(wrap+2, fire)
	if len(fired) != 1 || fired[0] != soon {
		t.Fatalf("fired by tick 2^32+2: got %d, want the one due then", len(fired))
	}
	w.advance(wrap-2+wheelSlots, fire)
	if len(fired) != 1 {
		t.Fatal("next-turn timer fired a turn early")
	}
	w.advance(wrap-1+wheelSlots, fire)
	if len(fired) != 2 || fired[1] != nextTurn {
		t.Fatalf("next-turn timer: got %d fired, want 2", len(fired))
	}

	l := &loop{now: wrap + 2}
	if got := l.since(tick32(wrap - 3)); got != 5 {
		t.Fatalf("since a tick before the wrap: got %d, want 5", got)
	}
}

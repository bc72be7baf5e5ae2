package journal_test

import (
	"fmt"
	"os"
	"sync/atomic"

	"github.com/wsbridge/wsbridge/bridge/journal"
)

// loop stands for an engine event loop: tasks run one at a time on it
// (gnet's EventLoop.Execute), and it owns its FIFO of upgrades waiting for
// their opened record to be written.
type loop struct {
	tasks   chan func()
	waiting []waiter      // loop-owned, sorted by seq
	oldest  atomic.Uint64 // seq of waiting[0], 0 when none; read by OnWritten
	posted  atomic.Bool   // a wake-up task is queued
	j       *journal.Journal
	sent    int
}

type waiter struct {
	seq  uint64
	conn string
}

// onWritten runs on the journal's writer goroutine: at most one task per
// loop per batch, none for a loop with nothing to release.
func (l *loop) onWritten(upTo uint64, err error) {
	if o := l.oldest.Load(); o != 0 && (o <= upTo || err != nil) && l.posted.CompareAndSwap(false, true) {
		l.tasks <- l.release // EventLoop.Execute in the engine
	}
}

// release runs on the loop: every waiter whose record is written gets its
// 101.
func (l *loop) release() {
	l.posted.Store(false)
	w := l.j.Written()
	n := 0
	for n < len(l.waiting) && l.waiting[n].seq <= w {
		l.sent++ // write the 101 to l.waiting[n].conn
		n++
	}
	// (If l.j.Err() != nil, the rest would get a 503 here.)
	l.waiting = append(l.waiting[:0], l.waiting[n:]...)
	if len(l.waiting) > 0 {
		l.oldest.Store(l.waiting[0].seq)
	} else {
		l.oldest.Store(0)
	}
}

// accepted runs on the loop when the backend's GET said ok.
func (l *loop) accepted(e journal.Entry) {
	seq, err := l.j.Opened(e)
	if err != nil {
		return // 503
	}
	l.waiting = append(l.waiting, waiter{seq, string(e.ConnID)})
	l.oldest.CompareAndSwap(0, seq)
	if l.j.Written() >= seq && l.posted.CompareAndSwap(false, true) {
		l.tasks <- l.release // written before we parked: do not wait for the next batch
	}
}

// Example_engine shows the wiring the package is designed for: the engine
// records on the event loop, parks the upgrade, and the writer's callback
// posts one task per loop that sends every 101 whose record is written.
func Example_engine() {
	dir, _ := os.MkdirTemp("", "journal-example")
	defer os.RemoveAll(dir)
	l := &loop{tasks: make(chan func(), 1)}
	j, rec, err := journal.Open(dir, journal.Options{OnWritten: func(upTo uint64, err error) { l.onWritten(upTo, err) }})
	if err != nil {
		fmt.Println(err)
		return
	}
	l.j = j
	fmt.Println("orphans:", len(rec.Orphans))
	for i := range 3 {
		l.tasks <- func() {
			l.accepted(journal.Entry{ConnID: fmt.Appendf(nil, "abc-%d", i), ClientID: []byte("user"), XFF: []byte("192.0.2.1")})
		}
		for l.sent <= i { // the loop runs its tasks
			(<-l.tasks)()
		}
	}
	fmt.Println("101s sent:", l.sent)
	j.Gone([]byte("abc-0")) // its DELETE was answered
	_ = j.Close()

	// The process "crashed" with two connections open: the next one finds them.
	j, rec, _ = journal.Open(dir, journal.Options{})
	for _, o := range rec.Orphans {
		fmt.Printf("DELETE /%s Wsbridge-Connection-Id: %s X-Forwarded-For: %s\n", o.ClientID, o.ConnID, o.XFF)
		j.Gone(o.ConnID) // answered
	}
	_ = j.Close()
	// Output:
	// orphans: 0
	// 101s sent: 3
	// DELETE /user Wsbridge-Connection-Id: abc-1 X-Forwarded-For: 192.0.2.1
	// DELETE /user Wsbridge-Connection-Id: abc-2 X-Forwarded-For: 192.0.2.1
}

package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func openT(t testing.TB, dir string, opts Options) (*Journal, Recovered) {
	t.Helper()
	j, rec, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j, rec
}

func closeT(t testing.TB, j *Journal) {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// copyDir copies the files of src into a new directory: the state a kill -9
// at this instant would leave (everything written is in the page cache).
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func dirSize(t *testing.T, dir string) (size int64, files []string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by the compactor meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
		files = append(files, e.Name())
	}
	return size, files
}

func TestOpenEmptyAndClean(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	j, rec := openT(t, dir, Options{})
	if len(rec.Orphans) != 0 || len(rec.Damage) != 0 {
		t.Fatalf("new directory: got %d orphans, %d damage; want none", len(rec.Orphans), len(rec.Damage))
	}
	for i := range 10 {
		if _, err := j.Opened(testEntry("a", i)); err != nil {
			t.Fatal(err)
		}
		j.Gone(testEntry("a", i).ConnID)
	}
	closeT(t, j)
	if _, err := j.Opened(testEntry("a", 99)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Opened after Close: got %v, want ErrClosed", err)
	}
	j.Gone([]byte("a-1")) // ignored, no panic
	j2, rec := openT(t, dir, Options{})
	if len(rec.Orphans) != 0 {
		t.Fatalf("every connection gone: got %d orphans, want 0", len(rec.Orphans))
	}
	closeT(t, j2)
}

func TestOpenedRejects(t *testing.T) {
	j, _ := openT(t, t.TempDir(), Options{})
	long := strings.Repeat("x", MaxConnID+1)
	for _, e := range []Entry{{}, {ConnID: []byte(long)}, {ConnID: []byte("a"), ClientID: make([]byte, MaxClientID+1)}, {ConnID: []byte("a"), XFF: make([]byte, MaxXFF+1)}} {
		if _, err := j.Opened(e); !errors.Is(err, ErrEntry) {
			t.Fatalf("Opened(%d/%d/%d bytes): got %v, want ErrEntry", len(e.ConnID), len(e.ClientID), len(e.XFF), err)
		}
	}
}

// TestOrphansAfterCrash: what a process recorded and wrote is what the
// next one finds: the opened and not gone, with ClientId and XFF intact.
// The crash is the copy of the directory while the journal is still open.
func TestOrphansAfterCrash(t *testing.T) {
	dir := t.TempDir()
	j, _ := openT(t, dir, Options{})
	var want []string
	for i := range 1000 {
		if _, err := j.Opened(testEntry("c", i)); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			j.Gone(testEntry("c", i).ConnID)
		} else {
			want = append(want, string(testEntry("c", i).ConnID))
		}
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	crashed := copyDir(t, dir)
	j2, rec := openT(t, crashed, Options{})
	if len(rec.Damage) != 0 {
		t.Fatalf("got damage %v, want none", rec.Damage[0])
	}
	requireOrphans(t, rec.Orphans, want, entriesOf("c", 1000))
	closeT(t, j2)
}

// TestWrittenBeforeCompletion: once OnWritten reports a record's sequence
// number, the record is in the segment file (a kill -9 keeps it), and the
// reported numbers only grow.
func TestWrittenBeforeCompletion(t *testing.T) {
	// A slow disk: if Written moved before write(2) returned, the copy
	// below would miss the record.
	testHookWrite = func() { time.Sleep(2 * time.Millisecond) }
	t.Cleanup(func() { testHookWrite = nil })
	dir := t.TempDir()
	var mu sync.Mutex
	var reports []uint64
	j, _ := openT(t, dir, Options{OnWritten: func(upTo uint64, err error) {
		if err != nil {
			t.Errorf("OnWritten error: %v", err)
		}
		mu.Lock()
		reports = append(reports, upTo)
		mu.Unlock()
	}})
	for i := range 50 {
		e := testEntry("w", i)
		seq, err := j.Opened(e)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "record written", func() bool { return j.Written() >= seq })
		// The file holds it now: a copy taken at this instant recovers it.
		_, rec := openT(t, copyDir(t, dir), Options{})
		if !slices.Contains(connIDs(rec.Orphans), string(e.ConnID)) {
			t.Fatalf("record %d reported written (seq %d) but not in the file", i, seq)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) == 0 || !slices.IsSorted(reports) || reports[len(reports)-1] < 50 {
		t.Fatalf("OnWritten reports %v: want increasing, up to 50", reports)
	}
}

// TestReplayCrashReplay: the orphans of a dead process stay recorded until
// answered, across a second crash. Process 1 records 1000 and is killed;
// process 2 answers 400 of its orphans, records 100 of its own and is
// killed; process 3 finds exactly the 600 unanswered ones and process 2's
// 100. No DELETE answered is found again, none is missing. Real
// processes, killed with SIGKILL.
func TestReplayCrashReplay(t *testing.T) {
	dir := t.TempDir()
	p1 := startHelper(t, dir, "write", "first", "1000")
	p1.kill()
	p2 := startHelper(t, dir, "replay", "400", "second", "100")
	p2.kill()
	if len(p2.answered) != 400 {
		t.Fatalf("process 2 answered %d, want 400", len(p2.answered))
	}
	j, rec := openT(t, dir, Options{})
	all := idsOf("first", 0, 1000)
	var want []string
	for _, id := range all {
		if !slices.Contains(p2.answered, id) {
			want = append(want, id)
		}
	}
	want = append(want, idsOf("second", 0, 100)...)
	byID := entriesOf("first", 1000)
	for k, v := range entriesOf("second", 100) {
		byID[k] = v
	}
	requireOrphans(t, rec.Orphans, want, byID)
	// Every DELETE once: answered by 2 ∪ found by 3 = all of process 1's,
	// and the two are disjoint.
	found := connIDs(rec.Orphans)
	for _, id := range p2.answered {
		if slices.Contains(found, id) {
			t.Fatalf("%s answered by process 2 and found again by process 3", id)
		}
	}
	closeT(t, j)
}

// TestKill9TenThousand: a process that recorded 10,000 connections as
// opened (written, not fsynced) is killed with SIGKILL; the next finds
// exactly those 10,000 — none missing, none twice, none unknown — and,
// once it records them gone, a third finds none.
func TestKill9TenThousand(t *testing.T) {
	dir := t.TempDir()
	startHelper(t, dir, "write", "dead", "10000").kill()
	j, rec := openT(t, dir, Options{})
	requireOrphans(t, rec.Orphans, idsOf("dead", 0, 10000), entriesOf("dead", 10000))
	for _, o := range rec.Orphans {
		j.Gone(o.ConnID)
	}
	closeT(t, j)
	_, rec = openT(t, dir, Options{})
	if len(rec.Orphans) != 0 {
		t.Fatalf("after every orphan's Gone: got %d orphans, want 0", len(rec.Orphans))
	}
}

// TestKill9DuringCompaction: a process churning through small segments,
// so that the compactor snapshots and removes files all the time, is
// killed with SIGKILL at ten different moments; each time the next
// process finds the 1,000 connections that stayed open and at most the one
// churn connection whose Gone was not written yet.
func TestKill9DuringCompaction(t *testing.T) {
	dir := t.TempDir()
	for round := range 10 {
		p := fmt.Sprintf("r%d", round)
		h := startHelper(t, dir, "churn", p, "1000")
		h.kill()
		j, rec := openT(t, dir, Options{})
		var extra []string
		stay := map[string]bool{}
		for _, id := range idsOf(p, 0, 1000) {
			stay[id] = true
		}
		for _, id := range connIDs(rec.Orphans) {
			if stay[id] {
				delete(stay, id)
			} else {
				extra = append(extra, id)
			}
		}
		if len(stay) != 0 || len(extra) > 1 {
			t.Fatalf("round %d: %d of the 1000 open connections missing, %d churn connections found (%q), want 0 and at most 1", round, len(stay), len(extra), extra)
		}
		for _, o := range rec.Orphans {
			j.Gone(o.ConnID)
		}
		closeT(t, j)
	}
}

// TestCrashPointsInCompaction: the directory as a crash would leave it at
// each step of a compaction — before the snapshot is written, and after it
// is written but before the files it covers are removed — recovers the
// open connections. The compactor waits in its hook while the test copies
// the directory.
func TestCrashPointsInCompaction(t *testing.T) {
	dir := t.TempDir()
	var copies []string
	var armed atomic.Bool // once the 1000 are written
	testHookCompact = func() {
		if armed.Load() && len(copies) < 8 {
			copies = append(copies, copyDir(t, dir))
		}
	}
	t.Cleanup(func() { testHookCompact = nil })
	j, _ := openT(t, dir, Options{SegmentSize: 8 << 10})
	for i := range 1000 {
		if _, err := j.Opened(testEntry("cp", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	for i := 1000; i < 21000; i++ {
		e := testEntry("cp", i)
		if _, err := j.Opened(e); err != nil {
			t.Fatal(err)
		}
		j.Gone(e.ConnID)
		if err := j.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	closeT(t, j) // the hook's last run is over
	if len(copies) < 4 {
		t.Fatalf("got %d crash points, want at least 4", len(copies))
	}
	for i, c := range copies {
		_, rec := openT(t, c, Options{})
		stay := map[string]bool{}
		for _, id := range idsOf("cp", 0, 1000) {
			stay[id] = true
		}
		extra := 0
		for _, id := range connIDs(rec.Orphans) {
			if stay[id] {
				delete(stay, id)
			} else {
				extra++
			}
		}
		if len(stay) != 0 || extra > 1 {
			t.Fatalf("crash point %d: %d of the 1000 open connections missing, %d others found; want 0 and at most 1", i, len(stay), extra)
		}
	}
}

// TestCrashAfterSnapshot: Open writes the orphans as a snapshot before it
// removes the predecessor's files. A crash between the two leaves both;
// reading both gives the same orphans.
func TestCrashAfterSnapshot(t *testing.T) {
	dir := t.TempDir()
	j, _ := openT(t, dir, Options{})
	for i := range 100 {
		if _, err := j.Opened(testEntry("s", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 30 {
		j.Gone(testEntry("s", i).ConnID)
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	before := copyDir(t, dir) // process 1 killed here
	j2, rec := openT(t, copyDir(t, before), Options{})
	requireOrphans(t, rec.Orphans, idsOf("s", 30, 100), entriesOf("s", 100))
	after := j2.Dir()
	j2.Gone(testEntry("s", 50).ConnID)
	if err := j2.Flush(); err != nil {
		t.Fatal(err)
	}
	crash2 := copyDir(t, after)
	// Put back process 1's files, as if process 2 died before removing them.
	ents, _ := os.ReadDir(before)
	for _, e := range ents {
		if e.Name() == lockName {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(before, e.Name()))
		if _, err := os.Stat(filepath.Join(crash2, e.Name())); err == nil {
			t.Fatalf("process 2 reused the file name %s", e.Name())
		}
		if err := os.WriteFile(filepath.Join(crash2, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, rec3 := openT(t, crash2, Options{})
	want := slices.DeleteFunc(idsOf("s", 30, 100), func(id string) bool { return id == string(testEntry("s", 50).ConnID) })
	requireOrphans(t, rec3.Orphans, want, entriesOf("s", 100))
}

// TestTornTailOpen truncates the last segment at every byte of its last
// two records: Open recovers everything before the cut, warns about the
// damage (log and Recovered.Damage) and starts; the next Open is clean.
func TestTornTailOpen(t *testing.T) {
	src := t.TempDir()
	j, _ := openT(t, src, Options{})
	for i := range 20 {
		if _, err := j.Opened(testEntry("t", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	crashed := copyDir(t, src)
	closeT(t, j)
	seg := filepath.Join(crashed, segName(1))
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	recLen := len(appendOpened(nil, testEntry("t", 19)))
	for cut := len(data) - 2*recLen; cut < len(data); cut++ {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zapcore.WarnLevel)
		j, rec, err := Open(dir, Options{Logger: zap.New(core)})
		if err != nil {
			t.Fatalf("cut at %d: Open refused: %v", cut, err)
		}
		full := 18 // records entirely before the last two
		if cut >= len(data)-recLen {
			full = 19
		}
		atBoundary := cut == len(data)-2*recLen || cut == len(data)-recLen
		requireOrphans(t, rec.Orphans, idsOf("t", 0, full), entriesOf("t", 20))
		if gotWarn := logs.Len() > 0 && len(rec.Damage) == 1; gotWarn == atBoundary {
			t.Fatalf("cut at %d: got %d warnings, %d damage; want them iff the cut is inside a record", cut, logs.Len(), len(rec.Damage))
		}
		closeT(t, j)
		j, rec, err = Open(dir, Options{})
		if err != nil || len(rec.Damage) != 0 || len(rec.Orphans) != full {
			t.Fatalf("cut at %d, second Open: got %d orphans, damage %v, err %v; want %d, none", cut, len(rec.Orphans), rec.Damage, err, full)
		}
		closeT(t, j)
	}
}

// TestCorruptMiddleOpen: a bad CRC in the middle of a segment stops the
// reading of that segment there, with a warning; the later segments are
// still read.
func TestCorruptMiddleOpen(t *testing.T) {
	dir := t.TempDir()
	data, ends := segmentOf(opened(testEntry("k", 0)), opened(testEntry("k", 1)), opened(testEntry("k", 2)), opened(testEntry("k", 3)))
	data[ends[1]+frameSize+3] ^= 1 // inside record 2's body
	next, _ := segmentOf(opened(testEntry("k", 4)), gone(string(testEntry("k", 0).ConnID)))
	if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, segName(2)), next, 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	j, rec := openT(t, dir, Options{Logger: zap.New(core)})
	requireOrphans(t, rec.Orphans, []string{"k-1", "k-4"}, entriesOf("k", 5))
	if len(rec.Damage) != 1 || rec.Damage[0].File != segName(1) || rec.Damage[0].Offset != int64(ends[1]) || !strings.Contains(rec.Damage[0].Reason, "CRC") {
		t.Fatalf("got damage %v, want one CRC mismatch in %s at %d", rec.Damage, segName(1), ends[1])
	}
	if logs.FilterMessage("journal damaged; read up to the damage").Len() != 1 {
		t.Fatalf("got %d warnings logged, want 1", logs.Len())
	}
	closeT(t, j)
}

// TestLockHeldByLiveProcess: a directory held by another live process is
// refused with an error naming it and the holder's pid; once that process
// is killed (SIGKILL: it releases nothing itself), Open succeeds.
func TestLockHeldByLiveProcess(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, dir, "hold")
	_, _, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open of a held directory: got %v, want ErrLocked", err)
	}
	pid := strconv.Itoa(h.cmd.Process.Pid)
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "process "+pid) {
		t.Fatalf("error %q: want the directory %s and pid %s", err, dir, pid)
	}
	h.kill()
	j, _ := openT(t, dir, Options{})
	closeT(t, j)
}

// TestLockSameProcess: a second Open of the same directory in one process
// is refused too (flock locks per open file); Close releases it.
func TestLockSameProcess(t *testing.T) {
	dir := t.TempDir()
	j, _ := openT(t, dir, Options{})
	if _, _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
	closeT(t, j)
	j2, _ := openT(t, dir, Options{})
	closeT(t, j2)
}

// TestCompactionKeepsLiveSet: with small segments, churn around a steady
// live set makes the compactor replace sealed segments by snapshots of
// exactly the live set; the directory stays within its bound (about two
// snapshots and a few segments) and the next Open finds exactly the live
// ones.
func TestCompactionKeepsLiveSet(t *testing.T) {
	dir := t.TempDir()
	const seg, live, churn, batch = 16 << 10, 1000, 40000, 50
	j, _ := openT(t, dir, Options{SegmentSize: seg})
	churnT(t, j, "z", live, churn, batch)
	snapBytes := int64(live) * int64(len(appendOpened(nil, testEntry("z", churn))))
	maxBatch := int64(batch) * int64(len(appendOpened(nil, testEntry("z", churn)))+len(appendGone(nil, testEntry("z", churn).ConnID)))
	max := 2*snapBytes + 3*(seg+maxBatch)
	// The compactor runs behind the writer and catches up once it stops.
	var size int64
	var files []string
	waitFor(t, 30*time.Second, "journal within its bound", func() bool {
		size, files = dirSize(t, dir)
		return size <= max
	})
	if c := j.Stats().Compactions; c < 2 { // how many depends on timing: one compaction may merge several rotations
		t.Fatalf("got %d compactions, want at least 2", c)
	}
	t.Logf("after %d connects and closes around %d live: %d bytes in %d files (bound %d)", churn, live, size, len(files), max)
	// Not copyDir: the compactor may be running, and a copy taken across
	// its rename and removals is no state a crash can leave.
	closeT(t, j)
	_, rec := openT(t, dir, Options{})
	requireOrphans(t, rec.Orphans, idsOf("z", 0, live), entriesOf("z", live))
}

// churnT records live connections that stay, then churn connections opened
// and gone, flushing every batch pairs (as a busy bridge would batch).
func churnT(t testing.TB, j *Journal, p string, live, churn, batch int) {
	for i := range live {
		if _, err := j.Opened(testEntry(p, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := live; i < live+churn; i++ {
		e := testEntry(p, i)
		if _, err := j.Opened(e); err != nil {
			t.Fatal(err)
		}
		j.Gone(e.ConnID)
		if i%batch == 0 {
			if err := j.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentWriters: many goroutines (the event loops) record at once;
// under -race. Every Opened is written when Flush returns, OnWritten's
// numbers only grow, and the next Open finds exactly the not-gone ones.
func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	var last atomic.Uint64
	var backwards atomic.Bool
	j, _ := openT(t, dir, Options{SegmentSize: 64 << 10, OnWritten: func(upTo uint64, err error) {
		if upTo < last.Load() || err != nil {
			backwards.Store(true)
		}
		last.Store(upTo)
	}})
	const loops, per = 8, 3000
	var wg sync.WaitGroup
	var maxSeq atomic.Uint64
	for l := range loops {
		wg.Go(func() {
			p := fmt.Sprintf("L%d", l)
			var prev uint64
			for i := range per {
				seq, err := j.Opened(testEntry(p, i))
				if err != nil {
					t.Error(err)
					return
				}
				if seq <= prev {
					t.Errorf("loop %d: seq %d after %d", l, seq, prev)
				}
				prev = seq
				if i%2 == 1 {
					j.Gone(testEntry(p, i).ConnID)
				}
			}
			for {
				m := maxSeq.Load()
				if prev <= m || maxSeq.CompareAndSwap(m, prev) {
					break
				}
			}
		})
	}
	wg.Wait()
	if err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	if j.Written() < maxSeq.Load() || backwards.Load() {
		t.Fatalf("written %d, highest seq %d, went backwards %v", j.Written(), maxSeq.Load(), backwards.Load())
	}
	var want []string
	byID := map[string]Entry{}
	for l := range loops {
		p := fmt.Sprintf("L%d", l)
		for i := 0; i < per; i += 2 {
			want = append(want, string(testEntry(p, i).ConnID))
		}
		for k, v := range entriesOf(p, per) {
			byID[k] = v
		}
	}
	st := j.Stats()
	closeT(t, j) // not copyDir: the compactor may be running
	_, rec := openT(t, dir, Options{})
	requireOrphans(t, rec.Orphans, want, byID)
	t.Logf("%d records in %d batches (%.1f a batch), %d compactions", st.Records, st.Batches, float64(st.Records)/float64(st.Batches), st.Compactions)
}

// TestSyncPolicies: each policy records and recovers; the fsyncing ones
// fsync.
func TestSyncPolicies(t *testing.T) {
	for _, tc := range []struct {
		opts      Options
		wantSyncs bool
	}{
		{Options{Sync: SyncNever}, false},
		{Options{Sync: SyncInterval, SyncEvery: 10 * time.Millisecond, SegmentSize: 1 << 10}, true},
		{Options{Sync: SyncAlways, SegmentSize: 1 << 10}, true},
	} {
		t.Run(tc.opts.Sync.String(), func(t *testing.T) {
			dir := t.TempDir()
			j, _ := openT(t, dir, tc.opts)
			for i := range 100 {
				if _, err := j.Opened(testEntry("y", i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := j.Flush(); err != nil {
				t.Fatal(err)
			}
			if tc.wantSyncs {
				waitFor(t, 10*time.Second, "an fsync", func() bool { return j.Stats().Syncs > 0 })
			} else if s := j.Stats().Syncs; s != 0 {
				t.Fatalf("got %d fsyncs, want 0", s)
			}
			closeT(t, j)
			_, rec := openT(t, dir, tc.opts)
			requireOrphans(t, rec.Orphans, idsOf("y", 0, 100), entriesOf("y", 100))
		})
	}
}

func TestParseSync(t *testing.T) {
	for in, want := range map[string]Sync{"never": SyncNever, "": SyncNever, "always": SyncAlways, "250ms": SyncInterval} {
		got, _, err := ParseSync(in)
		if err != nil || got != want {
			t.Fatalf("ParseSync(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"sometimes", "-1s", "0s"} {
		if _, _, err := ParseSync(in); err == nil {
			t.Fatalf("ParseSync(%q): got no error", in)
		}
	}
}

// TestFull: when the writer does not keep up, Opened refuses with ErrFull
// instead of growing without bound.
func TestFull(t *testing.T) {
	j, _ := openT(t, t.TempDir(), Options{MaxPending: 1})
	// The writer may take the first batch at once; the queue is full as
	// soon as one record waits.
	var full bool
	for i := 0; i < 100000 && !full; i++ {
		_, err := j.Opened(testEntry("f", i))
		full = errors.Is(err, ErrFull)
	}
	if !full || j.Stats().Full == 0 {
		t.Fatal("got no ErrFull with MaxPending 1")
	}
}

// TestWriteErrorBreaks: a write error breaks the journal: OnWritten reports
// it, Opened fails with it, Flush returns it, and nothing panics.
func TestWriteErrorBreaks(t *testing.T) {
	errs := make(chan error, 16)
	j, _ := openT(t, t.TempDir(), Options{OnWritten: func(_ uint64, err error) {
		if err != nil {
			errs <- err
		}
	}})
	// The writer's file, closed under it: the next write fails.
	j.fileMu.Lock()
	_ = j.file.Close()
	j.fileMu.Unlock()
	if _, err := j.Opened(testEntry("e", 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("OnWritten: got nil error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnWritten did not report the write error")
	}
	if err := j.Flush(); err == nil {
		t.Fatal("Flush: got nil, want the write error")
	}
	if _, err := j.Opened(testEntry("e", 1)); err == nil {
		t.Fatal("Opened after a write error: got nil error")
	}
	if err := j.Close(); err == nil {
		t.Fatal("Close: got nil, want the write error")
	}
}

// TestSnapshotWithoutEnd: a snapshot cut before its end record, or whose
// end record counts differently, is damaged: its records are still read,
// and the damage is reported.
func TestSnapshotWithoutEnd(t *testing.T) {
	for name, end := range map[string][]byte{"missing": nil, "miscounted": appendEnd(nil, 5)} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			snap := appendHeader(nil, kindSnapshot)
			snap = appendOpened(snap, testEntry("n", 0))
			snap = appendOpened(snap, testEntry("n", 1))
			snap = append(snap, end...)
			if err := os.WriteFile(filepath.Join(dir, snapName(3)), snap, 0o600); err != nil {
				t.Fatal(err)
			}
			_, rec := openT(t, dir, Options{})
			requireOrphans(t, rec.Orphans, idsOf("n", 0, 2), entriesOf("n", 2))
			if len(rec.Damage) != 1 || rec.Damage[0].File != snapName(3) {
				t.Fatalf("got damage %v, want one in %s", rec.Damage, snapName(3))
			}
		})
	}
}

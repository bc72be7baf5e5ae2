package journal

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Errors. Opened returns them; the engine refuses the upgrade (503) or goes
// on without crash safety, its choice.
var (
	// ErrLocked: another live process holds the directory.
	ErrLocked = errors.New("journal: directory locked")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("journal: closed")
	// ErrFull: more than Options.MaxPending bytes wait for the writer (the
	// disk does not keep up).
	ErrFull = errors.New("journal: write queue full")
	// ErrEntry: an Entry field is empty (ConnID) or over its Max* size.
	ErrEntry = errors.New("journal: entry field empty or too long")
)

// Sync is the fsync policy. It decides what a power cut can lose; a killed
// process (kill -9, OOM, panic) loses nothing written under any policy,
// because written data is in the kernel's page cache.
type Sync int

const (
	// SyncNever never fsyncs segments (snapshots and directory changes are
	// always fsynced, off the write path). A power cut loses what the
	// kernel had not written back yet: by default up to about 30 s of
	// records (vm.dirty_expire_centisecs). Cost: none on the write path.
	SyncNever Sync = iota
	// SyncInterval fsyncs the current segment every Options.SyncEvery from
	// a goroutine of its own, concurrently with writes; "written" still
	// means written, not synced. A power cut loses up to SyncEvery of
	// records. Cost: one fdatasync per interval, off the write path.
	SyncInterval
	// SyncAlways fsyncs each batch before reporting it written, so a 101
	// follows a durable record. A power cut loses nothing reported
	// written. Cost: an fdatasync per batch on the write path (batches
	// grow to absorb it, but each upgrade waits one fsync: ~0.05 ms on
	// NVMe with a power-loss-protected cache, milliseconds on plain SSDs,
	// 10 ms and more on spinning disks or network volumes).
	SyncAlways
)

func (s Sync) String() string {
	switch s {
	case SyncNever:
		return "never"
	case SyncInterval:
		return "interval"
	case SyncAlways:
		return "always"
	}
	return fmt.Sprintf("Sync(%d)", int(s))
}

// ParseSync parses a -journal-sync value: "never", "always", or a
// duration (SyncInterval with that period, e.g. "1s").
func ParseSync(s string) (Sync, time.Duration, error) {
	switch s {
	case "never", "":
		return SyncNever, 0, nil
	case "always":
		return SyncAlways, 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, 0, fmt.Errorf("journal: sync policy %q: want never, always or a positive duration", s)
	}
	return SyncInterval, d, nil
}

// Options configure a Journal. The zero value is usable.
type Options struct {
	// Sync is the fsync policy; SyncNever by default.
	Sync Sync
	// SyncEvery is SyncInterval's period; 1 s when zero.
	SyncEvery time.Duration
	// SegmentSize is the size at which the writer starts a new segment;
	// 4 MiB when zero. Compaction works on whole sealed segments, so the
	// directory holds about two snapshots' worth (the live set) plus two
	// segments.
	SegmentSize int64
	// MaxPending bounds the bytes recorded but not yet handed to write(2);
	// Opened fails with ErrFull above it. 16 MiB when zero (about 200,000
	// opened records).
	MaxPending int
	// OnWritten, if set, is called on the writer goroutine after every
	// batch with the sequence number up to which records are now written
	// (and fsynced under SyncAlways). With err != nil the journal broke (a
	// write failed): no record above Written() will ever be written,
	// whatever its number, and Opened fails from now on. It must not
	// block: post a task to the event loops that wait, and return.
	OnWritten func(upTo uint64, err error)
	// Logger receives recovery warnings and write errors; zap.NewNop()
	// when nil.
	Logger *zap.Logger
}

// Entry is what a connection's DELETE needs. Opened copies it; the
// entries of Recovered are the caller's to keep.
type Entry struct {
	ConnID   []byte // Wsbridge-Connection-Id, 1..MaxConnID bytes
	ClientID []byte // the ClientId (the path after /), up to MaxClientID bytes
	XFF      []byte // the X-Forwarded-For value sent with every call, up to MaxXFF bytes
}

// Recovered is what Open found of a predecessor.
type Recovered struct {
	// Orphans are the connections recorded as opened and never as gone,
	// ordered by connection id. They stay recorded in this journal until
	// the caller records each one Gone, after its DELETE is answered.
	Orphans []Entry
	// Damage lists the files (at most one place per file) where reading
	// stopped early: a torn or corrupt tail, a bad CRC. Records after the
	// damage in that file are lost: an opened one means a missing DELETE,
	// a gone one a repeated DELETE. Open has already logged each as a
	// warning; it never fails because of damage.
	Damage []*Damage
}

// Stats are counters for metrics; all cumulative since Open.
type Stats struct {
	Records     uint64 // records recorded (Opened and Gone)
	Written     uint64 // sequence number written up to
	Batches     uint64 // write(2) batches
	Bytes       uint64 // bytes written to segments
	Syncs       uint64 // fsyncs of segments
	Compactions uint64 // snapshots written after Open
	Full        uint64 // Opened calls refused with ErrFull
}

// Journal records connections opened and gone. Opened and Gone may be
// called from any goroutine, at once (every event loop); they append to a
// shared in-memory batch under a mutex held for a copy of a few dozen
// bytes and never touch the disk. One writer goroutine hands whole batches
// to write(2) (group commit); a compactor goroutine rewrites the live set
// as a snapshot when sealed segments outweigh it.
type Journal struct {
	dir  string
	opts Options
	log  *zap.Logger
	lock *os.File

	// mu guards the batch and the fields below it; writers hold it only to
	// append, the writer goroutine only to swap batches.
	mu       sync.Mutex
	buf      []byte // records not yet handed to write(2)
	seq      uint64 // sequence number of the last record appended
	kicked   bool   // the writer has been signalled since its last swap
	closing  bool
	err      error // sticky write error
	flushed  sync.Cond
	flushers atomic.Int32

	written atomic.Uint64
	kick    chan struct{} // cap 1: there is a batch to write

	// writer goroutine's own state.
	spare   []byte
	segNum  uint64
	segSize int64
	file    *os.File

	// fileMu hands files from the writer to the syncer (SyncInterval).
	fileMu     sync.Mutex
	unsynced   []*os.File // sealed segments not fsynced yet
	dirChanged bool       // a segment was created since the last directory fsync

	// compactor state; curSeg and snap are read by the compactor.
	curSeg   atomic.Uint64
	snapNum  uint64 // compactor-owned after Open
	snapSize int64
	compact  chan struct{}

	stats struct {
		records, batches, bytes, syncs, compactions, full atomic.Uint64
	}

	stop sync.WaitGroup // compactor and syncer
	done chan struct{}  // closed when the writer has exited
	quit chan struct{}  // closed by Close for the compactor and syncer
}

// Open locks dir (creating it if needed), reads what a predecessor left,
// rewrites it as a snapshot of the live set, and starts a new segment. The
// orphans it returns are in that snapshot: a crash before their Gone finds
// them again. Damage is a warning in Recovered, never an error; errors are
// a held lock (ErrLocked), or a directory that cannot be read or written.
func Open(dir string, opts Options) (*Journal, Recovered, error) {
	var rec Recovered
	if opts.SyncEvery <= 0 {
		opts.SyncEvery = time.Second
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 4 << 20
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 16 << 20
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("journal")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, rec, fmt.Errorf("journal: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, rec, err
	}
	j := &Journal{
		dir: dir, opts: opts, log: log, lock: lock,
		kick:    make(chan struct{}, 1),
		compact: make(chan struct{}, 1),
		done:    make(chan struct{}),
		quit:    make(chan struct{}),
	}
	j.flushed.L = &j.mu
	if err := j.recover(&rec); err != nil {
		_ = lock.Close()
		return nil, Recovered{}, err
	}
	if err := j.startSegment(j.snapNum + 1); err != nil {
		_ = lock.Close()
		return nil, Recovered{}, err
	}
	if err := syncDir(dir); err != nil {
		_ = j.file.Close()
		_ = lock.Close()
		return nil, Recovered{}, fmt.Errorf("journal: %w", err)
	}
	go j.writer()
	j.stop.Add(1)
	go j.compactor()
	if opts.Sync == SyncInterval {
		j.stop.Add(1)
		go j.syncer()
	}
	return j, rec, nil
}

// recover loads the newest snapshot and every later segment, writes the
// live set as a snapshot numbered after the last segment, and removes what
// it covers. A crash at any point leaves either the old files or the new
// snapshot (renamed into place only once complete and fsynced), so the
// orphans are never lost between two processes.
func (j *Journal) recover(rec *Recovered) error {
	l, err := listDir(j.dir)
	if err != nil {
		return err
	}
	var snap uint64
	if len(l.snaps) > 0 {
		snap = l.snaps[len(l.snaps)-1]
	}
	var segs []uint64
	for _, n := range l.segs {
		if n > snap {
			segs = append(segs, n)
		}
	}
	live, dmgs, err := load(j.dir, snap, segs)
	if err != nil {
		return err
	}
	for _, d := range dmgs {
		j.log.Warn("journal damaged; read up to the damage",
			zap.String("dir", j.dir), zap.String("file", d.File),
			zap.Int64("offset", d.Offset), zap.String("reason", d.Reason))
	}
	num := snap
	if len(segs) > 0 {
		num = segs[len(segs)-1]
	}
	if num == 0 && len(live) == 0 && len(dmgs) == 0 {
		// A new directory: nothing to snapshot.
		j.snapNum = 0
		rec.Orphans = []Entry{}
		return removeCovered(j.dir, l, 0)
	}
	size, err := writeSnapshot(j.dir, num, live)
	if err != nil {
		return err
	}
	if err := removeCovered(j.dir, l, num); err != nil {
		j.log.Warn("journal: cannot remove old files", zap.Error(err))
	}
	j.snapNum, j.snapSize = num, size
	rec.Orphans = orphans(live)
	rec.Damage = dmgs
	if len(rec.Orphans) > 0 {
		j.log.Info("journal: connections left open by a previous process",
			zap.String("dir", j.dir), zap.Int("orphans", len(rec.Orphans)))
	}
	return nil
}

// Opened records that connection e is accepted and returns the record's
// sequence number: the caller may send the 101 once Written() ≥ seq (or
// OnWritten reported it). It copies e, never blocks on the disk and does
// not allocate once the batch buffers have grown to the load.
func (j *Journal) Opened(e Entry) (seq uint64, err error) {
	if len(e.ConnID) == 0 || len(e.ConnID) > MaxConnID || len(e.ClientID) > MaxClientID || len(e.XFF) > MaxXFF {
		return 0, ErrEntry
	}
	j.mu.Lock()
	switch {
	case j.err != nil:
		err = j.err
	case j.closing:
		err = ErrClosed
	case len(j.buf) >= j.opts.MaxPending:
		j.stats.full.Add(1)
		err = ErrFull
	}
	if err != nil {
		j.mu.Unlock()
		return 0, err
	}
	j.buf = appendOpened(j.buf, e)
	j.seq++
	seq = j.seq
	wake := !j.kicked
	j.kicked = true
	j.mu.Unlock()
	j.stats.records.Add(1)
	if wake {
		j.wake()
	}
	return seq, nil
}

// Gone records that connection connID's DELETE was answered (a live
// connection's or an orphan's). Nothing waits for it to be written: if the
// process dies first, the next one sends that DELETE again. It is ignored
// after Close or a write error, and for an invalid id.
func (j *Journal) Gone(connID []byte) {
	if len(connID) == 0 || len(connID) > MaxConnID {
		return
	}
	j.mu.Lock()
	if j.err != nil || j.closing {
		j.mu.Unlock()
		return
	}
	// Not bounded by MaxPending: a Gone follows an Opened that was, and is
	// smaller.
	j.buf = appendGone(j.buf, connID)
	j.seq++
	wake := !j.kicked
	j.kicked = true
	j.mu.Unlock()
	j.stats.records.Add(1)
	if wake {
		j.wake()
	}
}

func (j *Journal) wake() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// Written returns the sequence number up to which records are written (in
// the page cache; fsynced too under SyncAlways).
func (j *Journal) Written() uint64 { return j.written.Load() }

// Err returns the write error that broke the journal, or nil.
func (j *Journal) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// Flush waits until every record appended before it is written. It
// blocks: for tests and shutdown, never for an event loop.
func (j *Journal) Flush() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	target := j.seq
	if !j.kicked {
		j.kicked = true
		j.wake()
	}
	j.flushers.Add(1)
	defer j.flushers.Add(-1)
	for j.written.Load() < target && j.err == nil {
		select {
		case <-j.done:
			if j.written.Load() < target && j.err == nil {
				return ErrClosed
			}
			return j.err
		default:
		}
		j.flushed.Wait()
	}
	return j.err
}

// Stats returns the counters.
func (j *Journal) Stats() Stats {
	return Stats{
		Records:     j.stats.records.Load(),
		Written:     j.written.Load(),
		Batches:     j.stats.batches.Load(),
		Bytes:       j.stats.bytes.Load(),
		Syncs:       j.stats.syncs.Load(),
		Compactions: j.stats.compactions.Load(),
		Full:        j.stats.full.Load(),
	}
}

// Dir returns the journal's directory.
func (j *Journal) Dir() string { return j.dir }

// Close writes what is pending, fsyncs the current segment (whatever the
// policy: a clean stop is durable), stops the goroutines and releases the
// lock. Opened fails with ErrClosed afterwards; Gone is ignored. It returns
// the journal's write error, if any.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closing {
		j.mu.Unlock()
		<-j.done
		return j.Err()
	}
	j.closing = true
	j.mu.Unlock()
	j.wake()
	<-j.done
	close(j.quit)
	j.stop.Wait()
	var errs []error
	j.fileMu.Lock()
	for _, f := range j.unsynced {
		errs = append(errs, f.Sync(), f.Close())
	}
	j.unsynced = nil
	j.fileMu.Unlock()
	if j.file != nil {
		errs = append(errs, j.file.Sync(), j.file.Close())
	}
	errs = append(errs, syncDir(j.dir), j.lock.Close())
	j.mu.Lock()
	errs = append(errs, j.err)
	j.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("journal: close %s: %w", j.dir, err)
	}
	return nil
}

package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// This file holds the journal's goroutines: the writer (group commit and
// segment rotation), the syncer (SyncInterval) and the compactor.

// writer is the one goroutine that writes segments: it swaps the batch for
// its spare buffer and writes it whole.
func (j *Journal) writer() {
	defer close(j.done)
	for {
		<-j.kick
		for {
			j.mu.Lock()
			buf, upTo, closing := j.buf, j.seq, j.closing
			j.buf = j.spare[:0]
			j.kicked = false
			broken := j.err != nil
			j.mu.Unlock()
			if len(buf) == 0 || broken {
				j.spare = buf[:0]
				if closing {
					return
				}
				break
			}
			err := j.writeBatch(buf)
			j.spare = buf[:0]
			if err != nil {
				j.fail(err, upTo)
				continue
			}
			j.written.Store(upTo)
			j.wakeFlushers()
			if cb := j.opts.OnWritten; cb != nil {
				cb(upTo, nil)
			}
		}
	}
}

func (j *Journal) wakeFlushers() {
	if j.flushers.Load() > 0 {
		j.mu.Lock()
		j.flushed.Broadcast()
		j.mu.Unlock()
	}
}

// fail breaks the journal after a write error: the records up to upTo and
// everything appended later are lost, and Opened fails from now on.
func (j *Journal) fail(err error, upTo uint64) {
	j.mu.Lock()
	j.err = fmt.Errorf("journal: %s: %w", j.dir, err)
	j.buf = j.buf[:0]
	err = j.err
	j.flushed.Broadcast()
	j.mu.Unlock()
	j.log.Error("journal write failed; crash-safe DELETE is off until restart", zap.Error(err))
	if cb := j.opts.OnWritten; cb != nil {
		cb(upTo, err)
	}
}

// Test hooks, set by tests before Open: testHookWrite runs before each
// batch's write(2), testHookCompact on the compactor before it writes a
// snapshot and again before it removes what the snapshot covers.
var testHookWrite, testHookCompact func()

func (j *Journal) writeBatch(buf []byte) error {
	if testHookWrite != nil {
		testHookWrite()
	}
	n, err := j.file.Write(buf)
	j.segSize += int64(n)
	j.stats.bytes.Add(uint64(n))
	j.stats.batches.Add(1)
	if err != nil {
		return fmt.Errorf("write %s: %w", segName(j.segNum), err)
	}
	if j.opts.Sync == SyncAlways {
		if err := fdatasync(j.file); err != nil {
			return fmt.Errorf("fsync %s: %w", segName(j.segNum), err)
		}
		j.stats.syncs.Add(1)
	}
	if j.segSize >= j.opts.SegmentSize {
		if err := j.rotate(); err != nil {
			return err
		}
	}
	return nil
}

// rotate seals the current segment and starts the next; the compactor is
// told.
func (j *Journal) rotate() error {
	old := j.file
	if err := j.startSegment(j.segNum + 1); err != nil {
		return err
	}
	switch j.opts.Sync {
	case SyncAlways:
		// Batches were fsynced; the new name must survive too.
		if err := syncDir(j.dir); err != nil {
			return fmt.Errorf("fsync %s: %w", j.dir, err)
		}
		_ = old.Close()
	case SyncInterval:
		j.fileMu.Lock()
		j.unsynced = append(j.unsynced, old)
		j.dirChanged = true
		j.fileMu.Unlock()
	default:
		_ = old.Close()
	}
	select {
	case j.compact <- struct{}{}:
	default:
	}
	return nil
}

// startSegment creates segment n with its header and makes it current.
func (j *Journal) startSegment(n uint64) error {
	name := filepath.Join(j.dir, segName(n))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("journal: create %s: %w", name, err)
	}
	hdr := appendHeader(make([]byte, 0, headerSize), kindSegment)
	if _, err := f.Write(hdr); err != nil {
		_ = f.Close()
		return fmt.Errorf("journal: write %s: %w", name, err)
	}
	j.fileMu.Lock()
	j.file = f
	j.fileMu.Unlock()
	j.segNum, j.segSize = n, headerSize
	j.curSeg.Store(n)
	return nil
}

// syncer fsyncs under SyncInterval: the current segment, the sealed ones
// (then closes them) and the directory after a rotation.
func (j *Journal) syncer() {
	defer j.stop.Done()
	t := time.NewTicker(j.opts.SyncEvery)
	defer t.Stop()
	for {
		select {
		case <-j.quit:
			return
		case <-t.C:
		}
		j.fileMu.Lock()
		cur, sealed, dirty := j.file, j.unsynced, j.dirChanged
		j.unsynced, j.dirChanged = nil, false
		j.fileMu.Unlock()
		for _, f := range sealed {
			if err := fdatasync(f); err != nil {
				j.log.Warn("journal fsync failed", zap.String("file", f.Name()), zap.Error(err))
			}
			_ = f.Close()
			j.stats.syncs.Add(1)
		}
		if dirty {
			if err := syncDir(j.dir); err != nil {
				j.log.Warn("journal directory fsync failed", zap.String("dir", j.dir), zap.Error(err))
			}
		}
		// cur may be sealed and handed over meanwhile; it is closed only by
		// this goroutine (next tick) or by Close after this one stopped.
		if err := fdatasync(cur); err != nil {
			j.log.Warn("journal fsync failed", zap.String("file", cur.Name()), zap.Error(err))
		}
		j.stats.syncs.Add(1)
	}
}

// compactor writes a new snapshot when the segments sealed since the last
// one outweigh it (dead records outweigh live ones), then removes what it
// covers. It reads only sealed, immutable files, so writers never wait
// for it.
func (j *Journal) compactor() {
	defer j.stop.Done()
	for {
		select {
		case <-j.quit:
			return
		case <-j.compact:
		}
		if err := j.compactOnce(); err != nil {
			j.log.Warn("journal compaction failed; retried at the next segment", zap.Error(err))
		}
	}
}

func (j *Journal) compactOnce() error {
	cur := j.curSeg.Load()
	l, err := listDir(j.dir)
	if err != nil {
		return err
	}
	var sealed []uint64
	var sealedSize int64
	for _, n := range l.segs {
		if n > j.snapNum && n < cur {
			fi, err := os.Stat(filepath.Join(j.dir, segName(n)))
			if err != nil {
				return fmt.Errorf("journal: %w", err)
			}
			sealed = append(sealed, n)
			sealedSize += fi.Size()
		}
	}
	if len(sealed) == 0 || sealedSize < j.snapSize {
		return nil
	}
	live, dmgs, err := load(j.dir, j.snapNum, sealed)
	if err != nil {
		return err
	}
	for _, d := range dmgs {
		j.log.Warn("journal damaged; compacted up to the damage", zap.String("file", d.File),
			zap.Int64("offset", d.Offset), zap.String("reason", d.Reason))
	}
	num := sealed[len(sealed)-1]
	if testHookCompact != nil {
		testHookCompact()
	}
	size, err := writeSnapshot(j.dir, num, live)
	if err != nil {
		return err
	}
	if testHookCompact != nil {
		testHookCompact()
	}
	j.snapNum, j.snapSize = num, size
	j.stats.compactions.Add(1)
	// Only the files the snapshot covers: l was listed before it, and the
	// current segment is above num.
	return removeCovered(j.dir, listing{segs: sealed, snaps: l.snaps}, num)
}

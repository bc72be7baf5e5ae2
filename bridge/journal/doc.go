// Package journal is wsbridge's crash-safe DELETE journal (-journal <dir>):
// it records every accepted connection before its 101 and marks it gone
// once its DELETE is answered, so that a process started after a crash
// (kill -9, the OOM killer, a panic, a power cut) finds the connections its
// predecessor left open and sends their DELETEs.
//
// # Use
//
//	j, rec, err := journal.Open(dir, journal.Options{OnWritten: wake})
//	// err: the directory is held by another live process (ErrLocked), or
//	// cannot be read or written. Damage is never an error: rec.Damage.
//	for _, o := range rec.Orphans { /* DELETE o.ClientID, 1006, o.ConnID, o.XFF */ }
//
//	seq, err := j.Opened(journal.Entry{ConnID: id, ClientID: cid, XFF: xff}) // on the event loop
//	// ... send the 101 once j.Written() >= seq (OnWritten tells when)
//	j.Gone(id) // after the DELETE is answered, live or orphan
//	j.Close()  // after the drain
//
// # Goroutines and cost
//
// Opened and Gone are safe from any goroutine at once (every event loop).
// They validate, take one mutex for the copy of a few dozen bytes into a
// shared batch, and return: no disk, no allocation once the two batch
// buffers have grown to the load (TestRecordAllocs), a non-blocking
// channel send to wake the writer at most once per batch. One writer
// goroutine swaps the batch for its spare buffer and hands it to write(2)
// whole (group commit): under load a write carries hundreds of records;
// idle, each record is its own write. It then publishes the sequence number
// written up to (Written) and calls Options.OnWritten. The cost per
// connection is one Opened and one Gone record of about 45 and 25 bytes;
// measured on the 2-core test VM: 160–280 ns per pair sustained with two
// goroutines recording while the writer writes on the same two cores
// (BenchmarkOpenedGone), and about 2.7 µs of process CPU per record
// written unbatched (an idle bridge; BenchmarkWritten/never), against
// about 140 µs of bridge CPU per upgrade (BENCHMARKS.md): a few percent
// at worst, less under load where records share a write. Opened refuses
// with ErrFull when Options.MaxPending bytes wait for a disk that does not
// keep up (the engine answers 503) rather than grow memory.
//
// # Wiring it into the engine (the order that keeps the promise)
//
//  1. At start, before the listener accepts: Open. A held lock is fatal
//     (two -reuseport processes need two directories). Register every
//     orphan's ClientId as "awaiting its DELETE" in the registry, so a
//     client reconnecting meanwhile holds its GET as on the live path and
//     lifecycles never overlap at the backend. Then listen, and submit the
//     orphans' DELETEs (Wsbridge-Close-Code 1006, empty body, the orphan's
//     Wsbridge-Connection-Id and X-Forwarded-For, retried like any
//     DELETE) at the rate the backend pool allows, while serving.
//  2. Upgrade: the backend's GET answers ok → on the connection's loop,
//     seq, err := j.Opened(entry); on err refuse with 503 (or, by choice,
//     go on without crash safety). Park the connection in the loop's FIFO
//     of (seq, conn); seqs from one loop only grow, so the FIFO is sorted.
//     OnWritten(upTo) runs on the writer goroutine: for each loop whose
//     oldest waiting seq ≤ upTo and that has no wake-up pending, post one
//     task (EventLoop.Execute). That task pops every waiter with seq ≤
//     j.Written() and sends its 101. One wake-up per loop per batch, no
//     goroutine or allocation per connection. With err != nil (the
//     journal broke), the task fails every waiter above Written (503) and
//     later upgrades get Opened's error. Recording only after ok means
//     every orphan is a connection the backend accepted: no DELETE is
//     ever sent for a connection the backend does not know. The record
//     may be issued in parallel with a replaced connection's DELETE; the
//     101 waits for both.
//  3. Close, whatever ended the connection (client, heartbeat, kick,
//     replacement, drain, a client gone before its 101): send its DELETE
//     as now; when the backend answers it (any answer that ends the
//     retries as answered), j.Gone(connID). Not before: a crash between
//     the two sends that DELETE again in the next process, which is the
//     one duplicate the design allows ("answered in the instant of the
//     crash"; the instant is the DELETE's answer plus one batch, ~µs).
//     A DELETE given up after its retries stays recorded: the next start
//     sends it again (the engine may instead call Gone and count it lost).
//  4. Orphans: when an orphan's DELETE is answered, j.Gone(orphan.ConnID)
//     and release its ClientId in the registry (waking a held GET).
//  5. Drain/shutdown: after the last DELETE is answered and recorded,
//     j.Close (it writes what is pending and fsyncs).
//
// Why the replay is crash-safe: Open writes the orphans into a new,
// fsynced snapshot of this journal before it removes the predecessor's
// files, so from the moment Open returns they are recorded here exactly as
// a live connection is; each leaves only through its own Gone, written
// after its DELETE is answered. A crash during the replay (TestReplayCrashReplay
// kills two processes in a row) leaves a journal whose live set is the
// orphans not yet answered plus the second process's own connections;
// the third process sends exactly those. A crash inside Open itself leaves
// either the old files or the complete new snapshot (renamed into place
// only once written and fsynced) or both, which read the same
// (TestCrashAfterSnapshot).
//
// # Durability
//
// "Written" means handed to write(2): in the kernel's page cache. A killed
// process (kill -9, OOM, panic, the Go runtime's fatal errors) loses
// nothing written, under every policy: the kernel writes the page cache
// back whatever happens to the process. A power cut or kernel crash loses
// what the kernel had not written back yet. Options.Sync chooses that:
//
//   - SyncNever (default): no fsync on the write path; a power cut loses
//     up to the kernel's writeback delay (vm.dirty_expire_centisecs,
//     30 s by default) of records: missing DELETEs for connections opened
//     in that window, repeated ones for those gone in it.
//   - SyncInterval (-journal-sync 1s): a goroutine of its own fdatasyncs
//     the current segment every interval, concurrently with writes, so the
//     101 never waits for it; a power cut loses up to one interval.
//   - SyncAlways (-journal-sync always): each batch is fdatasynced before
//     it is reported written; a power cut loses nothing reported written.
//     Every upgrade waits for an fsync (BenchmarkWritten/always: 0.2–1 ms
//     on the test VM's virtual disk; NVMe with power-loss protection tens
//     of µs, spinning disks and network volumes 10 ms and more); batches
//     grow to absorb concurrent upgrades (BenchmarkBatches).
//
// Snapshots and directory changes are always fsynced (off the write path)
// before the files they replace are removed, under every policy: a power
// cut during compaction never loses the live set.
//
// # Compaction
//
// The writer starts a new segment when the current one reaches
// Options.SegmentSize (4 MiB; a batch is never split, so a segment can
// exceed it by one batch). A compactor goroutine, woken at each rotation,
// merges the newest snapshot and the sealed segments into a new snapshot
// of the live set once the sealed segments are at least as large as that
// snapshot (the dead records outweigh the live ones), then removes what it
// replaced. It reads only sealed, immutable files, so writers never wait
// for it; it reads back every byte written once (the B/op of the
// benchmarks). The directory settles at about two snapshots plus a
// segment or two: 1,000,000 connects and closes around 10,000 open
// connections leave about 4.6 MB (TestSizeAfterMillion). Memory: the
// journal keeps no per-connection state between compactions; a
// compaction holds the live set in a map while it runs.
//
// # Damage
//
// Every record carries a CRC-32C. Reading a file stops at the first
// damage — a torn tail after a power cut, a bad CRC, a length out of
// bounds — keeps everything before it, and reports it (Recovered.Damage,
// and a warning through the logger); the next segments are still read.
// Damage never makes Open fail: a lost opened record is a missing DELETE,
// a lost gone record a repeated one. The rewritten snapshot drops the
// damaged part, so the next start is clean.
//
// # Directory lock
//
// Open takes an exclusive flock(2) on <dir>/LOCK and writes its pid into
// it. The kernel releases the lock when the process dies, however it dies,
// so a dead predecessor never blocks a restart; a live holder (a second
// -reuseport process given the same directory, or the same process twice)
// makes Open fail with ErrLocked naming the directory and the holder's
// pid. The directory must be on a local file system (flock over NFS is not
// reliable).
//
// # On-disk format
//
// Files, numbers in fixed-width hexadecimal:
//
//	LOCK                  the lock file; holds the holder's pid
//	seg-<n>.wal           segment n: records appended by the writer, in order
//	snap-<n>.snap         snapshot: the live set after every segment ≤ n
//	snap-<n>.snap.tmp     a snapshot being written; ignored and removed at Open
//
// Open reads the newest snapshot, then every segment numbered above it, in
// order; segments at or below it are leftovers and removed.
//
// Each file is an 8-byte header, "WSBJ", version 1, kind (0 segment, 1
// snapshot), two zero bytes, then records:
//
//	length  uint32 little endian, 1..maxBody: the body's size
//	crc     uint32 little endian: CRC-32C (Castagnoli) of the 4 length bytes and the body
//	body    type byte, then
//	        1 opened: uvarint+bytes connection id (1..255), ClientId (..1024), X-Forwarded-For (..1024)
//	        2 gone:   uvarint+bytes connection id
//	        3 end:    uvarint count of opened records in the snapshot (its last record)
//
// A snapshot holds only opened records and ends with its end record;
// one without it, or with a count that differs, is damaged. Applying a
// segment's records in order to a set — add on opened, remove on gone — and
// the snapshot before them gives the live set.
package journal

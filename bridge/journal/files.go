package journal

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// File names in the journal directory. Numbers are hexadecimal, fixed
// width, so that names sort like numbers.
const (
	lockName   = "LOCK"
	segPrefix  = "seg-"
	segSuffix  = ".wal"
	snapPrefix = "snap-"
	snapSuffix = ".snap"
	tmpSuffix  = ".tmp"
)

func segName(n uint64) string  { return fmt.Sprintf("%s%016x%s", segPrefix, n, segSuffix) }
func snapName(n uint64) string { return fmt.Sprintf("%s%016x%s", snapPrefix, n, snapSuffix) }

// listing is what a directory holds, numbers ascending.
type listing struct {
	segs, snaps []uint64
	tmps        []string
}

func parseNum(name, prefix, suffix string) (uint64, bool) {
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
		return 0, false
	}
	n, err := strconv.ParseUint(name[len(prefix):len(name)-len(suffix)], 16, 64)
	return n, err == nil
}

func listDir(dir string) (listing, error) {
	var l listing
	ents, err := os.ReadDir(dir)
	if err != nil {
		return l, fmt.Errorf("journal: list %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if n, ok := parseNum(name, segPrefix, segSuffix); ok {
			l.segs = append(l.segs, n)
		} else if n, ok := parseNum(name, snapPrefix, snapSuffix); ok {
			l.snaps = append(l.snaps, n)
		} else if strings.HasSuffix(name, tmpSuffix) {
			l.tmps = append(l.tmps, name)
		}
	}
	slices.Sort(l.segs)
	slices.Sort(l.snaps)
	return l, nil
}

// liveSet maps a connection id to the body of its opened record: the
// connections recorded as opened and not (yet) as gone.
type liveSet map[string][]byte

func (s liveSet) apply(r *record) {
	switch r.typ {
	case recOpened:
		s[string(r.conn)] = r.body
	case recGone:
		delete(s, string(r.conn))
	}
}

// loadFile applies the intact records of one file to live and reports its
// damage, if any. A snapshot must end with its end record. The bodies kept
// in live point into the file's buffer.
func loadFile(dir, name string, wantKind byte, live liveSet) (*Damage, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", filepath.Join(dir, name), err)
	}
	var opened, ended uint64
	var endCount uint64
	var afterEnd bool
	kind, dmg := readRecords(data, func(r *record) {
		if ended > 0 {
			afterEnd = true
		}
		if r.typ == recEnd {
			ended++
			endCount = r.count
			return
		}
		if r.typ == recOpened {
			opened++
		}
		live.apply(r)
	})
	if dmg == nil && kind != wantKind {
		dmg = &Damage{Offset: 4, Reason: fmt.Sprintf("file kind %d, want %d", kind, wantKind)}
	}
	if dmg == nil && wantKind == kindSnapshot {
		switch {
		case ended == 0:
			dmg = &Damage{Offset: int64(len(data)), Reason: "snapshot without its end record"}
		case ended > 1 || afterEnd || endCount != opened:
			dmg = &Damage{Offset: int64(len(data)), Reason: fmt.Sprintf("snapshot end record counts %d, read %d", endCount, opened)}
		}
	}
	if dmg != nil {
		dmg.File = name
	}
	return dmg, nil
}

// load reads snapshot snap (0: none) and then segments segs in order.
func load(dir string, snap uint64, segs []uint64) (liveSet, []*Damage, error) {
	live := make(liveSet)
	var dmgs []*Damage
	if snap != 0 {
		dmg, err := loadFile(dir, snapName(snap), kindSnapshot, live)
		if err != nil {
			return nil, nil, err
		}
		if dmg != nil {
			dmgs = append(dmgs, dmg)
		}
	}
	for _, n := range segs {
		dmg, err := loadFile(dir, segName(n), kindSegment, live)
		if err != nil {
			return nil, nil, err
		}
		if dmg != nil {
			dmgs = append(dmgs, dmg)
		}
	}
	return live, dmgs, nil
}

// writeSnapshot writes live as snapshot num: to a temporary file, fsynced,
// renamed into place, directory fsynced. It returns the file's size. Only
// after it returns may the files it covers be removed.
func writeSnapshot(dir string, num uint64, live liveSet) (int64, error) {
	tmp := filepath.Join(dir, snapName(num)+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, fmt.Errorf("journal: snapshot: %w", err)
	}
	keys := make([]string, 0, len(live))
	for k := range live {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic files; cheap beside the write
	buf := appendHeader(make([]byte, 0, 256<<10), kindSnapshot)
	var size int64
	flush := func() error {
		n, err := f.Write(buf)
		size += int64(n)
		buf = buf[:0]
		return err
	}
	for _, k := range keys {
		buf = appendBody(buf, live[k])
		if len(buf) >= 240<<10 {
			if err = flush(); err != nil {
				break
			}
		}
	}
	if err == nil {
		buf = appendEnd(buf, uint64(len(keys)))
		err = flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, snapName(num)))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return 0, fmt.Errorf("journal: snapshot %s: %w", snapName(num), err)
	}
	return size, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeCovered removes the snapshots other than keep and the segments
// numbered at most keep: what snapshot keep covers.
func removeCovered(dir string, l listing, keep uint64) error {
	var errs []error
	rm := func(name string) {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, n := range l.snaps {
		if n != keep {
			rm(snapName(n))
		}
	}
	for _, n := range l.segs {
		if n <= keep {
			rm(segName(n))
		}
	}
	for _, t := range l.tmps {
		rm(t)
	}
	return errors.Join(errs...)
}

// orphans turns a live set into entries, each in its own allocation,
// ordered by connection id.
func orphans(live liveSet) []Entry {
	out := make([]Entry, 0, len(live))
	for _, body := range live {
		r, ok := parseBody(slices.Clone(body))
		if !ok || r.typ != recOpened {
			continue // not produced by apply
		}
		out = append(out, r.entry)
	}
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(string(a.ConnID), string(b.ConnID)) })
	return out
}

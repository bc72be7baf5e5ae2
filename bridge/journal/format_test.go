package journal

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

// testEntry is connection i of a process whose id prefix is p.
func testEntry(p string, i int) Entry {
	return Entry{
		ConnID:   fmt.Appendf(nil, "%s-%x", p, i),
		ClientID: fmt.Appendf(nil, "user%d", i),
		XFF:      fmt.Appendf(nil, "10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
	}
}

// segmentOf encodes records as a segment file and returns it with the end
// offset of every record.
func segmentOf(recs ...func([]byte) []byte) (data []byte, ends []int) {
	data = appendHeader(nil, kindSegment)
	for _, r := range recs {
		data = r(data)
		ends = append(ends, len(data))
	}
	return data, ends
}

func opened(e Entry) func([]byte) []byte { return func(b []byte) []byte { return appendOpened(b, e) } }
func gone(id string) func([]byte) []byte {
	return func(b []byte) []byte { return appendGone(b, []byte(id)) }
}
func ended(n uint64) func([]byte) []byte { return func(b []byte) []byte { return appendEnd(b, n) } }
func readAll(data []byte) ([]record, byte, *Damage) {
	var out []record
	kind, dmg := readRecords(data, func(r *record) {
		c := *r
		c.body = slices.Clone(r.body)
		out = append(out, c)
	})
	return out, kind, dmg
}

func TestFormatRoundTrip(t *testing.T) {
	long := Entry{ConnID: bytes.Repeat([]byte{'c'}, MaxConnID), ClientID: bytes.Repeat([]byte{'u'}, MaxClientID), XFF: bytes.Repeat([]byte{'x'}, MaxXFF)}
	empty := Entry{ConnID: []byte("a")}
	data, _ := segmentOf(opened(testEntry("p", 1)), opened(long), gone("p-1"), opened(empty), ended(7))
	recs, kind, dmg := readAll(data)
	if dmg != nil || kind != kindSegment {
		t.Fatalf("got kind %d, damage %v; want segment, none", kind, dmg)
	}
	if len(recs) != 5 {
		t.Fatalf("got %d records, want 5", len(recs))
	}
	for i, want := range []Entry{testEntry("p", 1), long, {}, empty} {
		if i == 2 {
			if recs[2].typ != recGone || string(recs[2].conn) != "p-1" {
				t.Fatalf("record 2: got type %d id %q, want gone p-1", recs[2].typ, recs[2].conn)
			}
			continue
		}
		got := recs[i].entry
		if recs[i].typ != recOpened || !bytes.Equal(got.ConnID, want.ConnID) || !bytes.Equal(got.ClientID, want.ClientID) || !bytes.Equal(got.XFF, want.XFF) {
			t.Fatalf("record %d: got %q %q %q, want %q %q %q", i, got.ConnID, got.ClientID, got.XFF, want.ConnID, want.ClientID, want.XFF)
		}
	}
	if recs[4].typ != recEnd || recs[4].count != 7 {
		t.Fatalf("record 4: got type %d count %d, want end 7", recs[4].typ, recs[4].count)
	}
	if !bytes.Equal(data[headerSize:], slices.Concat(appendBody(nil, recs[0].body), appendBody(nil, recs[1].body),
		appendBody(nil, recs[2].body), appendBody(nil, recs[3].body), appendBody(nil, recs[4].body))) {
		t.Fatal("re-encoding the records read does not give the same bytes")
	}
}

// TestFormatTornTail cuts a file at every byte offset: every record that
// ends before the cut is read, the rest is damage, reported at the first
// byte not read.
func TestFormatTornTail(t *testing.T) {
	var recs []func([]byte) []byte
	for i := range 6 {
		recs = append(recs, opened(testEntry("torn", i)))
		if i%2 == 1 {
			recs = append(recs, gone(fmt.Sprintf("torn-%x", i-1)))
		}
	}
	data, ends := segmentOf(recs...)
	for cut := 0; cut <= len(data); cut++ {
		got, _, dmg := readAll(data[:cut])
		want := 0
		for _, e := range ends {
			if e <= cut {
				want++
			}
		}
		if len(got) != want {
			t.Fatalf("cut at %d: got %d records, want %d", cut, len(got), want)
		}
		atBoundary := cut == headerSize || slices.Contains(ends, cut)
		switch {
		case atBoundary && dmg != nil:
			t.Fatalf("cut at %d (a record boundary): got damage %v, want none", cut, dmg)
		case !atBoundary && dmg == nil:
			t.Fatalf("cut at %d: got no damage, want some", cut)
		case !atBoundary && cut >= headerSize:
			wantOff := headerSize
			if want > 0 {
				wantOff = ends[want-1]
			}
			if dmg.Offset != int64(wantOff) {
				t.Fatalf("cut at %d: got damage at %d, want %d", cut, dmg.Offset, wantOff)
			}
		}
	}
}

// TestFormatCorruptMiddle flips each byte of a middle record: the records
// before it are read, the damage is reported at its start, nothing after
// it is read.
func TestFormatCorruptMiddle(t *testing.T) {
	data, ends := segmentOf(opened(testEntry("m", 0)), opened(testEntry("m", 1)), opened(testEntry("m", 2)), gone("m-0"))
	for off := ends[0]; off < ends[1]; off++ {
		bad := slices.Clone(data)
		bad[off] ^= 0x20
		got, _, dmg := readAll(bad)
		if len(got) != 1 || string(got[0].conn) != "m-0" {
			t.Fatalf("byte %d flipped: got %d records, want only the first", off, len(got))
		}
		if dmg == nil || dmg.Offset != int64(ends[0]) {
			t.Fatalf("byte %d flipped: got damage %v, want at %d", off, dmg, ends[0])
		}
	}
}

func TestFormatBadHeader(t *testing.T) {
	data, _ := segmentOf(opened(testEntry("h", 0)))
	for _, off := range []int{0, 3, 4, 5} {
		bad := slices.Clone(data)
		bad[off] = 0xff
		if got, _, dmg := readAll(bad); len(got) != 0 || dmg == nil || dmg.Offset != 0 {
			t.Fatalf("header byte %d bad: got %d records, damage %v; want none, damage at 0", off, len(got), dmg)
		}
	}
}

// FuzzRead feeds arbitrary bytes to the record reader: it never panics,
// the damage offset is within the input and at a frame boundary, and the
// records it read, encoded again, read back identically and without damage.
func FuzzRead(f *testing.F) {
	seg, _ := segmentOf(opened(testEntry("f", 1)), gone("f-1"), opened(Entry{ConnID: []byte("x")}))
	snap := appendHeader(nil, kindSnapshot)
	snap = appendEnd(appendOpened(snap, testEntry("s", 2)), 1)
	f.Add(seg)
	f.Add(snap)
	f.Add(seg[:len(seg)-3])
	f.Add([]byte("WSBJ\x01\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, kind, dmg := readAll(data)
		end := len(data)
		if dmg != nil {
			if dmg.Offset < 0 || dmg.Offset > int64(len(data)) {
				t.Fatalf("damage offset %d outside [0, %d]", dmg.Offset, len(data))
			}
			end = int(dmg.Offset)
		}
		if len(recs) == 0 {
			return
		}
		again := appendHeader(nil, kind)
		for _, r := range recs {
			again = appendBody(again, r.body)
		}
		if !bytes.Equal(again, data[:end]) {
			t.Fatalf("the records read re-encode to %d bytes, want the %d bytes read", len(again), end)
		}
		recs2, _, dmg2 := readAll(again)
		if dmg2 != nil || len(recs2) != len(recs) {
			t.Fatalf("re-read: got %d records, damage %v; want %d, none", len(recs2), dmg2, len(recs))
		}
	})
}

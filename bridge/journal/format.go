package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// On-disk format (see the package doc for the whole picture).
//
// A file is an 8-byte header followed by records:
//
//	header: "WSBJ" | version (1) | kind (0 segment, 1 snapshot) | 0 | 0
//	record: length u32 LE | crc u32 LE | body (length bytes)
//	crc:    CRC-32C (Castagnoli) of the length field's 4 bytes and the body
//	body:   type (1 byte), then
//	  opened (1):   uvarint len, connection id | uvarint len, ClientId | uvarint len, X-Forwarded-For
//	  gone (2):     uvarint len, connection id
//	  end (3):      uvarint count of opened records before it (last record of a snapshot)
const (
	fileMagic   = "WSBJ"
	fileVersion = 1
	headerSize  = 8
	frameSize   = 8 // length + crc

	kindSegment  = 0
	kindSnapshot = 1

	recOpened = 1
	recGone   = 2
	recEnd    = 3
)

// Size limits of an Entry's fields. The connection id and the ClientId are
// short by construction (a ClientId is at most 128 bytes); X-Forwarded-For may
// carry a trusted proxy's chain.
const (
	MaxConnID   = 255
	MaxClientID = 1024
	MaxXFF      = 1024
	// maxBody bounds a record body; a length field above it is damage.
	maxBody = 1 + 3*2 + MaxConnID + MaxClientID + MaxXFF
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendHeader(dst []byte, kind byte) []byte {
	dst = append(dst, fileMagic...)
	return append(dst, fileVersion, kind, 0, 0)
}

// appendFrame appends a record whose body is dst[start+frameSize:] once the
// caller has appended it: reserve with beginFrame, finish with endFrame.
func beginFrame(dst []byte) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0), start
}

func endFrame(dst []byte, start int) []byte {
	body := dst[start+frameSize:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	crc := crc32.Update(0, castagnoli, dst[start:start+4])
	crc = crc32.Update(crc, castagnoli, body)
	binary.LittleEndian.PutUint32(dst[start+4:], crc)
	return dst
}

func appendField(dst, f []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(f)))
	return append(dst, f...)
}

// appendOpened appends an opened record. The caller has checked the sizes.
func appendOpened(dst []byte, e Entry) []byte {
	dst, start := beginFrame(dst)
	dst = append(dst, recOpened)
	dst = appendField(dst, e.ConnID)
	dst = appendField(dst, e.ClientID)
	dst = appendField(dst, e.XFF)
	return endFrame(dst, start)
}

// appendOpenedBody appends an opened record whose body (type byte included)
// was read from another file.
func appendBody(dst, body []byte) []byte {
	dst, start := beginFrame(dst)
	dst = append(dst, body...)
	return endFrame(dst, start)
}

func appendGone(dst, connID []byte) []byte {
	dst, start := beginFrame(dst)
	dst = append(dst, recGone)
	dst = appendField(dst, connID)
	return endFrame(dst, start)
}

func appendEnd(dst []byte, count uint64) []byte {
	dst, start := beginFrame(dst)
	dst = append(dst, recEnd)
	dst = binary.AppendUvarint(dst, count)
	return endFrame(dst, start)
}

// Damage describes where a file stops being readable. Everything before
// Offset was read; nothing from Offset on was.
type Damage struct {
	File   string // base name, empty for a bare buffer
	Offset int64
	Reason string
}

func (d *Damage) Error() string {
	return fmt.Sprintf("journal: %s: unreadable from byte %d: %s", d.File, d.Offset, d.Reason)
}

// record is one decoded record; its slices point into the buffer read and
// stay valid as long as that buffer.
type record struct {
	typ   byte
	body  []byte // the whole body, type byte included
	conn  []byte // opened, gone
	count uint64 // end
	entry Entry  // opened
}

func readField(b []byte) (f, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

// parseBody decodes a body whose CRC matched. It reports false for a body
// that no writer of this version produces.
func parseBody(body []byte) (r record, ok bool) {
	if len(body) == 0 {
		return r, false
	}
	r.typ, r.body = body[0], body
	rest := body[1:]
	switch r.typ {
	case recOpened:
		var c, id, xff []byte
		if c, rest, ok = readField(rest); !ok || len(c) == 0 || len(c) > MaxConnID {
			return r, false
		}
		if id, rest, ok = readField(rest); !ok || len(id) > MaxClientID {
			return r, false
		}
		if xff, rest, ok = readField(rest); !ok || len(xff) > MaxXFF {
			return r, false
		}
		r.conn = c
		r.entry = Entry{ConnID: c, ClientID: id, XFF: xff}
	case recGone:
		var c []byte
		if c, rest, ok = readField(rest); !ok || len(c) == 0 || len(c) > MaxConnID {
			return r, false
		}
		r.conn = c
	case recEnd:
		var k int
		r.count, k = binary.Uvarint(rest)
		if k <= 0 {
			return r, false
		}
		rest = rest[k:]
	default:
		return r, false
	}
	return r, len(rest) == 0
}

// readRecords calls fn for every intact record of data (a whole file, its
// header included) in order and returns the file's kind. It stops at the
// first damage — a short or absent header, a torn frame, a length out of
// bounds, a CRC mismatch, a body it cannot parse — and returns it with the
// offset of the first byte it could not use; a file that ends exactly after
// a record has no damage. fn's record points into data.
func readRecords(data []byte, fn func(r *record)) (kind byte, dmg *Damage) {
	if len(data) < headerSize {
		return 0, &Damage{Offset: 0, Reason: "short header"}
	}
	if string(data[:4]) != fileMagic || data[4] != fileVersion || data[5] > kindSnapshot || data[6] != 0 || data[7] != 0 {
		return 0, &Damage{Offset: 0, Reason: "bad header"}
	}
	kind = data[5]
	off := headerSize
	var r record
	for off < len(data) {
		if len(data)-off < frameSize {
			return kind, &Damage{Offset: int64(off), Reason: "torn record frame"}
		}
		n := binary.LittleEndian.Uint32(data[off:])
		if n == 0 || n > maxBody {
			return kind, &Damage{Offset: int64(off), Reason: fmt.Sprintf("record length %d out of bounds", n)}
		}
		if uint64(len(data)-off-frameSize) < uint64(n) {
			return kind, &Damage{Offset: int64(off), Reason: "torn record body"}
		}
		body := data[off+frameSize : off+frameSize+int(n)]
		crc := crc32.Update(0, castagnoli, data[off:off+4])
		crc = crc32.Update(crc, castagnoli, body)
		if crc != binary.LittleEndian.Uint32(data[off+4:]) {
			return kind, &Damage{Offset: int64(off), Reason: "CRC mismatch"}
		}
		var ok bool
		if r, ok = parseBody(body); !ok {
			return kind, &Damage{Offset: int64(off), Reason: "malformed record body"}
		}
		fn(&r)
		off += frameSize + int(n)
	}
	return kind, nil
}

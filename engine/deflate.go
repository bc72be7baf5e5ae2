package engine

import (
	"io"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"

	"github.com/wsbridge/wsbridge/protocol"
)

// permessage-deflate (RFC 7692) with no context takeover on either side:
// each message is compressed or inflated on its own, so a connection keeps
// no compressor state and an idle one costs what it costs without -deflate.
// The compressor and the inflater are the loop's (a pool of one per loop:
// only the loop's goroutine uses them, so they need no lock), made on first
// use. A compressed message that arrives in pieces is gathered in
// loop.zpart until its last frame, then inflated whole into a buffer
// bounded by -max-message.

// deflateTail ends every compressed message before it is inflated: the
// 00 00 ff ff the sender took off (RFC 7692 §7.2.2), then an empty final
// stored block, so a well-formed message ends in io.EOF.
const deflateTail = "\x00\x00\xff\xff\x01\x00\x00\xff\xff"

var (
	// errInflateTooBig is a compressed message that inflates to more than
	// -max-message bytes (1009); inflating stops at the limit.
	errInflateTooBig = &protocol.CloseError{Code: ws.StatusMessageTooBig, Reason: "message too big"}
	// errInflate is compressed data that does not inflate. It is 1002 (a
	// broken permessage-deflate stream breaks the extension's framing, like
	// a bad RSV bit), not 1007 (which the bridge keeps for text that is not
	// UTF-8).
	errInflate = &protocol.CloseError{Code: ws.StatusProtocolError, Reason: "invalid compressed data"}
)

// zstate is a loop's compression state.
type zstate struct {
	r   io.ReadCloser // flate reader, Reset for each message
	src zsource
	out []byte // inflated message; valid until the next inflate

	w   *flate.Writer
	dst zsink

	// part holds the compressed bytes of messages that arrive in pieces,
	// per connection, until their last frame (deleted then, or when the
	// connection's intake ends).
	part  map[*conn][]byte
	spare []byte // a part buffer to reuse, so a steady flow does not allocate
}

// zsource reads a message's compressed bytes, then deflateTail. It is an
// io.ByteReader so flate needs no bufio of its own.
type zsource struct {
	p    []byte
	tail int
}

func (s *zsource) reset(p []byte) { s.p, s.tail = p, 0 }

func (s *zsource) Read(b []byte) (int, error) {
	if len(s.p) > 0 {
		n := copy(b, s.p)
		s.p = s.p[n:]
		return n, nil
	}
	if s.tail == len(deflateTail) {
		return 0, io.EOF
	}
	n := copy(b, deflateTail[s.tail:])
	s.tail += n
	return n, nil
}

func (s *zsource) ReadByte() (byte, error) {
	if len(s.p) > 0 {
		b := s.p[0]
		s.p = s.p[1:]
		return b, nil
	}
	if s.tail == len(deflateTail) {
		return 0, io.EOF
	}
	b := deflateTail[s.tail]
	s.tail++
	return b, nil
}

// zsink collects a compressor's output.
type zsink struct{ b []byte }

func (s *zsink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// keepInflated is the largest buffer (inflated message, gathered
// fragments, compressed output) a loop keeps between messages, so messages
// up to about 128 KiB flow without allocating; a bigger one (up to
// -max-message) is let go after use. It is per loop, never per connection.
const keepInflated = 256 << 10

// inflate inflates a whole compressed message p into at most limit bytes.
// The result is valid until the next inflate on the loop.
func (z *zstate) inflate(p []byte, limit int64) ([]byte, error) {
	z.src.reset(p)
	if z.r == nil {
		z.r = flate.NewReader(&z.src)
	} else if err := z.r.(flate.Resetter).Reset(&z.src, nil); err != nil {
		return nil, errInflate
	}
	out := z.out[:0]
	if cap(out) == 0 {
		out = make([]byte, 0, 4<<10)
	}
	for {
		if len(out) == cap(out) {
			if int64(len(out)) > limit {
				z.keep(out)
				return nil, errInflateTooBig
			}
			// Grow, but never past limit+1: one byte over is enough to know.
			n := min(int64(cap(out))*2, limit+1)
			out = append(out[:cap(out)], make([]byte, int(n)-cap(out))...)[:len(out)]
		}
		n, err := z.r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if int64(len(out)) > limit {
			z.keep(out)
			return nil, errInflateTooBig
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			z.keep(out)
			return nil, errInflate
		}
	}
	z.keep(out)
	return out, nil
}

func (z *zstate) keep(out []byte) {
	if cap(out) > keepInflated {
		z.out = nil
		return
	}
	z.out = out[:0]
}

// deflate compresses p as one message with the loop's compressor (reset
// first: no context takeover) and returns the bytes to send with RSV1,
// valid until the next deflate on the loop; nil when compressing does not
// make p smaller.
func (z *zstate) deflate(p []byte, level int) []byte {
	z.dst.b = z.dst.b[:0]
	if z.w == nil {
		w, err := flate.NewWriter(&z.dst, level)
		if err != nil {
			return nil
		}
		z.w = w
	} else {
		z.w.Reset(&z.dst)
	}
	if _, err := z.w.Write(p); err != nil {
		return nil
	}
	if err := z.w.Flush(); err != nil {
		return nil
	}
	b := z.dst.b
	// A sync flush ends in an empty stored block, 00 00 ff ff, which the
	// receiver adds back (RFC 7692 §7.2.1).
	if len(b) < 4 || string(b[len(b)-4:]) != "\x00\x00\xff\xff" {
		return nil
	}
	b = b[:len(b)-4]
	if cap(z.dst.b) > keepInflated {
		defer func() { z.dst.b = nil }()
	}
	if len(b) >= len(p) {
		return nil
	}
	return b
}

// zs returns the loop's compression state, made on first use.
func (l *loop) zs() *zstate {
	if l.z == nil {
		l.z = &zstate{part: make(map[*conn][]byte)}
	}
	return l.z
}

// compressedChunk takes a chunk of a compressed message (ev.Compressed) and,
// on its last chunk, returns the inflated message, checked as UTF-8 when it
// is text. Until then it returns nil, nil and keeps the chunk.
func (c *conn) compressedChunk(ev *protocol.Event) ([]byte, error) {
	z := c.l.zs()
	p := ev.Payload
	if !(ev.First && ev.Fin) {
		acc, ok := z.part[c]
		if !ok {
			acc, z.spare = z.spare[:0], nil
		}
		acc = append(acc, p...)
		if !ev.Fin {
			z.part[c] = acc
			return nil, nil
		}
		delete(z.part, c)
		p = acc
		if cap(acc) <= keepInflated {
			defer func() { z.spare = acc[:0] }()
		}
	}
	out, err := z.inflate(p, c.l.srv.cfg.MaxMessage)
	if err != nil {
		return nil, err
	}
	if ev.OpCode == ws.OpText && !utf8.Valid(out) {
		return nil, protocol.ErrInvalidUTF8
	}
	return out, nil
}

// dropCompressed forgets a compressed message in progress (the intake ended).
func (c *conn) dropCompressed() {
	if c.l.z != nil && c.dec.Deflate {
		delete(c.l.z.part, c)
	}
}

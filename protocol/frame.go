package protocol

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// CloseError is a protocol violation that ends a connection with Code.
//
// The decoder only ever returns the package-level sentinels below, so callers
// may compare errors with == or errors.Is, and returning one does not allocate.
type CloseError struct {
	// Code is the RFC 6455 status code to close the connection with.
	Code ws.StatusCode
	// Reason is a short lower-case description that fits a close frame.
	Reason string
}

// Error returns the reason with the package prefix.
func (e *CloseError) Error() string { return "protocol: " + e.Reason }

// Sentinel errors returned by Decoder.Next. Each one is a *CloseError whose
// Code is the status to close the connection with.
var (
	// ErrUnmasked is a client frame without a masking key (1002).
	ErrUnmasked = &CloseError{ws.StatusProtocolError, "unmasked client frame"}
	// ErrReservedBits is a frame with RSV2 or RSV3 set, or with RSV1 set
	// other than on the first frame of a data message with
	// Decoder.Deflate (permessage-deflate negotiated) (1002).
	ErrReservedBits = &CloseError{ws.StatusProtocolError, "reserved bits set"}
	// ErrReservedOpCode is a frame with opcode 3-7 or 0xB-0xF (1002).
	ErrReservedOpCode = &CloseError{ws.StatusProtocolError, "reserved opcode"}
	// ErrControlTooBig is a control frame with more than 125 payload bytes (1002).
	ErrControlTooBig = &CloseError{ws.StatusProtocolError, "control frame too big"}
	// ErrControlFragmented is a control frame without FIN (1002).
	ErrControlFragmented = &CloseError{ws.StatusProtocolError, "fragmented control frame"}
	// ErrUnexpectedContinuation is a continuation frame while no message is
	// in progress (1002).
	ErrUnexpectedContinuation = &CloseError{ws.StatusProtocolError, "unexpected continuation frame"}
	// ErrExpectedContinuation is a text or binary frame while a fragmented
	// message is in progress (1002).
	ErrExpectedContinuation = &CloseError{ws.StatusProtocolError, "expected continuation frame"}
	// ErrBadLength is a 64-bit payload length with the most significant bit
	// set (1002).
	ErrBadLength = &CloseError{ws.StatusProtocolError, "invalid payload length"}
	// ErrClosePayload is a close frame with a 1-byte payload (1002).
	ErrClosePayload = &CloseError{ws.StatusProtocolError, "invalid close payload"}
	// ErrCloseCode is a close frame whose code may not appear on the wire,
	// see ValidCloseCode (1002).
	ErrCloseCode = &CloseError{ws.StatusProtocolError, "invalid close code"}
	// ErrInvalidUTF8 is a text message or close reason that is not valid
	// UTF-8 (1007). Text messages are checked as their bytes arrive, so the
	// error comes as soon as no continuation could make them valid.
	ErrInvalidUTF8 = &CloseError{ws.StatusInvalidFramePayloadData, "invalid utf-8"}
	// ErrTooBig is a message whose fragments add up to more than
	// Decoder.MaxMessage bytes (1009). It is detected from the frame header,
	// before the payload arrives.
	ErrTooBig = &CloseError{ws.StatusMessageTooBig, "message too big"}
)

// EventKind tells what an Event holds.
type EventKind uint8

// Kinds of events returned by Decoder.Next.
const (
	// EventNone means more bytes are needed; it never consumes bytes.
	EventNone EventKind = iota
	// EventData is a chunk of a data message's payload.
	EventData
	// EventPing is a whole ping frame.
	EventPing
	// EventPong is a whole pong frame.
	EventPong
	// EventClose is a whole, validated close frame.
	EventClose
)

// String returns the name of the kind, for logs and test failures.
func (k EventKind) String() string {
	switch k {
	case EventNone:
		return "none"
	case EventData:
		return "data"
	case EventPing:
		return "ping"
	case EventPong:
		return "pong"
	case EventClose:
		return "close"
	}
	return "unknown"
}

// Event is one decoded item. Payload and Reason alias the slice given to
// Decoder.Next and stay valid as long as the bytes of that slice are not
// overwritten (for a gnet connection buffer: until they are discarded).
type Event struct {
	// Kind is what the event holds.
	Kind EventKind
	// OpCode is, for EventData, ws.OpText or ws.OpBinary: the opcode of the
	// message, never ws.OpContinuation.
	OpCode ws.OpCode
	// Payload holds the unmasked payload bytes: a chunk of a data message,
	// a ping or pong payload, or the raw close payload.
	Payload []byte
	// First reports, for EventData, that this chunk starts a message.
	First bool
	// Fin reports, for EventData, that this chunk completes the message.
	Fin bool
	// Code is, for EventClose, the status code; ws.StatusNoStatusRcvd (1005)
	// when the close payload is empty.
	Code ws.StatusCode
	// Reason is, for EventClose, the close reason (validated UTF-8).
	Reason []byte
	// Compressed reports, for EventData, that the message's first frame had
	// RSV1 (permessage-deflate): Payload is compressed bytes, not checked
	// as UTF-8; the caller inflates the whole message and checks it.
	Compressed bool
}

// Decoder decodes client-to-server frames incrementally from byte slices.
//
// The zero value is ready to use (MaxMessage 0 means no limit). A Decoder is
// small (40 bytes on 64-bit platforms, so one can be embedded per connection)
// and not safe for concurrent use: all calls for a connection must come from
// the goroutine (event loop) that owns it.
type Decoder struct {
	// MaxMessage is the largest message, in bytes summed over its fragments,
	// that Next accepts; a larger one is ErrTooBig. 0 or less means no limit.
	MaxMessage int64

	remaining int64     // payload bytes of the current data frame not yet delivered
	msgLen    int64     // payload bytes of the current message announced so far
	mask      [4]byte   // masking key of the current data frame
	maskOff   uint8     // bytes of the current data frame unmasked so far, mod 4
	msgOp     ws.OpCode // opcode of the message in progress, 0 when none
	inFrame   bool      // a data frame header was consumed and its payload is pending
	frameFin  bool      // the current data frame has FIN
	first     bool      // the next data chunk starts the message
	utf8      utf8State // validation state of the text message in progress
	errIdx    uint8     // 1 + index in closeErrors of the error that broke d, 0 when none

	// Deflate allows RSV1 on the first frame of a data message: the
	// connection negotiated permessage-deflate, and such a message is
	// delivered with Event.Compressed. Without it RSV1 is ErrReservedBits.
	Deflate bool

	compressed bool // the message in progress is compressed
}

// closeErrors lists the sentinels so a Decoder can remember its error in one byte.
var closeErrors = [...]*CloseError{
	ErrUnmasked, ErrReservedBits, ErrReservedOpCode, ErrControlTooBig,
	ErrControlFragmented, ErrUnexpectedContinuation, ErrExpectedContinuation,
	ErrBadLength, ErrClosePayload, ErrCloseCode, ErrInvalidUTF8, ErrTooBig,
}

// fail breaks d with e and returns it, so that later calls return it again.
func (d *Decoder) fail(e *CloseError) (Event, int, error) {
	for i, c := range closeErrors {
		if c == e {
			d.errIdx = uint8(i + 1)
		}
	}
	return Event{}, 0, e
}

// Reset returns d to its zero state, keeping MaxMessage and Deflate.
func (d *Decoder) Reset() {
	*d = Decoder{MaxMessage: d.MaxMessage, Deflate: d.Deflate}
}

// InMessage reports whether a message is in progress: a fragment without FIN
// was seen, or part of a data frame's payload is still to come.
func (d *Decoder) InMessage() bool { return d.msgOp != 0 }

// Next decodes from p, the bytes not yet consumed, and returns one event and
// the number of bytes of p consumed. The caller drops those n bytes and calls
// Next again with the rest (plus any bytes received since) until it gets
// EventNone. Next unmasks payload bytes in place in p; the returned Payload
// and Reason alias p (see Event).
//
// Partial frames are normal. A data frame's payload is delivered as it
// arrives, so one frame may yield several EventData chunks: only the first
// chunk of a message has First, and only the last chunk of its FIN frame has
// Fin. Once a data frame's header is complete, Next consumes it and keeps the
// frame state (remaining length, mask and mask offset) itself, so the caller
// never keeps more than a partial header (at most 14 bytes) unconsumed. When
// p holds a complete data frame header but none of its payload, the event is
// an EventData with an empty Payload; an empty data frame likewise yields one
// EventData with an empty Payload, so an empty message or an empty final
// fragment still reports First and Fin.
//
// Control frames (ping, pong, close) are returned only whole: while one is
// incomplete, Next returns EventNone with n == 0 and the caller keeps the
// bytes and calls again with more. Control frames may be interleaved between
// the fragments of a message. EventNone always comes with n == 0: it is
// returned when p is empty or holds only part of a header or control frame.
//
// On error, the error is one of the *CloseError sentinels of this package
// and n is 0; d is then unusable (every later call returns the same error)
// and the connection must be closed with err.(*CloseError).Code.
func (d *Decoder) Next(p []byte) (ev Event, n int, err error) {
	if d.errIdx != 0 {
		return Event{}, 0, closeErrors[d.errIdx-1]
	}
	if d.inFrame {
		if len(p) == 0 {
			return Event{}, 0, nil
		}
		return d.payload(p, 0)
	}
	if len(p) < 2 {
		return Event{}, 0, nil
	}
	b0, b1 := p[0], p[1]
	fin := b0&0x80 != 0
	op := ws.OpCode(b0 & 0x0f)
	rsv1 := b0&0x40 != 0
	switch {
	case b0&0x30 != 0:
		return d.fail(ErrReservedBits)
	case rsv1 && (!d.Deflate || op == ws.OpContinuation || op.IsControl()):
		return d.fail(ErrReservedBits)
	case op.IsReserved():
		return d.fail(ErrReservedOpCode)
	case b1&0x80 == 0:
		return d.fail(ErrUnmasked)
	}
	length := int64(b1 & 0x7f)
	control := op.IsControl()
	if control {
		if !fin {
			return d.fail(ErrControlFragmented)
		}
		if length > ws.MaxControlFramePayloadSize {
			return d.fail(ErrControlTooBig)
		}
	} else {
		if op == ws.OpContinuation && d.msgOp == 0 {
			return d.fail(ErrUnexpectedContinuation)
		}
		if op != ws.OpContinuation && d.msgOp != 0 {
			return d.fail(ErrExpectedContinuation)
		}
	}
	hdr := 6
	switch length {
	case 126:
		hdr = 8
		if len(p) < hdr {
			return Event{}, 0, nil
		}
		length = int64(binary.BigEndian.Uint16(p[2:4]))
	case 127:
		hdr = 14
		if len(p) < hdr {
			return Event{}, 0, nil
		}
		l := binary.BigEndian.Uint64(p[2:10])
		if l>>63 != 0 {
			return d.fail(ErrBadLength)
		}
		length = int64(l)
	}
	if len(p) < hdr {
		return Event{}, 0, nil
	}
	mask := [4]byte(p[hdr-4 : hdr])

	if control {
		end := hdr + int(length)
		if len(p) < end {
			return Event{}, 0, nil
		}
		payload := p[hdr:end:end]
		ws.Cipher(payload, mask, 0)
		switch op {
		case ws.OpPing:
			return Event{Kind: EventPing, Payload: payload}, end, nil
		case ws.OpPong:
			return Event{Kind: EventPong, Payload: payload}, end, nil
		}
		ev := Event{Kind: EventClose, Payload: payload, Code: ws.StatusNoStatusRcvd}
		switch {
		case len(payload) == 1:
			return d.fail(ErrClosePayload)
		case len(payload) >= 2:
			ev.Code = ws.StatusCode(binary.BigEndian.Uint16(payload))
			if !ValidCloseCode(ev.Code) {
				return d.fail(ErrCloseCode)
			}
			ev.Reason = payload[2:]
			if !utf8.Valid(ev.Reason) {
				return d.fail(ErrInvalidUTF8)
			}
		}
		return ev, end, nil
	}

	if d.MaxMessage > 0 && length > d.MaxMessage-d.msgLen {
		return d.fail(ErrTooBig)
	}
	if op != ws.OpContinuation {
		d.msgOp = op
		d.msgLen = 0
		d.first = true
		d.utf8 = utf8State{}
		d.compressed = rsv1
	}
	d.msgLen += length
	d.remaining = length
	d.mask = mask
	d.maskOff = 0
	d.frameFin = fin
	d.inFrame = true
	return d.payload(p[hdr:], hdr)
}

// payload delivers the next chunk of the current data frame from p; hdr is
// the number of header bytes consumed before p in this call.
func (d *Decoder) payload(p []byte, hdr int) (Event, int, error) {
	k := len(p)
	if int64(k) > d.remaining {
		k = int(d.remaining)
	}
	chunk := p[:k:k] // capped: appending to a Payload never overwrites the next frame
	ws.Cipher(chunk, d.mask, int(d.maskOff))
	d.maskOff = uint8((int(d.maskOff) + k) & 3)
	d.remaining -= int64(k)
	ev := Event{Kind: EventData, OpCode: d.msgOp, Payload: chunk, First: d.first, Compressed: d.compressed}
	if d.remaining == 0 {
		d.inFrame = false
		ev.Fin = d.frameFin
	}
	if d.msgOp == ws.OpText && !d.compressed {
		if !d.utf8.valid(chunk) || (ev.Fin && d.utf8.need != 0) {
			return d.fail(ErrInvalidUTF8)
		}
	}
	d.first = false
	if ev.Fin {
		d.msgOp = 0
		d.msgLen = 0
	}
	return ev, hdr + k, nil
}

// utf8State is the incremental UTF-8 validator of a text message: it carries
// an incomplete trailing sequence from one chunk to the next.
type utf8State struct {
	need   uint8 // continuation bytes still expected
	lo, hi uint8 // range of the next expected byte
}

// leads maps a leading byte to the sequence length (0 when the byte cannot
// start a multi-byte sequence) and the range of the byte that follows it.
var leads = func() (t [256]struct{ size, lo, hi uint8 }) {
	for b := 0xC2; b <= 0xDF; b++ {
		t[b] = struct{ size, lo, hi uint8 }{2, 0x80, 0xBF}
	}
	for b := 0xE0; b <= 0xEF; b++ {
		t[b] = struct{ size, lo, hi uint8 }{3, 0x80, 0xBF}
	}
	t[0xE0].lo = 0xA0 // no overlong 3-byte forms
	t[0xED].hi = 0x9F // no surrogates
	for b := 0xF0; b <= 0xF4; b++ {
		t[b] = struct{ size, lo, hi uint8 }{4, 0x80, 0xBF}
	}
	t[0xF0].lo = 0x90 // no overlong 4-byte forms
	t[0xF4].hi = 0x8F // nothing above U+10FFFF
	return t
}()

// valid consumes p and reports whether the bytes seen so far are a prefix of
// valid UTF-8. The caller checks s.need == 0 at the end of the message.
func (s *utf8State) valid(p []byte) bool {
	for s.need > 0 && len(p) > 0 {
		if p[0] < s.lo || p[0] > s.hi {
			return false
		}
		s.need--
		s.lo, s.hi = 0x80, 0xBF
		p = p[1:]
	}
	if len(p) == 0 {
		return true
	}
	// Find a multi-byte sequence cut by the end of p: its leading byte is
	// among the last three bytes.
	cut := len(p)
	for j := len(p) - 1; j >= 0 && j >= len(p)-3; j-- {
		b := p[j]
		if b < 0x80 {
			break
		}
		if b >= 0xC0 {
			if size := int(leads[b].size); size != 0 && j+size > len(p) {
				cut = j
			}
			break
		}
	}
	if !utf8.Valid(p[:cut]) {
		return false
	}
	if cut == len(p) {
		return true
	}
	l := leads[p[cut]]
	s.need, s.lo, s.hi = l.size-1, l.lo, l.hi
	for _, b := range p[cut+1:] {
		if b < s.lo || b > s.hi {
			return false
		}
		s.need--
		s.lo, s.hi = 0x80, 0xBF
	}
	return true
}

// ValidCloseCode reports whether code may appear in a close frame on the
// wire: 1000-1003, 1007-1014 and 3000-4999.
func ValidCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// AppendFrameHeader appends a server-to-client (unmasked, no RSV bits) frame
// header of 2, 4 or 10 bytes to dst and returns the extended slice. A
// negative length is written as 0.
func AppendFrameHeader(dst []byte, op ws.OpCode, fin bool, length int) []byte {
	b0 := byte(op & 0x0f)
	if fin {
		b0 |= 0x80
	}
	return appendLength(append(dst, b0), 0, length)
}

// appendLength appends the second header byte (with bit, the mask flag) and
// the extended length.
func appendLength(dst []byte, bit byte, length int) []byte {
	switch {
	case length < 0:
		return append(dst, bit)
	case length < 126:
		return append(dst, bit|byte(length))
	case length <= 0xffff:
		return append(dst, bit|126, byte(length>>8), byte(length))
	}
	return binary.BigEndian.AppendUint64(append(dst, bit|127), uint64(length))
}

// AppendFrame appends a whole unmasked, unfragmented frame with payload to
// dst and returns the extended slice. It does not keep payload.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = AppendFrameHeader(dst, op, true, len(payload))
	return append(dst, payload...)
}

// MaxCloseReason is the longest close reason that fits a control frame.
const MaxCloseReason = ws.MaxControlFramePayloadSize - 2

// AppendClose appends a close frame with code and reason to dst and returns
// the extended slice. The reason is cut to MaxCloseReason (123) bytes at a
// UTF-8 boundary, so a valid UTF-8 reason stays valid. Code 0 or 1005
// (ws.StatusNoStatusRcvd) means an empty payload, and the reason is then left
// out.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if code == 0 || code == ws.StatusNoStatusRcvd {
		return append(dst, 0x80|byte(ws.OpClose), 0)
	}
	if len(reason) > MaxCloseReason {
		cut := MaxCloseReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	dst = append(dst, 0x80|byte(ws.OpClose), byte(2+len(reason)), byte(code>>8), byte(code))
	return append(dst, reason...)
}

// AppendClientFrame appends a masked client-to-server frame to dst and
// returns the extended slice; it is meant for tests and the load generator.
// payload is copied, not modified.
func AppendClientFrame(dst []byte, op ws.OpCode, fin bool, mask [4]byte, payload []byte) []byte {
	b0 := byte(op & 0x0f)
	if fin {
		b0 |= 0x80
	}
	dst = appendLength(append(dst, b0), 0x80, len(payload))
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

package protocol_test

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/protocol"
)

// testMask is the masking key of the RFC 6455 examples (section 5.7).
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// fr builds one masked client frame.
func fr(op ws.OpCode, fin bool, payload string) []byte {
	return protocol.AppendClientFrame(nil, op, fin, testMask, []byte(payload))
}

// cat joins frames into one stream.
func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// closeBody is a close payload with code and reason.
func closeBody(code uint16, reason string) string {
	return string([]byte{byte(code >> 8), byte(code)}) + reason
}

// withByte returns frame with f applied to its byte i.
func withByte(frame []byte, i int, f func(byte) byte) []byte {
	frame = bytes.Clone(frame)
	frame[i] = f(frame[i])
	return frame
}

// header returns only the header of a masked client frame with an n-byte payload.
func header(op ws.OpCode, fin bool, n int) []byte {
	f := protocol.AppendClientFrame(nil, op, fin, testMask, make([]byte, n))
	return f[:len(f)-n]
}

// frameCase is one client byte stream and what decoding it must give. The
// table drives TestDecode, BenchmarkDecode (bench cases) and the fuzz corpus.
type frameCase struct {
	name  string
	in    []byte
	max   int64    // Decoder.MaxMessage
	want  []string // see eventLog
	err   error    // a sentinel, or nil
	bench bool
}

var (
	text16   = strings.Repeat("0123456789abcdef", 1)
	bin1K    = strings.Repeat("\x00\x01\x02\xfe\xff\x80\x7f\x10", 128)
	bin64K   = strings.Repeat("\x00\x01\x02\xfe\xff\x80\x7f\x10", 8192)
	text200  = strings.Repeat("héllo wörld ", 15) // 16-bit length, multibyte runes
	text65K  = strings.Repeat("€", 21845)         // 65535 bytes: largest 16-bit length
	longText = strings.Repeat("x", 1000)
)

var frameCases = []frameCase{
	{name: "small text 16 B", in: fr(ws.OpText, true, text16), want: []string{"text:" + text16}, bench: true},
	{name: "1 KiB binary", in: fr(ws.OpBinary, true, bin1K), want: []string{show("binary", bin1K)}, bench: true},
	{name: "64 KiB binary", in: fr(ws.OpBinary, true, bin64K), want: []string{show("binary", bin64K)}, bench: true},
	{
		name: "fragmented",
		in: cat(fr(ws.OpText, false, "Hel"), fr(ws.OpPing, true, "p1"), fr(ws.OpContinuation, false, "lo, "),
			fr(ws.OpContinuation, true, "world")),
		want:  []string{"ping:p1", "text:Hello, world"},
		bench: true,
	},
	{name: "125 byte text", in: fr(ws.OpText, true, longText[:125]), want: []string{"text:" + longText[:125]}},
	{name: "126 byte text 16-bit length", in: fr(ws.OpText, true, longText[:126]), want: []string{"text:" + longText[:126]}},
	{name: "16-bit length multibyte", in: fr(ws.OpText, true, text200), want: []string{show("text", text200)}},
	{name: "largest 16-bit length", in: fr(ws.OpText, true, text65K), want: []string{show("text", text65K)}},
	{
		name: "several frames in one slice",
		in: cat(fr(ws.OpText, true, "a"), fr(ws.OpBinary, true, "\x00b"), fr(ws.OpPong, true, "pp"),
			fr(ws.OpPing, true, ""), fr(ws.OpClose, true, closeBody(1000, "bye"))),
		want: []string{"text:a", "binary:\x00b", "pong:pp", "ping:", "close:1000:bye"},
	},
	{
		name: "binary fragments with control frames between",
		in: cat(fr(ws.OpBinary, false, "\xff"), fr(ws.OpPong, true, ""), fr(ws.OpContinuation, false, ""),
			fr(ws.OpPing, true, "x"), fr(ws.OpContinuation, true, "\xfe")),
		want: []string{"pong:", "ping:x", "binary:\xff\xfe"},
	},
	{name: "empty text message", in: fr(ws.OpText, true, ""), want: []string{"text:"}},
	{name: "empty binary message", in: fr(ws.OpBinary, true, ""), want: []string{"binary:"}},
	{
		name: "empty final fragment",
		in:   cat(fr(ws.OpText, false, "ab"), fr(ws.OpContinuation, true, "")),
		want: []string{"text:ab"},
	},
	{name: "close without payload", in: fr(ws.OpClose, true, ""), want: []string{"close:1005:"}},
	{name: "close code only", in: fr(ws.OpClose, true, closeBody(1001, "")), want: []string{"close:1001:"}},
	{name: "close 1003", in: fr(ws.OpClose, true, closeBody(1003, "x")), want: []string{"close:1003:x"}},
	{name: "close 1007", in: fr(ws.OpClose, true, closeBody(1007, "")), want: []string{"close:1007:"}},
	{name: "close 1014", in: fr(ws.OpClose, true, closeBody(1014, "")), want: []string{"close:1014:"}},
	{name: "close 3000", in: fr(ws.OpClose, true, closeBody(3000, "")), want: []string{"close:3000:"}},
	{name: "close 4999 utf-8 reason", in: fr(ws.OpClose, true, closeBody(4999, "ça va €")), want: []string{"close:4999:ça va €"}},
	{name: "ping 125", in: fr(ws.OpPing, true, longText[:125]), want: []string{"ping:" + longText[:125]}},
	{
		name: "utf-8 rune split across fragments",
		in:   cat(fr(ws.OpText, false, "a\xe2\x82"), fr(ws.OpContinuation, true, "\xac")),
		want: []string{"text:a€"},
	},
	{
		name: "4-byte rune split over three fragments",
		in:   cat(fr(ws.OpText, false, "\xf0"), fr(ws.OpContinuation, false, "\x9f\x98"), fr(ws.OpContinuation, true, "\x80!")),
		want: []string{"text:😀!"},
	},
	{name: "binary is not utf-8 checked", in: fr(ws.OpBinary, true, "\xf4\x90\xc0"), want: []string{"binary:\xf4\x90\xc0"}},
	{name: "max message exact", in: cat(fr(ws.OpText, false, "12345"), fr(ws.OpContinuation, true, "67890")), max: 10,
		want: []string{"text:1234567890"}},
	{name: "max message per message", in: cat(fr(ws.OpText, true, "12345678"), fr(ws.OpText, true, "12345678")), max: 10,
		want: []string{"text:12345678", "text:12345678"}},

	// 1002 protocol errors.
	{name: "unmasked", in: protocol.AppendFrame(nil, ws.OpText, []byte("hi")), err: protocol.ErrUnmasked},
	{name: "rsv1", in: withByte(fr(ws.OpText, true, "hi"), 0, func(b byte) byte { return b | 0x40 }), err: protocol.ErrReservedBits},
	{name: "rsv2", in: withByte(fr(ws.OpText, true, "hi"), 0, func(b byte) byte { return b | 0x20 }), err: protocol.ErrReservedBits},
	{name: "rsv3 on ping", in: withByte(fr(ws.OpPing, true, ""), 0, func(b byte) byte { return b | 0x10 }), err: protocol.ErrReservedBits},
	{name: "opcode 3", in: fr(3, true, ""), err: protocol.ErrReservedOpCode},
	{name: "opcode 7", in: fr(7, true, "x"), err: protocol.ErrReservedOpCode},
	{name: "opcode 0xB", in: fr(0xb, true, ""), err: protocol.ErrReservedOpCode},
	{name: "opcode 0xF", in: fr(0xf, true, ""), err: protocol.ErrReservedOpCode},
	{name: "continuation without start", in: fr(ws.OpContinuation, true, "x"), err: protocol.ErrUnexpectedContinuation},
	{
		name: "continuation after finished message",
		in:   cat(fr(ws.OpText, true, "a"), fr(ws.OpContinuation, true, "b")),
		want: []string{"text:a"}, err: protocol.ErrUnexpectedContinuation,
	},
	{
		name: "text inside fragmented message",
		in:   cat(fr(ws.OpText, false, "a"), fr(ws.OpText, true, "b")),
		err:  protocol.ErrExpectedContinuation,
	},
	{
		name: "binary inside fragmented message after ping",
		in:   cat(fr(ws.OpBinary, false, "a"), fr(ws.OpPing, true, ""), fr(ws.OpBinary, true, "b")),
		want: []string{"ping:"}, err: protocol.ErrExpectedContinuation,
	},
	{name: "ping 126", in: fr(ws.OpPing, true, longText[:126]), err: protocol.ErrControlTooBig},
	{name: "close 200 from header", in: header(ws.OpClose, true, 200), err: protocol.ErrControlTooBig},
	{name: "fragmented ping", in: fr(ws.OpPing, false, "x"), err: protocol.ErrControlFragmented},
	{name: "fragmented close", in: fr(ws.OpClose, false, ""), err: protocol.ErrControlFragmented},
	{name: "64-bit length msb", in: withByte(header(ws.OpBinary, true, 70000), 2, func(b byte) byte { return b | 0x80 }),
		err: protocol.ErrBadLength},
	{name: "close 1-byte payload", in: fr(ws.OpClose, true, "\x03"), err: protocol.ErrClosePayload},
	{name: "close code 0", in: fr(ws.OpClose, true, closeBody(0, "")), err: protocol.ErrCloseCode},
	{name: "close code 999", in: fr(ws.OpClose, true, closeBody(999, "")), err: protocol.ErrCloseCode},
	{name: "close code 1004", in: fr(ws.OpClose, true, closeBody(1004, "")), err: protocol.ErrCloseCode},
	{name: "close code 1005", in: fr(ws.OpClose, true, closeBody(1005, "")), err: protocol.ErrCloseCode},
	{name: "close code 1006", in: fr(ws.OpClose, true, closeBody(1006, "")), err: protocol.ErrCloseCode},
	{name: "close code 1015", in: fr(ws.OpClose, true, closeBody(1015, "")), err: protocol.ErrCloseCode},
	{name: "close code 1016", in: fr(ws.OpClose, true, closeBody(1016, "")), err: protocol.ErrCloseCode},
	{name: "close code 2000", in: fr(ws.OpClose, true, closeBody(2000, "")), err: protocol.ErrCloseCode},
	{name: "close code 2999", in: fr(ws.OpClose, true, closeBody(2999, "")), err: protocol.ErrCloseCode},
	{name: "close code 5000", in: fr(ws.OpClose, true, closeBody(5000, "")), err: protocol.ErrCloseCode},
	{name: "close code 65535", in: fr(ws.OpClose, true, closeBody(65535, "")), err: protocol.ErrCloseCode},

	// 1007 invalid UTF-8.
	{name: "invalid utf-8 text", in: fr(ws.OpText, true, "a\xffb"), err: protocol.ErrInvalidUTF8},
	{name: "invalid utf-8 before fin", in: fr(ws.OpText, false, "ok \xf4\x90"), err: protocol.ErrInvalidUTF8},
	{
		name: "invalid utf-8 in second fragment before fin",
		in:   cat(fr(ws.OpText, false, "\xf4"), fr(ws.OpContinuation, false, "\x90")),
		err:  protocol.ErrInvalidUTF8,
	},
	{name: "surrogate", in: fr(ws.OpText, true, "\xed\xa0\x80"), err: protocol.ErrInvalidUTF8},
	{name: "overlong", in: fr(ws.OpText, true, "\xc0\xaf"), err: protocol.ErrInvalidUTF8},
	{name: "truncated rune at fin", in: fr(ws.OpText, true, "a\xe2\x82"), err: protocol.ErrInvalidUTF8},
	{
		name: "truncated rune at final fragment",
		in:   cat(fr(ws.OpText, false, "a\xe2"), fr(ws.OpContinuation, true, "")),
		err:  protocol.ErrInvalidUTF8,
	},
	{name: "invalid utf-8 close reason", in: fr(ws.OpClose, true, closeBody(1000, "\xce\xba\xe1\xbd")), err: protocol.ErrInvalidUTF8},

	// 1009 too big.
	{
		name: "too big across fragments", max: 10,
		in:  cat(fr(ws.OpText, false, "123456"), fr(ws.OpContinuation, true, "789012")),
		err: protocol.ErrTooBig,
	},
	{name: "too big from header alone", max: 1000, in: header(ws.OpBinary, true, 1<<20), err: protocol.ErrTooBig},
}

// caseNamed returns the case of frameCases called name.
func caseNamed(name string) frameCase {
	for _, c := range frameCases {
		if c.name == name {
			return c
		}
	}
	panic("no frame case " + name)
}

// show names a message for eventLog, summarising long payloads.
func show(kind, payload string) string {
	if len(payload) <= 256 {
		return kind + ":" + payload
	}
	return fmt.Sprintf("%s:%d bytes crc %08x", kind, len(payload), crc32.ChecksumIEEE([]byte(payload)))
}

// eventLog assembles decoded events into comparable strings: one per whole
// data message ("text:<payload>", "binary:<payload>") and one per control
// frame ("ping:<payload>", "pong:<payload>", "close:<code>:<reason>"). It
// fails t if First and Fin do not frame the chunks consistently.
type eventLog struct {
	t      testing.TB
	items  []string
	msg    []byte
	op     ws.OpCode
	inMsg  bool
	chunks int
}

func (l *eventLog) add(ev protocol.Event) {
	l.t.Helper()
	switch ev.Kind {
	case protocol.EventData:
		l.chunks++
		if ev.OpCode != ws.OpText && ev.OpCode != ws.OpBinary {
			l.t.Fatalf("data opcode: got %v, want text or binary", ev.OpCode)
		}
		if ev.First == l.inMsg {
			l.t.Fatalf("First: got %v, want %v", ev.First, !l.inMsg)
		}
		if ev.First {
			l.op, l.msg, l.inMsg = ev.OpCode, l.msg[:0], true
		} else if ev.OpCode != l.op {
			l.t.Fatalf("chunk opcode: got %v, want %v", ev.OpCode, l.op)
		}
		l.msg = append(l.msg, ev.Payload...)
		if ev.Fin {
			kind := "text"
			if l.op == ws.OpBinary {
				kind = "binary"
			}
			l.items = append(l.items, show(kind, string(l.msg)))
			l.inMsg = false
		}
	case protocol.EventPing:
		l.items = append(l.items, "ping:"+string(ev.Payload))
	case protocol.EventPong:
		l.items = append(l.items, "pong:"+string(ev.Payload))
	case protocol.EventClose:
		l.items = append(l.items, fmt.Sprintf("close:%d:%s", ev.Code, ev.Reason))
	default:
		l.t.Fatalf("event kind: got %v, want data or control", ev.Kind)
	}
}

// decode feeds pieces to a new decoder the way a connection does: unconsumed
// bytes are kept and the next piece is appended to them. The input is not
// modified.
func decode(t testing.TB, max int64, pieces [][]byte) ([]string, error) {
	t.Helper()
	d := protocol.Decoder{MaxMessage: max}
	log := eventLog{t: t}
	var buf []byte
	for _, piece := range pieces {
		buf = append(buf, piece...)
		for {
			ev, n, err := d.Next(buf)
			if err != nil {
				if n != 0 {
					t.Fatalf("n on error: got %d, want 0", n)
				}
				if _, _, again := d.Next(buf); again != err {
					t.Fatalf("error after error: got %v, want %v", again, err)
				}
				return log.items, err
			}
			if n < 0 || n > len(buf) {
				t.Fatalf("n: got %d, want 0..%d", n, len(buf))
			}
			if (ev.Kind == protocol.EventNone) != (n == 0) {
				t.Fatalf("got kind %v with n %d, want EventNone exactly when n == 0", ev.Kind, n)
			}
			if ev.Kind == protocol.EventNone {
				if len(buf) > ws.MaxHeaderSize+ws.MaxControlFramePayloadSize {
					t.Fatalf("unconsumed bytes: got %d, want <= %d", len(buf), ws.MaxHeaderSize+ws.MaxControlFramePayloadSize)
				}
				break
			}
			log.add(ev)
			buf = buf[n:]
		}
	}
	return log.items, nil
}

func checkDecode(t *testing.T, c frameCase, how string, pieces [][]byte) {
	t.Helper()
	got, err := decode(t, c.max, pieces)
	if err != c.err {
		t.Fatalf("%s: error: got %v, want %v", how, err, c.err)
	}
	if !equalStrings(got, c.want) {
		t.Fatalf("%s: events:\ngot  %q\nwant %q", how, got, c.want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDecode(t *testing.T) {
	for _, c := range frameCases {
		t.Run(c.name, func(t *testing.T) {
			checkDecode(t, c, "whole", [][]byte{c.in})
			if len(c.in) > 4096 {
				// Long payloads: a few splits, byte by byte would be slow.
				for _, i := range []int{1, 2, 13, 14, 15, len(c.in) / 2, len(c.in) - 1} {
					checkDecode(t, c, fmt.Sprintf("split at %d", i), [][]byte{c.in[:i], c.in[i:]})
				}
				return
			}
			pieces := make([][]byte, len(c.in))
			for i := range c.in {
				pieces[i] = c.in[i : i+1]
			}
			checkDecode(t, c, "byte by byte", pieces)
			for i := 0; i <= len(c.in); i++ {
				checkDecode(t, c, fmt.Sprintf("split at %d", i), [][]byte{c.in[:i], c.in[i:]})
			}
		})
	}
}

func TestCloseErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  *protocol.CloseError
		code ws.StatusCode
	}{
		{protocol.ErrUnmasked, 1002}, {protocol.ErrReservedBits, 1002}, {protocol.ErrReservedOpCode, 1002},
		{protocol.ErrControlTooBig, 1002}, {protocol.ErrControlFragmented, 1002},
		{protocol.ErrUnexpectedContinuation, 1002}, {protocol.ErrExpectedContinuation, 1002},
		{protocol.ErrBadLength, 1002}, {protocol.ErrClosePayload, 1002}, {protocol.ErrCloseCode, 1002},
		{protocol.ErrInvalidUTF8, 1007}, {protocol.ErrTooBig, 1009},
	} {
		if tc.err.Code != tc.code {
			t.Errorf("%v: code: got %d, want %d", tc.err, tc.err.Code, tc.code)
		}
		if msg := tc.err.Error(); !strings.HasPrefix(msg, "protocol: ") || strings.ToLower(msg) != msg {
			t.Errorf("error text: got %q, want lower case with prefix \"protocol: \"", msg)
		}
		if len(tc.err.Reason) > protocol.MaxCloseReason {
			t.Errorf("%v: reason: got %d bytes, want <= %d", tc.err, len(tc.err.Reason), protocol.MaxCloseReason)
		}
		var ce *protocol.CloseError
		if !errors.As(error(tc.err), &ce) || ce != tc.err {
			t.Errorf("errors.As: got %v, want %v", ce, tc.err)
		}
	}
}

func TestDecoderState(t *testing.T) {
	if got := unsafe.Sizeof(protocol.Decoder{}); got > 64 {
		t.Errorf("Decoder size: got %d bytes, want <= 64", got)
	}
	d := protocol.Decoder{MaxMessage: 100}
	in := cat(fr(ws.OpText, false, "ab"), fr(ws.OpContinuation, true, "cd"))
	first := len(fr(ws.OpText, false, "ab"))
	ev, n, err := d.Next(in)
	if err != nil || n != first || !ev.First || ev.Fin || string(ev.Payload) != "ab" {
		t.Fatalf("first fragment: got %+v n=%d err=%v, want First chunk \"ab\" n=%d", ev, n, err, first)
	}
	if !d.InMessage() {
		t.Fatalf("InMessage after first fragment: got false, want true")
	}
	d.Reset()
	if d.InMessage() || d.MaxMessage != 100 {
		t.Fatalf("after Reset: got InMessage %v MaxMessage %d, want false 100", d.InMessage(), d.MaxMessage)
	}
	// After Reset, a continuation is unexpected again.
	if _, _, err := d.Next(in[n:]); err != protocol.ErrUnexpectedContinuation {
		t.Fatalf("continuation after Reset: got %v, want %v", err, protocol.ErrUnexpectedContinuation)
	}

	// A header without payload yields an empty First chunk and consumes the header.
	d = protocol.Decoder{}
	h := header(ws.OpBinary, true, 300)
	ev, n, err = d.Next(h)
	if err != nil || ev.Kind != protocol.EventData || !ev.First || ev.Fin || len(ev.Payload) != 0 || n != len(h) {
		t.Fatalf("header only: got %+v n=%d err=%v, want empty First chunk n=%d", ev, n, err, len(h))
	}
	if ev, n, err = d.Next(nil); ev.Kind != protocol.EventNone || n != 0 || err != nil {
		t.Fatalf("empty input mid-frame: got %+v n=%d err=%v, want EventNone 0 nil", ev, n, err)
	}
}

func TestPayloadCapacity(t *testing.T) {
	in := cat(fr(ws.OpText, true, "abc"), fr(ws.OpPing, true, "p"), fr(ws.OpText, true, "def"))
	var d protocol.Decoder
	ev, n, _ := d.Next(in)
	if cap(ev.Payload) != len(ev.Payload) {
		t.Fatalf("data Payload cap: got %d, want %d", cap(ev.Payload), len(ev.Payload))
	}
	ev, _, _ = d.Next(in[n:])
	if cap(ev.Payload) != len(ev.Payload) {
		t.Fatalf("ping Payload cap: got %d, want %d", cap(ev.Payload), len(ev.Payload))
	}
}

func TestValidCloseCode(t *testing.T) {
	for code := range 6000 {
		want := code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
		if got := protocol.ValidCloseCode(ws.StatusCode(code)); got != want {
			t.Errorf("ValidCloseCode(%d): got %v, want %v", code, got, want)
		}
	}
}

// encodeCases are payload sizes for the frame writers; the table drives
// TestAppendFrameMatchesGobwas and BenchmarkEncode (bench cases).
var encodeCases = []struct {
	name  string
	size  int
	bench bool
}{
	{"empty", 0, false},
	{"16 B", 16, true},
	{"125 B", 125, false},
	{"126 B", 126, false},
	{"1 KiB", 1024, true},
	{"65535 B", 65535, false},
	{"64 KiB", 65536, false},
}

func TestAppendFrameMatchesGobwas(t *testing.T) {
	for _, c := range encodeCases {
		payload := []byte(strings.Repeat("ab\xffz", c.size/4+1)[:c.size])
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpContinuation} {
			for _, fin := range []bool{true, false} {
				var want bytes.Buffer
				if err := ws.WriteFrame(&want, ws.NewFrame(op, fin, payload)); err != nil {
					t.Fatal(err)
				}
				got := protocol.AppendFrameHeader(nil, op, fin, len(payload))
				got = append(got, payload...)
				if !bytes.Equal(got, want.Bytes()) {
					t.Errorf("%s op %v fin %v: AppendFrameHeader got % x, want % x", c.name, op, fin, head(got), head(want.Bytes()))
				}
				if fin {
					if got := protocol.AppendFrame([]byte("pre"), op, payload); !bytes.Equal(got, append([]byte("pre"), want.Bytes()...)) {
						t.Errorf("%s op %v: AppendFrame got % x, want % x", c.name, op, head(got), head(want.Bytes()))
					}
				}

				mask := [4]byte{byte(c.size), 0xa5, 0x5a, 0x01}
				want.Reset()
				if err := ws.WriteFrame(&want, ws.MaskFrameInPlaceWith(ws.NewFrame(op, fin, bytes.Clone(payload)), mask)); err != nil {
					t.Fatal(err)
				}
				src := bytes.Clone(payload)
				if got := protocol.AppendClientFrame(nil, op, fin, mask, src); !bytes.Equal(got, want.Bytes()) {
					t.Errorf("%s op %v fin %v: AppendClientFrame got % x, want % x", c.name, op, fin, head(got), head(want.Bytes()))
				}
				if !bytes.Equal(src, payload) {
					t.Errorf("AppendClientFrame modified its payload")
				}
			}
		}
		// gobwas reads back what we write.
		frame := protocol.AppendFrame(nil, ws.OpBinary, payload)
		f, err := ws.ReadFrame(bytes.NewReader(frame))
		if err != nil || !f.Header.Fin || f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, payload) {
			t.Errorf("%s: ws.ReadFrame: got %+v err %v, want the binary frame back", c.name, f.Header, err)
		}
	}
	if got := protocol.AppendFrameHeader(nil, ws.OpText, true, -1); !bytes.Equal(got, []byte{0x81, 0}) {
		t.Errorf("negative length: got % x, want 81 00", got)
	}
}

// head shortens a frame for failure messages.
func head(b []byte) []byte {
	if len(b) > 24 {
		return b[:24]
	}
	return b
}

func TestAppendClose(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes, 2-byte runes
	for _, tc := range []struct {
		code   ws.StatusCode
		reason string
		want   string // reason expected on the wire
	}{
		{1000, "", ""},
		{1000, "bye", "bye"},
		{4000, "replaced", "replaced"},
		{1012, "retry=5", "retry=5"},
		{1011, strings.Repeat("x", 123), strings.Repeat("x", 123)},
		{1011, strings.Repeat("x", 200), strings.Repeat("x", 123)},
		{1011, long, long[:122]},
		{1011, "x" + long, ("x" + long)[:123]},
		{1011, "xx" + long, ("xx" + long)[:122]},
	} {
		got := protocol.AppendClose(nil, tc.code, tc.reason)
		var want bytes.Buffer
		if err := ws.WriteFrame(&want, ws.NewCloseFrame(ws.NewCloseFrameBody(tc.code, tc.want))); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("AppendClose(%d, %d bytes): got %q, want %q", tc.code, len(tc.reason), got, want.Bytes())
		}
		// What we send, a client decoder accepts.
		in := protocol.AppendClientFrame(nil, ws.OpClose, true, testMask, got[2:])
		var d protocol.Decoder
		ev, _, err := d.Next(in)
		if err != nil || ev.Code != tc.code || string(ev.Reason) != tc.want {
			t.Errorf("decoding AppendClose(%d): got %d %q err %v, want %d %q", tc.code, ev.Code, ev.Reason, err, tc.code, tc.want)
		}
	}
	for _, code := range []ws.StatusCode{0, ws.StatusNoStatusRcvd} {
		if got := protocol.AppendClose(nil, code, "ignored"); !bytes.Equal(got, []byte{0x88, 0}) {
			t.Errorf("AppendClose(%d): got % x, want 88 00", code, got)
		}
	}
}

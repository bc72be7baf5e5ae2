package protocol_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/protocol"
)

var deflateOffers = []struct {
	v    string
	want bool
}{
	{"permessage-deflate", true},
	{"permessage-deflate; client_max_window_bits", true},                                  // Chromium, node's ws
	{"permessage-deflate; server_max_window_bits=15; client_max_window_bits", true},       // full window asked
	{"permessage-deflate; client_no_context_takeover; server_no_context_takeover", true},  // both offered
	{"PerMessage-Deflate ;  Client_Max_Window_Bits = 10", true},                           // case and spaces
	{`permessage-deflate; client_max_window_bits="12"`, true},                             // quoted value
	{"permessage-deflate; client_max_window_bits=8", true},                                // smallest
	{"x-webkit-deflate-frame, permessage-deflate", true},                                  // second offer
	{"permessage-deflate; server_max_window_bits=10, permessage-deflate", true},           // first declined, fallback taken
	{"permessage-deflate; server_max_window_bits=10", false},                              // a window we cannot honour
	{"permessage-deflate; server_max_window_bits", false},                                 // value required
	{"permessage-deflate; client_max_window_bits=16", false},                              // out of range
	{"permessage-deflate; client_max_window_bits=7", false},                               // out of range
	{"permessage-deflate; client_max_window_bits=015", false},                             // leading zero
	{`permessage-deflate; client_max_window_bits="1\5"`, false},                           // escape in quotes
	{`permessage-deflate; client_max_window_bits="15`, false},                             // unterminated
	{`permessage-deflate; client_max_window_bits=""`, false},                              // empty quoted
	{"permessage-deflate; server_no_context_takeover=1", false},                           // value not allowed
	{"permessage-deflate; client_no_context_takeover; client_no_context_takeover", false}, // repeated
	{"permessage-deflate; client_max_window_bits; client_max_window_bits=15", false},      // repeated
	{"permessage-deflate; mystery", false},                                                // unknown param
	{"permessage-deflate;", false},                                                        // empty param
	{"permessage-deflate,", false},                                                        // trailing comma
	{", permessage-deflate", false},                                                       // empty offer
	{"permessage-deflate; a=b c", false},                                                  // junk
	{"deflate-frame", false},                                                              // not ours
	{"", false},
	{"permessage-deflate;client_max_window_bits;server_no_context_takeover", true}, // no spaces
	{"foo; bar=\"baz\", permessage-deflate; client_max_window_bits=15", true},      // other extension with a quoted param
	{"permessage-deflate; x=\"a,b\"", false},                                       // comma inside quotes is not a token
}

func TestAcceptsDeflate(t *testing.T) {
	for _, c := range deflateOffers {
		if got := protocol.AcceptsDeflate([]byte(c.v)); got != c.want {
			t.Errorf("AcceptsDeflate(%q) = %v, want %v", c.v, got, c.want)
		}
	}
}

func TestAcceptsDeflateAllocs(t *testing.T) {
	v := []byte("permessage-deflate; client_max_window_bits, x-webkit-deflate-frame")
	if n := testing.AllocsPerRun(100, func() { protocol.AcceptsDeflate(v) }); n != 0 {
		t.Fatalf("AcceptsDeflate allocates %v times, want 0", n)
	}
}

func TestParseRequestDeflate(t *testing.T) {
	for _, c := range []struct {
		hdrs []string
		want bool
	}{
		{nil, false},
		{[]string{"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"}, true},
		{[]string{"sec-websocket-extensions: foo", "Sec-WebSocket-Extensions: permessage-deflate"}, true}, // several lines
		{[]string{"Sec-WebSocket-Extensions: permessage-deflate; bogus"}, false},                          // declined, upgrade fine
	} {
		req := "GET /abc HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		for _, h := range c.hdrs {
			req += h + "\r\n"
		}
		req += "\r\n"
		var r protocol.Request
		if _, err := protocol.ParseRequest([]byte(req), &r); err != nil {
			t.Fatalf("%q: %v", c.hdrs, err)
		}
		if r.Deflate != c.want {
			t.Errorf("%q: Deflate = %v, want %v", c.hdrs, r.Deflate, c.want)
		}
	}
}

func TestAppendSwitchingDeflate(t *testing.T) {
	got := string(protocol.AppendSwitchingDeflate(nil, []byte("dGhlIHNhbXBsZSBub25jZQ=="), []byte("chat"), true))
	if !strings.Contains(got, "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n") ||
		!strings.HasSuffix(got, "\r\n\r\n") || !strings.Contains(got, "Sec-WebSocket-Protocol: chat\r\n") {
		t.Fatalf("101: %q", got)
	}
	if plain := string(protocol.AppendSwitching(nil, []byte("dGhlIHNhbXBsZSBub25jZQ=="), nil)); strings.Contains(plain, "Extensions") {
		t.Fatalf("101 without deflate: %q", plain)
	}
}

// TestDecoderRSV1 checks where RSV1 is allowed: on a message's first frame
// with Deflate, never on a continuation or control frame, never without it.
func TestDecoderRSV1(t *testing.T) {
	rsv1 := func(b []byte) []byte { b[0] |= 0x40; return b }
	for _, c := range []struct {
		name    string
		deflate bool
		in      []byte
		err     error
	}{
		{"not negotiated", false, rsv1(fr(ws.OpText, true, "x")), protocol.ErrReservedBits},
		{"first frame", true, rsv1(fr(ws.OpBinary, true, "x")), nil},
		{"fragmented", true, cat(rsv1(fr(ws.OpText, false, "\xff")), fr(ws.OpContinuation, true, "\xfe")), nil},
		{"continuation", true, cat(fr(ws.OpText, false, "a"), rsv1(fr(ws.OpContinuation, true, "b"))), protocol.ErrReservedBits},
		{"ping", true, rsv1(fr(ws.OpPing, true, "")), protocol.ErrReservedBits},
		{"close", true, rsv1(fr(ws.OpClose, true, "")), protocol.ErrReservedBits},
		{"rsv2", true, withByte(fr(ws.OpText, true, "x"), 0, func(b byte) byte { return b | 0x20 }), protocol.ErrReservedBits},
	} {
		d := protocol.Decoder{Deflate: c.deflate}
		p := c.in
		var err error
		var compressed, plain bool
		for len(p) > 0 {
			var ev protocol.Event
			var n int
			ev, n, err = d.Next(p)
			if err != nil || n == 0 {
				break
			}
			if ev.Kind == protocol.EventData {
				if ev.Compressed {
					compressed = true
				} else {
					plain = true
				}
			}
			p = p[n:]
		}
		if err != c.err {
			t.Errorf("%s: err %v, want %v", c.name, err, c.err)
		}
		if c.err == nil && (!compressed || plain) {
			t.Errorf("%s: every chunk should be Compressed (compressed %v, plain %v)", c.name, compressed, plain)
		}
	}
	// A plain message after a compressed one is plain again, and UTF-8 is
	// checked on it.
	d := protocol.Decoder{Deflate: true}
	in := cat(rsv1(fr(ws.OpText, true, "\xff")), fr(ws.OpText, true, "\xff"))
	ev, n, err := d.Next(in)
	if err != nil || !ev.Compressed {
		t.Fatalf("compressed: %v %v", ev, err)
	}
	if _, _, err = d.Next(in[n:]); err != protocol.ErrInvalidUTF8 {
		t.Fatalf("plain invalid text after a compressed one: err %v, want ErrInvalidUTF8", err)
	}
}

// FuzzAcceptsDeflate: never panics, and agrees with itself on the same
// value with a plain offer appended after a comma (an offer never spoils a
// later good one, unless the line is broken).
func FuzzAcceptsDeflate(f *testing.F) {
	for _, c := range deflateOffers {
		f.Add([]byte(c.v))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		got := protocol.AcceptsDeflate(v)
		if got && !strings.Contains(strings.ToLower(string(v)), "permessage-deflate") {
			t.Fatalf("accepted %q without a permessage-deflate offer", v)
		}
	})
}

// FuzzDecoderDeflate is FuzzDecoder with permessage-deflate negotiated
// (RSV1 allowed on a message's first frame): never a panic, the same
// events and error whole and in pieces, errors only the sentinels, and
// Compressed only on data.
func FuzzDecoderDeflate(f *testing.F) {
	rsv1 := func(b []byte) []byte { b[0] |= 0x40; return b }
	f.Add(rsv1(fr(ws.OpText, true, "\xff\x00")), uint64(1))
	f.Add(cat(rsv1(fr(ws.OpBinary, false, "ab")), fr(ws.OpPing, true, "p"), fr(ws.OpContinuation, true, "c")), uint64(2))
	f.Add(cat(fr(ws.OpText, false, "a"), rsv1(fr(ws.OpContinuation, true, "b"))), uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		run := func(pieces [][]byte) ([]string, error) {
			d := protocol.Decoder{Deflate: true, MaxMessage: 1 << 16}
			var log []string
			var buf []byte
			for _, piece := range pieces {
				buf = append(buf, piece...)
				for {
					ev, n, err := d.Next(buf)
					if err != nil {
						if !isOneOf(err, closeSentinels) {
							t.Fatalf("error %#v, want a sentinel", err)
						}
						return log, err
					}
					if ev.Kind == protocol.EventNone {
						break
					}
					if ev.Compressed && ev.Kind != protocol.EventData {
						t.Fatalf("Compressed on a %v event", ev.Kind)
					}
					// Chunks differ with the split; record what does not.
					switch {
					case ev.Kind != protocol.EventData:
						log = append(log, fmt.Sprintf("%v %q", ev.Kind, ev.Payload))
					case ev.First:
						log = append(log, fmt.Sprintf("start %v z=%v", ev.OpCode, ev.Compressed))
					}
					if ev.Kind == protocol.EventData && ev.Fin {
						log = append(log, "end")
					}
					buf = buf[n:]
				}
			}
			return log, nil
		}
		whole, err := run([][]byte{data})
		split, err2 := run(splitRandom(data, seed))
		if err != err2 {
			t.Fatalf("error in pieces %v, whole %v", err2, err)
		}
		if err == nil && !equalStrings(split, whole) {
			t.Fatalf("events in pieces:\n%q\nwhole:\n%q", split, whole)
		}
	})
}

package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/flate"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/protocol"
)

const offerDeflate = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"

// deflateMsg compresses p as a permessage-deflate message: a sync-flushed
// DEFLATE stream without its final 00 00 ff ff (RFC 7692 §7.2.1).
func deflateMsg(t testing.TB, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write(p)
	w.Flush()
	out := b.Bytes()
	if !bytes.HasSuffix(out, []byte{0, 0, 0xff, 0xff}) {
		t.Fatalf("no sync marker")
	}
	return out[:len(out)-4]
}

// inflateMsg inflates a permessage-deflate message.
func inflateMsg(t testing.TB, p []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflating a frame from the bridge: %v", err)
	}
	return out
}

// zframe writes one client frame with RSV1 when rsv1 is set.
func (r *raw) zframe(op ws.OpCode, fin, rsv1 bool, payload []byte) {
	r.t.Helper()
	f := protocol.AppendClientFrame(nil, op, fin, testMask, payload)
	if rsv1 {
		f[0] |= 0x40
	}
	r.send(string(f))
}

// deflateUpgrade upgrades with the extra headers and returns the 101's
// Sec-WebSocket-Extensions.
func deflateUpgrade(t testing.TB, addr, id string, extra ...string) (*raw, string) {
	t.Helper()
	r := rawDial(t, addr)
	r.send(upgradeRequest(id, extra...))
	resp, body := r.response()
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade %s: got %d %q, want 101", id, resp.StatusCode, body)
	}
	return r, resp.Header.Get("Sec-WebSocket-Extensions")
}

// rsv1 reports whether a frame header had RSV1.
func rsv1(h ws.Header) bool { return h.Rsv&0x4 != 0 }

func jsonLike(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"user":"user-%d","text":"hello, world","tags":["a","b"]},`, i, i%7)
	}
	return b.Bytes()[:n]
}

// TestDeflateNegotiation: with -deflate an acceptable offer gets the
// extension with no context takeover both ways; no offer, or one we cannot
// honour, gets a plain 101 (never a refusal); without -deflate nothing is
// negotiated (TestDeflateOff).
func TestDeflateNegotiation(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL, "-deflate")
	for _, c := range []struct {
		name  string
		extra []string
		want  string
	}{
		{"browser offer", []string{offerDeflate}, protocol.DeflateResponse},
		{"second of two lines", []string{"Sec-WebSocket-Extensions: x-foo", "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover"}, protocol.DeflateResponse},
		{"no offer", nil, ""},
		{"small server window", []string{"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9"}, ""},
		{"unknown parameter", []string{"Sec-WebSocket-Extensions: permessage-deflate; foo=bar"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, got := deflateUpgrade(t, p.ws, "neg", c.extra...)
			requireEqual(t, "Sec-WebSocket-Extensions", got, c.want)
		})
	}
}

// TestDeflateOff: without -deflate an offer is never taken, and an RSV1
// frame is 1002 (TestRFCViolations covers the frame too).
func TestDeflateOff(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	r, ext := deflateUpgrade(t, p.ws, "off", offerDeflate)
	requireEqual(t, "Sec-WebSocket-Extensions", ext, "")
	r.zframe(ws.OpText, true, true, deflateMsg(t, []byte("hello")))
	r.expectClose(1002)
	r.expectEOF()
}

// TestDeflateMessages: compressed messages, whole and fragmented, text and
// binary, reach the backend plain; replies and pushes from -deflate-min up
// come back with RSV1 and inflate to the same bytes, smaller ones plain.
func TestDeflateMessages(t *testing.T) {
	b := newBackend(t, backend.Options{Record: true})
	p := startBridge(t, b.URL, "-deflate", "-deflate-min", "256")
	r, ext := deflateUpgrade(t, p.ws, "z", offerDeflate)
	requireEqual(t, "extension", ext, protocol.DeflateResponse)

	reply := func(what string, op ws.OpCode, want []byte, wantRSV1 bool) {
		t.Helper()
		h, payload, err := r.readFrame()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		requireEqual(t, what+" opcode", h.OpCode, op)
		requireEqual(t, what+" RSV1", rsv1(h), wantRSV1)
		if wantRSV1 {
			if len(payload) >= len(want) {
				t.Fatalf("%s: %d bytes on the wire for %d, want fewer", what, len(payload), len(want))
			}
			payload = inflateMsg(t, payload)
		}
		if !bytes.Equal(payload, want) {
			t.Fatalf("%s: got %d bytes %.40q, want %d bytes %.40q", what, len(payload), payload, len(want), want)
		}
	}

	big := jsonLike(1024)
	r.zframe(ws.OpText, true, true, deflateMsg(t, big))
	reply("1 KiB JSON", ws.OpText, big, true)

	small := []byte(`{"ok":true}`)
	r.zframe(ws.OpText, true, true, deflateMsg(t, small))
	reply("small compressed", ws.OpText, small, false)

	r.frame(ws.OpText, true, big) // plain inbound is fine too
	reply("plain in", ws.OpText, big, true)

	bin := bytes.Repeat([]byte{0, 1, 2, 3, 0xff}, 40000) // 200 KB, more than one read
	z := deflateMsg(t, bin)
	r.zframe(ws.OpBinary, false, true, z[:len(z)/3])
	r.zframe(ws.OpPing, true, false, []byte("mid"))
	r.zframe(ws.OpContinuation, false, false, z[len(z)/3:2*len(z)/3])
	r.zframe(ws.OpContinuation, true, false, z[2*len(z)/3:])
	h, pong, err := r.readFrame()
	if err != nil || h.OpCode != ws.OpPong || string(pong) != "mid" {
		t.Fatalf("pong: %v %q %v", h.OpCode, pong, err)
	}
	reply("fragmented binary", ws.OpBinary, bin, true)

	posts := waitCalls(t, b, "z", "POST", 4)
	for i, want := range [][]byte{big, small, big, bin} {
		if !bytes.Equal(posts[i].Body, want) {
			t.Fatalf("POST %d: backend got %d bytes %.40q, want it plain (%d bytes)", i, len(posts[i].Body), posts[i].Body, len(want))
		}
	}

	status, _, _ := p.adminDo(t, "POST", "/z", string(big))
	requireEqual(t, "push status", status, 200)
	reply("push", ws.OpText, big, true)
	status, _, _ = p.adminDo(t, "POST", "/z", "tiny")
	requireEqual(t, "push status", status, 200)
	reply("small push", ws.OpText, []byte("tiny"), false)

	// A connection that did not negotiate gets plain frames from the same
	// bridge, and its RSV1 is 1002.
	q, ext := deflateUpgrade(t, p.ws, "plain")
	requireEqual(t, "no offer", ext, "")
	q.frame(ws.OpText, true, big)
	h, payload, err := q.readFrame()
	if err != nil || rsv1(h) || !bytes.Equal(payload, big) {
		t.Fatalf("plain connection: RSV1 %v, %d bytes, %v", rsv1(h), len(payload), err)
	}
	q.zframe(ws.OpText, true, true, deflateMsg(t, big))
	q.expectClose(1002)
}

// TestDeflateViolations: a decompression bomb closes 1009 without the
// bridge inflating it (its memory stays put), corrupt data 1002, RSV1 on a
// continuation or control frame 1002, compressed invalid UTF-8 1007; each
// DELETE carries the code, no POST is made, and a bystander is undisturbed.
func TestDeflateViolations(t *testing.T) {
	b := newBackend(t, backend.Options{Record: true})
	p := startBridge(t, b.URL, "-deflate", "-max-message", "1MiB")

	// The bomb: 1 MiB of zeros compresses to about 1 KiB of non-final
	// blocks; repeated, they make a message of under 1 MiB on the wire
	// (within -max-message) that inflates to about 1 GiB.
	unit := deflateMsg(t, make([]byte, 1<<20))
	unit = append(unit, 0, 0, 0xff, 0xff) // keep the sync marker between units
	n := (1<<20 - 64) / len(unit)
	bomb := bytes.Repeat(unit, n)
	bomb = bomb[:len(bomb)-4]
	t.Logf("bomb: %d bytes on the wire inflate to %d MiB", len(bomb), n)
	// A small one: a few KiB that inflate past -max-message.
	smallBomb := deflateMsg(t, make([]byte, 2<<20))
	t.Logf("small bomb: %d bytes inflate to 2 MiB", len(smallBomb))

	rssBefore := p.metric(t, "process_resident_memory_bytes")
	cases := []struct {
		name string
		send func(r *raw)
		code ws.StatusCode
	}{
		{"bomb", func(r *raw) { r.zframe(ws.OpBinary, true, true, bomb) }, 1009},
		{"small bomb", func(r *raw) { r.zframe(ws.OpText, true, true, smallBomb) }, 1009},
		{"corrupt", func(r *raw) { r.zframe(ws.OpText, true, true, []byte{0xff, 0xff, 0xff, 0x00, 0x01}) }, 1002},
		{"RSV1 on continuation", func(r *raw) {
			r.zframe(ws.OpText, false, false, []byte("a"))
			r.zframe(ws.OpContinuation, true, true, []byte("b"))
		}, 1002},
		{"RSV1 on ping", func(r *raw) { r.zframe(ws.OpPing, true, true, nil) }, 1002},
		{"compressed invalid UTF-8", func(r *raw) { r.zframe(ws.OpText, true, true, deflateMsg(t, []byte{'a', 0xc3, 0x28})) }, 1007},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("zbad-%d", i)
			r, ext := deflateUpgrade(t, p.ws, id, offerDeflate)
			requireEqual(t, "extension", ext, protocol.DeflateResponse)
			tc.send(r)
			r.expectClose(tc.code)
			r.expectEOF()
			del := waitCalls(t, b, id, "DELETE", 1)[0]
			requireEqual(t, "Wsbridge-Close-Code", del.CloseCode, fmt.Sprint(int(tc.code)))
			requireEqual(t, "POSTs", count(b, id, "POST"), 0)
		})
	}
	// Inflating stops at -max-message: the bomb cost the bridge at most a
	// few MiB (its 1 MiB on the wire, the 1 MiB bound), not a GiB.
	rssAfter := p.metric(t, "process_resident_memory_bytes")
	t.Logf("bridge RSS %.1f MiB before the bombs, %.1f MiB after", rssBefore/(1<<20), rssAfter/(1<<20))
	if grew := rssAfter - rssBefore; grew > 64<<20 {
		t.Fatalf("bridge RSS grew by %.0f MiB over the bombs, want a few", grew/(1<<20))
	}

	c, _, err := websocket.DefaultDialer.Dial(p.url("bystander"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("fine"))
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "fine" {
		t.Fatalf("bystander: got %q, %v", msg, err)
	}
}

package engine_test

import (
	"strconv"
	"testing"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/protocol"
)

// TestBurstBackpressure: a client that sends far more messages at once than
// the queue holds gets every reply, in order: the engine stops decoding
// while the queue is full and reads on as POSTs finish.
func TestBurstBackpressure(t *testing.T) {
	h := start(t, engine.Config{}, backend.Options{Sequenced: true})
	c := dial(t, h.srv.Addr(), "burst")
	var all []byte
	for i := range 200 {
		all = protocol.AppendClientFrame(all, ws.OpText, true, [4]byte{1, 2, 3, 4}, []byte(strconv.Itoa(i)))
	}
	if _, err := c.conn.Write(all); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		op, p, err := c.read()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if op != ws.OpText || string(p) != strconv.Itoa(i) {
			t.Fatalf("reply %d: got %v %q, want %q", i, op, p, strconv.Itoa(i))
		}
	}
}

// TestTrickleBackpressure: the same with one write per message while the
// replies come back.
func TestTrickleBackpressure(t *testing.T) {
	h := start(t, engine.Config{}, backend.Options{Sequenced: true})
	c := dial(t, h.srv.Addr(), "trickle")
	go func() {
		for i := range 300 {
			if _, err := c.conn.Write(protocol.AppendClientFrame(nil, ws.OpText, true, [4]byte{1, 2, 3, 4}, []byte(strconv.Itoa(i)))); err != nil {
				return
			}
		}
	}()
	for i := range 300 {
		op, p, err := c.read()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if op != ws.OpText || string(p) != strconv.Itoa(i) {
			t.Fatalf("reply %d: got %v %q, want %q", i, op, p, strconv.Itoa(i))
		}
	}
}

// TestByteByByte: a frame that arrives one byte per TCP segment (its header
// split too) is reassembled: a partial header is kept, never dropped.
func TestByteByByte(t *testing.T) {
	h := start(t, engine.Config{}, backend.Options{})
	c := dial(t, h.srv.Addr(), "slowpoke")
	for round := range 3 {
		msg := []byte("split " + strconv.Itoa(round) + " into single bytes, header and all")
		for _, b := range protocol.AppendClientFrame(nil, ws.OpText, true, [4]byte{7, 7, 7, 7}, msg) {
			if _, err := c.conn.Write([]byte{b}); err != nil {
				t.Fatal(err)
			}
		}
		op, p, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		if op != ws.OpText || string(p) != string(msg) {
			t.Fatalf("reply: got %v %q, want %q", op, p, msg)
		}
	}
}

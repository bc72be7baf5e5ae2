package main

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestPushContentTypeRule: a push is binary by the same rule as a reply
// (protocol.IsBinaryContentType): application/octet-stream in any case,
// parameters ignored; any other type, even one that merely starts with
// it, is text.
func TestPushContentTypeRule(t *testing.T) {
	b := newBackend(t, backend.Options{})
	p := startBridge(t, b.URL)
	c, _, err := websocket.DefaultDialer.Dial(p.url("ctype"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, tc := range []struct {
		ctype string
		want  int
	}{
		{"Application/Octet-Stream; charset=x", websocket.BinaryMessage},
		{"APPLICATION/OCTET-STREAM", websocket.BinaryMessage},
		{"application/octet-stream", websocket.BinaryMessage},
		{"application/octet-streamy", websocket.TextMessage},
		{"text/plain", websocket.TextMessage},
	} {
		status, _, _ := p.adminDo(t, "POST", "/ctype", "m", "Content-Type", tc.ctype)
		requireEqual(t, "push status, Content-Type "+tc.ctype, status, 200)
		typ, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		requireEqual(t, "message type, Content-Type "+tc.ctype, typ, tc.want)
		requireEqual(t, "pushed", string(msg), "m")
	}
}
